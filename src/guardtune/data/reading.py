"""Readers that keep track of where each row came from (file and line or row number).

They never load a whole file to find lines, read compressed files (.xz, .gz, .bz2) transparently, and
hand unparseable rows (broken JSON or CSV, invalid UTF-8, oversized lines) to the `Intake`, which raises
or records them. Parsed rows are yielded as `(Location, dict)`.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from guardtune.data.intake import Intake, Location

MAX_LINE_BYTES = 1_000_000
_BAD_BYTES = re.compile("[\udc80-\udcff]")  # what surrogateescape leaves for undecodable bytes
_OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


def open_binary(path: str | Path) -> IO[bytes]:
    path = Path(path)
    return _OPENERS.get(path.suffix, open)(path, "rb")


def data_suffix(path: str | Path) -> str:
    """'.csv' for 'x.csv.xz'."""
    suffixes = [s for s in Path(path).suffixes if s not in _OPENERS]
    return suffixes[-1].lower() if suffixes else ""


def iter_lines(path: str | Path, oversized: set[int], max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """(line number, text) with undecodable bytes kept as surrogates. A line over `max_bytes` is read in
    chunks and skipped (its number goes into `oversized` and an empty line is yielded in its place)."""
    with open_binary(path) as f:
        number = 0
        while True:
            raw = f.readline(max_bytes + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = f.readline(1 << 20)
                oversized.add(number)
                yield number, "\n"
                continue
            text = raw.decode("utf-8", errors="surrogateescape")
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield number, text


MAX_JSON_DEPTH = 64  # a row of guardtune data is shallow; deeper nesting is rejected before it is parsed


class JSONRejected(ValueError):
    """JSON that parses in Python but is not acceptable data: too deep, a repeated key, a huge number, NaN."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def _depth_over(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit` (checked without recursion)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JSONRejected(f"duplicate key {key!r} (which value is meant is ambiguous)", key)
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise JSONRejected(f"{name} is not a JSON value")


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 100:
        raise JSONRejected(f"a number of {len(text)} digits")
    return int(text)


def loads(text: str) -> Any:
    """json.loads for untrusted rows: no recursion error, no silent last-key-wins, no 100,000-digit number, no
    NaN/Infinity (not JSON). Such rows raise JSONRejected, with the field when one is known."""
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth_over(text, MAX_JSON_DEPTH):
        raise JSONRejected(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_integer)


def _bad_bytes_field(row: dict[str, Any]) -> str | None:
    for key, value in row.items():
        if isinstance(value, str) and _BAD_BYTES.search(value):
            return key
    return None


def read_jsonl(path: str | Path, intake: Intake, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[Location, dict]]:
    oversized: set[int] = set()
    for number, text in iter_lines(path, oversized, max_bytes):
        where = Location(str(path), "line", number)
        if number in oversized:
            intake.reject(where, None, f"line longer than {max_bytes:,} bytes")
            continue
        if not text.strip():
            continue
        readable = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        try:
            row = loads(text)
        except json.JSONDecodeError as err:
            intake.reject(where, None, f"broken JSON: {err.msg} at column {err.colno}", readable)
            continue
        except JSONRejected as err:
            intake.reject(where, err.field, str(err), readable)
            continue
        if not isinstance(row, dict):
            intake.reject(where, None, f"expected a JSON object, got {type(row).__name__}", readable)
            continue
        if _BAD_BYTES.search(text):
            intake.reject(where, _bad_bytes_field(row), "invalid UTF-8", readable)
            continue
        yield where, row


MAX_RECORD_LINES = 10_000  # a quoted CSV field may span lines (a long answer), but not this many: an unclosed quote


def read_records(path: str | Path, intake: Intake, delimiter: str = ",",
                 max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[Location, list[str]]]:
    """CSV/TSV records with standard double-quote quoting (a field may span lines), each located by the
    line it starts on. Blank lines are skipped; undecodable bytes stay as surrogates for the caller.

    A record that cannot be parsed is rejected at the line it starts on, and reading goes on from the next
    line: an unterminated quote (a field running to the end of the file, or over MAX_RECORD_LINES lines or
    `max_bytes`) costs that one line, never the good rows after it."""
    import io

    csv.field_size_limit(max(max_bytes, 131072))
    oversized: set[int] = set()
    source = iter_lines(path, oversized, max_bytes)
    pending: list[tuple[int, str]] = []  # lines handed back after a bad record, to be read again

    def next_line() -> tuple[int, str] | None:
        if pending:
            return pending.pop()
        return next(source, None)

    while (first := next_line()) is not None:
        start = first[0]
        where = Location(str(path), "line", start)
        if start in oversized:
            intake.reject(where, None, f"line longer than {max_bytes:,} bytes")
            continue
        buffer, quotes, size = [first], first[1].count('"'), len(first[1])
        while True:
            inside = quotes % 2 == 1 and len(buffer) > 1  # an open quoted field stays open until the quotes pair
            text = "" if inside else "".join(t for _, t in buffer)
            try:
                if inside:  # read on before parsing again (parsing at every line would be quadratic)
                    raise csv.Error("unexpected end of data")
                records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
                problem = None  # several records: old Mac line ends (a bare \r) inside one line; each is a row
            except csv.Error as err:
                records, problem = [], f"broken CSV: {err}"
                if "unexpected end of data" in str(err):  # inside a quoted field: it may go on
                    more = next_line() if len(buffer) < MAX_RECORD_LINES and size < max_bytes else None
                    if more is not None and more[0] not in oversized:
                        buffer.append(more)
                        quotes, size = quotes + more[1].count('"'), size + len(more[1])
                        continue
                    if more is not None:
                        pending.append(more)
                    problem = (f"broken CSV: a quoted field opened here is not closed within "
                               f"{len(buffer)} line(s); the lines after this one are read again")
            break
        if problem is not None:
            pending.extend(reversed(buffer[1:]))  # every line but the first is read again
            intake.reject(where, None, problem, escaped(first[1]))
        else:
            for record in records:
                if record:
                    yield where, record


def escaped(text: str) -> str:
    """Raw text for a rejects file: undecodable bytes (kept as surrogates) written as \\xNN escapes."""
    return text.rstrip("\r\n").encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_csv(
    path: str | Path,
    intake: Intake,
    delimiter: str = ",",
    fieldnames: list[str] | None = None,
    max_bytes: int = MAX_LINE_BYTES,
) -> Iterator[tuple[Location, dict]]:
    """CSV/TSV rows as dicts. The header is the first record unless `fieldnames` is given; a row with the
    wrong number of fields or undecodable bytes is handed to the intake."""
    header = fieldnames
    for where, record in read_records(path, intake, delimiter, max_bytes):
        if header is None:
            header = [h.strip() for h in record]
            repeated = sorted({h for h in header if header.count(h) > 1})
            if repeated:
                raise ValueError(f"{where}: the header repeats column(s) {repeated}: which one is meant is "
                                 "ambiguous; rename them")
            continue
        if len(record) != len(header):
            intake.reject(where, None, f"broken CSV: expected {len(header)} fields, got {len(record)}",
                          delimiter.join(record))
            continue
        row = dict(zip(header, record))
        bad = _bad_bytes_field(row)
        if bad is not None:
            intake.reject(where, bad, "invalid UTF-8", escaped(delimiter.join(record)))
            continue
        yield where, row


def read_parquet(path: str | Path, intake: Intake) -> Iterator[tuple[Location, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield Location(str(path), "row", number), row
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path}: cannot read as Parquet after row {number}: {err}") from None


def read_xlsx(path: str | Path, columns: list[str]) -> Iterator[tuple[Location, dict]]:
    """First sheet, no header; `columns` names the cells of each row."""
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True)
    try:
        for number, cells in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
            yield Location(str(path), "row", number), dict(zip(columns, cells))
    finally:
        book.close()


def read_json(path: str | Path) -> Any:
    with open_binary(path) as f:
        return json.load(f)


def read_table(path: str | Path, intake: Intake, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[Location, dict]]:
    """Any supported tabular file by extension: .jsonl, .csv, .tsv, .parquet (optionally compressed)."""
    kind = data_suffix(path)
    if kind in (".jsonl", ".ndjson"):
        return read_jsonl(path, intake, max_bytes)
    if kind in (".csv", ".tsv"):
        return read_csv(path, intake, "\t" if kind == ".tsv" else ",", max_bytes=max_bytes)
    if kind == ".parquet":
        return read_parquet(path, intake)
    raise ValueError(f"{path}: unsupported file type {kind!r}; use .jsonl, .csv, .tsv or .parquet "
                     "(optionally .xz/.gz/.bz2 compressed)")
