"""The dual-path model (LoRA-Guard): one causal chat LM that also guards.

- `DualPathLM`: the chat LM (PEFT-wrapped once a method is applied) and a linear head on the base transformer's
  final state at the last real token (left or right padding alike). With adapters on it guards; with them off
  (`adapters(backbone, False)`) it is the base chat model, exactly: an adapter that can be switched off leaves
  the base weights untouched, and the head is not part of the chat path.
- Sharing: when the adapters sit only on blocks s.. of L (method.layers: top:k), blocks below s compute the same
  with adapters on or off. The guard pass then starts at block s from the states the chat pass recorded there
  (`Recorder`, `from_states`), so guarding text the chat model has read costs about k/L of a forward pass.
- `ChatTemplate`: the one input template, for training and inference: the chat template with the prompt (and
  the generation prompt: exactly what the chat model reads before answering), or with the prompt and the
  response (what it has read once it has answered).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from guardtune.data.example import Example
from guardtune.labels import LabelSpace
from guardtune.models.backbone import top_stack
from guardtune.models.classifier import GuardModule, masked_bce, pool
from guardtune.models.generative import causal_lm, encode_piece, fit_conversation, prepare_tokenizer
from guardtune.models.trunk_cache import from_states, stack_owner

Messages = list[dict[str, str]]


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting real tokens only, so that a left-padded row reads as the same row unpadded."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


class ChatTemplate:
    """Token ids of conversations in the tokenizer's chat template (a plain fallback when it has none)."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer, self.max_length = prepare_tokenizer(tokenizer), max_length

    def render(self, messages: Messages) -> list[int]:
        """A conversation ending with a user turn gets the generation prompt (what the model reads before it
        answers); one ending with an assistant turn is rendered closed."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=messages[-1]["role"] != "assistant")
        return encode_piece(self.tokenizer, text)

    def example_ids(self, example: Example) -> list[int]:
        return self.ids(example.prompt, example.response)

    def ids(self, prompt: str, response: str | None = None) -> list[int]:
        """The guard's input for a prompt (and response), shortened (the longer of the two first) to max_length.
        Any text goes, an empty answer included (a chat model may give one)."""
        return fit_conversation(lambda p, r: self.render(conversation(p, r)), self.tokenizer, prompt, response,
                                self.max_length, f"model.max_length={self.max_length}", "nothing else")


def conversation(prompt: str, response: str | None = None) -> Messages:
    return [{"role": "user", "content": prompt}] + (
        [{"role": "assistant", "content": response}] if response is not None else [])


@contextmanager
def adapters(backbone: nn.Module, enabled: bool) -> Iterator[None]:
    """Adapters on (guarding) or off (the base chat model) within the block; the previous state after it."""
    tuner = getattr(backbone, "base_model", None)
    if not hasattr(tuner, "enable_adapter_layers"):  # no adapter at all: the model is the base model
        yield
        return
    was = getattr(backbone, "_guardtune_adapters", True)
    (tuner.enable_adapter_layers if enabled else tuner.disable_adapter_layers)()
    backbone._guardtune_adapters = enabled
    try:
        yield
    finally:
        (tuner.enable_adapter_layers if was else tuner.disable_adapter_layers)()
        backbone._guardtune_adapters = was


def first_adapted_block(backbone: nn.Module) -> int:
    """The lowest block holding an adapter layer: blocks below it compute the same with adapters on or off. 0
    when an adapter sits outside the blocks (other than on the LM head, which the guard never reads)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    lm = causal_lm(backbone)
    _, layers = top_stack(lm)
    inside = {id(m) for layer in layers for m in layer.modules()}
    head = lm.get_output_embeddings()
    skip = {id(m) for m in head.modules()} if head is not None else set()
    if any(isinstance(m, BaseTunerLayer) and id(m) not in inside and id(m) not in skip for m in lm.modules()):
        return 0
    return next((i for i, layer in enumerate(layers) if any(isinstance(m, BaseTunerLayer) for m in layer.modules())),
                len(layers))


class Recorder:
    """Records the states entering block `start` on every forward call while active (one [batch, new tokens,
    dim] tensor per call: the prefill, then one per decoding step)."""

    def __init__(self, layers: nn.ModuleList, start: int):
        self.layers, self.start = layers, start
        self.chunks: list[torch.Tensor] = []
        self.recording = True

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Not recording within the block (a guard pass running the same block)."""
        self.recording = False
        try:
            yield
        finally:
            self.recording = True

    @contextmanager
    def active(self) -> Iterator[Recorder]:
        def hook(module, args, kwargs):
            if self.recording:
                self.chunks.append((args[0] if args else kwargs["hidden_states"]).detach())

        handle = self.layers[self.start].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()

    def states(self) -> torch.Tensor:
        return torch.cat(self.chunks, dim=1)


class DualPathLM(GuardModule):
    """`forward(input_ids, attention_mask)` gives a logit per output from the adapted model; with `targets` and
    `mask` (a training batch) the masked, task-balanced loss instead (as a classifier guard)."""

    def __init__(self, backbone: nn.Module, labels: LabelSpace, head_dropout: float = 0.1):
        super().__init__(backbone, labels)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(backbone.config.hidden_size, len(labels.outputs))
        self.register_buffer("groups", torch.tensor(labels.groups, dtype=torch.long), persistent=False)

    @property
    def lm(self) -> nn.Module:
        return causal_lm(self.backbone)

    def blocks(self) -> tuple[nn.Module, str, nn.ModuleList]:
        prefix, layers = top_stack(self.lm)
        owner, attr = stack_owner(self.lm, prefix)
        return owner, attr, layers

    def logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = pool(hidden, attention_mask, "last")
        return self.head(self.dropout(pooled.to(self.head.weight.dtype)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: list[int] | None = None,
                targets: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                pos_weight: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                       position_ids=positions(attention_mask), use_cache=False).last_hidden_state
        logits = self.logits(hidden, attention_mask)
        if targets is None:
            return logits
        return masked_bce(logits, targets, mask, pos_weight, self.groups)

    def logits_from(self, start: int, rows: Sequence[Sequence[int]], states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Guard logits for token rows whose states entering block `start` are known ([len(row), dim] each):
        only blocks start.. run, with adapters on. Rows are right-padded."""
        from guardtune.encoding import collate

        device = self.head.weight.device
        batch = collate(rows, 0)
        mask = batch["attention_mask"].to(device)
        hidden = states[0].new_zeros(*mask.shape, states[0].size(-1))
        hidden[mask.bool()] = torch.cat(list(states)).to(hidden.device)
        owner, attr, layers = self.blocks()
        with adapters(self.backbone, True), from_states(owner, attr, layers, start, hidden):
            out = self.lm.get_decoder()(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                                        position_ids=positions(mask), use_cache=False).last_hidden_state
        return self.logits(out, mask)

    def lower_states(self, start: int, tails: Sequence[Sequence[int]], cache: Any, cache_mask: torch.Tensor,
                     first_position: Sequence[int]) -> list[torch.Tensor]:
        """The states entering block `start` for tokens that continue the rows of a generation's `cache` (whose
        valid columns `cache_mask` marks): blocks below `start` only, which the adapters do not touch."""
        from guardtune.encoding import collate

        device = self.head.weight.device
        batch = collate(tails, 0)
        tail_mask = batch["attention_mask"].to(device)
        mask = torch.cat([cache_mask.to(device), tail_mask], dim=1)
        position_ids = torch.as_tensor(first_position, device=device).unsqueeze(1) + positions(tail_mask)
        owner, attr, layers = self.blocks()
        captured: list[torch.Tensor] = []

        def hook(module, args, output):
            captured.append((output[0] if isinstance(output, tuple) else output).detach())

        handle = layers[start - 1].register_forward_hook(hook)
        setattr(owner, attr, nn.ModuleList(list(layers)[:start]))
        try:
            self.lm.get_decoder()(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                                  position_ids=position_ids, cache=cache, use_cache=True)
        finally:
            setattr(owner, attr, layers)
            handle.remove()
        return [captured[0][row, :len(tail)] for row, tail in enumerate(tails)]
