"""The embedded demo set: a few hundred short examples in five languages, shipped with the package so the
main job runs offline. It is written by `scripts/make_demo_set.py`; see that script for what it contains."""

from __future__ import annotations

import json
from importlib import resources

from guardtune.data.example import Example
from guardtune.data.intake import Intake, Location

LANGUAGES = ("en", "de", "fr", "es", "zh")


def load(split: str, intake: Intake) -> None:
    path = resources.files("guardtune.data") / "demo.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        intake.take(Location("guardtune/data/demo.jsonl", "line", number), line,
                    lambda text: Example.from_dict(json.loads(text)))
