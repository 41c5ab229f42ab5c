"""The pieces of a classifier guard: label targets and masks, pooling, the masked loss, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from guardtune.data import Example
from guardtune.encoding import collate, length_grouped_batches, length_sorted_batches, template, tokenize
from guardtune.labels import LabelSpace
from guardtune.models.classifier import masked_bce, pool


def test_label_space_from_examples_and_targets_mask_what_is_unknown():
    examples = [
        Example("a", prompt_harmful=1, prompt_categories=("S10", "S2")),
        Example("b", prompt_harmful=0),  # safe: no category applies, even without a category column
        Example("c", prompt_harmful=1),  # harmful, categories not labelled: masked
        Example("d", response="r", response_refusal=1),
    ]
    labels = LabelSpace.from_examples(examples)
    assert labels.tasks == ("prompt_harmful", "response_refusal")
    assert labels.prompt_categories == ("S2", "S10")  # numeric order, not string order
    assert labels.outputs == ("prompt_harmful", "response_refusal", "prompt_categories/S2", "prompt_categories/S10")
    y, known = labels.targets(examples)
    assert y.tolist() == [[1, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
    assert known.tolist() == [[True, False, True, True], [True, False, True, True],
                              [True, False, False, False], [False, True, False, False]]
    assert LabelSpace.from_dict(labels.to_dict()) == labels
    with pytest.raises(ValueError, match="empty"):
        LabelSpace.from_examples([Example("x")])


def test_a_mixture_of_taxonomies_knows_each_harmful_row_only_within_its_sources_categories():
    examples = [
        Example("a", prompt_harmful=1, prompt_categories=("S1",), source="mapped"),
        Example("b", prompt_harmful=1, prompt_categories=("S2",), source="mapped"),
        Example("c", prompt_harmful=1, prompt_categories=("Goal_Hijacking",), source="native"),
        Example("d", prompt_harmful=1, prompt_categories=(), source="native"),  # harmful, no category of its own
        Example("e", prompt_harmful=0, source="native"),  # safe: no category applies, in any taxonomy
        Example("f", prompt_harmful=1, prompt_categories=("S2",), source="unseen"),
    ]
    labels = LabelSpace.from_examples(examples[:5])
    assert labels.outputs == ("prompt_harmful", "prompt_categories/S1", "prompt_categories/S2",
                              "prompt_categories/Goal_Hijacking")
    assert labels.scope("prompt_categories", "mapped") == {"S1", "S2"}
    assert labels.scope("prompt_categories", "native") == {"Goal_Hijacking"}
    y, known = labels.targets(examples)
    # by hand: a mapped row is no Goal_Hijacking negative, a native row no S1/S2 negative; a source the guard
    # never trained on keeps every category known
    assert y.tolist() == [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]]
    assert known.tolist() == [[True, True, True, False], [True, True, True, False],
                              [True, False, False, True], [True, False, False, True],
                              [True, True, True, True], [True, True, True, True]]
    assert LabelSpace.from_dict(labels.to_dict()) == labels
    # one source alone: its categories are the whole label space, no scopes are kept (labels.json unchanged)
    assert LabelSpace.from_examples(examples[:2]).scopes == ()
    assert "scopes" not in LabelSpace.from_examples(examples[:2]).to_dict()


@pytest.mark.parametrize("data", [[], {"tasks": "prompt_harmful"}, {"tasks": ["prompt_harmful"], "scopes": [1]},
                                  {"tasks": ["prompt_harmful"], "scopes": [{"field": "x", "source": "s"}]},
                                  {"tasks": ["prompt_harmful"], "prompt_categories": [1]}])
def test_a_hostile_labels_file_is_a_clear_error(data):
    with pytest.raises(ValueError, match="labels"):
        LabelSpace.from_dict(data)


def test_masked_loss_ignores_unlabelled_cells():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    loss = masked_bce(logits, targets, mask)
    loss.backward()
    assert logits.grad[0, 1] == 0  # the unlabelled cell gets no gradient
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, 0.5, 3.0]), torch.tensor([1.0, 0.0, 1.0]))
    assert loss.item() == pytest.approx(expected.item())


def test_pooling_is_the_same_for_left_and_right_padding():
    torch.manual_seed(0)
    real = torch.randn(2, 3, 4)  # example 0 has 3 tokens, example 1 has 2
    right = torch.zeros(2, 4, 4)
    right[0, :3], right[1, :2] = real[0], real[1, :2]
    right_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.zeros(2, 4, 4)
    left[0, 1:], left[1, 2:] = real[0], real[1, :2]
    left_mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    for how in ("last", "mean", "first"):
        torch.testing.assert_close(pool(right, right_mask, how), pool(left, left_mask, how))
    torch.testing.assert_close(pool(right, right_mask, "last"), torch.stack([real[0, 2], real[1, 1]]))
    torch.testing.assert_close(pool(right, right_mask, "mean")[1], real[1, :2].mean(0))
    with pytest.raises(ValueError, match="choose from last, mean, first"):
        pool(right, right_mask, "max")


def test_one_template_and_truncation_keeps_the_response(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny("bert"))
    long_prompt = Example("word " * 500, response="I refuse to help with that.", response_refusal=1)
    ids = tokenize([long_prompt, Example("hi")], tokenizer, max_length=32)
    assert len(ids[0]) == 32 and len(ids[1]) < 10
    text = tokenizer.decode(ids[0])
    assert "assistant : i refuse to help with that." in text  # the long prompt was cut, not the response
    assert template(long_prompt)[1] == "Assistant: I refuse to help with that."


def test_dynamic_padding_and_length_grouped_batches():
    batch = collate([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert collate([[1, 2, 3]], 0, pad_to_multiple_of=8)["input_ids"].shape == (1, 8)
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=1000)
    grouped = length_grouped_batches(lengths, 16, seed=1, epoch=0)
    assert sorted(i for b in grouped for i in b) == list(range(1000))  # every example once
    assert grouped == length_grouped_batches(lengths, 16, seed=1, epoch=0)  # reproducible (resume relies on it)
    assert grouped != length_grouped_batches(lengths, 16, seed=1, epoch=1)  # reshuffled each epoch
    padded = lambda batches: sum(len(b) * lengths[b].max() for b in batches)  # noqa: E731
    plain = length_grouped_batches(lengths, 16, seed=1, epoch=0, group=False)
    assert padded(grouped) < 0.6 * padded(plain)  # grouping by length cuts padding
    sorted_batches = length_sorted_batches(lengths, 64)
    assert [lengths[b].max() for b in sorted_batches] == sorted((lengths[b].max() for b in sorted_batches), reverse=True)
