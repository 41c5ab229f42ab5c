"""The rewriter kind's module: a seq2seq or causal LM whose loss is on the rewrite's tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from guardtune.models.classifier import GuardModule

IGNORE = -100


class RewriterLM(GuardModule):
    """`forward(**batch)` is the loss on the rewrite: a seq2seq model's own (labels padded with -100); a causal
    LM's cross-entropy on the positions that predict the rewrite (the prompt carries no loss)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                index: list[int] | None = None) -> torch.Tensor:
        if getattr(self.backbone.config, "is_encoder_decoder", False):
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        logits = self.backbone(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
        targets = labels[:, 1:]
        answer = targets != IGNORE
        if not answer.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[answer].float(), targets[answer])
