"""ETHOS: English hate speech; binary (annotator fraction >= 0.5) with multi-label targets.

The binary file gives every comment; the multi-label file gives targets for the hateful ones. They are
joined on the comment text; targets map to S10 and incitement to violence to S1 (the raw target names are
kept in `meta["targets"]`). Hateful comments without a multi-label row have categories `None`.
"""

from __future__ import annotations

from pathlib import Path

from guardtune.data.example import Example, FieldError
from guardtune.data.intake import Intake
from guardtune.data.reading import read_csv
from guardtune.taxonomy import canonical

TARGETS = ("violence", "gender", "race", "national_origin", "disability", "religion", "sexual_orientation")


def _fraction(field: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FieldError(field, f"expected an annotator fraction in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise FieldError(field, f"expected an annotator fraction in [0, 1], got {value!r}")
    return number


def _targets(root: Path, intake: Intake) -> dict[str, list[str]]:
    out = {}
    for where, row in read_csv(root / "ethos" / "Ethos_Dataset_Multi_Label.csv.xz", intake, delimiter=";"):
        try:
            out[row["comment"]] = [t for t in TARGETS if _fraction(t, row[t]) >= 0.5]
        except FieldError as err:
            intake.reject(where, err.field, err.message, row)
    return out


def load(root: Path, split: str, intake: Intake) -> None:
    targets = _targets(root, intake)

    def convert(row: dict) -> Example:
        hateful = int(_fraction("isHate", row["isHate"]) >= 0.5)
        names = targets.get(row["comment"]) if hateful else []
        return Example(prompt=row["comment"], prompt_harmful=hateful,
                       prompt_categories=None if names is None else tuple(canonical(names, "ethos")),
                       language="en", source="ethos", id=row["_id"], group=row["_id"],
                       meta={"targets": names or []})

    path = root / "ethos" / "Ethos_Dataset_Binary.csv.xz"
    for where, row in read_csv(path, intake, delimiter=";"):
        intake.take(where, {**row, "_id": f"ethos:{where.index}"}, convert)
