"""Resumable checkpoints, written atomically: a killed run never leaves a half-written checkpoint behind.

A checkpoint holds only what training changes: the trainable tensors (adapter or unfrozen blocks, and the
heads), the optimiser and scheduler, the random number generators, the method's own state (AdaLoRA's
importance scores) and the progress counters. The frozen base is rebuilt from the config on resume.

  checkpoints/step-000120/   trainable.safetensors, state.pt, progress.json
  checkpoints/latest         the name of the newest complete checkpoint (replaced atomically)
  checkpoints/best/          the trainable tensors of the best validation step
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from guardtune.models.build import load_trainable_state, trainable_state
from guardtune.paths import write_atomic

LATEST = "latest"
BEST = "best"


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors, numbers and tuples only: what torch.load(weights_only=True) reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_dir(final: Path, write) -> None:
    """Write into a temporary sibling, flush it to disk, then rename it into place."""
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    for path in tmp.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save(root: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, progress: dict[str, Any],
         method_state: dict | None = None, keep: int = 2) -> Path:
    name = f"step-{progress['step']:06d}"

    def write(tmp: Path) -> None:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "method": method_state}, tmp / "state.pt")
        (tmp / "progress.json").write_text(json.dumps(progress, indent=1), encoding="utf-8")

    _write_dir(root / name, write)
    write_atomic(root / LATEST, name)
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def latest(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    return path if (path / "progress.json").is_file() else None


def load(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> tuple[dict[str, Any], dict | None]:
    """Restore tensors, optimiser, scheduler and RNGs; return (progress, method state)."""
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    state = read_state(path / "state.pt")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return json.loads((path / "progress.json").read_text(encoding="utf-8")), state["method"]


def read_state(path: Path) -> dict[str, Any]:
    """The optimiser/scheduler/RNG state, read with torch.load(weights_only=True): tensors, numbers, strings and
    containers only. A run directory may come from anyone; a pickle that would run code is refused."""
    import pickle

    try:
        state = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused: it holds Python objects other than tensors and plain data, and "
                         f"loading it would run code ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= set(state):
        raise ValueError(f"{path}: not a guardtune checkpoint state")
    return state


def save_best(root: Path, model: torch.nn.Module, info: dict[str, Any]) -> None:
    def write(tmp: Path) -> None:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        (tmp / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")

    _write_dir(root / BEST, write)


def load_best(root: Path, model: torch.nn.Module) -> dict[str, Any] | None:
    path = root / BEST
    if not (path / "info.json").is_file():
        return None
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    return json.loads((path / "info.json").read_text(encoding="utf-8"))
