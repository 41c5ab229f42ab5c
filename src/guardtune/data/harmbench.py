"""HarmBench text behaviours (positives only), with AdvBench and StrongREJECT as extra splits.

Splits: `test` (320), `val` (80), `all` (400), `advbench` (520) and `strongreject` (313). Contextual
behaviours get their context passage prepended, as HarmBench itself does. Copyright behaviours are kept
(category S8); filter them out by category when moderating for harm only.
"""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, categorise
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv

SPLITS = ("test", "val", "all", "advbench", "strongreject")


def _behaviour(row: dict) -> Example:
    context = row["ContextString"].strip()
    prompt = f"{context}\n\n---\n\n{row['Behavior']}" if context else row["Behavior"]
    return Example(prompt=prompt, prompt_harmful=1,
                   prompt_categories=categorise("SemanticCategory", [row["SemanticCategory"]], "harmbench"),
                   language="en", source="harmbench", id=row["BehaviorID"], group=row["BehaviorID"],
                   meta={"functional_category": row["FunctionalCategory"]})


def _advbench(row: dict) -> Example:
    return Example(prompt=row["Behavior"], prompt_harmful=1, prompt_categories=None, language="en",
                   source="advbench", id=row["BehaviorID"], group=row["BehaviorID"])


def _strongreject(row: dict) -> Example:
    return Example(prompt=row["forbidden_prompt"], prompt_harmful=1,
                   prompt_categories=categorise("category", [row["category"]], "strongreject"),
                   language="en", source="strongreject", id=row["_id"], group=row["_id"],
                   meta={"origin": row["source"]})


def load(root: Path, split: str, intake: Intake) -> None:
    folder = root / "harmbench"
    if split == "advbench":
        path, convert = folder / "extra" / "advbench_behaviors.csv.xz", _advbench
    elif split == "strongreject":
        path, convert = folder / "extra" / "strongreject_dataset.csv.xz", _strongreject
    else:
        path, convert = folder / f"harmbench_behaviors_text_{split}.csv.xz", _behaviour
    for i, (where, row) in enumerate(read_csv(path, intake), start=1):
        if convert is _strongreject:
            row = {**row, "_id": f"strongreject:{i}"}
        intake.take(where, row, convert)
