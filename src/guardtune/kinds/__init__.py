"""Kinds of model: how one kind is built, encoded, trained, validated, wrapped and loaded, in one module each.

    KINDS = {"classifier": CLASSIFIER, "generative": GENERATIVE}

The training loop, `guardtune.load`, eval, serve and study never ask which kind a model is: they call the
kind's functions. Adding a kind is one module here (a `Kind` value) and one line in `KINDS`; see
docs/architecture.md for a skeleton.
"""

from __future__ import annotations

from guardtune.kinds.classifier import CLASSIFIER
from guardtune.kinds.dual_path import DUAL_PATH
from guardtune.kinds.generative import GENERATIVE
from guardtune.kinds.kind import Kind, validate_scores
from guardtune.kinds.rewriter import REWRITER
from guardtune.kinds.tagger import TAGGER

KINDS: dict[str, Kind] = {"classifier": CLASSIFIER, "generative": GENERATIVE, "rewriter": REWRITER,
                          "edit_tagger": TAGGER, "dual_path": DUAL_PATH}

__all__ = ["KINDS", "Kind", "get", "validate_scores"]


def get(name: str) -> Kind:
    if name not in KINDS:
        raise KeyError(f"unknown model.kind {name!r}; choose from {', '.join(sorted(KINDS))}")
    return KINDS[name]
