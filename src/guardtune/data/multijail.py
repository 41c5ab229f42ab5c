"""MultiJail: 315 harmful prompts, each in 10 languages (positives only).

Melted to one example per (item, language); the item id is the group, so translations of one prompt
always land on the same side of a split.
"""

from __future__ import annotations

import ast
from pathlib import Path

from guardtune.data.example import Example, FieldError, categorise
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv

LANGUAGES = ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv")


def convert(row: dict) -> list[Example]:
    try:
        tags = ast.literal_eval(row["tags"])
    except (ValueError, SyntaxError):
        raise FieldError("tags", f"expected a Python list of tags, got {row['tags']!r}") from None
    categories = categorise("tags", list(tags), "multijail")
    return [
        Example(prompt=row[lang], prompt_harmful=1, prompt_categories=categories, language=lang,
                source="multijail", id=f"{row['id']}:{lang}", group=row["id"],
                meta={"origin": row["source"]})
        for lang in LANGUAGES
    ]


def load(root: Path, split: str, intake: Intake) -> None:
    for where, row in read_csv(root / "multijail" / "MultiJail.csv.xz", intake):
        intake.take(where, row, convert)
