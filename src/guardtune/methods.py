"""Fine-tuning methods, one registry. A method makes some of a guard's backbone trainable (or adds an adapter);
the heads are always trainable and always saved, whatever the method.

`method.apply(model, params, context)` works on a model with a `.backbone` (the classifier guard, and the
generative guard later). Variants are flags: DoRA is LoRA with `use_dora`, QLoRA is LoRA on a 4-bit base,
rsLoRA is the `rslora` flag of any LoRA variant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from guardtune.models.backbone import block_linear_pattern, linear_names, select_blocks, top_stack, torch_dtype
from guardtune.models.trunk_cache import TrunkCache

Targets = list[str] | str | None  # None: every linear in the attention and MLP blocks; a list: those leaf names
                                  # inside the blocks; a string: a PEFT regex used as is
Layers = str | list[int] | None  # None: every block; `top:k`: the k blocks nearest the output; a list of indices


@dataclass(frozen=True)
class Context:
    total_steps: int = 1  # optimiser steps in the whole run (AdaLoRA's budget schedule needs it)
    run_dir: Path | None = None  # where PiSSA keeps its initial adapter (to convert to plain LoRA on save)


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class FreezeParams:
    top_k: int = 2  # train the top k transformer blocks (and the heads); everything below is frozen
    cache_trunk: bool = False  # record the frozen blocks' output once, skip them in later epochs


@dataclass(frozen=True)
class LoraParams:
    r: int = 16
    alpha: float | None = None  # None: 2 * r
    dropout: float = 0.05
    target_modules: Targets = None
    layers: Layers = None  # adapt only these blocks (top:k lets a dual-path guard share the rest)
    rslora: bool = False  # scale by alpha / sqrt(r) instead of alpha / r
    bias: str = "none"


@dataclass(frozen=True)
class DoraParams(LoraParams):
    # No dropout by default: with dropout, PEFT's DoRA must run the frozen base layer a second time on the
    # dropped-out input (about 1.5x LoRA's step time on CPU); without, it reuses the base output.
    dropout: float = 0.0


@dataclass(frozen=True)
class PissaParams(LoraParams):
    niter: int | None = 16  # randomised SVD iterations (fast); None: exact SVD


@dataclass(frozen=True)
class QLoraParams(LoraParams):
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


@dataclass(frozen=True)
class AdaLoraParams:
    init_r: int = 12  # every module starts at this rank ...
    target_r: int = 8  # ... and the total budget shrinks to this average rank, moved to where it matters
    alpha: float = 32
    dropout: float = 0.05
    tinit: float = 0.1  # warm-up before pruning: a fraction of the run's steps (< 1) or a step count
    tfinal: float = 0.2  # final phase with ranks fixed: fraction or step count
    delta_t: int = 1  # optimiser steps between budget updates
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    target_modules: Targets = None
    layers: Layers = None  # adapt only these blocks (top:k lets a dual-path guard share the rest)


@dataclass(frozen=True)
class IA3Params:
    target_modules: Targets = None  # None: PEFT's defaults for the architecture
    feedforward_modules: list[str] | None = None


@dataclass(frozen=True)
class VeraParams:
    r: int = 256
    d_initial: float = 0.1
    dropout: float = 0.0
    target_modules: Targets = None
    layers: Layers = None  # adapt only these blocks (top:k lets a dual-path guard share the rest)


@dataclass(frozen=True)
class LycorisParams:  # LoHa and LoKr
    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target_modules: Targets = None
    layers: Layers = None  # adapt only these blocks (top:k lets a dual-path guard share the rest)


@dataclass(frozen=True)
class Method:
    params: type
    apply: Callable[[nn.Module, Any, Context], None]
    peft: bool = True  # saved as a PEFT adapter directory; otherwise the trained backbone tensors are saved
    quantization: Callable[[Any], Any] | None = None  # a transformers quantization config for the base
    on_step: Callable[[nn.Module, int], None] | None = None  # after each optimiser step, before zero_grad
    extra_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None
    state: Callable[[nn.Module], dict] | None = None  # what a resumable checkpoint must carry besides tensors
    load_state: Callable[[nn.Module, dict], None] | None = None
    initial_adapter: bool = False  # PiSSA: keep the initial adapter so the saved one applies to the original base
    # whether switching the adapter off gives back the base model exactly (PiSSA changes the base weights; full
    # and freeze have no adapter): what a dual-path guard, which must chat as the untouched model, needs
    switchable: bool = True


# ---- full and freeze -----------------------------------------------------------------------------------------

def train_everything(model: nn.Module, params: NoParams, ctx: Context) -> None:
    model.backbone.requires_grad_(True)


def unfreeze_top_layers(model: nn.Module, params: FreezeParams, ctx: Context) -> None:
    _, layers = top_stack(model.backbone)  # an encoder-decoder's decoder: everything below it stays frozen
    if not 1 <= params.top_k <= len(layers):
        raise ValueError(f"method 'freeze': top_k must be 1..{len(layers)} for this backbone, got {params.top_k}")
    top = list(layers)[len(layers) - params.top_k:]
    model.backbone.requires_grad_(False)
    for layer in top:
        layer.requires_grad_(True)
    inside = {id(m) for layer in top for m in layer.modules()}
    model.frozen = [m for m in model.backbone.modules() if id(m) not in inside]
    if params.cache_trunk and params.top_k < len(layers):
        model.trunk = TrunkCache(model.backbone, len(layers) - params.top_k)


# ---- PEFT methods --------------------------------------------------------------------------------------------

def targets(backbone: nn.Module, given: Targets, layers: Layers = None) -> str:
    if isinstance(given, str):
        if layers is not None:
            raise ValueError("layers cannot be combined with a target_modules regex: name the blocks in the regex")
        return given
    found = linear_names(backbone)
    missing = sorted(set(given or ()) - set(found))
    if missing:
        raise ValueError(f"target module(s) {missing} are not linear layers of {type(backbone).__name__}'s blocks; "
                         f"found: {found}")
    blocks = select_blocks(backbone, layers) if layers is not None else None
    return block_linear_pattern(backbone, list(given) if given else None, blocks)


def add_peft(model: nn.Module, config: Any) -> None:
    from peft import get_peft_model

    model.backbone = get_peft_model(model.backbone, config)


def lora_config(backbone: nn.Module, p: LoraParams, **extra: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=p.r, lora_alpha=p.alpha or 2 * p.r, lora_dropout=p.dropout, bias=p.bias,
                      target_modules=targets(backbone, p.target_modules, p.layers), use_rslora=p.rslora, **extra)


def add_lora(model: nn.Module, params: LoraParams, ctx: Context, use_dora: bool = False) -> None:
    add_peft(model, lora_config(model.backbone, params, use_dora=use_dora))


PISSA_INIT = "pissa-init"


def add_pissa(model: nn.Module, params: PissaParams, ctx: Context) -> None:
    init = f"pissa_niter_{params.niter}" if params.niter else "pissa"
    add_peft(model, lora_config(model.backbone, params, init_lora_weights=init))
    if ctx.run_dir is not None:  # PEFT converts PiSSA to plain LoRA on save against this initial adapter
        config = model.backbone.peft_config["default"]
        config.init_lora_weights = True
        model.backbone.save_pretrained(str(Path(ctx.run_dir) / PISSA_INIT))
        config.init_lora_weights = init


def four_bit(params: QLoraParams) -> Any:
    if not torch.cuda.is_available():
        raise RuntimeError("method 'qlora' loads the base model in 4-bit NF4 through bitsandbytes, which needs a "
                           "CUDA GPU, and this machine has none. Use method=lora (the same adapter on a "
                           "full-precision base) here, or run qlora on a GPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise RuntimeError("method 'qlora' needs bitsandbytes: pip install 'guardtune[qlora]'") from err
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=params.quant_type,
                              bnb_4bit_use_double_quant=params.double_quant,
                              bnb_4bit_compute_dtype=torch_dtype(params.compute_dtype))


def add_qlora(model: nn.Module, params: QLoraParams, ctx: Context) -> None:
    from peft import prepare_model_for_kbit_training

    model.backbone = prepare_model_for_kbit_training(model.backbone, use_gradient_checkpointing=False)
    lora = LoraParams(**{f.name: getattr(params, f.name) for f in dataclasses.fields(LoraParams)})
    add_lora(model, lora, ctx)


def _steps(value: float, total: int) -> int:
    return int(value * total) if value < 1 else int(value)


def add_adalora(model: nn.Module, params: AdaLoraParams, ctx: Context) -> None:
    from peft import AdaLoraConfig

    add_peft(model, AdaLoraConfig(
        init_r=params.init_r, target_r=params.target_r, lora_alpha=params.alpha, lora_dropout=params.dropout,
        tinit=_steps(params.tinit, ctx.total_steps), tfinal=_steps(params.tfinal, ctx.total_steps),
        deltaT=params.delta_t, beta1=params.beta1, beta2=params.beta2, orth_reg_weight=params.orth_reg_weight,
        total_step=ctx.total_steps, target_modules=targets(model.backbone, params.target_modules, params.layers)))


def adalora_update(model: nn.Module, step: int) -> None:
    model.backbone.base_model.update_and_allocate(step)  # importance from this step's gradients; moves rank


def adalora_orthogonality(model: nn.Module, params: AdaLoraParams) -> torch.Tensor:
    """AdaLoRA's regulariser keeping P and Q near-orthogonal (PEFT adds it only to a loss the model computes)."""
    terms = []
    for name, p in model.backbone.named_parameters():
        if p.requires_grad and ("lora_A" in name or "lora_B" in name):
            cov = p @ p.T if "lora_A" in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.size(0), device=cov.device, dtype=cov.dtype)))
    return params.orth_reg_weight * torch.stack(terms).mean() if terms else torch.zeros(())


def adalora_state(model: nn.Module) -> dict:
    allocator = model.backbone.base_model.rankallocator
    return {"rank_pattern": model.backbone.peft_config["default"].rank_pattern,
            **{k: getattr(allocator, k) for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")}}


def adalora_pattern_from_weights(model: nn.Module) -> None:
    """Make the saved rank pattern match the weights in the model: when the best validation step's weights are
    restored, their pruned singular values (zero rows of lora_E) are those of that step, not of the last one, and
    a guard saved with the last step's pattern would load back with other ranks."""
    config = model.backbone.peft_config["default"]
    if not config.rank_pattern:
        return
    params = {}
    for name, p in model.backbone.base_model.model.named_parameters():
        if "lora_E" in name:
            params[name] = params[name.replace(".default", "")] = p
    config.rank_pattern = {key: (params[key].detach() != 0).view(-1).tolist() if key in params else value
                           for key, value in config.rank_pattern.items()}


def load_adalora_state(model: nn.Module, state: dict) -> None:
    allocator = model.backbone.base_model.rankallocator
    model.backbone.peft_config["default"].rank_pattern = state["rank_pattern"]
    for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        setattr(allocator, key, state[key])


def add_ia3(model: nn.Module, params: IA3Params, ctx: Context) -> None:
    from peft import IA3Config

    target = None if params.target_modules is None else targets(model.backbone, params.target_modules)
    add_peft(model, IA3Config(target_modules=target, feedforward_modules=params.feedforward_modules))


def add_vera(model: nn.Module, params: VeraParams, ctx: Context) -> None:
    from peft import VeraConfig

    add_peft(model, VeraConfig(r=params.r, d_initial=params.d_initial, vera_dropout=params.dropout,
                               target_modules=targets(model.backbone, params.target_modules, params.layers)))


def add_lycoris(model: nn.Module, params: LycorisParams, ctx: Context, kind: str) -> None:
    import peft

    config = {"loha": peft.LoHaConfig, "lokr": peft.LoKrConfig}[kind]
    add_peft(model, config(r=params.r, alpha=params.alpha, rank_dropout=params.rank_dropout,
                           module_dropout=params.module_dropout,
                           target_modules=targets(model.backbone, params.target_modules, params.layers)))


METHODS: dict[str, Method] = {
    "full": Method(NoParams, train_everything, peft=False, switchable=False),
    "freeze": Method(FreezeParams, unfreeze_top_layers, peft=False, switchable=False),
    "lora": Method(LoraParams, add_lora),
    "dora": Method(DoraParams, partial(add_lora, use_dora=True)),
    "pissa": Method(PissaParams, add_pissa, initial_adapter=True, switchable=False),
    "qlora": Method(QLoraParams, add_qlora, quantization=four_bit),
    "adalora": Method(AdaLoraParams, add_adalora, on_step=adalora_update, extra_loss=adalora_orthogonality,
                      state=adalora_state, load_state=load_adalora_state),
    "ia3": Method(IA3Params, add_ia3),
    "vera": Method(VeraParams, add_vera),
    "loha": Method(LycorisParams, partial(add_lycoris, kind="loha")),
    "lokr": Method(LycorisParams, partial(add_lycoris, kind="lokr")),
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name]


def replace_method(name: str, **changes: Any) -> Method:
    """A copy of a registered method with some fields changed (e.g. a different per-step hook)."""
    return dataclasses.replace(get(name), **changes)


def method_params(name: str, params: dict[str, Any]) -> Any:
    from guardtune.fields import coerce

    cls = get(name).params
    return cls(**coerce(cls, params, f"method {name!r}"))


def apply(name: str, model: nn.Module, params: Any, ctx: Context) -> None:
    """Apply method `name`, then make the heads trainable. A method that cannot apply says why."""
    backbone = model.backbone
    try:
        get(name).apply(model, params, ctx)
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"method {name!r} cannot be applied to {type(backbone).__name__}: {err}. Linear layers "
                         f"in its blocks: {linear_names(backbone)}; choose with method.target_modules") from err
    if hasattr(model, "head"):  # a classifier's head; a generative guard's LM head stays as the method left it
        model.head.requires_grad_(True)
    if getattr(model, "span_head", None) is not None:
        model.span_head.requires_grad_(True)
