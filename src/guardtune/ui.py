"""Terminal output helpers: one rich console, tables, and a progress bar that stays quiet when piped."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TypeVar

from rich.console import Console
from rich.table import Table

T = TypeVar("T")


@lru_cache(maxsize=1)
def console() -> Console:
    # Piped or captured output gets 140 columns (rich would use 80), so that metric tables do not wrap.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    out = Table(title=title, title_justify="left", show_lines=False)
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*(str(v) for v in row))
    return out


def progress(items: Sequence[T], description: str, enabled: bool = True, unit: str = "it") -> Iterable[T]:
    """A tqdm bar on a terminal, plain iteration otherwise."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, disable=not (enabled and sys.stderr.isatty()), leave=False, unit=unit)


def bar(total: int, description: str, enabled: bool = True, initial: int = 0):
    """A tqdm bar to update by hand (training steps); quiet when piped or disabled."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, disable=not (enabled and sys.stderr.isatty()),
                dynamic_ncols=True)
