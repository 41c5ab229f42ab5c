"""Where guardtune finds local data: one data root, set by the user."""

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
