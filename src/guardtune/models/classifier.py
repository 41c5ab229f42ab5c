"""A classifier guard: backbone -> pooled vector -> one linear head with a logit per output of the LabelSpace.

All outputs are independent sigmoids (binary tasks and multi-label categories alike), so one head and one
masked loss cover every task, and a missing label simply drops out of the loss.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from guardtune.labels import LabelSpace
from guardtune.models.trunk_cache import TrunkCache

POOLINGS = ("last", "mean", "first")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """[batch, seq, dim] -> [batch, dim]. `last` is the last non-pad token whichever side was padded."""
    if how == "first":
        first = attention_mask.argmax(dim=1)  # first 1 in each row (left padding puts it past position 0)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), first]
    if how == "last":
        positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
        last = (attention_mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    if how == "mean":
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown pooling {how!r}; choose from {', '.join(POOLINGS)}")


class GuardModule(nn.Module):
    """What every guard model (classifier or generative) has for the methods and the training loop: a
    backbone, a label space, the frozen parts a method left (kept in eval mode) and an optional cached trunk."""

    def __init__(self, backbone: nn.Module, labels: LabelSpace):
        super().__init__()
        self.backbone = backbone
        self.labels = labels
        self.frozen: list[nn.Module] = []  # kept in eval mode: a frozen trunk is a fixed feature extractor
        self.trunk: TrunkCache | None = None
        # FSDP wraps each transformer block on its own: tell accelerate which classes those are
        self._no_split_modules = getattr(backbone, "_no_split_modules", None)

    def train(self, mode: bool = True) -> GuardModule:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self


class GuardClassifier(GuardModule):
    """`forward(input_ids, attention_mask)` gives a logit per output; with `targets` and `mask` (a training
    batch) it gives the masked, task-balanced loss instead. An encoder-decoder backbone (T5, BART) reads the
    text with its encoder and the same text, shifted right, with its decoder, as Hugging Face's own sequence
    classifiers do; the decoder's states are pooled."""

    def __init__(self, backbone: nn.Module, labels: LabelSpace, pooling: str, head_dropout: float = 0.1,
                 span_head: bool = False, span_weight: float = 1.0):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        super().__init__(backbone, labels)
        self.pooling = pooling
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(backbone.config.hidden_size, len(labels.outputs))
        # span rationales: a logit per token, "this token is part of what makes the text harmful" (spans.py)
        self.span_head = nn.Linear(backbone.config.hidden_size, 1) if span_head else None
        self.span_weight = span_weight
        self.register_buffer("groups", torch.tensor(labels.groups, dtype=torch.long), persistent=False)
        config = backbone.config
        self.decoder_start = (getattr(config, "decoder_start_token_id", None) or config.pad_token_id or 0
                              if getattr(config, "is_encoder_decoder", False) else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: list[int] | None = None,
                targets: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                pos_weight: torch.Tensor | None = None, span_targets: torch.Tensor | None = None,
                span_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.hidden(input_ids, attention_mask, index)
        pooled = pool(hidden, attention_mask, self.pooling)
        logits = self.head(self.dropout(pooled.to(self.head.weight.dtype)))
        if targets is None:
            return logits
        loss = masked_bce(logits, targets, mask, pos_weight, self.groups)
        if self.span_head is not None and span_targets is not None:  # rows without span labels are masked
            loss = loss + self.span_weight * masked_bce(self.token_logits(hidden), span_targets, span_mask)
        return loss

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               index: list[int] | None = None) -> torch.Tensor:
        use_cache = self.trunk is not None and index is not None
        extra = {} if self.decoder_start is None else {
            "decoder_input_ids": shift_right(input_ids, self.decoder_start), "decoder_attention_mask": attention_mask}
        with self.trunk.around(index, attention_mask) if use_cache else nullcontext():
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[batch, seq] span logits from the backbone's states (the span head's)."""
        return self.span_head(self.dropout(hidden.to(self.span_head.weight.dtype))).squeeze(-1)


def shift_right(input_ids: torch.Tensor, start: int) -> torch.Tensor:
    """The decoder's input for a sequence: the start token, then the sequence without its last token."""
    return torch.cat([input_ids.new_full((input_ids.size(0), 1), start), input_ids[:, :-1]], dim=1)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
               pos_weight: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy over the labelled (example, output) cells only. With `groups` (a task id per output,
    see `LabelSpace.groups`) each task weighs the same: a task's loss is its mean over its labelled cells, and
    the loss is the mean over tasks with any label in the batch, so 14 category outputs do not drown one
    binary task."""
    losses = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight, reduction="none")
    mask = mask.to(losses.dtype)
    if groups is None:
        return (losses * mask).sum() / mask.sum().clamp(min=1.0)
    n_groups = int(groups.max()) + 1
    per_group = torch.zeros(n_groups, device=losses.device).index_add(0, groups, (losses * mask).sum(0))
    cells = torch.zeros(n_groups, device=losses.device).index_add(0, groups, mask.sum(0))
    labelled = cells > 0
    if not labelled.any():
        return losses.sum() * 0.0
    return (per_group[labelled] / cells[labelled]).mean()
