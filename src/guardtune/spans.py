"""Span rationales: which characters of a prompt made it harmful.

Training labels go from character spans to tokens (`token_labels`: a token is toxic when any of its characters
is), predictions come back from tokens to characters (`char_spans`: the predicted tokens' characters, joined
across whitespace and widened to whole words, as annotators mark words and phrases). The metric is SemEval-2021
Task 5's: character-level F1 per post (a post with no gold span and no predicted span scores 1, one without the
other 0), averaged over posts, with a bootstrap interval over posts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Span = tuple[int, int]


def chars(spans: Sequence[Span]) -> set[int]:
    return {c for a, b in spans for c in range(a, b)}


def token_labels(offsets: Sequence[Span | None], spans: Sequence[Span] | None,
                 text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask) per token: 1 where a token of the prompt touches a gold span; masked where the token is
    outside the prompt, or the example has no span labels at all (`spans` None)."""
    toxic = chars(spans or ())
    targets = np.zeros(len(offsets), dtype=np.float32)
    mask = np.zeros(len(offsets), dtype=np.float32)
    if spans is None:
        return targets, mask
    for j, where in enumerate(offsets):
        if where is not None:
            mask[j] = 1.0  # a token's own leading space does not make it part of a span
            a, b = trim(text, where) if text is not None else where
            targets[j] = float(any(c in toxic for c in range(a, b)))
    return targets, mask


def trim(text: str, where: Span) -> Span:
    a, b = where
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def char_spans(text: str, offsets: Sequence[Span | None], probs: Sequence[float], threshold: float = 0.5) -> list[Span]:
    """Character spans of the tokens with probability >= threshold: each trimmed of the whitespace a tokenizer
    attaches (SentencePiece's and byte-level BPE's leading space), widened to its whole word, and joined to its
    neighbour when only whitespace lies between them."""
    picked = sorted(trim(text, where) for where, p in zip(offsets, probs) if where is not None and p >= threshold)
    spans: list[list[int]] = []
    for a, b in picked:
        if a == b:  # a token of whitespace alone (SentencePiece's "▁")
            continue
        while a > 0 and text[a - 1].isalnum():
            a -= 1
        while b < len(text) and text[b].isalnum():
            b += 1
        if spans and (a <= spans[-1][1] or text[spans[-1][1]:a].isspace()):
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return [(a, b) for a, b in spans]


def span_f1(predicted: Sequence[Span], gold: Sequence[Span]) -> float:
    """SemEval-2021 Task 5 character F1 of one post."""
    p, g = chars(predicted), chars(gold)
    if not g:
        return 1.0 if not p else 0.0
    if not p:
        return 0.0
    overlap = len(p & g)
    return 2 * overlap / (len(p) + len(g))


def span_summary(predicted: Sequence[Sequence[Span]], gold: Sequence[Sequence[Span]], draws: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Mean span F1 over posts with its 95% bootstrap interval (posts resampled)."""
    from guardtune.metrics import percentile_interval, resample_weights

    f1 = np.array([span_f1(p, g) for p, g in zip(predicted, gold)], dtype=np.float64)
    if not len(f1):
        return {"n": 0, "span_f1": None, "span_f1_ci": None}
    weights = resample_weights(len(f1), draws, seed)
    interval = percentile_interval(weights @ f1 / len(f1))
    return {"n": len(f1), "span_f1": float(f1.mean()), "span_f1_ci": interval,
            "gold_empty": int(sum(not g for g in gold)), "predicted_empty": int(sum(not p for p in predicted))}
