"""`guardtune demo`: the main job on the embedded default, offline.

Until training lands this is a summary of the embedded demo set: what it contains and how it splits.
"""

from __future__ import annotations

import argparse

from guardtune.commands.data import print_stats
from guardtune.data import load
from guardtune.ui import console


def add_parser(commands) -> None:
    p = commands.add_parser("demo", help="run the main job on the embedded default (offline)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=run, parser=p)


def run(args: argparse.Namespace) -> int:
    out = console()
    loaded = load("demo:all")
    out.print(f"[bold]Embedded demo set[/bold]: {loaded.report.summary()}")
    print_stats(loaded.examples, "demo:all")
    sizes = {split: len(load(f"demo:{split}").examples) for split in ("train", "validation", "test")}
    out.print("Grouped hash splits: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    return 0
