"""From examples to model inputs, one way for training and inference alike: the input template, tokenisation
without padding, length-grouped (training) or length-sorted (inference) batches, and dynamic padding to the
longest sequence in each batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from guardtune.data.example import Example


def template(example: Example, prefix: str = "") -> tuple[str, str | None]:
    """The classifier's input: the prompt, and the response as a second segment when there is one. A tokenizer
    joins the two its own way (BERT: [SEP]); truncation shortens the longer segment first, so a long prompt
    cannot push the response out of the window. `prefix`: the backbone's own text prefix (e5: "query: "),
    before everything (`backbone.text_prefix`)."""
    prompt = f"{prefix}{PROMPT_PREFIX}{example.prompt}"
    return prompt, (f"Assistant: {example.response}" if example.response is not None else None)


PROMPT_PREFIX = "User: "


def tokenize(examples: Sequence[Example], tokenizer, max_length: int, prefix: str = "") -> list[list[int]]:
    """Token ids for each example, unpadded, in order."""
    return tokenize_with_offsets(examples, tokenizer, max_length, offsets=False, prefix=prefix)[0]


def tokenize_with_offsets(examples: Sequence[Example], tokenizer, max_length: int, offsets: bool = True,
                          prefix: str = "") -> tuple[list[list[int]], list[list[tuple[int, int] | None]]]:
    """(token ids, and with `offsets` each token's [start, end) characters in the example's prompt, None for a
    token outside it: special tokens, the template's prefix, the response). Ids are those `tokenize` gives."""
    ids: list[list[int] | None] = [None] * len(examples)
    where: list[list[tuple[int, int] | None]] = [[] for _ in examples]
    pairs = [template(ex, prefix) for ex in examples]
    single = [i for i, (_, response) in enumerate(pairs) if response is None]
    double = [i for i, (_, response) in enumerate(pairs) if response is not None]
    shift = len(prefix) + len(PROMPT_PREFIX)
    for index, second, truncation in ((single, False, True), (double, True, "longest_first")):
        if not index:
            continue
        texts = ([pairs[i][0] for i in index],) + (([pairs[i][1] for i in index],) if second else ())
        enc = tokenizer(*texts, truncation=truncation, max_length=max_length, return_offsets_mapping=offsets)
        for row, i in enumerate(index):
            ids[i] = enc["input_ids"][row]
            if offsets:
                segments = enc.sequence_ids(row)
                where[i] = [(max(a - shift, 0), b - shift) if seg == 0 and b > shift and b > a else None
                            for seg, (a, b) in zip(segments, enc["offset_mapping"][row])]
    return ids, where  # type: ignore[return-value]


def lengths_of(ids: Sequence[Sequence[int]]) -> np.ndarray:
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))


@dataclass
class Encoded:
    """A tokenised split with its targets and label mask, ready to batch."""
    examples: Sequence[Example]
    input_ids: list[list[int]]
    targets: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    pos_weight: torch.Tensor | None = None  # weight of positives in the loss (training.pos_weight): per output,
                                            # or per row and output (`per_source`)
    # span rationales (model.span_head): per example, a 0/1 target and a mask per token (spans.token_labels)
    span_targets: list[np.ndarray] | None = None
    span_mask: list[np.ndarray] | None = None

    def batch(self, index: list[int], pad_id: int, pad_to_multiple_of: int | None = None) -> dict:
        out = collate([self.input_ids[i] for i in index], pad_id, pad_to_multiple_of)
        out["targets"] = torch.from_numpy(self.targets[index])
        out["mask"] = torch.from_numpy(self.mask[index])
        if self.pos_weight is not None:
            out["pos_weight"] = self.pos_weight[index] if self.pos_weight.dim() == 2 else self.pos_weight
        if self.span_targets is not None:
            for key, rows in (("span_targets", self.span_targets), ("span_mask", self.span_mask)):
                padded = torch.zeros(out["input_ids"].shape, dtype=torch.float32)
                for row, i in enumerate(index):
                    padded[row, :len(rows[i])] = torch.from_numpy(rows[i])
                out[key] = padded
        out["index"] = list(index)
        return out


def collate(rows: Sequence[Sequence[int]], pad_id: int, pad_to_multiple_of: int | None = None) -> dict:
    """Right-pad to the longest row in the batch (rounded up to a multiple, on GPUs)."""
    width = max(len(r) for r in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, :len(row)] = torch.as_tensor(row, dtype=torch.long)
        attention_mask[i, :len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                           group: bool = True, pool: int = 50) -> list[list[int]]:
    """Training batches for one epoch: shuffled (seeded by seed and epoch, so a resumed run sees the same order),
    then, within pools of `pool` batches, sorted by length so that each batch pads little."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if group:
        size = batch_size * pool
        order = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, -(-len(order) // size)))])
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Inference batches: longest first, so padding is minimal and a memory problem shows up at once."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def token_budget_batches(lengths: Sequence[int] | np.ndarray, batch_size: int, max_tokens: int,
                         max_padding: float = 0.25) -> list[list[int]]:
    """Inference batches, longest first, of at most `batch_size` rows and `max_tokens` padded tokens, and with at
    most `max_padding` of each batch's tokens being padding: a few long texts get batches of their own instead
    of padding many short ones to their length."""
    lengths = np.asarray(lengths)
    batches: list[list[int]] = []
    real = 0
    for i in np.argsort(-lengths, kind="stable").tolist():
        current = batches[-1] if batches else None
        if current is not None:
            width, rows = lengths[current[0]], len(current) + 1
            padding = 1 - (real + lengths[i]) / max(width * rows, 1)
            if rows <= batch_size and width * rows <= max_tokens and padding <= max_padding:
                current.append(i)
                real += lengths[i]
                continue
        batches.append([i])
        real = lengths[i]
    return batches


def score_batches(ids: Sequence[Sequence[int]], pad_id: int, forward, width: int, batch_size: int,
                  max_length: int, show_progress: bool = False) -> np.ndarray:
    """Inference over tokenised rows: padding-bounded batches, longest first (a few long texts, common in served
    traffic, do not pad every short one to their length); `forward(batch)` gives [rows, width] numbers. The
    result is in the order of `ids`."""
    from guardtune.ui import progress

    out = np.zeros((len(ids), width), dtype=np.float32)
    batches = token_budget_batches(lengths_of(ids), batch_size, batch_size * max_length)
    for index in progress(batches, "scoring", enabled=show_progress, unit="batch"):
        out[index] = forward(collate([ids[i] for i in index], pad_id))
    return out
