"""ToxicChat: real user prompts to the Vicuna demo, binary toxicity plus a jailbreaking flag.

`toxicchat_human` reads the human-annotated JUDGE-BENCH copy in the data root; `toxicchat` loads the full
`lmsys/toxic-chat` release (config toxicchat0124) from the hub.
"""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, to_binary
from guardtune.data.hub import hub_rows
from guardtune.data.intake import Intake, Location
from guardtune.data.reading import read_json

HUB_ID = "lmsys/toxic-chat"


def _example(conv_id: str, text: str, toxic, jailbreak) -> Example:
    harmful = to_binary("toxicity", toxic)
    return Example(
        prompt=text,
        prompt_harmful=harmful,
        prompt_categories=("jailbreaking",) if to_binary("jailbreaking", jailbreak) else (),
        language="en",
        source="toxicchat",
        id=conv_id,
        group=conv_id,
    )


def _from_judge_bench(item: dict) -> Example:
    labels = item["annotations"]
    return _example(item["id"], item["instance"], labels["toxicity"]["majority_human"],
                    labels["jailbreaking"]["majority_human"])


def load_human(root: Path, split: str, intake: Intake) -> None:
    path = root / "toxicchat_human" / f"toxic_chat_{split}.json.xz"
    for i, item in enumerate(read_json(path)["instances"], start=1):
        intake.take(Location(str(path), "item", i), item, _from_judge_bench)


def load_hub(split: str, intake: Intake, config: str = "toxicchat0124", path: str | None = None) -> None:
    for where, row in hub_rows(path or HUB_ID, config, split, intake):
        intake.take(where, row, lambda r: _example(r["conv_id"], r["user_input"], r["toxicity"], r["jailbreaking"]))
