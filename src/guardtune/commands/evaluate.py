"""`guardtune eval`, `guardtune calibrate`, `guardtune baseline`: trustworthy numbers for any guard.

examples:
  guardtune eval runs/demo --data demo:test
  guardtune eval runs/tc --data toxicchat_human:test --data multijail:test --compare runs/tfidf
  guardtune eval hf:unitary/toxic-bert --label-map toxic=prompt_harmful --data toxicchat_human:test --out eval/tb
  guardtune calibrate runs/tc --data toxicchat_human:train --strategy fpr --target 0.05 --temperature
  guardtune baseline tfidf --data toxicchat_human:train --out runs/tfidf
  guardtune baseline fewshot --model Qwen/Qwen2.5-0.5B-Instruct --data toxicchat_human:train --shots 4 --out runs/fs

A guard is a run directory (`guardtune train`, `guardtune baseline`) or hf:<id or path> for a Hugging Face
sequence classifier. eval writes metrics.json, report.md and plots/*.png (into the run directory unless --out
says otherwise); calibrate writes thresholds.json into the run, which eval, guardtune.load(RUN).moderate and
score then use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guardtune.commands import add_trust_argument
from guardtune.ui import console, table


def add_parser(commands) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    p = commands.add_parser("eval", help="metrics with intervals, slices, plots and a report for a guard",
                            description=__doc__, formatter_class=formatter)
    p.add_argument("guard", metavar="RUN", help="a run directory, or hf:<model id or path>")
    add_trust_argument(p)
    p.add_argument("--data", action="append", required=True, metavar="NAME[:split]",
                   help="a dataset, file or YAML data config; repeat for several")
    p.add_argument("--out", help="output directory (default: the run directory)")
    p.add_argument("--compare", metavar="RUN", help="a second guard: paired bootstrap against this one")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (0: none)")
    p.add_argument("--bootstrap-by", choices=("row", "group"), default="row",
                   help="what the intervals resample: rows, or whole groups (a template's fills, a prompt's "
                        "translations or responses: rows that are not independent draws); default row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error",
                   help="error: stop at the first bad row (default); skip: write it to the rejects file and go on")
    p.add_argument("--rejects", help="with --on-bad-row skip: the rejects JSONL (default: <out>/eval-rejects.jsonl)")
    p.add_argument("--style-guard", metavar="RUN",
                   help="rewriters: the toxicity guard that decides style accuracy (STA) and so the joint score J")
    p.add_argument("--similarity-model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="rewriters: the sentence encoder for content similarity (SIM)")
    _label_map_argument(p)
    p.set_defaults(run=run_eval, parser=p)

    c = commands.add_parser("calibrate", help="choose decision thresholds (and temperatures) on validation data",
                            description=__doc__, formatter_class=formatter)
    c.add_argument("guard", metavar="RUN", help="the run directory to calibrate (thresholds.json is written there)")
    add_trust_argument(c)
    c.add_argument("--data", action="append", required=True, metavar="NAME[:split]",
                   help="labelled validation data (not the test split); repeat for several")
    c.add_argument("--strategy", choices=("max_f1", "fpr", "recall"), default="max_f1",
                   help="max_f1: best positive-class F1; fpr: most recall with FPR <= --target; "
                        "recall: highest threshold catching --target of the positives")
    c.add_argument("--target", type=float, help="the FPR or recall target of --strategy fpr|recall")
    c.add_argument("--temperature", action="store_true", help="also fit a temperature per output (log-loss)")
    c.add_argument("--per", choices=("language",),
                   help="language: also a threshold per language, for languages with at least --min-count harmful "
                        "and benign rows (the global threshold for the rest); moderate and serve apply the "
                        "request's language (given, or detected)")
    c.add_argument("--min-count", type=int, default=30,
                   help="with --per language: the fewest harmful and benign rows a language needs (default 30)")
    c.set_defaults(run=run_calibrate, parser=c)

    b = commands.add_parser("baseline", help="a baseline guard: TF-IDF + logistic regression, or a few-shot "
                            "prompted instruct model", description=__doc__, formatter_class=formatter)
    b.add_argument("kind", choices=("tfidf", "fewshot", "delete", "copy"),
                   help="tfidf: trained on --data; fewshot: an untuned causal LM prompted with the policy and "
                        "--shots demonstrations from --data (no training); delete (detox): drop the words that "
                        "the rewrites in --data delete; copy (detox): the input unchanged")
    b.add_argument("--data", action="append", default=[], metavar="NAME[:split]",
                   help="labelled data (tfidf: training data; fewshot: the demonstration pool, whose labels also "
                        "decide the guard's outputs); repeat for several")
    b.add_argument("--out", required=True, help="the directory to write the baseline guard to")
    b.add_argument("--model", help="fewshot: a causal LM (hub id or directory), ideally instruction-tuned")
    b.add_argument("--shots", type=int, default=4, help="fewshot: demonstrations per example (0: zero-shot)")
    b.add_argument("--select", choices=("similarity", "random"), default="similarity",
                   help="fewshot: nearest pool examples (character n-gram TF-IDF) or a seeded random draw; both "
                        "balanced harmful/safe")
    b.add_argument("--tasks", default=None, metavar="TASK,...",
                   help="fewshot without --data: the outputs (default prompt_harmful,response_harmful,"
                        "response_refusal)")
    b.add_argument("--policy", help="fewshot: a YAML/JSON file of category code: description (default S1-S14)")
    b.add_argument("--max-length", type=int, default=2048, help="fewshot: prompt + answer tokens")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(run=run_baseline, parser=b)


def _label_map_argument(p) -> None:
    p.add_argument("--label-map", action="append", default=[], metavar="LABEL=OUTPUT",
                   help="for hf: guards, which checkpoint label is which output (e.g. toxic=prompt_harmful)")


def load_sets(names: list[str], on_bad_row: str = "error", rejects: Path | None = None) -> list:
    from guardtune.data import load_any

    return [load_any(name, on_bad_row, rejects) for name in names]


def run_eval(args: argparse.Namespace) -> int:
    import guardtune
    from guardtune import evaluate, report

    label_map = dict(item.split("=", 1) for item in args.label_map) or None
    from guardtune.guard import Rewriter

    guard = guardtune.load(args.guard, label_map=label_map, trust_remote_code=args.trust_remote_code)
    other = guardtune.load(args.compare, trust_remote_code=args.trust_remote_code) if args.compare else None
    out = Path(args.out) if args.out else (Path(args.guard) if Path(args.guard).is_dir() else
                                           Path("eval") / report.slug(args.guard))
    if isinstance(guard, Rewriter):
        return run_detox_eval(args, guard, other, out)
    results = {"guard": str(args.guard), "thresholds": "calibrated" if guard.thresholds.values else "0.5",
               "bootstrap": args.bootstrap, "bootstrap_by": args.bootstrap_by, "seed": args.seed, "datasets": {}}
    arrays = {}
    comparison = {}
    rejects = None
    if args.on_bad_row == "skip":
        rejects = Path(args.rejects) if args.rejects else out / "eval-rejects.jsonl"
        rejects.unlink(missing_ok=True)  # this evaluation's rejects only
    for loaded in load_sets(args.data, args.on_bad_row, rejects):
        results["datasets"][loaded.label], arrays[loaded.label] = evaluate.evaluate_set(
            guard, loaded.examples, args.bootstrap, args.seed, bootstrap_by=args.bootstrap_by)
        report_ = loaded.report
        results["datasets"][loaded.label]["intake"] = {
            "read": report_.read, "accepted": report_.accepted, "rejected": report_.rejected,
            "excluded": sum(report_.excluded.values()), "rejects": str(rejects) if report_.rejected else None}
        if report_.rejected or report_.excluded:
            console().print(f"[yellow]{loaded.label}[/yellow]: {report_.summary()}")
        if other is not None:
            _, other_arrays = evaluate.evaluate_set(other, loaded.examples, 0, args.seed)
            comparison[loaded.label] = evaluate.compare(arrays[loaded.label], other_arrays, args.bootstrap, args.seed)
    if other is not None:
        results["comparison"], results["comparison_guard"] = comparison, str(args.compare)
    report.write(results, arrays, out, make_plots=not args.no_plots)
    print_summary(results)
    console().print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}" + ("" if args.no_plots else " and plots/"))
    return 0


def run_detox_eval(args: argparse.Namespace, rewriter, other, out: Path) -> int:
    """A rewriter on detox data: the model, the copy baseline, the human references (and --compare) in one
    run, with the same STA and SIM models, so the rows compare."""
    import guardtune
    from guardtune import detox

    style = guardtune.load(args.style_guard, trust_remote_code=args.trust_remote_code) if args.style_guard else None
    systems = {rewriter.name or "model": rewriter, **({other.name or "compare": other} if other else {})}
    results = detox.compare_rewriters(systems, load_sets(args.data, args.on_bad_row, None), style,
                                      detox.SentenceEncoder(args.similarity_model), args.bootstrap, args.seed)
    results.update(rewriter=str(args.guard), style_guard=args.style_guard)
    detox.write_results(results, out)
    print_detox(results)
    console().print(f"wrote {out / 'detox_metrics.json'} and {out / 'detox_report.md'}")
    return 0


def print_detox(results: dict) -> None:
    for label, data in results["datasets"].items():
        protocol = next(iter(data["systems"].values()))["protocol"]
        console().print(table(f"{label}: {data['n']} items ({protocol} protocol)",
                              ["system", "J", "STA", "SIM", "FL", "BLEU", "chrF", "self-BLEU"],
                              [(name, _f(r.get("j")), _f(r.get("sta")), _f(r.get("sim")), _f(r.get("fl")),
                                _f(r.get("bleu")), _f(r.get("chrf")), _f(r.get("self_bleu")))
                               for name, r in data["systems"].items()]))
    if not results.get("style_guard"):
        console().print("no --style-guard: STA and J need a toxicity guard (see docs/detox.md)")


def print_summary(results: dict) -> None:
    from guardtune.report import fmt, main_metrics

    rows = []
    for label, data in results["datasets"].items():
        for task, entry in data["tasks"].items():
            m, ci = main_metrics(entry), entry.get("ci95", {})
            rows.append((label, task, m["n"], m["positives"], f"{m['threshold']:.2f}", fmt(m["f1"], ci.get("f1")),
                         fmt(m["auprc"], ci.get("auprc")), fmt(m["roc_auc"]), fmt(m["recall"]), fmt(m["fpr"])))
    console().print(table(f"{results['guard']} (F1 = positive-class F1; 95% bootstrap intervals)",
                          ["data", "task", "n", "pos", "thr", "F1", "AUPRC", "ROC-AUC", "recall", "FPR"], rows))


def run_calibrate(args: argparse.Namespace) -> int:
    import guardtune
    from guardtune import calibrate, plots

    run_dir = Path(args.guard)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory; thresholds are saved into one")
    if any(":test" in name or name.endswith("test") for name in args.data):
        print("WARNING: calibrating on a test split. Thresholds tuned on test data make every later number on it "
              "optimistic; calibrate on a validation split and keep the test split for eval.", file=sys.stderr)
    guard = guardtune.load(run_dir, trust_remote_code=args.trust_remote_code)
    examples = [ex for loaded in load_sets(args.data) for ex in loaded.examples]
    raw = guard.score(examples, calibrated=False, show_progress=True)
    per_language = args.min_count if args.per == "language" else None
    thresholds, found = calibrate.fit_thresholds(guard, examples, args.strategy, args.target, args.temperature,
                                                 args.data, raw=raw, per_language=per_language)
    thresholds.save(run_dir)
    out = run_dir / "calibration"
    lines = ["# Calibration", "", f"Strategy {args.strategy}" + (f", target {args.target}" if args.target else "")
             + f", on {', '.join(args.data)}.", "", "| output | n | positives | threshold | temperature | ECE before "
             "| ECE after | F1 | recall | FPR |", "|---|---|---|---|---|---|---|---|---|---|"]
    y_all, known = guard.labels.targets(examples)
    for output, e in found["evidence"].items():
        at = e["at_threshold"]
        lines.append(f"| {output} | {e['n']} | {e['positives']} | {e['threshold']:.3f} | {e['temperature']:.2f} "
                     f"| {e['ece_before']:.3f} | {e['ece_after']:.3f} | {_f(at['f1'])} | {_f(at['recall'])} "
                     f"| {_f(at['fpr'])} |")
    for task in guard.labels.tasks:
        j = guard.labels.index(task)
        rows = known[:, j]
        if task in found["evidence"]:
            y, p = y_all[rows, j], raw.probs[rows, j]
            curves = {"raw": calibrate.reliability(y, p)}
            if args.temperature:
                curves["scaled"] = calibrate.reliability(y, calibrate.scale(p, found["temperature"][task]))
            plots.reliability(curves, task, out / f"reliability-{task}.png")
            lines += ["", f"![reliability {task}](reliability-{task}.png)"]
    if args.per == "language":
        lines += ["", f"## Per language (own threshold with at least {args.min_count} harmful and benign rows)", "",
                  "| language | task | n | harmful | threshold |", "|---|---|---|---|---|"]
        for language, tasks in found["per_language"]["evidence"].items():
            for task, e in tasks.items():
                shown = f"{e['threshold']:.3f}" if e["own"] else f"global ({found['thresholds'].get(task, 0.5):.3f})"
                lines.append(f"| {language} | {task} | {e['n']} | {e['positives']} | {shown} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    console().print(table(f"thresholds saved to {run_dir / 'thresholds.json'}", ["output", "threshold", "temperature",
                                                                                 "ECE before", "ECE after"],
                          [(o, f"{e['threshold']:.3f}", f"{e['temperature']:.2f}", f"{e['ece_before']:.3f}",
                            f"{e['ece_after']:.3f}") for o, e in found["evidence"].items()]))
    if args.per == "language":
        own = thresholds.per_language
        fell_back = sorted(set(found["per_language"]["evidence"]) - set(own))
        console().print(f"per-language thresholds for {', '.join(sorted(own)) or 'no language'}"
                        + (f"; the global one for {', '.join(fell_back)} (fewer than {args.min_count} harmful or "
                           "benign rows)" if fell_back else "") + f"; see {out / 'report.md'}")
    return 0


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_baseline(args: argparse.Namespace) -> int:
    from guardtune.baselines import TfidfGuard

    if args.kind == "fewshot":
        return run_fewshot(args)
    if args.kind in ("delete", "copy"):
        return run_detox_baseline(args)
    if not args.data:
        args.parser.error("tfidf needs --data (the training data)")
    examples = [ex for loaded in load_sets(args.data) for ex in loaded.examples]
    guard = TfidfGuard(name=args.out).fit(examples)
    out = guard.save(args.out)
    console().print(f"trained a TF-IDF + logistic regression guard on {len(examples)} examples "
                    f"({', '.join(guard.labels.outputs[:6])}{'...' if len(guard.labels.outputs) > 6 else ''}) -> {out}")
    return 0


def run_detox_baseline(args: argparse.Namespace) -> int:
    from guardtune.baselines import CopyRewriter, DeleteRewriter

    if args.kind == "copy":
        out = CopyRewriter().save(args.out)
        console().print(f"copy baseline -> {out}")
        return 0
    if not args.data:
        args.parser.error("delete needs --data: pairs of toxic texts and their rewrites (e.g. paradetox:train)")
    examples = [ex for loaded in load_sets(args.data) for ex in loaded.examples]
    rewriter = DeleteRewriter().fit(examples)
    out = rewriter.save(args.out)
    console().print(f"delete baseline: {len(rewriter.lexicon_)} words learned from {len(examples)} pairs -> {out}")
    return 0


def run_fewshot(args: argparse.Namespace) -> int:
    from guardtune.chat_format import read_policy
    from guardtune.data.example import BINARY_TASKS
    from guardtune.fewshot import fewshot_guard, save_fewshot
    from guardtune.labels import LabelSpace

    if not args.model:
        args.parser.error("fewshot needs --model (a causal LM, e.g. Qwen/Qwen2.5-0.5B-Instruct)")
    pool = [ex for loaded in load_sets(args.data) for ex in loaded.examples]
    if args.shots and not pool:
        args.parser.error(f"--shots {args.shots} needs --data: a labelled pool to draw demonstrations from")
    labels = LabelSpace.from_examples(pool) if pool else LabelSpace(
        tuple(args.tasks.split(",")) if args.tasks else BINARY_TASKS)
    info = {"model": args.model, "shots": args.shots, "select": args.select, "seed": args.seed, "pool": args.data,
            "policy": read_policy(args.policy) if args.policy else None, "max_length": args.max_length}
    fewshot_guard(args.model, labels, pool, args.shots, args.select, args.seed, args.policy, args.max_length)  # loads
    out = save_fewshot(args.out, labels, info)
    console().print(f"few-shot guard: {args.model}, {args.shots} {args.select} shots from {len(pool)} pool examples "
                    f"({', '.join(labels.outputs[:6])}{'...' if len(labels.outputs) > 6 else ''}) -> {out}\n"
                    f"next: guardtune eval {out} --data NAME:test")
    return 0
