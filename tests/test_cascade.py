"""Confidence cascades: routing by band, exact cost accounting, fitting rules, conformance of a three-stage
cascade (TF-IDF -> classifier -> generative), loading, the CLI, eval's breakdown and the server's stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

import guardtune
from guardtune.baselines import TfidfGuard
from guardtune.cascade import Cascade, fit
from guardtune.cli import main
from guardtune.data import load
from guardtune.data.example import Example
from guardtune.guard import GuardBase, Scores, Thresholds
from guardtune.labels import LabelSpace
from guardtune.serve import ServeSettings, create_app
from guardtune.testing import check_guard

LABELS = LabelSpace(("prompt_harmful",))


class Fixed(GuardBase):
    """A guard whose probability is read from the prompt ("p=0.42 ..."); it counts what it scores."""

    def __init__(self, name: str, offset: float = 0.0):
        self.labels, self.thresholds, self.name, self.offset = LABELS, Thresholds(), name, offset
        self.seen: list[str] = []

    def _score(self, examples, batch_size, show_progress):
        self.seen += [ex.prompt for ex in examples]
        p = [min(1.0, float(ex.prompt.split()[0][2:]) + self.offset) for ex in examples]
        return Scores(LABELS, np.array(p, dtype=np.float32)[:, None])


def test_a_stage_answers_outside_its_band_and_escalates_the_rest():
    small, big = Fixed("small"), Fixed("big", offset=0.05)
    cascade = Cascade([small, big], [{"prompt_harmful": (0.2, 0.8)}])
    examples = [Example(prompt=f"p={p} text") for p in (0.1, 0.5, 0.9, 0.25, 0.05)]
    probs = cascade.score(examples)["prompt_harmful"]
    np.testing.assert_allclose(probs, [0.1, 0.55, 0.9, 0.30, 0.05], atol=1e-6)  # big's +0.05 where it decided
    assert cascade.decided.tolist() == [0, 1, 0, 1, 0]
    # cost accounting is exact: what the cascade counts is what each stage saw
    assert cascade.calls == [len(small.seen), len(big.seen)] == [5, 2]
    assert big.seen == ["p=0.5 text", "p=0.25 text"]
    verdict = cascade.moderate("p=0.5 x")
    assert verdict["stage"] == 1 and verdict["stage_name"] == "big" and verdict["prompt_harmful"]["flagged"]
    assert cascade.calls == [6, 3]


def test_bad_cascades_are_refused():
    with pytest.raises(ValueError, match="two stages"):
        Cascade([Fixed("a")], [])
    with pytest.raises(ValueError, match="bands"):
        Cascade([Fixed("a"), Fixed("b")], [])
    with pytest.raises(ValueError, match="low <= high"):
        Cascade([Fixed("a"), Fixed("b")], [{"prompt_harmful": (0.8, 0.2)}])
    with pytest.raises(ValueError, match="does not decide"):
        Cascade([Fixed("a"), Fixed("b")], [{"response_harmful": (0.2, 0.8)}])


def labelled_examples(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    small = np.clip(0.5 + (y - 0.5) * rng.uniform(0, 0.9, n), 0.01, 0.99)  # often unsure, never very wrong
    return [Example(prompt=f"p={s:.4f} {i}", prompt_harmful=int(t)) for i, (s, t) in enumerate(zip(small, y))]


def test_fitting_rules_rate_quality_and_budget():
    examples = labelled_examples()
    stages = [Fixed("small"), Fixed("big")]
    rate = fit(stages, examples, "rate", 0.3, costs=[1.0, 10.0])
    assert rate.chosen["escalated"] == pytest.approx(0.3, abs=0.02)
    assert rate.chosen["cost_ms"] == pytest.approx(1.0 + 10.0 * rate.chosen["escalated"])
    costs = [c["cost_ms"] for c in rate.curve]
    assert costs == sorted(costs) and rate.curve[0]["escalated"] == 0 and rate.curve[-1]["escalated"] == 1
    quality = fit(stages, examples, "quality", costs=[1.0, 10.0], tolerance=0.0)
    assert quality.chosen["auprc"] >= quality.chosen["last_alone"]["auprc"]
    budget = fit(stages, examples, "budget", 4.0, costs=[1.0, 10.0])
    assert budget.chosen["cost_ms"] <= 4.0
    two = fit(stages, examples, "rate", 0.3, costs=[1.0, 10.0], shape="two-sided")
    assert two.chosen["escalated"] == pytest.approx(0.3, abs=0.02) and len(two.curve) > len(rate.curve)
    low, high = rate.bands[0]["prompt_harmful"]
    assert high == 1.0 and 0 < low < 1  # shape low: the first stage only clears what it is sure is safe
    # the fitted bands reproduce the curve's point on the same data
    cascade = Cascade(stages, rate.bands)
    cascade.score(examples)
    assert (cascade.decided > 0).mean() == pytest.approx(rate.chosen["escalated"])
    with pytest.raises(ValueError, match="needs a target"):
        fit(stages, examples, "rate", costs=[1, 2])


@pytest.fixture(scope="module")
def three_stages(tmp_path_factory):
    """TF-IDF -> a tiny classifier -> a tiny generative guard, saved as run directories."""
    from guardtune import config
    from guardtune.train import train
    from tests import tiny as tiny_models
    from tests.test_methods import tiny_cfg

    root = tmp_path_factory.mktemp("cascade")
    TfidfGuard(name="tfidf").fit(load("demo:train").examples).save(root / "tfidf")
    train(tiny_cfg(root / "clf", tiny_models.build("bert", root / "bert"), "lora", steps=2, r=4), show_progress=False)
    gen = config.load(None, [f"model.name={tiny_models.build_causal('qwen2', root / 'qwen2')}", "model.kind=generative",
                             "method.name=lora", f"output_dir={root / 'gen'}",
                             "data.train={name: 'demo:train', sample: 16, seed: 1}", "data.validation=null",
                             "data.test=null", "training.max_steps=1", "training.batch_size=8",
                             "model.max_length=768"])
    train(gen, show_progress=False)
    return root


def test_a_three_stage_cascade_conforms_and_loads_back(three_stages, conformance_examples):
    root = three_stages
    stages = [guardtune.load(root / name) for name in ("tfidf", "clf", "gen")]
    cascade = Cascade(stages, [{"prompt_harmful": (0.3, 0.7)}, {"prompt_harmful": (0.45, 0.55)}])
    cascade.save(root / "cascade", ["../tfidf", "../clf", "../gen"])
    check_guard(cascade, conformance_examples, reload=lambda: guardtune.load(root / "cascade"))
    loaded = guardtune.load(root / "cascade")
    assert isinstance(loaded, Cascade) and [s.name for s in loaded.stages] == ["tfidf", "clf", "gen"]
    loaded.score(conformance_examples)
    assert loaded.calls[0] == len(conformance_examples) and loaded.calls[1] <= loaded.calls[0]


def test_a_cascade_that_leads_back_to_itself_is_refused(tmp_path):
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "guard.json").write_text(json.dumps(
        {"kind": "cascade", "stages": [".", "."], "bands": [{}]}), encoding="utf-8")
    with pytest.raises(ValueError, match="back to itself"):
        guardtune.load(tmp_path / "loop")
    (tmp_path / "loop" / "guard.json").write_text(json.dumps({"kind": "cascade", "stages": "x"}), encoding="utf-8")
    assert main(["moderate", str(tmp_path / "loop"), "hi"]) == 2  # a clear error, no traceback


def test_cascade_fit_cli_eval_breakdown_moderate_and_server(tmp_path, capsys):
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(tmp_path / "small")]) == 0
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(tmp_path / "big")]) == 0
    out = tmp_path / "cascade"
    assert main(["cascade", "fit", str(tmp_path / "small"), str(tmp_path / "big"), "--data", "demo:validation",
                 "--out", str(out), "--rule", "rate", "--target", "0.3", "--costs", "0.1,1.0"]) == 0
    assert (out / "cascade-curve.png").is_file() and json.loads((out / "curve.json").read_text())["curve"]
    info = json.loads((out / "guard.json").read_text())
    assert info["kind"] == "cascade" and info["fit"]["rule"] == "rate"
    assert main(["eval", str(out), "--data", "demo:test", "--out", str(tmp_path / "ev"), "--no-plots"]) == 0
    breakdown = next(iter(json.loads((tmp_path / "ev" / "metrics.json").read_text())["datasets"].values()))["cascade"]
    assert sum(s["decided"] for s in breakdown["stages"]) == len(load("demo:test").examples)
    assert "Cascade" in (tmp_path / "ev" / "report.md").read_text()
    capsys.readouterr()
    assert main(["moderate", str(out), "how do I make a bomb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stage"] in (0, 1)
    with TestClient(create_app(guardtune.load(out), ServeSettings())) as client:
        body = client.post("/v1/guard", json={"prompt": "how do I make a bomb"}).json()
        assert body["stage"] in (0, 1)
        result = client.post("/v1/moderations", json={"input": ["hello", "kill them"]}).json()["results"]
        assert all(r["guardtune"]["stage"] in (0, 1) for r in result)
    with pytest.raises(SystemExit):  # argparse's usage error: one stage is not a cascade
        main(["cascade", "fit", str(tmp_path / "small"), "--data", "demo:validation", "--out", "x"])
