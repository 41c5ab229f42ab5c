"""report.md for a study: the setup, the search, cost, quality per test set, and the paired comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guardtune.report import fmt
from guardtune.study.spec import Study


# (output, metric) in the order the tables show them
QUALITY = (("prompt_harmful", "f1"), ("prompt_harmful", "auprc"), ("response_harmful", "f1"),
           ("response_harmful", "auprc"), ("response_refusal", "f1"), ("response_refusal", "auprc"),
           ("prompt_categories", "jaccard"), ("response_categories", "jaccard"))
SHORT = {"rewrite": "rewrite", "prompt_harmful": "prompt", "response_harmful": "response", "response_refusal": "refusal",
         "prompt_categories": "prompt cat.", "response_categories": "response cat."}
HEADLINE = (("prompt_harmful", "f1"), ("prompt_harmful", "auprc"))
REWRITE = (("rewrite", "j"), ("rewrite", "sta"), ("rewrite", "sim"), ("rewrite", "fl"))  # rewriter arms
QUALITY = QUALITY + REWRITE
HEADLINES = HEADLINE + REWRITE[:1]  # a guard study's headline, and a rewriter study's (J)
PER_ROW = ("jaccard", "j", "sta", "sim", "fl")  # metrics that are means of per-row values
MEAN = "mean of test sets"


NAMES = {"auprc": "AUPRC", "f1": "F1", "jaccard": "Jaccard", "j": "J", "sta": "STA", "sim": "SIM", "fl": "FL"}


def label(output: str, metric: str) -> str:
    return f"{SHORT.get(output, output)} {NAMES.get(metric, metric)}"


def headline(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline metrics a study's results have: prompt F1 and AUPRC for guards, J for rewriters."""
    present = {(r["output"], r["metric"]) for r in results["rows"]}
    return [m for m in HEADLINES if m in present] or list(HEADLINE)



def render(study: Study, results: dict[str, Any], plots: list[Path]) -> str:
    lines = [f"# Study: {study.name}", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += setup(study, results)
    for cell, _ in study.cells:
        if cell:
            lines += [f"## Cell: {cell}", ""]
        lines += search_table(study, results, cell) + cost_table(results, cell) + quality_tables(results, cell)
    lines += comparison_table(results)
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    if results["failures"]:
        lines += ["## Failed runs", ""] + [f"- `{f['key']}`: {f['error']}" for f in results["failures"]] + [""]
    return "\n".join(lines).rstrip() + "\n"


def setup(study: Study, results: dict[str, Any]) -> list[str]:
    train = study.train
    t, data = train.get("training", {}), train.get("data", {})
    done = sum(r["status"] == "ok" for r in results["runs"])
    search = ", ".join(f"{k} in {v}" for k, v in study.search.items()) or "none"
    lines = [
        f"Reproduce: `guardtune study {study.source or 'STUDY.yaml'}` (resumable; `--report-only` rewrites this file).",
        "",
        f"- Backbone: `{train.get('model', {}).get('name')}`, max length {train.get('model', {}).get('max_length')}.",
        f"- Training data: {_data(data.get('train'))}; validation: {_data(data.get('validation'))}.",
        f"- Schedule (every arm): {t.get('max_steps') or str(t.get('epochs')) + ' epochs'} steps"
        f" x batch {t.get('batch_size')}" + (f", accumulation {t['grad_accum']}" if t.get("grad_accum", 1) > 1 else "")
        + f", scheduler {t.get('scheduler', 'linear')}, warmup {t.get('warmup_ratio', 'default')}.",
        f"- Arms: {', '.join(study.arm_names)}; reference: **{study.reference}**."
        + "".join(f" Cascade {n}: {' -> '.join(Path(x).name for x in c['stages'])}, rule {c.get('rule', 'quality')}"
                  + (f" (target {c['target']})" if c.get("target") is not None else "") + "."
                  for n, c in study.cascades.items()),
        f"- Search (per arm, on validation `{study.select}`, seed {study.seeds[0]}): {search}.",
        f"- Seeds: {study.seeds}. Thresholds: {'max-F1 on each run' + chr(39) + 's validation data' if study.threshold == 'validation' else study.threshold}.",
        "- Test sets (every run scores the same rows): "
        + ", ".join(f"{name} ({n})" for name, n in results["tests"].items()) + ".",
        f"- Runs finished: {done} of {results['planned_runs']}"
        + (f"; failed: {len(results['failures'])}" if results["failures"] else "") + ".",
        f"- Intervals: 95%, two-level bootstrap ({study.bootstrap} draws) over test rows and seeds; "
        "differences are paired on rows; p-values two-sided, Holm-adjusted over every comparison in this report.",
        "",
    ]
    return lines


def _data(spec: Any) -> str:
    if spec is None:
        return "none"
    if isinstance(spec, str):
        return f"`{spec}`"
    if isinstance(spec, dict) and "mixture" in spec:
        parts = ", ".join(str(p.get("name") or p.get("path")) + (f" ({p['sample']})" if p.get("sample") else "")
                          for p in spec["mixture"])
        return f"{spec.get('size', 'all')} rows from {parts}" if spec.get("size") else parts
    if isinstance(spec, dict):
        return f"`{spec.get('name') or spec.get('path')}`" + (f" ({spec['sample']} rows)" if spec.get("sample") else "")
    return str(spec)


def _key(cell: str, arm: str) -> str:
    return f"{cell}/{arm}" if cell else arm


def search_table(study: Study, results: dict[str, Any], cell: str) -> list[str]:
    if len(study.candidates) < 2:
        return []
    names = [c for c, _ in study.candidates]
    lines = [f"## Search (validation `{study.select}`, seed {study.seeds[0]})", "",
             "| arm | " + " | ".join(names) + " | chosen |", "|---|" + "---|" * (len(names) + 1)]
    for arm in study.arms:
        entry = results["search"].get(_key(cell, arm), {})
        figures = entry.get("validation", {})
        lines.append(f"| {arm} | " + " | ".join(fmt(figures.get(c)) if figures.get(c) is not None else "failed"
                                                 for c in names) + f" | {entry.get('chosen') or '-'} |")
    return lines + [""]


def cost_table(results: dict[str, Any], cell: str) -> list[str]:
    lines = ["## Cost (mean over seeds)", "",
             "| arm | trainable params | % of model | train time (s) | train ex/s | peak memory (MB) | inference ms/ex | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for key, c in results["costs"].items():
        if (key.rsplit("/", 1)[0] if "/" in key else "") != cell or not c:
            continue
        params = f"{c['trainable_params']:,}" if c["trainable_params"] is not None else "-"
        share = f"{c['trainable_pct']:.2f}" if c["trainable_pct"] is not None else "-"
        rate = f"{c['train_examples_per_s']:.1f}" if c.get("train_examples_per_s") is not None else "-"
        lines.append(f"| {key.rsplit('/', 1)[-1]} | {params} | {share} | "
                     f"{c['train_seconds']:.0f} | {rate} | {c['peak_memory_mb']:.0f} | "
                     f"{c['inference_ms_per_example']:.2f} | {c['seeds_ok']} |")
    return lines + [""] + cascade_table(results, cell)


def cascade_table(results: dict[str, Any], cell: str) -> list[str]:
    """Per cascade arm and test set: the share of rows each stage decided (mean over seeds)."""
    entries = [(key, c["decided"]) for key, c in results["costs"].items()
               if c.get("decided") and (key.rsplit("/", 1)[0] if "/" in key else "") == cell]
    if not entries:
        return []
    lines = ["## Cascades: who decided (share of test rows, mean over seeds)", "",
             "| arm | test set | " + " | ".join(f"stage {i}" for i in range(max(len(v) for _, d in entries
                                                                               for v in d.values()))) + " |",
             "|---|---|" + "---|" * max(len(v) for _, d in entries for v in d.values())]
    for key, decided in entries:
        for dataset, shares in decided.items():
            lines.append(f"| {key.rsplit('/', 1)[-1]} | {dataset} | " + " | ".join(f"{x:.1%}" for x in shares) + " |")
    return lines + ["", "Stage 0 is the first (cheapest) stage; everything after it was escalated.", ""]


def quality_tables(results: dict[str, Any], cell: str) -> list[str]:
    rows = [r for r in results["rows"] if r["cell"] == cell]
    lines = []
    headline_rows = [r for r in rows if r["dataset"] == MEAN]
    metrics = headline(results)
    if headline_rows:
        lines += ["## Headline: mean over the test sets", ""]
        for metric in metrics:
            sets = next((r["datasets"] for r in headline_rows if (r["output"], r["metric"]) == metric), None)
            if sets:
                lines.append(f"- {label(*metric)}: mean over {len(sets)} ({', '.join(sets)}).")
        lines += ["", *_table(headline_rows, metrics, with_difference=True)]
    for dataset in dict.fromkeys(r["dataset"] for r in rows if r["dataset"] != MEAN):
        mine = [r for r in rows if r["dataset"] == dataset]
        metrics = [q for q in QUALITY if any((r["output"], r["metric"]) == q for r in mine)]
        n = max(r["n"] for r in mine)
        lines += [f"### {dataset} ({n} rows)", "", *_balance(mine), *_table(mine, metrics, with_difference=False)]
    return lines


def _balance(rows: list[dict[str, Any]]) -> list[str]:
    """How many rows are positive per labelled task, and what a single class does to the metrics."""
    counts = {r["output"]: (r["positives"], r["n"]) for r in rows if r.get("positives") is not None}
    if not counts:
        return []
    parts = [f"{SHORT.get(out, out)} {pos} of {n}" for out, (pos, n) in counts.items()]
    notes = [f"every {SHORT.get(out, out)} label is {'positive' if pos else 'negative'}: its AUPRC is undefined"
             + (" and its F1 is the F1 of catching them (no false positives are possible)" if pos else "")
             for out, (pos, n) in counts.items() if pos in (0, n)]
    return [f"Positives: {', '.join(parts)}." + (f" Here {'; '.join(notes)}." if notes else ""), ""]


def _table(rows: list[dict[str, Any]], metrics: list[tuple[str, str]], with_difference: bool) -> list[str]:
    columns = [label(*m) for m in metrics]
    if with_difference:
        columns += [f"Δ {label(*m)} vs ref" for m in metrics]
    lines = ["| arm | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        cells = []
        for m in metrics:
            r = next((x for x in rows if x["arm"] == arm and (x["output"], x["metric"]) == m), None)
            cells.append(fmt(r["mean"], r["ci"]) if r and r["mean"] is not None else "")
        if with_difference:
            for m in metrics:
                r = next((x for x in rows if x["arm"] == arm and (x["output"], x["metric"]) == m), None)
                cells.append(_difference(r) if r and "difference" in r else "ref")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines + [""]


def _difference(row: dict[str, Any]) -> str:
    text = fmt(row["difference"], row.get("difference_ci"))
    p = row.get("p_holm")
    if p is None:
        return text
    return f"{text}, p={p:.3f}" + (" *" if p < 0.05 else "")


def comparison_table(results: dict[str, Any]) -> list[str]:
    rows = [r for r in results["rows"] if "difference" in r and r["difference"] is not None]
    if not rows:
        return []
    significant = sum(1 for r in rows if r.get("p_holm") is not None and r["p_holm"] < 0.05)
    lines = [f"## Against the reference ({results['reference']}), every test set", "",
             f"{significant} of {len(rows)} differences are significant at 0.05 after Holm adjustment (marked *).", "",
             "| cell | test set | metric | arm | difference [95% CI] | p | p (Holm) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " *" if r.get("p_holm") is not None and r["p_holm"] < 0.05 else ""
        lines.append(f"| {r['cell'] or '-'} | {r['dataset']} | {label(r['output'], r['metric'])} | {r['arm']} | "
                     f"{fmt(r['difference'], r.get('difference_ci'))} | {fmt(r.get('p_value'))} | {fmt(r.get('p_holm'))}{mark} |")
    return lines + [""]
