"""The edit tagger's module: an encoder and a linear head giving each word slot a tag (keep/delete x phrase).
A word's slot is its first sub-word token; the end slot (for a phrase appended at the end) is the last token
([SEP])."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from guardtune.labels import LabelSpace
from guardtune.models.classifier import GuardModule

IGNORE = -100


class EditTagger(GuardModule):
    def __init__(self, backbone: nn.Module, labels: LabelSpace, n_tags: int, dropout: float = 0.1):
        super().__init__(backbone, labels)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, n_tags)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, slots: torch.Tensor,
                tags: torch.Tensor | None = None, index: list[int] | None = None) -> torch.Tensor:
        """slots: [batch, words + 1] token positions (-1: padding). Logits [batch, slots, tags]; with `tags`
        (a training batch, -100 where there is no slot) the cross-entropy over real slots instead."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        picked = hidden.gather(1, slots.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
        logits = self.head(self.dropout(picked.to(self.head.weight.dtype)))
        if tags is None:
            return logits
        real = tags != IGNORE
        if not real.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[real].float(), tags[real])
