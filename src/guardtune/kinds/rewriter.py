"""The rewriter kind (detoxification): a seq2seq model (T5, mT5, BART, mBART) or a causal LM (Phi-2, BLOOM,
Qwen, Llama) that turns a toxic text into a neutral one with the same meaning.

- Training pairs: the example's prompt -> its rewrite. With `model.references: each`, one pair per reference
  (ParaDetox keeps them in meta["references"]); `first` (default) takes the first. A row without a rewrite
  (ParaDetox's "cannot rewrite") is left out (`model.unrewritable: skip`, default) or trained to be copied
  (`copy`).
- Seq2seq: the encoder reads `detoxify: <text>`, the decoder learns the rewrite (the model's own loss).
- Causal: one prompt format for training and inference (`PROMPT`), loss on the rewrite's tokens only.
- `TextRewriter.rewrite(examples)`: batched greedy generation, longest first in padding-bounded batches. Every
  input gets a string.
- Validation: chrF of the rewrites against every reference (sacreBLEU) picks the best step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.detox import references_of as references
from guardtune.guard import Thresholds
from guardtune.kinds.kind import Kind
from guardtune.labels import LabelSpace

IGNORE = -100
SEQ2SEQ_PREFIX = "detoxify: "
PROMPT = "Rewrite the text so that it is not toxic and keeps its meaning.\nText: {text}\nRewrite:"
BATCH_TOKENS_PER_ROW = 64  # generation batches hold batch_size rows or batch_size x this many padded tokens


def training_pairs(examples: Sequence[Example], cfg: Any) -> list[tuple[Example, str]]:
    """(source example, target text) pairs, by the config's `references` and `unrewritable` choices."""
    pairs = []
    for ex in examples:
        refs = references(ex)
        if not refs:
            if cfg.model.unrewritable == "copy":
                pairs.append((ex, ex.prompt))
            continue
        for ref in refs if cfg.model.references == "each" else refs[:1]:
            pairs.append((ex, ref))
    if not pairs:
        raise ValueError("no training pairs: the training data has no rewrites (a detox set such as "
                         "paradetox, or a file mapping toxic and neutral columns: --map prompt=toxic "
                         "--map rewrite=neutral); set model.unrewritable=copy to train on copies")
    return pairs


def seq2seq(config: Any) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def auto_class(model_cfg: Any) -> str:
    from guardtune.models.backbone import load_config

    return "AutoModelForSeq2SeqLM" if seq2seq(load_config(model_cfg)) else "AutoModelForCausalLM"


class Formatter:
    """Source and target token ids, one way for training and inference."""

    def __init__(self, tokenizer: Any, max_length: int, encoder_decoder: bool):
        self.tokenizer, self.max_length, self.encoder_decoder = tokenizer, max_length, encoder_decoder
        if tokenizer.eos_token_id is None and not encoder_decoder:
            raise ValueError("a causal rewriter needs a tokenizer with an end-of-sequence token (eos_token)")

    def source(self, text: str) -> list[int]:
        if self.encoder_decoder:
            return self.tokenizer(SEQ2SEQ_PREFIX + text, truncation=True, max_length=self.max_length)["input_ids"]
        # the text gives way when too long, never the instruction; half the window stays for the rewrite
        head, tail = PROMPT.split("{text}")
        fixed = self._ids(head) + self._ids(tail)
        room = max(1, self.max_length // 2 - len(fixed))
        return self._ids(head) + self._ids(text)[:room] + self._ids(tail)

    def target(self, text: str) -> list[int]:
        if self.encoder_decoder:
            return self.tokenizer(text_target=text, truncation=True, max_length=self.max_length)["input_ids"]
        return (self._ids(" " + text) + [self.tokenizer.eos_token_id])[: self.max_length // 2]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclasses.dataclass
class PairEncoded:
    """Tokenised training pairs (the interface the training loop batches)."""
    examples: Sequence[Example]
    sources: list[list[int]]
    targets: list[list[int]]
    lengths: np.ndarray
    encoder_decoder: bool

    @classmethod
    def build(cls, pairs: list[tuple[Example, str]], fmt: Formatter) -> PairEncoded:
        sources = [fmt.source(ex.prompt) for ex, _ in pairs]
        targets = [fmt.target(t) for _, t in pairs]
        lengths = np.array([len(s) + (0 if fmt.encoder_decoder else len(t)) for s, t in zip(sources, targets)])
        return cls([ex for ex, _ in pairs], sources, targets, lengths, fmt.encoder_decoder)

    def batch(self, index: list[int], pad_id: int, pad_to_multiple_of: int | None = None) -> dict:
        import torch

        from guardtune.encoding import collate

        if self.encoder_decoder:
            out = collate([self.sources[i] for i in index], pad_id, pad_to_multiple_of)
            labels = collate([self.targets[i] for i in index], pad_id)
            out["labels"] = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, IGNORE)
        else:
            rows = [self.sources[i] + self.targets[i] for i in index]
            out = collate(rows, pad_id, pad_to_multiple_of)
            labels = torch.full_like(out["input_ids"], IGNORE)
            for row, i in enumerate(index):
                start = len(self.sources[i])
                labels[row, start:start + len(self.targets[i])] = torch.as_tensor(self.targets[i])
            out["labels"] = labels
        out["index"] = list(index)
        return out


class TextRewriter:
    """A trained rewriter: `rewrite(examples)` gives one string per example (the Rewriter protocol)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, name: str = "", batch_size: int = 16,
                 max_new_tokens: int = 64):
        self.model = model.eval()
        self.labels: LabelSpace = model.labels
        self.tokenizer = tokenizer
        self.format = Formatter(tokenizer, max_length, seq2seq(model.backbone.config))
        self.name, self.batch_size, self.max_new_tokens = name, batch_size, max_new_tokens

    def rewrite(self, examples: Sequence[Example], batch_size: int | None = None,
                show_progress: bool = False) -> list[str]:
        import torch

        from guardtune.encoding import token_budget_batches
        from guardtune.ui import progress

        ids = [self.format.source(ex.prompt) for ex in examples]
        size = batch_size or self.batch_size
        out = [""] * len(examples)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        for index in progress(token_budget_batches([len(x) for x in ids], size, size * BATCH_TOKENS_PER_ROW),
                              "rewriting", enabled=show_progress, unit="batch"):
            input_ids, mask, width = padded([ids[i] for i in index], pad, left=not self.format.encoder_decoder)
            with torch.inference_mode():
                generated = self.model.backbone.generate(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=False, num_beams=1,
                    max_new_tokens=self.max_new_tokens, pad_token_id=pad,
                    eos_token_id=self.tokenizer.eos_token_id)
            new = generated if self.format.encoder_decoder else generated[:, width:]
            for row, i in enumerate(index):
                out[i] = self.tokenizer.decode(new[row], skip_special_tokens=True).strip()
        return out


def padded(rows: list[list[int]], pad: int, left: bool) -> tuple[Any, Any, int]:
    """A batch for generation: a causal LM's rows left-padded (every prompt ends where generation starts), an
    encoder's right-padded (as in training: absolute positions stay where they were)."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, ids in enumerate(rows):
        span = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, span] = torch.as_tensor(ids)
        mask[row, span] = 1
    return input_ids, mask, width


def build(cfg: Any, labels: LabelSpace, backbone: Any) -> Any:
    from guardtune.models.rewriter import RewriterLM

    return RewriterLM(backbone, labels)


def encode(cfg: Any, labels: LabelSpace, tokenizer: Any, data: dict) -> tuple[Any, Any, Any]:
    from guardtune.models.backbone import load_config

    fmt = Formatter(tokenizer, cfg.model.max_length, seq2seq(load_config(cfg.model)))
    train = PairEncoded.build(training_pairs(data["train"].examples, cfg), fmt)
    validation = None
    if data.get("validation"):
        kept = [ex for ex in data["validation"].examples if references(ex)]
        validation = PairEncoded.build([(ex, references(ex)[0]) for ex in kept], fmt) if kept else None
    return cfg, train, validation


def wrap(model: Any, tokenizer: Any, cfg: Any, thresholds: Thresholds | None = None, name: str = "") -> TextRewriter:
    return TextRewriter(model, tokenizer, cfg.model.max_length, name, cfg.training.eval_batch_size,
                        cfg.model.max_new_tokens)


def validate(rewriter: Any, examples: Sequence[Example], run_on_shares: Any) -> dict[str, Any]:
    """chrF of the rewrites against every reference (what picks the best step), and BLEU beside it."""
    from guardtune import detox

    outputs = run_on_shares(rewriter.rewrite, examples)
    refs = [references(ex) for ex in examples]
    chrf = detox.corpus_chrf(outputs, refs)
    return {"val_score": chrf, "val_chrf": chrf, "val_bleu": detox.corpus_bleu(outputs, refs)}


REWRITER = Kind(auto=auto_class, max_length=128, build=build, encode=encode, wrap=wrap, validate=validate)
