"""A study file, and the runs it expands into.

    name: peft-methods
    output_dir: runs/study/peft-methods
    train: {base: ../cpu/multilingual-minilm-lora.yaml, training: {max_steps: 80}}   # what every run starts from
    arms:                         # the settings compared: name -> overrides (nested or dotted keys)
      full: {method: {name: full}}
      lora: {method.name: lora, method.r: 16}
      cascade: {cascade: {stages: [tfidf, lora], rule: rate, target: 0.3}}   # a cascade of other arms (below)
    reference: lora               # every arm is tested against this one, on the same rows
    search: {training.lr: [5.0e-5, 2.0e-4, 1.0e-3]}   # the same candidates for every arm, chosen on validation
    select: val_auprc             # the validation figure (at the best step) that picks the candidate
    seeds: [0, 1, 2]
    grid: {model.name: [...]}     # optional further axes, crossed with the arms (backbones, training data...)
    test: {toxicchat: toxicchat_human:test, cold: {name: cold:test, sample: 500, seed: 0}}
    threshold: validation         # F1 at each run's validation max-F1 threshold, or a number (0.5)
    detox: {style_guard: runs/detox/style-guard}   # rewriter arms: the STA guard (and similarity_model) for J

A cascade arm trains nothing: its stages are other arms of the study (each at its chosen candidate and the
same seed), `tfidf` (a TF-IDF baseline trained on the study's training data) or a guard directory; its bands
are fitted on the last trained stage's validation data (`guardtune.cascade.fit`: rule, target, metric,
tolerance, shape, costs), and it is tested on the same rows as every arm.

Search runs use the first seed; the winning candidate then runs with the other seeds. Every run of a study is
scored on exactly the rows of `test`. A run's directory is named by its settings and a hash of its whole
config, so a changed study never reuses a run made under other settings.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from guardtune import config as config_mod
from guardtune.fields import check_keys
from guardtune.report import slug

KEYS = {"name", "output_dir", "train", "arms", "reference", "search", "select", "seeds", "grid", "test",
        "threshold", "bootstrap", "description", "detox"}
DETOX_KEYS = {"style_guard", "similarity_model"}
CASCADE_KEYS = {"stages", "rule", "target", "metric", "tolerance", "shape", "costs"}
TFIDF_STAGE = "tfidf"  # a cascade stage trained by the cascade's own run: TF-IDF on the study's training data


def nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """{'method.r': 16, 'training': {'lr': 1e-3}} -> {'method': {'r': 16}, 'training': {'lr': 1e-3}}."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        value = nested(value) if isinstance(value, dict) else value
        both = isinstance(node.get(leaf), dict) and isinstance(value, dict)
        node[leaf] = config_mod.merge(node[leaf], value) if both else value
    return out


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return Path(value).name if "/" in value else value
    return slug(json.dumps(value, sort_keys=True))[:24]


def product(axes: dict[str, list[Any]], sep: str) -> list[tuple[str, dict[str, Any]]]:
    """Every combination of the axes' values, labelled by the last part of each key; one empty one if none."""
    keys = list(axes)
    return [(sep.join(f"{k.split('.')[-1]}={short(v)}" for k, v in zip(keys, values)), dict(zip(keys, values)))
            for values in itertools.product(*(axes[k] for k in keys))] or [("", {})]


@dataclass(frozen=True)
class Run:
    """One training run of a study: its place in the grid, and the train config it resolves to."""
    cell: str  # the grid cell ("" when the study has no grid)
    arm: str
    candidate: str  # the search candidate ("" without a search)
    seed: int
    config: dict[str, Any]  # the whole train config, output_dir excluded

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.cell, self.arm, self.candidate, f"seed={self.seed}") if p)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()[:10]

    @property
    def dirname(self) -> str:
        return f"{slug(self.key.replace('/', '__'))}-{self.digest}"


@dataclass
class Study:
    name: str
    output_dir: Path
    train: dict[str, Any]
    arms: dict[str, dict[str, Any]]
    reference: str
    test: dict[str, Any]
    search: dict[str, list[Any]] = field(default_factory=dict)
    select: str = "val_auprc"
    seeds: list[int] = field(default_factory=lambda: [0])
    grid: dict[str, list[Any]] = field(default_factory=dict)
    threshold: str | float = "validation"
    bootstrap: int = 1000
    description: str = ""
    detox: dict[str, Any] = field(default_factory=dict)  # rewriter arms: style_guard (STA), similarity_model (SIM)
    cascades: dict[str, dict[str, Any]] = field(default_factory=dict)  # cascade arms: name -> the cascade's settings
    source: Path | None = None

    @property
    def arm_names(self) -> list[str]:
        """Every arm: the trained ones, then the cascades."""
        return [*self.arms, *self.cascades]

    @property
    def cells(self) -> list[tuple[str, dict[str, Any]]]:
        """The grid's cells: a label ('name=x/max_length=128') and the overrides."""
        return product(self.grid, "/")

    @property
    def candidates(self) -> list[tuple[str, dict[str, Any]]]:
        """The search candidates: a label ('lr=0.001') and the overrides."""
        return product(self.search, ",")

    def run(self, cell: str, arm: str, candidate: str, seed: int) -> Run:
        cells, candidates = dict(self.cells), dict(self.candidates)
        data = self.train
        for layer in (cells[cell], self.arms[arm], candidates[candidate], {"training.seed": seed}):
            data = config_mod.merge(data, nested(layer))
        data = {k: v for k, v in data.items() if k != "output_dir"}
        config_mod.from_dict({**data, "output_dir": "."}, f"{self.source or 'study'}: run {arm} {candidate}")
        return Run(cell, arm, candidate, seed, data)

    def search_runs(self) -> list[Run]:
        """The first stage: every cell x arm x candidate at the first seed (all seeds when nothing is searched)."""
        seeds = self.seeds if len(self.candidates) == 1 else self.seeds[:1]
        return [self.run(cell, arm, cand, seed) for cell, _ in self.cells for arm in self.arms
                for cand, _ in self.candidates for seed in seeds]

    def seed_runs(self, cell: str, arm: str, candidate: str) -> list[Run]:
        """The second stage for a chosen candidate: the remaining seeds."""
        if len(self.candidates) == 1:
            return []
        return [self.run(cell, arm, candidate, seed) for seed in self.seeds[1:]]

    @property
    def total_runs(self) -> int:
        per_arm = len(self.seeds) if len(self.candidates) == 1 else len(self.candidates) + len(self.seeds) - 1
        return len(self.cells) * (len(self.arms) * per_arm + len(self.cascades) * len(self.seeds))

    def cascade_run(self, cell: str, name: str, seed: int, stages: list[str], train: dict[str, Any]) -> Run:
        """A cascade arm's run at one seed: its settings, its stages' guard directories (or `tfidf`) and the
        train config of its last trained stage (whose validation data fits the bands)."""
        return Run(cell, name, "", seed, {"cascade": {**self.cascades[name], "stages": stages}, "train": train})


def _detox(value: Any, path: Path) -> dict[str, Any]:
    """The detox settings, with a relative style guard read from the study file's folder."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: detox is a mapping (style_guard, similarity_model), not {value!r}")
    check_keys(value, DETOX_KEYS, f"{path}: detox")
    out = dict(value)
    if out.get("style_guard") and not Path(out["style_guard"]).is_absolute() \
            and (Path(path).parent / out["style_guard"]).exists():
        out["style_guard"] = str(Path(path).parent / out["style_guard"])
    return out


def _cascade(name: str, arm: dict[str, Any], arms: dict[str, Any], path: Path) -> dict[str, Any]:
    """A cascade arm's settings, checked: stages are trained arms, `tfidf` or guard directories (read from the
    study file's folder when relative), two or more, at least one of them a trained arm."""
    from guardtune.cascade import RULES, SHAPES

    where = f"{path}: arm {name}"
    if set(arm) != {"cascade"} or not isinstance(arm["cascade"], dict):
        raise ValueError(f"{where}: a cascade arm is {{cascade: {{stages: [...], rule: ...}}}} and nothing else")
    spec = dict(arm["cascade"])
    check_keys(spec, CASCADE_KEYS, f"{where}: cascade")
    stages = spec.get("stages")
    if not isinstance(stages, list) or len(stages) < 2 or not all(isinstance(s, str) and s for s in stages):
        raise ValueError(f"{where}: cascade.stages is a list of two or more arms (cheapest first), `tfidf` or "
                         "guard directories")
    resolved = []
    for stage in stages:
        beside = Path(path).parent / stage  # a guard directory, read from the study file's folder when relative
        if stage in arms or stage == TFIDF_STAGE:
            resolved.append(stage)
        elif beside.is_dir() or Path(stage).is_dir():
            resolved.append(str(beside if beside.is_dir() else Path(stage)))
        else:
            raise ValueError(f"{where}: stage {stage!r} is neither a trained arm ({', '.join(arms)}), `tfidf`, nor a "
                             "guard directory")
    if not any(s in arms for s in resolved):
        raise ValueError(f"{where}: at least one stage must be a trained arm of the study (its validation data fits "
                         "the bands)")
    if spec.get("rule", "quality") not in RULES or spec.get("shape", "low") not in SHAPES:
        raise ValueError(f"{where}: rule is one of {', '.join(RULES)} and shape one of {', '.join(SHAPES)}")
    if spec.get("rule") in ("rate", "budget") and not isinstance(spec.get("target"), (int, float)):
        raise ValueError(f"{where}: rule {spec['rule']} needs a numeric target")
    costs = spec.get("costs")
    if costs is not None and (not isinstance(costs, list) or len(costs) != len(resolved)
                              or not all(isinstance(c, (int, float)) for c in costs)):
        raise ValueError(f"{where}: cascade.costs is one number (ms/example) per stage")
    return {**spec, "stages": resolved}


def load_study(path: str | Path, output_dir: str | None = None) -> Study:
    path = Path(path)
    data = config_mod.read_mapping(path, "study", "a study is a mapping (name, train, arms, test, ...); "
                                               "see `guardtune study --help`")
    check_keys(data, KEYS, str(path))
    for key in ("train", "arms", "test"):
        if not data.get(key):
            raise ValueError(f"{path}: `{key}` is required")
    train = data["train"]
    if isinstance(train, str):
        train = {"base": train}
    base = train.pop("base", None) if isinstance(train, dict) else None
    train = config_mod.merge(config_mod.read_yaml(path.parent / base), nested(train)) if base else nested(train)
    every = {str(name): dict(overrides or {}) for name, overrides in data["arms"].items()}
    for name in every:
        if not name or "/" in name:
            raise ValueError(f"{path}: arm name {name!r} must be non-empty and without '/'")
    arms = {name: o for name, o in every.items() if "cascade" not in o}
    cascades = {name: _cascade(name, o, arms, path) for name, o in every.items() if "cascade" in o}
    if not arms:
        raise ValueError(f"{path}: a study needs at least one trained arm (a cascade's stages are other arms)")
    reference = str(data.get("reference") or next(iter(every)))
    if reference not in every:
        raise ValueError(f"{path}: reference {reference!r} is not an arm (arms: {', '.join(every)})")
    seeds = [int(s) for s in (data.get("seeds") or [0])]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds repeat: {seeds}")
    for key in ("search", "grid"):
        for axis, values in (data.get(key) or {}).items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{path}: {key}.{axis} must be a non-empty list of values")
    threshold = data.get("threshold", "validation")
    if threshold != "validation" and not isinstance(threshold, (int, float)):
        raise ValueError(f"{path}: threshold is `validation` or a number, not {threshold!r}")
    study = Study(name=str(data.get("name") or path.stem),
                  output_dir=Path(output_dir or data.get("output_dir") or f"runs/study/{path.stem}"),
                  train=train, arms=arms, reference=reference, test=dict(data["test"]),
                  search=dict(data.get("search") or {}), select=str(data.get("select", "val_auprc")), seeds=seeds,
                  grid=dict(data.get("grid") or {}), threshold=threshold, bootstrap=int(data.get("bootstrap", 1000)),
                  detox=_detox(data.get("detox"), path), cascades=cascades,
                  description=str(data.get("description") or ""), source=path)
    for cell, _ in study.cells:  # every run's config must be valid before anything starts
        for arm in arms:
            for cand, _ in study.candidates:
                study.run(cell, arm, cand, seeds[0])
    return study
