"""Checking mappings read from files against dataclasses: unknown keys fail and list the choices; numbers written
as YAML strings become numbers. Used by configs, method parameters and study files alike."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


def coerce(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """Unknown keys fail; numbers written as YAML strings (`1e-4` is a string in YAML 1.1) become numbers."""
    check_keys(data, {f.name for f in fields(cls)}, where)
    out = dict(data)
    for f in fields(cls):
        value = out.get(f.name)
        kind = str(f.type)
        if isinstance(value, str) and "str" not in kind and ("float" in kind or "int" in kind):
            try:
                out[f.name] = float(value) if "float" in kind else int(value)
            except ValueError:
                raise ValueError(f"{where}: {f.name} must be a number, got {value!r}") from None
    return out


def check_keys(data: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise KeyError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
