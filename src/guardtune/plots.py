"""Headless matplotlib figures for reports: PR and ROC curves, confusion matrices, per-language bars and
reliability diagrams. Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def pr_roc(y: np.ndarray, prob: np.ndarray, title: str, path: Path) -> Path:
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    precision, recall, _ = precision_recall_curve(y, prob)
    left.step(recall, precision, where="post")
    left.axhline(np.mean(y), ls="--", c="grey", label=f"positive rate {np.mean(y):.2f}")
    left.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    left.legend(loc="lower left")
    fpr, tpr, _ = roc_curve(y, prob)
    right.plot(fpr, tpr)
    right.plot([0, 1], [0, 1], ls="--", c="grey")
    right.set(xlabel="false-positive rate", ylabel="recall", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    fig.suptitle(title)
    return _save(fig, path)


def confusion(m: dict[str, Any], title: str, path: Path) -> Path:
    plt = _plt()
    cells = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(cells, cmap="Blues")
    for (i, j), value in np.ndenumerate(cells):
        ax.text(j, i, str(value), ha="center", va="center", color="black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["safe", "flagged"], yticklabels=["safe", "harmful"],
           xlabel="predicted", ylabel="true", title=f"{title}\nthreshold {m['threshold']:.2f}")
    return _save(fig, path)


def bars(values: dict[str, float | None], metric: str, title: str, path: Path) -> Path:
    plt = _plt()
    names = [k for k, v in values.items() if v is not None]
    fig, ax = plt.subplots(figsize=(max(4, 0.55 * len(names) + 1.5), 3.4))
    ax.bar(names, [values[k] for k in names])
    ax.set(ylabel=metric, title=title, ylim=(0, 1.02))
    ax.tick_params(axis="x", rotation=45)
    return _save(fig, path)


def reliability(curves: dict[str, dict[str, Any]], title: str, path: Path) -> Path:
    """`curves`: name -> calibrate.reliability(...) output (e.g. before / after temperature scaling)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], ls="--", c="grey")
    for name, curve in curves.items():
        ax.plot([b["confidence"] for b in curve["bins"]], [b["observed"] for b in curve["bins"]], marker="o",
                label=f"{name} (ECE {curve['ece']:.3f})")
    ax.set(xlabel="predicted probability", ylabel="observed positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return _save(fig, path)


def cascade_curve(curve: list[dict[str, Any]], chosen: dict[str, Any], path: Path) -> Path:
    """A cascade's quality (AUPRC and F1) against its cost per example: every band tried (dots) and the best
    quality at each cost (the Pareto frontier, lines); the chosen point circled, the last stage alone an x."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cost = np.array([c["cost_ms"] for c in curve])
    order = np.argsort(cost, kind="stable")
    for metric, colour in (("auprc", "tab:blue"), ("f1", "tab:orange")):
        q = np.array([np.nan if c[metric] is None else c[metric] for c in curve])
        ax.scatter(cost, q, s=4, alpha=0.25, c=colour)
        frontier = np.fmax.accumulate(np.nan_to_num(q[order], nan=-np.inf))
        ax.plot(cost[order], frontier, c=colour, label=f"{metric.upper()} (best at each cost)")
        if chosen.get(metric) is not None:
            ax.plot([chosen["cost_ms"]], [chosen[metric]], "o", mfc="none", mec="black", ms=9)
        last = chosen.get("last_alone", {})
        if last.get(metric) is not None:
            ax.plot([last["cost_ms"]], [last[metric]], "x", c="red", ms=9)
    ax.annotate(f"chosen: {chosen['escalated']:.0%} escalated", (chosen["cost_ms"], chosen.get("auprc") or 0),
                textcoords="offset points", xytext=(8, -14))
    low = np.nanmin([c["f1"] for c in curve if c["f1"] is not None] or [0])
    ax.set(xlabel="cost (ms per example)", ylabel="quality", ylim=(max(0.0, low - 0.05), 1.0),
           title="cascade: quality against cost (x: last stage alone)")
    ax.legend(loc="lower right")
    return _save(fig, path)
