"""Decision thresholds and probability calibration, chosen on a validation set and saved in the run.

    guardtune calibrate RUN --data toxicchat_human:train --strategy max_f1 --temperature

Strategies per output (each task, each category): `max_f1` (the threshold with the best positive-class F1),
`fpr` (the most recall whose false-positive rate stays at or under --target), `recall` (the highest threshold
that still catches --target of the positives). Temperature scaling (one temperature per output, fitted by
log-loss) makes probabilities honest without changing their order. `thresholds.json` then serves eval,
moderate and serve. `--per language` also fits a threshold per language (with enough of its rows; the global
one otherwise), applied to each request's language, given or detected. Calibrating on a test split is allowed but warned about: the test numbers stop being a
test.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from guardtune.guard import TEMPERATURE_RANGE, Scores, Thresholds, scale  # one temperature formula, here and there

STRATEGIES = ("max_f1", "fpr", "recall")


def choose_threshold(y: np.ndarray, prob: np.ndarray, strategy: str = "max_f1", target: float | None = None) -> float:
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y).astype(int)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy != "max_f1" and target is None:
        raise ValueError(f"strategy {strategy!r} needs a target (e.g. --target 0.05)")
    if y.min(initial=1) == y.max(initial=0):
        return 0.5  # one class only: nothing to choose from
    if strategy == "max_f1":
        precision, recall, thresholds = precision_recall_curve(y, prob)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        best = int(np.argmax(f1[:-1]))
        # any threshold in (next lower score, this score] flags the same rows: take the middle, not the edge
        return float((thresholds[best] + thresholds[best - 1]) / 2 if best > 0 else thresholds[best])
    if strategy == "fpr":
        fpr, tpr, thresholds = roc_curve(y, prob)
        allowed = np.flatnonzero(fpr <= target)
        best = allowed[np.argmax(tpr[allowed])]
        return float(min(thresholds[best], 1.0))
    precision, recall, thresholds = precision_recall_curve(y, prob)
    reaching = np.flatnonzero(recall[:-1] >= target)
    return float(thresholds[reaching.max()]) if len(reaching) else float(prob.min())


def logit(prob: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def fit_temperature(y: np.ndarray, prob: np.ndarray) -> float:
    """The temperature T minimising log-loss of sigmoid(logit(p) / T) within TEMPERATURE_RANGE; 1.0 when the
    data cannot say. Bounded: on separable data the log-loss falls forever as T -> 0, and an unbounded fit
    drove the demo's T to 0.05, where the rescaled scores saturated into ties and AUPRC fell (0.990 -> 0.984)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y).astype(float)
    if len(y) < 2 or y.min() == y.max():
        return 1.0
    z = logit(prob)

    def loss(log_t: float) -> float:
        q = np.clip(1 / (1 + np.exp(-z / np.exp(log_t))), 1e-12, 1 - 1e-12)
        return float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean())

    low, high = (float(np.log(t)) for t in TEMPERATURE_RANGE)
    return float(np.clip(np.exp(minimize_scalar(loss, bounds=(low, high), method="bounded").x), *TEMPERATURE_RANGE))


def reliability(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Equal-width bins: mean confidence, observed positive rate and count per bin, and the expected
    calibration error (ECE: the count-weighted mean gap)."""
    y, prob = np.asarray(y, dtype=float), np.asarray(prob, dtype=float)
    index = np.minimum((prob * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            rows.append({"bin": b, "confidence": float(prob[inside].mean()), "observed": float(y[inside].mean()),
                         "count": int(inside.sum())})
    ece = sum(r["count"] * abs(r["confidence"] - r["observed"]) for r in rows) / max(len(y), 1)
    return {"bins": rows, "ece": float(ece)}


def calibrate(raw: Scores, examples: list, strategy: str = "max_f1", target: float | None = None,
              temperature: bool = False) -> dict[str, Any]:
    """Thresholds (and temperatures) per output from a guard's uncalibrated `Scores` on labelled examples, and
    the calibration evidence."""
    from guardtune.metrics import binary

    labels = raw.labels
    y_all, known = labels.targets(examples)
    thresholds, temperatures, evidence = {}, {}, {}
    for j, output in enumerate(labels.outputs):
        rows = known[:, j] & ~np.isnan(raw.probs[:, j])  # an output that does not apply is never calibrated on
        if rows.sum() < 2:
            continue
        y, p = y_all[rows, j], raw.probs[rows, j]
        t = fit_temperature(y, p) if temperature else 1.0
        q = scale(p, t)
        thresholds[output] = choose_threshold(y, q, strategy, target)
        if temperature:
            temperatures[output] = t
        evidence[output] = {"n": int(rows.sum()), "positives": int(y.sum()), "threshold": thresholds[output],
                            "temperature": t, "ece_before": reliability(y, p)["ece"],
                            "ece_after": reliability(y, q)["ece"],
                            "at_threshold": {k: binary(y, q, thresholds[output])[k] for k in ("f1", "recall", "fpr")}}
    return {"strategy": strategy, "target": target, "thresholds": thresholds, "temperature": temperatures,
            "evidence": evidence}


def fit_thresholds(guard: Any, examples: list, strategy: str = "max_f1", target: float | None = None,
                   temperature: bool = False, data: Any = "", *, raw: Scores | None = None,
                   per_language: int | None = None, **info: Any) -> tuple[Thresholds, dict[str, Any]]:
    """Thresholds (and temperatures) for any guard, chosen on `examples` (named `data` in their record), and the
    calibration evidence: what `calibrate:` in a training config does when training ends, and what
    `guardtune calibrate` saves. `raw`: the guard's uncalibrated scores on `examples`, when already computed.
    `per_language`: also a threshold per language with at least that many harmful and benign rows (the
    evidence then has "per_language", as `calibrate_per_language` returns it)."""
    raw = guard.score(examples, calibrated=False) if raw is None else raw
    found = calibrate(raw, examples, strategy, target, temperature)
    record = {"strategy": strategy, "target": target, "data": data, "temperature_scaling": temperature,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    by_language: dict[str, dict[str, float]] = {}
    if per_language is not None:
        rescaled = Thresholds(temperature=found["temperature"]).rescale(raw)  # thresholds apply after temperature
        found["per_language"] = calibrate_per_language(rescaled, examples, strategy, target, per_language)
        by_language = found["per_language"]["per_language"]
        record.update(per="language", min_count=per_language)
    return Thresholds(found["thresholds"], 0.5, found["temperature"], record, by_language), found


MIN_PER_CLASS = 30  # a language gets its own threshold only with at least this many harmful and benign rows


def calibrate_per_language(scores: Scores, examples: list, strategy: str = "max_f1", target: float | None = None,
                           min_count: int = MIN_PER_CLASS) -> dict[str, Any]:
    """A threshold per task for each language with at least `min_count` positive and `min_count` negative rows
    (the others fall back to the global threshold), chosen by the same strategy on that language's rows alone.
    `scores` are the ones the thresholds apply to (after any temperature). Returns {"per_language": {language:
    {task: threshold}}, "evidence": {language: {task: {n, positives, threshold or None, own}}}}."""
    per: dict[str, dict[str, float]] = {}
    evidence: dict[str, dict[str, Any]] = {}
    languages = sorted({ex.language for ex in examples if ex.language})
    for language in languages:
        rows = [i for i, ex in enumerate(examples) if ex.language == language]
        found = calibrate(Scores(scores.labels, scores.probs[rows]), [examples[i] for i in rows], strategy, target)
        evidence[language] = {}
        for task in scores.labels.tasks:
            e = found["evidence"].get(task)
            n, positives = (e["n"], e["positives"]) if e else (0, 0)
            own = e is not None and positives >= min_count and n - positives >= min_count
            evidence[language][task] = {"n": n, "positives": positives, "own": own,
                                        "threshold": found["thresholds"][task] if own else None}
            if own:
                per.setdefault(language, {})[task] = found["thresholds"][task]
    return {"per_language": per, "evidence": evidence, "min_count": min_count}
