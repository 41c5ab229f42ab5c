"""Few-shot prompting of an untuned instruct model: a generative guard with no training.

Zero-shot gives the model the policy and the format only. k-shot adds k demonstrations before the
conversation, each a user turn and its answer in guardtune's format, chosen from a labelled pool:
- `random`: a seeded draw per example (the same example always gets the same demonstrations);
- `similarity`: the pool examples nearest to it (TF-IDF over character n-grams, so any language works), the
  nearest placed last, closest to the conversation it precedes.
Either way they are balanced by label: half harmful, half safe on the guard's first task.

    guardtune baseline fewshot --model Qwen/Qwen2.5-0.5B-Instruct --data toxicchat_human:train --shots 4 --out runs/fs
    guardtune eval runs/fs --data toxicchat_human:test

The guard directory holds guard.json (model, shots, selection, the pool's name) and labels.json; the pool is
read again on load.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guardtune.chat_format import ChatFormat, read_policy
from guardtune.data.example import Example
from guardtune.labels import LabelSpace

SELECTIONS = ("random", "similarity")


@dataclass
class ShotPicker:
    """Example -> its k demonstrations, from the pool examples whose every answer slot is labelled."""
    fmt: ChatFormat
    pool: Sequence[Example]
    k: int
    select: str = "similarity"
    seed: int = 0
    by_label: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        if self.select not in SELECTIONS:
            raise ValueError(f"unknown selection {self.select!r}; choose from {', '.join(SELECTIONS)}")
        self.texts = [self._text(ex) for ex in self.pool]
        task = self.fmt.labels.tasks[0] if self.fmt.labels.tasks else None
        complete = [i for i, ex in enumerate(self.pool) if all(v is not None for v in self.fmt.values(ex).values())]
        if task is None:
            self.by_label = [complete]
        else:
            self.by_label = [[i for i in complete if self.pool[i].label(task) == value] for value in (1, 0)]
        if self.k and sum(len(g) for g in self.by_label) < self.k:
            raise ValueError(f"the demonstration pool has {sum(map(len, self.by_label))} fully labelled examples, "
                             f"fewer than the {self.k} shots asked for")
        if self.select == "similarity" and self.k:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
            self.matrix = self.vectorizer.fit_transform(self.texts)

    @staticmethod
    def _text(example: Example) -> str:
        return example.prompt if example.response is None else f"{example.prompt}\n{example.response}"

    def quotas(self, groups: list[list[int]]) -> list[int]:
        """How many demonstrations each label group gives: as even as the groups allow."""
        sizes = [len(g) for g in groups]
        quota = [0] * len(sizes)
        for _ in range(min(self.k, sum(sizes))):
            open_groups = [g for g in range(len(sizes)) if quota[g] < sizes[g]]
            quota[min(open_groups, key=lambda g: (quota[g], g))] += 1
        return quota

    def __call__(self, example: Example) -> list[Example]:
        if not self.k:
            return []
        text = self._text(example)
        groups = [[i for i in g if self.texts[i] != text] for g in self.by_label]  # never itself
        quota = self.quotas(groups)
        if self.select == "random":
            rng = np.random.default_rng([self.seed, zlib.crc32(text.encode("utf-8"))])
            picked = [[group[i] for i in rng.choice(len(group), q, replace=False)] for group, q in zip(groups, quota)]
            similarity = None
        else:
            similarity = (self.matrix @ self.vectorizer.transform([text]).T).toarray().ravel()
            picked = [sorted(group, key=lambda i: -similarity[i])[:q] for group, q in zip(groups, quota)]
        chosen = _interleave(picked)
        if similarity is not None:
            chosen.sort(key=lambda i: similarity[i])  # the nearest last, right before the conversation
        return [self.pool[i] for i in chosen]


def _interleave(groups: list[list[int]]) -> list[int]:
    out: list[int] = []
    for row in range(max((len(g) for g in groups), default=0)):
        out += [g[row] for g in groups if row < len(g)]
    return out


def fewshot_guard(model_name: str, labels: LabelSpace, pool: Sequence[Example] = (), shots: int = 0,
                  select: str = "similarity", seed: int = 0, policy: Any = None, max_length: int = 2048,
                  batch_size: int = 8, device: str | None = None, dtype: str = "auto", name: str = ""):
    """A GenerativeGuard over an untuned causal LM, prompted with the policy and `shots` demonstrations."""
    from guardtune.config import ModelConfig
    from guardtune.kinds.generative import GENERATIVE, GenerativeGuard
    from guardtune.models.backbone import load_backbone, load_tokenizer
    from guardtune.models.generative import GenerativeLM

    cfg = ModelConfig(name=model_name, kind="generative", max_length=max_length, dtype=dtype)
    fmt = ChatFormat(labels, read_policy(policy, labels))
    model = GenerativeLM(load_backbone(cfg, auto=GENERATIVE.auto), labels, fmt)
    if device:
        model.to(device)
    picker = ShotPicker(fmt, list(pool), shots, select, seed) if shots else None
    return GenerativeGuard(model, load_tokenizer(cfg), max_length, name=name or f"fewshot:{model_name}",
                           batch_size=batch_size, shots=picker)


def save_fewshot(directory: str | Path, labels: LabelSpace, info: dict[str, Any]) -> Path:
    from guardtune.guard import record_kind

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record_kind(directory, "fewshot", **info)
    labels.save(directory)
    return directory


def load_fewshot(directory: Path, info: dict[str, Any], device: str | None = None):
    from guardtune.data import load_any
    from guardtune.guard import Thresholds

    pool = [ex for name in info.get("pool", []) for ex in load_any(name).examples] if info.get("shots") else []
    guard = fewshot_guard(info["model"], LabelSpace.read(directory), pool, info.get("shots", 0),
                          info.get("select", "similarity"), info.get("seed", 0), info.get("policy"),
                          info.get("max_length", 2048), info.get("batch_size", 8), device, name=directory.name)
    guard.thresholds = Thresholds.read(directory)
    return guard

