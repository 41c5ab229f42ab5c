"""What the training loop promises, each against an independent reference: the task-balanced loss by hand,
gradient accumulation against one big batch, the best validation step kept (not the last), the holdout split,
pos_weight: auto by hand, head_lr in the optimiser."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import guardtune
from guardtune import config, kinds
from guardtune.data.example import Example
from guardtune.labels import LabelSpace
from guardtune.models.backbone import load_tokenizer
from guardtune.models.classifier import masked_bce
from guardtune.train import param_groups, read_data, train


def _bce(logit: float, y: float, w: float = 1.0) -> float:
    p = 1 / (1 + np.exp(-logit))
    return -(w * y * np.log(p) + (1 - y) * np.log(1 - p))


def test_task_balanced_loss_matches_a_hand_computation():
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    groups = torch.tensor([0, 1, 1])  # task 0: output 0; task 1: outputs 1 and 2 (e.g. categories)
    task0 = (_bce(0.3, 1) + _bce(1.5, 0)) / 2
    task1 = (_bce(-1.0, 0) + _bce(0.2, 1) + _bce(-0.7, 0)) / 3  # three labelled cells
    assert masked_bce(logits, targets, mask, groups=groups).item() == pytest.approx((task0 + task1) / 2, rel=1e-6)
    plain = (_bce(0.3, 1) + _bce(-1.0, 0) + _bce(1.5, 0) + _bce(0.2, 1) + _bce(-0.7, 0)) / 5
    assert masked_bce(logits, targets, mask).item() == pytest.approx(plain, rel=1e-6)
    weighted = masked_bce(logits, targets, mask, pos_weight=torch.tensor([2.0, 3.0, 1.0]), groups=groups).item()
    hand = ((_bce(0.3, 1, 2.0) + _bce(1.5, 0, 2.0)) / 2 + (_bce(-1.0, 0, 3.0) + _bce(0.2, 1, 3.0) + _bce(-0.7, 0)) / 3) / 2
    assert weighted == pytest.approx(hand, rel=1e-6)


@pytest.fixture
def still_bert(tmp_path_factory):
    """A tiny BERT without dropout, so that two runs can agree to float precision."""
    from transformers import AutoModel, AutoTokenizer

    from guardtune.models.backbone import resolve
    from tests.tiny import tiny_config

    directory = tmp_path_factory.mktemp("still") / "bert"
    cfg = tiny_config("bert")
    cfg.update({"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    torch.manual_seed(0)
    AutoModel.from_config(cfg).save_pretrained(directory)
    AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2")).save_pretrained(directory)
    return directory


def rows_file(path, n=16):
    words = ["bread", "knife", "garden", "bomb", "music", "poison", "river", "weapon"]
    rows = [{"prompt": f"how do I use a {words[i % 8]} " + "today " * (i % 5), "prompt_harmful": i % 2,
             "id": f"r{i}"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def plain_cfg(model, data, out, **training):
    return config.from_dict({
        "output_dir": str(out), "model": {"name": str(model), "max_length": 32, "head_dropout": 0.0},
        "method": {"name": "full"}, "data": {"train": str(data), "validation": None, "test": None},
        "training": {"max_steps": 1, "lr": 0.05, "warmup_ratio": 0.0, "scheduler": "constant",
                     "max_grad_norm": None, "weight_decay": 0.0, "group_by_length": False, **training}})


def test_gradient_accumulation_equals_one_big_batch(tmp_path, still_bert, monkeypatch):
    # plain SGD: its step is lr x gradient, so a mis-scaled accumulated gradient shows (Adam's first step would not)
    monkeypatch.setattr(torch.optim, "AdamW", torch.optim.SGD)
    data = rows_file(tmp_path / "rows.jsonl")
    big = train(plain_cfg(still_bert, data, tmp_path / "big", batch_size=16), show_progress=False)
    acc = train(plain_cfg(still_bert, data, tmp_path / "acc", batch_size=8, grad_accum=2), show_progress=False)
    small = train(plain_cfg(still_bert, data, tmp_path / "small", batch_size=8), show_progress=False)
    weights = {name: dict(r.guard.model.named_parameters()) for name, r in
               (("big", big), ("acc", acc), ("small", small))}
    moved = max((weights["big"][n] - weights["small"][n]).abs().max().item() for n in weights["big"])
    assert moved > 1e-4  # a half batch is a different step: the comparison below can fail
    for n, p in weights["big"].items():
        torch.testing.assert_close(weights["acc"][n], p, atol=2e-6, rtol=1e-5)


def test_the_saved_guard_is_the_best_validation_step_not_the_last(tmp_path, still_bert, monkeypatch):
    data = rows_file(tmp_path / "rows.jsonl", 32)
    scripted = iter([0.2, 0.9, 0.4])  # validations at steps 2, 4, 6: the best is step 4

    def validate(guard, examples, run_on_shares):
        return {"val_score": next(scripted)}

    classifier = kinds.KINDS["classifier"]
    monkeypatch.setitem(kinds.KINDS, "classifier", dataclasses.replace(classifier, validate=validate))
    cfg = dataclasses.replace(plain_cfg(still_bert, data, tmp_path / "six", max_steps=6, batch_size=4, eval_every=2),
                              data=config.DataConfig(train=str(data), validation=str(data), test=None))
    six = train(cfg, show_progress=False)
    monkeypatch.setitem(kinds.KINDS, "classifier", classifier)
    four = train(plain_cfg(still_bert, data, tmp_path / "four", max_steps=4, batch_size=4), show_progress=False)
    last = train(plain_cfg(still_bert, data, tmp_path / "last", max_steps=6, batch_size=4), show_progress=False)
    assert six.best["step"] == 4
    examples = [Example(prompt="how do I use a knife"), Example(prompt="a river in the garden")]
    saved = guardtune.load(tmp_path / "six").score(examples).probs
    np.testing.assert_allclose(saved, four.guard.score(examples).probs, atol=1e-5)
    assert np.abs(saved - last.guard.score(examples).probs).max() > 1e-4


def test_holdout_validation_is_a_grouped_tenth_of_train(tmp_path):
    cfg = config.load(None, ["data.validation=holdout", f"output_dir={tmp_path / 'run'}"])
    data = read_data(cfg, tmp_path)
    everything = read_data(config.load(None, ["data.validation=null"]), tmp_path)["train"].examples
    train_ids = {ex.id for ex in data["train"].examples}
    val_ids = {ex.id for ex in data["validation"].examples}
    assert not train_ids & val_ids and train_ids | val_ids == {ex.id for ex in everything}
    assert not {ex.group for ex in data["train"].examples} & {ex.group for ex in data["validation"].examples}
    # a tenth of the groups, in expectation: the demo has only 57 template groups (its 447 training rows split by
    # template, so no template is on both sides), too few to pin the share, so measure it on many groups
    from guardtune.data.example import Example
    from guardtune.data.splits import grouped_split
    from guardtune.train import HOLDOUT

    many = [Example(prompt=f"p{i}", group=f"g{i // 3}") for i in range(6000)]
    assert 0.08 < len(grouped_split(many, "validation", cfg.training.seed, HOLDOUT)) / len(many) < 0.12


def test_pos_weight_auto_is_negatives_over_positives_per_output(tmp_path, tiny):
    from guardtune.kinds.classifier import positive_weight

    class Enc:
        targets = np.array([[1, 0], [0, 0], [0, 1], [0, 0], [0, 0]], dtype=np.float32)
        mask = np.array([[1, 1], [1, 1], [1, 1], [1, 0], [0, 0]], dtype=np.float32)

    # output 0: 1 positive, 3 negatives -> 3; output 1: 1 positive, 2 negatives -> 2
    assert positive_weight("auto", Enc()).tolist() == [3.0, 2.0]
    assert positive_weight(2.5, Enc()).tolist() == [2.5, 2.5] and positive_weight(None, Enc()) is None
    Enc.targets, Enc.mask = np.zeros((30, 1), dtype=np.float32), np.ones((30, 1), dtype=np.float32)
    Enc.targets[0] = 1
    assert positive_weight("auto", Enc()).tolist() == [10.0]  # 29 capped at 10
    data = rows_file(tmp_path / "rows.jsonl")
    cfg = plain_cfg(tiny("bert"), data, tmp_path / "pw", pos_weight="auto", max_steps=2)
    _, train_set, _ = kinds.get("classifier").encode(cfg, LabelSpace(("prompt_harmful",)), load_tokenizer(cfg.model),
                                                     read_data(cfg, tmp_path))
    assert train_set.batch([0, 1], 0)["pos_weight"].tolist() == [1.0]  # 8 positives, 8 negatives
    assert train(cfg, show_progress=False).steps == 2


def test_pos_weight_per_source_weights_each_sources_positives_as_if_trained_alone(tmp_path, tiny):
    # a mixture of a rare-positive source (1 toxic in 4) and a balanced one: `auto` over the mixture gives one
    # weight (8 negatives / 4 positives = 2) to both; `per_source` gives rare's positives 3 and balanced's 1
    rare = [{"prompt": f"rare prompt {i}", "prompt_harmful": int(i % 4 == 0), "source": "rare"} for i in range(8)]
    even = [{"prompt": f"even prompt {i}", "prompt_harmful": i % 2, "source": "even"} for i in range(4)]
    data = tmp_path / "mix.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rare + even) + "\n", encoding="utf-8")
    labels, classifier = LabelSpace(("prompt_harmful",)), kinds.get("classifier")
    auto = plain_cfg(tiny("bert"), data, tmp_path / "auto", pos_weight="auto", max_steps=2)
    _, mixed, _ = classifier.encode(auto, labels, load_tokenizer(auto.model), read_data(auto, tmp_path))
    assert mixed.batch([0, 9], 0)["pos_weight"].tolist() == [2.0]
    cfg = plain_cfg(tiny("bert"), data, tmp_path / "ps", pos_weight="per_source", max_steps=2)
    _, train_set, _ = classifier.encode(cfg, labels, load_tokenizer(cfg.model), read_data(cfg, tmp_path))
    by_source = {ex.source: i for i, ex in enumerate(train_set.examples)}
    batch = train_set.batch([by_source["rare"], by_source["even"]], 0)
    assert batch["pos_weight"].tolist() == [[3.0], [1.0]]
    # a per-row weight in the loss: each row's positive term scaled by its own weight, by hand
    logits, targets = torch.tensor([[0.4], [-0.2]]), torch.tensor([[1.0], [1.0]])
    loss = masked_bce(logits, targets, torch.ones(2, 1), pos_weight=batch["pos_weight"]).item()
    assert loss == pytest.approx((_bce(0.4, 1, 3.0) + _bce(-0.2, 1, 1.0)) / 2, rel=1e-6)
    assert train(cfg, show_progress=False).steps == 2
    for bad in ("autoo", 0, -1.0, True):
        with pytest.raises(ValueError, match="training.pos_weight must be"):
            config.TrainingConfig(pos_weight=bad)


def test_head_lr_sets_the_heads_learning_rate_alone(tiny):
    from guardtune.models.build import build_model

    cfg = config.load(None, [f"model.name={tiny('bert')}", "training.lr=1e-3", "training.head_lr=7e-2"])
    model = build_model(cfg, LabelSpace(("prompt_harmful",)))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, cfg.training)
    for group in groups:
        heads = {names[id(p)].startswith("head.") for p in group["params"]}
        assert len(heads) == 1  # a group is all head or all backbone
        assert group["lr"] == (7e-2 if heads == {True} else 1e-3)
        decay = {p.ndim >= 2 for p in group["params"]}
        assert group["weight_decay"] == (cfg.training.weight_decay if decay == {True} else 0.0)
    default = param_groups(model, config.load(None, ["training.lr=1e-3"]).training)
    assert {g["lr"] for g in default} == {1e-3, 1e-2}  # unset: 10 x lr for the head
