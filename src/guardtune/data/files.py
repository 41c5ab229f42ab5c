"""Generic local files (JSONL, CSV/TSV, Parquet; optionally compressed) with a column mapping from config.

    {path: my.csv, columns: {prompt: text, prompt_harmful: label}, labels: {prompt_harmful: {toxic: 1, ok: 0}},
     categories: canonical, language: de}

`columns` maps guardtune fields to the file's columns (fields not mapped are read from a column of the same
name when present); `labels` adds accepted raw values per binary field; `categories` names the scheme of
category cells (`canonical` = S-codes only, any scheme in `guardtune.taxonomy.SCHEMES`, or `any` to keep
every label as given); `language` is used when the file has no language column ("und" if neither).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guardtune.data.example import BINARY_TASKS, CATEGORY_TASKS, Example, FieldError, _spans, categorise, to_binary
from guardtune.data.intake import Intake
from guardtune.data.reading import MAX_LINE_BYTES, read_table

TEXT_FIELDS = ("prompt", "response", "rewrite", "id", "source", "group")


def _text(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def row_to_example(row: dict, columns: dict[str, str], labels: dict[str, dict], scheme: str,
                   language: str | None, source: str, default_id: str = "") -> Example:
    """One row in the file's columns -> an Example. An error names the schema field and, when the file calls it
    something else, the column (`prompt_harmful (column 'label'): ...`)."""
    try:
        return _convert(row, columns, labels, scheme, language, source, default_id)
    except FieldError as err:
        field = next((f for f, c in columns.items() if c == err.field), err.field)  # a column name -> its field
        raise FieldError(field, err.message, columns.get(field, err.column)) from None


def _convert(row: dict, columns: dict[str, str], labels: dict[str, dict], scheme: str,
             language: str | None, source: str, default_id: str) -> Example:
    def get(name: str) -> Any:
        return _text(row.get(columns.get(name, name)))

    if columns.get("prompt", "prompt") not in row:
        raise FieldError(columns.get("prompt", "prompt"), "missing column")
    if _text(row.get(columns.get("prompt", "prompt"))) is None:
        raise FieldError(columns.get("prompt", "prompt"), "is null; expected text")
    values: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = get(name)
        if name in ("id", "source", "group") and value is not None and (
                isinstance(value, bool) or not isinstance(value, (str, int))):
            raise FieldError(columns.get(name, name), f"expected text or a number, got {type(value).__name__}")
        if value is not None and not (name == "response" and value == ""):
            values[name] = value if name in ("prompt", "response", "rewrite") else str(value)
    for name in BINARY_TASKS:
        values[name] = to_binary(columns.get(name, name), get(name), labels.get(name))
    for name in CATEGORY_TASKS:
        raw = get(name)
        values[name] = None if raw is None else categorise(columns.get(name, name), raw, scheme)
    values["language"] = get("language") or language or "und"
    rationale = get("rationale")
    if rationale is not None:
        values["rationale"] = rationale if isinstance(rationale, str) else _spans(rationale)
    values.setdefault("source", source)
    values.setdefault("id", default_id)
    return Example(**values)


def load_file(path: str | Path, intake: Intake, columns: dict[str, str] | None = None,
              labels: dict[str, dict] | None = None, categories: str = "canonical",
              language: str | None = None, max_line_bytes: int = MAX_LINE_BYTES) -> None:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    columns, labels = dict(columns or {}), dict(labels or {})
    source = path.name.split(".")[0]
    seen: set[str] = set()
    for where, row in read_table(path, intake, max_line_bytes):
        seen.update(row)
        intake.take(where, row, lambda r, w=where: row_to_example(r, columns, labels, categories, language,
                                                                  source, f"{source}:{w.index}"))
    missing = {field: column for field, column in columns.items() if column not in seen}
    if missing and seen:  # a misspelt mapping would leave every row unlabelled, silently
        raise ValueError(f"{path}: no row has the column(s) {', '.join(f'{c!r} (for {f})' for f, c in missing.items())}"
                         f"; its columns: {', '.join(sorted(seen))}")
