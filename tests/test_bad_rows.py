"""A deliberately broken file, one fault per line: each fault is an error naming file, line and field; with
on_bad_row=skip every fault lands in the rejects file with the same details and the counts reconcile."""

import json

import pytest

from guardtune.cli import main
from guardtune.data import load
from guardtune.data.intake import RowError

GOOD = b'{"prompt": "how do I bake bread?", "prompt_harmful": 0, "language": "en"}'
FAULTS = {  # name -> (line bytes, field the error must name, words the message must contain)
    "broken json": (b'{"prompt": "unfinished', None, "broken JSON"),
    "wrong type": (b'{"prompt": 42, "prompt_harmful": 0}', "prompt", "expected text"),
    "unknown label value": (b'{"prompt": "x", "prompt_harmful": "maybe"}', "prompt_harmful", "unknown label value"),
    "unknown category": (b'{"prompt": "x", "prompt_categories": ["S99"]}', "prompt_categories", "unknown"),
    "empty text": (b'{"prompt": "   ", "prompt_harmful": 1}', "prompt", "empty"),
    "invalid utf-8": (b'{"prompt": "caf\xe9 au lait", "prompt_harmful": 0}', "prompt", "invalid UTF-8"),
    "10 MB line": (b'{"prompt": "' + b"a" * 10_000_000 + b'"}', None, "longer than"),
    # found by trying the intake as an attacker would (each was a traceback, or accepted but wrong)
    "null text": (b'{"prompt": null, "prompt_harmful": 1}', "prompt", "null"),
    "nested category list": (b'{"prompt": "x", "prompt_categories": [["S1"]]}', "prompt_categories", "category"),
    "category objects": (b'{"prompt": "x", "prompt_categories": [{"c": "S1"}]}', "prompt_categories", "category"),
    "number as rationale": (b'{"prompt": "x", "rationale": 5}', "rationale", "pairs"),
    "flat list as rationale": (b'{"prompt": "x", "rationale": [1, 2]}', "rationale", "pairs"),
    "100,000-deep nesting": (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "nested"),
    "lone surrogate escape": (b'{"prompt": "x\\ud800"}', "prompt", "surrogate"),
    "lone surrogate in response": (b'{"prompt": "x", "response": "\\udfff"}', "response", "surrogate"),
    "NUL escape": (b'{"prompt": "a\\u0000b"}', "prompt", "NUL"),
    "duplicate key": (b'{"prompt": "a", "prompt": "b"}', "prompt", "duplicate key"),
    "100,000-digit number": (b'{"prompt": "x", "prompt_harmful": ' + b"1" * 100_000 + b"}", None, "digits"),
    "NaN label": (b'{"prompt": "x", "prompt_harmful": NaN}', None, "not a JSON value"),
    "list as id": (b'{"prompt": "x", "id": [1]}', "id", "expected text"),
}


def write(path, lines):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_an_error_naming_file_line_and_field(tmp_path, fault):
    line, field, words = FAULTS[fault]
    path = write(tmp_path / "broken.jsonl", [GOOD, line, GOOD])
    with pytest.raises(RowError) as err:
        load(str(path))
    assert err.value.where.path == str(path)
    assert err.value.where.index == 2 and err.value.where.unit == "line"
    assert err.value.field == field
    assert words in str(err.value)
    assert f"{path}:line 2" in str(err.value)


def test_skip_writes_every_fault_to_rejects_and_reconciles(tmp_path):
    names = sorted(FAULTS)
    path = write(tmp_path / "broken.jsonl", [GOOD] + [FAULTS[n][0] for n in names] + [GOOD])
    rejects = tmp_path / "rejects.jsonl"
    loaded = load(str(path), on_bad_row="skip", rejects=rejects)
    report = loaded.report
    assert (report.read, report.accepted, report.rejected) == (len(names) + 2, 2, len(names))
    assert report.reconciles
    assert len(loaded.examples) == 2
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(2, len(names) + 2))
    for record, name in zip(records, names):
        assert record["file"] == str(path)
        assert record["field"] == FAULTS[name][1]
        assert FAULTS[name][2] in record["error"]
    big = next(r for r, n in zip(records, names) if n == "10 MB line")
    assert len(big["raw"] or "") < 20_000  # the rejects file names the line; it does not copy 10 MB


def test_broken_csv_rows(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('prompt,prompt_harmful\n"fine, quoted",0\ntoo,many,fields\nok,1\n"never closed,1\n',
                    encoding="utf-8")
    loaded = load(str(path), on_bad_row="skip", rejects=tmp_path / "r.jsonl")
    assert [ex.prompt for ex in loaded.examples] == ["fine, quoted", "ok"]
    records = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["line"] for r in records] == [3, 5]
    assert all("broken CSV" in r["error"] for r in records)
    assert loaded.report.reconciles


def test_cli_validate_reports_and_exits_nonzero(tmp_path, capsys):
    path = write(tmp_path / "broken.jsonl", [GOOD, FAULTS["unknown label value"][0]])
    assert main(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:line 2: prompt_harmful: unknown label value 'maybe'" in err
    rejects = tmp_path / "out.rejects.jsonl"
    code = main(["data", "validate", str(path), "--on-bad-row", "skip", "--rejects", str(rejects)])
    assert code == 1
    out = capsys.readouterr().out
    assert "read 2 rows: 1 accepted, 1 rejected" in out
    assert json.loads(rejects.read_text())["field"] == "prompt_harmful"
