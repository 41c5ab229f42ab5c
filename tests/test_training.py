"""The training loop: resume after a kill, data-parallel launch, run directory, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import guardtune
from guardtune import config
from guardtune.cli import main
from guardtune.data import load

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, model_dir: Path, run_dir: Path, **training) -> Path:
    data = {
        "output_dir": str(run_dir),
        "model": {"name": str(model_dir), "max_length": 48},
        "method": {"name": "lora", "r": 4},
        "data": {"train": {"name": "demo:train", "sample": 96, "seed": 2},
                 "validation": {"name": "demo:validation", "sample": 24, "seed": 2}, "test": None},
        "training": {"max_steps": 40, "batch_size": 4, "lr": 5e-3, "log_every": 1, "eval_every": 10,
                     "save_every": 5, **training},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


KILL_AT_STEP = textwrap.dedent("""
    import os, signal, sys
    from guardtune import methods
    from guardtune.cli import main
    kill_at = int(sys.argv[1])
    def on_step(model, step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a real, unclean death: no cleanup, no final save
    methods.METHODS["lora"] = methods.replace_method("lora", on_step=on_step)
    sys.exit(main(["train", sys.argv[2], "--quiet"]))
""")


def log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_resume_after_kill_ends_where_an_uninterrupted_run_ends(tmp_path, tiny):
    model = tiny("bert")  # dropout on: the resumed run must also restore the random number generators
    whole = write_config(tmp_path / "whole.yaml", model, tmp_path / "whole")
    broken = write_config(tmp_path / "broken.yaml", model, tmp_path / "broken")
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP, "23", str(broken)], env=env(), capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    steps = [r["step"] for r in log_lines(tmp_path / "broken") if "loss" in r]
    assert max(steps) == 23 - 1 and not (tmp_path / "broken" / "labels.json").exists()
    assert (tmp_path / "broken" / "checkpoints" / "latest").read_text() == "step-000020"

    assert main(["train", str(broken), "--resume", "--quiet"]) == 0
    assert main(["train", str(whole), "--quiet"]) == 0
    resumed = [r for r in log_lines(tmp_path / "broken") if r.get("event") == "start"]
    assert [r["resumed_from"] for r in resumed] == [0, 20]

    examples = load({"name": "demo:test", "sample": 32, "seed": 5}).examples
    a = guardtune.load(tmp_path / "whole").score(examples).probs
    b = guardtune.load(tmp_path / "broken").score(examples).probs
    np.testing.assert_allclose(b, a, atol=1e-5)
    final = lambda run: [r for r in log_lines(run) if r.get("step") == 40 and "loss" in r][0]["loss"]  # noqa: E731
    assert final(tmp_path / "broken") == pytest.approx(final(tmp_path / "whole"), abs=1e-5)


def test_a_started_run_is_not_overwritten_by_accident(tmp_path, tiny, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny("bert"), tmp_path / "run", max_steps=2, eval_every=None)
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["train", str(cfg), "--resume", "--quiet"]) == 2
    assert "finished run; nothing to resume" in capsys.readouterr().err
    assert main(["train", str(cfg), "--overwrite", "--quiet", "training.max_steps=3"]) == 0
    assert [r for r in log_lines(tmp_path / "run") if r.get("event") == "end"][0]["step"] == 3


def test_run_directory_holds_what_using_the_guard_needs(tmp_path, tiny, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny("bert"), tmp_path / "run", max_steps=4)
    assert main(["train", str(cfg), "--quiet", "data.test=demo:test", "training.log_every=2"]) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "labels.json", "tokenizer", "adapter", "heads.safetensors", "log.jsonl",
                 "test_metrics.json"):
        assert (run / name).exists(), name
    saved = config.load(run / "config.yaml")
    assert saved.data.test == "demo:test" and saved.training.log_every == 2  # the resolved config, overrides in
    records = log_lines(run)
    step = [r for r in records if "loss" in r][0]
    assert {"loss", "lr", "examples_per_s", "tokens_per_s", "peak_memory_mb"} <= set(step)
    assert records[0]["trainable_params"] < records[0]["params"]
    out = capsys.readouterr().out
    assert "AUPRC" in out and "prompt_harmful" in out
    verdict = guardtune.load(run).moderate("How do I make a bomb?", response="I can't help with that.")
    assert set(verdict) >= {"prompt_harmful", "response_harmful", "response_refusal"}
    assert 0.0 <= verdict["prompt_harmful"]["score"] <= 1.0 and verdict["prompt_harmful"]["threshold"] == 0.5


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path, tiny):
    cfg = write_config(tmp_path / "c.yaml", tiny("bert"), tmp_path / "run", max_steps=6, eval_every=3, save_every=3)
    # --multi_gpu picks accelerate's torchrun launcher; without CUDA guardtune runs the processes on CPU over gloo
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "guardtune", "train", str(cfg), "--quiet"]
    done = subprocess.run(cmd, env=env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    start = log_lines(tmp_path / "run")[0]
    assert start["world_size"] == 2
    steps = [r["step"] for r in log_lines(tmp_path / "run") if "loss" in r]
    assert steps == list(range(1, 7))
    examples = load({"name": "demo:test", "sample": 8, "seed": 5}).examples
    probs = guardtune.load(tmp_path / "run").score(examples).probs
    assert probs.shape == (8, len(start["outputs"]))
    alone = np.array([ex.response is None for ex in examples])
    about_response = np.array([o.startswith("response_") for o in start["outputs"]])
    applies = ~(alone[:, None] & about_response[None, :])
    assert np.isfinite(probs[applies]).all() and np.isnan(probs[~applies]).all()
    validations = [r for r in log_lines(tmp_path / "run") if "val_loss" in r]  # both processes' shares gathered
    assert [r["step"] for r in validations] == [3, 6] and all(r["val_auprc"] is not None for r in validations)


def test_init_from_restores_the_adapter_and_head_exactly_then_trains_on(tmp_path, tiny):
    """Two-stage training: the second run starts from the first run's adapter and head, tensor for tensor (as
    saved on disk), records it, and trains on from there; a different method or backbone is refused."""
    import torch
    from safetensors.torch import load_file

    from guardtune.labels import LabelSpace
    from guardtune.models.build import build_model, init_from
    from guardtune.train import train

    model_dir = tiny("bert")
    first = tmp_path / "first"
    train(config.load(write_config(tmp_path / "a.yaml", model_dir, first, max_steps=6)), show_progress=False)
    cfg = config.load(write_config(tmp_path / "b.yaml", model_dir, tmp_path / "second", max_steps=4,
                                   init_from=str(first)))
    model = build_model(cfg, LabelSpace.read(first))
    assert init_from(model, first, cfg) == ["adapter", "head"]
    from peft.utils import load_peft_weights

    saved = load_peft_weights(str(first / "adapter"))
    params = dict(model.backbone.named_parameters())
    for name, value in saved.items():  # peft saves without the adapter name; ours carry ".default"
        mine = next(p for n, p in params.items() if n.replace(".default", "") == name.replace(".default", ""))
        assert torch.equal(mine.detach(), value)
    for name, value in load_file(str(first / "heads.safetensors")).items():
        assert torch.equal(dict(model.head.named_parameters())[name].detach(), value)

    result = train(cfg, show_progress=False)
    records = log_lines(result.run_dir)
    assert any(r.get("event") == "init_from" and r["restored"] == ["adapter", "head"] for r in records)
    with pytest.raises(ValueError, match="same method"):
        path = write_config(tmp_path / "c.yaml", model_dir, tmp_path / "third", init_from=str(first))
        data = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**data, "method": {"name": "full"}}))
        other = config.load(path)
        init_from(build_model(other, LabelSpace.read(first)), first, other)
    with pytest.raises(FileNotFoundError, match="not a finished guardtune run"):
        init_from(model, tmp_path, cfg)


def test_calibrate_at_the_end_of_training_saves_thresholds_that_load_and_eval_use(tmp_path, tiny, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny("bert"), tmp_path / "run", max_steps=4, eval_every=None)
    assert main(["train", str(cfg), "--quiet", "calibrate.data=validation", "calibrate.strategy=recall",
                 "calibrate.target=0.75", "data.test=demo:test"]) == 0
    assert "thresholds calibrated when training ended" in capsys.readouterr().out
    run = tmp_path / "run"
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["strategy"] == "recall" and saved["by"] == "train" and "validation" in saved["data"]
    # by hand: the highest threshold that flags at least 75% of the validation set's harmful prompts
    guard = guardtune.load(run)
    rows = load({"name": "demo:validation", "sample": 24, "seed": 2}).examples
    p = guard.score(rows, calibrated=False).probs[:, guard.labels.index("prompt_harmful")]
    harmful = np.sort(p[[ex.prompt_harmful == 1 for ex in rows]])[::-1]
    expected = harmful[int(np.ceil(0.75 * len(harmful))) - 1]
    assert saved["thresholds"]["prompt_harmful"] == pytest.approx(expected, rel=1e-5)
    assert guard.thresholds["prompt_harmful"] == pytest.approx(expected, rel=1e-5)
    # the end-of-training test summary is at the calibrated threshold, not at 0.5
    test = load("demo:test").examples
    q = guard.score(test).probs[:, guard.labels.index("prompt_harmful")]
    y = np.array([ex.prompt_harmful for ex in test])
    flagged = q >= expected
    metrics = json.loads((run / "test_metrics.json").read_text())["prompt_harmful"]
    assert metrics["recall"] == pytest.approx(flagged[y == 1].mean())


def test_calibrate_per_language_in_the_config_saves_what_the_calibrate_command_saves(tmp_path, tiny):
    cfg = write_config(tmp_path / "c.yaml", tiny("bert"), tmp_path / "run", max_steps=4, eval_every=None)
    assert main(["train", str(cfg), "--quiet", "calibrate.data=demo:validation", "calibrate.per=language",
                 "calibrate.min_count=7"]) == 0
    run, again = tmp_path / "run", tmp_path / "again"
    at_training = json.loads((run / "thresholds.json").read_text())
    shutil.copytree(run, again)
    assert main(["calibrate", str(again), "--data", "demo:validation", "--per", "language", "--min-count", "7"]) == 0
    by_command = json.loads((again / "thresholds.json").read_text())
    # demo:validation has en (41 harmful, 36 benign) and de (11, 7) over 7 of each; es and zh have one class
    assert set(at_training["per_language"]) == {"en", "de"}
    assert at_training["per"] == by_command["per"] == "language" and at_training["min_count"] == 7
    assert at_training["thresholds"] == pytest.approx(by_command["thresholds"])
    for language, own in by_command["per_language"].items():
        assert at_training["per_language"][language] == pytest.approx(own)
    assert guardtune.load(run).thresholds.get("prompt_harmful", "de") == pytest.approx(
        by_command["per_language"]["de"]["prompt_harmful"])


@pytest.mark.parametrize("change, message", [
    ({"strategy": "best"}, "calibrate.strategy must be one of"),
    ({"strategy": "fpr"}, "needs a target between 0 and 1"),
    ({"strategy": "recall", "target": 1.5}, "needs a target between 0 and 1"),
    ({"dataset": "x"}, "dataset"),
    ({"per": "country"}, "calibrate.per must be language"),
    ({"per": "language", "min_count": 0}, "calibrate.min_count must be a whole number"),
])
def test_a_bad_calibrate_section_is_a_clear_error(change, message):
    with pytest.raises((ValueError, KeyError), match=message):
        config.from_dict({"calibrate": {"data": "validation", **change}})
