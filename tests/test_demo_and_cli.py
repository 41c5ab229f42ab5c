import json
import subprocess
import sys
from collections import Counter

from guardtune.cli import main
from guardtune.data import load
from tests.conftest import ROOT


def test_shipped_demo_set_matches_its_generator():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_demo_set.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_demo_set_covers_every_task_and_several_languages():
    examples = load("demo").examples
    assert 300 <= len(examples) <= 1500  # small enough that `make demo` trains in a few minutes
    assert len({ex.language for ex in examples}) >= 5
    assert Counter(ex.prompt_harmful for ex in examples).keys() == {0, 1}
    with_response = [ex for ex in examples if ex.response is not None]
    assert {ex.response_refusal for ex in with_response} == {0, 1}
    assert {ex.response_harmful for ex in with_response} == {0, 1}
    assert any(ex.prompt_categories for ex in examples) and any(ex.response_categories for ex in examples)
    assert all(ex.prompt_harmful or not ex.prompt_categories for ex in examples)


def test_demo_test_and_validation_prompts_are_unseen_in_training():
    """Issue 21: `data check demo:train demo:test` finds no exact or near duplicate, so the demo's comparison
    with TF-IDF is not a memory test."""
    from guardtune.data.overlap import overlapping

    train = load("demo:train").examples
    for split in ("test", "validation"):
        held = load(f"demo:{split}").examples
        assert held and overlapping(train, held) == set()
        assert not {ex.group for ex in train} & {ex.group for ex in held}


def test_help_teaches_at_every_level(capsys):
    for argv in ([], ["data"]):
        main(argv)
        assert "guardtune data" in capsys.readouterr().out
    for argv in (["--help"], ["data", "validate", "--help"], ["data", "check", "--help"]):
        try:
            main(argv)
        except SystemExit as stop:
            assert stop.code == 0
        out = capsys.readouterr().out
        assert "example" in out.lower() or "start here" in out.lower()


def test_unknown_dataset_lists_choices(capsys):
    assert main(["data", "stats", "toxichat"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'toxichat'" in err and "toxicchat_human" in err


def test_missing_local_dataset_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GUARDTUNE_DATA_DIR", str(tmp_path))
    assert main(["data", "stats", "cold:train"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "cold") in err and "GUARDTUNE_DATA_DIR" in err


def test_demo_command_trains_and_prints_metrics(capsys, tmp_path, tiny):
    # the real demo (MiniLM, ~2 minutes) is `make demo`; here the same command on a tiny backbone, run twice
    settings = [f"output_dir={tmp_path / 'demo'}", f"model.name={tiny('bert')}", "training.max_steps=3", "--quiet"]
    for _ in range(2):  # a second demo replaces the first
        assert main(["demo", *settings]) == 0
        out = capsys.readouterr().out
        assert "trained 3 steps" in out and "AUPRC" in out and "prompt_harmful" in out
        assert "thresholds chosen on demo:validation by max_f1 for each" in " ".join(out.split())
    saved = json.loads((tmp_path / "demo" / "thresholds.json").read_text())  # the guard's, chosen on validation
    assert saved["data"] == "demo:validation" and "prompt_harmful" in saved["thresholds"]
