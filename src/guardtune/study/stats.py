"""Intervals and paired tests for a study: a two-level bootstrap over test rows and seeds.

Each bootstrap draw resamples the test rows (the same resample for every arm: the comparison is paired) and,
for each arm, resamples its seeds. A draw's value is the arm's metric averaged over those seeds. So the
intervals carry both the test set's sampling error and the seed-to-seed spread, and a difference between
arms is called significant only when it survives both.

A resample of rows is a vector of counts, so every metric here takes row weights `W` (draws x rows) and
computes all draws at once: F1 at a threshold, average precision (AUPRC, as scikit-learn defines it, ties
included) and a mean of per-row values (per-sample Jaccard). Undefined values are NaN.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np


def row_weights(n: int, draws: int, seed: int) -> np.ndarray:
    """`draws` resamples of n rows with replacement, as counts per row."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=draws).astype(np.float64)


def stable_seed(*parts: str) -> int:
    return zlib.crc32("|".join(parts).encode())


def f1(y: np.ndarray, p: np.ndarray, t: float, W: np.ndarray) -> np.ndarray:
    """Positive-class F1 at threshold t, per draw (NaN when a draw has no positives)."""
    y = y.astype(np.float64)
    flagged = (p >= t).astype(np.float64)
    tp, fp, fn = W @ (y * flagged), W @ ((1 - y) * flagged), W @ (y * (1 - flagged))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)


def auprc(y: np.ndarray, p: np.ndarray, t: float, W: np.ndarray) -> np.ndarray:
    """Average precision per draw: the sum over distinct scores, highest first, of the recall gained there
    times the precision there (NaN when a draw lacks either class)."""
    order = np.argsort(-p, kind="stable")
    ys, ps, Ws = y[order].astype(np.float64), p[order], W[:, order]
    tp, fp = np.cumsum(Ws * ys, axis=1), np.cumsum(Ws * (1 - ys), axis=1)
    ends = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # the last row of each run of equal scores
    tp, fp = tp[:, ends], fp[:, ends]
    positives, negatives = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / positives
        gained = np.diff(recall, axis=1, prepend=0.0)
        ap = np.sum(gained * precision, axis=1)
    return np.where((positives[:, 0] > 0) & (negatives[:, 0] > 0), ap, np.nan)


def mean(values: np.ndarray, _p: np.ndarray | None, _t: float, W: np.ndarray) -> np.ndarray:
    """The weighted mean of per-row values (per-sample Jaccard)."""
    return (W @ values.astype(np.float64)) / W.sum(axis=1)


METRICS = {"f1": f1, "auprc": auprc, "jaccard": mean}


def seed_draws(per_seed: np.ndarray, seed: int) -> np.ndarray:
    """(seeds x draws) -> (draws,): each draw averages a resample of the seeds."""
    seeds, draws = per_seed.shape
    pick = np.random.default_rng(seed).integers(0, seeds, size=(draws, seeds))
    with warnings.catch_warnings():  # an all-NaN draw stays NaN, and counts as undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_seed[pick, np.arange(draws)[:, None]], axis=1)


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval; None when under half the draws are defined."""
    ok = draws[~np.isnan(draws)]
    if len(ok) < len(draws) / 2:
        return None
    tail = (1 - level) / 2 * 100
    return float(np.percentile(ok, tail)), float(np.percentile(ok, 100 - tail))


def p_value(differences: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of a difference being zero."""
    ok = differences[~np.isnan(differences)]
    if len(ok) < len(differences) / 2:
        return None
    return float(min(1.0, 2 * min((ok <= 0).mean(), (ok >= 0).mean())))


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (family-wise error over all the comparisons given)."""
    index = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(index):
        running = max(running, min(1.0, (len(index) - rank) * p))
        out[i] = running
    return out
