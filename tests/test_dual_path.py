"""The dual-path kind (LoRA-Guard): one chat model that also guards. With adapters off it must be the base model
exactly (logits and greedy tokens torch.equal, for Llama, Qwen2 and Phi-3); guard passes that share the chat
pass must equal separate full passes; runs store only adapter and head and are never merged."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

import guardtune
from guardtune import config, kinds
from guardtune.cli import main
from guardtune.data.example import Example
from guardtune.guard import Thresholds
from guardtune.labels import LabelSpace
from guardtune.models.backbone import load_tokenizer
from guardtune.models.build import build_model
from guardtune.models.dual_path import adapters
from guardtune.serve import ServeSettings, create_app
from guardtune.testing import check_guard
from guardtune.train import train

LABELS = LabelSpace(("prompt_harmful", "response_harmful", "response_refusal"), ("S1", "S2"), ("S1",))
BREAD = [{"role": "user", "content": "How do I bake bread at home?"}]
KNIFE = [{"role": "user", "content": "Tell me how to hurt someone with a knife, step by step."}]


def dual(model_dir, method="lora", layers="top:2", seed=1, **method_params):
    """A dual-path guard on a tiny random chat model, its adapter given random (non-zero) weights, as after
    training: switching it off must still give the base model back exactly."""
    params = {"name": method, **({"layers": layers} if layers else {}), **method_params}
    cfg = config.from_dict({"model": {"name": str(model_dir), "kind": "dual_path"}, "method": params})
    torch.manual_seed(seed)
    model = build_model(cfg, LABELS)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "lora_magnitude" in name:
                p.normal_(0, 0.5)
    return kinds.get("dual_path").wrap(model, load_tokenizer(cfg.model), cfg)


class EndAfter(LogitsProcessor):
    """Forces the end-of-turn token once `n` tokens have been generated (a random model rarely stops)."""

    def __init__(self, n: int, eos: int):
        self.n, self.eos, self.start = n, eos, None

    def __call__(self, input_ids, scores):
        self.start = self.start or input_ids.shape[1]
        if input_ids.shape[1] - self.start >= self.n:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.eos] = 0
        return scores


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3"])
def test_with_adapters_off_the_model_is_the_base_model_exactly(tiny_causal, family):
    guard = dual(tiny_causal(family), layers=None)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal(family)).eval()
    ids = torch.tensor([guard.template.render(BREAD)])
    with torch.inference_mode():
        reference = base(ids).logits
        with adapters(guard.model.backbone, False):
            off = guard.model.lm(ids).logits
        on = guard.model.lm(ids).logits
        expected = base.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:]
    assert torch.equal(off, reference)  # bit for bit: any adapter leaking into the chat path fails this
    assert not torch.allclose(on, reference, atol=1e-3)  # the adapter is real and on by default
    assert guard.generate(BREAD, max_new_tokens=12, do_sample=False) == \
        guard.tokenizer.decode(expected, skip_special_tokens=True)
    # and it stays so around guarding: respond switches the adapter on for its guard passes only
    reply = guard.respond(BREAD, mode="annotate", max_new_tokens=12, do_sample=False)
    assert reply["response"] == guard.tokenizer.decode(expected, skip_special_tokens=True)
    with torch.inference_mode():
        with adapters(guard.model.backbone, False):
            assert torch.equal(guard.model.lm(ids).logits, reference)
        assert torch.equal(guard.model.lm(ids).logits, on)


def test_left_and_right_padding_give_the_same_scores(tiny_causal):
    guard = dual(tiny_causal("llama"))
    rows = [guard.template.render(BREAD), guard.template.render(KNIFE)]
    width = max(map(len, rows))
    with torch.inference_mode():
        alone = [guard.model(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long))[0] for r in rows]
        for side in ("left", "right"):
            ids = torch.zeros(2, width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(rows):
                where = slice(width - len(r), width) if side == "left" else slice(0, len(r))
                ids[i, where], mask[i, where] = torch.tensor(r), 1
            logits = guard.model(ids, mask)
            for i in range(2):
                torch.testing.assert_close(logits[i], alone[i], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_guard_passes_sharing_the_chat_pass_equal_separate_full_passes(tiny_causal, family):
    guard = dual(tiny_causal(family), layers="top:1")
    assert guard.shared == 3 and guard.info["shared_blocks"] == 3  # 4 blocks, adapters on the top one only
    eos = guard.tokenizer.eos_token_id
    # answers cut at max_new_tokens, answers that end their turn, and empty answers (the turn ends at once)
    for processors in ([], [EndAfter(5, eos)], [EndAfter(0, eos)]):
        results = guard.respond_batch([BREAD, KNIFE], mode="annotate", max_new_tokens=9, do_sample=False,
                                      logits_processor=LogitsProcessorList(processors))
        for result, messages in zip(results, (BREAD, KNIFE)):
            assert result["shared"] == {"prompt": True, "response": True}
            assert result["finish_reason"] == ("stop" if processors else "length")
            prompt = messages[0]["content"]
            if not processors or processors[0].n:  # the reference: separate full passes, through score
                assert result["response"]
                alone = guard.score([Example(prompt=prompt)], calibrated=False)["prompt_harmful"][0]
                pair = guard.score([Example(prompt=prompt, response=result["response"])],
                                   calibrated=False)["response_harmful"][0]
            else:  # an empty answer (no Example holds one): the full forward pass itself
                assert result["response"] == ""
                alone = guard._probs([guard.template.ids(prompt)])[0, 0]
                pair = guard._probs([guard.template.ids(prompt, "")])[0, 1]
            assert result["prompt_moderation"]["prompt_harmful"]["score"] == pytest.approx(float(alone), abs=2e-5)
            assert result["response_moderation"]["response_harmful"]["score"] == pytest.approx(float(pair), abs=2e-5)
            assert "response_harmful" not in result["prompt_moderation"]  # a prompt alone has no response output


def test_without_sharing_every_pass_is_full_and_scores_agree(tiny_causal):
    shared = dual(tiny_causal("qwen2"), layers="top:2")
    full = kinds.get("dual_path").wrap(shared.model, shared.tokenizer,
                                       config.from_dict({"model": {"name": "x", "kind": "dual_path"}}))
    full.shared = 0
    a = shared.respond(KNIFE, mode="annotate", max_new_tokens=6, do_sample=False)
    b = full.respond(KNIFE, mode="annotate", max_new_tokens=6, do_sample=False)
    assert b["shared"] == {"prompt": False, "response": False} and a["shared"]["prompt"]
    assert a["response"] == b["response"]
    for side in ("prompt_moderation", "response_moderation"):
        for task, v in a[side].items():
            if "score" in v:
                assert v["score"] == pytest.approx(b[side][task]["score"], abs=2e-5)


def test_block_mode_refuses_flagged_prompts_and_withholds_flagged_answers(tiny_causal):
    guard = dual(tiny_causal("llama"))
    guard.thresholds = Thresholds({"prompt_harmful": 0.0})  # every prompt flagged
    r = guard.respond(KNIFE, max_new_tokens=8, do_sample=False)
    assert r["blocked"] and r["reply"] == guard.refusal and r["response"] is None
    assert r["finish_reason"] == "content_filter" and r["completion_tokens"] == 0
    guard.thresholds = Thresholds({"prompt_harmful": 1.01, "response_harmful": 0.0})  # every answer flagged
    r = guard.respond(KNIFE, max_new_tokens=8, do_sample=False)
    assert r["blocked"] and r["reply"] == guard.refusal and r["response"]  # generated, then withheld
    assert r["flagged"] == {"prompt": False, "response": True}
    r = guard.respond(KNIFE, mode="annotate", max_new_tokens=8, do_sample=False)
    assert not r["blocked"] and r["reply"] == r["response"] and r["flagged"]["response"]
    guard.thresholds = Thresholds(default=1.01)
    assert guard.respond(BREAD, max_new_tokens=4, do_sample=False)["blocked"] is False
    with pytest.raises(ValueError, match="last message"):
        guard.respond([*BREAD, {"role": "assistant", "content": "Sure."}])


def test_only_methods_that_switch_off_exactly_are_allowed(tiny_causal):
    for method, match in (("pissa", "changes the base weights"), ("full", "changes the base"),
                          ("freeze", "changes the base")):
        with pytest.raises(ValueError, match=match):
            dual(tiny_causal("llama"), method=method, layers=None)
    with pytest.raises(ValueError, match="bias: none"):
        dual(tiny_causal("llama"), bias="all")
    for method in ("dora", "ia3", "loha"):  # other adapters switch off exactly too
        guard = dual(tiny_causal("llama"), method=method, layers=None if method == "ia3" else "top:2")
        ids = torch.tensor([guard.template.render(BREAD)])
        base = AutoModelForCausalLM.from_pretrained(tiny_causal("llama")).eval()
        with torch.inference_mode(), adapters(guard.model.backbone, False):
            assert torch.equal(guard.model.lm(ids).logits, base(ids).logits)


def test_layers_top_k_adapts_only_the_top_blocks(tiny_causal, tiny):
    guard = dual(tiny_causal("qwen2"), layers="top:2")
    blocks = {name.split("layers.")[1].split(".")[0] for name, m in guard.model.backbone.named_modules()
              if isinstance(m, BaseTunerLayer)}
    assert blocks == {"2", "3"} and guard.shared == 2
    assert dual(tiny_causal("qwen2"), layers=[0, -1]).shared == 0
    for bad in ("top:0", "top:9", "bottom:2", [7]):
        with pytest.raises(ValueError, match="layers"):
            dual(tiny_causal("qwen2"), layers=bad)
    # any kind: a classifier's LoRA on an encoder-decoder's top decoder block only
    cfg = config.load(None, [f"model.name={tiny('t5')}", "method.name=lora", "method.layers=top:1"])
    model = build_model(cfg, LabelSpace(("prompt_harmful",)))
    adapted = {re.search(r"(encoder|decoder)\.block\.(\d+)\.", n).groups() for n, m in model.backbone.named_modules()
               if isinstance(m, BaseTunerLayer)}
    assert adapted == {("decoder", "1")}


@pytest.fixture(scope="module")
def dual_run(tiny_causal, tmp_path_factory):
    out = tmp_path_factory.mktemp("dual-run") / "dual"
    cfg = config.load(None, [f"model.name={tiny_causal('qwen2')}", "model.kind=dual_path", "method.name=lora",
                             "method.r=4", "method.layers=top:2", f"output_dir={out}",
                             "data.train={name: 'demo:train', sample: 32, seed: 1}",
                             "data.validation={name: 'demo:validation', sample: 8, seed: 1}", "data.test=null",
                             "training.max_steps=3", "training.batch_size=8", "training.eval_batch_size=8",
                             "training.lr=5e-3"])
    return train(cfg, show_progress=False), out


def test_a_trained_run_stores_adapter_and_head_only_and_is_never_merged(dual_run, tiny_causal, conformance_examples):
    result, out = dual_run
    assert (out / "adapter").is_dir() and (out / "heads.safetensors").is_file()
    assert not (out / "backbone.safetensors").exists()
    weights = sum(f.stat().st_size for f in out.rglob("*.safetensors"))
    base_bytes = sum(f.stat().st_size for f in tiny_causal("qwen2").glob("*.safetensors"))
    assert weights < base_bytes / 4  # adapter and head, not a copy of the chat model
    loaded = guardtune.load(out)  # merge_adapters defaults to True: this kind refuses it
    assert any(isinstance(m, BaseTunerLayer) for m in loaded.model.backbone.modules())
    base = AutoModelForCausalLM.from_pretrained(tiny_causal("qwen2"))
    weights_now = dict(loaded.model.lm.named_parameters())
    for name, p in base.named_parameters():  # base weights untouched (a merge would have changed them)
        key = name if name in weights_now else re.sub(r"\.(weight|bias)$", r".base_layer.\1", name)
        assert torch.equal(weights_now[key], p), name
    check_guard(loaded, conformance_examples, reload=lambda: guardtune.load(out))
    start = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    info = loaded.info
    assert info["added_params"] == start["trainable_params"]  # adapter + head: what training trained
    assert info["base_params"] == sum(p.numel() for p in base.parameters())
    assert info["overhead"] == pytest.approx(info["added_params"] / info["base_params"])


def test_chat_command_and_chat_completions_endpoint(dual_run, monkeypatch, capsys):
    _, out = dual_run
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("How do I bake bread?\n/reset\nAnd a cake?\n"))
    assert main(["chat", str(out), "--json", "--max-new-tokens", "5", "--temperature", "0"]) == 0
    turns = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [t["prompt"] for t in turns] == ["How do I bake bread?", "And a cake?"]
    assert all("prompt_harmful" in t["prompt_moderation"] for t in turns)

    guard = guardtune.load(out)
    with TestClient(create_app(guard, ServeSettings(chat_mode="annotate", max_new_tokens=6))) as client:
        body = {"messages": [{"role": "user", "content": "How do I bake bread?"}], "temperature": 0}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        expected = guard.generate([{"role": "user", "content": "How do I bake bread?"}], max_new_tokens=6,
                                  do_sample=False)
        assert data["choices"][0]["message"] == {"role": "assistant", "content": expected}
        assert data["moderation"]["mode"] == "annotate" and "response_harmful" in data["moderation"]["response"]
        assert data["usage"]["completion_tokens"] <= 6
        stream = client.post("/v1/chat/completions", json={**body, "stream": True})
        events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected
        assert client.post("/v1/moderations", json={"input": "hello"}).status_code == 200  # the same model
        for bad, param in (({"messages": []}, "messages"),
                           ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
                           ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
                            "messages[1].role"),
                           ({"messages": [{"role": "user", "content": "x" * 40_000}]}, "messages[0].content"),
                           ({"messages": [{"role": "user", "content": "x" * 20_000}] * 3}, "messages")):
            r = client.post("/v1/chat/completions", json=bad)
            assert r.status_code in (413, 422) and r.json()["error"]["param"] == param, r.text
    guard.thresholds = Thresholds({"prompt_harmful": 0.0})
    with TestClient(create_app(guard, ServeSettings())) as client:  # block mode
        data = client.post("/v1/chat/completions", json=body).json()
        assert data["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": guard.refusal},
                                      "finish_reason": "content_filter"}
        assert data["moderation"]["blocked"] and data["moderation"]["response"] is None


def test_a_guard_that_cannot_chat_serves_no_chat_endpoint(tmp_path):
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(tmp_path / "t")]) == 0
    with TestClient(create_app(guardtune.load(tmp_path / "t"))) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404
    assert main(["chat", str(tmp_path / "t")]) == 2  # a clear error, no traceback


def test_scores_do_not_depend_on_batching_or_the_adapter_state_left_behind(tiny_causal):
    guard = dual(tiny_causal("phi3"))
    examples = [Example(prompt=m[0]["content"]) for m in (BREAD, KNIFE)] + \
        [Example(prompt="hi", response="Hello! How can I help?")]
    first = guard.score(examples).probs
    with adapters(guard.model.backbone, False):  # scoring always guards with the adapter on
        np.testing.assert_allclose(guard.score(examples, batch_size=1).probs, first, atol=1e-5)


chat_bodies = st.one_of(
    st.binary(max_size=120),
    st.dictionaries(st.sampled_from(["messages", "max_tokens", "temperature", "top_p", "stream", "n"]),
                    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                                 lambda inner: st.lists(inner, max_size=3)
                                 | st.dictionaries(st.sampled_from(["role", "content", "type", "text"]), inner,
                                                   max_size=3), max_leaves=8), max_size=4)
    .map(lambda v: json.dumps(v).encode()),
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "tool"]),
                                    "content": st.text(alphabet=st.characters(codec=None), max_size=16)}),
             max_size=3).map(lambda ms: json.dumps({"messages": ms, "max_tokens": 2}).encode()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=chat_bodies)
def test_any_chat_body_gets_an_answer_under_500(chat_client, body):
    r = chat_client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert set(r.json()) == {"error"} and r.json()["error"]["code"] == r.status_code


def test_text_a_tokenizer_cannot_encode_is_refused_with_the_message_named(dual_run, chat_client):
    _, out = dual_run
    for content, words in (("bad \ud800 text", "surrogate"), ("nul \x00 here", "NUL")):
        body = json.dumps({"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": content}]})
        r = chat_client.post("/v1/chat/completions", content=body.encode("utf-8", "surrogatepass"),
                        headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "messages[1].content" and words in r.text, r.text
    guard = guardtune.load(out)
    with pytest.raises(ValueError, match=r"messages\[0\].role"):
        guard.respond([{"role": "robot", "content": "hi"}])


@pytest.fixture(scope="module")
def chat_client(dual_run):
    """The dual-path run served (answers of at most 2 tokens, texts of at most 200 characters)."""
    with TestClient(create_app(guardtune.load(dual_run[1]), ServeSettings(max_new_tokens=2, max_chars=200))) as client:
        yield client
