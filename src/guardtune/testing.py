"""The guard contract, checked the same way for every kind (in the spirit of scikit-learn's estimator checks):

    from guardtune.testing import check_guard
    check_guard(guard, examples, reload=lambda: guardtune.load(run_dir))

Each check raises AssertionError naming the check and what broke. `examples` must hold both prompt-only
examples and examples with a response. What is checked:
- the Guard protocol, and Scores of the right labels, shape and range (probabilities; NaN only where an output
  does not apply);
- prompt-only semantics: every response output of a prompt alone is NaN and absent from its verdict;
- order and batch-size invariance: a row's scores do not depend on its neighbours;
- thresholds decide verdicts, and round-trip through thresholds.json;
- save -> load -> identical scores (with `reload`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.guard import RESPONSE_PREFIX, Guard, Scores, Thresholds

ATOL = 1e-4  # float32 scores of one row may move this much with the padding of its batch


def check_guard(guard: Any, examples: Sequence[Example], reload: Callable[[], Any] | None = None,
                atol: float = ATOL) -> Scores:
    """Run every check; returns the scores of `examples` (so a caller can compare them with a reference)."""
    examples = list(examples)
    assert any(ex.response is None for ex in examples) and any(ex.response is not None for ex in examples), \
        "check_guard needs prompt-only examples and examples with a response"
    scores = check_scores(guard, examples)
    check_prompt_only(guard, examples, scores)
    check_order_invariance(guard, examples, scores, atol)
    check_batch_size_invariance(guard, examples, scores, atol)
    check_thresholds(guard, examples, scores)
    if reload is not None:
        check_save_load(guard, examples, scores, reload, atol)
    return scores


def applicable(examples: Sequence[Example], outputs: Sequence[str]) -> np.ndarray:
    """[examples, outputs]: does the output apply to the example (a response output needs a response)?"""
    alone = np.array([ex.response is None for ex in examples])
    about_response = np.array([o.startswith(RESPONSE_PREFIX) for o in outputs])
    return ~(alone[:, None] & about_response[None, :])


def check_scores(guard: Any, examples: Sequence[Example]) -> Scores:
    assert isinstance(guard, Guard), f"{type(guard).__name__} does not satisfy the Guard protocol"
    scores = guard.score(examples)
    assert isinstance(scores, Scores), f"score returned {type(scores).__name__}, not Scores"
    assert scores.labels == guard.labels, "scores carry another label space than the guard"
    assert scores.probs.shape == (len(examples), len(guard.labels.outputs)), \
        f"scores have shape {scores.probs.shape}, expected {(len(examples), len(guard.labels.outputs))}"
    assert np.issubdtype(scores.probs.dtype, np.floating), f"scores are {scores.probs.dtype}, not floats"
    mask = applicable(examples, guard.labels.outputs)
    values = scores.probs[mask]
    assert np.isfinite(values).all(), "an output that applies has no finite score"
    assert ((values >= 0) & (values <= 1)).all(), f"scores outside [0, 1]: {values.min()} .. {values.max()}"
    return scores


def check_prompt_only(guard: Any, examples: Sequence[Example], scores: Scores) -> None:
    mask = applicable(examples, guard.labels.outputs)
    assert np.isnan(scores.probs[~mask]).all(), "a prompt without a response has scores on response outputs"
    alone = next(ex for ex in examples if ex.response is None)
    verdict = guard.moderate(alone.prompt)
    leaked = sorted(k for k in verdict if k.startswith(RESPONSE_PREFIX))
    assert not leaked, f"the verdict of a prompt alone has response outputs: {leaked}"
    with_response = next(ex for ex in examples if ex.response is not None)
    verdict = guard.moderate(with_response.prompt, with_response.response)
    expected = {t for t in guard.labels.tasks}
    assert expected <= set(verdict), f"the verdict of a conversation lacks {sorted(expected - set(verdict))}"


def check_order_invariance(guard: Any, examples: Sequence[Example], scores: Scores, atol: float) -> None:
    reversed_scores = guard.score(examples[::-1]).probs[::-1]
    np.testing.assert_allclose(reversed_scores, scores.probs, atol=atol, err_msg="scores depend on the order")


def check_batch_size_invariance(guard: Any, examples: Sequence[Example], scores: Scores, atol: float) -> None:
    for size in (1, len(examples)):
        np.testing.assert_allclose(guard.score(examples, batch_size=size).probs, scores.probs, atol=atol,
                                   err_msg=f"scores change with batch_size={size}")


def check_thresholds(guard: Any, examples: Sequence[Example], scores: Scores) -> None:
    task = guard.labels.tasks[0]
    row = next(i for i, ex in enumerate(examples) if not np.isnan(scores[task][i]))
    p = float(scores[task][row])
    saved = guard.thresholds
    try:
        for cut, flagged in ((p - 1e-3, True), (p + 1e-3, False)):  # a margin over batch-of-one noise
            guard.thresholds = Thresholds({task: cut})
            with tempfile.TemporaryDirectory() as tmp:
                guard.thresholds.save(Path(tmp))
                assert Thresholds.read(Path(tmp)).values == {task: cut}, "thresholds do not round-trip"
            ex = examples[row]
            got = guard.moderate(ex.prompt, ex.response)[task]
            assert bool(got["flagged"]) == flagged, \
                f"{task} at score {p} with threshold {cut}: flagged={got['flagged']}, expected {flagged}"
            assert got["threshold"] == cut
    finally:
        guard.thresholds = saved


def check_save_load(guard: Any, examples: Sequence[Example], scores: Scores, reload: Callable[[], Any],
                    atol: float) -> None:
    loaded = reload()
    assert loaded.labels == guard.labels, "the loaded guard has another label space"
    np.testing.assert_allclose(loaded.score(examples).probs, scores.probs, atol=atol,
                               err_msg="save -> load changed the scores")


def check_rewriter(rewriter: Any, examples: Sequence[Example], reload: Callable[[], Any] | None = None) -> list[str]:
    """The Rewriter contract: the protocol; one string per example, in order, whatever the batch size; very
    long and non-English inputs answered too; save -> load -> the same rewrites."""
    from guardtune.guard import Rewriter

    assert isinstance(rewriter, Rewriter), f"{type(rewriter).__name__} does not satisfy the Rewriter protocol"
    examples = list(examples) + [Example(prompt=" ".join(["word"] * 3000)), Example(prompt="你这个白痴，闭嘴"),
                                 Example(prompt="ты идиот")]
    outputs = rewriter.rewrite(examples)
    assert isinstance(outputs, list) and len(outputs) == len(examples), "one rewrite per example"
    assert all(isinstance(o, str) for o in outputs), "every rewrite is a string"
    assert rewriter.rewrite(examples[::-1])[::-1] == outputs, "rewrites depend on the order"
    for size in (1, len(examples)):
        assert rewriter.rewrite(examples, batch_size=size) == outputs, f"rewrites change with batch_size={size}"
    if reload is not None:
        assert reload().rewrite(examples) == outputs, "save -> load changed the rewrites"
    return outputs
