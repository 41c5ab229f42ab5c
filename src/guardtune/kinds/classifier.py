"""The classifier kind: any backbone (encoder, decoder or encoder-decoder) + pooling + one linear head with a
sigmoid per output of the LabelSpace, trained with the masked, task-balanced loss of models/classifier.py.

Training sets carry targets and masks (`encoding.Encoded`); `pos_weight` (a number, or `auto` from the training
labels) weighs positives in the loss. The guard scores in padding-bounded batches, longest first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.guard import GuardBase, Scores, Thresholds
from guardtune.kinds.kind import Kind
from guardtune.labels import LabelSpace


class ClassifierGuard(GuardBase):
    """A trained classifier guard: tokenizer + model + label space + thresholds."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, thresholds: Thresholds | None = None,
                 name: str = "", batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.labels: LabelSpace = model.labels
        self.max_length = max_length
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.batch_size = batch_size

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        import torch

        from guardtune.encoding import score_batches, tokenize

        ids = tokenize(examples, self.tokenizer, self.max_length)
        device = next(self.model.parameters()).device

        @torch.inference_mode()
        def forward(batch: dict) -> np.ndarray:
            return torch.sigmoid(self.model(**{k: v.to(device) for k, v in batch.items()}).float()).cpu().numpy()

        probs = score_batches(ids, self.tokenizer.pad_token_id, forward, len(self.labels.outputs),
                              batch_size or self.batch_size, self.max_length, show_progress)
        return Scores(self.labels, probs)


def build(cfg: Any, labels: LabelSpace, backbone: Any) -> Any:
    import torch

    from guardtune.models.backbone import is_encoder
    from guardtune.models.classifier import GuardClassifier

    config = backbone.config
    bidirectional = is_encoder(config) and not getattr(config, "is_encoder_decoder", False)
    model = GuardClassifier(backbone, labels, cfg.model.pooling or ("mean" if bidirectional else "last"),
                            cfg.model.head_dropout)
    model.head.to(torch.float32)
    return model


def encode(cfg: Any, labels: LabelSpace, tokenizer: Any, data: dict) -> tuple[Any, Any, Any]:
    from guardtune.encoding import tokenize

    return encode_targets(cfg, labels, data, lambda examples: tokenize(examples, tokenizer, cfg.model.max_length))


def encode_targets(cfg: Any, labels: LabelSpace, data: dict,
                   ids_of: Callable[[Sequence[Example]], list[list[int]]]) -> tuple[Any, Any, Any]:
    """Training and validation sets of targets and label masks over the token ids `ids_of(examples)` gives (any
    kind whose module returns the masked loss of models/classifier.py), with training.pos_weight."""
    from guardtune.encoding import Encoded, lengths_of

    def split(loaded: Any) -> Encoded:
        ids = ids_of(loaded.examples)
        targets, mask = labels.targets(loaded.examples)
        return Encoded(loaded.examples, ids, targets, mask, lengths_of(ids))

    train = split(data["train"])
    validation = split(data["validation"]) if data.get("validation") else None
    weight = positive_weight(cfg.training.pos_weight, train)
    for encoded in (train, validation):
        if encoded is not None:
            encoded.pos_weight = weight
    return cfg, train, validation


def positive_weight(setting: Any, enc: Any) -> Any:
    """None; a number for every output; or `auto`: negatives / positives per output in the training labels,
    between 1 and 10."""
    import torch

    if setting is None:
        return None
    if setting == "auto":
        positives = (enc.targets * enc.mask).sum(0)
        negatives = ((1 - enc.targets) * enc.mask).sum(0)
        return torch.tensor(np.clip(negatives / np.maximum(positives, 1), 1.0, 10.0), dtype=torch.float32)
    return torch.full((enc.targets.shape[1],), float(setting))


def wrap(model: Any, tokenizer: Any, cfg: Any, thresholds: Thresholds | None = None, name: str = "") -> ClassifierGuard:
    return ClassifierGuard(model, tokenizer, cfg.model.max_length, thresholds, name, cfg.training.eval_batch_size)


CLASSIFIER = Kind(auto="AutoModel", max_length=256, build=build, encode=encode, wrap=wrap)
