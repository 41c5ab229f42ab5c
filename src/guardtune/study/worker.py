"""One run of a study, in a process of its own (so that its peak memory is its own, a crash is contained, and
runs can go to different devices):

    python -m guardtune.study.worker RUN_DIR

RUN_DIR/spec.json holds the train config, the study's test sets and how thresholds are chosen. The worker
trains into RUN_DIR/guard (resuming from the last checkpoint when a killed run left one), scores every test
set, and writes RUN_DIR/arrays.npz (labels and probabilities, for the paired statistics) and last
RUN_DIR/result.json, atomically: a run is finished exactly when result.json exists. A failure is written
there too, with its traceback.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from guardtune.guard import Guard, Rewriter
from guardtune.study.runner import ARRAYS, RESULT, SPEC, write_json

def trainable_params(guard_dir: Path) -> tuple[int | None, int | None]:
    """From the last `start` record of the run's log (the count at training time, before merging)."""
    found: tuple[int | None, int | None] = (None, None)
    log = guard_dir / "log.jsonl"
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") == "start":
                found = (record.get("trainable_params"), record.get("params"))
    return found


def train_guard(cfg: Any, guard_dir: Path) -> tuple[Guard, dict[str, Any]]:
    """Train (or finish training) the run's guard; the figures come back with it. A guard already trained by
    an earlier attempt keeps its saved figures. Either way the guard that is scored is the one loaded from
    disk, as a user would deploy it (adapters merged), so inference times compare like with like."""
    import guardtune
    from guardtune.train import peak_memory_mb, train

    figures_path = guard_dir / "train_figures.json"
    finished = (guard_dir / "labels.json").exists()
    if not (finished and figures_path.exists()):
        resumed = (guard_dir / "config.yaml").exists() and not finished  # killed mid-training: go on from there
        result = train(cfg, resume=resumed, overwrite=not resumed, show_progress=False)
        trainable, total = trainable_params(guard_dir)
        write_json(figures_path, {
            "steps": result.steps, "best": result.best, "train_examples": result.examples,
            "train_seconds": result.seconds, "train_examples_per_s": result.examples / max(result.seconds, 1e-9),
            "peak_memory_mb": peak_memory_mb(), "trainable_params": trainable, "params": total,
            "resumed": resumed})
        del result
    return guardtune.load(guard_dir), json.loads(figures_path.read_text(encoding="utf-8"))


def validation_of(cfg: Any, run_dir: Path) -> list[Any]:
    """The train config's validation examples (a holdout is carved out of the training data, which must then be
    read again; otherwise only the validation data is read)."""
    from guardtune.data import load_any
    from guardtune.train import read_data

    if cfg.data.validation is None:
        raise ValueError("threshold: validation needs validation data in the train config")
    return (read_data(cfg, run_dir)["validation"] if cfg.data.validation == "holdout" else load_any(
        cfg.data.validation, cfg.data.on_bad_row)).examples


def thresholds_for(guard: Guard, cfg: Any, run_dir: Path, setting: Any, validation: list[Any] | None = None
                   ) -> dict[str, float]:
    """Every output's threshold: a fixed number, or the max-F1 threshold on this run's validation data (a
    rewriter has none)."""
    if isinstance(guard, Rewriter):
        return {}
    if setting != "validation":
        return {output: float(setting) for output in guard.labels.outputs}
    from guardtune.calibrate import calibrate

    validation = validation if validation is not None else validation_of(cfg, run_dir)
    chosen = calibrate(guard.score(validation, show_progress=False), validation, "max_f1")
    return {output: chosen["thresholds"].get(output, 0.5) for output in guard.labels.outputs}


def cascade_guard(run_dir: Path, spec: dict[str, Any]) -> tuple[Any, Any, list[Any], dict[str, Any]]:
    """A cascade arm's guard: its stages loaded (a `tfidf` stage trained here on the last trained stage's
    training data), its bands fitted on that stage's validation data, saved in RUN_DIR/guard."""
    import guardtune
    from guardtune import config
    from guardtune.baselines import TfidfGuard
    from guardtune.cascade import Cascade, fit
    from guardtune.study.spec import TFIDF_STAGE
    from guardtune.train import peak_memory_mb, read_data

    settings = spec["config"]["cascade"]
    cfg = config.from_dict({**spec["config"]["train"], "output_dir": str(run_dir / "data")}, f"{run_dir / SPEC}")
    start = time.perf_counter()
    data = read_data(cfg, run_dir)
    validation = data["validation"].examples if data["validation"] is not None else validation_of(cfg, run_dir)
    stages, paths = [], []
    for stage in settings["stages"]:
        if stage == TFIDF_STAGE:
            path = run_dir / TFIDF_STAGE
            if not (path / "guard.json").exists():
                TfidfGuard(name=TFIDF_STAGE).fit(data["train"].examples).save(path)
            stage = str(path)
        stages.append(guardtune.load(stage))
        paths.append(stage)
    fitted = fit(stages, validation, settings.get("rule", "quality"), settings.get("target"), settings.get("costs"),
                 settings.get("metric", "auprc"), float(settings.get("tolerance", 0.005)),
                 shape=settings.get("shape", "low"))
    cascade = Cascade(stages, fitted.bands, name=spec["key"], info=fitted.chosen)
    cascade.save(run_dir / "guard", paths)
    seconds = time.perf_counter() - start
    figures = {"steps": 0, "best": {}, "train_examples": len(data["train"].examples), "train_seconds": seconds,
               "train_examples_per_s": None, "peak_memory_mb": peak_memory_mb(), "trainable_params": None,
               "params": None, "resumed": False, "bands": fitted.chosen}
    return cascade, cfg, validation, figures


def rewrite_tests(rewriter: Any, tests: dict[str, Any], settings: dict[str, Any]) -> tuple[dict, dict, float]:
    """A rewriter's per-sample J, STA, SIM and FL on every test set (the study's style guard and sentence
    encoder), and the rewriting time per example."""
    import guardtune
    from guardtune import detox
    from guardtune.data import load_any

    if not settings.get("style_guard"):
        raise ValueError("a study with rewriter arms needs `detox: {style_guard: RUN}` (the STA guard for J)")
    style = guardtune.load(settings["style_guard"])
    encoder = detox.SentenceEncoder(settings.get("similarity_model") or detox.DEFAULT_ENCODER)
    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    seconds = rows = 0
    for name, spec in tests.items():
        examples = [ex for ex in load_any(spec).examples if detox.references_of(ex)]
        start = time.perf_counter()
        outputs = rewriter.rewrite(examples)
        seconds += time.perf_counter() - start
        rows += len(examples)
        summary[name] = {"n": len(examples), "ids": _digest([ex.id for ex in examples])}
        per = detox.evaluate_rewrites(examples, outputs, style, encoder, n_boot=0)["per_sample"]
        for metric in ("j", "sta", "sim", "fl"):
            arrays[f"{name}|rewrite|{metric}"] = np.array(per[metric], dtype=np.float32)
    return arrays, summary, 1000 * seconds / max(rows, 1)


def score_tests(guard: Guard, tests: dict[str, Any], thresholds: dict[str, float]) -> tuple[dict, dict, float]:
    """Per test set: each labelled task's (y, p, threshold) and each category field's per-sample Jaccard;
    and the inference time per example over all test sets."""
    from guardtune.data import load_any
    from guardtune.labels import CATEGORY_FIELDS
    from guardtune.metrics import jaccard, labelled, labelled_sets

    arrays: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {}
    seconds = rows = 0
    for name, spec in tests.items():
        examples = load_any(spec).examples
        start = time.perf_counter()
        scores = guard.score(examples, show_progress=False)
        seconds += time.perf_counter() - start
        rows += len(examples)
        summary[name] = {"n": len(examples), "ids": _digest([ex.id for ex in examples])}
        for task in guard.labels.tasks:
            index, y, p = labelled(examples, scores, task)
            if index:
                arrays[f"{name}|{task}|y"] = y.astype(np.int8)
                arrays[f"{name}|{task}|p"] = p.astype(np.float32)
                arrays[f"{name}|{task}|t"] = np.array([thresholds[task]])
        if hasattr(guard, "decided"):  # a cascade: how many rows each stage decided
            summary[name]["decided"] = np.bincount(guard.decided, minlength=len(guard.stages)).tolist()
        for field in CATEGORY_FIELDS:
            index, true, probs, codes = labelled_sets(examples, scores, field)
            if index:
                cut = np.array([thresholds[f"{field}/{c}"] for c in codes])
                arrays[f"{name}|{field}|jaccard"] = np.array([
                    jaccard(t, {c for c, hit in zip(codes, row >= cut) if hit}) for t, row in zip(true, probs)],
                    dtype=np.float32)
    return arrays, summary, 1000 * seconds / max(rows, 1)


def _digest(ids: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def execute(run_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from guardtune import config

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    guard_dir = run_dir / "guard"
    if "cascade" in spec["config"]:
        guard, cfg, validation, figures = cascade_guard(run_dir, spec)
        thresholds = thresholds_for(guard, cfg, guard_dir, spec.get("threshold", 0.5), validation)
        arrays, tests, ms = score_tests(guard, spec["test"], thresholds)
        np.savez_compressed(run_dir / ARRAYS, **arrays)
        last = guard.stages[-1]
        device = str(next(last.model.parameters()).device) if hasattr(last, "model") else "cpu"
        return {**figures, "inference_ms_per_example": ms, "tests": tests, "thresholds": thresholds, "device": device}
    cfg = config.from_dict({**spec["config"], "output_dir": str(guard_dir)}, f"{run_dir / SPEC}")
    guard, figures = train_guard(cfg, guard_dir)
    thresholds = thresholds_for(guard, cfg, guard_dir, spec.get("threshold", 0.5))
    arrays, tests, ms = rewrite_tests(guard, spec["test"], spec.get("detox") or {}) if isinstance(guard, Rewriter) \
        else score_tests(guard, spec["test"], thresholds)
    np.savez_compressed(run_dir / ARRAYS, **arrays)
    return {**figures, "inference_ms_per_example": ms, "tests": tests, "thresholds": thresholds,
            "device": str(next(guard.model.parameters()).device) if hasattr(guard, "model") else "cpu"}


def main(argv: list[str] | None = None) -> int:
    run_dir = Path((argv or sys.argv[1:])[0])
    spec = json.loads((run_dir / SPEC).read_text(encoding="utf-8"))
    result: dict[str, Any] = {"key": spec["key"], "started": time.time()}
    try:
        result.update(execute(run_dir, spec), status="ok")
        code = 0
    except Exception as err:  # recorded, and the study goes on with the next run
        result.update(status="failed", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc()[-6000:])
        code = 1
    result["finished"] = time.time()
    write_json(run_dir / RESULT, result)
    return code


if __name__ == "__main__":
    sys.exit(main())
