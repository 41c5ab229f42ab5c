"""Seeded sampling, grouped hash splits and weighted mixtures: exactly reproducible.

A grouped split assigns each *group* (an item and its translations, a prompt and its responses) to one
side by a hash of the group id and a seed, so the same rows land in the same split on every machine and
in every run, whatever the row order, and translations never leak between train and test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Sequence
from typing import Any

from guardtune.data.example import Example

DERIVED_SPLITS: dict[str, float] = {"train": 0.7, "validation": 0.1, "test": 0.2}


def bucket(group: str, seed: int = 0) -> float:
    """A stable number in [0, 1) for a group id."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def grouped_split(examples: Sequence[Example], split: str, seed: int = 0,
                  fractions: dict[str, float] = DERIVED_SPLITS) -> list[Example]:
    """The examples whose group falls in `split` (fractions are taken in order: train, validation, test)."""
    if split not in fractions:
        raise KeyError(f"unknown derived split {split!r}; choose from {sorted(fractions)}")
    low = 0.0
    for name, share in fractions.items():
        if name == split:
            break
        low += share
    high = low + fractions[split]
    return [ex for ex in examples if low <= bucket(ex.group or ex.id or ex.prompt, seed) < high]


def sample(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """`n` rows drawn without replacement with a seeded generator, in drawn order; all rows if n >= len."""
    if n < 0:
        raise ValueError(f"sample must be >= 0, got {n}")
    if n >= len(examples):
        return list(examples)
    return [examples[i] for i in random.Random(seed).sample(range(len(examples)), n)]


def take_weighted(examples: Sequence[Example], n: int, seed: int = 0) -> list[Example]:
    """`n` rows: whole copies of the data as often as n allows, then a seeded sample for the remainder."""
    copies, rest = divmod(n, len(examples)) if examples else (0, 0)
    return list(examples) * copies + sample(examples, rest, seed)


def mixture(parts: Sequence[tuple[Sequence[Example], float]], size: int | None = None, seed: int = 0) -> list[Example]:
    """Mix datasets by weight. Without `size`, each part contributes round(weight * its rows) (so 0.5 halves
    it, 2 doubles it); with `size`, parts share `size` rows in proportion to their weights."""
    total_weight = sum(w for _, w in parts)
    if total_weight <= 0 or any(w < 0 for _, w in parts):
        raise ValueError("mixture weights must be >= 0 and not all zero")
    out: list[Example] = []
    for i, (rows, weight) in enumerate(parts):
        n = round(size * weight / total_weight) if size is not None else round(weight * len(rows))
        out.extend(take_weighted(rows, n, seed + i))
    return out


def prompts_only(examples: Sequence[Example]) -> list[Example]:
    """A prompt/response set as a prompt set: the first row of each distinct (group, prompt), with the
    response, its labels and its categories removed (a prompt's label is the same on each of its rows)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for ex in examples:
        key = (ex.group or ex.id, ex.prompt)
        if key not in seen:
            seen.add(key)
            out.append(dataclasses.replace(ex, response=None, response_harmful=None, response_refusal=None,
                                           response_categories=None))
    return out


def drop_categories(examples: Sequence[Example], names: Sequence[str]) -> tuple[list[Example], int]:
    """A source's harms that the guard's policy does not count (Do-Not-Answer's `Treat Chatbot as a Human`):
    `names` are removed from every row's categories, and a row labelled harmful whose categories were all
    among them is dropped (under this policy it is neither harmful nor known to be safe). Returns the rows and
    how many were dropped."""
    out, dropped, gone = [], 0, set(names)
    for ex in examples:
        changes: dict[str, Any] = {}
        harmless_here = False
        for field, task in (("prompt_categories", "prompt_harmful"), ("response_categories", "response_harmful")):
            cats = getattr(ex, field)
            if cats and gone.intersection(cats):
                changes[field] = tuple(c for c in cats if c not in gone)
                harmless_here |= not changes[field] and ex.label(task) == 1
        if harmless_here:
            dropped += 1
        else:
            out.append(dataclasses.replace(ex, **changes) if changes else ex)
    return out, dropped


BALANCE = ("none", "classes", "language")


def balance(examples: Sequence[Example], by: str = "classes", ratio: float = 1.0, seed: int = 0,
            task: str | None = None) -> tuple[list[Example], dict[str, dict[str, int]]]:
    """Both classes of `task` (default: the first of prompt_harmful / response_harmful that any row labels) in
    at most `ratio` : 1 proportion, overall (`classes`) or within each language (`language`): the larger class
    is cut down by a seeded sample, rows without the label are kept as they are. A group (language) with only one
    class is dropped whole: alone it could only teach that its language (or source) means that class. Returns
    the rows (in their original order) and, per group, the counts kept and dropped."""
    if by not in BALANCE:
        raise ValueError(f"balance must be one of {', '.join(BALANCE)}, got {by!r}")
    if ratio < 1:
        raise ValueError(f"balance_ratio must be >= 1 (larger class : smaller class), got {ratio}")
    if by == "none":
        return list(examples), {}
    task = task or next((t for t in ("prompt_harmful", "response_harmful")
                         if any(getattr(ex, t) is not None for ex in examples)), "prompt_harmful")
    groups: dict[str, dict[int, list[int]]] = {}
    for i, ex in enumerate(examples):
        value = getattr(ex, task)
        if value is not None:
            key = (ex.language or "?") if by == "language" else "all"
            groups.setdefault(key, {0: [], 1: []})[int(value)].append(i)
    keep = {i for i, ex in enumerate(examples) if getattr(ex, task) is None}
    summary: dict[str, dict[str, int]] = {}
    for key, classes in sorted(groups.items()):
        small = min(len(classes[0]), len(classes[1]))
        if small == 0:
            summary[key] = {"kept": 0, "dropped": len(classes[0]) + len(classes[1])}
            continue
        cap = int(small * ratio)
        kept = 0
        for label, rows in classes.items():
            chosen = rows if len(rows) <= cap else random.Random(f"{seed}/{key}/{label}").sample(rows, cap)
            keep.update(chosen)
            kept += len(chosen)
        summary[key] = {"kept": kept, "dropped": len(classes[0]) + len(classes[1]) - kept}
    return [ex for i, ex in enumerate(examples) if i in keep], summary
