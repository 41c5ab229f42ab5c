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
    def __init__(self, backbone: nn.Module, labels: LabelSpace, pooling: str, head_dropout: float = 0.1):
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        super().__init__(backbone, labels)
        self.pooling = pooling
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(backbone.config.hidden_size, len(labels.outputs))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                index: list[int] | None = None) -> torch.Tensor:
        use_cache = self.trunk is not None and index is not None
        with self.trunk.around(index, attention_mask) if use_cache else nullcontext():
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        return self.head(self.dropout(pooled.to(self.head.weight.dtype)))


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
