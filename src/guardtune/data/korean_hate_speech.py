"""Korean HateSpeech (BEEP!): entertainment-news comments labelled none / offensive / hate.

prompt_harmful = hate != "none"; "hate" maps to S10, "offensive" keeps its name. The bias label goes to
`meta["bias"]` and the news title (context) to `meta["news_title"]`. The `test` split has no labels
(they were withheld for a leaderboard): its labels are None, not 0.
"""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, FieldError
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv

HATE = {"none": (0, ()), "offensive": (1, ("offensive",)), "hate": (1, ("S10",))}


def _convert(row: dict) -> Example:
    harmful, categories = None, None
    if "hate" in row:
        if row["hate"] not in HATE:
            raise FieldError("hate", f"expected one of {sorted(HATE)}, got {row['hate']!r}")
        harmful, categories = HATE[row["hate"]]
    return Example(prompt=row["comments"], prompt_harmful=harmful, prompt_categories=categories, language="ko",
                   source="korean_hate_speech", id=row["_id"], group=row["_id"],
                   meta={"bias": row.get("bias"), "news_title": row["_title"]})


def load(root: Path, split: str, intake: Intake) -> None:
    folder = root / "korean_hate_speech"
    path = folder / ("test.no_label.tsv.xz" if split == "test" else f"labeled/{split}.tsv.xz")
    titles = (folder / "news_title" / f"{split}.news_title.txt").read_text(encoding="utf-8").splitlines()
    for i, (where, row) in enumerate(read_csv(path, intake, delimiter="\t")):
        title = titles[i].strip().strip('"') if i < len(titles) else None
        intake.take(where, {**row, "_id": f"kohate:{split}:{i + 1}", "_title": title}, _convert)
