"""LabelSpace: which outputs a guard has, and the target/mask tensors for a set of examples.

Every output is an independent probability: the binary tasks (prompt_harmful, response_harmful,
response_refusal) and one output per category for prompt and response categories (multi-label). A guard has
an output for a task only when its training data labels that task, and for the categories its data uses.

Missing labels are masked, never guessed, with one exception that is not a guess: a prompt (response)
labelled safe violates no category, so its category targets are all 0 even when the source gives no
category column.

Sources name categories in their own taxonomies (S1-S14 where guardtune can map them, the source's own names
where it cannot), and a harmful row says nothing about a category its source never assigns: XSafety's
`Goal_Hijacking` row is not an S1 negative, nor is a HarmBench row a `Goal_Hijacking` negative. So when the
training data mixes sources that label categories, the label space keeps each source's `scope` (the categories
its rows use), and a harmful row's category targets are known only within its source's scope. A row from a
source outside the scopes (a test set the guard never trained on) keeps every category known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
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
    # (field, source, the categories that source assigns), only for fields that several sources label
    scopes: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

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

    @cached_property
    def _scopes(self) -> dict[tuple[str, str], frozenset[str]]:
        return {(f, src): frozenset(codes) for f, src, codes in self.scopes}

    def scope(self, field: str, source: str) -> frozenset[str] | None:
        """The categories of `field` that `source` assigns, or None where every category is known for it."""
        return self._scopes.get((field, source))

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
        scopes = []
        for field in CATEGORY_FIELDS:
            used: dict[str, set[str]] = {}
            for ex in examples:
                if getattr(ex, field):
                    used.setdefault(ex.source, set()).update(getattr(ex, field))
            if len(used) > 1:
                scopes += [(field, src, tuple(sorted(codes, key=category_order))) for src, codes in sorted(used.items())]
        return cls(tasks, tuple(cats["prompt_categories"]), tuple(cats["response_categories"]), tuple(scopes))

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
                scope = self.scope(field, ex.source) if ex.label(task) != 0 else None
                for offset, code in enumerate(codes):
                    hit = present is not None and code in present
                    known[row, col + offset] = labelled and (scope is None or code in scope or hit)
                    y[row, col + offset] = float(hit)
                col += len(codes)
        return y, known

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tasks": list(self.tasks), "prompt_categories": list(self.prompt_categories),
                               "response_categories": list(self.response_categories)}
        if self.scopes:
            out["scopes"] = [{"field": f, "source": src, "categories": list(codes)} for f, src, codes in self.scopes]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSpace:
        def texts(value: Any, what: str) -> tuple[str, ...]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"labels: {what} must be a list of names, got {value!r:.80}")
            return tuple(value)

        if not isinstance(data, dict):
            raise ValueError(f"labels: expected an object, got {type(data).__name__}")
        scopes = data.get("scopes", [])
        if not isinstance(scopes, list) or not all(
                isinstance(s, dict) and s.get("field") in CATEGORY_FIELDS and isinstance(s.get("source"), str)
                for s in scopes):
            raise ValueError("labels: scopes must be a list of {field, source, categories}")
        return cls(texts(data.get("tasks"), "tasks"), texts(data.get("prompt_categories", []), "prompt_categories"),
                   texts(data.get("response_categories", []), "response_categories"),
                   tuple((s["field"], s["source"], texts(s.get("categories"), "a scope's categories")) for s in scopes))

    FILE = "labels.json"  # in every guard directory: the outputs, in the order the guard scores them

    def save(self, directory: Path) -> None:
        (Path(directory) / self.FILE).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, directory: Path) -> LabelSpace:
        return cls.from_dict(json.loads((Path(directory) / cls.FILE).read_text(encoding="utf-8")))
