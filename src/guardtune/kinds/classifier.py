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
                 name: str = "", batch_size: int = 64, prefix: str = ""):
        self.model = model.eval()
        self.prefix = prefix  # the backbone's text prefix (e5: "query: "), before every input
        self.tokenizer = tokenizer
        self.labels: LabelSpace = model.labels
        self.max_length = max_length
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.batch_size = batch_size

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        import torch

        from guardtune.encoding import score_batches, tokenize

        ids = tokenize(examples, self.tokenizer, self.max_length, self.prefix)
        device = next(self.model.parameters()).device

        @torch.inference_mode()
        def forward(batch: dict) -> np.ndarray:
            return torch.sigmoid(self.model(**{k: v.to(device) for k, v in batch.items()}).float()).cpu().numpy()

        probs = score_batches(ids, self.tokenizer.pad_token_id, forward, len(self.labels.outputs),
                              batch_size or self.batch_size, self.max_length, show_progress)
        return Scores(self.labels, probs)

    @property
    def explains(self) -> bool:
        """Whether the guard has a span head (model.span_head): `explain` gives character spans."""
        return getattr(self.model, "span_head", None) is not None

    def explain(self, examples: Sequence[Example], batch_size: int | None = None,
                threshold: float = 0.5) -> list[list[tuple[int, int]]]:
        """Per example, the [start, end) character spans of its prompt that the span head marks as what makes it
        harmful (empty when nothing is marked)."""
        import torch

        from guardtune.encoding import collate, lengths_of, token_budget_batches, tokenize_with_offsets
        from guardtune.spans import char_spans

        if not self.explains:
            raise ValueError(f"guard {self.name!r} has no span head: train it with model.span_head=true")
        ids, offsets = tokenize_with_offsets(examples, self.tokenizer, self.max_length, prefix=self.prefix)
        device = next(self.model.parameters()).device
        out: list[list[tuple[int, int]]] = [[] for _ in examples]
        size = batch_size or self.batch_size
        with torch.inference_mode():
            for index in token_budget_batches(lengths_of(ids), size, size * self.max_length):
                batch = collate([ids[i] for i in index], self.tokenizer.pad_token_id)
                hidden = self.model.hidden(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                probs = torch.sigmoid(self.model.token_logits(hidden).float()).cpu().numpy()
                for row, i in enumerate(index):
                    out[i] = char_spans(examples[i].prompt, offsets[i], probs[row, :len(ids[i])], threshold)
        return out

    def moderate(self, prompt: str, response: str | None = None, language: str | None = None) -> dict[str, Any]:
        result = super().moderate(prompt, response, language)
        if self.explains:
            result["spans"] = [{"start": a, "end": b, "text": prompt[a:b]}
                               for a, b in self.explain([Example(prompt=prompt, response=response)])[0]]
        return result


def build(cfg: Any, labels: LabelSpace, backbone: Any) -> Any:
    import torch

    from guardtune.models.backbone import is_encoder
    from guardtune.models.classifier import GuardClassifier

    config = backbone.config
    bidirectional = is_encoder(config) and not getattr(config, "is_encoder_decoder", False)
    if cfg.model.span_head and getattr(config, "is_encoder_decoder", False):
        raise ValueError("model.span_head needs an encoder or a decoder backbone: an encoder-decoder's pooled "
                         "states are its decoder's, shifted one token from the text")
    model = GuardClassifier(backbone, labels, cfg.model.pooling or ("mean" if bidirectional else "last"),
                            cfg.model.head_dropout, cfg.model.span_head, cfg.model.span_weight)
    model.head.to(torch.float32)
    if model.span_head is not None:
        model.span_head.to(torch.float32)
    return model


def encode(cfg: Any, labels: LabelSpace, tokenizer: Any, data: dict) -> tuple[Any, Any, Any]:
    from guardtune.encoding import tokenize_with_offsets
    from guardtune.models.backbone import text_prefix

    prefix = text_prefix(cfg.model)
    offsets: list[list] = []  # per split, in the order encode_targets tokenises them (train, then validation)

    def ids_of(examples: Sequence[Example]) -> list[list[int]]:
        ids, where = tokenize_with_offsets(examples, tokenizer, cfg.model.max_length, offsets=cfg.model.span_head,
                                           prefix=prefix)
        offsets.append(where)
        return ids

    cfg, train, validation = encode_targets(cfg, labels, data, ids_of)
    if cfg.model.span_head:
        for encoded, where in zip((e for e in (train, validation) if e is not None), offsets):
            add_span_labels(encoded, where)
        if not any(m.any() for m in train.span_mask):
            raise ValueError("model.span_head is on but no training example has span rationales (e.g. toxic_spans)")
    return cfg, train, validation


def add_span_labels(encoded: Any, offsets: Sequence[Sequence[Any]]) -> None:
    """Token targets and masks from each example's character-span rationale, given each token's offsets in the
    prompt (an example without spans, or with a free-text rationale, is masked out of the span loss)."""
    from guardtune.spans import token_labels

    labels = [token_labels(where, ex.rationale if isinstance(ex.rationale, tuple) else None, ex.prompt)
              for where, ex in zip(offsets, encoded.examples)]
    encoded.span_targets = [t for t, _ in labels]
    encoded.span_mask = [m for _, m in labels]


def validate(guard: ClassifierGuard, examples: Sequence[Example], run_on_shares: Any) -> dict[str, Any]:
    """Scores as for every guard; with a span head also the span F1 on examples with span rationales, which
    joins the mean that picks the best step (a span set labels one class only: its AUPRC is undefined)."""
    from guardtune.kinds.kind import validate_scores
    from guardtune.spans import span_f1

    out = validate_scores(guard, examples, run_on_shares)
    rows = [ex for ex in examples if isinstance(ex.rationale, tuple)]
    if not guard.explains or not rows:
        return out
    predicted = run_on_shares(lambda part: guard.explain(part), rows)
    f1 = float(np.mean([span_f1(p, ex.rationale) for p, ex in zip(predicted, rows)]))
    parts = [v for v in (out["val_score"], f1) if v is not None]
    return {**out, "val_span_f1": f1, "val_score": float(np.mean(parts)) if parts else None}


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
    if cfg.training.pos_weight == "per_source":
        table = source_weights(train)
        weigh = lambda encoded: rows_weight(table, encoded)  # noqa: E731
    else:
        weight = positive_weight(cfg.training.pos_weight, train)
        weigh = lambda encoded: weight  # noqa: E731
    for encoded in (train, validation):
        if encoded is not None:
            encoded.pos_weight = weigh(encoded)
    return cfg, train, validation


def _ratio(targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    positives = (targets * mask).sum(0)
    negatives = ((1 - targets) * mask).sum(0)
    return np.clip(negatives / np.maximum(positives, 1), 1.0, 10.0)


def positive_weight(setting: Any, enc: Any) -> Any:
    """None; a number for every output; or `auto`: negatives / positives per output in the training labels,
    between 1 and 10."""
    import torch

    if setting is None:
        return None
    if setting == "auto":
        return torch.tensor(_ratio(enc.targets, enc.mask), dtype=torch.float32)
    return torch.full((enc.targets.shape[1],), float(setting))


def source_weights(enc: Any) -> dict[str, np.ndarray]:
    """`per_source`: `auto` within each source of the training rows (Example.source), so that in a mixture a
    source whose positives are rare (ToxicChat: 14% toxic) keeps the weighting it would get trained alone,
    instead of the mixture's overall ratio."""
    sources = np.array([ex.source or "" for ex in enc.examples], dtype=object)
    return {name: _ratio(enc.targets[sources == name], enc.mask[sources == name]) for name in sorted(set(sources))}


def rows_weight(table: dict[str, np.ndarray], enc: Any) -> Any:
    """A weight per row and output: its source's, or 1 for a source the training rows did not have."""
    import torch

    ones = np.ones(enc.targets.shape[1])
    rows = np.array([table.get(ex.source or "", ones) for ex in enc.examples], dtype=np.float32)
    return torch.from_numpy(rows.reshape(enc.targets.shape))  # reshape: an empty split is (0, outputs)


def wrap(model: Any, tokenizer: Any, cfg: Any, thresholds: Thresholds | None = None, name: str = "") -> ClassifierGuard:
    from guardtune.models.backbone import text_prefix

    return ClassifierGuard(model, tokenizer, cfg.model.max_length, thresholds, name, cfg.training.eval_batch_size,
                           text_prefix(cfg.model))


CLASSIFIER = Kind(auto="AutoModel", max_length=256, build=build, encode=encode, wrap=wrap, validate=validate)
