"""Streaming a JSONL file through a model into another JSONL file, resumably: what `moderate --file` and
`rewrite --file` share.

- Each line is {"id": ..., ...}; an output line is {"id": ..., <the work's result>}.
- Lines are named by their id (a repeated id is an error naming both lines, checked before any work) or, with
  key_by="line", by their line number.
- Ids already in the output are skipped, so a re-run resumes; a last line cut off by a crash is removed first.
- Each batch is written and fsynced before the next is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def stream_jsonl(source: Path, out: Path, parse: Callable[[dict], Any], work: Callable[[list], list[dict]],
                 batch_size: int, label: str, key_by: str = "id", show_progress: bool = True,
                 hint: str = "") -> tuple[int, int]:
    """`parse(row)` -> an item (raising ValueError/TypeError/AttributeError for a bad line), `work(items)` -> one
    dict per item. Returns (lines already done or blank, lines newly written)."""
    from guardtune.data.reading import JSONRejected, loads
    from guardtune.ui import bar

    done = _written_ids(out)
    total = _check_keys(source, key_by)
    progress = bar(total, label, enabled=show_progress)
    new = 0
    pending: list[tuple[str, Any]] = []
    with out.open("a", encoding="utf-8") as sink:
        def flush() -> None:
            nonlocal new
            if not pending:
                return
            for (key, _), result in zip(pending, work([item for _, item in pending])):
                sink.write(json.dumps({"id": key, **result}, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            progress.update(len(pending))
            new += len(pending)
            pending.clear()

        with source.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    progress.update(1)
                    continue
                try:
                    row = loads(line)
                    key = _key(row, number, key_by)
                    item = parse(row)
                except (ValueError, TypeError, AttributeError, JSONRejected) as err:
                    raise ValueError(f"{source}:{number}: {err}{hint}") from None
                if key in done:
                    progress.update(1)
                    continue
                done.add(key)
                pending.append((key, item))
                if len(pending) >= batch_size:
                    flush()
            flush()
    progress.close()
    return total - new, new


def _key(row: dict, number: int, key_by: str) -> str:
    if key_by == "line" or "id" not in row:
        return f"line-{number}"
    if isinstance(row["id"], (dict, list)) or row["id"] is None:
        raise ValueError(f"id must be text or a number, got {row['id']!r}")
    return str(row["id"])


def _check_keys(source: Path, key_by: str) -> int:
    """The number of lines, after checking that no two lines share an id (with key_by="id")."""
    from guardtune.data.reading import loads

    seen: dict[str, int] = {}
    total = 0
    with source.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            total = number
            if key_by != "id" or not line.strip():
                continue
            try:
                key = _key(loads(line), number, key_by)
            except Exception:  # noqa: BLE001 - the scoring pass reports the line's own error, located
                continue
            if key in seen:
                raise ValueError(f"{source}:{number}: id {key!r} is also on line {seen[key]}; each line needs its "
                                 "own id, or pass --key line to name verdicts by line number")
            seen[key] = number
    return total


def _written_ids(out: Path) -> set[str]:
    """Ids already in `out`; a last line without its newline (the process died mid-write) is cut off."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with out.open("r+b") as f:
            f.truncate(len(complete))
    return {json.loads(line)["id"] for line in complete.decode("utf-8").splitlines() if line.strip()}
