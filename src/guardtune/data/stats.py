"""Label balance of a set of examples, per language and per category (pure functions, no printing)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from guardtune.data.example import BINARY_TASKS, CATEGORY_TASKS, Example


@dataclass
class Balance:
    """Counts of 1 / 0 / unlabelled for one binary task."""

    positive: int = 0
    negative: int = 0
    unlabelled: int = 0

    def add(self, value: int | None) -> None:
        if value is None:
            self.unlabelled += 1
        elif value:
            self.positive += 1
        else:
            self.negative += 1

    @property
    def labelled(self) -> int:
        return self.positive + self.negative

    def __str__(self) -> str:
        if not self.labelled:
            return "-"
        return f"{self.positive}/{self.labelled} ({self.positive / self.labelled:.0%})"


@dataclass
class Stats:
    rows: int = 0
    with_response: int = 0
    tasks: dict[str, Balance] = field(default_factory=lambda: defaultdict(Balance))
    by_language: dict[str, dict[str, Balance]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Balance)))
    categories: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    category_harm: dict[str, Balance] = field(default_factory=lambda: defaultdict(Balance))
    languages: Counter = field(default_factory=Counter)


def compute(examples: Sequence[Example]) -> Stats:
    stats = Stats()
    for ex in examples:
        stats.rows += 1
        stats.with_response += ex.response is not None
        stats.languages[ex.language] += 1
        for task in BINARY_TASKS:
            value = ex.label(task)
            stats.tasks[task].add(value)
            stats.by_language[ex.language][task].add(value)
        for task in CATEGORY_TASKS:
            for name in ex.label(task) or ():
                stats.categories[task][name] += 1
        for name in ex.prompt_categories or ():
            stats.category_harm[name].add(ex.prompt_harmful)
    return stats


def labelled_tasks(stats: Stats) -> list[str]:
    return [t for t in BINARY_TASKS if stats.tasks[t].labelled]
