"""Writing evaluation results: metrics.json (everything), report.md (the tables a reader needs, with the
conventions spelled out) and plots/*.png referenced from it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from guardtune import plots
from guardtune.evaluate import MIN_SLICE_CLASS

NOTES = """\
Conventions: **F1 is positive-class F1** (the harmful / refusal class); macro-F1, the mean of both classes'
F1, is a different and kinder number and is labelled as such. Category **Jaccard is per sample, averaged over
samples**, and a sample with no true and no predicted category scores 1. Intervals are 95% percentile
bootstraps over {over} (seeded). A set with only harmful items (positives only) has no precision, FPR, F1 or
AUPRC: only recall (the share caught) is reported for it. AUPRC treats tied scores as one threshold.
"""
OVER = {"row": "rows", "group": ("groups: every row of a group (one template's fills, one prompt's translations "
                                 "or responses) is resampled with it, so rows that are not independent draws do "
                                 "not narrow the interval")}


def fmt(value: Any, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def main_metrics(entry: dict[str, Any]) -> dict[str, Any]:
    return entry.get("at_calibrated") or entry["at_0.5"]


def write(results: dict[str, Any], arrays: dict[str, dict], out: Path, make_plots: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=1, default=_json) + "\n", encoding="utf-8")
    lines = [f"# Evaluation of {results['guard']}", "", NOTES.format(over=OVER[results.get("bootstrap_by", "row")])]
    for label, data in results["datasets"].items():
        lines += dataset_section(label, data, arrays.get(label, {}), out, make_plots)
    if results.get("comparison"):
        lines += comparison_section(results)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def dataset_section(label: str, data: dict[str, Any], arrays: dict, out: Path, make_plots: bool) -> list[str]:
    lines = [f"## {label} ({data['n']} examples)", "",
             "| task | n | positives | threshold | F1 | precision | recall | FPR | AUPRC | ROC-AUC | macro-F1 | MCC "
             "| recall@1%FPR | recall@5%FPR |", "|" + "---|" * 14]
    notes = []
    for task, entry in data["tasks"].items():
        m, ci = main_metrics(entry), entry.get("ci95", {})
        lines.append(f"| {task} | {m['n']} | {m['positives']} | {m['threshold']:.2f} | {fmt(m['f1'], ci.get('f1'))} "
                     f"| {fmt(m['precision'], ci.get('precision'))} | {fmt(m['recall'], ci.get('recall'))} "
                     f"| {fmt(m['fpr'], ci.get('fpr'))} | {fmt(m['auprc'], ci.get('auprc'))} "
                     f"| {fmt(m['roc_auc'], ci.get('roc_auc'))} | {fmt(m['macro_f1'])} | {fmt(m['mcc'])} "
                     f"| {fmt(m['recall_at_1pct_fpr'])} | {fmt(m['recall_at_5pct_fpr'])} |")
        if m.get("note"):
            notes.append(f"- {task}: {m['note']}.")
        if "groups" in entry:
            notes.append(f"- {task}: intervals resample its {entry['groups']} groups of {m['n']} rows.")
        notes.append(f"- {task}: expected calibration error (ECE, 10 bins) {entry['calibration']['ece']:.3f}.")
        if "at_calibrated" in entry:
            base = entry["at_0.5"]
            notes.append(f"- {task} at 0.5 instead: F1 {fmt(base['f1'])}, recall {fmt(base['recall'])}, "
                         f"FPR {fmt(base['fpr'])}.")
    lines += ["", *notes, ""] if notes else [""]
    for task, entry in data["tasks"].items():
        for key, rows in entry["slices"].items():
            lines += [f"**{task} by {key}**", "", "| " + key + " | n | positives | threshold | F1 | recall | FPR | "
                      "AUPRC | ROC-AUC |", "|---|---|---|---|---|---|---|---|---|"]
            for v, m in rows.items():
                ci = m.get("ci95") or {}
                rank = ("too small" + f" ({m['positives']} harmful, {m['n'] - m['positives']} benign)", "-") \
                    if m.get("too_small") and m["auprc"] is not None else \
                    (fmt(m["auprc"], ci.get("auprc")), fmt(m["roc_auc"], ci.get("roc_auc")))
                lines.append(f"| {v} | {m['n']} | {m['positives']} | {m['threshold']:.3f} | {fmt(m['f1'], ci.get('f1'))} "
                             f"| {fmt(m['recall'], ci.get('recall'))} | {fmt(m['fpr'], ci.get('fpr'))} | {rank[0]} "
                             f"| {rank[1]} |")
            if any(m.get("too_small") for m in rows.values()):
                lines.append(f"\nToo small: fewer than {MIN_SLICE_CLASS} harmful or benign rows; rank metrics on so "
                             "few would mean little.")
            lines.append("")
    for field_name, m in data["categories"].items():
        lines += [f"**{field_name}**: per-sample Jaccard {fmt(m['jaccard'])}, exact match {fmt(m['exact_match'])}, "
                  f"micro-F1 {fmt(m['micro_f1'])}, macro-F1 {fmt(m['macro_f1'])} ({m['n']} labelled examples)", "",
                  "| category | support | precision | recall | F1 | AUPRC |", "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {v['support']} | {fmt(v['precision'])} | {fmt(v['recall'])} | {fmt(v['f1'])} "
                  f"| {fmt(v['auprc'])} |" for c, v in m["per_category"].items()]
        lines.append("")
    if data.get("spans"):
        lines += span_section(data["spans"])
    if data.get("cascade"):
        c = data["cascade"]
        lines += [f"**Cascade**: {c['escalated']:.1%} of examples escalated past the first stage.", "",
                  "| stage | decided | on those: n | positives | accuracy | F1 | AUPRC |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {s['stage']} | {s['decided']} | {s.get('n', 0)} | {s.get('positives', '-')} "
                  f"| {fmt(s.get('accuracy'))} | {fmt(s.get('f1'))} | {fmt(s.get('auprc'))} |" for s in c["stages"]]
        lines.append("")
    if make_plots:
        lines += plot_section(label, data, arrays, out)
    return lines


def span_section(spans: dict[str, Any]) -> list[str]:
    """Span F1 and highlighted examples: **bold** is predicted, [brackets] are gold."""
    lines = [f"**Span rationales** (SemEval-2021 Task 5 character F1, {spans['n']} posts, {spans['gold_empty']} "
             f"without a gold span): F1 {fmt(spans['span_f1'], spans['span_f1_ci'])}; the guard marked nothing in "
             f"{spans['predicted_empty']}.", "", "Examples: **bold** = marked by the guard, [brackets] = gold.", ""]
    for ex in spans["examples"]:
        lines.append(f"- {highlight(ex['text'], ex['predicted'], ex['gold'])}")
    return lines + [""]


def highlight(text: str, predicted: list, gold: list, limit: int = 300) -> str:
    """The text with predicted characters in **bold** and gold spans in [brackets] (markdown-escaped)."""
    marked = {c for a, b in predicted for c in range(a, b)}
    starts, ends = {a for a, _ in gold}, {b for _, b in gold}
    out, bold = [], False
    for i, ch in enumerate(text[:limit]):
        if i in ends:
            out.append("]")
        if (i in marked) != bold:
            out.append("**")
            bold = not bold
        if i in starts:
            out.append("[")
        out.append(ch.replace("*", "\\*").replace("[", "\\[").replace("]", "\\]").replace("\n", " "))
    if bold:
        out.append("**")
    if min(len(text), limit) in ends:
        out.append("]")
    return "".join(out) + ("..." if len(text) > limit else "")


def plot_section(label: str, data: dict[str, Any], arrays: dict, out: Path) -> list[str]:
    lines = []
    for task, entry in data["tasks"].items():
        a, m = arrays.get(task), main_metrics(entry)
        stem = f"plots/{slug(label)}-{task}"
        if a is not None and m["auprc"] is not None:
            plots.pr_roc(a.y, a.prob, f"{label}: {task}", out / f"{stem}-pr-roc.png")
            lines.append(f"![{task} PR and ROC]({stem}-pr-roc.png)")
        plots.confusion(m, f"{label}: {task}", out / f"{stem}-confusion.png")
        plots.reliability({"scores": entry["calibration"]}, f"{label}: {task}", out / f"{stem}-reliability.png")
        lines += [f"![{task} confusion]({stem}-confusion.png)", f"![{task} reliability]({stem}-reliability.png)"]
        by_language = entry["slices"].get("language")
        if by_language:
            metric = "f1" if m["f1"] is not None else "recall"
            plots.bars({k: v[metric] for k, v in by_language.items()}, metric, f"{task} {metric} by language",
                       out / f"{stem}-languages.png")
            lines.append(f"![{task} by language]({stem}-languages.png)")
    return lines + [""]


def comparison_section(results: dict[str, Any]) -> list[str]:
    lines = [f"## {results['comparison_guard']} compared with {results['guard']} (paired bootstrap)", "",
             "| dataset | task | metric | this guard | other | difference [95% CI] | p |", "|---|---|---|---|---|---|---|"]
    for label, tasks in results["comparison"].items():
        for task, by_metric in tasks.items():
            for metric, c in by_metric.items():
                lines.append(f"| {label} | {task} | {metric} | {fmt(c['a'])} | {fmt(c['b'])} "
                             f"| {fmt(c['difference'], c['ci'])} | {fmt(c['p_value'])} |")
    return lines + ["", "Difference = other - this guard; p is two-sided. A p above 0.05 means the data cannot "
                        "tell the two guards apart on that metric.", ""]


def _json(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
