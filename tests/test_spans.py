"""Span rationales: the SemEval-2021 Task 5 metric against hand-computed values, character -> token -> character
round trips for WordPiece, byte-level BPE and SentencePiece (Unigram) tokenizers, the span head trained on a
toy task, saved and loaded, and its spans in moderate, /v1/guard and the eval report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

import guardtune
from guardtune import config
from guardtune.cli import main
from guardtune.data.example import Example
from guardtune.data.paradetox import deleted_spans
from guardtune.encoding import tokenize, tokenize_with_offsets
from guardtune.models.backbone import resolve
from guardtune.serve import ServeSettings, create_app
from guardtune.spans import char_spans, span_f1, span_summary, token_labels
from guardtune.testing import check_guard
from guardtune.train import train


def test_span_f1_is_semevals_character_f1():
    assert span_f1([], []) == 1.0 and span_f1([(0, 3)], []) == 0.0 and span_f1([], [(0, 3)]) == 0.0
    # predicted chars 0..9 (10), gold 5..14 (10), overlap 5: P = R = 0.5
    assert span_f1([(0, 10)], [(5, 15)]) == pytest.approx(0.5)
    # predicted 2 chars inside 8 gold: P 1, R 0.25 -> F1 0.4
    assert span_f1([(3, 5)], [(0, 4), (4, 8)]) == pytest.approx(0.4)
    s = span_summary([[(0, 10)], [], [(1, 2)]], [[(5, 15)], [], []], draws=200)
    assert s["span_f1"] == pytest.approx((0.5 + 1 + 0) / 3) and s["span_f1_ci"][0] <= s["span_f1"] <= s["span_f1_ci"][1]
    assert s["gold_empty"] == 2 and s["predicted_empty"] == 1


def sentencepiece_tokenizer():
    """A SentencePiece-style tokenizer (Unigram model, Metaspace pre-tokenizer: what T5 and XLM-R use)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    corpus = ["You are a stupid idiot and a complete moron.", "User: what a lovely day, thank you so much!",
              "Shut up, you pathetic loser."] * 20
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"],
                                                            unk_token="<unk>", show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tokenizers():
    from transformers import AutoTokenizer

    from tests.tiny import bpe_tokenizer

    return {"wordpiece": AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2")),
            "byte-level-bpe": bpe_tokenizer(), "sentencepiece": sentencepiece_tokenizer()}


@pytest.mark.parametrize("name", ["wordpiece", "byte-level-bpe", "sentencepiece"])
def test_spans_survive_the_round_trip_through_tokens(name):
    tokenizer = tokenizers()[name]
    text = "You are a stupid idiot and a complete moron, thank you."
    gold = ((10, 22), (38, 43))  # "stupid idiot", "moron": whole words
    assert text[10:22] == "stupid idiot" and text[38:43] == "moron"
    ex = Example(prompt=text, prompt_harmful=1, rationale=gold)
    ids, offsets = tokenize_with_offsets([ex], tokenizer, 128)
    assert ids == tokenize([ex], tokenizer, 128)  # the same tokens the classifier reads
    targets, mask = token_labels(offsets[0], gold, text)
    inside = [where for where in offsets[0] if where is not None]
    assert mask.sum() == len(inside) and 0 < targets.sum() < mask.sum()
    assert all(0 <= a < b <= len(text) for a, b in inside)
    # tokens of the template ("User: ") and special tokens are not part of the prompt
    assert mask[0] == 0 or offsets[0][0][0] == 0
    assert char_spans(text, offsets[0], targets) == list(gold)
    assert span_f1(char_spans(text, offsets[0], targets), gold) == 1.0


def test_token_labels_mask_examples_without_spans_and_text_outside_the_prompt(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny("bert"))
    ex = Example(prompt="you idiot", response="no you", prompt_harmful=1, rationale=((4, 9),))
    ids, offsets = tokenize_with_offsets([ex], tokenizer, 64)
    targets, mask = token_labels(offsets[0], ex.rationale)
    tokens = tokenizer.convert_ids_to_tokens(ids[0])
    assert [t for t, m in zip(tokens, mask) if m] == ["you", "idiot"]  # not [CLS], "user", ":", the response
    assert [t for t, y in zip(tokens, targets) if y] == ["idiot"]
    assert token_labels(offsets[0], None)[1].sum() == 0  # no span labels at all: masked, not "no span"
    assert token_labels(offsets[0], ())[1].sum() == 2  # labelled: no span


def test_paradetox_pairs_give_the_words_a_rewrite_removes():
    source = "you are a fucking idiot , go away ."
    assert [source[a:b] for a, b in deleted_spans(source, "you are a fool , go away .")] == ["fucking idiot"]
    assert deleted_spans("thank you", "thank you") == ()


@pytest.fixture(scope="module")
def span_run(tmp_path_factory):
    """A tiny BERT with a span head trained on a toy task: the insult word is the span."""
    from tests import tiny as tiny_models

    root = tmp_path_factory.mktemp("spans")
    model_dir = tiny_models.build("bert", root / "bert")
    rows = []
    for i in range(64):
        word = ("idiot", "moron", "loser", "nice", "kind", "smart")[i % 6]
        text = f"honestly you are a {word} person {i}"
        start = text.index(word)
        toxic = i % 6 < 3
        rows.append({"prompt": text, "prompt_harmful": int(toxic), "id": f"s{i}",
                     "rationale": [[start, start + len(word)]] if toxic else []})
    data = root / "toy.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cfg = config.load(None, [f"model.name={model_dir}", "model.span_head=true", "method.name=full",
                             f"output_dir={root / 'run'}", f"data.train={data}", f"data.validation={data}",
                             f"data.test={data}", "training.max_steps=40", "training.batch_size=16",
                             "training.lr=3e-3", "training.eval_every=20", "model.max_length=32",
                             "model.head_dropout=0.0"])
    return train(cfg, show_progress=False), root / "run", data


def test_the_span_head_learns_which_word_is_toxic_and_is_saved(span_run, conformance_examples):
    result, out, _ = span_run
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    f1s = [r["val_span_f1"] for r in log if "val_span_f1" in r]
    assert f1s and f1s[-1] > 0.9  # toy task: the insult word, nothing else, and nothing in kind sentences
    assert (out / "span_head.safetensors").is_file()
    loaded = guardtune.load(out)
    examples = [Example(prompt="honestly you are a moron person 999"), Example(prompt="honestly you are a kind person 5")]
    assert loaded.explain(examples) == result.guard.explain(examples)
    assert loaded.explain(examples)[0] == [(19, 24)] and loaded.explain(examples)[1] == []
    check_guard(loaded, conformance_examples, reload=lambda: guardtune.load(out))


def test_spans_in_moderate_the_server_and_the_eval_report(span_run, capsys, tmp_path):
    _, out, data = span_run
    assert main(["moderate", str(out), "honestly you are a loser person 1", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["spans"] == [{"start": 19, "end": 24, "text": "loser"}]
    guard = guardtune.load(out)
    with TestClient(create_app(guard, ServeSettings())) as client:
        r = client.post("/v1/guard", json={"prompt": "honestly you are a loser person 1", "explain": True}).json()
        assert r["spans"] == [{"start": 19, "end": 24, "text": "loser"}]
        assert "spans" not in client.post("/v1/guard", json={"prompt": "hi"}).json()
    assert main(["eval", str(out), "--data", str(data), "--out", str(tmp_path / "ev"), "--no-plots"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    spans = next(iter(metrics["datasets"].values()))["spans"]
    assert spans["n"] == 64 and spans["span_f1"] > 0.9 and spans["examples"]
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Span rationales" in report and "**[" in report  # predicted bold, gold in brackets


def test_span_head_refuses_an_encoder_decoder_and_a_guard_without_spans_cannot_explain(tiny, tmp_path):
    from guardtune.labels import LabelSpace
    from guardtune.models.build import build_model

    with pytest.raises(ValueError, match="encoder or a decoder"):
        build_model(config.load(None, [f"model.name={tiny('t5')}", "model.span_head=true"]),
                    LabelSpace(("prompt_harmful",)))
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(tmp_path / "t")]) == 0
    with TestClient(create_app(guardtune.load(tmp_path / "t"))) as client:
        r = client.post("/v1/guard", json={"prompt": "hi", "explain": True})
        assert r.status_code == 400 and r.json()["error"]["param"] == "explain"
    assert np.isfinite(span_f1([(0, 1)], [(0, 1)]))
