"""`guardtune detox`: the detoxification job on the embedded default, on CPU, in about 7 minutes.

It needs ParaDetox and Davidson et al.'s tweets in the data root ($GUARDTUNE_DATA_DIR; ../shared/data in the
team layout). In order:
1. the style guard, unless it is already there: a TF-IDF toxicity classifier on davidson_hate_offensive:train
   and paradetox_style:train, disjoint from the test items (runs/detox/style-guard);
2. the Delete baseline (runs/detox/delete);
3. the edit tagger on all-MiniLM-L6-v2 (runs/detox/tagger; the recipe configs/detox/paradetox-minilm-tagger.yaml,
   with key=value overrides as for `guardtune train`);
4. the evaluation on paradetox:test: the tagger, Delete, copy and the human references in one run (J, STA,
   SIM, chrF, BLEU with intervals), written to runs/detox/eval.

Then: guardtune rewrite runs/detox/tagger "some toxic text"
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml

RECIPE = {
    "output_dir": "runs/detox/tagger",
    "model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "kind": "edit_tagger", "max_length": 96,
              "phrase_vocab": 500, "references": "each"},
    "method": {"name": "full"},
    "data": {"train": "paradetox:train", "validation": {"name": "paradetox:validation", "sample": 400, "seed": 0},
             "test": None},
    "training": {"epochs": 2, "batch_size": 32, "lr": 1.0e-4, "eval_every": 200, "eval_batch_size": 128},
}
STYLE_DATA = ("davidson_hate_offensive:train", "paradetox_style:train")


def add_parser(commands) -> None:
    p = commands.add_parser("detox", help="train and evaluate the embedded default detoxifier (ParaDetox, CPU)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("settings", nargs="*", metavar="key=value", help="overrides of the tagger's recipe")
    p.add_argument("--out", default="runs/detox", help="where the style guard, baseline, tagger and eval go")
    p.add_argument("--test", default="paradetox:test",
                   help="the detox test set: a name or a spec mapping, e.g. \"{name: 'paradetox:test', sample: 300}\"")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run, parser=p)


def run(args: argparse.Namespace) -> int:
    import guardtune
    from guardtune import config, detox
    from guardtune.baselines import DeleteRewriter, TfidfGuard
    from guardtune.commands.evaluate import print_detox
    from guardtune.commands.train import print_result
    from guardtune.data import load_any
    from guardtune.data.registry import get
    from guardtune.paths import data_root
    from guardtune.train import train
    from guardtune.ui import console

    missing = [name for name in ("paradetox", "davidson_hate_offensive") if not get(name).available(data_root())]
    if missing:
        raise FileNotFoundError(f"guardtune detox needs {', '.join(missing)} under {data_root()} "
                                "(set GUARDTUNE_DATA_DIR); see `guardtune data list`")
    out, say = Path(args.out), console().print
    style_dir = out / "style-guard"
    if not (style_dir / "guard.json").is_file():
        say(f"[bold]1/4[/bold] style guard: TF-IDF on {' + '.join(STYLE_DATA)} -> {style_dir}")
        TfidfGuard(name="style-guard").fit([ex for name in STYLE_DATA for ex in load_any(name).examples]).save(style_dir)
    delete_dir = out / "delete"
    say(f"[bold]2/4[/bold] Delete baseline -> {delete_dir}")
    DeleteRewriter().fit(load_any("paradetox:train").examples).save(delete_dir)
    recipe = {**copy.deepcopy(RECIPE), "output_dir": str(out / "tagger")}
    cfg = config.from_dict(config.apply_overrides(recipe, args.settings))
    say(f"[bold]3/4[/bold] edit tagger: {cfg.model.name} on paradetox:train -> {cfg.output_dir}")
    print_result(train(cfg, overwrite=True, show_progress=not args.quiet))
    say(f"[bold]4/4[/bold] evaluation on {args.test}")
    tagger, delete, style = (guardtune.load(p) for p in (cfg.output_dir, delete_dir, style_dir))
    test = yaml.safe_load(args.test) if args.test.lstrip().startswith("{") else args.test  # a spec mapping too
    results = detox.compare_rewriters({"edit tagger": tagger, "delete": delete}, [load_any(test)], style,
                                      n_boot=args.bootstrap)
    results.update(rewriter=str(cfg.output_dir), style_guard=str(style_dir))
    detox.write_results(results, out / "eval")
    print_detox(results)
    say(f"wrote {out / 'eval' / 'detox_report.md'}; next: guardtune rewrite {cfg.output_dir} \"some toxic text\"")
    return 0
