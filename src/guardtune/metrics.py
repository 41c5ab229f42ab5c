"""Metrics as pure functions of labels and scores. The traps they avoid, on purpose:

- `f1` is positive-class F1 (the harmful / refusal class). Macro-F1 (the mean of the positive- and
  negative-class F1) is reported too, always under the name `macro_f1`, never as "F1".
- `jaccard` is per sample, then averaged over samples (not per column). Two empty sets agree: 1.0.
- Tied scores are one threshold: AUPRC (average precision) and ROC-AUC never depend on row order.
- Undefined is None, not 0: AUPRC without a positive, FPR without a negative.
- Rows whose label is missing are left out of that task (never counted as negatives).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

RANK_METRICS = ("auprc", "roc_auc", "recall_at_1pct_fpr", "recall_at_5pct_fpr")


def counts(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn)"""
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    return int((y & pred).sum()), int((~y & pred).sum()), int((~y & ~pred).sum()), int((y & ~pred).sum())


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def f1_from(tp: int, fp: int, fn: int) -> float:
    """F1 of the class whose true positives are `tp`: 2tp / (2tp + fp + fn), and 0 when tp is 0."""
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def recall_at_fpr(y: np.ndarray, prob: np.ndarray, max_fpr: float) -> float | None:
    """The best recall reachable at a threshold whose false-positive rate is at most `max_fpr`."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(int)
    if y.min(initial=1) == y.max(initial=0):
        return None
    fpr, tpr, _ = roc_curve(y, prob)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def binary(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Threshold metrics at `threshold`, rank metrics from the scores. With no negatives (a positives-only set)
    only recall (and FNR) are defined; the rest are None and `note` says why."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=float)
    tp, fp, tn, fn = counts(y, prob >= threshold)
    positives, negatives = tp + fn, fp + tn
    out: dict[str, Any] = {
        "n": int(len(y)), "positives": positives, "threshold": float(threshold),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "recall": _div(tp, positives), "fnr": _div(fn, positives), "fpr": _div(fp, negatives),
        "precision": _div(tp, tp + fp), "accuracy": _div(tp + tn, len(y)),
        "f1": f1_from(tp, fp, fn) if positives and negatives else None,
        "macro_f1": (f1_from(tp, fp, fn) + f1_from(tn, fn, fp)) / 2 if positives and negatives else None,
        "mcc": _mcc(tp, fp, tn, fn) if positives and negatives else None,
    }
    both = positives > 0 and negatives > 0
    out["auprc"] = float(average_precision_score(y, prob)) if both else None
    out["roc_auc"] = float(roc_auc_score(y, prob)) if both else None
    out["recall_at_1pct_fpr"] = recall_at_fpr(y, prob, 0.01) if both else None
    out["recall_at_5pct_fpr"] = recall_at_fpr(y, prob, 0.05) if both else None
    if not negatives:
        out["precision"] = out["accuracy"] = None
        out["note"] = ("positives only: precision, FPR, F1, AUPRC and ROC-AUC need negatives; "
                       "recall is the share of harmful items caught")
    elif not positives:
        out["note"] = "negatives only: recall, F1, AUPRC and ROC-AUC need positives; FPR is the share flagged"
    return out


def _mcc(tp: int, fp: int, tn: int, fn: int) -> float:
    denominator = float(np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    return (tp * tn - fp * fn) / denominator if denominator else 0.0


def jaccard(true: set[str], pred: set[str]) -> float:
    """Per-sample Jaccard; two empty sets agree completely (1.0)."""
    if not true and not pred:
        return 1.0
    return len(true & pred) / len(true | pred)


def categories(true: Sequence[set[str]], prob: np.ndarray, codes: Sequence[str],
               thresholds: Sequence[float] | float = 0.5) -> dict[str, Any]:
    """Multi-label metrics. Jaccard compares whole sets (a true category the guard cannot predict is a miss);
    micro/macro F1 and per-category figures are over the guard's own categories."""
    from sklearn.metrics import average_precision_score

    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), (len(codes),))
    pred = prob >= thresholds
    truth = np.array([[c in t for c in codes] for t in true], dtype=bool).reshape(len(true), len(codes))
    per: dict[str, Any] = {}
    for j, code in enumerate(codes):
        tp, fp, tn, fn = counts(truth[:, j], pred[:, j])
        both = 0 < truth[:, j].sum() < len(truth)
        per[code] = {"support": int(truth[:, j].sum()), "precision": _div(tp, tp + fp), "recall": _div(tp, tp + fn),
                     "f1": f1_from(tp, fp, fn) if tp + fn else None,
                     "auprc": float(average_precision_score(truth[:, j], prob[:, j])) if both else None}
    tp, fp, _, fn = counts(truth.ravel(), pred.ravel())
    present = [m["f1"] for m in per.values() if m["f1"] is not None]
    sets = [{c for j, c in enumerate(codes) if pred[i, j]} for i in range(len(true))]
    return {"n": len(true), "jaccard": float(np.mean([jaccard(set(t), p) for t, p in zip(true, sets)])) if true else None,
            "exact_match": float(np.mean([set(t) == p for t, p in zip(true, sets)])) if true else None,
            "micro_f1": f1_from(tp, fp, fn), "macro_f1": float(np.mean(present)) if present else None,
            "per_category": per}


def bootstrap(metric: Callable[..., float | None], arrays: Sequence[np.ndarray], n: int = 1000, seed: int = 0,
              level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `metric(*arrays)` over rows resampled with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    size = len(arrays[0])
    values = []
    for _ in range(n):
        index = rng.integers(0, size, size)
        value = metric(*(a[index] for a in arrays))
        if value is not None:
            values.append(value)
    if len(values) < n // 2:
        return None
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


CI_METRICS = ("f1", "precision", "recall", "fpr", "auprc", "roc_auc")


def bootstrap_binary(y: np.ndarray, prob: np.ndarray, threshold: float, n: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals for the main binary metrics, all from the same resamples (one pass, seeded)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(int)
    pred = np.asarray(prob) >= threshold
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {k: [] for k in CI_METRICS}
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        tp, fp, tn, fn = counts(y[i], pred[i])
        for key, value in (("precision", _div(tp, tp + fp)), ("recall", _div(tp, tp + fn)),
                           ("fpr", _div(fp, fp + tn))):
            if value is not None:
                values[key].append(value)
        if tp + fn and fp + tn:
            values["f1"].append(f1_from(tp, fp, fn))
            values["auprc"].append(average_precision_score(y[i], prob[i]))
            values["roc_auc"].append(roc_auc_score(y[i], prob[i]))
    tail = (1 - level) / 2 * 100
    return {k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if len(v) >= n // 2 else None
            for k, v in values.items()}


def paired_bootstrap(metric: Callable[[np.ndarray, np.ndarray], float | None], y: np.ndarray, prob_a: np.ndarray,
                     prob_b: np.ndarray, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare two guards on the same rows: the difference metric(b) - metric(a), its 95% interval and a
    two-sided p-value, from the same resampled rows for both guards."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        index = rng.integers(0, len(y), len(y))
        a, b = metric(y[index], prob_a[index]), metric(y[index], prob_b[index])
        if a is not None and b is not None:
            diffs.append(b - a)
    diffs = np.asarray(diffs)
    a, b = metric(y, prob_a), metric(y, prob_b)
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())) if len(diffs) else None
    return {"a": a, "b": b, "difference": None if a is None or b is None else b - a,
            "ci": (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if len(diffs) else None,
            "p_value": float(p) if p is not None else None, "resamples": len(diffs)}


def summary(examples: Sequence[Any], scores: Any, thresholds: Any = None) -> dict[str, dict[str, Any]]:
    """Binary metrics per task and category metrics per field, on the labelled rows (the training report)."""
    from guardtune.labels import CATEGORY_FIELDS

    threshold = (lambda name: thresholds[name]) if thresholds is not None else (lambda name: 0.5)
    out: dict[str, dict[str, Any]] = {}
    for task in scores.labels.tasks:
        rows = [i for i, ex in enumerate(examples) if ex.label(task) is not None]
        if rows:
            y = np.array([examples[i].label(task) for i in rows])
            out[task] = binary(y, scores[task][rows], threshold(task))
    for field_name in CATEGORY_FIELDS:
        codes, probs = scores.categories(field_name)
        rows = [i for i, ex in enumerate(examples) if getattr(ex, field_name) is not None]
        if codes and rows:
            true = [set(getattr(examples[i], field_name)) for i in rows]
            out[field_name] = categories(true, probs[rows], codes,
                                         [threshold(f"{field_name}/{c}") for c in codes])
    return out
