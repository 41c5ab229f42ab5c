"""LabelSpace: which outputs a guard has, and the target/mask tensors for a set of examples.

Every output is an independent probability: the binary tasks (prompt_harmful, response_harmful,
response_refusal) and one output per category for prompt and response categories (multi-label). A guard has
an output for a task only when its training data labels that task, and for the categories its data uses.

Missing labels are masked, never guessed, with one exception that is not a guess: a prompt (response)
labelled safe violates no category, so its category targets are all 0 even when the source gives no
category column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from guardtune.data.example import BINARY_TASKS, Example
from guardtune.taxonomy import CODES

CATEGORY_FIELDS = {"prompt_categories": "prompt_harmful", "response_categories": "response_harmful"}


def category_order(code: str) -> tuple[int, int, str]:
    """S1..S14 in numeric order first, then any other label names alphabetically."""
    return (0, CODES.index(code), "") if code in CODES else (1, 0, code)


@dataclass(frozen=True)
class LabelSpace:
    tasks: tuple[str, ...]
    prompt_categories: tuple[str, ...] = ()
    response_categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.tasks) - set(BINARY_TASKS)
        if unknown:
            raise ValueError(f"unknown task(s) {sorted(unknown)}; choose from {list(BINARY_TASKS)}")
        if not self.outputs:
            raise ValueError("the label space is empty: the data labels no task and no category")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names, in the order of the model's logits: tasks, then `prompt_categories/S1`, ..."""
        return (self.tasks + tuple(f"prompt_categories/{c}" for c in self.prompt_categories)
                + tuple(f"response_categories/{c}" for c in self.response_categories))

    @property
    def groups(self) -> list[int]:
        """A task id per output: each binary task its own, each category field one (for the loss weighting)."""
        n = len(self.tasks)
        return list(range(n)) + [n] * len(self.prompt_categories) + [n + 1] * len(self.response_categories)

    def categories(self, field: str) -> tuple[str, ...]:
        return getattr(self, field)

    def index(self, output: str) -> int:
        try:
            return self.outputs.index(output)
        except ValueError:
            raise KeyError(f"this guard has no output {output!r}; it has {list(self.outputs)}") from None

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> LabelSpace:
        tasks = tuple(t for t in BINARY_TASKS if any(ex.label(t) is not None for ex in examples))
        cats = {field: sorted({c for ex in examples for c in (getattr(ex, field) or ())}, key=category_order)
                for field in CATEGORY_FIELDS}
        return cls(tasks, tuple(cats["prompt_categories"]), tuple(cats["response_categories"]))

    def targets(self, examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
        """(targets, mask), both [n_examples, n_outputs]; mask is False where the label is unknown."""
        y = np.zeros((len(examples), len(self.outputs)), dtype=np.float32)
        known = np.zeros_like(y, dtype=bool)
        for row, ex in enumerate(examples):
            for col, task in enumerate(self.tasks):
                value = ex.label(task)
                if value is not None:
                    y[row, col], known[row, col] = float(value), True
            col = len(self.tasks)
            for field, task in CATEGORY_FIELDS.items():
                codes = self.categories(field)
                present = getattr(ex, field)
                labelled = present is not None or ex.label(task) == 0
                for offset, code in enumerate(codes):
                    known[row, col + offset] = labelled
                    y[row, col + offset] = float(present is not None and code in present)
                col += len(codes)
        return y, known

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "prompt_categories": list(self.prompt_categories),
                "response_categories": list(self.response_categories)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSpace:
        return cls(tuple(data["tasks"]), tuple(data.get("prompt_categories", ())),
                   tuple(data.get("response_categories", ())))

    FILE = "labels.json"  # in every guard directory: the outputs, in the order the guard scores them

    def save(self, directory: Path) -> None:
        (Path(directory) / self.FILE).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, directory: Path) -> LabelSpace:
        return cls.from_dict(json.loads((Path(directory) / cls.FILE).read_text(encoding="utf-8")))
