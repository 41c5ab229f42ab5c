"""Train/test overlap: exact duplicates after normalisation, and near-duplicates by MinHash LSH.

Public safety sets share prompts (the same red-team lines travel between benchmarks), so a score on a test
set that overlaps the training set is inflated. Normalisation: Unicode NFKC, case-folded, punctuation and
whitespace collapsed. Near-duplicates: estimated Jaccard similarity of character 5-gram shingles >= the
threshold (default 0.8), found with datasketch's MinHashLSH and then confirmed on the MinHash estimate.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from guardtune.data.example import Example

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return _PUNCT.sub(" ", text).strip()


def shingles(text: str, k: int = 5) -> set[str]:
    text = normalise(text)
    return {text[i:i + k] for i in range(max(1, len(text) - k + 1))}


@dataclass
class Overlap:
    train_rows: int
    test_rows: int
    exact: list[tuple[int, int]] = field(default_factory=list)  # (test index, train index)
    near: list[tuple[int, int, float]] = field(default_factory=list)  # (test index, train index, similarity)

    @property
    def test_rows_exact(self) -> int:
        return len({i for i, _ in self.exact})

    @property
    def test_rows_near(self) -> int:
        return len({i for i, _, _ in self.near})


def check(train: Sequence[Example], test: Sequence[Example], threshold: float = 0.8, num_perm: int = 128,
          text: Callable[[Example], str] = lambda ex: ex.prompt, progress: Callable | None = None) -> Overlap:
    from datasketch import MinHash, MinHashLSH

    result = Overlap(len(train), len(test))
    seen: dict[str, int] = {}
    for j, ex in enumerate(train):
        seen.setdefault(normalise(text(ex)), j)
    exact_test = set()
    for i, ex in enumerate(test):
        j = seen.get(normalise(text(ex)))
        if j is not None:
            result.exact.append((i, j))
            exact_test.add(i)

    def signature(ex: Example) -> MinHash:
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(text(ex))])
        return m

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    train_sigs = []
    for j, ex in enumerate(progress(train, "hashing train") if progress else train):
        sig = signature(ex)
        train_sigs.append(sig)
        lsh.insert(j, sig)
    for i, ex in enumerate(progress(test, "hashing test") if progress else test):
        if i in exact_test:
            continue
        sig = signature(ex)
        best = max(((sig.jaccard(train_sigs[j]), j) for j in lsh.query(sig)), default=None)
        if best is not None and best[0] >= threshold:
            result.near.append((i, best[1], round(best[0], 3)))
    return result


def overlapping(rows: Sequence[Example], against: Sequence[Example], threshold: float = 0.8, num_perm: int = 128,
                text: Callable[[Example], str] = lambda ex: ex.prompt) -> set[int]:
    """The indices of `rows` that duplicate a row of `against`, exactly (after normalisation) or nearly (the
    same MinHash test as `check`): what to drop from training data so that no test row is seen in training."""
    from datasketch import MinHash, MinHashLSH

    if not rows or not against:
        return set()
    known = {normalise(text(ex)) for ex in against}
    found = {i for i, ex in enumerate(rows) if normalise(text(ex)) in known}

    def signature(ex: Example) -> MinHash:
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([s.encode("utf-8") for s in shingles(text(ex))])
        return m

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = {}
    for j, ex in enumerate(against):
        signatures[j] = signature(ex)
        lsh.insert(j, signatures[j])
    for i, ex in enumerate(rows):
        if i not in found:
            sig = signature(ex)
            if any(sig.jaccard(signatures[j]) >= threshold for j in lsh.query(sig)):
                found.add(i)
    return found
