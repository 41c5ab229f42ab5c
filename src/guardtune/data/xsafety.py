"""XSafety: safety-sensitive prompts in 10 languages, 14 scenario files of 200 prompts per language.

The scenario (file) is the label: prompt_harmful = 1 for the 13 scenario/attack files ("sensitive" rather
than strictly harmful) and 0 for commonsense items. Files are one prompt per CSV record (some quoted, a few spanning lines);
Bengali files are .xlsx. The same line index in the same scenario is the same item across languages, so
`group` is "<scenario>:<index>" and translations never straddle a split. `hi/commen_sense.csv` duplicates
`hi/commonsense.csv` without its final instruction and is skipped.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

from guardtune.data.example import Example, categorise
from guardtune.data.intake import Excluded, Intake
from guardtune.data.reading import read_records, read_xlsx

FOLDERS = {"ar": "ar", "bn": "bn", "de": "de", "en": "en", "fr": "fr", "hi": "hi", "ja": "ja", "ru": "ru",
           "sp": "es", "zh": "zh"}
SKIP = {"commen_sense"}
_FIXES = {"Crimes_And_Illegal_Activitie": "Crimes_And_Illegal_Activities"}


def scenario(path: Path) -> str:
    stem = path.name.split(".")[0]
    stem = re.sub(r"_(n|en)$", "", stem)
    return _FIXES.get(stem, stem)


def _prompts(path: Path, intake: Intake):
    if path.suffix == ".xlsx":
        for where, row in read_xlsx(path, ["text"]):
            yield where, row["text"]
        return
    for where, record in read_records(path, intake):
        # Unquoted lines containing commas come back as several fields: join them back.
        yield where, ",".join(record).strip()


def load(root: Path, split: str, intake: Intake) -> None:
    for folder, language in FOLDERS.items():
        for path in sorted((root / "xsafety" / folder).iterdir()):
            name = scenario(path)
            if name in SKIP:
                continue
            categories = categorise("scenario", [name], "xsafety")
            for index, (where, text) in enumerate(_prompts(path, intake), start=1):
                intake.take(where, text, partial(_convert, name=name, index=index, language=language,
                                                 categories=categories))


def _convert(text, *, name: str, index: int, language: str, categories: tuple[str, ...]) -> Example:
    if text is None or not str(text).strip():
        raise Excluded("blank line (item missing in this language)")
    return Example(prompt=text, prompt_harmful=int(name != "commonsense"), prompt_categories=categories,
                   language=language, source="xsafety", id=f"{language}:{name}:{index}",
                   group=f"{name}:{index}")
