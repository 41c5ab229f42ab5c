"""The Guard: anything that turns examples into probabilities. `load(run_dir)` gives a trained guard back.

    guard = guardtune.load("runs/demo")
    scores = guard.score(examples)            # probabilities for every task and category, no thresholds
    guard.moderate("how do I pick a lock?")   # a verdict, using the run's thresholds (0.5 until calibrated)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from guardtune.data.example import Example
from guardtune.labels import CATEGORY_FIELDS, LabelSpace

THRESHOLDS = "thresholds.json"


@dataclass
class Scores:
    """Probabilities, one row per example and one column per output of the label space."""
    labels: LabelSpace
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.probs)

    def __getitem__(self, output: str) -> np.ndarray:
        return self.probs[:, self.labels.index(output)]

    def categories(self, field_name: str) -> tuple[tuple[str, ...], np.ndarray]:
        codes = self.labels.categories(field_name)
        return codes, np.stack([self[f"{field_name}/{c}"] for c in codes], axis=1) if codes else np.zeros((len(self), 0))


@dataclass
class Thresholds:
    """Decision thresholds per output; 0.5 for any output not calibrated."""
    values: dict[str, float] = field(default_factory=dict)
    default: float = 0.5

    def __getitem__(self, output: str) -> float:
        return self.values.get(output, self.default)

    @classmethod
    def read(cls, run_dir: Path) -> Thresholds:
        path = run_dir / THRESHOLDS
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(dict(data.get("thresholds", {})), float(data.get("default", 0.5)))


class Guard(Protocol):
    labels: LabelSpace

    def score(self, examples: Sequence[Example]) -> Scores: ...


def verdict(guard: Any, scores: Scores, row: int = 0) -> dict[str, Any]:
    """One example's decisions and scores: {task: {flagged, score, threshold}, categories: {...}}."""
    out: dict[str, Any] = {}
    for task in guard.labels.tasks:
        p, t = float(scores[task][row]), guard.thresholds[task]
        out[task] = {"flagged": p >= t, "score": p, "threshold": t}
    for field_name in CATEGORY_FIELDS:
        codes, probs = scores.categories(field_name)
        if codes:
            out[field_name] = {c: {"flagged": bool(probs[row, j] >= guard.thresholds[f"{field_name}/{c}"]),
                                   "score": float(probs[row, j])} for j, c in enumerate(codes)}
    return out


class ClassifierGuard:
    """A trained classifier guard: tokenizer + model + label space + thresholds."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_length: int, thresholds: Thresholds | None = None,
                 name: str = "", batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels: LabelSpace = model.labels
        self.max_length = max_length
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.batch_size = batch_size

    @torch.inference_mode()
    def score(self, examples: Sequence[Example], batch_size: int | None = None,
              show_progress: bool = False) -> Scores:
        from guardtune.encoding import collate, length_sorted_batches, tokenize
        from guardtune.ui import progress

        ids = tokenize(examples, self.tokenizer, self.max_length)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        probs = np.zeros((len(examples), len(self.labels.outputs)), dtype=np.float32)
        device = next(self.model.parameters()).device
        batches = length_sorted_batches(lengths, batch_size or self.batch_size)
        for index in progress(batches, "scoring", enabled=show_progress, unit="batch"):
            inputs = collate([ids[i] for i in index], self.tokenizer.pad_token_id)
            logits = self.model(**{k: v.to(device) for k, v in inputs.items()})
            probs[index] = torch.sigmoid(logits.float()).cpu().numpy()
        return Scores(self.labels, probs)

    def moderate(self, prompt: str, response: str | None = None) -> dict[str, Any]:
        scores = self.score([Example(prompt=prompt, response=response)])
        return verdict(self, scores)


def load(run_dir: str | Path, device: str | None = None) -> ClassifierGuard:
    """The guard trained into `run_dir` (see `guardtune.models.build` for what the directory holds)."""
    from guardtune import config as config_mod
    from guardtune.models.backbone import load_tokenizer
    from guardtune.models.build import load_classifier

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "labels.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished guardtune run (no config.yaml and labels.json); "
                                "train one with `guardtune train`")
    cfg = config_mod.load(run_dir / "config.yaml")
    model = load_classifier(run_dir, cfg)
    if device:
        model.to(device)
    tokenizer = load_tokenizer(cfg.model, run_dir / "tokenizer")
    return ClassifierGuard(model, tokenizer, cfg.model.max_length, Thresholds.read(run_dir), name=str(run_dir),
                           batch_size=cfg.training.eval_batch_size)
