"""The Kind record, and validation through the score path for every Guard kind (see kinds/__init__.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.guard import Guard, Rewriter, Scores
from guardtune.labels import LabelSpace

# run_on_shares(fn, items): fn applied to this process's share of items, every process's results gathered back
# into one list in the order of items (one process: fn(items))
RunOnShares = Callable[[Callable[[Sequence[Any]], list], Sequence[Any]], list]


def validate_scores(guard: Guard, examples: Sequence[Example], run_on_shares: RunOnShares) -> dict[str, Any]:
    """Validation of any Guard kind, through `guard.score` as in test and serving: AUPRC per task, their mean as
    `val_score` (what picks the best step)."""
    from guardtune.metrics import summary

    rows = run_on_shares(lambda part: list(guard.score(part, calibrated=False).probs), examples)
    probs = np.array(rows, dtype=np.float32).reshape(len(examples), len(guard.labels.outputs))
    metrics = summary(examples, Scores(guard.labels, probs))
    auprcs = [m["auprc"] for m in metrics.values() if m.get("auprc") is not None]
    mean = float(np.mean(auprcs)) if auprcs else None
    return {"val_score": mean, "val_auprc": mean,
            **{f"val_{task}_auprc": m["auprc"] for task, m in metrics.items() if "auprc" in m}}


@dataclass(frozen=True)
class Kind:
    """One kind of model. Its module (`forward(**batch)`) returns the training loss when the batch carries
    targets; what users call is what `wrap` returns, and validation goes through that same object."""
    # the transformers class the backbone loads with: AutoModel | AutoModelForCausalLM | AutoModelForSeq2SeqLM,
    # or a function of the model config choosing one (a rewriter: seq2seq or causal, by the backbone)
    auto: str | Callable[[Any], str]
    max_length: int  # default model.max_length (tokens)
    build: Callable[[Any, LabelSpace, Any], Any]  # (cfg, labels, backbone) -> module with its head, no method yet
    # (cfg, labels, tokenizer, {"train": Loaded, "validation": Loaded | None}) -> (cfg as run, train set, validation
    # set): sets with .examples, .lengths and .batch(index, pad_id, pad_to_multiple_of) -> forward's keyword args
    encode: Callable[[Any, LabelSpace, Any, dict], tuple[Any, Any, Any]]
    wrap: Callable[..., Guard | Rewriter]  # (module, tokenizer, cfg, thresholds=None, name="") -> Guard | Rewriter
    validate: Callable[[Any, Sequence[Example], RunOnShares], dict[str, Any]] = validate_scores
    merge: bool = True  # whether a PEFT adapter may be merged into the weights on load
