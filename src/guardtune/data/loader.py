"""One entry point for data: `load("toxicchat_human:train")`, `load("my.jsonl")` or `load(DataSpec(...))`.

A spec names a registered dataset (optionally `name:split`) or a local file (with a column mapping), plus
an optional seeded sample and a mixture weight. `load_mixture` combines several specs by weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from guardtune.data import registry, splits
from guardtune.data.example import Example
from guardtune.data.files import load_file
from guardtune.data.intake import Intake, IntakeReport
from guardtune.paths import ENV, data_root

FILE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class DataSpec:
    name: str | None = None  # a registered dataset, optionally "name:split"
    split: str | None = None
    path: str | None = None  # or a local file
    columns: dict[str, str] = field(default_factory=dict)
    labels: dict[str, dict] = field(default_factory=dict)
    categories: str = "canonical"
    language: str | None = None
    sample: int | None = None  # a seeded sample of this many rows
    seed: int = 0
    weight: float = 1.0  # mixture weight
    languages: list[str] | None = None  # keep only rows in these languages (ISO codes)
    balance: str = "none"  # none | classes (the harmful and benign rows of this spec in at most balance_ratio : 1)
                           # | language (the same within each language; a language with one class is dropped)
    balance_ratio: float = 1.0
    prompts_only: bool = False  # each distinct prompt once, without its response and the response's labels
    labelled_only: bool = False  # drop rows that label nothing (they teach nothing and cost a forward pass)
    drop_categories: list[str] | None = None  # categories outside the guard's policy: removed from each row, and
                                              # a harmful row whose categories were all among them is dropped

    def __post_init__(self) -> None:
        if self.balance not in splits.BALANCE:
            raise ValueError(f"balance must be one of {', '.join(splits.BALANCE)}, got {self.balance!r}")
        if isinstance(self.languages, str):
            object.__setattr__(self, "languages", [self.languages])
        if isinstance(self.drop_categories, str):
            object.__setattr__(self, "drop_categories", [self.drop_categories])
        if self.drop_categories is not None and not all(isinstance(c, str) for c in self.drop_categories):
            raise ValueError(f"drop_categories must be a list of category names, got {self.drop_categories!r}")
        if (self.name is None) == (self.path is None):
            raise ValueError("a data spec needs exactly one of `name` (a registered dataset) or `path` (a file)")
        if self.name and ":" in self.name and self.split is None:
            name, split = self.name.split(":", 1)
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "split", split)

    @classmethod
    def parse(cls, value: str | dict | DataSpec) -> DataSpec:
        """'name', 'name:split', a file path, or a dict of fields (unknown keys are errors)."""
        if isinstance(value, DataSpec):
            return value
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise KeyError(f"unknown data spec key {unknown[0]!r}; known: {', '.join(sorted(known))}")
            return cls(**value)
        if looks_like_file(value):
            return cls(path=value)
        return cls(name=value)

    @property
    def label(self) -> str:
        text = self.path or f"{self.name}:{self.split or 'all'}"
        return text + (f" (sample {self.sample}, seed {self.seed})" if self.sample is not None else "")


def is_config(value: str) -> bool:
    return value.lower().endswith((".yaml", ".yml"))


def looks_like_file(value: str) -> bool:
    name = value.lower().removesuffix(".xz").removesuffix(".gz").removesuffix(".bz2")
    return name.endswith(FILE_SUFFIXES) or Path(value).is_file()


@dataclass
class Loaded:
    examples: list[Example]
    report: IntakeReport
    label: str


def _read_registered(spec: DataSpec, intake: Intake) -> None:
    info = registry.get(spec.name)
    split = spec.split or "all"
    if split not in info.all_splits:
        raise KeyError(f"{spec.name} has no split {split!r}; choose from {', '.join(info.all_splits)}")
    root = data_root()
    if not info.available(root) and info.kind == "local":
        raise FileNotFoundError(
            f"dataset {spec.name!r} not found: expected the folder {root / info.folder}. Set {ENV} to the folder "
            f"that holds the dataset folders (currently {root}).")
    if split in info.splits:
        info.read(root, split, intake)
    elif split == "all":
        for native in (info.base,) if info.base else info.splits:
            info.read(root, native, intake)
    else:  # a derived split: read the whole base split (counts cover every row read), keep the split's groups
        start = len(intake.examples)
        info.read(root, info.base, intake)
        kept = splits.grouped_split(intake.examples[start:], split)
        del intake.examples[start:]
        intake.examples.extend(kept)
        intake.report.examples = start + len(kept)


def load(spec: str | dict | DataSpec, on_bad_row: str = "error", rejects: str | Path | None = None) -> Loaded:
    """Load one dataset or file into validated `Example`s, with a reconciled report."""
    spec = DataSpec.parse(spec)
    with Intake(on_bad_row, rejects) as intake:
        if spec.path is not None:
            load_file(spec.path, intake, spec.columns, spec.labels, spec.categories, spec.language)
        else:
            _read_registered(spec, intake)
    examples = intake.examples
    label = spec.path or f"{spec.name}:{spec.split or 'all'}"  # then what was done to it, in order
    if spec.languages is not None:
        wanted = set(spec.languages)
        examples = [ex for ex in examples if ex.language in wanted]
        label += f" (languages {', '.join(spec.languages)})"
    if spec.prompts_only:
        examples = splits.prompts_only(examples)
        label += " (prompts only)"
    if spec.labelled_only:
        examples = [ex for ex in examples if ex.labelled]
        label += " (labelled rows only)"
    if spec.drop_categories:
        examples, dropped = splits.drop_categories(examples, spec.drop_categories)
        label += f" (categories {', '.join(spec.drop_categories)} dropped; {dropped} rows with no other)"
    if spec.balance != "none":
        examples, summary = splits.balance(examples, spec.balance, spec.balance_ratio, spec.seed)
        gone = [k for k, v in summary.items() if v["kept"] == 0]
        label += f" (balanced by {spec.balance}" + (f"; one class only, dropped: {', '.join(gone)}" if gone else "") + ")"
    if spec.sample is not None:
        examples = splits.sample(examples, spec.sample, spec.seed)
        label += f" (sample {spec.sample}, seed {spec.seed})"
    return Loaded(examples, intake.report, label)


def load_mixture(specs: list[Any], size: int | None = None, seed: int = 0, on_bad_row: str = "error",
                 rejects: str | Path | None = None, exclude: list[Any] | None = None,
                 exclude_threshold: float = 0.8) -> Loaded:
    """Load several specs and mix them by their weights (see `splits.mixture`). With `exclude` (specs, e.g.
    every test split), rows that are exact or near duplicates of an excluded row are dropped from each part
    before mixing (`overlap.overlapping`, Jaccard >= exclude_threshold), and the label says how many."""
    loaded = [load(s, on_bad_row, rejects) for s in specs]
    report = IntakeReport(rejects_path=str(rejects) if rejects else None)
    for item in loaded:
        report.merge(item.report)
    labels = [item.label for item in loaded]
    if exclude:
        from guardtune.data.overlap import overlapping

        against = [ex for s in exclude for ex in load(s, on_bad_row).examples]
        pool = [ex for item in loaded for ex in item.examples]
        gone = overlapping(pool, against, exclude_threshold)
        start = 0
        for k, item in enumerate(loaded):
            end = start + len(item.examples)
            dropped = sum(1 for i in range(start, end) if i in gone)
            item.examples = [ex for i, ex in zip(range(start, end), item.examples) if i not in gone]
            if dropped:
                labels[k] += f" ({dropped} rows overlapping the excluded sets removed)"
            start = end
    parts = [(item.examples, DataSpec.parse(s).weight) for item, s in zip(loaded, specs)]
    return Loaded(splits.mixture(parts, size, seed), report, " + ".join(labels))


MIXTURE_KEYS = {"mixture", "size", "seed", "exclude", "exclude_threshold"}


def _mixture(value: dict[str, Any], on_bad_row: str, rejects: str | Path | None, where: str = "") -> Loaded:
    unknown = sorted(set(value) - MIXTURE_KEYS)
    if unknown:
        raise KeyError(f"{where}unknown mixture key {unknown[0]!r}; a mixture takes {', '.join(sorted(MIXTURE_KEYS))}")
    exclude = value.get("exclude")
    if exclude is not None and not isinstance(exclude, list):
        exclude = [exclude]
    return load_mixture(value["mixture"], value.get("size"), value.get("seed", 0), on_bad_row, rejects, exclude,
                        float(value.get("exclude_threshold", 0.8)))


def load_config(path: str | Path, on_bad_row: str = "error", rejects: str | Path | None = None) -> Loaded:
    """Load a YAML data config: one spec (a dict of DataSpec fields), or a mixture
    `{mixture: [spec, ...], size: N, seed: S}`. Relative file paths are relative to the YAML file."""
    import yaml

    path = Path(path)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping (one data spec, or `mixture: [...]`)")

    def resolve(spec: Any) -> Any:
        if isinstance(spec, dict) and spec.get("path") and not Path(spec["path"]).is_absolute():
            return {**spec, "path": str(path.parent / spec["path"])}
        if isinstance(spec, str) and looks_like_file(spec) and not Path(spec).is_absolute():
            return str(path.parent / spec)
        return spec

    if "mixture" in config:
        resolved = {**config, "mixture": [resolve(s) for s in config["mixture"]]}
        if isinstance(config.get("exclude"), list):
            resolved["exclude"] = [resolve(s) for s in config["exclude"]]
        return _mixture(resolved, on_bad_row, rejects, f"{path}: ")
    return load(resolve(config), on_bad_row, rejects)


def load_any(value: Any, on_bad_row: str = "error", rejects: str | Path | None = None) -> Loaded:
    """What a training config's `data.train` (or validation/test) may hold: a dataset name, a file, a YAML data
    config, one spec as a dict, a mixture dict `{mixture: [...], size, seed}`, or a list of specs (mixed by weight)."""
    if isinstance(value, str) and is_config(value):
        return load_config(value, on_bad_row, rejects)
    if isinstance(value, list):
        return load_mixture(value, on_bad_row=on_bad_row, rejects=rejects)
    if isinstance(value, dict) and "mixture" in value:
        return _mixture(value, on_bad_row, rejects)
    return load(value, on_bad_row, rejects)
