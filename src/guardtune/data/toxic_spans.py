"""Toxic Spans (SemEval-2021 Task 5): toxic posts with character-offset rationales.

The upstream `spans` column lists every toxic character offset; consecutive offsets become [start, end)
spans in `rationale`. Every post was pre-filtered as toxic (prompt_harmful = 1); an empty span list means
no span could be isolated, and the rationale is then an empty tuple (labelled: no span), not None.
"""

from __future__ import annotations

import ast
from pathlib import Path

from guardtune.data.example import Example, FieldError
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv

SPLITS = {"train": "tsd_train", "trial": "tsd_trial", "test": "tsd_test"}


def offsets_to_spans(offsets: list[int]) -> tuple[tuple[int, int], ...]:
    spans: list[list[int]] = []
    for offset in sorted(set(offsets)):
        if spans and offset == spans[-1][1]:
            spans[-1][1] = offset + 1
        else:
            spans.append([offset, offset + 1])
    return tuple((a, b) for a, b in spans)


def _convert(row: dict) -> Example:
    try:
        offsets = ast.literal_eval(row["spans"])
    except (ValueError, SyntaxError):
        raise FieldError("spans", f"expected a list of character offsets, got {row['spans'][:80]!r}") from None
    return Example(prompt=row["text"], prompt_harmful=1, rationale=offsets_to_spans(offsets), language="en",
                   source="toxic_spans", id=row["_id"], group=row["_id"])


def load(root: Path, split: str, intake: Intake) -> None:
    path = root / "toxic_spans" / "semeval2021" / f"{SPLITS[split]}.csv.xz"
    for where, row in read_csv(path, intake):
        intake.take(where, {**row, "_id": f"toxic_spans:{split}:{where.index}"}, _convert)
