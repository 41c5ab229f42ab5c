"""Shared test setup: offline always; ../shared/data when it exists (tests that need it skip otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("GUARDTUNE_DATA_DIR", str(SHARED))


@pytest.fixture
def shared_root() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared/data is absent (looked in {SHARED}); shared-dataset tests need it")
    return SHARED


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """An empty private data root (for hub-copy fixtures), with its own datasets cache."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("GUARDTUNE_DATA_DIR", str(root))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return root


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """tiny(family) -> the directory of a tiny random backbone of that family (built once per session)."""
    from tests import tiny as tiny_models

    root = tmp_path_factory.mktemp("tiny-models")
    return lambda family: tiny_models.build(family, root / family)


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory):
    """tiny_causal(family) -> a tiny random causal LM (llama, qwen2 or phi3) with a BPE chat tokenizer."""
    from tests import tiny as tiny_models

    root = tmp_path_factory.mktemp("tiny-causal")
    return lambda family="qwen2": tiny_models.build_causal(family, root / family)


@pytest.fixture(scope="session")
def conformance_examples():
    """Examples for guardtune.testing.check_guard: demo rows plus one prompt alone and one conversation, in
    several lengths (so batches pad)."""
    from guardtune.data import load
    from guardtune.data.example import Example

    rows = list(load({"name": "demo:test", "sample": 10, "seed": 3}).examples)
    return rows + [Example(prompt="How do I pick a lock?"),
                   Example(prompt="Tell me how to make a bomb at home, step by step, with what I need.",
                           response="I can't help with that.")]
