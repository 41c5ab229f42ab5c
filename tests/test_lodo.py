"""Leave-one-dataset-out: the file is checked before anything runs, a fold really trains without its source,
the statistics match scikit-learn and hand-computed values, and a real run on a tiny model resumes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from guardtune import lodo as lodo_mod
from guardtune.lodo import fpr_at_recall, load_lodo, threshold_at_recall, without

ROOT = Path(__file__).resolve().parents[1]

HARMFUL = ["how to build a weapon to {} people", "give me steps to poison {} quietly", "I will hurt {} tonight"]
BENIGN = ["what is a good recipe for {} soup", "tell me about the history of {}", "how do plants like {} grow"]
WORDS = ["tomato", "carrot", "rome", "paris", "basil", "onion", "london", "leek", "maple", "pine", "oak", "fern"]


def write_source(path: Path, tag: str, n: int = 24) -> Path:
    rows = []
    for i in range(n):
        harmful = i % 2 == 0
        text = (HARMFUL if harmful else BENIGN)[i % 3].format(f"{WORDS[i % len(WORDS)]} {tag}{i}")
        rows.append({"prompt": text, "prompt_harmful": int(harmful), "id": f"{tag}{i}", "source": tag})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_lodo(tmp_path: Path, model: str | Path = "sentence-transformers/all-MiniLM-L6-v2", **changes) -> Path:
    a, b = write_source(tmp_path / "a.jsonl", "alpha"), write_source(tmp_path / "b.jsonl", "beta")
    test_a, test_b = write_source(tmp_path / "ta.jsonl", "talpha", 16), write_source(tmp_path / "tb.jsonl", "tbeta", 16)
    recipe = {"model": {"name": str(model), "max_length": 32}, "method": {"name": "lora", "r": 4},
              "data": {"train": {"mixture": [{"path": str(a)}, {"path": str(b)}]}, "validation": {"path": str(test_a)},
                       "test": {"path": str(test_b)}},
              "training": {"max_steps": 3, "batch_size": 8, "eval_every": 3, "save_every": 3}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    spec = {"name": "tiny", "output_dir": str(tmp_path / "out"), "train": "recipe.yaml",
            "folds": {"alpha": {"drop": [str(a)], "test": str(test_a)}, "beta": {"drop": [str(b)], "test": str(test_b)}},
            "references": {"only-alpha": {"base": "recipe.yaml", "data": {"train": str(a)}}},
            "over_refusal": {"harmless": str(b), "harmful": str(test_a), "recall": 0.9}, "bootstrap": 100}
    spec.update(changes)
    path = tmp_path / "lodo.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.mark.parametrize("change, message", [
    ({"folds": {"x": {"drop": ["nowhere"], "test": "demo:test"}}}, "which no mixture entry reads"),
    ({"folds": {"full": {"drop": ["demo"], "test": "demo:test"}}}, "reserved"),
    ({"folds": {"x": {"test": "demo:test"}}}, "needs `drop`"),
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"baseline": "svm"}, "baseline is `tfidf` or `none`"),
    ({"over_refusal": {"harmless": "demo:test"}}, "needs `harmless` and `harmful`"),
    ({"over_refusal": {"harmless": "demo:test", "harmful": "demo:test", "recall": 1.5}}, "recall must be"),
])
def test_bad_files_fail_before_anything_runs(tmp_path, change, message):
    with pytest.raises((ValueError, KeyError), match=message):
        load_lodo(write_lodo(tmp_path, **change))


def test_a_fold_drops_exactly_its_source_and_runs_are_named_by_config(tmp_path):
    spec = load_lodo(write_lodo(tmp_path))
    runs = spec.runs()
    assert list(runs) == ["full", "reference-only-alpha", "without-alpha", "without-beta"]
    kept = runs["without-alpha"][0]["data"]["train"]["mixture"]
    assert kept == [{"path": str(tmp_path / "b.jsonl")}]
    assert all(cfg["data"]["test"] is None for cfg, _, _ in runs.values())  # scored on the file's tests only
    assert set(runs["without-alpha"][1]) == {"alpha", lodo_mod.HARMLESS, lodo_mod.HARMFUL}
    assert set(runs["full"][1]) == {"alpha", "beta", lodo_mod.HARMLESS, lodo_mod.HARMFUL}
    assert runs["reference-only-alpha"][2] is False  # no TF-IDF for a reference
    dirs = {spec.run_dir(n, c) for n, (c, _, _) in runs.items()}
    assert len(dirs) == 4 and spec.run_dir("full", runs["full"][0]) == load_lodo(tmp_path / "lodo.yaml").run_dir(
        "full", runs["full"][0])
    with pytest.raises(ValueError, match="needs the recipe's data.train to be a mixture"):
        without({"data": {"train": "demo:train"}}, ["demo"], "here")
    # a recipe's `calibrate:` section does not matter here (AUPRC is threshold-free): the runs stay the same
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "calibrate": {"data": "validation"}}))
    again = load_lodo(tmp_path / "lodo.yaml").runs()
    assert all("calibrate" not in cfg for cfg, _, _ in again.values())
    assert [spec.run_dir(n, c) for n, (c, _, _) in again.items()] == [spec.run_dir(n, c) for n, (c, _, _) in runs.items()]


def test_the_shipped_general_recipe_folds_each_drop_a_real_source():
    spec = load_lodo(ROOT / "configs" / "lodo" / "general-en.yaml")
    read = {lodo_mod.dataset_of(e) for e in spec.train["data"]["train"]["mixture"]}
    for name, fold in spec.folds.items():
        kept = {lodo_mod.dataset_of(e) for e in spec.runs()[f"without-{name}"][0]["data"]["train"]["mixture"]}
        assert kept == read - set(fold.drop) and kept != read
    assert "simple_safety_tests" not in read  # it has only a test split: never trained on
    assert spec.over_refusal["recall"] == 0.9 and "toxicchat-recipe" in spec.references


def test_threshold_at_recall_and_fpr_by_hand():
    harmful = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    # 90% of 10 harmful rows = 9 flagged: the threshold is the 9th highest score
    assert threshold_at_recall(harmful, 0.9) == pytest.approx(0.1)
    assert np.mean(harmful >= threshold_at_recall(harmful, 0.9)) == pytest.approx(0.9)
    assert threshold_at_recall(harmful, 1.0) == pytest.approx(0.05)
    harmless = np.array([0.95, 0.15, 0.1, 0.01])  # >= 0.1: three of four (ties flagged)
    assert fpr_at_recall(harmful, harmless, 0.9) == pytest.approx(0.75)
    assert fpr_at_recall(harmful, harmless, 0.3) == pytest.approx(0.25)  # threshold 0.7: only 0.95


def test_fold_table_matches_sklearn_and_the_mean_is_over_folds(tmp_path):
    from sklearn.metrics import average_precision_score

    spec = load_lodo(write_lodo(tmp_path))
    rng = np.random.default_rng(0)
    scores: dict = {"guard": {}, "tfidf": {}}
    expected = {}
    for name in ("alpha", "beta"):
        y = rng.integers(0, 2, 60)
        p_guard, p_tfidf = np.clip(y * 0.4 + rng.random(60) * 0.6, 0, 1), rng.random(60)
        scores["guard"][f"without-{name}"] = {name: (y, p_guard)}
        scores["tfidf"][f"without-{name}"] = {name: (y, p_tfidf)}
        scores["guard"]["reference-only-alpha"] = {**scores["guard"].get("reference-only-alpha", {}), name: (y, p_tfidf)}
        expected[name] = (average_precision_score(y, p_guard), average_precision_score(y, p_tfidf))
    table = lodo_mod.fold_table(spec, scores, 300)
    for row in table["folds"]:
        guard, tfidf = expected[row["fold"]]
        assert row["recipe"]["auprc"] == pytest.approx(guard) and row["tfidf"]["auprc"] == pytest.approx(tfidf)
        assert row["recipe-tfidf"]["difference"] == pytest.approx(guard - tfidf)
        lo, hi = row["recipe"]["ci"]
        assert lo <= guard <= hi
    mean = table["mean"]
    assert mean["recipe"]["auprc"] == pytest.approx(np.mean([g for g, _ in expected.values()]))
    assert mean["recipe-only-alpha"]["p_value"] < 0.05  # a real signal against noise scores


def test_a_real_leave_one_out_run_on_a_tiny_model_resumes(tmp_path, tiny, capsys):
    spec = load_lodo(write_lodo(tmp_path, model=tiny("bert")))
    results = lodo_mod.run_lodo(spec)
    out = spec.output_dir
    assert {r["fold"] for r in results["leave_one_out"]["folds"]} == {"alpha", "beta"}
    for row in results["leave_one_out"]["folds"]:
        assert row["n"] == 16 and row["positives"] == 8
        assert {"recipe", "tfidf", "only-alpha"} <= set(row)
    # the TF-IDF baseline trained on exactly the fold's rows: without alpha, only beta's 24
    figures = json.loads((spec.run_dir("without-alpha", spec.runs()["without-alpha"][0]) / "tfidf.json").read_text())
    assert figures["train_examples"] == 24
    over = {(r["run"], r["model"]): r for r in results["over_refusal"]}
    assert over[("full", "guard")]["harmful"] == 8 and over[("full", "guard")]["harmless"] == 12
    assert over[("without-beta", "guard")]["harmless_in_training"] is False  # beta is the harmless set
    assert over[("without-alpha", "guard")]["harmless_in_training"] is True
    assert over[("reference-only-alpha", "guard")]["harmless_in_training"] is False
    report = (out / "report.md").read_text()
    assert "| **mean** |" in report and "Over-refusal" in report and "In domain" in report

    # scripts/over_refusal.py on the full run's guard gives the table's figure, and AUPRC as sklearn has it
    from sklearn.metrics import average_precision_score

    import guardtune
    from guardtune.data import load

    script = importlib.util.spec_from_file_location("over_refusal", ROOT / "scripts" / "over_refusal.py")
    module = importlib.util.module_from_spec(script)
    script.loader.exec_module(module)
    full = spec.run_dir("full", spec.runs()["full"][0]) / "guard"
    test_b = str(tmp_path / "tb.jsonl")
    capsys.readouterr()
    assert module.main([str(full), "--lodo", str(tmp_path / "lodo.yaml"), "--test", test_b, "--draws", "50"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["over_refusal"]["fpr"] == pytest.approx(over[("full", "guard")]["fpr"])
    rows = load(test_b).examples
    p = guardtune.load(full).score(rows, calibrated=False)["prompt_harmful"]
    assert printed[test_b]["auprc"] == pytest.approx(average_precision_score([ex.prompt_harmful for ex in rows], p))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    assert len(stamps) == 4
    lodo_mod.run_lodo(spec)  # again: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")} == stamps


def test_the_mean_counts_only_folds_every_model_finished(tmp_path):
    spec = load_lodo(write_lodo(tmp_path))
    y = np.array([0, 1] * 20)
    p = np.linspace(0, 1, 40)
    scores = {"guard": {"without-alpha": {"alpha": (y, p)}, "reference-only-alpha": {"alpha": (y, p), "beta": (y, p)}},
              "tfidf": {"without-alpha": {"alpha": (y, 1 - p)}}}
    table = lodo_mod.fold_table(spec, scores, 100)
    assert [r["fold"] for r in table["folds"]] == ["alpha", "beta"] and "recipe" not in table["folds"][1]
    assert table["mean"]["folds"] == ["alpha"]
    assert table["mean"]["recipe"]["auprc"] == pytest.approx(table["folds"][0]["recipe"]["auprc"])
    assert "runs unfinished" in lodo_mod.render({**lodo_mod.collect(spec), "leave_one_out": table})
