"""Chinese offensive-language corpora: ToxiCN and COLD (official splits).

ToxiCN: toxic_type 2 (hate speech) maps to S10, 1 (general offensive language) keeps the name
"offensive"; the multi-hot target groups are kept in `meta["targets"]`.
COLD: labels are offensive / safe; on the test split the fine-grained label separates attacks on groups
(S10) from attacks on individuals; train and dev rows only say "offensive". `topic` goes to meta.
"""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, FieldError, to_binary
from guardtune.data.intake import Intake, Location
from guardtune.data.reading import read_csv, read_json

TOXICN_TARGETS = ("LGBTQ", "Region", "Sexism", "Racism", "others")
TOXICN_TYPES = {0: (), 1: ("offensive",), 2: ("S10",)}
COLD_FINE = {"0": (), "1": ("attack individual",), "2": ("S10",), "3": ()}


def _toxicn(item: dict) -> Example:
    toxic_type = item["toxic_type"]
    if toxic_type not in TOXICN_TYPES:
        raise FieldError("toxic_type", f"expected 0, 1 or 2, got {toxic_type!r}")
    targets = [name for name, bit in zip(TOXICN_TARGETS, item["target"]) if bit]
    return Example(prompt=item["content"], prompt_harmful=to_binary("toxic", item["toxic"]),
                   prompt_categories=TOXICN_TYPES[toxic_type], language="zh", source="toxicn",
                   id=item["_id"], group=item["_id"], meta={"targets": targets, "topic": item["topic"], "expression": item["expression"],
                         "platform": item["platform"]})


def load_toxicn(root: Path, split: str, intake: Intake) -> None:
    path = root / "toxicn" / "split" / f"{split}.json.xz"
    for i, item in enumerate(read_json(path), start=1):
        intake.take(Location(str(path), "item", i), {**item, "_id": f"toxicn:{split}:{i}"}, _toxicn)


def _cold(row: dict) -> Example:
    harmful = to_binary("label", row["label"])
    if "fine-grained-label" in row:
        fine = row["fine-grained-label"].strip()
        if fine not in COLD_FINE:
            raise FieldError("fine-grained-label", f"expected 0-3, got {fine!r}")
        categories = COLD_FINE[fine]
    else:
        categories = ("offensive",) if harmful else ()
    key = f"cold:{row['split']}:{row['']}"
    return Example(prompt=row["TEXT"], prompt_harmful=harmful, prompt_categories=categories, language="zh",
                   source="cold", id=key, group=key, meta={"topic": row["topic"]})


def load_cold(root: Path, split: str, intake: Intake) -> None:
    for where, row in read_csv(root / "cold" / f"{split}.csv.xz", intake):
        intake.take(where, row, _cold)
