"""Training configs: defaults, YAML with `base:`, key=value overrides, typos, and every shipped recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from guardtune import config, methods
from guardtune.data import DataSpec
from guardtune.labels import LabelSpace
from guardtune.models.build import build_model
from guardtune.models.generative import GenerativeLM
from tests.tiny import CAUSAL, family_of
from tests.trainable import check_trainable

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                 if not {"accelerate", "study", "lodo"} & set(p.parts) and p.name != "base.yaml")


def test_defaults_are_the_embedded_default_job():
    cfg = config.load()
    assert cfg.model.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.method.name == "lora" and cfg.data.train == "demo:train"


def test_overrides_are_dotted_and_typed(tmp_path):
    cfg = config.load(None, ["output_dir=runs/x", "method.r=32", "training.lr=1e-4", "method.rslora=true",
                             "data.validation=null", "training.trackers=[tensorboard]"])
    assert cfg.output_dir == "runs/x" and cfg.method.params == {"r": 32, "rslora": True}
    assert cfg.training.lr == 1e-4 and cfg.data.validation is None and cfg.training.trackers == ("tensorboard",)
    with pytest.raises(ValueError, match="not key=value"):
        config.load(None, ["method.r"])


def test_typos_fail_with_the_known_keys(tmp_path):
    with pytest.raises(KeyError, match="unknown key 'learning_rate'.*lr"):
        config.load(None, ["training.learning_rate=1e-4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: {name: x}\n")
    with pytest.raises(KeyError, match=r"bad.yaml: unknown key 'modle'"):
        config.load(bad)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        config.load(tmp_path / "missing.yaml")


def test_base_files_merge_and_a_new_method_drops_the_old_parameters(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {name: m, max_length: 64}\nmethod: {name: lora, r: 8}\n"
                                        "training: {lr: 0.1, epochs: 2}\n")
    (tmp_path / "top.yaml").write_text("base: base.yaml\nmethod: {name: freeze, top_k: 1}\ntraining: {lr: 0.2}\n")
    cfg = config.load(tmp_path / "top.yaml", ["method.cache_trunk=true"])
    assert cfg.model.max_length == 64 and cfg.training.epochs == 2 and cfg.training.lr == 0.2
    assert cfg.method.name == "freeze" and cfg.method.params == {"top_k": 1, "cache_trunk": True}


def test_saved_config_reads_back_equal(tmp_path):
    cfg = config.load(None, ["method.name=adalora", "method.init_r=8", "training.trackers=[wandb]"])
    cfg.save(tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml") == cfg


def _specs(value):
    if value in (None, "holdout"):
        return []
    if isinstance(value, dict) and "mixture" in value:
        return value["mixture"]
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT / "configs")) for p in RECIPES])
def test_every_shipped_recipe_parses_and_builds_its_tiny_equivalent(path, tiny, tiny_causal):
    cfg = config.load(path)
    for split in ("train", "validation", "test"):
        for spec in _specs(getattr(cfg.data, split)):
            DataSpec.parse(spec)  # names and keys are valid (the data itself may be on the hub)
    generative = cfg.model.kind == "generative"
    family = family_of(cfg.model.name)
    # a causal LM with its LM head
    causal = cfg.model.kind in ("generative", "dual_path") or (cfg.model.kind == "rewriter" and family in CAUSAL)
    stand_in = (tiny_causal if causal else tiny)(family)
    tiny_cfg = config.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "name": str(stand_in)}})
    labels = LabelSpace(("prompt_harmful",), ("S1", "S2"))
    if cfg.method.name == "qlora" and not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            build_model(tiny_cfg, labels, methods.Context(total_steps=20))
        return
    model = build_model(tiny_cfg, labels, methods.Context(total_steps=20))
    if generative:
        assert isinstance(model, GenerativeLM) and not hasattr(model, "head")
    elif cfg.model.kind != "rewriter":  # a rewriter's head is its LM head, inside the backbone
        assert model.head.weight.requires_grad
    check_trainable(model, cfg.method.name, cfg.method.build())


def test_shipped_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {p.name: str(load_config_from_file(str(p)).distributed_type)
             for p in (ROOT / "configs" / "accelerate").glob("*.yaml")}
    assert {"fsdp.yaml", "deepspeed-zero2.yaml", "deepspeed-zero3.yaml", "multi-gpu.yaml"} <= set(kinds)
    assert "FSDP" in kinds["fsdp.yaml"] and "DEEPSPEED" in kinds["deepspeed-zero3.yaml"]
