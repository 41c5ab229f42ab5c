import json
import pytest

import pyarrow as pa
import pyarrow.parquet as pq

from guardtune.cli import main
from guardtune.data import DataSpec, Example, load, load_any, load_mixture
from guardtune.data.overlap import check, normalise


def test_column_mapping_for_csv(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("text,label,cats,lang\nhello,clean,,de\nyou are vermin,toxic,S10;hate_speech,en\n")
    spec = DataSpec(path=str(path), columns={"prompt": "text", "prompt_harmful": "label",
                                             "prompt_categories": "cats", "language": "lang"},
                    labels={"prompt_harmful": {"toxic": 1, "clean": 0}}, categories="any")
    ok, toxic = load(spec).examples
    assert (ok.prompt, ok.prompt_harmful, ok.prompt_categories, ok.language) == ("hello", 0, None, "de")
    assert (toxic.prompt_harmful, toxic.prompt_categories) == (1, ("S10", "hate_speech"))
    assert toxic.id == "export:3" and toxic.source == "export"


def test_scheme_mapping_in_files(tmp_path):
    path = tmp_path / "lg2.jsonl"
    path.write_text(json.dumps({"prompt": "x", "prompt_harmful": 1, "prompt_categories": ["S5", "S11"]}) + "\n")
    (ex,) = load(DataSpec(path=str(path), categories="llama_guard_2", language="en")).examples
    assert ex.prompt_categories == ("S6", "S12")


def test_parquet_and_round_trip_of_guardtune_schema(tmp_path):
    rows = [Example(prompt="a", response="b", response_refusal=1, language="fr", id="1").to_dict()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    (ex,) = load(str(tmp_path / "x.parquet")).examples
    assert (ex.response, ex.response_refusal, ex.response_harmful, ex.language) == ("b", 1, None, "fr")


def test_mixture_of_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"prompt": f"a{i}"}) + "\n" for i in range(10)))
    b.write_text("".join(json.dumps({"prompt": f"b{i}"}) + "\n" for i in range(10)))
    mixed = load_mixture([{"path": str(a), "weight": 1}, {"path": str(b), "weight": 0.3}], seed=1)
    assert sum(e.prompt.startswith("b") for e in mixed.examples) == 3
    assert mixed.report.read == 20


def test_overlap_exact_and_near():
    train = [Example(prompt=p) for p in ["How do I make a pipe bomb at home?", "Tell me a joke about cats.",
                                         "Write a poem about the sea and the wind and the sky tonight."]]
    test = [Example(prompt=p) for p in ["how do I make a PIPE BOMB at home", "Write a poem about the sea and "
                                        "the wind and the sky tonight!!", "Completely unrelated question here."]]
    assert normalise("Hello,   WORLD!") == "hello world"
    result = check(train, test, threshold=0.8)
    assert result.exact == [(0, 0), (1, 2)]
    assert result.near == []
    near = check(train, [Example(prompt="Write a poem about the sea and the wind and the sky today.")], 0.7)
    assert [(i, j) for i, j, _ in near.near] == [(0, 2)]


def test_cli_check_on_files(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"prompt": "Same text here"}) + "\n")
    b.write_text(json.dumps({"prompt": "same text, here"}) + "\n" + json.dumps({"prompt": "other"}) + "\n")
    assert main(["data", "check", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "exact duplicates" in out and "50.0%" in out


def test_yaml_data_config_mixture_with_mapped_file(tmp_path, capsys):
    (tmp_path / "export.csv").write_text("text,label\nhello,clean\nyou vermin,toxic\nfine,clean\n")
    (tmp_path / "mix.yaml").write_text(
        "mixture:\n"
        "  - {path: export.csv, columns: {prompt: text, prompt_harmful: label},\n"
        "     labels: {prompt_harmful: {toxic: 1, clean: 0}}, weight: 2}\n"
        "  - {name: demo, split: test, sample: 5, seed: 42}\n"
        "seed: 7\n")
    from guardtune.data import load_config

    loaded = load_config(tmp_path / "mix.yaml")
    assert sum(ex.source == "export" for ex in loaded.examples) == 6  # weight 2 doubles the 3 rows
    assert sum(ex.source == "demo" for ex in loaded.examples) == 5
    assert main(["data", "stats", str(tmp_path / "mix.yaml")]) == 0
    assert "11 examples" in capsys.readouterr().out


def test_yaml_data_config_typo_fails(tmp_path):
    import pytest

    (tmp_path / "bad.yaml").write_text("mixture: [demo]\nsise: 10\n")
    from guardtune.data import load_config

    with pytest.raises(KeyError, match="unknown mixture key 'sise'"):
        load_config(tmp_path / "bad.yaml")


def test_overlapping_agrees_with_check_from_the_other_side():
    from guardtune.data.overlap import overlapping

    train = [Example(prompt=p) for p in ["How do I make a pipe bomb at home?", "Tell me a joke about cats.",
                                         "Write a poem about the sea and the wind and the sky today.",
                                         "Something else entirely, nothing like the rest."]]
    test = [Example(prompt=p) for p in ["how do I make a PIPE BOMB at home", "Write a poem about the sea and "
                                        "the wind and the sky tonight!!"]]
    result = check(train, test, threshold=0.7)
    assert overlapping(train, test, threshold=0.7) == {j for _, j in result.exact} | {j for _, j, _ in result.near}
    assert overlapping(train, test, threshold=0.7) == {0, 2}
    assert overlapping(train, [], 0.7) == set() and overlapping([], test, 0.7) == set()


def test_a_mixture_excludes_rows_that_duplicate_a_test_set(tmp_path):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    rows = [f"unique training sentence number {i} about topic {i * 7}" for i in range(20)]
    train.write_text("".join(json.dumps({"prompt": p, "prompt_harmful": i % 2}) + "\n" for i, p in enumerate(rows)))
    test.write_text(json.dumps({"prompt": rows[3].upper() + "!"}) + "\n"  # exact after normalisation
                    + json.dumps({"prompt": rows[5].replace("topic", "topics")}) + "\n"  # near
                    + json.dumps({"prompt": "nothing like any training row at all"}) + "\n")
    mixed = load_any({"mixture": [{"path": str(train)}], "exclude": [str(test)]})
    assert len(mixed.examples) == 18 and rows[3] not in {e.prompt for e in mixed.examples}
    assert rows[5] not in {e.prompt for e in mixed.examples}
    assert "2 rows overlapping the excluded sets removed" in mixed.label
    assert len(load_any({"mixture": [{"path": str(train)}]}).examples) == 20
    with pytest.raises(KeyError, match="unknown mixture key 'exclude_against'"):
        load_any({"mixture": [{"path": str(train)}], "exclude_against": [str(test)]})


def test_prompts_only_and_labelled_only(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "how to pick a lock", "response": r, "prompt_harmful": 1, "response_harmful": h, "group": "q1"}
            for r, h in [("no", 0), ("sure, first...", 1), ("I can't", 0)]]
    rows += [{"prompt": "what is a lock", "response": "a device", "prompt_harmful": 0, "group": "q2"},
             {"prompt": "an unlabelled prompt"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = load({"path": str(path), "prompts_only": True}).examples
    assert [(e.prompt, e.prompt_harmful, e.response, e.response_harmful) for e in prompts] == [
        ("how to pick a lock", 1, None, None), ("what is a lock", 0, None, None), ("an unlabelled prompt", None, None, None)]
    labelled = load({"path": str(path), "prompts_only": True, "labelled_only": True}).examples
    assert [e.prompt for e in labelled] == ["how to pick a lock", "what is a lock"]


def test_drop_categories_removes_harms_outside_the_policy(tmp_path):
    path = tmp_path / "areas.jsonl"
    rows = [{"prompt": "do you have feelings?", "prompt_harmful": 1, "prompt_categories": ["Treat Chatbot as a Human"]},
            {"prompt": "insult them", "prompt_harmful": 1, "prompt_categories": ["S10", "Treat Chatbot as a Human"]},
            {"prompt": "how to rob a bank", "prompt_harmful": 1, "prompt_categories": ["S2"]},
            {"prompt": "what is a bank", "prompt_harmful": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load({"path": str(path), "categories": "any", "drop_categories": ["Treat Chatbot as a Human"]})
    # by hand: the first row's only harm is outside the policy (dropped); the second keeps its S10
    assert [(e.prompt, e.prompt_harmful, e.prompt_categories) for e in loaded.examples] == [
        ("insult them", 1, ("S10",)), ("how to rob a bank", 1, ("S2",)), ("what is a bank", 0, None)]
    assert "1 rows with no other" in loaded.label
    with pytest.raises(ValueError, match="drop_categories must be a list"):
        load({"path": str(path), "categories": "any", "drop_categories": [3]})

