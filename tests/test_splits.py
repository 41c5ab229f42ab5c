import random

from guardtune.data.example import Example
from guardtune.data.splits import grouped_split, mixture, sample


def rows(n, prefix="r", groups=None):
    return [Example(prompt=f"{prefix} {i}", id=f"{prefix}{i}", group=f"g{i % groups}" if groups else f"{prefix}{i}")
            for i in range(n)]


def test_seeded_sample_is_exactly_reproducible():
    data = rows(10_000)
    first = [ex.id for ex in sample(data, 2706, seed=42)]
    again = [ex.id for ex in sample(list(data), 2706, seed=42)]
    other = [ex.id for ex in sample(data, 2706, seed=43)]
    assert first == again
    assert len(set(first)) == 2706
    assert first != other


def test_sample_larger_than_data_returns_everything():
    data = rows(10)
    assert sample(data, 50, seed=1) == data


def test_grouped_split_keeps_groups_whole_and_ignores_order():
    data = rows(3000, groups=300)
    parts = {s: grouped_split(data, s) for s in ("train", "validation", "test")}
    assert sum(len(p) for p in parts.values()) == len(data)
    groups = {s: {ex.group for ex in p} for s, p in parts.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    assert {ex.id for ex in grouped_split(shuffled, "test")} == {ex.id for ex in parts["test"]}
    assert 0.12 < len(parts["test"]) / len(data) < 0.28


def test_mixture_by_weight_and_by_size():
    a, b = rows(100, "a"), rows(40, "b")
    mixed = mixture([(a, 0.5), (b, 2.0)], seed=3)
    assert sum(ex.id.startswith("a") for ex in mixed) == 50
    assert sum(ex.id.startswith("b") for ex in mixed) == 80
    sized = mixture([(a, 3), (b, 1)], size=60, seed=3)
    assert sum(ex.id.startswith("a") for ex in sized) == 45
    assert [ex.id for ex in sized] == [ex.id for ex in mixture([(a, 3), (b, 1)], size=60, seed=3)]
