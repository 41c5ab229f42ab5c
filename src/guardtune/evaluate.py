"""`guardtune eval`: every metric that matters for a guard, on one or more datasets, with intervals and slices,
written as metrics.json, report.md and plots/*.png.

Numbers are given at 0.5 and, when the run has calibrated thresholds, at those. Confidence intervals are
seeded percentile bootstraps (95%). Slices: per language, per source dataset, and per true category (the
recall of harmful items of each category).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from guardtune import metrics
from guardtune.calibrate import reliability
from guardtune.data.example import Example
from guardtune.guard import Guard
from guardtune.labels import CATEGORY_FIELDS

SLICES = ("language", "source")
CATEGORY_OF_TASK = {"prompt_harmful": "prompt_categories", "response_harmful": "response_categories"}


@dataclass
class TaskArrays:
    """What plots and comparisons need, kept beside the JSON results."""
    y: np.ndarray
    prob: np.ndarray
    threshold: float
    languages: list[str] = field(default_factory=list)
    clusters: np.ndarray | None = None  # each row's group, when intervals resample groups (bootstrap_by="group")


BOOTSTRAP_BY = ("row", "group")


def evaluate_set(guard: Guard, examples: Sequence[Example], n_boot: int = 1000, seed: int = 0,
                 show_progress: bool = True,
                 bootstrap_by: str = "row") -> tuple[dict[str, Any], dict[str, TaskArrays]]:
    """Every metric of `guard` on `examples`, with intervals that resample rows or, with bootstrap_by="group",
    whole groups (`Example.group`: one template's fills, one prompt's translations), which is the honest interval
    when rows of a group are not independent draws."""
    if bootstrap_by not in BOOTSTRAP_BY:
        raise ValueError(f"bootstrap_by is one of {', '.join(BOOTSTRAP_BY)}, not {bootstrap_by!r}")
    scores = guard.score(examples, show_progress=show_progress)
    calibrated = guard.thresholds.values
    result: dict[str, Any] = {"n": len(examples), "tasks": {}, "categories": {}, "bootstrap_by": bootstrap_by}
    arrays: dict[str, TaskArrays] = {}
    for task in guard.labels.tasks:
        rows, y, p = metrics.labelled(examples, scores, task)
        if not rows:
            continue
        threshold = guard.thresholds[task]
        labelled_rows = [examples[i] for i in rows]
        clusters = metrics.clusters_of([ex.group for ex in labelled_rows]) if bootstrap_by == "group" else None
        entry: dict[str, Any] = {"at_0.5": metrics.binary(y, p, 0.5)}
        if task in calibrated:
            entry["at_calibrated"] = metrics.binary(y, p, threshold)
        entry["threshold"] = threshold
        entry["calibration"] = reliability(y, p)  # expected calibration error and the diagram's bins
        if clusters is not None:
            entry["groups"] = int(clusters.max()) + 1
        entry["ci95"] = metrics.bootstrap_binary(y, p, threshold, n_boot, seed, clusters=clusters) if n_boot else {}
        entry["slices"] = slices(labelled_rows, y, p, threshold, task, guard.thresholds, min(n_boot, SLICE_DRAWS),
                                 seed, clusters)
        result["tasks"][task] = entry
        arrays[task] = TaskArrays(y, p, threshold, [ex.language for ex in labelled_rows], clusters)
    for field_name in CATEGORY_FIELDS:
        rows, true, probs, codes = metrics.labelled_sets(examples, scores, field_name)
        if rows:
            result["categories"][field_name] = metrics.categories(
                true, probs, codes, [guard.thresholds[f"{field_name}/{c}"] for c in codes])
    spans = evaluate_spans(guard, examples, n_boot, seed)
    if spans:
        result["spans"] = spans
    if getattr(guard, "stages", None) is not None and len(getattr(guard, "decided", ())) == len(examples):
        result["cascade"] = cascade_breakdown(guard, examples, scores)
    return result, arrays


def cascade_breakdown(guard: Any, examples: Sequence[Example], scores: Any) -> dict[str, Any]:
    """Who decided what: per stage, the examples it decided and the quality of its answers on them."""
    task = guard.labels.tasks[0]
    out = []
    for i, stage in enumerate(guard.stages):
        mine = [j for j in np.flatnonzero(guard.decided == i) if getattr(examples[j], task) is not None]
        y = np.array([getattr(examples[j], task) for j in mine], dtype=np.int64)
        entry: dict[str, Any] = {"stage": stage.name, "decided": int((guard.decided == i).sum())}
        if len(mine):
            m = metrics.binary(y, scores[task][mine], guard.thresholds[task])
            entry.update(task=task, n=len(mine), positives=int(y.sum()), f1=m["f1"], auprc=m["auprc"],
                         accuracy=float(((scores[task][mine] >= guard.thresholds[task]) == y).mean()))
        out.append(entry)
    return {"stages": out, "escalated": float((guard.decided > 0).mean()) if len(examples) else 0.0}


EXAMPLES_SHOWN = 8


def evaluate_spans(guard: Guard, examples: Sequence[Example], n_boot: int = 1000, seed: int = 0) -> dict | None:
    """Span F1 (SemEval-2021 Task 5) on the examples with span rationales, for a guard that explains (a span
    head), with highlighted examples for the report: the first few posts with gold spans."""
    from guardtune.spans import span_summary

    rows = [ex for ex in examples if isinstance(ex.rationale, tuple)]
    if not rows or not getattr(guard, "explains", False):
        return None
    predicted = guard.explain(rows)
    out = span_summary(predicted, [ex.rationale for ex in rows], max(n_boot, 1), seed)
    shown = [i for i, ex in enumerate(rows) if ex.rationale][:EXAMPLES_SHOWN]
    out["examples"] = [{"text": rows[i].prompt, "gold": [list(s) for s in rows[i].rationale],
                        "predicted": [list(s) for s in predicted[i]]} for i in shown]
    return out


SLICE_DRAWS = 500  # bootstrap draws per slice (each slice is smaller than the whole, and there are many)
MIN_SLICE_CLASS = 30  # a slice with fewer harmful or benign rows is marked too small, not shown as AUPRC 1.000


def slices(examples: Sequence[Example], y: np.ndarray, p: np.ndarray, threshold: float, task: str,
           thresholds: Any = None, n_boot: int = 0, seed: int = 0, clusters: np.ndarray | None = None) -> dict:
    """Metrics per language and per source (and per category), with bootstrap intervals. A language slice is
    judged at that language's own threshold when calibration gave it one (`calibrate --per language`). A
    slice with fewer than MIN_SLICE_CLASS harmful or benign rows says so (`too_small`): its rank metrics would
    rest on a handful of rows."""
    out: dict[str, dict[str, Any]] = {}
    for key in SLICES:
        values = np.array([getattr(ex, key) or "?" for ex in examples])
        if len(set(values)) > 1:
            out[key] = {}
            for v in sorted(set(values)):
                own = thresholds.get(task, v) if thresholds is not None and key == "language" else threshold
                yv, pv = y[values == v], p[values == v]
                m = metrics.binary(yv, pv, own)
                m["too_small"] = min(m["positives"], m["n"] - m["positives"]) < MIN_SLICE_CLASS
                if n_boot and not m["too_small"]:
                    inside = None if clusters is None else np.unique(clusters[values == v], return_inverse=True)[1]
                    m["ci95"] = metrics.bootstrap_binary(yv, pv, own, n_boot, seed, clusters=inside)
                out[key][v] = m
    field_name = CATEGORY_OF_TASK.get(task)
    if field_name:
        by_code: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            for code in getattr(ex, field_name) or ():
                by_code.setdefault(code, []).append(i)
        if by_code:
            out["category"] = {c: metrics.binary(y[rows], p[rows], threshold) for c, rows in sorted(by_code.items())}
    return out


def compare(a: dict[str, TaskArrays], b: dict[str, TaskArrays], n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired bootstrap of guard B against guard A on the same rows, per task: AUPRC and F1 at each one's own
    threshold. Whole groups are resampled when A's arrays carry clusters (evaluate_set(bootstrap_by="group"))."""
    out = {}
    for task in sorted(set(a) & set(b)):
        y = a[task].y
        if len(y) != len(b[task].y) or (y != b[task].y).any():
            continue
        ta, tb, clusters = a[task].threshold, b[task].threshold, a[task].clusters
        out[task] = {"auprc": metrics.paired_bootstrap(metrics.auprc_draws, y, a[task].prob, b[task].prob, n_boot,
                                                       seed, clusters),
                     "f1": metrics.paired_bootstrap(lambda y_, flagged, W: metrics.f1_draws(y_, flagged >= 0.5, W),
                                                    y, (a[task].prob >= ta).astype(float),
                                                    (b[task].prob >= tb).astype(float), n_boot, seed, clusters)}
    return out
