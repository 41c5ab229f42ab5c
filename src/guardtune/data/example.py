"""`Example`: the one record type every source maps onto, and its validation.

`None` always means "not labelled" and stays `None`: it is never filled with 0, and losses and metrics
mask it out. An empty category tuple means "labelled, no category applies"; `None` means "categories not
labelled".
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

BINARY_TASKS = ("prompt_harmful", "response_harmful", "response_refusal")
CATEGORY_TASKS = ("prompt_categories", "response_categories")
TASKS = BINARY_TASKS + CATEGORY_TASKS

_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]+)?$")
Span = tuple[int, int]


class FieldError(ValueError):
    """A value that does not fit one field of `Example`; `field` names it."""

    def __init__(self, field: str, message: str, column: str | None = None):
        where = f"{field} (column {column!r})" if column and column != field else field
        super().__init__(f"{where}: {message}")
        self.field = field
        self.message = message
        self.column = column  # the source file's column, when it has another name than the field


@dataclass(frozen=True, slots=True)
class Example:
    prompt: str
    response: str | None = None
    prompt_harmful: int | None = None
    response_harmful: int | None = None
    response_refusal: int | None = None
    prompt_categories: tuple[str, ...] | None = None
    response_categories: tuple[str, ...] | None = None
    language: str = "en"
    rationale: tuple[Span, ...] | str | None = None
    rewrite: str | None = None
    source: str = ""
    id: str = ""
    group: str = ""  # items that must stay on one side of a split (translations, one prompt's responses)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        _check_text("prompt", self.prompt)
        if self.response is not None:
            _check_text("response", self.response)
        for name in BINARY_TASKS:
            _check_binary(name, getattr(self, name))
        for name in CATEGORY_TASKS:
            _check_categories(name, getattr(self, name))
        if self.response is None:
            for name in ("response_harmful", "response_refusal", "response_categories"):
                if getattr(self, name) is not None:
                    raise FieldError(name, "is labelled but the example has no response")
        if not isinstance(self.language, str) or not _LANG.match(self.language):
            raise FieldError("language", f"expected an ISO-639 code such as 'en', got {self.language!r}")
        _check_rationale(self.rationale, len(self.prompt))
        if self.rewrite is not None and not isinstance(self.rewrite, str):
            raise FieldError("rewrite", f"expected text or null, got {type(self.rewrite).__name__}")
        for name in ("source", "id", "group"):
            if not isinstance(getattr(self, name), str):
                raise FieldError(name, f"expected text, got {type(getattr(self, name)).__name__}")
        for name in ("rewrite", "rationale", "source", "id", "group"):
            if isinstance(getattr(self, name), str):
                check_unicode(name, getattr(self, name))

    def label(self, task: str) -> Any:
        return getattr(self, task)

    @property
    def labelled(self) -> bool:
        """Whether any task (binary, categories or a rationale) is labelled on this row."""
        return any(getattr(self, t) is not None for t in (*BINARY_TASKS, *CATEGORY_TASKS)) or self.rationale is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; spans become lists, empty meta is dropped."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in CATEGORY_TASKS:
            if out[name] is not None:
                out[name] = list(out[name])
        if isinstance(out["rationale"], tuple):
            out["rationale"] = [list(s) for s in out["rationale"]]
        if not out["meta"]:
            del out["meta"]
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Example:
        """Build from a dict in the guardtune schema (as written by `to_dict`); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(row) - known)
        if unknown:
            raise FieldError(unknown[0], f"unknown field; known fields: {', '.join(sorted(known))}")
        if "prompt" not in row:
            raise FieldError("prompt", "missing")
        values = dict(row)
        for name in CATEGORY_TASKS:
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        if isinstance(values.get("rationale"), list):
            values["rationale"] = _spans(values["rationale"])
        return cls(**values)

    def replace(self, **changes: Any) -> Example:
        return dataclasses.replace(self, **changes)


def _check_text(name: str, value: Any) -> None:
    if value is None:
        raise FieldError(name, "is null; expected text")
    if not isinstance(value, str):
        raise FieldError(name, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise FieldError(name, "is empty")
    check_unicode(name, value)


def check_unicode(name: str, value: str) -> None:
    """Text a tokenizer can encode: no lone surrogate (a JSON "\\ud800" escape) and no NUL character, either
    of which would make the model fail on this text, or a C library cut it short."""
    if "\x00" in value:
        raise FieldError(name, f"contains a NUL character at position {value.index(chr(0))}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise FieldError(name, f"contains a lone surrogate {value[err.start]!r} at position {err.start}: "
                               "not valid Unicode text") from None


def _check_binary(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        raise FieldError(name, f"expected 0, 1 or null, got {value!r}")


def _check_categories(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(c, str) and c.strip() for c in value):
        raise FieldError(name, f"expected a list of category names or null, got {_short(value)}")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_rationale(value: Any, length: int) -> None:
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, tuple):
        raise FieldError("rationale", f"expected [start, end) spans, text or null, got {value!r}")
    for span in value:
        ok = isinstance(span, tuple) and len(span) == 2 and all(type(x) is int for x in span)
        if not ok or not 0 <= span[0] < span[1] <= length:
            raise FieldError("rationale", f"span {span!r} is not a [start, end) range inside the prompt")


def _spans(value: Any) -> tuple[Span, ...]:
    """[[start, end], ...] -> spans; anything else (a number, a flat list, nested junk) is a located error."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) and len(s) == 2 and all(type(x) is int for x in s) for s in value):
        raise FieldError("rationale", f"expected text or a list of [start, end] integer pairs, got {_short(value)}")
    return tuple((a, b) for a, b in value)


def to_binary(field_name: str, value: Any, mapping: dict[Any, int] | None = None) -> int | None:
    """Parse a raw label value: null-likes -> None; 0/1, booleans, '0'/'1', 'true'/'false' and any
    `mapping` keys -> 0/1. Anything else is an error naming the field and the accepted values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if mapping:
        key = value.strip() if isinstance(value, str) else value
        if key in mapping:
            return mapping[key]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "null", "none", "nan"):
            return None
        if text in ("0", "1", "0.0", "1.0"):
            return int(float(text))
        if text in ("true", "false"):
            return int(text == "true")
    accepted = "0, 1, true, false, null" + (", " + ", ".join(map(repr, mapping)) if mapping else "")
    raise FieldError(field_name, f"unknown label value {value!r}; accepted: {accepted}")


def split_categories(value: Any) -> list[str] | None:
    """A category cell: a list, or text separated by commas/semicolons/pipes. An empty cell is None
    (unlabelled); write `[]` or `none` for "labelled, no category"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str) and value.strip().lower() in ("[]", "none"):
        return []
    if isinstance(value, str) and not value.strip():
        return None
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # numpy arrays from parquet
        return split_categories(value.tolist())
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise FieldError("categories", f"expected a list of category names, got {_short(value)}")
        return [str(v).strip() for v in value if str(v).strip()]
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise FieldError("categories", f"expected category names, got {_short(value)}")
    return [part.strip() for part in re.split(r"[,;|]", str(value)) if part.strip()]


def categorise(field_name: str, labels: Any, scheme: str) -> tuple[str, ...] | None:
    """Parse a category cell and map it onto the canonical taxonomy; unknown labels name the field."""
    from guardtune.taxonomy import UnknownCategory, canonical

    try:
        names = split_categories(labels)
    except FieldError as err:
        raise FieldError(field_name, err.message) from None
    if names is None:
        return None
    if scheme == "any":
        return tuple(dict.fromkeys(names))
    try:
        return tuple(canonical(names, scheme))
    except UnknownCategory as err:
        raise FieldError(field_name, str(err)) from None
