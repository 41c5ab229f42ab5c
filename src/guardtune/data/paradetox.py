"""ParaDetox (English) and RuParaDetox (Russian): toxic sentences with crowd-written neutral rewrites.

`rewrite` is the first reference; all references are in `meta["references"]` for multi-reference BLEU/chrF.
English splits: `all` (the parallel corpus) and `cannot_rewrite` (sentences annotators could not detoxify:
prompt_harmful = 1 when flagged toxic_content, 0 when flagged not_toxic, otherwise None).
Russian splits: train / dev / test (test has no references upstream: rewrite None).
"""

from __future__ import annotations

import json
from pathlib import Path

from guardtune.data.example import Example, FieldError
from guardtune.data.intake import Excluded, Intake
from guardtune.data.reading import read_csv


def _parallel(row: dict, text_col: str, ref_cols: tuple[str, ...], language: str, source: str) -> Example:
    refs = [row[c].strip() for c in ref_cols if c in row and row[c].strip()]
    return Example(prompt=row[text_col], prompt_harmful=1, rewrite=refs[0] if refs else None, language=language,
                   source=source, id=row["_id"], group=row["_id"], meta={"references": refs} if refs else {})


def _cannot_rewrite(row: dict) -> Example:
    try:
        reasons = json.loads(row["OUTPUT:reasons"])
    except json.JSONDecodeError:
        raise FieldError("OUTPUT:reasons", f"expected a JSON flag set, got {row['OUTPUT:reasons']!r}") from None
    text = row["INPUT:toxic_comment"].strip().strip('"').strip()
    if not text:
        raise Excluded("empty comment upstream")
    harmful = 1 if reasons.get("toxic_content") else 0 if reasons.get("not_toxic") else None
    return Example(prompt=text, prompt_harmful=harmful, language="en",
                   source="paradetox", id=row["_id"], group=row["_id"], meta={"reasons": sorted(reasons)})


def load_en(root: Path, split: str, intake: Intake) -> None:
    if split == "cannot_rewrite":
        path = root / "paradetox" / "paradetox_cannot_rewrite.tsv.xz"
        for where, row in read_csv(path, intake, delimiter="\t"):
            intake.take(where, {**row, "_id": f"paradetox:cr:{where.index}"}, _cannot_rewrite)
        return
    for where, row in read_csv(root / "paradetox" / "paradetox.tsv.xz", intake, delimiter="\t"):
        intake.take(where, {**row, "_id": f"paradetox:{where.index}"},
                    lambda r: _parallel(r, "toxic", ("neutral1", "neutral2", "neutral3"), "en", "paradetox"))


def load_ru(root: Path, split: str, intake: Intake) -> None:
    refs = ("neutral_comment1", "neutral_comment2", "neutral_comment3")
    for where, row in read_csv(root / "ru_paradetox" / f"{split}.tsv.xz", intake, delimiter="\t"):
        intake.take(where, {**row, "_id": f"ru_paradetox:{split}:{where.index}"},
                    lambda r: _parallel(r, "toxic_comment", refs, "ru", "ru_paradetox"))


def _style(row: dict) -> list[Example]:
    """One ParaDetox item as style-classification rows: the toxic source (1) and each rewrite (0), all in the
    item's group, so a grouped split keeps them on the side the item is on in `paradetox`'s own splits."""
    source = _parallel(row, "toxic", ("neutral1", "neutral2", "neutral3"), "en", "paradetox")
    refs = source.meta.get("references", [])
    return [source.replace(rewrite=None, meta={})] + [
        Example(prompt=ref, prompt_harmful=0, language="en", source="paradetox", id=f"{row['_id']}:ref{k}",
                group=row["_id"]) for k, ref in enumerate(refs, 1)]


def load_style(root: Path, split: str, intake: Intake) -> None:
    """`paradetox_style`: toxic sources and their neutral rewrites as a toxicity classification set (for the
    style-accuracy guard of detox evaluation); item for item on the same side of the split as `paradetox`."""
    for where, row in read_csv(root / "paradetox" / "paradetox.tsv.xz", intake, delimiter="\t"):
        intake.take(where, {**row, "_id": f"paradetox:{where.index}"}, _style)


def deleted_spans(source: str, target: str) -> tuple[tuple[int, int], ...]:
    """Character spans of the source's words that the rewrite deletes or replaces (case-insensitive word
    alignment, as the edit tagger's), each trimmed of surrounding punctuation; neighbours joined across
    whitespace: what a rewrite says the toxic part was."""
    import re

    from guardtune.edits import tag_pair

    found = [(m.start(), m.end()) for m in re.finditer(r"\S+", source)]
    tags = tag_pair([source[a:b] for a, b in found], target.split())
    spans: list[list[int]] = []
    for (a, b), (keep, _) in zip(found, tags):
        if keep:
            continue
        while a < b and not source[a].isalnum():
            a += 1
        while b > a and not source[b - 1].isalnum():
            b -= 1
        if a == b:
            continue
        if spans and source[spans[-1][1]:a].isspace():
            spans[-1][1] = b
        else:
            spans.append([a, b])
    return tuple((a, b) for a, b in spans)


def _spans(row: dict) -> list[Example]:
    """One ParaDetox item as span rationales: the toxic source with the words its first rewrite removes as
    spans, and the rewrite itself as a harmless text with no span."""
    source = _parallel(row, "toxic", ("neutral1", "neutral2", "neutral3"), "en", "paradetox")
    if source.rewrite is None:
        raise Excluded("no rewrite upstream")
    return [source.replace(rewrite=None, meta={}, rationale=deleted_spans(source.prompt, source.rewrite)),
            Example(prompt=source.rewrite, prompt_harmful=0, rationale=(), language="en", source="paradetox",
                    id=f"{row['_id']}:ref1", group=row["_id"])]


def load_spans(root: Path, split: str, intake: Intake) -> None:
    """`paradetox_spans`: ParaDetox pairs as span rationales (toxic sources with the deleted words as spans,
    rewrites with none), item for item on the same side of the split as `paradetox`."""
    for where, row in read_csv(root / "paradetox" / "paradetox.tsv.xz", intake, delimiter="\t"):
        intake.take(where, {**row, "_id": f"paradetox:{where.index}"}, _spans)
