"""`guardtune cascade fit`: a confidence cascade of guards, fitted on labelled validation data.

examples:
  guardtune cascade fit runs/tfidf runs/toxicchat-minilm-lora --data toxicchat_human:train --out runs/cascade
  guardtune cascade fit runs/tfidf runs/minilm --data SPEC --out runs/cascade --rule rate --target 0.3
  guardtune cascade fit runs/tfidf runs/minilm --data SPEC --out runs/cascade --rule budget --target 2.5
  guardtune eval runs/cascade --data toxicchat_human:test           # as any guard; the report says who decided

Stages go cheapest first. Each stage but the last answers the examples it is sure of (its probability outside
an uncertainty band around its threshold) and passes the rest on. The rule chooses the band:
  quality (default)  the least cost whose --metric is within --tolerance of the last stage's alone
  rate               --target: the share of examples the first stage escalates
  budget             --target: ms per example; the best --metric within it
Costs are measured here (ms/example, batched) unless --costs gives them. The cascade directory holds
guard.json (stages, bands, the fit), curve.json (quality and cost over every band) and cascade-curve.png.
Fit on validation data, never on the test set you report.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from guardtune.commands import add_trust_argument
from guardtune.ui import console


def add_parser(commands) -> None:
    c = commands.add_parser("cascade", help="a confidence cascade: cheap guards first, the big one for the rest",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = c.add_subparsers(dest="cascade_command", metavar="COMMAND")
    f = sub.add_parser("fit", help="fit a cascade's bands on labelled data", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("stages", nargs="+", metavar="STAGE", help="guard directories, cheapest first (two or more)")
    f.add_argument("--data", required=True, help="labelled validation data (a dataset spec)")
    f.add_argument("--out", required=True, help="the cascade directory to write")
    f.add_argument("--rule", choices=("quality", "rate", "budget"), default="quality")
    f.add_argument("--target", type=float, help="rate: share escalated (0-1); budget: ms per example")
    f.add_argument("--metric", choices=("auprc", "f1"), default="auprc", help="quality measure (rule quality, budget)")
    f.add_argument("--tolerance", type=float, default=0.005, help="rule quality: how far below the last stage")
    f.add_argument("--shape", choices=("low", "two-sided"), default="low",
                   help="low: a stage only clears what it is sure is safe, and passes on the rest (default: one "
                        "number per stage, robust on small validation sets); two-sided: it also decides what it is "
                        "sure is harmful")
    f.add_argument("--costs", help="ms per example of each stage, comma-separated (default: measured here)")
    add_trust_argument(f)
    f.set_defaults(run=run_fit, parser=f)
    c.set_defaults(parser=c)


def run_fit(args: argparse.Namespace) -> int:
    import guardtune
    from guardtune.cascade import Cascade, fit, write_curve
    from guardtune.data import load_any
    from guardtune.ui import table

    if len(args.stages) < 2:
        args.parser.error("a cascade needs at least two stages")
    costs = None
    if args.costs:
        try:
            costs = [float(x) for x in args.costs.split(",")]
        except ValueError:
            args.parser.error(f"--costs must be numbers separated by commas, got {args.costs!r}")
        if len(costs) != len(args.stages):
            args.parser.error(f"--costs gives {len(costs)} numbers for {len(args.stages)} stages")
    stages = [guardtune.load(s, trust_remote_code=args.trust_remote_code) for s in args.stages]
    examples = load_any(args.data).examples
    fitted = fit(stages, examples, args.rule, args.target, costs, args.metric, args.tolerance, shape=args.shape)
    out = Path(args.out)
    cascade = Cascade(stages, fitted.bands, name=out.name, info=fitted.chosen)
    cascade.save(out, [os.path.relpath(Path(s).resolve(), out.resolve()) for s in args.stages])
    write_curve(fitted, out)
    c = fitted.chosen
    rows = [[f"stage {i}: {s.name}", f"{c['costs_ms'][i]:.3f}", c["reached"][i], f"{c['reached'][i] / c['n']:.1%}"]
            for i, s in enumerate(stages)]
    console().print(table(f"cascade fitted on {args.data} ({c['n']} labelled examples, rule {args.rule})",
                          ["stage", "ms/example", "examples reaching it", "share"], rows))
    last = c["last_alone"]
    console().print(f"cascade: AUPRC {_f(c['auprc'])}, F1 {_f(c['f1'])}, {c['cost_ms']:.3f} ms/example; the last stage "
                    f"alone: AUPRC {_f(last['auprc'])}, F1 {_f(last['f1'])}, {last['cost_ms']:.3f} ms/example")
    console().print(f"wrote {out / 'guard.json'}, {out / 'curve.json'} and {out / 'cascade-curve.png'}")
    return 0


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"
