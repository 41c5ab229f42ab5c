"""Leave-one-dataset-out (LODO): how a training recipe holds up on sources it never saw.

    name: lodo-general-en
    output_dir: runs/lodo/general-en
    train: ../cpu/general-en-minilm.yaml        # the recipe; its data.train is a mixture
    folds:                                      # per held-out source: the mixture entries to drop, its test set
      toxicchat: {drop: [toxicchat_human], test: toxicchat_human:test}
      phtest: {drop: [phtest], test: [phtest:test, harmbench:test]}   # a list is pooled into one test set
    references: {toxicchat-recipe: ../cpu/toxicchat-minilm-lora.yaml}   # trained once, tested on every fold
    baseline: tfidf                             # a TF-IDF baseline fitted on each run's own training rows
    over_refusal: {harmless: {name: phtest:test, labelled_only: true}, harmful: [harmbench:test], recall: 0.9}

Runs, in this order: `full` (the whole recipe, tested on every fold's test set), each reference, and one
`without-X` per fold in the file's order (the recipe minus the entries that read dataset X, tested on X's test
set only). Each run trains in a worker
process (`guardtune.study.worker`: resumable, a finished run is never redone) and, with `baseline: tfidf`, a
TF-IDF + logistic regression baseline is fitted on exactly that run's training rows and scored on the same
test rows. Every run is also scored on the over-refusal sets: the harmless rows' false-positive rate at the
threshold that gives `recall` on the harmful rows (so a guard cannot look good by flagging nothing).

Intervals are percentile bootstraps over test rows (1,000 draws, paired: both sides of a difference use the
same resample); the mean over folds resamples every fold at once, so its interval covers all of them.
Results: OUTPUT_DIR/results.json and report.md.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from guardtune import config as config_mod
from guardtune.fields import check_keys

KEYS = {"name", "description", "output_dir", "train", "folds", "references", "baseline", "over_refusal",
        "bootstrap"}
FOLD_KEYS = {"drop", "test"}
OVER_REFUSAL_KEYS = {"harmless", "harmful", "recall"}
TASK = "prompt_harmful"
FULL = "full"
HARMLESS, HARMFUL = "over_refusal:harmless", "over_refusal:harmful"


@dataclass
class Fold:
    name: str
    drop: list[str]  # dataset names whose mixture entries are removed
    test: Any  # a data spec (a list is pooled)


@dataclass
class Lodo:
    name: str
    output_dir: Path
    train: dict[str, Any]  # the recipe's train config (base files merged), output_dir removed
    folds: dict[str, Fold]
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = "tfidf"
    over_refusal: dict[str, Any] | None = None
    bootstrap: int = 1000
    description: str = ""
    source: Path | None = None

    def runs(self) -> dict[str, tuple[dict[str, Any], dict[str, Any], bool]]:
        """Every run: name -> (train config, test sets, whether a TF-IDF baseline goes with it)."""
        every = {name: fold.test for name, fold in self.folds.items()}
        extra = {HARMLESS: self.over_refusal["harmless"], HARMFUL: self.over_refusal["harmful"]} \
            if self.over_refusal else {}
        baseline = self.baseline == "tfidf"
        out = {FULL: (untested(self.train), {**every, **extra}, baseline)}
        for name, cfg in self.references.items():
            out[f"reference-{name}"] = (untested(cfg), {**every, **extra}, False)
        for name, fold in self.folds.items():
            out[f"without-{name}"] = (untested(without(self.train, fold.drop, f"fold {name}")),
                                      {name: fold.test, **extra}, baseline)
        return out

    def run_dir(self, name: str, cfg: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return self.output_dir / "runs" / f"{name}-{digest}"


def untested(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config without its own test set and calibration: a run here is scored on the leave-one-out file's
    test sets, by threshold-free measures or at thresholds of its own (over-refusal)."""
    return {**{k: v for k, v in cfg.items() if k != "calibrate"}, "data": {**(cfg.get("data") or {}), "test": None}}


def dataset_of(entry: Any) -> str | None:
    """What a mixture entry reads: a registered dataset ("davidson_hate_offensive:train" ->
    davidson_hate_offensive), or a file's path as written."""
    from guardtune.data.loader import looks_like_file

    if isinstance(entry, dict):
        if entry.get("path"):
            return str(entry["path"])
        entry = entry.get("name")
    if not isinstance(entry, str):
        return None
    return entry if looks_like_file(entry) else entry.split(":", 1)[0]


def without(cfg: dict[str, Any], drop: list[str], where: str) -> dict[str, Any]:
    """The train config with every mixture entry that reads one of `drop` removed (each must match one)."""
    train = (cfg.get("data") or {}).get("train")
    if not (isinstance(train, dict) and isinstance(train.get("mixture"), list)):
        raise ValueError(f"{where}: leave-one-out needs the recipe's data.train to be a mixture")
    kept = [e for e in train["mixture"] if dataset_of(e) not in drop]
    unmatched = sorted(set(drop) - {dataset_of(e) for e in train["mixture"]})
    if unmatched:
        raise ValueError(f"{where}: drop names {unmatched[0]!r}, which no mixture entry reads "
                         f"(entries read: {', '.join(sorted({str(dataset_of(e)) for e in train['mixture']}))})")
    if not kept:
        raise ValueError(f"{where}: dropping {', '.join(drop)} leaves no training data")
    data = {**cfg["data"], "train": {**train, "mixture": kept}}
    return {**cfg, "data": data}


def _recipe(value: Any, path: Path, what: str) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"base": value}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {what} is a config file or a mapping with `base:` and overrides")
    value = dict(value)
    base = value.pop("base", None)
    cfg = config_mod.merge(config_mod.read_yaml(path.parent / base), value) if base else value
    cfg = {k: v for k, v in cfg.items() if k != "output_dir"}
    config_mod.from_dict({**cfg, "output_dir": "."}, f"{path}: {what}")  # valid before anything starts
    return cfg


def load_lodo(path: str | Path, output_dir: str | None = None) -> Lodo:
    path = Path(path)
    data = config_mod.read_mapping(path, "leave-one-out file", "a leave-one-out file is a mapping (name, train, "
                                                               "folds, ...); see `guardtune lodo --help`")
    check_keys(data, KEYS, str(path))
    for key in ("train", "folds"):
        if not data.get(key):
            raise ValueError(f"{path}: `{key}` is required")
    train = _recipe(data["train"], path, "train")
    folds = {}
    if not isinstance(data["folds"], dict):
        raise ValueError(f"{path}: folds is a mapping: name -> {{drop: [...], test: ...}}")
    for name, fold in data["folds"].items():
        if not isinstance(fold, dict) or not fold.get("drop") or not fold.get("test"):
            raise ValueError(f"{path}: fold {name!r} needs `drop` (dataset names) and `test` (a data spec)")
        check_keys(fold, FOLD_KEYS, f"{path}: fold {name}")
        if str(name) == FULL or str(name).startswith("over_refusal"):
            raise ValueError(f"{path}: {name!r} is reserved; name the fold otherwise")
        drop = [fold["drop"]] if isinstance(fold["drop"], str) else [str(d) for d in fold["drop"]]
        folds[str(name)] = Fold(str(name), drop, fold["test"])
        without(train, drop, f"{path}: fold {name}")
    over = data.get("over_refusal")
    if over is not None:
        check_keys(over, OVER_REFUSAL_KEYS, f"{path}: over_refusal")
        if not over.get("harmless") or not over.get("harmful"):
            raise ValueError(f"{path}: over_refusal needs `harmless` and `harmful` data specs")
        recall = float(over.get("recall", 0.9))
        if not 0 < recall <= 1:
            raise ValueError(f"{path}: over_refusal.recall must be in (0, 1], got {recall}")
        over = {**over, "recall": recall}
    baseline = data.get("baseline", "tfidf")
    if baseline not in ("tfidf", None, "none"):
        raise ValueError(f"{path}: baseline is `tfidf` or `none`, not {baseline!r}")
    references = {str(k): _recipe(v, path, f"reference {k}") for k, v in (data.get("references") or {}).items()}
    return Lodo(name=str(data.get("name") or path.stem),
                output_dir=Path(output_dir or data.get("output_dir") or f"runs/lodo/{path.stem}"), train=train,
                folds=folds, references=references, baseline=baseline if baseline == "tfidf" else None,
                over_refusal=over, bootstrap=int(data.get("bootstrap", 1000)),
                description=str(data.get("description") or ""), source=path)


# ---- running ------------------------------------------------------------------------------------------------


def run_worker(directory: Path, name: str, cfg: dict[str, Any], tests: dict[str, Any]) -> dict[str, Any]:
    """Train and score one run in a worker process (skipped when it already finished)."""
    from guardtune.study.runner import RESULT, SPEC, _die_with_parent, write_json

    result_path = directory / RESULT
    if result_path.exists():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        if result.get("status") == "ok":
            return result
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / SPEC, {"key": name, "config": cfg, "test": tests, "threshold": 0.5})
    with (directory / "worker.log").open("ab") as log:
        code = subprocess.run([sys.executable, "-m", "guardtune.study.worker", str(directory)], stdout=log,
                              stderr=subprocess.STDOUT, preexec_fn=_die_with_parent).returncode
    if not result_path.exists():
        tail = (directory / "worker.log").read_bytes()[-3000:].decode("utf-8", "replace")
        raise RuntimeError(f"run {name}: the worker exited with code {code} and no result:\n{tail}")
    return json.loads(result_path.read_text(encoding="utf-8"))


def run_baseline(directory: Path, cfg: dict[str, Any], tests: dict[str, Any]) -> None:
    """TF-IDF fitted on exactly the rows the run's guard trained on (the holdout carved out the same way),
    scored on the same test sets; arrays in the worker's format (`tfidf-arrays.npz`)."""
    from guardtune.baselines import TfidfGuard
    from guardtune.study.runner import write_json
    from guardtune.study.worker import score_tests
    from guardtune.train import read_data

    done = directory / "tfidf.json"
    if done.exists():
        return
    run_cfg = config_mod.from_dict({**cfg, "output_dir": str(directory / "tfidf")}, f"{directory}: baseline")
    (directory / "tfidf").mkdir(parents=True, exist_ok=True)
    rows = read_data(run_cfg, directory / "tfidf")["train"].examples
    guard = TfidfGuard(name="tfidf").fit(rows)
    arrays, summary, ms = score_tests(guard, tests, {k: 0.5 for k in guard.labels.outputs})
    np.savez_compressed(directory / "tfidf-arrays.npz", **arrays)
    write_json(done, {"train_examples": len(rows), "tests": summary, "inference_ms_per_example": ms})


def run_lodo(lodo: Lodo, progress: Any = None) -> dict[str, Any]:
    """Every run not yet finished, in order (full, folds, references); then the results."""
    from guardtune.study.runner import study_lock

    with study_lock(lodo.output_dir):
        for name, (cfg, tests, baseline) in lodo.runs().items():
            directory = lodo.run_dir(name, cfg)
            if progress:
                progress(name, directory)
            result = run_worker(directory, name, cfg, tests)
            if result.get("status") != "ok":
                raise RuntimeError(f"run {name} failed ({directory / 'result.json'}): {result.get('error')}")
            if baseline:
                run_baseline(directory, cfg, tests)
        return write_report(lodo)


# ---- results ------------------------------------------------------------------------------------------------


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def scored(lodo: Lodo) -> dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """model -> run -> test set -> (y, p) of the harmful-prompt task, for every finished run."""
    out: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
    for name, (cfg, tests, _) in lodo.runs().items():
        directory = lodo.run_dir(name, cfg)
        for model, file in (("guard", "arrays.npz"), ("tfidf", "tfidf-arrays.npz")):
            if (directory / file).exists():
                arrays = _arrays(directory / file)
                out.setdefault(model, {})[name] = {
                    test: (arrays[f"{test}|{TASK}|y"], arrays[f"{test}|{TASK}|p"]) for test in tests
                    if f"{test}|{TASK}|y" in arrays}
    return out


def threshold_at_recall(p_harmful: np.ndarray, recall: float) -> float:
    """The highest threshold that flags at least `recall` of the harmful rows (flagged: p >= threshold)."""
    ranked = np.sort(np.asarray(p_harmful, dtype=np.float64))[::-1]
    return float(ranked[int(np.ceil(recall * len(ranked))) - 1])


def fpr_at_recall(p_harmful: np.ndarray, p_harmless: np.ndarray, recall: float) -> float:
    return float(np.mean(np.asarray(p_harmless) >= threshold_at_recall(p_harmful, recall)))


def _interval(draws: np.ndarray) -> list[float] | None:
    from guardtune.metrics import percentile_interval

    found = percentile_interval(draws)
    return list(found) if found else None


def _auprc(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    from guardtune.metrics import auprc_draws

    return auprc_draws(y, p.astype(np.float64), W)


def specs_of(value: Any) -> list[Any]:
    """A data spec or a list of them, as a list."""
    return value if isinstance(value, list) else [value]


def auprc_cell(y: np.ndarray, p: np.ndarray, draws: int, seed: int) -> dict[str, Any]:
    """AUPRC of `p` on labels `y`, with a 95% bootstrap interval over rows."""
    from guardtune.metrics import resample_weights

    return {"auprc": float(_auprc(y, p, np.ones((1, len(y))))[0]),
            "ci": _interval(_auprc(y, p, resample_weights(len(y), draws, seed)))}


def fold_table(lodo: Lodo, scores: dict, draws: int) -> dict[str, Any]:
    """Per fold: the recipe without the fold's source, its TF-IDF and each reference, on the fold's test set
    (AUPRC, interval, paired differences); and the mean over folds."""
    from guardtune.metrics import resample_weights

    rows, per_fold = [], []
    for k, (name, fold) in enumerate(lodo.folds.items()):
        models = {"recipe": scores.get("guard", {}).get(f"without-{name}", {}).get(name),
                  "tfidf": scores.get("tfidf", {}).get(f"without-{name}", {}).get(name)}
        for ref in lodo.references:
            models[ref] = scores.get("guard", {}).get(f"reference-{ref}", {}).get(name)
        present = {m: v for m, v in models.items() if v is not None}
        if not present:
            continue
        y = next(iter(present.values()))[0]
        W = resample_weights(len(y), draws, 1000 + k)
        one = np.ones((1, len(y)))
        row: dict[str, Any] = {"fold": name, "n": int(len(y)), "positives": int(y.sum())}
        fold_draws = {}
        for model, (ym, p) in present.items():
            if len(ym) != len(y) or not np.array_equal(ym, y):
                raise ValueError(f"fold {name}: {model} was scored on other rows than the recipe")
            fold_draws[model] = _auprc(y, p, W)
            row[model] = {"auprc": float(_auprc(y, p, one)[0]), "ci": _interval(fold_draws[model])}
        for model in fold_draws:
            if model != "recipe" and "recipe" in fold_draws:
                diff = fold_draws["recipe"] - fold_draws[model]
                row[f"recipe-{model}"] = {"difference": row["recipe"]["auprc"] - row[model]["auprc"],
                                          "ci": _interval(diff), "p_value": _p(diff)}
        per_fold.append(fold_draws)
        rows.append(row)
    # the mean over the folds where every model was scored (all of them, once every run has finished)
    models = ["recipe", "tfidf", *lodo.references]
    counted = [i for i, d in enumerate(per_fold) if all(m in d for m in models)]
    mean: dict[str, Any] = {"folds": [rows[i]["fold"] for i in counted]}
    if counted:
        stacks = {m: np.vstack([per_fold[i][m] for i in counted]).mean(0) for m in models}
        for model in models:
            mean[model] = {"auprc": float(np.mean([rows[i][model]["auprc"] for i in counted])),
                           "ci": _interval(stacks[model])}
        for model in models[1:]:
            mean[f"recipe-{model}"] = {"difference": mean["recipe"]["auprc"] - mean[model]["auprc"],
                                       "ci": _interval(stacks["recipe"] - stacks[model]),
                                       "p_value": _p(stacks["recipe"] - stacks[model])}
    return {"folds": rows, "mean": mean}


def _p(diff: np.ndarray) -> float | None:
    from guardtune.study.stats import p_value

    return p_value(diff)


def over_refusal_table(lodo: Lodo, scores: dict, draws: int) -> list[dict[str, Any]]:
    """Per run and model: the harmless rows' FPR at the threshold giving `recall` on the harmful rows."""
    if not lodo.over_refusal:
        return []
    recall = lodo.over_refusal["recall"]
    harmless = {dataset_of(s) for s in specs_of(lodo.over_refusal["harmless"])}
    held_out = {f"without-{name}" for name, fold in lodo.folds.items() if harmless & set(fold.drop)}
    out = []
    for model, runs in scores.items():
        for run, tests in runs.items():
            if HARMLESS not in tests or HARMFUL not in tests:
                continue
            (y_bad, p_bad), (y_ok, p_ok) = tests[HARMFUL], tests[HARMLESS]
            out.append({"run": run, "model": model, "harmless_in_training": run not in held_out and
                        not run.startswith("reference-"),
                        **over_refusal(p_bad[y_bad == 1], p_ok[y_ok == 0], recall, draws)})
    return out


def over_refusal(p_harmful: np.ndarray, p_harmless: np.ndarray, recall: float, draws: int = 1000) -> dict[str, Any]:
    """The harmless rows' FPR at the threshold giving `recall` on the harmful rows, with a bootstrap interval
    that resamples both sets (the threshold moves with the harmful draw)."""
    rng = np.random.default_rng(7)
    boot = np.array([fpr_at_recall(rng.choice(p_harmful, len(p_harmful)), rng.choice(p_harmless, len(p_harmless)),
                                   recall) for _ in range(draws)])
    return {"harmful": int(len(p_harmful)), "harmless": int(len(p_harmless)),
            "threshold": threshold_at_recall(p_harmful, recall), "fpr": fpr_at_recall(p_harmful, p_harmless, recall),
            "ci": _interval(boot)}


def in_domain_table(lodo: Lodo, scores: dict, draws: int) -> list[dict[str, Any]]:
    """The full recipe, its TF-IDF and the references on every fold's test set (seen sources: in-domain)."""
    out = []
    for k, name in enumerate(lodo.folds):
        row: dict[str, Any] = {"test": name}
        runs = {"recipe": ("guard", FULL), "tfidf": ("tfidf", FULL),
                **{ref: ("guard", f"reference-{ref}") for ref in lodo.references}}
        for label, (model, run) in runs.items():
            pair = scores.get(model, {}).get(run, {}).get(name)
            if pair is None:
                continue
            y, p = pair
            row.update(n=int(len(y)), positives=int(y.sum()))
            row[label] = auprc_cell(y, p, draws, 2000 + k)
        out.append(row)
    return out


def collect(lodo: Lodo) -> dict[str, Any]:
    scores = scored(lodo)
    return {"name": lodo.name, "description": lodo.description, "folds": {k: {"drop": f.drop, "test": f.test}
            for k, f in lodo.folds.items()}, "references": list(lodo.references),
            "leave_one_out": fold_table(lodo, scores, lodo.bootstrap),
            "over_refusal": over_refusal_table(lodo, scores, lodo.bootstrap),
            "in_domain": in_domain_table(lodo, scores, lodo.bootstrap),
            "recall": (lodo.over_refusal or {}).get("recall")}


def _fmt(cell: dict[str, Any] | None, key: str = "auprc", signed: bool = False) -> str:
    if not cell or cell.get(key) is None:
        return "-"
    value = f"{cell[key]:+.3f}" if signed else f"{cell[key]:.3f}"
    ci = cell.get("ci")
    text = value + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f" [{ci[0]:.3f}, {ci[1]:.3f}]") if ci else value
    if cell.get("p_value") is not None:
        text += f", p = {cell['p_value']:.3g}"
    return text


def render(results: dict[str, Any]) -> str:
    refs = results["references"]
    lines = [f"# Leave-one-dataset-out: {results['name']}", ""]
    if results["description"]:
        lines += [results["description"].strip(), ""]
    lines += ["Each fold trains the recipe without one source and tests on that source's test split (harmful-prompt "
              "AUPRC, 95% bootstrap intervals over test rows; differences paired). TF-IDF: a TF-IDF + logistic "
              "regression baseline fitted on the same training rows as the fold's guard. "
              + (f"References ({', '.join(refs)}) are trained once and tested on every fold." if refs else ""), ""]
    heads = ["held-out source", "test rows (harmful)", "recipe", "TF-IDF", "recipe - TF-IDF",
             *[h for r in refs for h in (r, f"recipe - {r}")]]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    loo = results["leave_one_out"]
    every = len(loo["mean"]["folds"]) == len(loo["folds"])
    label = "**mean**" if every else f"**mean of {', '.join(loo['mean']['folds']) or 'no fold'}** (runs unfinished)"
    for row in [*loo["folds"], {**loo["mean"], "fold": label, "n": None}]:
        cells = [row["fold"], f"{row['n']:,} ({row['positives']:,})" if row.get("n") else "",
                 _fmt(row.get("recipe")), _fmt(row.get("tfidf")), _fmt(row.get("recipe-tfidf"), "difference", True)]
        for r in refs:
            cells += [_fmt(row.get(r)), _fmt(row.get(f"recipe-{r}"), "difference", True)]
        lines.append("| " + " | ".join(cells) + " |")
    if results["over_refusal"]:
        lines += ["", f"**Over-refusal**: the harmless set's false-positive rate at the threshold that catches "
                  f"{results['recall']:.0%} of the harmful set, per run.", "",
                  "| run | model | harmless prompts in training | harmful / harmless rows | threshold | FPR [95% CI] |",
                  "|---|---|---|---|---|---|"]
        for row in results["over_refusal"]:
            ci = row["ci"]
            lines.append(f"| {row['run']} | {row['model']} | {'yes' if row['harmless_in_training'] else 'no'} | "
                         f"{row['harmful']:,} / {row['harmless']:,} | {row['threshold']:.3g} | {row['fpr']:.3f}"
                         + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + " |")
    lines += ["", "**In domain**: the full recipe (every source) on each test split.", "",
              "| test split | rows (harmful) | recipe | TF-IDF | " + " | ".join(refs) + (" |" if refs else ""),
              "|" + "---|" * (4 + len(refs))]
    for row in results["in_domain"]:
        cells = [row["test"], f"{row.get('n', 0):,} ({row.get('positives', 0):,})", _fmt(row.get("recipe")),
                 _fmt(row.get("tfidf")), *[_fmt(row.get(r)) for r in refs]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(lodo: Lodo) -> dict[str, Any]:
    from guardtune.paths import write_atomic

    results = collect(lodo)
    lodo.output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(lodo.output_dir / "results.json", json.dumps(results, indent=1))
    write_atomic(lodo.output_dir / "report.md", render(results))
    return results
