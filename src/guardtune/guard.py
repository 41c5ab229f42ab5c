"""What every guard is, whatever its kind: the Guard and Rewriter protocols, Scores, Thresholds and verdicts.

    guard = guardtune.load("runs/demo")
    scores = guard.score(examples)            # probabilities for every task and category, no thresholds
    guard.moderate("how do I pick a lock?")   # a verdict, using the run's thresholds (0.5 until calibrated)

This module imports nothing of guardtune above the data record and the label space: kinds, baselines,
evaluation, serving and studies all build on it. `guardtune.load` (loading.py) turns a run directory into one.

An output that does not apply to an example has no score: a prompt without a response has NaN for every
response output (response_harmful, response_refusal, response_categories/*), for every kind of guard. Verdicts
leave such outputs out, servers never flag them, and metrics never count them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from guardtune.data.example import Example
from guardtune.labels import CATEGORY_FIELDS, LabelSpace

THRESHOLDS = "thresholds.json"
GUARD_FILE = "guard.json"  # {"kind": ..., what that kind's loader needs}: every guard directory has one
RESPONSE_PREFIX = "response_"  # outputs about the response: they do not apply to a prompt alone


@dataclass
class Scores:
    """Probabilities, one row per example and one column per output of the label space (NaN: not applicable)."""
    labels: LabelSpace
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)

    def __getitem__(self, output: str) -> np.ndarray:
        return self.probs[:, self.labels.index(output)]

    def categories(self, field_name: str) -> tuple[tuple[str, ...], np.ndarray]:
        codes = self.labels.categories(field_name)
        return codes, np.stack([self[f"{field_name}/{c}"] for c in codes], axis=1) if codes else np.zeros((len(self), 0))


def response_columns(labels: LabelSpace) -> list[int]:
    return [j for j, output in enumerate(labels.outputs) if output.startswith(RESPONSE_PREFIX)]


def without_absent(examples: Sequence[Example], scores: Scores) -> Scores:
    """`scores` with every response output of a prompt-only example set to NaN (it has no response to judge)."""
    rows = [i for i, ex in enumerate(examples) if ex.response is None]
    columns = response_columns(scores.labels)
    if not rows or not columns:
        return scores
    probs = scores.probs.astype(np.float32, copy=True)
    probs[np.ix_(rows, columns)] = np.nan
    return Scores(scores.labels, probs)


TEMPERATURE_RANGE = (0.5, 4.0)  # fitted temperatures stay inside: see `scale`


def scale(prob: np.ndarray, temperature: float) -> np.ndarray:
    """sigmoid(logit(p) / T): temperature scaling of probabilities (NaN stays NaN), in float64. Strictly
    increasing, and for T in TEMPERATURE_RANGE it keeps distinct float32 probabilities distinct (the logit of
    a float32 probability lies in [-104, 17], so z / T stays within [-208, 34], where float64's sigmoid still
    resolves neighbours; only exact 0 and 1, already ties, are clipped): the order of the scores, and so AUPRC
    and ROC-AUC, is unchanged (tested with hypothesis)."""
    from scipy.special import expit

    p = np.clip(np.asarray(prob, dtype=np.float64), np.finfo(np.float64).tiny, 1 - np.finfo(np.float64).epsneg)
    return expit((np.log(p) - np.log1p(-p)) / temperature)


@dataclass
class Thresholds:
    """Decision thresholds per output (0.5 for any output not calibrated), and optional temperatures that
    rescale a guard's probabilities (sigmoid(logit(p) / T)); both saved in the run as thresholds.json."""
    values: dict[str, float] = field(default_factory=dict)
    default: float = 0.5
    temperature: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # how they were chosen: strategy, data, date
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)  # language -> output -> threshold

    def __getitem__(self, output: str) -> float:
        return self.values.get(output, self.default)

    def get(self, output: str, language: str | None = None) -> float:
        """The threshold for `output` in `language`: its own when calibration had enough of that language's rows
        (`calibrate --per language`), else the global one."""
        own = self.per_language.get(language or "", {})
        return own[output] if output in own else self[output]

    @property
    def calibrated(self) -> bool:
        return bool(self.values or self.temperature)

    def rescale(self, scores: Scores) -> Scores:
        if not self.temperature:
            return scores
        probs = scores.probs.astype(np.float64)  # float32 would merge neighbouring rescaled scores into ties
        for output, t in self.temperature.items():
            if output in scores.labels.outputs:
                j = scores.labels.index(output)
                probs[:, j] = scale(probs[:, j], t)
        return Scores(scores.labels, probs)

    def save(self, run_dir: Path) -> None:
        data = {**self.info, "default": self.default, "thresholds": self.values, "temperature": self.temperature,
                **({"per_language": self.per_language} if self.per_language else {})}
        (Path(run_dir) / THRESHOLDS).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, run_dir: Path) -> Thresholds:
        path = Path(run_dir) / THRESHOLDS
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        values, temperature = dict(data.pop("thresholds", {})), dict(data.pop("temperature", {}))
        per_language = data.pop("per_language", {}) or {}
        if not isinstance(per_language, dict) or not all(isinstance(v, dict) for v in per_language.values()):
            raise ValueError(f"{path}: per_language must map a language to {{output: threshold}}")
        per_language = {str(k): {str(o): float(t) for o, t in v.items()} for k, v in per_language.items()}
        return cls(values, float(data.pop("default", 0.5)), temperature, data, per_language)


def record_kind(directory: str | Path, kind: str, **info: Any) -> None:
    """Write the directory's guard.json: its kind (a key of guardtune.loading.LOADERS) and what loading it needs."""
    from guardtune.paths import write_atomic

    write_atomic(Path(directory) / GUARD_FILE, json.dumps({"kind": kind, **info}, indent=1) + "\n")


@runtime_checkable
class Guard(Protocol):
    """Anything that turns examples into probabilities: what eval, calibrate, serve, study and moderate take."""
    labels: LabelSpace
    thresholds: Thresholds
    name: str

    def score(self, examples: Sequence[Example], batch_size: int | None = None, show_progress: bool = False,
              calibrated: bool = True) -> Scores: ...

    def moderate(self, prompt: str, response: str | None = None, language: str | None = None) -> dict[str, Any]: ...


@runtime_checkable
class Rewriter(Protocol):
    """Anything that turns examples into text (detoxification): one rewrite per example, in order."""
    name: str

    def rewrite(self, examples: Sequence[Example]) -> list[str]: ...


def verdict(guard: Guard, scores: Scores, row: int = 0, language: str | None = None) -> dict[str, Any]:
    """One example's decisions and scores: {task: {flagged, score, threshold}, categories: {...}}. Outputs that do
    not apply to the example (NaN: a response output of a prompt alone) are left out. `language`: the text's
    language, for per-language thresholds (the global ones otherwise); the verdict says which applied."""
    out: dict[str, Any] = {}
    own = language if language in guard.thresholds.per_language else None
    for task in guard.labels.tasks:
        p, t = float(scores[task][row]), guard.thresholds.get(task, own)
        if not np.isnan(p):
            out[task] = {"flagged": p >= t, "score": p, "threshold": t}
    if guard.thresholds.per_language:
        out["language"], out["thresholds_from"] = language, own or "global"
    for field_name in CATEGORY_FIELDS:
        codes, probs = scores.categories(field_name)
        if codes and not np.isnan(probs[row]).all():
            out[field_name] = {c: {"flagged": bool(probs[row, j] >= guard.thresholds[f"{field_name}/{c}"]),
                                   "score": float(probs[row, j])} for j, c in enumerate(codes)}
    return out


class GuardBase:
    """What every concrete guard shares: NaN for outputs that do not apply, temperatures from calibration, and
    verdicts. A subclass implements `_score` (raw probabilities, one row per example, in order)."""
    labels: LabelSpace
    thresholds: Thresholds
    name: str

    def score(self, examples: Sequence[Example], batch_size: int | None = None, show_progress: bool = False,
              calibrated: bool = True) -> Scores:
        """Probabilities for every output; with temperatures from calibration applied unless calibrated=False."""
        raw = without_absent(examples, self._score(examples, batch_size, show_progress))
        return self.thresholds.rescale(raw) if calibrated else raw

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        raise NotImplementedError

    def moderate(self, prompt: str, response: str | None = None, language: str | None = None) -> dict[str, Any]:
        return verdict(self, self.score([Example(prompt=prompt, response=response)]), 0,
                       language_of(self, prompt, language))


def language_of(guard: Guard, text: str, given: str | None = None) -> str | None:
    """The language whose thresholds apply: the one given, else (only when the guard has per-language
    thresholds) the one detected (`guardtune.language`)."""
    if given or not guard.thresholds.per_language:
        return given
    from guardtune.language import detect

    return detect(text)
