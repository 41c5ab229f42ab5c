"""Metrics as pure functions. F1 means positive-class F1 (the harmful class) unless a name says macro.

Rows whose label is missing are left out of that task's metrics (never counted as negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from guardtune.data.example import Example


def binary(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Positive-class F1, precision, recall, FPR and accuracy at `threshold`; AUPRC and ROC-AUC from the scores.
    Rank metrics are None when only one class is present (they are undefined, not 0)."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(prob) >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, pred, average="binary", pos_label=1,
                                                               zero_division=0)
    negatives = y_true == 0
    both = 0 < y_true.sum() < len(y_true)
    return {
        "n": int(len(y_true)), "positives": int(y_true.sum()), "threshold": float(threshold),
        "f1": float(f1), "precision": float(precision), "recall": float(recall),
        "fpr": float(pred[negatives].mean()) if negatives.any() else None,
        "accuracy": float((pred == y_true).mean()) if len(y_true) else None,
        "auprc": float(average_precision_score(y_true, prob)) if both else None,
        "roc_auc": float(roc_auc_score(y_true, prob)) if both else None,
    }


def jaccard(true: set[str], pred: set[str]) -> float:
    """Per-sample Jaccard; two empty sets agree completely (1.0)."""
    if not true and not pred:
        return 1.0
    return len(true & pred) / len(true | pred)


def summary(examples: Sequence[Example], scores: Any, thresholds: Any = None) -> dict[str, dict[str, Any]]:
    """Binary metrics per task, and sample-averaged Jaccard per category field, on the labelled rows."""
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
            values = [jaccard(set(getattr(examples[i], field_name)),
                              {c for j, c in enumerate(codes) if probs[i, j] >= threshold(f"{field_name}/{c}")})
                      for i in rows]
            out[field_name] = {"n": len(rows), "jaccard": float(np.mean(values))}
    return out
