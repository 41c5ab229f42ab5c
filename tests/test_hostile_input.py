"""Hostile input and untrusted artefacts: no row lost or crashed on (property-based), located errors for
malformed CSV and Parquet, rejects per run, no code executed from a run directory."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardtune
from guardtune.cli import main
from guardtune.data.files import load_file
from guardtune.data.intake import Intake, RowError

GOOD = b'{"prompt": "how do I bake bread?", "prompt_harmful": 0}'

# any JSON-ish value, including the shapes that used to crash the intake
values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                    max_size=3), max_leaves=8)
FIELDS = ["prompt", "response", "prompt_harmful", "response_harmful", "response_refusal", "prompt_categories",
          "response_categories", "language", "rationale", "rewrite", "id", "source", "group", "other"]
rows = st.dictionaries(st.sampled_from(FIELDS), values | st.text(alphabet=st.characters(codec=None)), max_size=6)
garbage = st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b)


def intake_of(path: Path, tmp: Path) -> tuple:
    rejects = tmp / f"{path.name}.rejects.jsonl"
    rejects.unlink(missing_ok=True)
    with Intake("skip", rejects) as intake:
        load_file(path, intake)
    lines = rejects.read_text(encoding="utf-8").splitlines() if rejects.exists() else []
    return intake.report, [json.loads(line) for line in lines]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(rows.map(lambda r: json.dumps(r).encode("utf-8", "surrogatepass")), garbage),
                min_size=1, max_size=8))
def test_any_jsonl_file_reconciles_and_every_reject_is_written(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join([GOOD, *lines, GOOD]) + b"\n")
    report, rejected = intake_of(path, tmp_path)  # no exception escapes, whatever the file holds
    assert report.read == report.accepted + report.rejected + sum(report.excluded.values())
    assert len(rejected) == report.rejected and report.accepted >= 2  # the good rows are never lost
    assert all({"file", "line", "field", "error", "raw"} <= set(r) for r in rejected)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b), min_size=1, max_size=6))
def test_any_csv_file_reconciles_and_keeps_the_good_rows(tmp_path, lines):
    path = tmp_path / "fuzz.csv"
    good = b"how do I bake bread,0"
    path.write_bytes(b"\n".join([b"prompt,prompt_harmful", good, *lines, good, good]) + b"\n")
    report, rejected = intake_of(path, tmp_path)
    assert report.read == report.accepted + report.rejected + sum(report.excluded.values())
    assert len(rejected) == report.rejected
    assert report.accepted >= 2  # a broken line costs itself (and at most the good line it runs into)


def test_an_unterminated_csv_quote_costs_its_line_not_the_rows_after_it(tmp_path):
    path = tmp_path / "quote.csv"
    good = [f"good row {i},0" for i in range(20)]
    path.write_text("\n".join(["prompt,prompt_harmful", "first,1", '"never closed,1', *good]) + "\n", encoding="utf-8")
    report, rejected = intake_of(path, tmp_path)
    assert (report.accepted, report.rejected) == (21, 1)
    assert rejected[0]["line"] == 3 and "not closed" in rejected[0]["error"] and rejected[0]["raw"] == '"never closed,1'
    with pytest.raises(RowError, match=r"quote.csv:line 3"):
        with Intake("error") as intake:
            load_file(path, intake)


def test_csv_faults_are_located_and_keep_their_raw_text(tmp_path):
    path = tmp_path / "faults.csv"
    path.write_bytes(b"text,label\nfine,0\ncaf\xe9,1\nnul\x00byte,1\nok,maybe\n")
    rejects = tmp_path / "r.jsonl"
    with Intake("skip", rejects) as intake:
        load_file(path, intake, columns={"prompt": "text", "prompt_harmful": "label"})
    got = [json.loads(line) for line in rejects.read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in got] == [3, 4, 5]
    assert got[0]["raw"] == "caf\\xe9,1" and "UTF-8" in got[0]["error"]  # the bytes survive, escaped
    assert got[1]["field"] == "prompt" and "NUL" in got[1]["error"]
    assert got[2]["field"] == "prompt_harmful" and got[2]["column"] == "label"
    only = tmp_path / "only.csv"
    only.write_bytes(b"text,label\nok,maybe\n")
    with pytest.raises(RowError, match=r"only.csv:line 2: prompt_harmful \(column 'label'\): unknown label value"):
        with Intake("error") as intake:
            load_file(only, intake, columns={"prompt": "text", "prompt_harmful": "label"})


def test_duplicate_csv_headers_and_misspelt_mappings_are_errors(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("prompt,prompt,prompt_harmful\na,b,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="repeats column"):
        with Intake("skip") as intake:
            load_file(dup, intake)
    ok = tmp_path / "ok.csv"
    ok.write_text("text,label\nhello,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no row has the column\(s\) 'lable' \(for prompt_harmful\)"):
        with Intake("error") as intake:
            load_file(ok, intake, columns={"prompt": "text", "prompt_harmful": "lable"})


def test_parquet_null_text_is_a_bad_row_and_a_broken_file_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"prompt": ["fine", None, "also fine"], "prompt_harmful": [0, 1, 1]}), path)
    report, rejected = intake_of(path, tmp_path)
    assert (report.accepted, report.rejected) == (2, 1) and rejected[0]["row"] == 2 and rejected[0]["field"] == "prompt"
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match="broken.parquet"):
        with Intake("skip") as intake:
            load_file(broken, intake)


def test_rejects_belong_to_one_run_and_word_labels_and_yaml_configs_validate(tmp_path, capsys):
    data = tmp_path / "words.csv"
    data.write_text("text,verdict\nhello,safe\nhow do I hurt someone,unsafe\n???,perhaps\n", encoding="utf-8")
    rejects = tmp_path / "rejects.jsonl"
    args = ["data", "validate", str(data), "--map", "prompt=text", "--map", "prompt_harmful=verdict",
            "--label", "prompt_harmful", "unsafe=1", "safe=0", "--on-bad-row", "skip", "--rejects", str(rejects)]
    for _ in range(2):
        assert main(args) == 1
        assert len(rejects.read_text().splitlines()) == 1  # this run's one reject, not the runs before it
    assert "2 accepted, 1 rejected" in capsys.readouterr().out
    config = tmp_path / "data.yaml"
    config.write_text(f"path: {data}\ncolumns: {{prompt: text, prompt_harmful: verdict}}\n"
                      "labels: {prompt_harmful: {unsafe: 1, safe: 0, perhaps: null}}\n", encoding="utf-8")
    assert main(["data", "validate", str(config)]) == 0
    assert "3 accepted, 0 rejected" in capsys.readouterr().out


def test_moderate_file_refuses_duplicate_ids_or_keys_by_line(tmp_path, capsys):
    from guardtune.baselines import TfidfGuard
    from guardtune.data import load_any

    run = TfidfGuard().fit(load_any("demo:train").examples).save(tmp_path / "g")
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "prompt": "one"}\n{"id": "b", "prompt": "two"}\n{"id": "a", "prompt": "three"}\n',
                      encoding="utf-8")
    assert main(["moderate", str(run), "--file", str(source), "--out", str(tmp_path / "v.jsonl")]) == 2
    err = capsys.readouterr().err
    assert f"{source}:3" in err and "line 1" in err and not (tmp_path / "v.jsonl").exists()
    assert main(["moderate", str(run), "--file", str(source), "--out", str(tmp_path / "v.jsonl"), "--key", "line"]) == 0
    ids = [json.loads(line)["id"] for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert ids == ["line-1", "line-2", "line-3"]


class Payload:
    """Unpickling this runs os.system: what a hostile run directory would plant."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_pickle_never_runs(tmp_path):
    from guardtune import checkpoint

    marker = tmp_path / "pwned"
    # a TF-IDF directory whose weights are a pickle (the old format): refused, never unpickled
    tfidf = tmp_path / "tfidf"
    tfidf.mkdir()
    (tfidf / "guard.json").write_text('{"kind": "tfidf", "c": 4.0, "max_features": 10}')
    (tfidf / "labels.json").write_text(json.dumps({"tasks": ["prompt_harmful"]}))
    (tfidf / "tfidf.joblib").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(FileNotFoundError, match="never loaded"):
        guardtune.load(tfidf)
    # a checkpoint whose optimiser state is a pickle that runs code: refused on resume
    state = tmp_path / "state.pt"
    state.write_bytes(pickle.dumps({"optimizer": Payload(marker), "scheduler": {}, "rng": {}}))
    with pytest.raises(ValueError, match="refused"):
        checkpoint.read_state(state)
    assert not marker.exists()


def test_a_run_directory_cannot_turn_on_remote_code(tmp_path, tiny, capsys):
    import yaml

    from guardtune.train import train
    from tests.test_methods import tiny_cfg

    result = train(tiny_cfg(tmp_path / "run", tiny("bert"), "lora", steps=1, r=2), show_progress=False)
    cfg = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    cfg["model"]["trust_remote_code"] = True
    (result.run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(PermissionError, match="trust_remote_code"):
        guardtune.load(result.run_dir)
    assert main(["eval", str(result.run_dir), "--data", "demo:test", "--bootstrap", "0", "--no-plots"]) == 2
    assert "trust-remote-code" in capsys.readouterr().err
    assert guardtune.load(result.run_dir, trust_remote_code=True).labels == result.guard.labels  # asked by the caller


def test_train_reports_rejected_rows_in_the_log_and_on_the_console(tmp_path, tiny, capsys):
    from guardtune import config
    from guardtune.commands.train import print_result
    from guardtune.train import train

    data = tmp_path / "d.jsonl"
    rows = [json.dumps({"prompt": f"text number {i}", "prompt_harmful": i % 2}) for i in range(24)]
    data.write_text("\n".join(rows[:10] + ['{"prompt": null}', "{broken"] + rows[10:]) + "\n", encoding="utf-8")
    cfg = config.load(None, [f"model.name={tiny('bert')}", f"output_dir={tmp_path / 'run'}", f"data.train={data}",
                             "data.validation=null", "data.test=null", "data.on_bad_row=skip",
                             "training.max_steps=1", "model.max_length=32"])
    result = train(cfg, show_progress=False)
    print_result(result)
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    event = next(r for r in logged if r.get("event") == "data")
    assert event["train"]["rejected"] == 2 and event["train"]["rejects"] == str(tmp_path / "run" / "rejects.jsonl")
    assert len((tmp_path / "run" / "rejects.jsonl").read_text().splitlines()) == 2
    assert "2 rejected" in capsys.readouterr().out
