"""Every fine-tuning method: trains, saves, loads back to identical scores; heads always saved; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

import guardtune
from guardtune import config, methods
from guardtune.data import load
from guardtune.labels import LabelSpace
from guardtune.models.build import HEADS, build_model
from guardtune.testing import check_guard
from guardtune.train import train


def tiny_cfg(run_dir, model_dir, method: str, steps: int = 6, **params) -> config.TrainConfig:
    return config.from_dict({
        "output_dir": str(run_dir),
        "model": {"name": str(model_dir), "max_length": 64, "head_dropout": 0.0},
        "method": {"name": method, **params},
        "data": {"train": {"name": "demo:train", "sample": 48, "seed": 1},
                 "validation": {"name": "demo:validation", "sample": 24, "seed": 1}, "test": None},
        "training": {"max_steps": steps, "batch_size": 8, "lr": 1e-2, "log_every": 2, "eval_every": 3},
    })


@pytest.fixture(scope="module")
def test_examples():
    return load({"name": "demo:test", "sample": 16, "seed": 3}).examples


def heads_only_scores(run_dir, cfg, examples) -> np.ndarray:
    """The saved heads on the untouched base backbone: what a guard would score if its backbone part was lost."""
    from safetensors.torch import load_file

    from guardtune.kinds.classifier import ClassifierGuard
    from guardtune.models.backbone import load_tokenizer

    labels = LabelSpace.read(run_dir)
    model = build_model(cfg, labels, apply_method=False)
    model.head.load_state_dict(load_file(str(run_dir / HEADS)))
    return ClassifierGuard(model, load_tokenizer(cfg.model), 64).score(examples).probs


CASES = [
    ("bert", "full", {}),
    ("bert", "freeze", {"top_k": 1}),
    ("bert", "freeze", {"top_k": 1, "cache_trunk": True}),
    ("bert", "lora", {"r": 4}),
    ("bert", "lora", {"r": 4, "rslora": True}),
    ("bert", "dora", {"r": 4}),
    ("bert", "pissa", {"r": 4}),
    ("bert", "adalora", {"init_r": 4, "target_r": 2}),
    ("bert", "ia3", {}),
    ("bert", "vera", {"r": 8}),
    ("bert", "loha", {"r": 4}),
    ("bert", "lokr", {"r": 4}),
    ("llama", "lora", {"r": 4}),
    ("llama", "freeze", {"top_k": 1, "cache_trunk": True}),
    ("qwen2", "dora", {"r": 4}),
    ("phi3", "lora", {"r": 4}),
    ("xlm-roberta", "adalora", {"init_r": 4, "target_r": 2}),
    ("t5", "lora", {"r": 4}),
    ("t5", "freeze", {"top_k": 1}),
    ("bart", "dora", {"r": 4}),
]


@pytest.mark.parametrize("family,method,params", CASES, ids=[f"{f}-{m}-{'-'.join(p)}" for f, m, p in CASES])
def test_save_load_gives_identical_scores(tmp_path, tiny, test_examples, conformance_examples, family, method,
                                          params):
    cfg = tiny_cfg(tmp_path / "run", tiny(family), method, **params)
    result = train(cfg, show_progress=False)
    check_guard(result.guard, conformance_examples, reload=lambda: guardtune.load(result.run_dir))
    before = result.guard.score(test_examples).probs
    loaded = guardtune.load(result.run_dir)
    after = loaded.score(test_examples).probs
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-4)
    # a PEFT adapter comes back merged into the base weights: no adapter layers left to cost time per forward
    assert not any(isinstance(m, BaseTunerLayer) for m in loaded.model.modules())
    if methods.get(method).peft:
        kept = guardtune.load(result.run_dir, merge_adapters=False)
        assert any(isinstance(m, BaseTunerLayer) for m in kept.model.modules())
        np.testing.assert_allclose(kept.score(test_examples).probs, after, atol=1e-5, rtol=1e-4)
    assert (result.run_dir / HEADS).is_file()
    assert loaded.labels == result.guard.labels
    # the trained backbone part (adapter or blocks) was saved and matters: heads alone on the base score differently
    assert np.nanmax(np.abs(heads_only_scores(result.run_dir, cfg, test_examples) - after)) > 1e-4


def test_adalora_reallocates_rank_during_training(tmp_path, tiny):
    cfg = tiny_cfg(tmp_path / "run", tiny("bert"), "adalora", steps=30, init_r=6, target_r=2, tinit=3, tfinal=6)
    seen = []
    original = methods.METHODS["adalora"].on_step

    def spy(model, step):
        original(model, step)
        seen.append({name: int((p != 0).any(dim=1).sum()) for name, p in model.backbone.named_parameters()
                     if "lora_E" in name})

    methods.METHODS["adalora"] = methods.replace_method("adalora", on_step=spy)
    try:
        result = train(cfg, show_progress=False)
    finally:
        methods.METHODS["adalora"] = methods.replace_method("adalora", on_step=original)
    assert len(seen) == 30  # the budget update ran at every optimiser step
    first, last = seen[2], seen[-1]  # step 3: warm-up done (lr > 0), pruning (after tinit) not yet begun
    assert set(first.values()) == {6}  # all modules start at init_r
    assert sum(last.values()) == 2 * len(last)  # the budget shrank to target_r on average ...
    assert len(set(last.values())) > 1  # ... and was moved between modules, not cut evenly
    saved = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["rank_pattern"], "the final rank pattern is saved with the adapter"
    # the guard with its reallocated ranks loads back (adapter resized by the pattern, then merged) unchanged
    examples = load({"name": "demo:test", "sample": 16, "seed": 3}).examples
    np.testing.assert_allclose(guardtune.load(result.run_dir).score(examples).probs,
                               result.guard.score(examples).probs, atol=1e-5, rtol=1e-4)


def test_method_that_cannot_apply_says_why(tiny):
    cfg = tiny_cfg("unused", tiny("llama"), "lora", target_modules=["query", "value"])
    labels = LabelSpace(("prompt_harmful",))
    with pytest.raises(ValueError, match=r"method 'lora' cannot be applied to LlamaModel.*q_proj"):
        build_model(cfg, labels, methods.Context())


def test_unknown_method_and_parameter_list_the_choices():
    with pytest.raises(KeyError, match="choose from.*adalora.*dora"):
        config.from_dict({"method": {"name": "lorra"}})
    with pytest.raises(KeyError, match="unknown key 'rank'.*alpha.*r"):
        config.from_dict({"method": {"name": "lora", "rank": 8}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown where CUDA is absent")
def test_qlora_without_cuda_is_a_clear_error(tiny):
    cfg = tiny_cfg("unused", tiny("llama"), "qlora")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*method=lora"):
        build_model(cfg, LabelSpace(("prompt_harmful",)), methods.Context())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA loads the base in 4-bit NF4 via bitsandbytes: CUDA only")
def test_qlora_trains_and_reloads_on_cuda(tmp_path, tiny, test_examples):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is needed for 4-bit QLoRA")
    result = train(tiny_cfg(tmp_path / "run", tiny("llama"), "qlora", r=4), show_progress=False)
    before = result.guard.score(test_examples).probs
    np.testing.assert_allclose(guardtune.load(result.run_dir).score(test_examples).probs, before, atol=1e-3)


def test_freeze_with_cached_trunk_trains_exactly_like_without(tmp_path, tiny, test_examples):
    runs = {}
    for cache in (False, True):
        cfg = tiny_cfg(tmp_path / f"run-{cache}", tiny("bert"), "freeze", steps=12, top_k=1, cache_trunk=cache)
        runs[cache] = train(cfg, show_progress=False)
    assert runs[True].guard.model.trunk.store, "the cache was filled and used"
    np.testing.assert_allclose(runs[True].guard.score(test_examples).probs,
                               runs[False].guard.score(test_examples).probs, atol=1e-5)
