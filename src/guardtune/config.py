"""Training configs: frozen dataclasses read from YAML, with `key=value` overrides. Unknown keys fail.

The defaults are the embedded default job: all-MiniLM-L6-v2 with LoRA on the embedded demo set, so
`guardtune train` with no config at all trains something useful offline. A YAML file may start from another
with `base: other.yaml` (relative to the file) and change only what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from guardtune.fields import check_keys, coerce

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ModelConfig:
    name: str = DEFAULT_BACKBONE  # a hub id or a local directory
    kind: str = "classifier"  # one of guardtune.kinds.KINDS: classifier (a head on the backbone) | generative
                               # (a causal LM answering in JSON) | rewriter (detox: a seq2seq or causal LM) |
                               # edit_tagger (detox: keep/delete/insert tags on an encoder) | dual_path (a
                               # chat LM that also guards: adapters + head on, chat exactly as before off)
    pooling: str | None = None  # classifier: last | mean | first; None: mean for encoders, else last
    text_prefix: str | None = None  # classifier: put before every input; None: the backbone's own (e5: "query: ")
    max_length: int | None = None  # tokens; longer conversations are truncated (prompt and response both kept).
                                   # None: the kind's default (classifier 256, generative 1024: policy + answer, dual_path 512)
    dtype: str = "auto"  # auto (bfloat16 on a bf16-capable GPU, else float32) | float32 | bfloat16 | float16
    trust_remote_code: bool = False
    revision: str | None = None
    gradient_checkpointing: bool = False
    head_dropout: float = 0.1
    span_head: bool = False  # classifier: also a per-token span head (which characters made it harmful), trained
                             # on examples with span rationales (toxic_spans); see docs/rationales.md
    span_weight: float = 1.0  # classifier: the span loss's weight beside the classification loss
    policy: str | dict[str, str] | None = None  # generative: category code -> description, or a YAML/JSON file
                                                 # of one; None: the S1-S14 taxonomy
    rationale: str = "none"  # generative: none | after (the JSON verdict, then "Rationale: ..."; scored exactly as
                             # none) | before ("Rationale: ..." decoded greedily, then the verdict scored from logits)
    rationale_tokens: int = 64  # generative: the longest rationale generated
    rationale_weight: float | None = None  # generative: alpha in (0, 1): alpha * verdict-token loss + (1 - alpha) *
                                           # rationale-token loss per batch (distilling step-by-step); None: one mean
    references: str = "first"  # rewriter: train on the first reference of each item, or on each (one pair each)
    unrewritable: str = "skip"  # rewriter: a row without a rewrite is left out (skip) or trained to be copied
    max_new_tokens: int = 64  # rewriter: the longest rewrite generated
    phrase_vocab: int = 500  # edit_tagger: how many insertion phrases to learn from the training pairs
    phrases: list[str] | None = None  # edit_tagger: the learned phrases (written by training; None: learn them)

    def __post_init__(self) -> None:
        from guardtune.kinds import KINDS

        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.max_length is None:
            object.__setattr__(self, "max_length", KINDS[self.kind].max_length)
        for name, choices in (("references", ("first", "each")), ("unrewritable", ("skip", "copy")),
                              ("rationale", ("none", "before", "after"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"model.{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.rationale != "none" and self.kind != "generative":
            raise ValueError("model.rationale (a free-text rationale in the answer) is for generative guards; a "
                             "classifier explains with a span head (model.span_head)")
        if self.rationale_weight is not None and (self.rationale == "none" or not 0 < self.rationale_weight < 1):
            raise ValueError("model.rationale_weight is a number in (0, 1) and needs model.rationale before or after, "
                             f"got {self.rationale_weight!r} with rationale {self.rationale!r}")
        if self.rationale_tokens < 1:
            raise ValueError(f"model.rationale_tokens must be positive, got {self.rationale_tokens}")


@dataclass(frozen=True)
class MethodConfig:
    name: str = "lora"
    params: dict[str, Any] = field(default_factory=dict)  # checked against METHODS[name].params

    def __post_init__(self) -> None:
        self.build()  # fail at config time on an unknown method or parameter

    def build(self) -> Any:
        from guardtune.methods import method_params

        return method_params(self.name, self.params)


@dataclass(frozen=True)
class DataConfig:
    train: Any = "demo:train"
    validation: Any = "demo:validation"  # holdout: a grouped 10% of train; None: no validation, last step kept
    test: Any = "demo:test"  # None: no test summary at the end
    on_bad_row: str = "error"  # error | skip (skipped rows go to <output_dir>/rejects.jsonl)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: float = 6.0
    max_steps: int | None = None  # optimiser steps; overrides epochs
    batch_size: int = 16  # per device, per micro-batch
    grad_accum: int = 1
    lr: float = 5e-4
    head_lr: float | None = None  # None: 10 x lr (the head starts from random; the backbone does not)
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"  # any transformers scheduler name: linear, cosine, constant_with_warmup...
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16
    pos_weight: str | float | None = None  # None | "auto" (negatives/positives per output, capped at 10) | number
                                           # | "per_source" (auto within each source of a mixture)
    group_by_length: bool = True
    eval_every: int | None = None  # optimiser steps; None: once per epoch
    save_every: int | None = None  # optimiser steps between resumable checkpoints; None: at each validation
    log_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 42
    eval_batch_size: int = 64
    trackers: tuple[str, ...] = ()  # accelerate trackers: tensorboard, wandb, mlflow...
    init_from: str | None = None  # a run directory to start from: its adapter (or trained backbone tensors), its
                                  # head when the outputs match, its span head (two-stage training, e.g. labels
                                  # and rationales first, then labels)

    def __post_init__(self) -> None:
        w = self.pos_weight
        if not (w is None or w in ("auto", "per_source")
                or (isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0)):
            raise ValueError(f"training.pos_weight must be auto, per_source, a number above 0 or null, got {w!r}")


@dataclass(frozen=True)
class CalibrateConfig:
    """Thresholds chosen when training ends and saved with the run (thresholds.json), as `guardtune calibrate`
    would: on `data`, which should look like the traffic the guard will see."""
    data: Any = None  # None: no calibration (0.5); `validation`: the run's validation split; or any data spec
    strategy: str = "max_f1"  # max_f1 | fpr | recall (see `guardtune calibrate --help`)
    target: float | None = None  # the FPR or recall target of fpr | recall
    temperature: bool = False  # also fit a (bounded) temperature per output
    per: str | None = None  # language: also a threshold per language (`guardtune calibrate --per language`)
    min_count: int = 30  # with per: language, the harmful and the benign rows a language needs for its own

    def __post_init__(self) -> None:
        from guardtune.calibrate import STRATEGIES

        if self.per not in (None, "language"):
            raise ValueError(f"calibrate.per must be language or null, got {self.per!r}")
        if isinstance(self.min_count, bool) or not isinstance(self.min_count, int) or self.min_count < 1:
            raise ValueError(f"calibrate.min_count must be a whole number of at least 1, got {self.min_count!r}")

        if self.strategy not in STRATEGIES:
            raise ValueError(f"calibrate.strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.strategy != "max_f1" and (self.target is None or not 0 < float(self.target) < 1):
            raise ValueError(f"calibrate.strategy {self.strategy} needs a target between 0 and 1, got {self.target!r}")


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/demo"
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["method"] = {"name": self.method.name, **self.method.params}
        data["training"]["trackers"] = list(self.training.trackers)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "training": TrainingConfig, "calibrate": CalibrateConfig}


def from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    data = dict(data)
    check_keys(data, {f.name for f in fields(TrainConfig)}, where)
    kwargs: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{where}: `{name}` must be a mapping, got {section!r}")
        section = coerce(cls, section, f"{where}: {name}")
        if name == "training" and "trackers" in section:
            section = {**section, "trackers": tuple(section["trackers"] or ())}
        kwargs[name] = cls(**section)
    method = data.get("method") or {}
    if isinstance(method, str):
        method = {"name": method}
    method = dict(method)
    kwargs["method"] = MethodConfig(method.pop("name", "lora"), method)
    if "output_dir" in data:
        kwargs["output_dir"] = str(data["output_dir"])
    return TrainConfig(**kwargs)


def read_mapping(path: Path, kind: str, shape: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping; `kind` and `shape` word the errors ("config", "a config must be
    a mapping of sections (...)")."""
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {shape}")
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config as a dict, with `base:` files merged in underneath (recursively)."""
    path = Path(path)
    data = read_mapping(path, "config", "a config must be a mapping of sections (model, method, data, training)")
    base = data.pop("base", None)
    return merge(read_yaml(path.parent / base), data) if base else data


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if key == "method" and isinstance(value, dict) and value.get("name") not in (None, out.get(key, {}).get("name")):
            out[key] = value  # another method: the base's method parameters do not apply to it
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`training.lr=1e-4 method.r=32 data.train=toxicchat_human:train`; values are parsed as YAML."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value (e.g. training.lr=1e-4 or method.r=32)")
        value = yaml.safe_load(raw) if raw else None
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[leaf] = value
    return data


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The config at `path` (or the defaults) with `overrides` applied."""
    data = read_yaml(path) if path else {}
    if isinstance(data.get("method"), str):
        data["method"] = {"name": data["method"]}
    where = str(path) if path else "config"
    return from_dict(apply_overrides(data, list(overrides or [])), where)
