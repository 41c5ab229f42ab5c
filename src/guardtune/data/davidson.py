"""Davidson et al. 2017: English tweets labelled hate speech, offensive language or neither (majority of
CrowdFlower annotators). `prompt_harmful` = 1 for hate or offensive, 0 for neither; hate maps to S10 (Hate),
and offensive language to no policy category (labelled, no category: it is not a policy violation by itself).
Tweets are HTML-unescaped; the annotator counts are kept in `meta`."""

from __future__ import annotations

import html
from pathlib import Path

from guardtune.data.example import Example, FieldError
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv

CLASSES = {"0": "hate", "1": "offensive", "2": "neither"}


def _count(row: dict, name: str) -> int:
    try:
        return int(row[name])
    except ValueError:
        raise FieldError(name, f"expected an annotator count, got {row[name]!r}") from None


def _convert(row: dict) -> Example:
    label = CLASSES.get(row["class"].strip())
    if label is None:
        raise FieldError("class", f"expected 0 (hate), 1 (offensive) or 2 (neither), got {row['class']!r}")
    counts = {k: _count(row, k) for k in ("count", "hate_speech", "offensive_language", "neither")}
    if counts["hate_speech"] + counts["offensive_language"] + counts["neither"] != counts["count"]:
        raise FieldError("count", f"annotator counts do not add up: {counts}")
    return Example(prompt=html.unescape(row["tweet"]), prompt_harmful=int(label != "neither"),
                   prompt_categories=("S10",) if label == "hate" else (), language="en", source="davidson",
                   id=f"davidson:{row['']}", group=f"davidson:{row['']}", meta={"class": label, **counts})


def load(root: Path, split: str, intake: Intake) -> None:
    for where, row in read_csv(root / "davidson_hate_offensive" / "labeled_data.csv.xz", intake):
        intake.take(where, row, _convert)
