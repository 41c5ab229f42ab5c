"""Running a study: each run in its own worker process, several at once when asked (one per device on GPUs,
the CPU cores shared out otherwise), finished runs skipped, failures recorded and passed over.

Killing the study loses at most the runs in progress: their workers die with it (Linux), and the next start
resumes them from their last checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guardtune.paths import write_atomic
from guardtune.study.spec import Run, Study


RESULT, SPEC, ARRAYS = "result.json", "spec.json", "arrays.npz"  # a run is finished when RESULT exists


def write_json(path: Path, data: Any) -> None:
    """Written atomically (`paths.write_atomic`), so a reader never sees half a file."""
    write_atomic(path, json.dumps(data, indent=1, default=str))


def run_dir(study: Study, run: Run) -> Path:
    return study.output_dir / "runs" / run.dirname


def read_result(study: Study, run: Run) -> dict[str, Any] | None:
    path = run_dir(study, run) / RESULT
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def lower_is_better(metric: str) -> bool:
    return "loss" in metric


def choose(study: Study, cell: str, arm: str) -> tuple[str | None, dict[str, Any]]:
    """The search candidate with the best validation figure (first seed), and every candidate's figure."""
    figures: dict[str, Any] = {}
    for cand, _ in study.candidates:
        result = read_result(study, study.run(cell, arm, cand, study.seeds[0]))
        best = (result or {}).get("best") or {}
        figures[cand] = best.get(study.select) if result and result.get("status") == "ok" else None
    ok = {c: v for c, v in figures.items() if v is not None}
    if not ok:
        return None, figures
    pick = min if lower_is_better(study.select) else max
    return pick(ok, key=ok.get), figures


def selection(study: Study) -> dict[tuple[str, str], tuple[str | None, dict[str, Any]]]:
    return {(cell, arm): choose(study, cell, arm) for cell, _ in study.cells for arm in study.arms}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def study_lock(out: Path):
    """One study process per output directory at a time."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with (out / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another `guardtune study` is running in {out}") from None
        yield


class Pool:
    """Worker processes, `workers` at a time; slot i gets devices[i] (CUDA_VISIBLE_DEVICES) or a share of
    the CPU cores."""

    def __init__(self, study: Study, workers: int, devices: list[str] | None, on_done: Callable[[Run, dict], None]):
        if devices and len(devices) < workers:
            raise ValueError(f"{workers} workers need {workers} devices; got {', '.join(devices)}")
        self.study, self.workers, self.devices, self.on_done = study, workers, devices, on_done
        self.threads = None if devices or workers == 1 else max(1, (os.cpu_count() or 1) // workers)

    def env(self, slot: int) -> dict[str, str]:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        if self.devices:
            env["CUDA_VISIBLE_DEVICES"] = self.devices[slot].split(":")[-1]
        elif self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env

    def start(self, run: Run, slot: int) -> tuple[subprocess.Popen, Any]:
        directory = run_dir(self.study, run)
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / SPEC, {"key": run.key, "config": run.config, "test": self.study.test,
                                      "threshold": self.study.threshold, "threads": self.threads,
                                      "detox": self.study.detox,
                                      "workers": self.workers})
        log = (directory / "worker.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "guardtune.study.worker", str(directory)], env=self.env(slot),
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        return proc, log

    def run(self, runs: list[Run]) -> None:
        pending, running = list(runs), {}
        free = list(range(self.workers))
        try:
            while pending or running:
                while pending and free:
                    slot, run = free.pop(0), pending.pop(0)
                    running[slot] = (run, *self.start(run, slot))
                for slot, (run, proc, log) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    log.close()
                    del running[slot]
                    free.append(slot)
                    self.on_done(run, self.finished(run, proc.returncode))
                time.sleep(0.2)
        except BaseException:
            for run, proc, log in running.values():  # killed: the runs in progress resume next time
                proc.terminate()
                proc.wait()
                log.close()
            raise

    def finished(self, run: Run, code: int) -> dict[str, Any]:
        result = read_result(self.study, run)
        if result is None:  # the worker died without a word (a signal, out of memory)
            tail = (run_dir(self.study, run) / "worker.log").read_bytes()[-3000:].decode("utf-8", "replace")
            result = {"key": run.key, "status": "failed", "error": f"worker exited with code {code}",
                      "traceback": tail, "finished": time.time()}
            write_json(run_dir(self.study, run) / RESULT, result)
        return result


def second_stage(study: Study) -> list[Run]:
    """The chosen candidates' other seeds (for the cells and arms whose search has finished)."""
    return [r for (cell, arm), (cand, _) in selection(study).items() if cand is not None
            for r in study.seed_runs(cell, arm, cand)]


def cascade_runs(study: Study) -> tuple[list[Run], list[str]]:
    """The cascade arms' runs whose trained stages have all finished (each at its chosen candidate and the same
    seed), and why the others cannot run yet."""
    from guardtune.study.spec import TFIDF_STAGE

    chosen = selection(study)
    runs, waiting = [], []
    for cell, _ in study.cells:
        for name, spec in study.cascades.items():
            for seed in study.seeds:
                stages, train, missing = [], None, None
                for stage in spec["stages"]:
                    if stage not in study.arms:
                        stages.append(stage if stage == TFIDF_STAGE else str(Path(stage).resolve()))
                        continue
                    candidate = chosen[(cell, stage)][0]
                    run = study.run(cell, stage, candidate, seed) if candidate is not None else None
                    result = read_result(study, run) if run is not None else None
                    if not result or result.get("status") != "ok":
                        missing = stage
                        break
                    stages.append(str((run_dir(study, run) / "guard").resolve()))
                    train = run.config
                if missing is None:
                    runs.append(study.cascade_run(cell, name, seed, stages, train))
                else:
                    waiting.append(f"{'/'.join(p for p in (cell, name) if p)}/seed={seed}: stage {missing} has no "
                                   "finished run")
    return runs, waiting


def pending_runs(study: Study, runs: list[Run], retry_failed: bool) -> list[Run]:
    out = []
    for run in runs:
        result = read_result(study, run)
        if result is None or (retry_failed and result.get("status") != "ok"):
            if result is not None:
                (run_dir(study, run) / RESULT).unlink()
            out.append(run)
    return out


def run_study(study: Study, workers: int = 1, devices: list[str] | None = None, retry_failed: bool = False,
              show_progress: bool = True) -> None:
    """Every run of the study (the search first, then the chosen candidates' other seeds). The caller writes the
    report (`guardtune.study.write_report`); the runner only runs."""
    from guardtune import ui

    out = ui.console()
    with study_lock(study.output_dir):
        first = study.search_runs()
        todo = pending_runs(study, first, retry_failed)
        known = first + second_stage(study)
        done = sum(read_result(study, r) is not None for r in known)
        bar = ui.bar(study.total_runs, f"study {study.name}", enabled=show_progress, initial=done)

        def on_done(run: Run, result: dict[str, Any]) -> None:
            bar.update(1)
            if result.get("status") == "ok":
                figure = (result.get("best") or {}).get(study.select)
                shown = f"{study.select} {figure:.4f}" if isinstance(figure, float) else ""
                what = "fitting" if "cascade" in run.config else "training"
                out.print(f"[green]done[/green] {run.key}  {result['train_seconds']:.0f}s {what}  {shown}")
            else:
                out.print(f"[red]failed[/red] {run.key}: {result.get('error')}")

        out.print(f"study {study.name}: {study.total_runs} runs, {len(todo)} to run now "
                   f"(results in {study.output_dir})")
        pool = Pool(study, workers, devices, on_done)
        pool.run(todo)
        pool.run(pending_runs(study, second_stage(study), retry_failed))
        cascades, waiting = cascade_runs(study)
        pool.run(pending_runs(study, cascades, retry_failed))
        for line in waiting:
            out.print(f"[yellow]not run[/yellow] cascade {line}")
        bar.close()
