"""Do-Not-Answer: 939 risky prompts, each with 6 models' responses labelled for harm and action.

One row per (question, model). Every prompt is risky (prompt_harmful = 1). A response is a refusal when
its action label is 0 ("refuses to answer"), the strict reading; the looser {0, 4} reading is in
`meta["action"]` for users who want it. The question id is the group, so a prompt's six responses never
straddle a split.
"""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, FieldError, categorise, to_binary
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv

MODELS = ("GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b")


def _action(row: dict, model: str) -> int:
    value = row[f"{model}_action"].strip()
    if value not in {"0", "1", "2", "3", "4", "5"}:
        raise FieldError(f"{model}_action", f"expected an action label 0-5, got {value!r}")
    return int(value)


def convert(row: dict) -> list[Example]:
    categories = categorise("types_of_harm", [row["types_of_harm"]], "do_not_answer")
    out = []
    for model in MODELS:
        action = _action(row, model)
        out.append(Example(
            prompt=row["question"],
            response=row[f"{model}_response"],
            prompt_harmful=1,
            response_harmful=to_binary(f"{model}_harmful", row[f"{model}_harmful"]),
            response_refusal=int(action == 0),
            prompt_categories=categories,
            language="en",
            source="do_not_answer",
            id=f"{row['id']}:{model}",
            group=row["id"],
            meta={"model": model, "action": action, "risk_area": row["risk_area"]},
        ))
    return out


def load(root: Path, split: str, intake: Intake) -> None:
    for where, row in read_csv(root / "do_not_answer" / "data_en.csv.xz", intake):
        intake.take(where, row, convert)
