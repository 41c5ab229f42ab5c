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


# ---- resampling: a resample of rows is a vector of counts, so every draw of a metric is computed at once -------

DRAW_CHUNK = 100  # draws computed together (memory: chunk x rows floats)


def clusters_of(groups: Sequence[str]) -> np.ndarray:
    """Each row's cluster for a cluster bootstrap, as integers 0..G-1 in order of first appearance: rows that
    share a non-empty group (one template's fills, one prompt's translations or responses) share a cluster;
    a row without a group is a cluster of its own."""
    index: dict[str, int] = {}
    out = np.empty(len(groups), dtype=np.int64)
    for i, group in enumerate(groups):
        key = f"g:{group}" if group else f"row:{i}"
        out[i] = index.setdefault(key, len(index))
    return out


def _draw(rng: np.random.Generator, n: int, size: int, clusters: np.ndarray | None) -> np.ndarray:
    if clusters is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
    g = int(clusters.max()) + 1 if len(clusters) else 0
    return rng.multinomial(g, np.full(g, 1.0 / g), size=size).astype(np.float64)[:, clusters]


def resample_weights(n: int, draws: int, seed: int, clusters: np.ndarray | None = None) -> np.ndarray:
    """`draws` resamples of n rows with replacement, as counts per row [draws, n]. With `clusters`
    (`clusters_of`), whole clusters are resampled instead: a row's count is its cluster's."""
    return _draw(np.random.default_rng(seed), n, draws, clusters)


def weight_chunks(n: int, draws: int, seed: int, clusters: np.ndarray | None = None):
    """The same draws as resample_weights(n, draws, seed, clusters), a chunk at a time."""
    rng = np.random.default_rng(seed)
    for start in range(0, draws, DRAW_CHUNK):
        yield _draw(rng, n, min(DRAW_CHUNK, draws - start), clusters)


def weighted_counts(y: np.ndarray, flagged: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, ...]:
    """(tp, fp, tn, fn) per draw."""
    y, f = np.asarray(y, dtype=np.float64), np.asarray(flagged, dtype=np.float64)
    return W @ (y * f), W @ ((1 - y) * f), W @ ((1 - y) * (1 - f)), W @ (y * (1 - f))


def f1_draws(y: np.ndarray, flagged: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Positive-class F1 per draw (NaN when a draw has no positives)."""
    tp, fp, _, fn = weighted_counts(y, flagged, W)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)


def _runs(y: np.ndarray, p: np.ndarray, W: np.ndarray, descending: bool):
    """Weighted positives and negatives per run of equal scores, in score order, per draw."""
    order = np.argsort(-p if descending else p, kind="stable")
    ys, ps, Ws = np.asarray(y, dtype=np.float64)[order], p[order], W[:, order]
    ends = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # the last row of each run of equal scores
    tp, fp = np.cumsum(Ws * ys, axis=1)[:, ends], np.cumsum(Ws * (1 - ys), axis=1)[:, ends]
    return tp, fp


def auprc_draws(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average precision (AUPRC, as scikit-learn defines it, ties included) per draw: the sum over distinct
    scores, highest first, of the recall gained there times the precision there (NaN without both classes)."""
    tp, fp = _runs(y, p, W, descending=True)
    positives, negatives = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        gained = np.diff(tp / positives, axis=1, prepend=0.0)
        ap = np.sum(gained * precision, axis=1)
    return np.where((positives[:, 0] > 0) & (negatives[:, 0] > 0), ap, np.nan)


def roc_auc_draws(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC per draw: the chance that a positive outscores a negative, ties counting half."""
    pos_cum, neg_cum = _runs(y, p, W, descending=False)
    pos_run = np.diff(pos_cum, axis=1, prepend=0.0)
    neg_run = np.diff(neg_cum, axis=1, prepend=0.0)
    below = neg_cum - neg_run  # negatives strictly below each run
    positives, negatives = pos_cum[:, -1], neg_cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.sum(pos_run * (below + 0.5 * neg_run), axis=1) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of the defined draws; None when under half the draws are defined."""
    ok = draws[~np.isnan(draws)]
    if len(ok) < len(draws) / 2 or not len(ok):
        return None
    tail = (1 - level) / 2 * 100
    return float(np.percentile(ok, tail)), float(np.percentile(ok, 100 - tail))


CI_METRICS = ("f1", "precision", "recall", "fpr", "auprc", "roc_auc")


def binary_draws(y: np.ndarray, prob: np.ndarray, threshold: float, W: np.ndarray) -> dict[str, np.ndarray]:
    """The main binary metrics per draw of row weights W (NaN where a draw leaves one undefined)."""
    flagged = np.asarray(prob) >= threshold
    tp, fp, tn, fn = weighted_counts(y, flagged, W)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {"precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
               "recall": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
               "fpr": np.where(fp + tn > 0, fp / (fp + tn), np.nan)}
    both = (tp + fn > 0) & (fp + tn > 0)
    out["f1"] = np.where(both, f1_draws(y, flagged, W), np.nan)
    out["auprc"] = auprc_draws(y, np.asarray(prob), W)
    out["roc_auc"] = roc_auc_draws(y, np.asarray(prob), W)
    return out


def bootstrap_binary(y: np.ndarray, prob: np.ndarray, threshold: float, n: int = 1000, seed: int = 0,
                     level: float = 0.95, clusters: np.ndarray | None = None) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals for the main binary metrics, all from the same resamples (seeded); of rows, or of
    whole clusters when `clusters` is given."""
    parts = [binary_draws(y, prob, threshold, W) for W in weight_chunks(len(y), n, seed, clusters)]
    return {k: percentile_interval(np.concatenate([part[k] for part in parts]), level) for k in CI_METRICS}


Draws = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (y, p, W) -> a value per draw


def paired_bootstrap(metric: Draws, y: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, n: int = 1000,
                     seed: int = 0, clusters: np.ndarray | None = None) -> dict[str, Any]:
    """Compare two guards on the same rows: the difference metric(b) - metric(a), its 95% interval and a
    two-sided p-value, from the same resampled rows (or whole clusters) for both guards."""
    one = np.ones((1, len(y)))
    a, b = (float(metric(y, prob, one)[0]) for prob in (prob_a, prob_b))
    a, b = (None if np.isnan(v) else v for v in (a, b))
    diffs = np.concatenate([metric(y, prob_b, W) - metric(y, prob_a, W)
                            for W in weight_chunks(len(y), n, seed, clusters)])
    diffs = diffs[~np.isnan(diffs)]
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())) if len(diffs) else None
    return {"a": a, "b": b, "difference": None if a is None or b is None else b - a,
            "ci": (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if len(diffs) else None,
            "p_value": float(p) if p is not None else None, "resamples": len(diffs)}


def labelled(examples: Sequence[Any], scores: Any, task: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(rows, y, p) of a binary task: the rows that carry its label and have a score. An output that does not
    apply (NaN: a response output of a prompt alone) is never counted."""
    p_all = scores[task]
    rows = [i for i, ex in enumerate(examples) if ex.label(task) is not None and not np.isnan(p_all[i])]
    return rows, np.array([examples[i].label(task) for i in rows], dtype=np.int64), p_all[rows]


def labelled_sets(examples: Sequence[Any], scores: Any, field_name: str):
    """(rows, true category sets, probabilities [rows, codes], codes) of a category field, likewise."""
    codes, probs = scores.categories(field_name)
    rows = [i for i, ex in enumerate(examples)
            if getattr(ex, field_name) is not None and codes and not np.isnan(probs[i]).any()]
    return rows, [set(getattr(examples[i], field_name)) for i in rows], probs[rows], codes


def summary(examples: Sequence[Any], scores: Any, thresholds: Any = None) -> dict[str, dict[str, Any]]:
    """Binary metrics per task and category metrics per field, on the labelled rows (the training report)."""
    from guardtune.labels import CATEGORY_FIELDS

    threshold = (lambda name: thresholds[name]) if thresholds is not None else (lambda name: 0.5)
    out: dict[str, dict[str, Any]] = {}
    for task in scores.labels.tasks:
        rows, y, p = labelled(examples, scores, task)
        if rows:
            out[task] = binary(y, p, threshold(task))
    for field_name in CATEGORY_FIELDS:
        rows, true, probs, codes = labelled_sets(examples, scores, field_name)
        if rows:
            out[field_name] = categories(true, probs, codes, [threshold(f"{field_name}/{c}") for c in codes])
    return out
