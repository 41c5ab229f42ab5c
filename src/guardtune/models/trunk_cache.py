"""Cached frozen trunk for the `freeze` method (train only the top k blocks).

The frozen lower blocks compute the same thing for an example every epoch, so the first epoch records, per
training example, the hidden states that enter the first trainable block; later epochs run the backbone with
only the top blocks in place and feed them the recorded states. Embeddings are still looked up (cheap), so
masks and position encodings are built by the backbone's own code, for any architecture.

This is exact only when everything below is frozen and deterministic: the freeze method puts the frozen part
in eval mode (no dropout), which is also what makes cached and uncached training agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from guardtune.models.backbone import block_stacks


class TrunkCache:
    def __init__(self, backbone: nn.Module, n_frozen: int, device: str | torch.device | None = None):
        stacks = block_stacks(backbone)
        if len(stacks) > 1:
            raise ValueError("cache_trunk needs a backbone with one stack of blocks; an encoder-decoder's top "
                             "blocks also read the encoder's output. Use method.cache_trunk=false")
        prefix, self.layers = stacks[0]
        self.owner, self.attr = stack_owner(backbone, prefix)
        if not 0 < n_frozen < len(self.layers):
            raise ValueError(f"a cached trunk needs 1..{len(self.layers) - 1} frozen blocks, got {n_frozen}")
        self.n_frozen = n_frozen
        self.device = device  # where cached states live; None: where they were computed
        self.store: dict[int, torch.Tensor] = {}

    @property
    def first_trainable(self) -> nn.Module:
        return self.layers[self.n_frozen]

    @contextmanager
    def around(self, index: list[int], attention_mask: torch.Tensor) -> Iterator[None]:
        real = attention_mask.bool()
        if all(i in self.store for i in index):
            yield from self._replay(index, real)
        else:
            yield from self._record(index, real)

    def _record(self, index: list[int], real: torch.Tensor) -> Iterator[None]:
        lengths = real.sum(dim=1).tolist()

        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            states = hidden[real].detach()
            if self.device is not None:
                states = states.to(self.device)
            self.store.update(zip(index, torch.split(states, lengths)))

        handle = self.first_trainable.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def _replay(self, index: list[int], real: torch.Tensor) -> Iterator[None]:
        states = torch.cat([self.store[i] for i in index]).to(real.device)
        hidden = states.new_zeros(*real.shape, states.size(-1))
        hidden[real] = states  # pad positions stay 0: they are masked out of attention and pooling
        with from_states(self.owner, self.attr, self.layers, self.n_frozen, hidden):
            yield


@contextmanager
def from_states(owner: nn.Module, attr: str, layers: nn.ModuleList, start: int, hidden: torch.Tensor) -> Iterator[None]:
    """Within the block, the backbone runs only blocks `start`.. of `layers` (owner.attr), and block `start`
    reads `hidden` (the states that would enter it) instead of what the embeddings give. Masks and position
    encodings are still built by the backbone's own code, so this works for any architecture."""
    def hook(module, args, kwargs):
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = layers[start].register_forward_pre_hook(hook, with_kwargs=True)
    setattr(owner, attr, nn.ModuleList(list(layers)[start:]))
    try:
        yield
    finally:
        setattr(owner, attr, layers)
        handle.remove()


def stack_owner(backbone: nn.Module, prefix: str) -> tuple[nn.Module, str]:
    """The module holding the block stack at `prefix`, and the stack's attribute name on it."""
    owner, _, attr = prefix.rpartition(".")
    return (backbone.get_submodule(owner) if owner else backbone), attr
