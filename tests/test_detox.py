"""Detoxification: edit tags, metrics against sacreBLEU and by hand, the rewriter and edit-tagger kinds on tiny
models, the copy and delete baselines, and the rewrite and eval commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sacrebleu
from hypothesis import given, settings
from hypothesis import strategies as st

import guardtune
from guardtune import config, detox
from guardtune.baselines import CopyRewriter, DeleteRewriter
from guardtune.cli import main
from guardtune.data import load
from guardtune.data.example import Example
from guardtune.edits import phrase_vocabulary, realise, tag_ids, tag_pair, tags_of
from guardtune.testing import check_rewriter
from guardtune.train import train

word = st.sampled_from(["you", "are", "a", "damn", "idiot", "nice", "person", "shut", "up", ",", "."])


@settings(max_examples=200, deadline=None)
@given(st.lists(word, max_size=12), st.lists(word, max_size=12))
def test_tags_realise_the_target_exactly(source, target):
    tags = tag_pair(source, target)
    assert len(tags) == len(source) + 1
    assert realise(source, tags) == target
    vocabulary = ["", *sorted({p for _, p in tags if p})]
    ids = tag_ids(tags, {p: k for k, p in enumerate(vocabulary)})
    assert tags_of(ids, vocabulary) == tags


def test_phrase_vocabulary_counts_insertions():
    pairs = [("you damn idiot", "you silly person"), ("a damn idiot", "a silly person"), ("shut up", "please stop")]
    assert phrase_vocabulary(pairs, 5) == ["silly person", "please stop"]


def test_metrics_match_sacrebleu_and_hand_computation():
    outputs = ["you are not nice", "go away please", "hello"]
    refs = [["you are not nice", "you are unkind"], ["please go away"], ["hi", "hello there"]]
    streams = [["you are not nice", "please go away", "hi"], ["you are unkind", None, "hello there"]]
    assert detox.corpus_bleu(outputs, refs) == pytest.approx(sacrebleu.corpus_bleu(outputs, streams).score)
    assert detox.corpus_chrf(outputs, refs) == pytest.approx(sacrebleu.corpus_chrf(outputs, streams).score)
    per = detox.sentence_chrf(outputs, refs)
    assert per[0] == pytest.approx(1.0) and per[2] == pytest.approx(
        sacrebleu.sentence_chrf("hello", ["hi", "hello there"]).score / 100)
    assert detox.self_bleu(outputs, outputs) == pytest.approx(100.0)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    by_hand = np.mean([max(scorer.score(r, o)["rougeL"].fmeasure for r in rs) for o, rs in zip(outputs, refs)])
    assert detox.rouge(outputs, refs)["rougeL"] == pytest.approx(by_hand)


class FixedGuard:
    """A style guard flagging texts that contain 'idiot' (threshold 0.5)."""

    from guardtune.labels import LabelSpace

    labels = LabelSpace(("prompt_harmful",))

    def __init__(self):
        from guardtune.guard import Thresholds

        self.thresholds, self.name = Thresholds(), "fixed"

    def score(self, examples, batch_size=None, show_progress=False, calibrated=True):
        from guardtune.guard import Scores

        return Scores(self.labels, np.array([[0.9 if "idiot" in ex.prompt else 0.1] for ex in examples]))


class FixedEncoder:
    def similarity(self, a, b):
        return np.array([1.0 if x == y else 0.5 for x, y in zip(a, b)])


def test_joint_score_is_the_mean_of_per_sample_products():
    examples = [Example(prompt="you idiot", rewrite="you", meta={"references": ["you", "hey you"]}),
                Example(prompt="an idiot idea", rewrite="a bad idea", meta={"references": ["a bad idea"]})]
    outputs = ["you", "an idiot idea"]
    r = detox.evaluate_rewrites(examples, outputs, FixedGuard(), FixedEncoder(), n_boot=200)
    sta, sim = np.array([1.0, 0.0]), np.array([0.5, 1.0])
    fl = detox.sentence_chrf(outputs, [["you", "hey you"], ["a bad idea"]])
    assert r["sta"] == pytest.approx(0.5) and r["sim"] == pytest.approx(0.75)
    assert r["j"] == pytest.approx(float(np.mean(sta * sim * fl))) and r["protocol"] == "pan24"
    index, kept, human = detox.human_references(examples)
    assert index == [0] and human == ["you"] and detox.references_of(kept[0]) == ["hey you"]


def test_delete_baseline_learns_the_deleted_words(tmp_path):
    pairs = [Example(prompt=f"you damn {w}", rewrite=f"you {w}") for w in ("fool", "man", "cat", "dog")]
    rewriter = DeleteRewriter(min_count=3).fit(pairs)
    assert rewriter.lexicon_ == {"damn"}
    assert rewriter.rewrite([Example(prompt="the damn car")]) == ["the car"]
    loaded = guardtune.load(rewriter.save(tmp_path / "delete"))
    assert loaded.lexicon_ == {"damn"} and loaded.name == "delete"
    assert check_rewriter(CopyRewriter(), pairs)[:len(pairs)] == [ex.prompt for ex in pairs]


@pytest.fixture
def pairs_file(tmp_path):
    rows = []
    for i, (toxic, neutral) in enumerate([("you damn fool", "you fool"), ("shut up idiot", "please stop"),
                                          ("this damn car is bad", "this car is bad"), ("what a stupid idea",
                                                                                      "what a bad idea")] * 6):
        rows.append({"prompt": f"{toxic} {i}", "rewrite": f"{neutral} {i}", "prompt_harmful": 1, "id": f"p{i}"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def rewriter_cfg(model, data, out, kind="rewriter", method="lora", steps=3, **extra):
    return config.load(None, [f"model.name={model}", f"model.kind={kind}", f"method.name={method}",
                              f"output_dir={out}", f"data.train={data}", f"data.validation={data}", "data.test=null",
                              f"training.max_steps={steps}", "training.batch_size=8", "model.max_new_tokens=8",
                              *[f"{k}={v}" for k, v in extra.items()]])


@pytest.mark.parametrize("family", ["t5", "bart", "qwen2"])
def test_rewriter_kind_trains_saves_and_answers_every_input(tmp_path, tiny, tiny_causal, pairs_file, family):
    model = tiny_causal(family) if family == "qwen2" else tiny(family)
    result = train(rewriter_cfg(model, pairs_file, tmp_path / "rw"), show_progress=False)
    assert result.best is not None and "val_chrf" in result.best
    examples = load(str(pairs_file)).examples[:5]
    check_rewriter(result.guard, examples, reload=lambda: guardtune.load(tmp_path / "rw"))


def test_causal_rewriter_loss_is_on_the_rewrite_only(tiny_causal, pairs_file):
    from guardtune.kinds.rewriter import IGNORE, Formatter, PairEncoded, training_pairs
    from guardtune.models.backbone import load_tokenizer

    cfg = rewriter_cfg(tiny_causal("qwen2"), pairs_file, "unused")
    tokenizer = load_tokenizer(cfg.model)
    encoded = PairEncoded.build(training_pairs(load(str(pairs_file)).examples[:2], cfg),
                                Formatter(tokenizer, cfg.model.max_length, encoder_decoder=False))
    batch = encoded.batch([0, 1], tokenizer.pad_token_id)
    for row in range(2):
        labelled = (batch["labels"][row] != IGNORE).nonzero().flatten().tolist()
        assert labelled[0] == len(encoded.sources[row])  # the prompt carries no loss
        assert batch["labels"][row, labelled].tolist() == encoded.targets[row]  # the rewrite and its eos do
        assert tokenizer.decode(encoded.targets[row][:-1]).strip() == load(str(pairs_file)).examples[row].rewrite


def test_edit_tagger_learns_to_delete_on_the_embedded_encoder(tmp_path, pairs_file):
    cfg = rewriter_cfg("sentence-transformers/all-MiniLM-L6-v2", pairs_file, tmp_path / "tagger", kind="edit_tagger",
                       method="full", steps=40, **{"training.lr": 5e-4, "model.phrase_vocab": 10})
    result = train(cfg, show_progress=False)
    assert config.load(tmp_path / "tagger" / "config.yaml").model.phrases  # the vocabulary is part of the run
    start = json.loads((tmp_path / "tagger" / "log.jsonl").read_text().splitlines()[0])
    assert start["train_set"]["pairs"] == 24 and start["train_set"]["pairs_left_out"] >= 0  # coverage is logged
    examples = load(str(pairs_file)).examples[:8]
    outputs = check_rewriter(result.guard, examples, reload=lambda: guardtune.load(tmp_path / "tagger"))
    exact = np.mean([o == ex.rewrite for o, ex in zip(outputs, examples)])
    assert exact >= 0.75, list(zip(outputs, [ex.rewrite for ex in examples]))


def test_rewrite_and_eval_commands(tmp_path, pairs_file, capsys):
    delete = tmp_path / "delete"
    assert main(["baseline", "delete", "--data", str(pairs_file), "--out", str(delete)]) == 0
    assert main(["rewrite", str(delete), "you damn fool"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "you fool"
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "this damn car"}\n{"id": 2, "prompt": "   "}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["rewrite", str(delete), "--file", str(source), "--out", str(out)]) == 0
    assert [json.loads(line)["rewrite"] for line in out.read_text().splitlines()] == ["this car", ""]
    assert main(["rewrite", str(delete), "--file", str(source), "--out", str(out)]) == 0  # resumed: nothing new
    assert len(out.read_text().splitlines()) == 2
    style = tmp_path / "style"
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(style)]) == 0
    assert main(["eval", str(delete), "--data", str(pairs_file), "--style-guard", str(style), "--bootstrap", "50",
                 "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "detox_metrics.json").read_text())
    rows = metrics["datasets"][next(iter(metrics["datasets"]))]["systems"]
    assert {"delete", "copy"} <= set(rows) and rows["copy"]["self_bleu"] == pytest.approx(100.0)
    assert rows["delete"]["chrf"] > rows["copy"]["chrf"]
    assert "| delete |" in (tmp_path / "ev" / "detox_report.md").read_text()
    assert metrics["plots"] and (tmp_path / "ev" / metrics["plots"][0]).stat().st_size > 0
    assert main(["rewrite", str(style), "text"]) == 2  # a guard is not a rewriter: a clear error


def test_the_detox_endpoint_rewrites_only_what_the_guard_flags(tmp_path):
    import httpx

    from guardtune.baselines import TfidfGuard
    from guardtune.guard import GuardBase
    from tests.test_serve import server

    class Failing:
        """A rewriter that fails on one text."""
        name = "failing"

        def rewrite(self, examples, batch_size=None, show_progress=False):
            if any("boom" in ex.prompt for ex in examples):
                raise ValueError("cannot rewrite")
            return [ex.prompt.replace("damn ", "") for ex in examples]

    guard = TfidfGuard(name="tox").fit([Example(prompt=f"you damn {w}", prompt_harmful=1) for w in "abcdef"] +
                                       [Example(prompt=f"a nice {w}", prompt_harmful=0) for w in "abcdef"])
    assert isinstance(guard, GuardBase)
    delete = DeleteRewriter(min_count=1).fit([Example(prompt="you damn fool", rewrite="you fool")])
    texts = ["you damn a", "a nice b"]
    with server(guard, rewriter=delete) as (url, _):
        plain = httpx.post(f"{url}/v1/detox", json={"input": texts}).json()
        only = httpx.post(f"{url}/v1/detox", json={"input": texts, "only_flagged": True, "scores": True}).json()
        moderation = httpx.post(f"{url}/v1/moderations", json={"input": texts[0]})
        bad = httpx.post(f"{url}/v1/detox", json={"input": ["fine", "bad \u0000 text"]})
    assert [r["rewrite"] for r in plain["results"]] == ["you a", "a nice b"]
    assert [r["rewritten"] for r in only["results"]] == [True, False]  # the benign text is left as it is
    first = only["results"][0]
    assert first["score_before"] > 0.5 and first["score_after"] < first["score_before"]  # the guard's own view
    from guardtune.detox import SentenceEncoder

    assert first["similarity"] == pytest.approx(float(SentenceEncoder().similarity([texts[0]], ["you a"])[0]),
                                                abs=1e-5)  # SIM, as the offline metric computes it
    assert moderation.status_code == 200  # the guard's routes are served beside /v1/detox
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "input[1]"
    for policy, expected in (("closed", ""), ("open", "boom here")):
        with server(None, rewriter=Failing(), fail=policy) as (url, _):
            r = httpx.post(f"{url}/v1/detox", json={"input": ["boom here", "you damn x"]})
            no_guard = httpx.post(f"{url}/v1/detox", json={"input": "x", "only_flagged": True})
            missing = httpx.get(f"{url}/v1/moderations")
        assert [x["rewrite"] for x in r.json()["results"]] == [expected, "you x"]  # the failure stays with its text
        assert r.headers["x-guardtune-failure"] == policy
        assert no_guard.status_code == 400 and missing.status_code == 404


@pytest.mark.shared_data
@pytest.mark.slow
def test_the_detox_command_runs_end_to_end(shared_root, tmp_path, capsys):
    from guardtune.baselines import TfidfGuard

    out = tmp_path / "detox"
    TfidfGuard(name="style-guard").fit(load({"name": "paradetox_style:train", "sample": 400, "seed": 0}).examples) \
        .save(out / "style-guard")  # already there: the command keeps it (the full one takes a minute)
    assert main(["detox", "--out", str(out), "--quiet", "--bootstrap", "20",
                 "--test", "{name: 'paradetox:test', sample: 40, seed: 0}",
                 "data.train={name: 'paradetox:train', sample: 200, seed: 0}", "training.max_steps=4",
                 "data.validation={name: 'paradetox:validation', sample: 20, seed: 0}", "model.phrase_vocab=50"]) == 0
    metrics = json.loads((out / "eval" / "detox_metrics.json").read_text())
    systems = next(iter(metrics["datasets"].values()))["systems"]
    assert {"edit tagger", "delete", "copy", "human references"} <= set(systems)
    assert all(0 <= systems[s]["j"] <= 1 for s in systems)
    assert main(["rewrite", str(out / "tagger"), "you are a damn idiot"]) == 0


@pytest.mark.slow
def test_a_study_compares_rewriter_arms_on_j(tmp_path, tiny, pairs_file):
    import yaml

    from guardtune.baselines import TfidfGuard
    from guardtune.study import load_study, run_study, write_report

    TfidfGuard(name="style").fit(
        [Example(prompt=f"you damn {w} {i}", prompt_harmful=1) for i, w in enumerate("abcdefgh")] +
        [Example(prompt=f"you {w} {i}", prompt_harmful=0) for i, w in enumerate("abcdefgh")]).save(tmp_path / "style")
    study = {
        "name": "tagger-vocab", "output_dir": str(tmp_path / "study"),
        "train": {"output_dir": "unused", "model": {"name": str(tiny("bert")), "kind": "edit_tagger", "max_length": 32},
                  "method": {"name": "full"}, "data": {"train": str(pairs_file), "validation": str(pairs_file),
                                                      "test": None},
                  "training": {"max_steps": 2, "batch_size": 8, "eval_every": 2}},
        "arms": {"small": {"model.phrase_vocab": 2}, "large": {"model.phrase_vocab": 10}}, "reference": "small",
        "search": {"training.lr": [1e-3]}, "select": "val_chrf", "seeds": [0], "bootstrap": 50,
        "test": {"pairs": str(pairs_file)}, "detox": {"style_guard": str(tmp_path / "style")},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    loaded = load_study(path)
    run_study(loaded, workers=1, show_progress=False)
    results = write_report(loaded)
    assert not results["failures"], results["failures"]
    j = {(r["arm"], r["dataset"]): r for r in results["rows"] if (r["output"], r["metric"]) == ("rewrite", "j")}
    assert set(j) == {("small", "pairs"), ("large", "pairs")} and j[("large", "pairs")]["seeds"] == 1
    assert 0 <= j[("large", "pairs")]["mean"] <= 1 and "difference" in j[("large", "pairs")]
    assert "rewrite J" in (tmp_path / "study" / "report.md").read_text()
