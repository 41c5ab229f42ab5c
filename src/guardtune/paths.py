"""Where guardtune finds local data (one data root, set by the user), and writing files that a reader or a
kill never sees half-written."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "GUARDTUNE_DATA_DIR"


def data_root() -> Path:
    """$GUARDTUNE_DATA_DIR if set; else `../shared/data` when it exists (the team layout: public datasets
    beside the repository); else ~/.local/share/guardtune/data (or $XDG_DATA_HOME/guardtune/data)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    shared = Path("..", "shared", "data")
    if shared.is_dir():
        return shared.resolve()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "guardtune" / "data"


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name beside `path`, flush it to disk, then rename it over `path` (atomic on POSIX):
    a reader, or a run killed mid-write, sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
