"""Building a guard model of any kind for training, saving its weights, and loading it back from a run directory.

What a run directory holds (everything needed to use the guard, nothing else needed but the base backbone):
  config.yaml           the resolved training config
  labels.json           the LabelSpace (output order of the head)
  tokenizer/            the tokenizer as used in training
  adapter/              PEFT methods: the adapter (PiSSA converted to plain LoRA on the original base)
  backbone.safetensors  full / freeze: the trained backbone tensors (all of them, or the top k blocks)
  heads.safetensors     the model's own head (`head.*`), for every method, when its kind has one (a generative
                        guard has none: its LM head is part of the backbone, frozen unless the method trains it)
  span_head.safetensors a classifier's span head (model.span_head)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from guardtune import kinds, methods
from guardtune.labels import LabelSpace
from guardtune.models.backbone import load_backbone

HEADS = "heads.safetensors"
SPAN_HEAD = "span_head.safetensors"  # a classifier's span head (model.span_head), when it has one
BACKBONE = "backbone.safetensors"
ADAPTER = "adapter"


def build_model(cfg: Any, labels: LabelSpace, ctx: methods.Context | None = None, apply_method: bool = True) -> nn.Module:
    """The guard model of `cfg.model.kind`: the backbone in the class the kind loads (quantised when the method
    says so) with the kind's head; then the method, unless loading a saved guard."""
    kind = kinds.get(cfg.model.kind)
    method = methods.get(cfg.method.name)
    params = cfg.method.build()
    quantization = method.quantization(params) if method.quantization else None
    backbone = load_backbone(cfg.model, quantization, auto=kind.auto(cfg.model) if callable(kind.auto) else kind.auto)
    if cfg.model.gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = kind.build(cfg, labels, backbone)
    if apply_method:
        methods.apply(cfg.method.name, model, params, ctx or methods.Context())
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor (adapter or backbone, and the head): what a checkpoint must restore."""
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise ValueError(f"checkpoint has tensors this model lacks (another method or backbone?): {missing[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def save_weights(model: nn.Module, run_dir: Path, method_name: str,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """Save the adapter (or trained backbone tensors), the head and the label space. `state` is the model's full
    state dict when parameters are sharded (FSDP, ZeRO-3) and had to be gathered first."""
    method = methods.get(method_name)
    gathered = state is not None
    state = state if gathered else model.state_dict()
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if method.peft:
        kwargs: dict = {"state_dict": backbone} if gathered else {}
        if method.initial_adapter:
            kwargs["path_initial_model_for_weight_conversion"] = str(run_dir / methods.PISSA_INIT)
        model.backbone.save_pretrained(str(run_dir / ADAPTER), **kwargs)
    else:
        trained = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
        save_file({n: backbone[n].detach().cpu().contiguous() for n in trained}, str(run_dir / BACKBONE))
    heads = {k.removeprefix("head."): v.detach().cpu().contiguous() for k, v in state.items() if k.startswith("head.")}
    if heads:
        save_file(heads, str(run_dir / HEADS))
    spans = {k.removeprefix("span_head."): v.detach().cpu().contiguous() for k, v in state.items()
             if k.startswith("span_head.")}
    if spans:
        save_file(spans, str(run_dir / SPAN_HEAD))
    model.labels.save(run_dir)


def load_model(run_dir: Path, cfg: Any, merge: bool = True) -> nn.Module:
    """The guard saved in `run_dir`, on the base backbone named in its config. A PEFT adapter is merged into
    the backbone's weights (`merge=True`, the default), so that scoring costs what the base model costs: an
    unmerged adapter adds its own matrix multiplies to every adapted layer. A quantised base (QLoRA) keeps its
    adapter apart, since merging into 4-bit weights would round the adapter away, and so does a kind that must
    switch its adapter off exactly (`Kind.merge=False`)."""
    labels = LabelSpace.read(run_dir)
    model = build_model(cfg, labels, apply_method=False)
    method = methods.get(cfg.method.name)
    if method.peft:
        from peft import PeftModel

        model.backbone = PeftModel.from_pretrained(model.backbone, str(run_dir / ADAPTER))
        if merge and method.quantization is None and kinds.get(cfg.model.kind).merge:
            model.backbone = model.backbone.merge_and_unload()
    else:
        state = load_file(str(run_dir / BACKBONE))
        unexpected = model.backbone.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{run_dir / BACKBONE}: tensors the backbone {cfg.model.name!r} does not have: "
                             f"{unexpected[:5]}")
    if getattr(model, "head", None) is not None:  # the kind's own head: saved for every method
        model.head.load_state_dict(load_file(str(run_dir / HEADS)))
    if getattr(model, "span_head", None) is not None:
        model.span_head.load_state_dict(load_file(str(run_dir / SPAN_HEAD)))
    return model.eval()


def init_from(model: nn.Module, source: str | Path, cfg: Any) -> list[str]:
    """Start from another run's trained weights (`training.init_from`): its adapter (the same PEFT method) or its
    trained backbone tensors (full / freeze), its head when the two runs have the same outputs, and its span
    head when both have one. The backbone named must be the same. Returns what was restored."""
    from guardtune import config as config_mod

    source = Path(source)
    if not (source / "config.yaml").is_file() or not (source / "labels.json").is_file():
        raise FileNotFoundError(f"training.init_from: {source} is not a finished guardtune run (config.yaml, "
                                "labels.json)")
    before = config_mod.load(source / "config.yaml")
    if (before.model.name, before.model.kind) != (cfg.model.name, cfg.model.kind):
        raise ValueError(f"training.init_from: {source} is a {before.model.kind} on {before.model.name!r}; this run "
                         f"is a {cfg.model.kind} on {cfg.model.name!r}")
    method = methods.get(cfg.method.name)
    if method.peft != methods.get(before.method.name).peft or (method.peft and before.method.name != cfg.method.name):
        raise ValueError(f"training.init_from: {source} was trained with {before.method.name}; continue it with the "
                         f"same method (this run: {cfg.method.name})")
    if method.initial_adapter:
        raise ValueError(f"training.init_from cannot continue {cfg.method.name}: its saved adapter is converted for "
                         "the original base; continue with lora")
    restored = []
    if method.peft:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        result = set_peft_model_state_dict(model.backbone, load_peft_weights(str(source / ADAPTER)))
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise ValueError(f"training.init_from: {source / ADAPTER} has tensors this adapter lacks (another rank "
                             f"or target modules?): {unexpected[:3]}")
        restored.append("adapter")
    elif (source / BACKBONE).is_file():
        state = load_file(str(source / BACKBONE))
        unexpected = model.backbone.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"training.init_from: {source / BACKBONE} does not fit {cfg.model.name!r}: {unexpected[:3]}")
        restored.append(f"backbone ({len(state)} tensors)")
    same_outputs = LabelSpace.read(source).outputs == model.labels.outputs
    if getattr(model, "head", None) is not None and (source / HEADS).is_file() and same_outputs:
        model.head.load_state_dict(load_file(str(source / HEADS)))
        restored.append("head")
    if getattr(model, "span_head", None) is not None and (source / SPAN_HEAD).is_file():
        model.span_head.load_state_dict(load_file(str(source / SPAN_HEAD)))
        restored.append("span head")
    return restored
