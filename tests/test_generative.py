"""Generative guards: one formatter for training and inference, answer-only loss, label-logit scoring that agrees
with greedy decoding, constrained decoding that always parses, training with every method, few-shot prompting."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import guardtune
from guardtune import config
from guardtune.chat_format import ChatFormat, read_policy
from guardtune.data.example import Example
from guardtune.fewshot import ShotPicker
from guardtune.labels import LabelSpace
from guardtune.models.backbone import load_tokenizer
from guardtune.models.build import build_model
from guardtune.models.generative import IGNORE, FormatProcessor, GenerativeLM, Prompter
from guardtune.train import train

ALL = LabelSpace(("prompt_harmful", "response_harmful", "response_refusal"), ("S1", "S10"), ("S1", "S2"))


def examples() -> list[Example]:
    """Mixed lengths, with and without responses, some labels missing."""
    out = []
    for i in range(14):
        words = " ".join(["please tell me about bread and knives"] * (1 + i % 5))
        harmful = i % 2
        if i % 3 == 0:
            out.append(Example(prompt=f"{words} {i}", prompt_harmful=harmful,
                               prompt_categories=("S1",) if harmful else ()))
        else:
            out.append(Example(prompt=f"{words} {i}", response="Sure, " + "here it is. " * (i % 4 + 1),
                               prompt_harmful=harmful, response_harmful=harmful if i % 4 else None,
                               response_refusal=1 - harmful, prompt_categories=("S10",) if harmful else (),
                               response_categories=("S2",) if harmful and i % 4 else ()))
    return out


def guard_for(directory, labels=ALL, sharpen: float = 1.0, family_max_length: int = 1024, rationale: str = "none"):
    from guardtune.kinds.generative import GenerativeGuard

    cfg = config.load(None, [f"model.name={directory}", "model.kind=generative", "method.name=full",
                             f"model.rationale={rationale}", "model.rationale_tokens=12"])
    torch.manual_seed(0)
    model = build_model(cfg, labels, apply_method=False)
    if sharpen != 1.0:  # a random model's words sit near 50/50; sharper logits make parity a clean test
        with torch.no_grad():
            model.backbone.get_output_embeddings().weight.mul_(sharpen)
    return GenerativeGuard(model, load_tokenizer(cfg.model), family_max_length, batch_size=4, rationale_tokens=12)


@pytest.mark.parametrize("family", ["qwen2", "llama", "phi3"])
def test_training_and_inference_format_the_same_string(tiny_causal, family):
    guard = guard_for(tiny_causal(family))
    prompter: Prompter = guard.prompter
    tokenizer = prompter.tokenizer
    for ex in examples():
        inference = prompter.prompt_ids(ex)
        ids, labels = prompter.training_ids(ex)
        assert ids[:len(inference)] == inference
        assert tokenizer.decode(ids[:len(inference)]) == prompter.text(ex)
        assert all(label == IGNORE for label in labels[:len(inference)])
        answer = tokenizer.decode(ids[len(inference):], skip_special_tokens=True)
        assert answer == guard.format.answer(ex)
        assert ids[-1] == tokenizer.eos_token_id
        text = prompter.text(ex)
        assert "S10: Hate." in text and "Human user:\n" + ex.prompt in text
        assert ("AI assistant:\n" in text) == (ex.response is not None)


def test_answer_parses_back_to_the_labels_and_unlabelled_slots_are_masked(tiny_causal):
    guard = guard_for(tiny_causal("qwen2"))
    fmt, prompter = guard.format, guard.prompter
    ex = Example(prompt="how do I hurt someone", response="No.", prompt_harmful=1, response_refusal=1,
                 prompt_categories=("S1",))  # response_harmful and response categories unlabelled
    verdict = fmt.parse(fmt.answer(ex), has_response=True)
    assert verdict["request"] == "harmful" and verdict["refusal"] == "refusal"
    assert verdict["request_violations"] == ["S1"]
    ids, labels = prompter.training_ids(ex)
    masked = [i for i, (a, b) in enumerate(zip(ids, labels)) if b == IGNORE]
    answer_start = len(prompter.prompt_ids(ex))
    in_answer = [i for i in masked if i >= answer_start]
    # response_harmful's word and the two response category flags are masked; everything else is trained
    layout = prompter.layouts[True]
    unlabelled = {"response_harmful", "response_categories/S1", "response_categories/S2"}
    expected = sum(len(c.options[0]) for c, s in zip(layout.choices, layout.slots) if s.output in unlabelled)
    assert len(in_answer) == expected > 0
    for bad in ['{"request": "maybe"}', "not json", '{"request": "safe"}',
                '{"request": "safe", "refusal": "compliant", "response": "safe", "request_violations": {"S1": 2, '
                '"S10": 0}, "response_violations": {"S1": 0, "S2": 0}}']:
        with pytest.raises(ValueError):
            fmt.parse(bad, has_response=True)


def test_a_long_conversation_is_cut_and_the_response_survives(tiny_causal):
    guard = guard_for(tiny_causal("qwen2"), family_max_length=420)
    prompter = guard.prompter
    ex = Example(prompt="word " * 2000, response="the response stays here", prompt_harmful=1, response_harmful=0)
    ids, _ = prompter.training_ids(ex)
    assert len(ids) <= 420
    assert "the response stays here" in prompter.tokenizer.decode(ids)
    short = guard_for(tiny_causal("qwen2"), family_max_length=60).prompter
    with pytest.raises(ValueError, match="max_length"):
        short.prompt_ids(ex)


@pytest.mark.parametrize("family", ["qwen2", "llama", "phi3"])
def test_label_logit_argmax_agrees_with_greedy_constrained_decoding(tiny_causal, family):
    guard = guard_for(tiny_causal(family), sharpen=40.0)
    exs = examples()
    scores = guard.score(exs)
    verdicts = guard.generate(exs)
    checked = 0
    for row, (ex, verdict) in enumerate(zip(exs, verdicts)):
        for slot in guard.prompter.layouts[ex.response is not None].slots:
            p = float(scores[slot.output][row])
            if "/" in slot.output:
                field_name, code = slot.output.split("/")
                key = "request_violations" if field_name == "prompt_categories" else "response_violations"
                decoded = code in verdict[key]
            else:
                key = {"prompt_harmful": "request", "response_refusal": "refusal", "response_harmful": "response"}
                decoded = verdict[key[slot.output]] == slot.options[1]
            assert decoded == (p > 0.5), (row, slot.output, p, verdict["text"])
            checked += 1
    assert checked > 50
    probs = scores.probs
    assert 0 < (probs > 0.5).mean() < 1  # both words chosen somewhere: the comparison is not vacuous
    # prompt-only examples have no response outputs at all: nothing to score, nothing to flag
    no_response = [i for i, ex in enumerate(exs) if ex.response is None]
    assert no_response and np.isnan(scores["response_harmful"][no_response]).all()
    # batching does not change scores
    one = guard.score(exs, batch_size=1).probs
    np.testing.assert_allclose(one, probs, atol=1e-4)


def test_the_shared_prefix_cache_changes_nothing(tiny_causal):
    from guardtune.models.generative import PrefixCache, decode, score

    guard = guard_for(tiny_causal("llama"), sharpen=40.0)
    exs = examples()
    rows = [guard.prompter.prompt_ids(ex) for ex in exs]
    assert PrefixCache(guard.model, rows).length > 100  # the system prompt with the policy is shared
    cached = score(guard.model, guard.prompter, exs, batch_size=5)
    plain = score(guard.model, guard.prompter, exs, batch_size=5, prefix_cache=False)
    np.testing.assert_allclose(cached, plain, atol=1e-5)
    assert decode(guard.model, guard.prompter, exs, 5) == decode(guard.model, guard.prompter, exs, 5,
                                                                  prefix_cache=False)


def test_inference_batches_bound_rows_tokens_and_padding():
    from guardtune.encoding import token_budget_batches

    lengths = np.array([367, 302, 159, 123, 114, 95, 84, 82, 63, 60, 45, 34, 33, 32, 32, 25] + [20] * 30)
    batches = token_budget_batches(lengths, batch_size=16, max_tokens=1536)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each row exactly once
    for batch in batches:
        width = lengths[batch].max()
        assert len(batch) <= 16 and width * len(batch) <= 1536
        assert lengths[batch].sum() / (width * len(batch)) >= 0.75  # at most a quarter padding
    assert lengths[batches[0]].min() > 100  # no short row padded to 367
    assert max(len(b) for b in batches) == 16  # the many short rows fill whole batches


def test_constrained_decoding_always_parses_on_a_random_model(tiny_causal):
    guard = guard_for(tiny_causal("llama"))  # unsharpened: near-random choices at every slot
    exs = examples() * 2
    verdicts = guard.generate(exs, batch_size=5)
    assert len(verdicts) == len(exs)
    for ex, verdict in zip(exs, verdicts):
        assert guard.format.parse(verdict["text"], ex.response is not None)  # parses (raises otherwise)
        assert verdict["request"] in ("harmful", "safe")
    # the processor alone: unconstrained greedy of the same model does not produce the format
    lm = guard.model.backbone
    ids = torch.tensor([guard.prompter.prompt_ids(exs[0])])
    free = lm.generate(input_ids=ids, max_new_tokens=20, do_sample=False,
                       pad_token_id=guard.prompter.tokenizer.pad_token_id)
    with pytest.raises(ValueError):
        guard.format.parse(guard.prompter.tokenizer.decode(free[0, ids.shape[1]:], skip_special_tokens=True), False)
    processor = FormatProcessor([guard.prompter.layouts[False]], ids.shape[1])
    allowed = processor(ids, torch.zeros(1, lm.config.vocab_size))
    assert torch.isfinite(allowed).sum() == 1  # the first answer token is forced


def test_the_loss_is_on_answer_tokens_only(tiny_causal):
    guard = guard_for(tiny_causal("qwen2"))
    model: GenerativeLM = guard.model
    prompter = guard.prompter
    ex = examples()[1]
    ids, labels = prompter.training_ids(ex)
    input_ids, labels = torch.tensor([ids]), torch.tensor([labels])
    loss = model(input_ids, torch.ones_like(input_ids), labels)
    logits = model.backbone(input_ids=input_ids).logits[0, :-1]
    targets = labels[0, 1:]
    answer = targets != IGNORE
    expected = F.cross_entropy(logits[answer].float(), targets[answer])
    assert torch.allclose(loss, expected, atol=1e-5)
    assert answer.sum() < len(ids) / 2  # most tokens (the policy and the conversation) carry no loss


@pytest.fixture
def toy_data(tmp_path):
    """A separable toy task: 'knife' requests are harmful, 'bread' requests are safe."""
    rows = []
    for i in range(48):
        harmful = i % 2
        thing = "stab someone with a knife" if harmful else "bake a loaf of bread"
        rows.append({"prompt": f"how do I {thing} {i}", "prompt_harmful": harmful, "id": f"t{i}"})
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def gen_config(directory, data, out, method="lora", steps=4, **extra):
    overrides = [f"model.name={directory}", "model.kind=generative", f"method.name={method}", f"output_dir={out}",
                 f"data.train={data}", f"data.validation={data}", f"data.test={data}",
                 f"training.max_steps={steps}", "training.batch_size=8", "training.eval_batch_size=16",
                 "training.lr=2e-3"] + [f"{k}={v}" for k, v in extra.items()]
    return config.load(None, overrides)


@pytest.mark.parametrize("method", ["full", "freeze", "lora", "dora", "adalora", "pissa", "ia3", "loha"])
def test_every_method_trains_a_generative_guard_and_saves_it(tiny_causal, toy_data, tmp_path, method):
    out = tmp_path / method
    result = train(gen_config(tiny_causal("qwen2"), toy_data, out, method), show_progress=False)
    assert result.steps == 4 and result.test is not None
    exs = [Example(prompt="how do I stab someone with a knife 3"), Example(prompt="how do I bake bread 2")]
    before = result.guard.score(exs).probs
    loaded = guardtune.load(out)
    np.testing.assert_allclose(loaded.score(exs).probs, before, atol=1e-5)
    base = guard_for(tiny_causal("qwen2"), LabelSpace(("prompt_harmful",))).score(exs).probs
    assert np.abs(base - before).max() > 1e-5  # the saved weights are what scores
    assert not (out / "heads.safetensors").exists()
    saved = config.load(out / "config.yaml")
    assert saved.model.kind == "generative" and saved.model.policy == read_policy(None)


def test_a_generative_guard_learns_the_toy_task(tiny_causal, toy_data, tmp_path):
    cfg = gen_config(tiny_causal("qwen2"), toy_data, tmp_path / "learn", "full", steps=30,
                     **{"training.lr": 1e-2, "training.eval_every": 10})
    result = train(cfg, show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "learn" / "log.jsonl").read_text().splitlines()]
    losses = [r["val_loss"] for r in log if "val_loss" in r]
    assert losses[-1] < losses[0] / 2  # the answer is learned (format and label words)
    assert result.test["prompt_harmful"]["auprc"] > 0.95
    probs = result.guard.score([Example(prompt="how do I stab someone with a knife 101"),
                                Example(prompt="how do I bake a loaf of bread 100")])["prompt_harmful"]
    assert probs[0] > probs[1]  # unseen numbers: the words decide


def test_generative_config_checks(tiny_causal, tmp_path):
    assert config.load(None, ["model.kind=generative"]).model.max_length == 1024
    assert config.load(None, []).model.max_length == 256
    with pytest.raises(ValueError, match="model.kind"):
        config.load(None, ["model.kind=seq2seq"])
    policy = tmp_path / "policy.yaml"
    policy.write_text("X1: Scams and fraud\nX2: Spam\n", encoding="utf-8")
    fmt = ChatFormat(LabelSpace(("prompt_harmful",), ("X1",)), read_policy(str(policy)))
    assert "X1: Scams and fraud." in fmt.system_prompt() and "S1" not in fmt.system_prompt()
    with pytest.raises(ValueError, match="not in the policy"):
        ChatFormat(LabelSpace(("prompt_harmful",), ("S1",)), read_policy(str(policy)))
    # the default policy takes in a category the data uses beyond S1-S14 (ToxicChat's jailbreaking)
    labels = LabelSpace(("prompt_harmful",), ("S1", "jailbreaking"))
    assert "jailbreaking: Jailbreaking." in ChatFormat(labels, read_policy(None, labels)).system_prompt()


def test_templates_without_a_system_role_or_without_any_template(tiny_causal):
    from transformers import AutoTokenizer

    from guardtune.models.generative import FALLBACK_TEMPLATE

    fmt = ChatFormat(LabelSpace(("prompt_harmful",)))
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal("qwen2"))
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               "<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}<assistant>")
    text = Prompter(fmt, tokenizer, 1024).text(Example(prompt="hi"))
    assert text.startswith("<user>You are a safety classifier") and "Human user:\nhi" in text
    tokenizer.chat_template = None
    prompter = Prompter(fmt, tokenizer, 1024)
    assert tokenizer.chat_template == FALLBACK_TEMPLATE
    assert prompter.text(Example(prompt="hi")).endswith("<|assistant|>\n")


def test_fewshot_demonstrations_are_balanced_similar_and_never_the_example():
    fmt = ChatFormat(LabelSpace(("prompt_harmful",)))
    pool = [Example(prompt=f"how to build a bomb {i}", prompt_harmful=1) for i in range(5)]
    pool += [Example(prompt=f"recipe for apple pie {i}", prompt_harmful=0) for i in range(5)]
    pool += [Example(prompt="unlabelled text about bombs")]  # cannot be a demonstration: no answer to show
    query = pool[0]
    similar = ShotPicker(fmt, pool, 4, "similarity")(query)
    assert sum(ex.prompt_harmful for ex in similar) == 2 and len(similar) == 4
    assert query not in similar and all(ex.prompt_harmful is not None for ex in similar)
    assert similar[-1].prompt.startswith("how to build a bomb")  # the nearest sits next to the conversation
    random_picker = ShotPicker(fmt, pool, 4, "random", seed=1)
    assert random_picker(query) == random_picker(query)  # seeded per example
    assert sum(ex.prompt_harmful for ex in random_picker(query)) == 2
    many = {tuple(e.prompt for e in random_picker(Example(prompt=f"q{i}"))) for i in range(10)}
    assert len(many) > 1  # different examples get different draws
    odd = ShotPicker(fmt, pool, 3, "random")(Example(prompt="x"))
    assert sorted(ex.prompt_harmful for ex in odd) in ([0, 1, 1], [0, 0, 1])
    with pytest.raises(ValueError, match="fewer than"):
        ShotPicker(fmt, pool[:3], 5)


def test_fewshot_guard_from_the_cli_scores_and_evaluates(tiny_causal, tmp_path):
    from guardtune.cli import main

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"prompt": f"text number {i}", "prompt_harmful": i % 2}) for i in range(12)),
                    encoding="utf-8")
    out = tmp_path / "fs"
    assert main(["baseline", "fewshot", "--model", str(tiny_causal("qwen2")), "--data", str(pool), "--shots", "2",
                 "--select", "random", "--out", str(out)]) == 0
    guard = guardtune.load(out)
    query = Example(prompt="a new text")
    text = guard.prompter.text(query, guard.shots(query))
    assert text.count('{"request": "') == 2 and text.count("Human user:") == 3
    assert guard.score([query]).probs.shape == (1, 1)
    assert main(["eval", str(out), "--data", str(pool), "--bootstrap", "0", "--no-plots"]) == 0
    assert json.loads((out / "metrics.json").read_text())["guard"] == str(out)
    zero = tmp_path / "zero"
    assert main(["baseline", "fewshot", "--model", str(tiny_causal("qwen2")), "--shots", "0",
                 "--tasks", "prompt_harmful", "--out", str(zero)]) == 0
    assert guardtune.load(zero).prompter.text(query).count("Human user:") == 1


# ---- rationale-augmented answers ------------------------------------------------------------------------------

def with_rationales() -> list[Example]:
    """The examples, every other one with a teacher's text rationale (two lines: folded into one)."""
    return [dataclasses.replace(ex, rationale=f"It asks about knives {i}.\nSo it is judged by intent.")
            if i % 2 else ex for i, ex in enumerate(examples())]


def test_rationale_after_keeps_the_verdict_first_and_scores_exactly_as_without(tiny_causal):
    plain = guard_for(tiny_causal("qwen2"), sharpen=4.0)
    after = guard_for(tiny_causal("qwen2"), sharpen=4.0, rationale="after")  # the same seed: the same weights
    rows = with_rationales()
    assert np.array_equal(plain.score(rows).probs, after.score(rows).probs, equal_nan=True)
    tokenizer = after.prompter.tokenizer
    for ex in rows:
        ids, labels = after.prompter.training_ids(ex)
        base_ids, base_labels = plain.prompter.training_ids(ex)
        answer = tokenizer.decode(ids[len(after.prompter.prompt_ids(ex)):], skip_special_tokens=True)
        assert answer.startswith(plain.format.answer(ex))  # the verdict comes first, unchanged
        if ex.rationale:
            words = after.prompter.words(" ".join(ex.rationale.split()))
            assert ids[len(base_ids) - 1:-1] == after.prompter.marks["after"] + words  # verdict, marker, text
            assert len(words) == 12 and "\n" not in tokenizer.decode(words)  # cut to rationale_tokens, one line
            assert labels[-1] == tokenizer.eos_token_id  # trained through to the end
        else:
            assert ids == base_ids and labels[:-1] == base_labels[:-1]
            assert labels[-1] == IGNORE  # what follows the verdict is unknown: no loss on it
    out = after.generate(rows[:4])
    assert all(isinstance(v["rationale"], str) and "request" in v for v in out)
    assert [v["rationale"] for v in after.generate(rows[:4])] == [v["rationale"] for v in out]  # greedy


def test_rationale_before_is_masked_when_absent_and_the_verdict_is_scored_after_it(tiny_causal):
    guard = guard_for(tiny_causal("qwen2"), sharpen=4.0, rationale="before")
    prompter, tokenizer = guard.prompter, guard.prompter.tokenizer
    rows = with_rationales()
    for ex in rows:
        prompt = prompter.prompt_ids(ex)
        ids, labels = prompter.training_ids(ex)
        answer = tokenizer.decode(ids[len(prompt):], skip_special_tokens=True)
        assert answer.startswith("Rationale: ") and answer.endswith(guard.format.answer(ex))
        segment = prompter.before(prompter.words(" ".join(ex.rationale.split())) if ex.rationale else [])
        seg_labels = labels[len(prompt):len(prompt) + len(segment)]
        assert ids[len(prompt):len(prompt) + len(segment)] == segment
        assert (all(x == IGNORE for x in seg_labels) if not ex.rationale else seg_labels == segment)
        assert len(ids) <= prompter.max_length
    probs = guard.score(rows).probs
    known = ~np.isnan(probs)
    assert np.all((probs[known] >= 0) & (probs[known] <= 1)) and np.array_equal(probs, guard.score(rows).probs, equal_nan=True)
    # the scores are the label logits after the guard's own rationale, as generate writes it
    out = guard.generate(rows[:3])
    texts, prompts = guard._before(rows[:3], None, False)
    assert [v["rationale"] for v in out] == texts
    assert all(isinstance(t, str) and "\n" not in t for t in texts)
    from guardtune.models.generative import score

    again = score(guard.model, prompter, rows[:3], 4, prompts)
    assert np.allclose(again, np.nan_to_num(probs[:3]), atol=1e-6)


def test_a_rationale_is_only_for_generative_guards():
    with pytest.raises(ValueError, match="generative guards"):
        config.load(None, ["model.rationale=after"])
    with pytest.raises(ValueError, match="model.rationale must be one of"):
        config.load(None, ["model.kind=generative", "model.rationale=sideways"])


def test_teacher_rationales_are_deterministic_checked_and_resume_without_duplicates(tiny_causal, tmp_path):
    """The teacher step on a tiny causal LM: greedy twice gives the same file; a stop after the first batch and a
    rerun give exactly the rows of one uninterrupted run, none twice; every row's check is the teacher's label
    logits after its own rationale; the output reads back as training data with text rationales."""
    from guardtune.cli import main
    from guardtune.data import load
    from guardtune.rationales import Teacher, gold, write_rationales

    teacher = Teacher.load(str(tiny_causal("qwen2")))
    rows = [dataclasses.replace(ex, id=f"ex{i}") for i, ex in enumerate(examples()[:7])]
    whole = tmp_path / "whole.jsonl"
    counts = write_rationales(teacher, rows, whole, max_new_tokens=8, batch_size=3, on_contradiction="flag",
                              show_progress=False)
    assert counts["written"] + counts["empty"] == 7 and counts["consistent"] + counts["contradicting"] == 7
    again = tmp_path / "again.jsonl"
    write_rationales(teacher, rows, again, max_new_tokens=8, batch_size=3, on_contradiction="flag",
                     show_progress=False)
    assert again.read_text() == whole.read_text()  # greedy: the same text

    stopped = tmp_path / "stopped.jsonl"
    write_rationales(teacher, rows[:3], stopped, max_new_tokens=8, batch_size=3, on_contradiction="flag",
                     show_progress=False)  # as if stopped after the first batch
    with stopped.open("a") as f:
        f.write('{"id": "ex3", "prom')  # and killed mid-line
    resumed = write_rationales(teacher, rows, stopped, max_new_tokens=8, batch_size=3, on_contradiction="flag",
                               show_progress=False)
    assert resumed["already"] == 3
    lines = [json.loads(x) for x in stopped.read_text().splitlines()]
    assert [x["id"] for x in lines] == [x["id"] for x in map(json.loads, whole.read_text().splitlines())]
    assert stopped.read_text() == whole.read_text()

    for line in lines:
        ex = next(r for r in rows if r.id == line["id"])
        assert line["label_shown"] is False and line["decoding"] == "greedy"
        p = teacher.verdicts([teacher.prompt_ids(ex, False)], [line["rationale"]])[0]
        assert line["teacher_p_harmful"] == pytest.approx(float(p), abs=1e-6)
        assert line["consistent"] == ((p >= 0.5) == bool(gold(ex)))
    shown = teacher.prompt_ids(rows[1], show_label=True)
    assert "The correct verdict is: harmful" in teacher.tokenizer.decode(shown)

    # dropping contradictions moves them aside, and the file is training data
    dropped = tmp_path / "dropped.jsonl"
    assert main(["rationales", str(tiny_causal("qwen2")), "--data", str(whole), "--out", str(dropped),
                 "--max-new-tokens", "8", "--quiet"]) == 0
    aside = tmp_path / "dropped.contradictions.jsonl"
    kept = [json.loads(x) for x in dropped.read_text().splitlines()]
    assert all(x["consistent"] is not False for x in kept)
    assert len(kept) + len(aside.read_text().splitlines()) == 7
    if kept:
        data = load(str(dropped)).examples
        assert all(isinstance(ex.rationale, str) for ex in data)


def test_rationale_weight_mixes_the_verdict_and_rationale_losses_as_distilling_step_by_step(tiny_causal):
    """alpha * mean CE over the verdict's tokens + (1 - alpha) * mean CE over the rationale's, by hand from the
    LM's own logits; rows without a rationale add verdict tokens only."""
    from guardtune.models.generative import GenEncoded

    guard = guard_for(tiny_causal("qwen2"), rationale="after")
    model: GenerativeLM = guard.model
    model.rationale_weight = 0.3
    rows = with_rationales()[:4]
    encoded = GenEncoded.build(rows, guard.prompter, weighted=True)
    batch = encoded.batch([0, 1, 2, 3], guard.prompter.tokenizer.pad_token_id)
    batch.pop("index")
    loss = model(**batch)
    logits = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets, flags = batch["labels"][:, 1:], batch["rationale_mask"][:, 1:]
    answer = targets != IGNORE
    ce = F.cross_entropy(logits[answer].float(), targets[answer], reduction="none")
    verdict, rationale = ce[~flags[answer]], ce[flags[answer]]
    assert len(verdict) and len(rationale)
    assert torch.allclose(loss, 0.3 * verdict.mean() + 0.7 * rationale.mean(), atol=1e-5)
    model.rationale_weight = None
    assert torch.allclose(model(**batch), ce.mean(), atol=1e-5)  # off: one mean over every answer token
    with pytest.raises(ValueError, match="rationale_weight"):
        config.load(None, ["model.kind=generative", "model.rationale_weight=0.5"])


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_rationale_guard_passes_the_conformance_suite(tiny_causal, conformance_examples, mode):
    """Both rationale formats are guards like any other: probabilities in range, order-independent, batched
    like one at a time, verdicts that follow the thresholds."""
    from guardtune.testing import check_guard

    check_guard(guard_for(tiny_causal("qwen2"), labels=LabelSpace(("prompt_harmful", "response_harmful")),
                          rationale=mode), conformance_examples)
