"""PHTest (An et al., COLM 2024): machine-generated pseudo-harmful prompts, for false-refusal (over-blocking)
evaluation. `harmless` prompts look harmful but are safe to answer (prompt_harmful = 0); `controversial` ones
depend on context and stay unlabelled (None), never 0. The class is kept in meta["class"]. There is no clearly
harmful class: a negatives-only set, best read as the false-positive rate of a guard."""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, FieldError
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv

LABELS = {"harmless": 0, "controversial": None}


def _convert(row: dict) -> Example:
    kind = row["Harmfulness"].strip()
    if kind not in LABELS:
        raise FieldError("Harmfulness", f"expected harmless or controversial, got {kind!r}")
    return Example(prompt=row["Request"], prompt_harmful=LABELS[kind], language="en", source="phtest",
                   id=f"phtest:{row['ID']}", group=f"phtest:{row['ID']}", meta={"class": kind})


def load(root: Path, split: str, intake: Intake) -> None:
    for where, row in read_csv(root / "phtest" / "dataset_v0.1.csv.xz", intake):
        intake.take(where, row, _convert)
