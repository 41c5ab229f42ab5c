"""`guardtune study STUDY.yaml`: compare fine-tuning methods (or ranks, layers, backbones, datasets) properly.

Every arm gets the same training data, steps and learning-rate candidates; the candidate is chosen per arm
on validation data (first seed), then run with every seed; every run is scored on the same test rows. The
report gives quality per test set with 95% intervals over rows and seeds, paired tests against the reference
arm (Holm-adjusted), and cost: trainable parameters, training time, examples/s, peak memory, inference
ms/example; plus plots of quality against parameters and against time.

Each run is a worker process; a finished run is never redone, a failed one is recorded and skipped (rerun
with --retry-failed), and a killed study resumes where it stopped (the runs in progress from their last
checkpoint). Results: OUTPUT_DIR/results.csv, results.json, report.md, plots/; each run in OUTPUT_DIR/runs/.

An arm may be a confidence cascade of other arms (`{cascade: {stages: [tfidf, big], rule: rate, target:
0.3}}`): it trains nothing, is fitted on the big arm's validation data at each seed, and is tested on the same
rows, so "cascade vs big guard alone" is one study (configs/study/cascade-vs-minilm.yaml).

examples:
  guardtune study configs/study/peft-methods.yaml                 (about 45 minutes on 2 CPU cores)
  guardtune study configs/study/peft-methods.yaml --dry-run       (the runs it would make)
  guardtune study configs/study/layers-and-ranks.yaml --workers 2 --devices cuda:0,cuda:1
  guardtune study configs/study/peft-methods.yaml --report-only   (rewrite the report from finished runs)
  guardtune study configs/study/cascade-vs-minilm.yaml            (a cascade against its big stage alone)
"""

from __future__ import annotations

import argparse

from guardtune.ui import console, table


def add_parser(commands) -> None:
    p = commands.add_parser("study", help="compare methods/settings over seeds on matched budgets, with significance",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", metavar="STUDY.yaml", help="the study file (see configs/study/)")
    p.add_argument("--workers", type=int, default=1,
                   help="runs at a time (default 1); on CPU they share the cores, on GPUs give --devices")
    p.add_argument("--devices", default=None, help="comma-separated devices, one per worker (cuda:0,cuda:1)")
    p.add_argument("--out", default=None, help="output directory (default: the study's output_dir)")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs that failed before")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what is already done; run nothing")
    p.add_argument("--report-only", action="store_true", help="rewrite results and report from finished runs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from guardtune.study import load_study, run_study, write_report
    from guardtune.study.runner import read_result

    study = load_study(args.study, args.out)
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    devices = [d.strip() for d in args.devices.split(",")] if args.devices else None
    out = console()
    if args.dry_run:
        runs = study.search_runs()
        status = lambda r: (read_result(study, r) or {}).get("status", "to run")  # noqa: E731
        out.print(table(f"{study.name}: {len(runs)} search runs first, {study.total_runs} in all "
                        f"(the chosen candidates' other seeds follow)", ["run", "status"],
                        [(r.key, status(r)) for r in runs]))
        if study.cascades:
            out.print(f"then {len(study.cascades) * len(study.cells) * len(study.seeds)} cascade runs "
                      f"({', '.join(study.cascades)}: fitted, not trained) once their stages have finished")
        return 0
    if not args.report_only:
        run_study(study, args.workers, devices, args.retry_failed, show_progress=not args.quiet)
    results = write_report(study)
    summary(results, study)
    return 0 if not results["failures"] else 1


def summary(results: dict, study) -> None:
    from guardtune.report import fmt
    from guardtune.study.markdown import MEAN, headline, label

    out = console()
    rows = []
    for r in results["rows"]:
        if (r["output"], r["metric"]) in headline(results) and (r["dataset"] == MEAN or len(results["tests"]) == 1):
            diff = fmt(r.get("difference"), r.get("difference_ci")) if "difference" in r else "reference"
            rows.append((r["cell"] or "-", r["arm"], r["candidate"] or "-", label(r["output"], r["metric"]),
                         fmt(r["mean"], r["ci"]), diff, fmt(r.get("p_holm"))))
    out.print(table(f"{study.name}: headline (mean over test sets), 95% CI", ["cell", "arm", "chosen", "metric",
                                                                            "value", "vs reference", "p (Holm)"], rows))
    if results["failures"]:
        out.print(f"[red]{len(results['failures'])} runs failed[/red] (see report.md; --retry-failed reruns them)")
    out.print(f"report: {study.output_dir / 'report.md'}")
