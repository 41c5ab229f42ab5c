"""`guardtune lodo LODO.yaml`: leave-one-dataset-out, the honest measure of "works on data it never saw".

For each fold (a held-out source), the recipe is trained without the mixture entries that read that source
and tested on the source's test split; beside it a TF-IDF + logistic regression baseline fitted on exactly the
same training rows, and reference recipes (trained once, on their own data) on the same test rows. The report
gives per-fold and mean AUPRC with 95% bootstrap intervals and paired differences; the over-refusal rate
(the harmless set's FPR at the threshold that catches a given share of the harmful set) for every run; and the
full recipe in domain. Each run is a worker process: a finished run is never redone, so a killed command
resumes where it stopped. Results: OUTPUT_DIR/report.md and results.json; runs in OUTPUT_DIR/runs/.

examples:
  guardtune lodo configs/lodo/general-en.yaml               (about 75 minutes on 2 CPU cores)
  guardtune lodo configs/lodo/general-en.yaml --dry-run     (the runs, and which are done)
  guardtune lodo configs/lodo/general-en.yaml --report-only (the report from the finished runs)
"""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    p = commands.add_parser("lodo", help="leave-one-dataset-out: train without each source, test on it",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lodo", metavar="LODO.yaml", help="the leave-one-out file (see configs/lodo/)")
    p.add_argument("--out", default=None, help="output directory (default: the file's output_dir)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and what is already done; run nothing")
    p.add_argument("--report-only", action="store_true", help="write the report from the finished runs only")
    p.set_defaults(run=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from guardtune.lodo import load_lodo, run_lodo, write_report
    from guardtune.ui import console, table

    lodo = load_lodo(args.lodo, args.out)
    out = console()
    if args.dry_run:
        rows = []
        for name, (cfg, tests, baseline) in lodo.runs().items():
            directory = lodo.run_dir(name, cfg)
            done = (directory / "result.json").exists()
            rows.append((name, ", ".join(tests), "yes" if baseline else "no", "done" if done else "to run"))
        out.print(table(f"{lodo.name}: {len(rows)} runs -> {lodo.output_dir}", ["run", "tested on", "TF-IDF",
                                                                                "status"], rows))
        return 0
    if args.report_only:
        write_report(lodo)
    else:
        run_lodo(lodo, lambda name, directory: out.print(f"[bold]{name}[/bold] -> {directory}"))
    out.print(f"report: {lodo.output_dir / 'report.md'}")
    out.print((lodo.output_dir / "report.md").read_text(encoding="utf-8"))
    return 0
