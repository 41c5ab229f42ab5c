"""A guard back from disk: `guardtune.load(source)`, for every kind, through one registry.

Every guard directory records its kind in `guard.json` ({"kind": "classifier", ...}); a run trained before
that file existed is read by its config's `model.kind`. `hf:<id or path>` is any Hugging Face
sequence-classification checkpoint.

    LOADERS = {**dict.fromkeys(KINDS, load_trained), "tfidf": ..., "fewshot": ..., "hf": ...}

Nothing that came with a directory is executed: weights are safetensors, and remote model code runs only when
the caller passes `trust_remote_code=True` (a run's config asking for it is refused otherwise).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from guardtune.guard import GUARD_FILE, Guard, Rewriter, Thresholds
from guardtune.kinds import KINDS

@dataclass(frozen=True)
class LoadOptions:
    device: str | None = None
    label_map: dict[str, str] | None = None  # hf: checkpoint label -> guardtune output
    merge_adapters: bool = True  # merge a PEFT adapter into the weights (same scores, faster)
    trust_remote_code: bool = False  # only ever from the caller, never from a file in the directory


def read_kind(directory: Path) -> dict[str, Any]:
    """The directory's guard.json, or for a run without one, the kind its config names."""
    path = directory / GUARD_FILE
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(info, dict) or not isinstance(info.get("kind"), str):
            raise ValueError(f"{path}: must be a JSON object with a \"kind\" string")
        return info
    if (directory / "config.yaml").is_file() and (directory / "labels.json").is_file():
        from guardtune import config

        return {"kind": config.load(directory / "config.yaml").model.kind}
    raise FileNotFoundError(f"{directory} is not a guard directory (no {GUARD_FILE}, and no config.yaml with "
                            "labels.json of a finished run); train one with `guardtune train`, or give "
                            "hf:<model id> for a hub classifier")


def load_trained(directory: Path, info: dict[str, Any], options: LoadOptions) -> Guard | Rewriter:
    """A run of `guardtune train`, of any kind: its module on the base backbone, wrapped as its kind says."""
    from guardtune import config
    from guardtune.models.backbone import load_tokenizer
    from guardtune.models.build import load_model

    cfg = config.load(directory / "config.yaml")
    if cfg.model.trust_remote_code and not options.trust_remote_code:
        raise PermissionError(f"{directory / 'config.yaml'} asks for trust_remote_code: the backbone's own Python "
                              "code would run. A run directory cannot turn that on; if you trust this model's code, "
                              "pass --trust-remote-code (or trust_remote_code=True)")
    cfg = _trusting(cfg, options.trust_remote_code)
    kind = KINDS[info["kind"]]
    model = load_model(directory, cfg, merge=options.merge_adapters)
    if options.device:
        model.to(options.device)
    tokenizer = load_tokenizer(cfg.model, directory / "tokenizer")
    return kind.wrap(model, tokenizer, cfg, Thresholds.read(directory), name=directory.name)


def _trusting(cfg: Any, trust: bool) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, trust_remote_code=trust))


def load_hf(directory: Path | None, info: dict[str, Any], options: LoadOptions) -> Guard:
    from guardtune.baselines import HFClassifierGuard

    return HFClassifierGuard(info["model"], options.label_map or info.get("label_map"), device=options.device)


def load_tfidf(directory: Path, info: dict[str, Any], options: LoadOptions) -> Guard:
    from guardtune.baselines import load_tfidf as load

    return load(directory, info)


def load_fewshot(directory: Path, info: dict[str, Any], options: LoadOptions) -> Guard:
    from guardtune.fewshot import load_fewshot as load

    return load(directory, info, options.device)


def load_cascade(directory: Path, info: dict[str, Any], options: LoadOptions) -> Guard:
    from guardtune.cascade import load_cascade as load

    return load(directory, info, options)


def load_copy(directory: Path, info: dict[str, Any], options: LoadOptions) -> Rewriter:
    from guardtune.baselines import CopyRewriter

    return CopyRewriter(name=directory.name)


def load_delete(directory: Path, info: dict[str, Any], options: LoadOptions) -> Rewriter:
    from guardtune.baselines import load_delete as load

    return load(directory, info)


Loader = Callable[[Any, dict, LoadOptions], "Guard | Rewriter"]
# every kind that `guardtune train` trains loads through load_trained; then the guards and rewriters that need
# no training
LOADERS: dict[str, Loader] = {**dict.fromkeys(KINDS, load_trained), "tfidf": load_tfidf, "fewshot": load_fewshot,
                              "hf": load_hf, "copy": load_copy, "delete": load_delete, "cascade": load_cascade}


def load(source: str | Path, device: str | None = None, label_map: dict[str, str] | None = None,
         merge_adapters: bool = True, trust_remote_code: bool = False) -> Guard | Rewriter:
    """A guard to score with: a guard directory of any kind, or `hf:<id or path>`. A trained PEFT adapter is
    merged into the backbone's weights (same scores, no adapter cost per forward pass) unless
    `merge_adapters=False`."""
    options = LoadOptions(device, label_map, merge_adapters, trust_remote_code)
    if str(source).startswith("hf:"):
        return load_hf(None, {"kind": "hf", "model": str(source)[3:]}, options)
    directory = Path(source)
    info = read_kind(directory)
    if info["kind"] not in LOADERS:
        raise ValueError(f"{directory / GUARD_FILE}: unknown guard kind {info['kind']!r}; "
                         f"choose from {', '.join(sorted(LOADERS))}")
    return LOADERS[info["kind"]](directory, info, options)
