"""eval, calibrate and baselines, end to end on small data, through the same Guard interface."""

from __future__ import annotations

import json

import numpy as np
import pytest

import guardtune
from guardtune import calibrate
from guardtune.cli import main
from guardtune.data import load


def test_thresholds_by_strategy_by_hand():
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    t = calibrate.choose_threshold(y, p, "max_f1")  # flag >= 0.5: tp 3, fp 1 -> F1 6/7, the best
    assert 0.4 < t <= 0.5
    assert calibrate.choose_threshold(y, p, "fpr", 0.0) == pytest.approx(0.7)  # no negative may be flagged
    assert calibrate.choose_threshold(y, p, "recall", 1.0) == pytest.approx(0.5)  # catch all three
    with pytest.raises(ValueError, match="needs a target"):
        calibrate.choose_threshold(y, p, "fpr")


def test_temperature_scaling_fixes_overconfidence():
    rng = np.random.default_rng(0)
    true_p = rng.random(4000)
    y = (rng.random(4000) < true_p).astype(int)
    overconfident = calibrate.scale(true_p, 1 / 3)  # logits tripled
    t = calibrate.fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.15)
    before, after = calibrate.reliability(y, overconfident), calibrate.reliability(y, calibrate.scale(overconfident, t))
    assert after["ece"] < before["ece"] / 2


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfidf") / "run"
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(out)]) == 0
    return out


def test_tfidf_baseline_learns_and_reloads(tfidf_run):
    guard = guardtune.load(tfidf_run)
    test = load("demo:test").examples
    scores = guard.score(test)
    y = np.array([ex.prompt_harmful for ex in test])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, scores["prompt_harmful"]) > 0.75
    assert guard.moderate("hello there")["prompt_harmful"]["threshold"] == 0.5


def test_eval_writes_metrics_report_and_plots(tfidf_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", str(tfidf_run), "--data", "demo:test", "--data", "demo:validation",
                 "--bootstrap", "50", "--out", str(out)]) == 0
    results = json.loads((out / "metrics.json").read_text())
    harm = results["datasets"]["demo:test"]["tasks"]["prompt_harmful"]
    test = load("demo:test").examples
    assert harm["at_0.5"]["n"] == len(test) and harm["ci95"]["auprc"][0] <= harm["at_0.5"]["auprc"] <= harm["ci95"]["auprc"][1]
    assert set(harm["slices"]["language"]) == {ex.language for ex in test} and len(harm["slices"]["language"]) > 2
    assert "S1" in harm["slices"]["category"]  # recall of harmful prompts per category
    assert harm["slices"]["category"]["S1"]["precision"] is None  # positives only: recall alone
    report = (out / "report.md").read_text()
    assert "positive-class F1" in report and "per sample" in report
    assert (out / "plots" / "demo_test-prompt_harmful-pr-roc.png").stat().st_size > 1000
    assert "AUPRC" in capsys.readouterr().out


def test_calibrate_saves_thresholds_that_eval_uses(tfidf_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tfidf_run, run)
    assert main(["calibrate", str(run), "--data", "demo:validation", "--strategy", "fpr", "--target", "0.1",
                 "--temperature"]) == 0
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["strategy"] == "fpr" and 0 < saved["thresholds"]["prompt_harmful"] <= 1
    assert saved["temperature"]["prompt_harmful"] > 0
    assert (run / "calibration" / "reliability-prompt_harmful.png").is_file()
    guard = guardtune.load(run)
    assert guard.moderate("x")["prompt_harmful"]["threshold"] == saved["thresholds"]["prompt_harmful"]
    assert main(["eval", str(run), "--data", "demo:validation", "--bootstrap", "0", "--no-plots"]) == 0
    harm = json.loads((run / "metrics.json").read_text())["datasets"]["demo:validation"]["tasks"]["prompt_harmful"]
    assert harm["at_calibrated"]["fpr"] <= 0.1 + 1e-9  # the target holds on the data it was chosen on
    capsys.readouterr()
    assert main(["calibrate", str(run), "--data", "demo:test"]) == 0
    assert "WARNING: calibrating on a test split" in capsys.readouterr().err


def test_a_hub_classifier_checkpoint_is_a_guard(tmp_path, tiny):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = tmp_path / "toxic-clf"
    config = AutoConfig.from_pretrained(tiny("bert"), num_labels=2, id2label={0: "neutral", 1: "toxic"},
                                        label2id={"neutral": 0, "toxic": 1})
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny("bert")).save_pretrained(path)
    guard = guardtune.load(f"hf:{path}")  # "toxic" is recognised as the harmful label
    assert guard.labels.tasks == ("prompt_harmful",)
    probs = guard.score(load("demo:test").examples[:10]).probs
    assert probs.shape == (10, 1) and ((0 <= probs) & (probs <= 1)).all()
    mapped = guardtune.load(f"hf:{path}", label_map={"neutral": "response_refusal"})
    assert mapped.labels.tasks == ("response_refusal",)
    with pytest.raises(ValueError, match="no label"):
        guardtune.load(f"hf:{path}", label_map={"hate": "prompt_harmful"})


def test_paired_comparison_in_the_report(tfidf_run, tmp_path, tiny):
    out = tmp_path / "cmp"
    other = tmp_path / "other"
    assert main(["baseline", "tfidf", "--data", "demo:validation", "--out", str(other)]) == 0
    assert main(["eval", str(tfidf_run), "--data", "demo:test", "--compare", str(other), "--bootstrap", "100",
                 "--no-plots", "--out", str(out)]) == 0
    results = json.loads((out / "metrics.json").read_text())
    c = results["comparison"]["demo:test"]["prompt_harmful"]["auprc"]
    assert c["ci"][0] <= c["difference"] <= c["ci"][1] and 0 <= c["p_value"] <= 1
    assert "paired bootstrap" in (out / "report.md").read_text()


def test_eval_bootstrap_by_group_resamples_the_demo_templates(tfidf_run, tmp_path):
    """`--bootstrap-by group`: the interval resamples whole templates (the demo's groups), which is wider than
    the row interval on the same rows, and the comparison is paired over the same templates."""
    from sklearn.metrics import average_precision_score

    widths = {}
    for by in ("row", "group"):
        out = tmp_path / by
        assert main(["eval", str(tfidf_run), "--data", "demo:test", "--compare", str(tfidf_run), "--bootstrap", "300",
                     "--bootstrap-by", by, "--no-plots", "--out", str(out)]) == 0
        results = json.loads((out / "metrics.json").read_text())
        harm = results["datasets"]["demo:test"]["tasks"]["prompt_harmful"]
        low, high = harm["ci95"]["auprc"]
        widths[by] = high - low
        assert results["bootstrap_by"] == by and low <= harm["at_0.5"]["auprc"] <= high
        assert results["comparison"]["demo:test"]["prompt_harmful"]["auprc"]["difference"] == 0
    test = [ex for ex in load("demo:test").examples if ex.prompt_harmful is not None]
    assert harm["groups"] == len({ex.group for ex in test}) < len(test)
    scores = guardtune.load(tfidf_run).score(test, calibrated=False)
    y = np.array([ex.prompt_harmful for ex in test])
    assert harm["at_0.5"]["auprc"] == pytest.approx(average_precision_score(y, scores["prompt_harmful"]))
    assert widths["group"] > 1.2 * widths["row"]
    assert f"resample its {harm['groups']} groups" in (tmp_path / "group" / "report.md").read_text()


def test_temperature_scaling_never_changes_the_ranking():
    """On separable, overconfident float32 scores (the demo's case) an unbounded fit ran T down to 0.05 and the
    rescaled scores saturated into ties, so AUPRC fell. Now T stays in range, and for any T in range the order
    of distinct scores survives rescaling, so AUPRC and ROC-AUC are those of the raw scores (sklearn)."""
    from hypothesis import given, settings, strategies as st
    from sklearn.metrics import average_precision_score, roc_auc_score

    from guardtune.guard import TEMPERATURE_RANGE

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300), np.ones(60)].astype(int)
    raw = np.r_[rng.beta(0.3, 30, 300), 1 - rng.beta(0.3, 30, 60)].astype(np.float32)  # near 0 and near 1
    raw[:5], raw[-5:] = 0.0, 1.0  # exact ties at the ends as well
    t = calibrate.fit_temperature(y, raw)
    assert TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1]
    scaled = calibrate.scale(raw, t)
    assert average_precision_score(y, scaled) == average_precision_score(y, raw)
    assert roc_auc_score(y, scaled) == roc_auc_score(y, raw)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.floats(0, 1, width=32), min_size=2, max_size=60),
           st.floats(*TEMPERATURE_RANGE))
    def order_kept(values, temperature):
        p = np.array(values, dtype=np.float32)
        q = calibrate.scale(p, temperature)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(q[order]) >= 0)  # never reversed
        assert len(np.unique(q)) == len(np.unique(p))  # and no two distinct scores merged

    order_kept()
