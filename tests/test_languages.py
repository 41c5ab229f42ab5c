"""Per-language data balance, per-language thresholds (calibrate, moderate, serve, eval), too-small slices, and
language detection of hostile text."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import guardtune
from guardtune import calibrate
from guardtune.cli import main
from guardtune.data import load
from guardtune.data.example import Example
from guardtune.data.splits import balance
from guardtune.guard import Scores, Thresholds, verdict
from guardtune.labels import LabelSpace


def rows(language: str, harmful: int, benign: int, unlabelled: int = 0) -> list[Example]:
    return ([Example(prompt=f"{language} h{i}", prompt_harmful=1, language=language) for i in range(harmful)]
            + [Example(prompt=f"{language} b{i}", prompt_harmful=0, language=language) for i in range(benign)]
            + [Example(prompt=f"{language} u{i}", language=language) for i in range(unlabelled)])


def test_balance_per_language_caps_the_larger_class_and_drops_one_class_languages():
    examples = rows("zh", 50, 10, unlabelled=3) + rows("ko", 8, 8) + rows("th", 20, 0)
    kept, summary = balance(examples, "language", ratio=1.5, seed=0)
    count = lambda lang, y: sum(ex.language == lang and ex.prompt_harmful == y for ex in kept)  # noqa: E731
    assert (count("zh", 1), count("zh", 0)) == (15, 10)  # 1.5 x the 10 benign rows
    assert (count("ko", 1), count("ko", 0)) == (8, 8)
    assert count("th", 1) == 0 and summary["th"] == {"kept": 0, "dropped": 20}  # harmful only: it would teach "th"
    assert sum(ex.prompt_harmful is None for ex in kept) == 3  # unlabelled rows are not the balance's business
    assert summary["zh"] == {"kept": 25, "dropped": 35}
    assert [ex.prompt for ex in kept] == [ex.prompt for ex in examples if ex in kept]  # original order
    assert balance(examples, "language", 1.5, seed=0)[0] == kept  # seeded
    assert balance(examples, "classes", 1.0)[1]["all"]["kept"] == 2 * 18  # 78 harmful vs 18 benign overall
    with pytest.raises(ValueError, match="balance_ratio"):
        balance(examples, "language", 0.5)


def brute_force_max_f1(y: np.ndarray, p: np.ndarray) -> float:
    """The best positive-class F1 over every candidate threshold, by scikit-learn."""
    from sklearn.metrics import f1_score

    return max(f1_score(y, p >= t) for t in np.unique(p))


def test_thresholds_per_language_are_each_languages_own_best_and_the_rest_fall_back():
    rng = np.random.default_rng(0)
    examples, probs = [], []
    for language, shift, n in (("zh", -0.25, 200), ("ar", 0.25, 200), ("sw", 0.0, 20)):  # sw: too few rows
        y = rng.random(n) < 0.5
        p = np.clip(0.5 + shift + np.where(y, 0.15, -0.15) + rng.normal(0, 0.12, n), 0.001, 0.999)
        examples += [Example(prompt=f"{language}{i}", prompt_harmful=int(t), language=language) for i, t in enumerate(y)]
        probs += list(p)
    labels = LabelSpace(("prompt_harmful",))
    scores = Scores(labels, np.array(probs, dtype=np.float32)[:, None])
    found = calibrate.calibrate_per_language(scores, examples, "max_f1", min_count=30)
    assert set(found["per_language"]) == {"zh", "ar"} and found["evidence"]["sw"]["prompt_harmful"]["own"] is False
    assert found["per_language"]["zh"]["prompt_harmful"] < 0.5 < found["per_language"]["ar"]["prompt_harmful"]
    for language in ("zh", "ar"):
        index = [i for i, ex in enumerate(examples) if ex.language == language]
        y = np.array([examples[i].prompt_harmful for i in index])
        p = scores.probs[index, 0]
        from sklearn.metrics import f1_score

        assert f1_score(y, p >= found["per_language"][language]["prompt_harmful"]) == pytest.approx(
            brute_force_max_f1(y, p))
    thresholds = Thresholds({"prompt_harmful": 0.5}, per_language=found["per_language"])
    assert thresholds.get("prompt_harmful", "zh") == found["per_language"]["zh"]["prompt_harmful"]
    assert thresholds.get("prompt_harmful", "sw") == thresholds.get("prompt_harmful") == 0.5

    class G:
        pass

    g = G()
    g.labels, g.thresholds = labels, thresholds
    row = Scores(labels, np.array([[0.45]], dtype=np.float32))
    assert verdict(g, row, 0, "zh")["prompt_harmful"]["flagged"] is True  # zh's threshold is below 0.45
    assert verdict(g, row, 0, "sw")["prompt_harmful"]["flagged"] is False and \
        verdict(g, row, 0, "sw")["thresholds_from"] == "global"


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tfidf") / "run"
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(out)]) == 0
    return out


def test_calibrate_per_language_then_moderate_serve_and_eval_use_it(tfidf_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tfidf_run, run)
    assert main(["calibrate", str(run), "--data", "demo:validation", "--data", "demo:test", "--per", "language",
                 "--min-count", "5"]) == 0
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["per"] == "language" and saved["per_language"]
    assert "per-language thresholds for" in capsys.readouterr().out
    language, own = next(iter(saved["per_language"].items()))
    guard = guardtune.load(run)
    assert guard.thresholds.per_language == saved["per_language"]
    v = guard.moderate("some text", language=language)
    assert v["prompt_harmful"]["threshold"] == pytest.approx(own["prompt_harmful"]) and v["thresholds_from"] == language
    assert guard.moderate("some text", language="xx")["thresholds_from"] == "global"

    # moderate --file: each line's language, else the detected one
    inbox = tmp_path / "inbox.jsonl"
    inbox.write_text(json.dumps({"id": "a", "prompt": "hello", "language": language}) + "\n"
                     + json.dumps({"id": "b", "prompt": "Das ist ein ganz normaler deutscher Satz über das Wetter."})
                     + "\n", encoding="utf-8")
    out = tmp_path / "verdicts.jsonl"
    assert main(["moderate", str(run), "--file", str(inbox), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["language"] == language and lines[1]["language"] == "de"

    # the server: the request's language, refused when it is not a language code
    from fastapi.testclient import TestClient

    from guardtune.serve import ServeSettings, create_app

    with TestClient(create_app(guard, ServeSettings())) as client:
        answer = client.post("/v1/guard", json={"prompt": "hello", "language": language}).json()
        assert answer["prompt_harmful"]["threshold"] == pytest.approx(own["prompt_harmful"])
        bad = client.post("/v1/guard", json={"prompt": "hello", "language": "EN; DROP"})
        assert bad.status_code == 422 and "language" in bad.text
        moderation = client.post("/v1/moderations", json={"input": "hello", "language": language}).json()
        assert moderation["results"][0]["guardtune"]["thresholds_from"] == language

    # eval: each language judged at its own threshold, small slices marked as such
    assert main(["eval", str(run), "--data", "demo:test", "--bootstrap", "50", "--no-plots",
                 "--out", str(tmp_path / "eval")]) == 0
    by_language = json.loads((tmp_path / "eval" / "metrics.json").read_text())["datasets"]["demo:test"]["tasks"][
        "prompt_harmful"]["slices"]["language"]
    assert by_language[language]["threshold"] == pytest.approx(own["prompt_harmful"])
    from guardtune.data import load

    test_rows = load("demo:test").examples
    for lang, m in by_language.items():  # too small exactly when a class has under 30 rows in that language
        labels = [ex.prompt_harmful for ex in test_rows if ex.language == lang and ex.prompt_harmful is not None]
        assert m["too_small"] == (min(sum(labels), len(labels) - sum(labels)) < 30)
    assert any(m["too_small"] for m in by_language.values())
    assert "too small" in (tmp_path / "eval" / "report.md").read_text()


def test_a_large_slice_has_intervals_and_is_not_too_small():
    from guardtune.evaluate import slices

    rng = np.random.default_rng(1)
    examples = rows("en", 40, 40) + rows("fr", 5, 40)
    y = np.array([ex.prompt_harmful for ex in examples])
    p = np.clip(y * 0.3 + rng.random(len(y)) * 0.7, 0, 1)
    out = slices(examples, y, p, 0.5, "prompt_harmful", Thresholds(), n_boot=200)["language"]
    assert not out["en"]["too_small"] and out["en"]["ci95"]["auprc"][0] <= out["en"]["auprc"] <= out["en"]["ci95"]["auprc"][1]
    assert out["fr"]["too_small"] and "ci95" not in out["fr"]


@pytest.mark.parametrize("text, expected", [
    ("今天天气真好，我们去公园散步吧", "zh"), ("이 영화 정말 재미없다 진짜 최악이야", "ko"),
    ("Das ist ein ganz normaler deutscher Satz über das Wetter.", "de"), ("12345 !!!", None), ("", None),
    ("\ud800 lone surrogate and \x00 NUL", "en"), ("x" * 100_000, None)])
def test_language_detection_never_crashes(text, expected):
    pytest.importorskip("pycld2", reason="language detection needs pycld2 (guardtune[multilingual])")
    from guardtune.language import detect

    found = detect(text)
    assert found == expected or (expected is None and (found is None or isinstance(found, str)))


def test_the_data_spec_keeps_only_the_languages_asked_for():
    kept = load({"name": "demo:test", "languages": ["zh", "de"]}).examples
    assert kept and {ex.language for ex in kept} == {"zh", "de"}
    with pytest.raises(ValueError, match="balance must be one of"):
        load({"name": "demo:test", "balance": "language-ish"})
