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
    """Decision thresholds per output (0.5 for any output not calibrated), and optional temperatures that
    rescale a guard's probabilities (sigmoid(logit(p) / T)); both saved in the run as thresholds.json."""
    values: dict[str, float] = field(default_factory=dict)
    default: float = 0.5
    temperature: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # how they were chosen: strategy, data, date

    def __getitem__(self, output: str) -> float:
        return self.values.get(output, self.default)

    @property
    def calibrated(self) -> bool:
        return bool(self.values or self.temperature)

    def rescale(self, scores: Scores) -> Scores:
        if not self.temperature:
            return scores
        from guardtune.calibrate import scale

        probs = scores.probs.copy()
        for output, t in self.temperature.items():
            if output in scores.labels.outputs:
                j = scores.labels.index(output)
                probs[:, j] = scale(probs[:, j], t)
        return Scores(scores.labels, probs)

    def save(self, run_dir: Path) -> None:
        data = {**self.info, "default": self.default, "thresholds": self.values, "temperature": self.temperature}
        (Path(run_dir) / THRESHOLDS).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, run_dir: Path) -> Thresholds:
        path = Path(run_dir) / THRESHOLDS
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        values, temperature = dict(data.pop("thresholds", {})), dict(data.pop("temperature", {}))
        return cls(values, float(data.pop("default", 0.5)), temperature, data)


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


class GuardBase:
    """What every concrete guard shares: temperatures applied to its raw probabilities, and verdicts."""
    labels: LabelSpace
    thresholds: Thresholds
    name: str

    def score(self, examples: Sequence[Example], batch_size: int | None = None, show_progress: bool = False,
              calibrated: bool = True) -> Scores:
        """Probabilities for every output; with temperatures from calibration applied unless calibrated=False."""
        raw = self._score(examples, batch_size, show_progress)
        return self.thresholds.rescale(raw) if calibrated else raw

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        raise NotImplementedError

    def moderate(self, prompt: str, response: str | None = None) -> dict[str, Any]:
        return verdict(self, self.score([Example(prompt=prompt, response=response)]))


class ClassifierGuard(GuardBase):
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
    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        from guardtune.encoding import collate, lengths_of, token_budget_batches, tokenize
        from guardtune.ui import progress

        ids = tokenize(examples, self.tokenizer, self.max_length)
        probs = np.zeros((len(examples), len(self.labels.outputs)), dtype=np.float32)
        device = next(self.model.parameters()).device
        size = batch_size or self.batch_size
        # longest first; a batch is at most a quarter padding, so a few long texts (common in served traffic)
        # do not pad every short one to their length
        batches = token_budget_batches(lengths_of(ids), size, size * self.max_length)
        for index in progress(batches, "scoring", enabled=show_progress, unit="batch"):
            inputs = collate([ids[i] for i in index], self.tokenizer.pad_token_id)
            logits = self.model(**{k: v.to(device) for k, v in inputs.items()})
            probs[index] = torch.sigmoid(logits.float()).cpu().numpy()
        return Scores(self.labels, probs)


class GenerativeGuard(GuardBase):
    """A generative guard (a causal LM answering in guardtune's JSON format): `score` reads label-word
    probabilities in one batched pass; `generate` decodes verdicts that always parse. `shots`, when given,
    picks the few-shot demonstrations for each example (see guardtune.fewshot)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_length: int, thresholds: Thresholds | None = None,
                 name: str = "", batch_size: int = 16, shots: Any = None):
        from guardtune.models.generative import Prompter

        self.model = model.eval()
        self.labels: LabelSpace = model.labels
        self.format = model.format
        self.prompter = Prompter(model.format, tokenizer, max_length)
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.batch_size = batch_size
        self.shots = shots

    def prompt_ids(self, example: Example) -> list[int]:
        return self.prompter.prompt_ids(example, self.shots(example) if self.shots else ())

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        from guardtune.models.generative import score

        probs = score(self.model, self.prompter, examples, batch_size or self.batch_size, self.prompt_ids,
                      show_progress)
        return Scores(self.labels, probs)

    def generate(self, examples: Sequence[Example], batch_size: int | None = None,
                 show_progress: bool = False) -> list[dict[str, Any]]:
        """Constrained greedy decoding: one parsed verdict per example, e.g. {"request": "harmful",
        "request_violations": ["S1"]}, with the raw answer text under "text"."""
        from guardtune.models.generative import decode

        texts = decode(self.model, self.prompter, examples, batch_size or self.batch_size, self.prompt_ids,
                       show_progress)
        return [{**self.format.parse(text, ex.response is not None), "text": text}
                for text, ex in zip(texts, examples)]


def load(run_dir: str | Path, device: str | None = None, label_map: dict[str, str] | None = None,
         merge_adapters: bool = True) -> GuardBase:
    """A guard to score with: a guardtune run directory (a trained classifier or generative guard, a few-shot
    guard or a baseline), or `hf:<id or path>` for any Hugging Face sequence-classification checkpoint (its
    labels mapped onto tasks by `label_map`). A trained PEFT adapter is merged into the backbone's weights
    (same scores, no adapter cost per forward pass) unless `merge_adapters=False`."""
    if str(run_dir).startswith("hf:"):
        from guardtune.baselines import HFClassifierGuard

        return HFClassifierGuard(str(run_dir)[3:], label_map, device=device)
    run_dir = Path(run_dir)
    if (run_dir / "guard.json").is_file():
        from guardtune.baselines import load_baseline

        return load_baseline(run_dir, device)
    return load_run(run_dir, device, merge_adapters)


def load_run(run_dir: Path, device: str | None = None,
             merge_adapters: bool = True) -> ClassifierGuard | GenerativeGuard:
    from guardtune import config as config_mod
    from guardtune.models.backbone import load_tokenizer
    from guardtune.models.build import load_model

    if not (run_dir / "config.yaml").is_file() or not (run_dir / "labels.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished guardtune run (no config.yaml and labels.json); "
                                "train one with `guardtune train`, or give hf:<model id> for a hub classifier")
    cfg = config_mod.load(run_dir / "config.yaml")
    model = load_model(run_dir, cfg, merge=merge_adapters)
    if device:
        model.to(device)
    tokenizer = load_tokenizer(cfg.model, run_dir / "tokenizer")
    kind = GenerativeGuard if cfg.model.kind == "generative" else ClassifierGuard
    return kind(model, tokenizer, cfg.model.max_length, Thresholds.read(run_dir), name=str(run_dir),
                batch_size=cfg.training.eval_batch_size)
