"""Confidence cascades: a cheap guard decides what it is sure of, and only the rest goes to the next stage.

    cascade = Cascade([tfidf, minilm], bands=[{"prompt_harmful": (0.2, 0.7)}])
    cascade.score(examples)      # each example's scores from the stage that decided it
    cascade.calls                # how many examples each stage has scored: the cost, exactly

A stage answers for an example when, for every task of the cascade, its probability is outside that task's
band [low, high] (its uncertainty band); otherwise the example goes on to the next stage. The last stage answers
everything it gets. Scores stay probabilities (the deciding stage's, every output), so eval, calibrate,
thresholds, moderate and serve work unchanged; a stage's calibrated temperatures apply (its `score`).

Bands are fitted on validation data (`fit`): every band between two quantiles of a stage's own probabilities is
tried (low and high apart: with rare positives the uncertain region is not centred on the threshold), and one
of three rules picks one: a target escalation rate, a target quality (the last stage's AUPRC or F1 within a
tolerance, at the least cost), or a cost budget per example. All of them are kept as the quality/cost curve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.guard import Guard, GuardBase, Scores, Thresholds, language_of, record_kind, verdict
from guardtune.labels import LabelSpace

Band = tuple[float, float]
RULES = ("rate", "quality", "budget")
SHAPES = ("low", "two-sided")


def shared_labels(stages: Sequence[Guard]) -> LabelSpace:
    """The outputs every stage has, in the last stage's order: what the cascade can answer."""
    last = stages[-1].labels
    common = [set(s.labels.outputs) for s in stages]

    def keep(names: Sequence[str], prefix: str = "") -> tuple[str, ...]:
        return tuple(n for n in names if all(f"{prefix}{n}" in c for c in common))

    tasks = keep(last.tasks)
    if not tasks:
        raise ValueError(f"the stages share no task ({[list(s.labels.tasks) for s in stages]}); a cascade decides on "
                         "the tasks all its stages have")
    return LabelSpace(tasks, keep(last.prompt_categories, "prompt_categories/"),
                      keep(last.response_categories, "response_categories/"), last.scopes)


class Cascade(GuardBase):
    """Stages in order (cheapest first); `bands[i]` is stage i's {task: (low, high)} (none for the last)."""

    def __init__(self, stages: Sequence[Guard], bands: Sequence[dict[str, Band]], thresholds: Thresholds | None = None,
                 name: str = "cascade", info: dict[str, Any] | None = None):
        if len(stages) < 2:
            raise ValueError("a cascade needs at least two stages")
        if len(bands) != len(stages) - 1:
            raise ValueError(f"{len(stages)} stages need {len(stages) - 1} bands (none for the last), got {len(bands)}")
        self.stages = list(stages)
        self.labels = shared_labels(self.stages)
        for i, band in enumerate(bands):
            unknown = set(band) - set(self.labels.tasks)
            if unknown:
                raise ValueError(f"stage {i}'s bands name tasks the cascade does not decide: {sorted(unknown)}")
            for task, (low, high) in band.items():
                if not 0 <= low <= high <= 1:
                    raise ValueError(f"stage {i}, {task}: a band must be 0 <= low <= high <= 1, got {(low, high)}")
        self.bands = [dict(b) for b in bands]
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.info = info or {}
        self.calls = [0] * len(self.stages)  # examples each stage has scored, over this object's life
        self.decided: np.ndarray = np.zeros(0, dtype=np.int64)  # the deciding stage of each row of the last call

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        outputs = self.labels.outputs
        probs = np.full((len(examples), len(outputs)), np.nan, dtype=np.float32)
        decided = np.full(len(examples), -1, dtype=np.int64)
        pending = np.arange(len(examples))
        for i, stage in enumerate(self.stages):
            if not len(pending):
                break
            scores = stage.score([examples[j] for j in pending], batch_size=batch_size, show_progress=show_progress)
            self.calls[i] += len(pending)
            columns = [stage.labels.index(o) for o in outputs]
            sure = np.ones(len(pending), dtype=bool) if i == len(self.stages) - 1 else \
                confident(scores, self.bands[i], self.labels.tasks)
            chosen = pending[sure]
            probs[chosen] = scores.probs[sure][:, columns]
            decided[chosen] = i
            pending = pending[~sure]
        self.decided = decided
        return Scores(self.labels, probs)

    def moderate(self, prompt: str, response: str | None = None, language: str | None = None) -> dict[str, Any]:
        scores = self.score([Example(prompt=prompt, response=response)])
        return {**verdict(self, scores, 0, language_of(self, prompt, language)), "stage": int(self.decided[0]),
                "stage_name": self.stages[self.decided[0]].name}

    def save(self, directory: str | Path, stage_paths: Sequence[str]) -> Path:
        """A cascade directory: guard.json with the stage directories (as given: absolute, or relative to this
        directory) and the bands; thresholds.json as any guard's."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        record_kind(out, "cascade", stages=list(map(str, stage_paths)),
                    bands=[{t: list(b) for t, b in band.items()} for band in self.bands], fit=self.info)
        self.thresholds.save(out)
        return out


def confident(scores: Scores, band: dict[str, Band], tasks: Sequence[str]) -> np.ndarray:
    """Rows where every task with a band is outside it (NaN, a task that does not apply, counts as sure)."""
    sure = np.ones(len(scores), dtype=bool)
    for task in tasks:
        if task in band:
            sure &= outside(scores[task], *band[task])
    return sure


def outside(p: np.ndarray, low: float, high: float) -> np.ndarray:
    """Probabilities outside the band [low, high] (NaN, an output that does not apply, counts as outside)."""
    return np.isnan(p) | (p < low) | (p > high)


_LOADING: set[Path] = set()  # cascades being loaded (a stage leading back to one would never end)


def load_cascade(directory: Path, info: dict[str, Any], options: Any) -> Cascade:
    import guardtune

    stages_given, bands = info.get("stages"), info.get("bands")
    if not isinstance(stages_given, list) or not all(isinstance(s, str) for s in stages_given) \
            or not isinstance(bands, list) or not all(isinstance(b, dict) for b in bands):
        raise ValueError(f"{directory / 'guard.json'}: a cascade needs \"stages\" (a list of guard directories) and "
                         "\"bands\" (a list of {task: [low, high]})")
    stages = []
    here = directory.resolve()
    if here in _LOADING:
        raise ValueError(f"{directory / 'guard.json'}: the cascade's stages lead back to itself")
    _LOADING.add(here)
    try:
        for given in stages_given:
            path = Path(given) if Path(given).is_absolute() else directory / given
            stages.append(guardtune.load(path, device=options.device, trust_remote_code=options.trust_remote_code))
    finally:
        _LOADING.discard(here)
    try:
        parsed = [{str(t): (float(b[0]), float(b[1])) for t, b in band.items()} for band in bands]
    except (TypeError, ValueError, IndexError, KeyError):
        raise ValueError(f"{directory / 'guard.json'}: each band must be [low, high] numbers") from None
    return Cascade(stages, parsed, Thresholds.read(directory), name=directory.name, info=info.get("fit", {}))


# ---- fitting ------------------------------------------------------------------------------------------------

@dataclass
class Fit:
    """A fitted cascade's bands, the chosen point and the whole quality/cost curve on the fitting data."""
    bands: list[dict[str, Band]]
    chosen: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)


def fit(stages: Sequence[Guard], examples: Sequence[Example], rule: str = "quality", target: float | None = None,
        costs: Sequence[float] | None = None, metric: str = "auprc", tolerance: float = 0.005,
        steps: int = 41, shape: str = "low") -> Fit:
    """Bands for a two-or-more-stage cascade from labelled examples. Every stage scores every example once; the
    curve then tries every band between two of `steps` quantiles of each non-final stage's own probabilities
    (the same quantiles for every non-final stage). `shape` "low" (default): bands [q, 1], a stage only clears
    what it is sure is safe and passes on everything else (one number fitted per stage: robust on small
    validation sets, and the right shape when harmful examples are rare); "two-sided": any [q_lo, q_hi], so a
    stage also decides what it is sure is harmful (more fitted freedom: it needs more validation data).
    `costs`: ms per example of each stage (measured by `measure_costs` when None).
    rule rate: target = the share of examples the first stage escalates; quality: the least cost whose `metric`
    on the examples is within `tolerance` of the last stage's alone; budget: target = ms per example, the best
    quality within it."""
    from guardtune import metrics

    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown band shape {shape!r}; choose from {', '.join(SHAPES)}")
    if rule in ("rate", "budget") and target is None:
        raise ValueError(f"rule {rule!r} needs a target ({'a share of examples' if rule == 'rate' else 'ms/example'})")
    labels = shared_labels(stages)
    task = labels.tasks[0]
    rows = [i for i, ex in enumerate(examples) if getattr(ex, task) is not None]
    if not rows:
        raise ValueError(f"no example is labelled for {task}: a cascade is fitted on labelled data")
    examples = [examples[i] for i in rows]
    y = np.array([getattr(ex, task) for ex in examples], dtype=np.int64)
    costs = list(costs) if costs is not None else measure_costs(stages, examples)
    probs = [s.score(examples)[task].astype(np.float64) for s in stages]

    quantiles = [np.quantile(p, np.linspace(0, 1, steps)) for p in probs[:-1]]

    def run(lo: int | None, hi: int | None) -> dict[str, Any]:
        """Each non-final stage escalates what lies between its lo-th and hi-th probability quantile (hi None:
        everything from the lo-th up; lo None: no band, it answers everything)."""
        bands, pending = [], np.ones(len(y), dtype=bool)
        final = np.zeros(len(y))
        reached = []
        for i in range(len(stages)):
            reached.append(int(pending.sum()))
            if i == len(stages) - 1:
                final[pending] = probs[i][pending]
                break
            if lo is None:
                bands.append({})
                sure = pending.copy()
            else:
                low, high = float(quantiles[i][lo]), 1.0 if hi is None else float(quantiles[i][hi])
                bands.append({task: (low, high)})
                sure = pending & outside(probs[i], low, high)
            final[sure] = probs[i][sure]
            pending &= ~sure
        quality = metrics.binary(y, final, stages[-1].thresholds[task])
        cost = sum(c * n for c, n in zip(costs, reached)) / len(y)
        return {"band_quantiles": None if lo is None else [lo / (steps - 1), 1.0 if hi is None else hi / (steps - 1)],
                "escalated": reached[1] / len(y), "reached": reached, "cost_ms": cost,
                "auprc": quality["auprc"], "f1": quality["f1"], "bands": bands}

    bands_tried = [(lo, None) for lo in range(steps)] if shape == "low" else \
        [(lo, hi) for lo in range(steps) for hi in range(lo, steps)]
    curve = sorted([run(None, None)] + [run(lo, hi) for lo, hi in bands_tried],
                   key=lambda c: (c["cost_ms"], -(c["auprc"] or 0)))
    last = metrics.binary(y, probs[-1], stages[-1].thresholds[task])
    if rule == "rate":
        chosen = min(curve, key=lambda c: abs(c["escalated"] - target))
    elif rule == "quality":
        good = [c for c in curve if c[metric] is not None and last[metric] is not None
                and c[metric] >= last[metric] - tolerance]
        chosen = min(good, key=lambda c: c["cost_ms"]) if good else curve[-1]
    else:
        within = [c for c in curve if c["cost_ms"] <= target]
        if not within:
            raise ValueError(f"no band fits {target} ms/example: the first stage alone costs {costs[0]:.3f}")
        chosen = max(within, key=lambda c: (c[metric] or 0, -c["cost_ms"]))
    info = {"rule": rule, "shape": shape, "target": target, "metric": metric, "tolerance": tolerance, "task": task,
            "costs_ms": costs, "n": len(y), "last_alone": {"auprc": last["auprc"], "f1": last["f1"],
                                                           "cost_ms": costs[-1]},
            **{k: chosen[k] for k in ("band_quantiles", "escalated", "cost_ms", "auprc", "f1", "reached")}}
    return Fit([{t: tuple(b) for t, b in band.items()} for band in chosen["bands"]], info, curve)


def measure_costs(stages: Sequence[Guard], examples: Sequence[Example], n: int = 256) -> list[float]:
    """Milliseconds per example of each stage, batched as it scores (a warm-up call first, not timed)."""
    import time

    sample = list(examples[:n])
    out = []
    for stage in stages:
        stage.score(sample[:8])
        start = time.perf_counter()
        stage.score(sample)
        out.append((time.perf_counter() - start) * 1000 / max(len(sample), 1))
    return out


def write_curve(fitted: Fit, out: Path) -> None:
    """curve.json and a plot of quality against cost over every band, the chosen point marked."""
    from guardtune.plots import cascade_curve

    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps({"chosen": fitted.chosen, "curve": [
        {k: v for k, v in c.items() if k != "bands"} for c in fitted.curve]}, indent=1) + "\n", encoding="utf-8")
    cascade_curve(fitted.curve, fitted.chosen, out / "cascade-curve.png")
