"""Tiny random backbones on disk, built from configs (no download): a 4-layer, 32-wide model per family, with
the bundled MiniLM tokenizer (any tokenizer will do for a random model)."""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("bert", "xlm-roberta", "llama", "qwen2", "phi3")


def tiny_config(family: str):
    from transformers import AutoConfig

    common = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=512, pad_token_id=0)
    if family in ("llama", "qwen2", "phi3"):
        common.update(num_key_value_heads=2, bos_token_id=101, eos_token_id=102)
    return AutoConfig.for_model(family, **common)


def build(family: str, directory: Path) -> Path:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from guardtune.models.backbone import resolve

    if not (directory / "config.json").exists():
        torch.manual_seed(0)
        AutoModel.from_config(tiny_config(family)).save_pretrained(directory)
        AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2")).save_pretrained(directory)
    return directory


def family_of(hub_id: str) -> str:
    """The tiny stand-in for a real backbone named in a shipped config."""
    name = hub_id.lower()
    for key, family in (("qwen", "qwen2"), ("phi", "phi3"), ("llama", "llama"), ("xlm-roberta", "xlm-roberta"),
                        ("minilm", "bert"), ("bert", "bert")):
        if key in name:
            return family
    raise ValueError(f"no tiny stand-in for {hub_id!r}; add one to tests/tiny.py")
