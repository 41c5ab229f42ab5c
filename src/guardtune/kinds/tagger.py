"""The edit-tagger kind (`model.kind: edit_tagger`): detoxification as tagging, LaserTagger-style, on any
encoder (the embedded default all-MiniLM-L6-v2). Each source word is kept or deleted, with a phrase from a
learned vocabulary inserted before it when needed, and a phrase may be appended at the end (see edits.py).

- encode: the phrase vocabulary (`model.phrase_vocab` phrases, most frequent insertions in the training pairs)
  is learned and written into the run's config; pairs that need a phrase outside it are left out of training,
  and how many is logged.
- The rewriter realises the argmax tag of every slot: fast (one encoder pass, no decoding) and it never
  invents words outside its vocabulary. Words cut off by `max_length` are kept as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.edits import NO_PHRASE, phrase_vocabulary, realise, tag_ids, tag_pair, tags_of, words
from guardtune.guard import Thresholds
from guardtune.kinds.kind import Kind
from guardtune.kinds.rewriter import references, training_pairs, validate
from guardtune.labels import LabelSpace

IGNORE = -100


def vocabulary(cfg: Any) -> list[str]:
    return [NO_PHRASE, *(cfg.model.phrases or [])]


def slots_of(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of each text (its words split as given) and the token position of each word slot (-1 for a
    word cut off by max_length), the end slot last."""
    encoded = tokenizer([words(t) for t in texts], is_split_into_words=True, truncation=True, max_length=max_length)
    ids, slots = [], []
    for row, text in enumerate(texts):
        first: dict[int, int] = {}
        for position, word in enumerate(encoded.word_ids(row)):
            if word is not None and word not in first:
                first[word] = position
        n_words = len(words(text))
        ids.append(encoded["input_ids"][row])
        slots.append([first.get(w, -1) for w in range(n_words)] + [len(encoded["input_ids"][row]) - 1])
    return ids, slots


@dataclasses.dataclass
class TagEncoded:
    examples: Sequence[Example]
    input_ids: list[list[int]]
    slots: list[list[int]]
    tags: list[list[int]]
    lengths: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)  # logged with the run's start (pairs left out)

    def batch(self, index: list[int], pad_id: int, pad_to_multiple_of: int | None = None) -> dict:
        import torch

        from guardtune.encoding import collate

        out = collate([self.input_ids[i] for i in index], pad_id, pad_to_multiple_of)
        width = max(len(self.slots[i]) for i in index)
        slots = torch.full((len(index), width), -1, dtype=torch.long)
        tags = torch.full((len(index), width), IGNORE, dtype=torch.long)
        for row, i in enumerate(index):
            slots[row, :len(self.slots[i])] = torch.as_tensor(self.slots[i])
            real = [t if s >= 0 else IGNORE for t, s in zip(self.tags[i], self.slots[i])]  # cut-off words: no loss
            tags[row, :len(real)] = torch.as_tensor(real)
        out.update(slots=slots, tags=tags, index=list(index))
        return out


def encode_pairs(pairs: list[tuple[Example, str]], tokenizer: Any, cfg: Any,
                 keep_all: bool = False) -> tuple[TagEncoded, int]:
    """(encoded pairs, how many need a phrase outside the vocabulary). Training leaves those out; validation
    (`keep_all`) keeps every item for the chrF that picks the best step, such an item carrying no loss."""
    index = {p: k for k, p in enumerate(vocabulary(cfg))}
    kept, tags, uncovered = [], [], 0
    for ex, target in pairs:
        ids = tag_ids(tag_pair(words(ex.prompt), words(target)), index)
        uncovered += ids is None
        if ids is not None or keep_all:
            kept.append(ex)
            tags.append(ids or [IGNORE] * (len(words(ex.prompt)) + 1))
    input_ids, slots = slots_of(tokenizer, [ex.prompt for ex in kept], cfg.model.max_length)
    return TagEncoded(kept, input_ids, slots, tags, np.array([len(x) for x in input_ids])), uncovered


class TaggerRewriter:
    """A trained edit tagger: `rewrite(examples)` realises each slot's most likely tag (the Rewriter protocol)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, phrases: Sequence[str], name: str = "",
                 batch_size: int = 64):
        self.model, self.tokenizer, self.max_length = model.eval(), tokenizer, max_length
        self.labels: LabelSpace = model.labels
        self.vocabulary = [NO_PHRASE, *phrases]
        self.name, self.batch_size = name, batch_size

    def rewrite(self, examples: Sequence[Example], batch_size: int | None = None,
                show_progress: bool = False) -> list[str]:
        import torch

        from guardtune.encoding import collate, lengths_of, token_budget_batches
        from guardtune.ui import progress

        texts = [ex.prompt for ex in examples]
        ids, slots = slots_of(self.tokenizer, texts, self.max_length)
        out = [""] * len(texts)
        device = next(self.model.parameters()).device
        size = batch_size or self.batch_size
        for index in progress(token_budget_batches(lengths_of(ids), size, size * self.max_length), "rewriting",
                              enabled=show_progress, unit="batch"):
            batch = collate([ids[i] for i in index], self.tokenizer.pad_token_id)
            width = max(len(slots[i]) for i in index)
            slot = torch.full((len(index), width), -1, dtype=torch.long)
            for row, i in enumerate(index):
                slot[row, :len(slots[i])] = torch.as_tensor(slots[i])
            with torch.inference_mode():
                logits = self.model(**{k: v.to(device) for k, v in batch.items()}, slots=slot.to(device))
            best = logits.argmax(-1).cpu().tolist()
            for row, i in enumerate(index):
                chosen = [c if s >= 0 else 1 for c, s in zip(best[row], slots[i])]  # a cut-off word is kept
                out[i] = " ".join(realise(words(texts[i]), tags_of(chosen[:len(slots[i])], self.vocabulary)))
        return out


def build(cfg: Any, labels: LabelSpace, backbone: Any) -> Any:
    import torch

    from guardtune.models.tagger import EditTagger

    model = EditTagger(backbone, labels, 2 * len(vocabulary(cfg)), cfg.model.head_dropout)
    model.head.to(torch.float32)
    return model


def encode(cfg: Any, labels: LabelSpace, tokenizer: Any, data: dict) -> tuple[Any, Any, Any]:
    pairs = training_pairs(data["train"].examples, cfg)
    if cfg.model.phrases is None:  # learned once, then part of the run: a resumed or loaded run uses the same
        phrases = phrase_vocabulary([(ex.prompt, t) for ex, t in pairs], cfg.model.phrase_vocab)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, phrases=phrases))
    train, left_out = encode_pairs(pairs, tokenizer, cfg)
    train.info = {"pairs": len(pairs), "pairs_left_out": left_out,  # a phrase outside the vocabulary
                  "phrases": len(cfg.model.phrases or [])}
    validation = None
    if data.get("validation"):
        kept = [(ex, references(ex)[0]) for ex in data["validation"].examples if references(ex)]
        validation = encode_pairs(kept, tokenizer, cfg, keep_all=True)[0] if kept else None
    return cfg, train, validation


def wrap(model: Any, tokenizer: Any, cfg: Any, thresholds: Thresholds | None = None, name: str = "") -> TaggerRewriter:
    return TaggerRewriter(model, tokenizer, cfg.model.max_length, cfg.model.phrases or [], name,
                          cfg.training.eval_batch_size)


TAGGER = Kind(auto="AutoModel", max_length=128, build=build, encode=encode, wrap=wrap, validate=validate)
