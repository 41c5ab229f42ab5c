"""`guardtune train [CONFIG] [key=value ...]`: train a guard; the run directory then holds everything needed
to use it (`guardtune.load(run_dir)`).

Without a CONFIG the defaults train the embedded default: all-MiniLM-L6-v2 with LoRA on the embedded demo
set. Any setting can be overridden on the command line with its dotted key; values are read as YAML.

examples:
  guardtune train configs/cpu/toxicchat-minilm-lora.yaml
  guardtune train configs/cpu/toxicchat-minilm-lora.yaml output_dir=runs/r32 method.r=32 training.lr=1e-4
  guardtune train method.name=dora training.epochs=2        (the defaults, with DoRA)
  guardtune train CONFIG --resume                           (continue a killed run from its last checkpoint)
  guardtune train CONFIG calibrate.data=validation          (also choose thresholds, saved in the run)
  accelerate launch --num_processes 2 -m guardtune train CONFIG      (data-parallel, same config)

methods: full, freeze (method.top_k, method.cache_trunk), lora, dora, pissa, qlora (CUDA), adalora,
ia3, vera, loha, lokr; LoRA variants take method.r, method.alpha, method.dropout, method.target_modules and
method.rslora=true. See docs/training.md.
"""

from __future__ import annotations

import argparse

from guardtune.ui import console, table


def add_parser(commands) -> None:
    p = commands.add_parser("train", help="train a guard from a YAML config (plus key=value overrides)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="*", metavar="CONFIG|key=value",
                   help="a YAML config file (optional, first), then any number of dotted key=value overrides")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run in output_dir and start again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run, parser=p)


def split_settings(settings: list[str]) -> tuple[str | None, list[str]]:
    if settings and "=" not in settings[0]:
        return settings[0], settings[1:]
    return None, settings


def run(args: argparse.Namespace) -> int:
    from guardtune import config
    from guardtune.train import train

    path, overrides = split_settings(args.settings)
    cfg = config.load(path, overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, show_progress=not args.quiet)
    print_result(result)
    return 0


def print_result(result) -> None:
    import accelerate

    if not accelerate.PartialState().is_main_process:
        return
    out = console()
    best = f", best validation at step {result.best['step']}" if result.best else ""
    for split, info in (result.data or {}).items():
        if info["rejected"] or info["excluded"]:
            out.print(f"[yellow]{split}[/yellow]: {info['summary']}")
    out.print(f"[bold]trained[/bold] {result.steps} steps{best}; the guard is in {result.run_dir}")
    if result.test:
        binary = {k: m for k, m in result.test.items() if "auprc" in m}
        rows = [(task, m["n"], m["positives"], _f(m["auprc"]), _f(m["roc_auc"]), _f(m["f1"]), _f(m["precision"]),
                 _f(m["recall"]), _f(m["fpr"])) for task, m in binary.items()]
        thresholds = getattr(result.guard, "thresholds", None)
        calibrated = thresholds is not None and thresholds.calibrated
        at = "the thresholds calibrated when training ended (thresholds.json)" if calibrated else "threshold 0.5"
        out.print(table(f"test split, {at} (F1 = positive-class F1)",
                        ["task", "n", "pos", "AUPRC", "ROC-AUC", "F1", "prec", "recall", "FPR"], rows))
        for task, m in result.test.items():
            if "jaccard" in m:
                out.print(f"{task}: per-sample Jaccard {m['jaccard']:.3f} over {m['n']} labelled examples")


def _f(value) -> str:
    return "" if value is None else f"{value:.3f}"
