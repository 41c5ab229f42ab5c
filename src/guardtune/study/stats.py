"""Intervals and paired tests for a study: a two-level bootstrap over test rows and seeds.

Each bootstrap draw resamples the test rows (the same resample for every arm: the comparison is paired) and,
for each arm, resamples its seeds. A draw's value is the arm's metric averaged over those seeds. So the
intervals carry both the test set's sampling error and the seed-to-seed spread, and a difference between
arms is called significant only when it survives both.

A resample of rows is a vector of counts, so every metric takes row weights `W` (draws x rows) and computes
all draws at once; the weighted F1 and AUPRC are metrics.py's (the same ones eval's intervals use), adapted
here to the (y, p, threshold, W) form the study's metric table wants, with a mean of per-row values
(per-sample Jaccard). Undefined values are NaN.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np

from guardtune.metrics import auprc_draws, f1_draws


def stable_seed(*parts: str) -> int:
    return zlib.crc32("|".join(parts).encode())


def f1(y: np.ndarray, p: np.ndarray, t: float, W: np.ndarray) -> np.ndarray:
    """Positive-class F1 at threshold t, per draw (NaN when a draw has no positives)."""
    return f1_draws(y, p >= t, W)


def auprc(y: np.ndarray, p: np.ndarray, t: float, W: np.ndarray) -> np.ndarray:
    """Average precision per draw (NaN when a draw lacks either class)."""
    return auprc_draws(y, p, W)


def mean(values: np.ndarray, _p: np.ndarray | None, _t: float, W: np.ndarray) -> np.ndarray:
    """The weighted mean of per-row values (per-sample Jaccard)."""
    return (W @ values.astype(np.float64)) / W.sum(axis=1)


METRICS = {"f1": f1, "auprc": auprc, "jaccard": mean, "j": mean, "sta": mean, "sim": mean, "fl": mean}


def seed_draws(per_seed: np.ndarray, seed: int) -> np.ndarray:
    """(seeds x draws) -> (draws,): each draw averages a resample of the seeds."""
    seeds, draws = per_seed.shape
    pick = np.random.default_rng(seed).integers(0, seeds, size=(draws, seeds))
    with warnings.catch_warnings():  # an all-NaN draw stays NaN, and counts as undefined
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_seed[pick, np.arange(draws)[:, None]], axis=1)


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
