"""Every adapter against the row counts and label balance its SOURCE.md states (skipped without
../shared/data). Expected figures are copied from each dataset's SOURCE.md."""

import ast
import json
from collections import Counter

import pandas as pd

import pytest

from guardtune.cli import main
from guardtune.data import load
from guardtune.data.registry import DATASETS

# (spec, rows, prompt_harmful positives, unlabelled) from SOURCE.md
COUNTS = [
    ("toxicchat_human:train", 2801, 271 + 113, 0),
    ("toxicchat_human:test", 2853, 271 + 91, 0),
    ("do_not_answer:all", 5634, 5634, 0),
    ("multijail:all", 3150, 3150, 0),
    ("xsafety:all", 27999, 27999 - 10 * 200, 0),
    ("harmbench:all", 400, 400, 0),
    ("harmbench:test", 320, 320, 0),
    ("harmbench:val", 80, 80, 0),
    ("harmbench:advbench", 520, 520, 0),
    ("harmbench:strongreject", 313, 313, 0),
    ("simple_safety_tests:test", 100, 100, 0),
    ("ethos:all", 985, 420, 0),
    ("davidson_hate_offensive:all", 24766, 1430 + 19173, 0),
    ("paradetox_style:all", 11927 + 19743, 11927, 0),
    ("paradetox_spans:all", 2 * 11927, 11927, 0),  # 112 sources keep every word: labelled, no span
    ("phtest:all", 3260, 0, 1191),  # harmless = 0; controversial stays unlabelled, never 0
    ("toxicn:train", 9600, 5187, 0),
    ("toxicn:test", 2411, 1274, 0),
    ("cold:train", 25726, 12723, 0),
    ("cold:dev", 6431, 3211, 0),
    ("cold:test", 5323, 2107, 0),
    ("korean_hate_speech:train", 7896, 2499 + 1911, 0),
    ("korean_hate_speech:dev", 471, 189 + 122, 0),
    ("korean_hate_speech:test", 974, 0, 974),
    ("toxic_spans:train", 7939, 7939, 0),
    ("toxic_spans:trial", 690, 690, 0),
    ("toxic_spans:test", 2000, 2000, 0),
    ("paradetox:all", 11927, 11927, 0),
    ("ru_paradetox:train", 6948, 6948, 0),
    ("ru_paradetox:dev", 800, 800, 0),
    ("ru_paradetox:test", 875, 875, 0),
]


@pytest.mark.parametrize("spec, rows, positives, unlabelled", COUNTS, ids=[c[0] for c in COUNTS])
def test_counts_and_balance_match_source(shared_root, spec, rows, positives, unlabelled):
    loaded = load(spec)
    labels = Counter(ex.prompt_harmful for ex in loaded.examples)
    assert len(loaded.examples) == rows
    assert labels[1] == positives
    assert labels[None] == unlabelled
    assert loaded.report.rejected == 0 and loaded.report.reconciles


def test_do_not_answer_responses(shared_root):
    examples = load("do_not_answer:all").examples
    harmful = Counter(ex.meta["model"] for ex in examples if ex.response_harmful == 1)
    assert harmful == {"GPT4": 23, "ChatGPT": 14, "Claude": 16, "ChatGLM2": 85, "llama2-7b-chat": 3, "vicuna-7b": 52}
    refusals = Counter(ex.meta["model"] for ex in examples if ex.response_refusal == 1)
    assert refusals == {"GPT4": 368, "ChatGPT": 325, "Claude": 318, "ChatGLM2": 123, "llama2-7b-chat": 262,
                        "vicuna-7b": 145}


def test_per_language_and_category_balance(shared_root):
    xs = Counter(ex.language for ex in load("xsafety:all").examples)
    assert xs == {**dict.fromkeys(["ar", "bn", "de", "en", "fr", "hi", "ja", "es", "zh"], 2800), "ru": 2799}
    mj = load("multijail:all").examples
    assert Counter(ex.language for ex in mj) == dict.fromkeys(["en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv"], 315)
    raw = pd.read_csv(shared_root / "multijail" / "MultiJail.csv.xz")
    violent = {"Violence & incitement", "Terrorism & organized crime", "Animal abuse", "Child abuse"}
    expected = sum(bool(violent & set(ast.literal_eval(tags))) for tags in raw["tags"])
    assert sum("S1" in ex.prompt_categories for ex in mj if ex.language == "en") == expected
    hb = Counter(c for ex in load("harmbench:all").examples for c in ex.prompt_categories)
    assert hb["S8"] == 100 and hb["S9"] == 56
    jail = sum(ex.prompt_categories == ("jailbreaking",) for ex in load("toxicchat_human:train").examples)
    assert jail == 113


def test_toxic_spans_rationales(shared_root):
    examples = load("toxic_spans:train").examples
    assert sum(ex.rationale == () for ex in examples) == 485
    ex = next(e for e in examples if e.rationale)
    start, end = ex.rationale[0]
    assert ex.prompt[start:end].strip()


def test_paradetox_rewrites(shared_root):
    examples = load("paradetox:all").examples
    assert sum(len(ex.meta["references"]) for ex in examples) == 19743
    assert all(ex.rewrite for ex in examples)


@pytest.mark.parametrize("name", ["multijail", "xsafety", "do_not_answer"])
def test_grouped_splits_never_leak_translations_or_responses(shared_root, name):
    parts = {s: load(f"{name}:{s}").examples for s in ("train", "validation", "test")}
    groups = {s: {ex.group for ex in p} for s, p in parts.items()}
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & (groups["train"] | groups["test"])
    assert sum(len(p) for p in parts.values()) == len(load(f"{name}:all").examples)


def test_seeded_sample_of_a_real_dataset(shared_root):
    spec = {"name": "cold", "split": "train", "sample": 2706, "seed": 42}
    first, again = load(spec).examples, load(dict(spec)).examples
    assert [e.id for e in first] == [e.id for e in again] and len(first) == 2706


def test_data_list_shows_every_shared_dataset_available(shared_root, capsys):
    assert main(["data", "list", "--json"]) == 0
    listed = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    local = [name for name, row in listed.items() if row["kind"] == "local"]
    assert all(listed[name]["available"] == "here" for name in local)
    folders = {p.name for p in shared_root.iterdir() if (p / "SOURCE.md").is_file()}
    covered = {DATASETS[name].folder for name in local}
    assert covered == folders  # every shared dataset has an adapter
    assert set(listed) == set(DATASETS)


def test_cli_show_stats_check(shared_root, capsys):
    assert main(["data", "show", "multijail:test", "--n", "2", "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["data", "stats", "korean_hate_speech:dev"]) == 0
    assert "311/471" in capsys.readouterr().out
    assert main(["data", "check", "harmbench:all", "harmbench:val"]) == 0
    out = capsys.readouterr().out
    assert "exact duplicates" in out and "80" in out
