"""Studies: the grid, the statistics (checked against scikit-learn), and a real study on a tiny model: parallel
workers, a failure recorded, selection on validation, resume without redoing runs, and a killed study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from guardtune.data import load_any
from guardtune import metrics
from guardtune.study import load_study, run_study, write_report
from guardtune.study import stats
from guardtune.study.runner import read_result, run_dir, selection

ROOT = Path(__file__).resolve().parents[1]


# ---- statistics ---------------------------------------------------------------------------------------------

def test_weighted_metrics_match_sklearn_on_resamples():
    from sklearn.metrics import average_precision_score, f1_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1), 2)  # rounded: many ties
    W = metrics.resample_weights(300, 25, seed=1)
    ap, f1 = stats.auprc(y, p, 0.5, W), stats.f1(y, p, 0.5, W)
    for b in range(len(W)):
        assert ap[b] == pytest.approx(average_precision_score(y, p, sample_weight=W[b]), abs=1e-10)
        assert f1[b] == pytest.approx(f1_score(y, p >= 0.5, sample_weight=W[b]), abs=1e-10)
    assert np.all(W.sum(1) == 300)
    values = rng.random(300)
    assert stats.mean(values, None, 0.0, W[:1])[0] == pytest.approx(np.average(values, weights=W[0]))


def test_undefined_draws_are_nan():
    y = np.array([1, 1, 1, 0])
    W = np.array([[1, 1, 2, 0], [1, 1, 1, 1], [0, 0, 0, 4]], dtype=float)  # no negatives / both / no positives
    ap, f1 = stats.auprc(y, np.array([0.9, 0.8, 0.7, 0.1]), 0.5, W), stats.f1(y, np.array([0.9, 0.8, 0.7, 0.1]), 0.5, W)
    assert np.isnan(ap[0]) and ap[1] == pytest.approx(1.0) and np.isnan(ap[2])
    assert f1[0] == pytest.approx(1.0) and np.isnan(f1[2])


def test_seed_level_interval_widens_with_seed_spread():
    draws = 400
    calm = np.full((3, draws), 0.8) + np.random.default_rng(0).normal(0, 0.01, (3, draws))
    noisy = calm + np.array([[-0.1], [0.0], [0.1]])  # the same rows, seeds far apart
    lo1, hi1 = metrics.percentile_interval(stats.seed_draws(calm, 1))
    lo2, hi2 = metrics.percentile_interval(stats.seed_draws(noisy, 1))
    assert hi2 - lo2 > 3 * (hi1 - lo1)


def test_paired_p_value_and_holm():
    assert stats.p_value(np.random.default_rng(0).normal(0.05, 0.01, 1000)) < 0.01
    assert stats.p_value(np.random.default_rng(0).normal(0.0, 0.01, 1000)) > 0.2
    assert stats.p_value(np.full(10, np.nan)) is None
    adjusted = stats.holm([0.01, 0.04, None, 0.03])
    assert adjusted == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]


# ---- the study file -----------------------------------------------------------------------------------------

def write_study(tmp_path: Path, model: Path, steps: int = 4, **changes) -> Path:
    study = {
        "name": "tiny", "output_dir": str(tmp_path / "out"),
        "train": {"model": {"name": str(model), "max_length": 32}, "method": {"name": "lora", "r": 4},
                  "data": {"train": "demo:train", "validation": "demo:validation"},
                  "training": {"max_steps": steps, "batch_size": 16, "eval_every": 2, "save_every": 2}},
        "arms": {"full": {"method": {"name": "full"}}, "lora": {"method.name": "lora", "method.r": 4},
                 "broken": {"method.name": "lora", "method.r": -3}},
        "reference": "lora", "search": {"training.lr": [1.0e-3, 1.0e-2]}, "seeds": [0, 1],
        "test": {"all": "demo:test", "sample": {"name": "demo:test", "sample": 40, "seed": 0}}, "bootstrap": 200,
    }
    study.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def test_grid_expansion_and_run_identity(tmp_path):
    path = write_study(tmp_path, tmp_path / "model", grid={"model.max_length": [32, 48]})
    study = load_study(path)
    assert [c for c, _ in study.cells] == ["max_length=32", "max_length=48"]
    first = study.search_runs()
    assert len(first) == 2 * 3 * 2 and {r.seed for r in first} == {0}  # cells x arms x candidates, first seed
    assert study.total_runs == 2 * 3 * (2 + 1)
    full = study.run("max_length=48", "full", "lr=0.01", 1)
    assert full.config["method"] == {"name": "full"}  # another method: the base's LoRA settings do not leak
    assert full.config["training"]["lr"] == 0.01 and full.config["training"]["seed"] == 1
    assert full.config["model"]["max_length"] == 48
    lora = study.run("max_length=48", "lora", "lr=0.01", 1)
    assert lora.config["method"] == {"name": "lora", "r": 4} and lora.dirname != full.dirname
    assert study.run("max_length=48", "lora", "lr=0.01", 1).dirname == lora.dirname  # stable


def test_a_numeric_grid_gets_a_learning_curve_plot_of_each_arm(tmp_path, monkeypatch):
    from guardtune import plots
    from guardtune.study.markdown import MEAN
    from guardtune.study.report import _grid_plot

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    study = load_study(write_study(tmp_path, tmp_path / "model", grid={"model.max_length": [32, 48]}))
    means = {("max_length=32", "full"): 0.6, ("max_length=48", "full"): 0.7,
             ("max_length=32", "lora"): 0.5, ("max_length=48", "lora"): 0.8}
    rows = [{"cell": c, "arm": a, "dataset": d, "output": "prompt_harmful", "metric": "auprc", "mean": m,
             "ci": (m - 0.05, m + 0.02)} for (c, a), m in means.items() for d in ("all", MEAN)]
    assert _grid_plot(study, {"rows": rows}, tmp_path / "plots") == [tmp_path / "plots" / "quality_vs_grid.png"]
    (fig,) = figures
    panel = fig.axes[0]  # the first test set ("all"), AUPRC: one line per arm over the grid's values
    lines = {bars.get_label(): bars.lines[0] for bars in panel.containers}
    assert list(lines["full"].get_xdata()) == [32, 48] and list(lines["full"].get_ydata()) == [0.6, 0.7]
    assert list(lines["lora"].get_ydata()) == [0.5, 0.8]
    assert len(fig.axes) == 2  # "all" and the mean of test sets
    # a grid over names, or over two axes, has no x to plot against
    named = load_study(write_study(tmp_path, tmp_path / "model", grid={"model.name": ["a", "b"]}))
    assert _grid_plot(named, {"rows": rows}, tmp_path / "plots") == []


@pytest.mark.parametrize("change, message", [
    ({"reference": "qlora"}, "reference 'qlora' is not an arm"),
    ({"seeds": [0, 0]}, "seeds repeat"),
    ({"search": {"training.lr": []}}, "non-empty list"),
    ({"arms": {"x": {"training.nonsense": 1}}, "reference": "x"}, "nonsense"),
    ({"colour": "blue"}, "unknown key 'colour'"),
])
def test_bad_study_files_fail_before_anything_runs(tmp_path, change, message):
    with pytest.raises((ValueError, KeyError), match=message):
        load_study(write_study(tmp_path, tmp_path / "model", **change))


SHIPPED = sorted((ROOT / "configs" / "study").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_studies_load_and_every_arm_builds_its_tiny_equivalent(path, tiny):
    from guardtune import config, methods
    from guardtune.data.loader import DataSpec
    from guardtune.labels import LabelSpace
    from guardtune.models.build import build_model
    from tests.tiny import family_of
    from tests.trainable import check_trainable

    study = load_study(path)
    assert len(study.seeds) >= 2 and len(study.candidates) >= 2 and study.reference in study.arms
    for spec in study.test.values():
        DataSpec.parse(spec)
    for arm in study.arms:
        run = study.run(study.cells[0][0], arm, study.candidates[0][0], study.seeds[0])
        for key in ("max_steps", "epochs"):  # matched schedules
            assert run.config["training"].get(key) == study.train["training"].get(key)
        steps = run.config["training"].get("max_steps") or 100
        cfg = config.from_dict({**run.config, "output_dir": ".", "model": {
            **run.config["model"], "name": str(tiny(family_of(run.config["model"]["name"])))}})
        model = build_model(cfg, LabelSpace(("prompt_harmful",), ("S1",)), methods.Context(total_steps=steps))
        check_trainable(model, cfg.method.name, cfg.method.build())


# ---- a real study ---------------------------------------------------------------------------------------------

def test_study_runs_selects_reports_and_resumes(tmp_path, tiny):
    study = load_study(write_study(tmp_path, tiny("bert")))
    run_study(study, workers=2, show_progress=False)
    results = write_report(study)
    out = study.output_dir

    # the broken arm failed (recorded with its error), and the study went on
    failed = {f["key"] for f in results["failures"]}
    assert failed == {"broken/lr=0.001/seed=0", "broken/lr=0.01/seed=0"}
    assert "positive integer" in read_result(study, study.run("", "broken", "lr=0.01", 0))["traceback"]

    # the candidate with the best validation figure was chosen, and ran with the other seed
    for arm in ("full", "lora"):
        chosen, figures = selection(study)[("", arm)]
        assert chosen == max(figures, key=figures.get)
        assert read_result(study, study.run("", arm, chosen, 1))["status"] == "ok"
    assert len([r for r in results["runs"] if r["status"] == "ok"]) == 6

    # every run scored the same rows; the table has each arm on each test set, the reference without a difference
    rows = results["rows"]
    f1 = {(r["arm"], r["dataset"]): r for r in rows if (r["output"], r["metric"]) == ("prompt_harmful", "f1")}
    assert set(f1) == {(a, d) for a in ("full", "lora") for d in ("all", "sample", "mean of test sets")}
    assert "difference" not in f1[("lora", "all")] and f1[("full", "all")]["seeds"] == 2
    lo, hi = f1[("full", "all")]["ci"]
    assert lo <= f1[("full", "all")]["mean"] <= hi
    assert f1[("full", "all")]["difference"] == pytest.approx(f1[("full", "all")]["mean"] - f1[("lora", "all")]["mean"])
    costs = results["costs"]
    assert costs["lora"]["trainable_params"] < costs["full"]["trainable_params"]
    assert costs["full"]["trainable_pct"] == pytest.approx(100.0)
    assert costs["broken"] == {}  # no finished run, no cost
    assert all(costs[a]["train_examples_per_s"] > 0 and costs[a]["inference_ms_per_example"] > 0 for a in ("full", "lora"))
    for name in ("results.csv", "results.json", "report.md", "plots/quality_vs_params.png", "plots/quality_vs_time.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "## Failed runs" in report and "| full |" in report and "Holm" in report
    # each test set's balance is stated, so a one-class set's F1 is read for what it is
    harmful = sum(ex.label("prompt_harmful") == 1 for ex in load_any(study.test["all"]).examples)
    assert f1[("full", "all")]["positives"] == harmful
    assert f"Positives: prompt {harmful} of {f1[('full', 'all')]['n']}" in report

    # run again: nothing is redone
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    run_study(study, workers=1, show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")} == stamps


def test_killed_study_resumes_losing_only_the_run_in_progress(tmp_path, tiny):
    path = write_study(tmp_path, tiny("bert"), steps=12, arms={"lora": {"method.name": "lora", "method.r": 4}},
                       search={}, seeds=[0, 1, 2])
    study = load_study(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "guardtune", "study", str(path), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    runs = study.search_runs()
    deadline = time.time() + 120
    while time.time() < deadline and read_result(study, runs[0]) is None:
        time.sleep(0.2)
    assert read_result(study, runs[0]) is not None, proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its worker, mid-way through the second run
    proc.wait()
    first = (run_dir(study, runs[0]) / "result.json").stat().st_mtime_ns
    assert read_result(study, runs[2]) is None

    run_study(study, show_progress=False)
    results = write_report(study)
    assert (run_dir(study, runs[0]) / "result.json").stat().st_mtime_ns == first  # not redone
    assert [r["status"] for r in results["runs"]] == ["ok", "ok", "ok"]
    assert json.loads((study.output_dir / "results.json").read_text())["costs"]["lora"]["seeds_ok"] == 3


# ---- a cascade as an arm --------------------------------------------------------------------------------------

def test_a_cascade_is_an_arm_of_the_study(tmp_path, tiny):
    """"Cascade vs big guard alone" is one study file: the cascade's stages are the study's own trained arm (at
    its chosen candidate and the same seed) and a TF-IDF baseline trained on the same data; it is tested on the
    same rows, against the reference, and the report says who decided."""
    import guardtune
    from guardtune.study.runner import cascade_runs

    path = write_study(tmp_path, tiny("bert"), arms={
        "lora": {"method.name": "lora", "method.r": 4},
        "cascade": {"cascade": {"stages": ["tfidf", "lora"], "rule": "rate", "target": 0.5}}})
    study = load_study(path)
    assert study.arm_names == ["lora", "cascade"] and study.total_runs == (2 + 1) + 2
    assert cascade_runs(study) == ([], ["cascade/seed=0: stage lora has no finished run",
                                        "cascade/seed=1: stage lora has no finished run"])
    run_study(study, workers=1, show_progress=False)
    results = write_report(study)
    assert not results["failures"]
    runs, waiting = cascade_runs(study)
    assert len(runs) == 2 and not waiting
    chosen = selection(study)[("", "lora")][0]
    for run in runs:  # each seed's cascade is built on that seed's trained stage, at the chosen candidate
        stage = run_dir(study, study.run("", "lora", chosen, run.seed)) / "guard"
        assert run.config["cascade"]["stages"] == ["tfidf", str(stage.resolve())]
        cascade = guardtune.load(run_dir(study, run) / "guard")
        assert type(cascade).__name__ == "Cascade" and len(cascade.bands) == 1
        result = read_result(study, run)
        decided = result["tests"]["all"]["decided"]
        assert sum(decided) == result["tests"]["all"]["n"] and 0 < decided[0] < sum(decided)
        # the study's arrays are the loaded cascade's own scores on the test rows
        test = load_any(study.test["all"]).examples
        with np.load(run_dir(study, run) / "arrays.npz") as arrays:
            assert np.allclose(arrays["all|prompt_harmful|p"], cascade.score(test)["prompt_harmful"], atol=1e-6)
    rows = {(r["arm"], r["dataset"]): r for r in results["rows"]
            if (r["output"], r["metric"]) == ("prompt_harmful", "auprc")}
    assert rows[("cascade", "all")]["seeds"] == 2 and "difference" in rows[("cascade", "all")]
    assert set(results["costs"]["cascade"]["decided"]) == {"all", "sample"}
    report = (study.output_dir / "report.md").read_text()
    assert "Cascade cascade: tfidf -> lora, rule rate (target 0.5)" in report and "who decided" in report

    # run again: nothing is redone
    stamps = {p: p.stat().st_mtime_ns for p in (study.output_dir / "runs").glob("*/result.json")}
    run_study(study, workers=1, show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in (study.output_dir / "runs").glob("*/result.json")} == stamps


@pytest.mark.parametrize("cascade, message", [
    ({"stages": ["lora"]}, "two or more"),
    ({"stages": ["tfidf", "nowhere"]}, "neither a trained arm"),
    ({"stages": ["tfidf", "lora"], "rule": "rate"}, "numeric target"),
    ({"stages": ["tfidf", "lora"], "colour": 1}, "colour"),
    ({"stages": ["tfidf", "lora"], "costs": [1.0]}, "one number"),
])
def test_bad_cascade_arms_fail_before_anything_runs(tmp_path, cascade, message):
    arms = {"lora": {"method.name": "lora", "method.r": 4}, "c": {"cascade": cascade}}
    with pytest.raises((ValueError, KeyError), match=message):
        load_study(write_study(tmp_path, tmp_path / "model", arms=arms))
