"""SimpleSafetyTests: 100 clear-cut harmful prompts in 5 harm areas (positives only; one `test` split)."""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, categorise
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv


def convert(row: dict) -> Example:
    return Example(prompt=row["prompts_final"], prompt_harmful=1,
                   prompt_categories=categorise("harm_area", [row["harm_area"]], "simple_safety_tests"),
                   language="en", source="simple_safety_tests", id=row["id"], group=row["id"],
                   meta={"kind": row["category"]})


def load(root: Path, split: str, intake: Intake) -> None:
    for where, row in read_csv(root / "simple_safety_tests" / "sst_test_cases.csv.xz", intake):
        intake.take(where, row, convert)
