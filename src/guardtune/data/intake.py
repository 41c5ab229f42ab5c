"""Row intake: turns raw rows into `Example`s, and bad rows into errors or rejects; counts always reconcile.

    read = accepted + rejected + excluded

`excluded` is for rows an adapter leaves out by design, with a reason (e.g. text redacted upstream);
they are counted and reported, never silently dropped. With `on_bad_row="error"` (the default) the first
bad row raises `RowError` naming the file, the line or row, and the field. With `on_bad_row="skip"` it is
written to a rejects JSONL file with the same details and the run goes on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from guardtune.data.example import Example, FieldError
from guardtune.taxonomy import UnknownCategory

ON_BAD_ROW = ("error", "skip")
RAW_KEEP_CHARS = 10_000


@dataclass(frozen=True)
class Location:
    path: str
    unit: str  # "line", "row" or "item"
    index: int

    def __str__(self) -> str:
        return f"{self.path}:{self.unit} {self.index}"


class RowError(ValueError):
    """A malformed input row, located by file, line (or row) and field."""

    def __init__(self, where: Location, field: str | None, message: str, raw: Any = None, column: str | None = None):
        self.where, self.field, self.message, self.raw, self.column = where, field, message, raw, column
        named = f"{field} (column {column!r})" if column and column != field else (field or "(row)")
        super().__init__(f"{where}: {named}: {message}")

    def to_json(self) -> dict[str, Any]:
        raw = self.raw if isinstance(self.raw, (str, dict, list)) or self.raw is None else repr(self.raw)
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        out = {"file": self.where.path, self.where.unit: self.where.index, "field": self.field,
               "error": self.message, "raw": text[:RAW_KEEP_CHARS]}
        if self.column and self.column != self.field:
            out["column"] = self.column
        if len(text) > RAW_KEEP_CHARS:
            out["raw_truncated"] = True
        return out


def reject_line(record: dict[str, Any]) -> str:
    """One rejects-file line: readable UTF-8, or (when the raw text holds lone surrogates, which UTF-8 cannot
    carry) JSON escapes, so that the line is still valid JSON and the raw text survives exactly."""
    line = json.dumps(record, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True, default=str)
    # characters that str.splitlines() and some editors take for line ends, escaped: one reject, one line
    return line.translate(LINE_BREAKS)


LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029\x0b\x0c\x1c\x1d\x1e"}


class Excluded(Exception):
    """Raised by a converter for a row left out by design; the message is the reason."""


@dataclass
class IntakeReport:
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    excluded: Counter = field(default_factory=Counter)
    examples: int = 0
    rejects_path: str | None = None
    first_errors: list[str] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        return self.read == self.accepted + self.rejected + sum(self.excluded.values())

    def summary(self) -> str:
        text = f"read {self.read:,} rows: {self.accepted:,} accepted"
        if self.examples != self.accepted:
            text += f" ({self.examples:,} examples)"
        text += f", {self.rejected:,} rejected"
        if self.excluded:
            reasons = "; ".join(f"{n:,} {why}" for why, n in self.excluded.items())
            text += f", {sum(self.excluded.values()):,} excluded ({reasons})"
        if self.rejected and self.rejects_path:
            text += f"; rejects in {self.rejects_path}"
        return text

    def merge(self, other: IntakeReport) -> None:
        self.read += other.read
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.excluded.update(other.excluded)
        self.examples += other.examples
        self.first_errors.extend(other.first_errors[: max(0, 5 - len(self.first_errors))])


Converter = Callable[[Any], "Example | Iterable[Example]"]


class Intake:
    """Collects examples from one or more sources under one bad-row policy."""

    def __init__(self, on_bad_row: str = "error", rejects: str | Path | None = None):
        if on_bad_row not in ON_BAD_ROW:
            raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
        self.on_bad_row = on_bad_row
        self.rejects_path = Path(rejects) if rejects else None
        self._rejects: IO[str] | None = None
        self.examples: list[Example] = []
        self.report = IntakeReport(rejects_path=str(rejects) if rejects else None)

    def take(self, where: Location, raw: Any, convert: Converter) -> None:
        """Read one raw row: convert it, or reject it with the field that failed."""
        self.report.read += 1
        try:
            out = convert(raw)
        except Excluded as why:
            self.report.excluded[str(why)] += 1
            return
        except FieldError as err:
            self._bad(RowError(where, err.field, err.message, raw, err.column), counted=True)
            return
        except UnknownCategory as err:
            self._bad(RowError(where, "categories", str(err), raw), counted=True)
            return
        except KeyError as err:
            self._bad(RowError(where, str(err.args[0]), "missing column", raw), counted=True)
            return
        batch = [out] if isinstance(out, Example) else list(out)
        self.examples.extend(batch)
        self.report.accepted += 1
        self.report.examples += len(batch)

    def reject(self, where: Location, field: str | None, message: str, raw: Any = None) -> None:
        """A row the reader could not even parse (broken JSON/CSV, bad bytes, oversized line)."""
        self.report.read += 1
        self._bad(RowError(where, field, message, raw), counted=True)

    def _bad(self, err: RowError, counted: bool) -> None:
        if self.on_bad_row == "error":
            raise err
        self.report.rejected += counted
        if len(self.report.first_errors) < 5:
            self.report.first_errors.append(str(err))
        if self.rejects_path is not None:
            if self._rejects is None:
                self.rejects_path.parent.mkdir(parents=True, exist_ok=True)
                self._rejects = self.rejects_path.open("a", encoding="utf-8")
            self._rejects.write(reject_line(err.to_json()) + "\n")
            self._rejects.flush()

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None

    def __enter__(self) -> Intake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
