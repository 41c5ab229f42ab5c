"""The guard contract (guardtune.testing.check_guard) for every kind of guard and every baseline; every
classifier method runs it in test_methods.py. Plus the encoder-decoder backbones' block stacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer

import guardtune
from guardtune import config, kinds
from guardtune.cli import main
from guardtune.data import load
from guardtune.data.example import Example
from guardtune.labels import LabelSpace
from guardtune.loading import LOADERS
from guardtune.models.backbone import block_stacks, load_backbone
from guardtune.testing import applicable, check_guard
from guardtune.train import train


def test_every_kind_loads_through_the_one_registry():
    assert set(kinds.KINDS) <= set(LOADERS) and {"tfidf", "fewshot", "hf"} <= set(LOADERS)


def test_check_guard_catches_a_guard_that_scores_response_outputs_of_a_prompt_alone(conformance_examples):
    from guardtune.guard import GuardBase, Scores, Thresholds

    class Leaky(GuardBase):  # overrides score, bypassing the shared NaN masking: the bug this contract catches
        labels = LabelSpace(("prompt_harmful", "response_refusal"))
        thresholds, name = Thresholds(), "leaky"

        def score(self, examples, batch_size=None, show_progress=False, calibrated=True):
            return Scores(self.labels, np.full((len(examples), 2), 0.4, dtype=np.float32))

    with pytest.raises(AssertionError, match="response outputs"):
        check_guard(Leaky(), conformance_examples)


def gen_cfg(model_dir, out, method="lora"):
    return config.load(None, [f"model.name={model_dir}", "model.kind=generative", f"method.name={method}",
                              f"output_dir={out}", "data.train={name: 'demo:train', sample: 24, seed: 1}",
                              "data.validation={name: 'demo:validation', sample: 8, seed: 1}", "data.test=null",
                              "training.max_steps=3", "training.batch_size=8", "training.eval_batch_size=8",
                              "model.max_length=768"])


@pytest.mark.parametrize("method", ["lora", "full"])
def test_generative_guard_conforms(tiny_causal, tmp_path, conformance_examples, method):
    result = train(gen_cfg(tiny_causal("qwen2"), tmp_path / "gen", method), show_progress=False)
    check_guard(result.guard, conformance_examples, reload=lambda: guardtune.load(tmp_path / "gen"))


def test_tfidf_guard_conforms(tmp_path, conformance_examples):
    out = tmp_path / "tfidf"
    assert main(["baseline", "tfidf", "--data", "demo:train", "--out", str(out)]) == 0
    check_guard(guardtune.load(out), conformance_examples, reload=lambda: guardtune.load(out))


def test_fewshot_guard_conforms(tiny_causal, tmp_path, conformance_examples):
    out = tmp_path / "fs"
    assert main(["baseline", "fewshot", "--model", str(tiny_causal("qwen2")), "--data", "demo:validation",
                 "--shots", "2", "--select", "random", "--out", str(out)]) == 0
    check_guard(guardtune.load(out), conformance_examples, reload=lambda: guardtune.load(out))


def test_hub_classifier_conforms_and_gives_the_models_own_probabilities(tmp_path, tiny, conformance_examples):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = tmp_path / "clf"
    cfg = AutoConfig.from_pretrained(tiny("bert"), num_labels=2, id2label={0: "ok", 1: "toxic"},
                                     label2id={"ok": 0, "toxic": 1})
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny("bert")).save_pretrained(path)
    guard = guardtune.load(f"hf:{path}", label_map={"toxic": "prompt_harmful", "ok": "response_refusal"})
    scores = check_guard(guard, conformance_examples, reload=lambda: guardtune.load(
        f"hf:{path}", label_map={"toxic": "prompt_harmful", "ok": "response_refusal"}))
    # the reference: the checkpoint's own softmax, one text at a time, on the prompt (prompt tasks) and the
    # response (response tasks)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        for i, ex in enumerate(conformance_examples):
            own = model(**tokenizer(ex.prompt, return_tensors="pt")).logits.softmax(-1)[0]
            assert scores["prompt_harmful"][i] == pytest.approx(float(own[1]), abs=1e-5)
            if ex.response is not None:
                own = model(**tokenizer(ex.response, return_tensors="pt")).logits.softmax(-1)[0]
                assert scores["response_refusal"][i] == pytest.approx(float(own[0]), abs=1e-5)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_backbones_have_both_stacks_and_lora_reaches_the_decoder(tmp_path, tiny, family):
    from tests.test_methods import tiny_cfg

    for auto in ("AutoModel", "AutoModelForSeq2SeqLM"):
        cfg = config.load(None, [f"model.name={tiny(family)}"])
        stacks = block_stacks(load_backbone(cfg.model, auto=auto))
        assert [name.rsplit(".", 2)[-2] for name, _ in stacks] == ["encoder", "decoder"]
        assert [len(layers) for _, layers in stacks] == [3, 2]
    result = train(tiny_cfg(tmp_path / "run", tiny(family), "lora", steps=2, r=4), show_progress=False)
    backbone = guardtune.load(result.run_dir, merge_adapters=False).model.backbone
    adapted = {name.split(".")[2] for name, m in backbone.named_modules() if isinstance(m, BaseTunerLayer)}
    assert adapted == {"encoder", "decoder"}  # base_model.model.<stack>...
    decoder_blocks = {name.split(".")[4] for name, m in backbone.named_modules()
                      if isinstance(m, BaseTunerLayer) and ".decoder." in name}
    assert decoder_blocks == {"0", "1"}  # every decoder block, not only the encoder's


def test_freeze_on_an_encoder_decoder_trains_the_decoders_top_blocks(tiny):
    from guardtune.models.build import build_model

    cfg = config.load(None, [f"model.name={tiny('t5')}", "method.name=freeze", "method.top_k=1"])
    model = build_model(cfg, LabelSpace(("prompt_harmful",)))
    trainable = {n.split(".")[1] + "." + n.split(".")[3] for n, p in model.named_parameters()
                 if p.requires_grad and n.startswith("backbone.")}
    assert trainable == {"decoder.1"}  # the top block of the stack nearest the output
    with pytest.raises(ValueError, match="one stack"):
        build_model(config.load(None, [f"model.name={tiny('t5')}", "method.name=freeze", "method.top_k=1",
                                       "method.cache_trunk=true"]), LabelSpace(("prompt_harmful",)))


def test_a_prompt_alone_has_no_response_outputs_anywhere(tmp_path, tiny, conformance_examples):
    from tests.test_methods import tiny_cfg

    result = train(tiny_cfg(tmp_path / "run", tiny("bert"), "lora", steps=2, r=4), show_progress=False)
    guard = guardtune.load(result.run_dir)
    verdict = guard.moderate("how do I pick a lock?")
    assert "prompt_harmful" in verdict and not any(k.startswith("response") for k in verdict)
    mask = applicable(conformance_examples, guard.labels.outputs)
    assert (~mask).any() and np.isnan(guard.score(conformance_examples).probs[~mask]).all()
    # metrics never count them: a prompt-only example carries no response label, and the summary's response
    # figures come from conversations alone
    from guardtune.metrics import summary

    convo = [ex for ex in load("demo:test").examples if ex.response is not None and ex.response_refusal is not None]
    both = summary(list(load("demo:test").examples), guard.score(list(load("demo:test").examples)))
    assert both["response_refusal"]["n"] == len(convo)
    assert Example(prompt="x").response_refusal is None
