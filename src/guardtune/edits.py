"""Edit tags (LaserTagger-style) for detoxification: most rewrites keep a sentence and delete or replace a few
words, so a rewrite is a tag per source word (keep or delete it, and which phrase, if any, to insert before
it) plus a phrase to append at the end. The phrase vocabulary is learned from aligned training pairs.

    tags = tag_pair(source_words, target_words)      # [(keep, phrase), ...] for len(source) + 1 slots
    realise(source_words, tags) == target_words      # whenever every phrase is in the vocabulary
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher

Tag = tuple[bool, str]  # (keep the source word, phrase inserted before it; "" for none)
NO_PHRASE = ""


def words(text: str) -> list[str]:
    return text.split()


def tag_pair(source: Sequence[str], target: Sequence[str]) -> list[Tag]:
    """The tags turning `source` into `target`: len(source) + 1 slots, the last one for a phrase at the end.
    Words are matched case-insensitively (the output keeps the source's own words)."""
    tags: list[Tag] = [(True, NO_PHRASE)] * len(source) + [(False, NO_PHRASE)]
    matcher = SequenceMatcher(None, [w.lower() for w in source], [w.lower() for w in target], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in ("delete", "replace"):
            for i in range(i1, i2):
                tags[i] = (False, NO_PHRASE)
        if op in ("insert", "replace"):
            keep, _ = tags[i1]
            tags[i1] = (keep, " ".join(target[j1:j2]))
    return tags


def realise(source: Sequence[str], tags: Sequence[Tag]) -> list[str]:
    out: list[str] = []
    for i, (keep, phrase) in enumerate(tags):
        if phrase:
            out += phrase.split()
        if keep and i < len(source):
            out.append(source[i])
    return out


def phrase_vocabulary(pairs: Sequence[tuple[str, str]], size: int) -> list[str]:
    """The `size` phrases inserted most often when aligning the pairs (most frequent first)."""
    counts: Counter = Counter()
    for source, target in pairs:
        counts.update(p for _, p in tag_pair(words(source), words(target)) if p)
    return [p for p, _ in counts.most_common(size)]


def tag_ids(tags: Sequence[Tag], phrases: dict[str, int]) -> list[int] | None:
    """Class ids (phrase index x 2 + keep) of the tags, or None when a phrase is not in the vocabulary."""
    ids = []
    for keep, phrase in tags:
        index = phrases.get(phrase) if phrase else 0
        if index is None:
            return None
        ids.append(index * 2 + int(keep))
    return ids


def tags_of(ids: Sequence[int], vocabulary: Sequence[str]) -> list[Tag]:
    """Class ids back to tags (vocabulary[0] is the empty phrase)."""
    return [(bool(i % 2), vocabulary[i // 2]) for i in ids]
