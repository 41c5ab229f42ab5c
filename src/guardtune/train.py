"""The training loop: one, explicit, on accelerate (device placement, DDP/FSDP/DeepSpeed wrapping, mixed
precision, trackers). Every data-parallel process takes its own share of each epoch's length-grouped batches.

    result = train(guardtune.config.load("configs/demo.yaml"))
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from guardtune import checkpoint, kinds, methods
from guardtune.config import TrainConfig
from guardtune.data import Loaded, load_any
from guardtune.data.splits import grouped_split
from guardtune.encoding import length_grouped_batches, length_sorted_batches
from guardtune.guard import Guard, Rewriter, record_kind
from guardtune.labels import LabelSpace
from guardtune.metrics import summary
from guardtune.models.backbone import load_tokenizer, source as backbone_source
from guardtune.models.build import build_model, init_from, save_weights


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best: dict[str, Any] | None
    test: dict[str, dict[str, Any]] | None
    guard: Guard | Rewriter | None = None  # the trained guard, in memory (main process only)
    examples: int = 0  # training examples seen (all processes, a resumed run's earlier part included)
    seconds: float = 0.0  # wall time spent in training steps, validation included (likewise)
    data: dict[str, dict[str, Any]] | None = None  # per split: rows read, accepted, rejected; the rejects file


HOLDOUT = {"train": 0.9, "validation": 0.1}


def read_data(cfg: TrainConfig, run_dir: Path) -> dict[str, Loaded | None]:
    """train / validation / test. `validation: holdout` keeps a grouped 10% of the training data aside (for
    datasets without a validation split); the rest trains."""
    rejects = run_dir / "rejects.jsonl" if cfg.data.on_bad_row == "skip" else None
    if rejects is not None and rejects.exists():
        rejects.unlink()  # this run's rejects only: a resumed or repeated run reads its data again
    out = {split: load_any(value, cfg.data.on_bad_row, rejects) if value not in (None, "holdout") else None
           for split in ("train", "validation", "test") for value in [getattr(cfg.data, split)]}
    if cfg.data.validation == "holdout":
        train = out["train"]
        out["train"], out["validation"] = (
            Loaded(grouped_split(train.examples, part, cfg.training.seed, HOLDOUT), train.report,
                   f"{train.label} ({part} {share:.0%})") for part, share in HOLDOUT.items())
    return out


def intake_summary(data: dict[str, Loaded | None]) -> dict[str, dict[str, Any]]:
    """Per split: what was read, accepted and rejected, and where the rejects went (logged and printed)."""
    return {split: {"read": loaded.report.read, "accepted": loaded.report.accepted,
                    "rejected": loaded.report.rejected, "excluded": sum(loaded.report.excluded.values()),
                    "rejects": loaded.report.rejects_path if loaded.report.rejected else None,
                    "summary": loaded.report.summary()}
            for split, loaded in data.items() if loaded is not None}


def param_groups(model: torch.nn.Module, t: Any) -> list[dict[str, Any]]:
    """No weight decay on biases and norms; the freshly initialised head learns faster (10 x lr unless set)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith("head."), p.ndim >= 2), []).append(p)
    return [{"params": ps, "lr": (t.head_lr or 10 * t.lr) if head else t.lr, "weight_decay": t.weight_decay if decay else 0.0}
            for (head, decay), ps in sorted(groups.items())]


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches; every process gets the same number (required by collective ops)."""
    usable = len(batches) - len(batches) % world if len(batches) >= world else len(batches)
    return batches[:usable][rank::world] or batches[:1]


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def on_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def sharded(accelerator: Any) -> bool:
    """FSDP and ZeRO shard parameters: every process must then run the same forward calls."""
    return accelerator.distributed_type in ("FSDP", "DEEPSPEED")


def run_on_shares(accelerator: Any) -> Any:
    """fn over this process's share of items, results gathered back in order (see kinds.kind.RunOnShares).
    With sharded parameters every process runs every item, so forward calls match across processes."""
    from accelerate.utils import gather_object

    world, rank = accelerator.num_processes, accelerator.process_index

    def run(fn: Any, items: Any) -> list:
        if world == 1 or sharded(accelerator):
            return list(fn(items))
        mine = list(range(rank, len(items), world))
        parts = gather_object([(mine, list(fn([items[i] for i in mine])))])
        out: list = [None] * len(items)
        for index, values in parts:
            for i, value in zip(index, values):
                out[i] = value
        return out

    return run


@torch.no_grad()
def validate(kind: kinds.Kind, model: Any, tokenizer: Any, cfg: TrainConfig, val_set: Any,
             accelerator: Any) -> dict[str, Any]:
    """Validation loss (the model's own, as in training) and the kind's figures, which go through the same
    guard object as test and serving (`kind.wrap`). `val_score` picks the best step; without one, -val_loss."""
    model.eval()
    raw = accelerator.unwrap_model(model)
    rows = range(len(val_set.examples))
    mine = list(rows) if sharded(accelerator) else list(rows)[accelerator.process_index::accelerator.num_processes]
    total, n = 0.0, 0
    for index in length_sorted_batches(val_set.lengths[mine], cfg.training.eval_batch_size):
        batch = val_set.batch([mine[i] for i in index], tokenizer.pad_token_id)
        batch.pop("index")  # training indices key the trunk cache; validation rows must not hit it
        total += model(**on_device(batch, accelerator.device)).item() * len(index)
        n += len(index)
    losses = accelerator.gather(torch.tensor([total, n], dtype=torch.float64, device=accelerator.device)).view(-1, 2)
    guard = kind.wrap(raw, tokenizer, cfg)
    figures = kind.validate(guard, val_set.examples, run_on_shares(accelerator))
    model.train()
    if sharded(accelerator):  # every process ran every row: its own sums are the whole
        loss = total / max(n, 1)
    else:
        loss = float(losses[:, 0].sum() / losses[:, 1].sum().clamp(min=1))
    return {"val_loss": loss, **figures}


def prepare_run_dir(run: Path, resume: bool, overwrite: bool) -> None:
    started = (run / "config.yaml").exists()
    if started and not (resume or overwrite):
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it, --overwrite to start "
                              "again, or choose another output_dir=...")
    if overwrite and not resume and started:
        import shutil

        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)


def start_accelerator(t: Any, run: Path) -> Any:
    from accelerate import Accelerator

    # Launched as several processes on a machine without CUDA: data-parallel on CPU over gloo.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=multi_cpu, mixed_precision=mixed_precision(t.mixed_precision),
                              log_with=list(t.trackers) or None, project_dir=str(run))
    if accelerator.distributed_type == "DEEPSPEED" and t.grad_accum > 1:
        raise ValueError("under DeepSpeed set gradient accumulation in the DeepSpeed config "
                         "(deepspeed_config.gradient_accumulation_steps) and keep training.grad_accum=1")
    return accelerator


def resume_point(run: Path, resume: bool, accelerator: Any) -> Path | None:
    # FSDP and ZeRO: the final guard is gathered and saved, but resumable checkpoints and the best-step selection
    # (which read whole tensors on one process) are not supported there yet.
    if resume and sharded(accelerator):
        raise ValueError("--resume is not supported with FSDP or DeepSpeed yet (sharded optimiser state)")
    resume_from = checkpoint.latest(run / "checkpoints") if resume else None
    if resume and resume_from is None and (run / "labels.json").exists():
        raise FileExistsError(f"{run} is a finished run; nothing to resume")
    return resume_from


@dataclass
class Session:
    """Everything one training run holds while it steps (built by `start`)."""
    cfg: TrainConfig
    run: Path
    accelerator: Any
    kind: kinds.Kind
    tokenizer: Any
    data: dict[str, Loaded | None]
    train_set: Any
    val_set: Any
    epoch_batches: Any  # epoch -> this process's batches of training rows
    total: int
    eval_every: int
    save_every: int
    method: methods.Method
    params: Any
    model: Any  # as prepared by accelerate (DDP/FSDP-wrapped)
    raw: Any  # the module itself
    optimizer: Any
    scheduler: Any
    progress: dict[str, Any]
    log: Any


def start(cfg: TrainConfig, resume: bool, overwrite: bool) -> Session:
    """The run directory, the data encoded by the kind, the model with its method, the optimiser and schedule,
    and the progress (restored when resuming)."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    t, run = cfg.training, Path(cfg.output_dir)
    accelerator = start_accelerator(t, run)
    if accelerator.is_main_process:
        prepare_run_dir(run, resume, overwrite)
    accelerator.wait_for_everyone()
    resume_from = resume_point(run, resume, accelerator)
    data = read_data(cfg, run)
    labels = LabelSpace.from_examples(data["train"].examples)
    tokenizer = load_tokenizer(cfg.model)
    kind = kinds.get(cfg.model.kind)
    cfg, train_set, val_set = kind.encode(cfg, labels, tokenizer, data)
    world, rank = accelerator.num_processes, accelerator.process_index
    epoch_batches = lambda epoch: shard(length_grouped_batches(  # noqa: E731
        train_set.lengths, t.batch_size, t.seed, epoch, t.group_by_length), rank, world)
    per_epoch = math.ceil(len(epoch_batches(0)) / t.grad_accum)
    total = t.max_steps or max(1, math.ceil(t.epochs * per_epoch))
    set_seed(t.seed)
    method, params = methods.get(cfg.method.name), cfg.method.build()
    model = build_model(cfg, labels, methods.Context(total_steps=total, run_dir=run))
    initialised = init_from(model, t.init_from, cfg) if t.init_from and resume_from is None else None
    optimizer = torch.optim.AdamW(param_groups(model, t), lr=t.lr)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=round(t.warmup_ratio * total),
                              num_training_steps=total)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    progress, log = open_run(cfg, run, accelerator, raw, optimizer, scheduler, method, resume_from, tokenizer,
                             train_set, total)
    if initialised is not None and log is not None:
        _log(log, {"event": "init_from", "source": str(t.init_from), "restored": initialised})
    eval_every = t.eval_every or per_epoch
    return Session(cfg, run, accelerator, kind, tokenizer, data, train_set, val_set, epoch_batches, total,
                   eval_every, t.save_every or eval_every, method, params, model, raw, optimizer, scheduler,
                   progress, log)


def optimizer_step(s: Session) -> None:
    """Clip, step, schedule, the method's own per-step work (AdaLoRA moves rank), then free the gradients."""
    if s.cfg.training.max_grad_norm:
        s.accelerator.clip_grad_norm_(s.model.parameters(), s.cfg.training.max_grad_norm)
    s.optimizer.step()
    s.scheduler.step()
    s.progress["step"] += 1
    if s.method.on_step is not None:
        s.method.on_step(s.raw, s.progress["step"])
    s.optimizer.zero_grad(set_to_none=True)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> TrainResult:
    """Train the model `cfg` describes, of any kind: the kind builds, encodes, validates and wraps; this loop
    only steps. Keeps the best validation step, saves the guard and scores the test split."""
    from guardtune import ui

    s = start(cfg, resume, overwrite)
    t, progress, accelerator, model = s.cfg.training, s.progress, s.accelerator, s.model
    intake = intake_summary(s.data)
    _log(s.log, {"event": "data", **intake})
    world, pad_multiple = accelerator.num_processes, 8 if accelerator.device.type == "cuda" else None
    bar = ui.bar(s.total, f"training {s.cfg.method.name}", enabled=show_progress and accelerator.is_main_process,
                 initial=progress["step"])
    window, clock = new_window(), time.perf_counter()
    model.train()
    while progress["step"] < s.total:
        batches = s.epoch_batches(progress["epoch"])
        for b in range(progress["batch"], len(batches)):
            batch = s.train_set.batch(batches[b], s.tokenizer.pad_token_id, pad_multiple)
            batch = on_device(batch, accelerator.device)
            sync = (b + 1) % t.grad_accum == 0 or b + 1 == len(batches)
            with nullcontext() if sync else accelerator.no_sync(model):
                loss = model(**batch)  # every kind's module computes its own training loss
                if s.method.extra_loss is not None:
                    loss = loss + s.method.extra_loss(s.raw, s.params)
                accelerator.backward(loss / t.grad_accum)
            count(window, progress, loss.item(), len(batch["index"]) * world,
                  int(batch["attention_mask"].sum()) * world)
            progress["batch"] = b + 1
            if not sync:
                continue
            optimizer_step(s)
            progress["seconds"], clock = progress.get("seconds", 0.0) + time.perf_counter() - clock, time.perf_counter()
            step = progress["step"]
            bar.update(1)
            if step % t.log_every == 0 or step == s.total:
                log_window(accelerator, s.log, bar, window, step, progress["epoch"], s.scheduler.get_last_lr()[0])
            if s.val_set is not None and (step % s.eval_every == 0 or step == s.total):
                figures = validate(s.kind, model, s.tokenizer, s.cfg, s.val_set, accelerator)
                keep_if_best(accelerator, s.log, s.run, s.raw, progress, step, figures)
            if step % s.save_every == 0 and step < s.total and accelerator.is_main_process and not sharded(accelerator):
                checkpoint.save(s.run / "checkpoints", s.raw, s.optimizer, s.scheduler, progress,
                                s.method.state(s.raw) if s.method.state else None, t.keep_checkpoints)
            accelerator.wait_for_everyone()
            if step >= s.total:
                break
        else:
            progress["epoch"] += 1
            progress["batch"] = 0
    bar.close()
    result = _finish(s.cfg, s.kind, accelerator, model, s.tokenizer, s.data, s.run, progress, s.log)
    result.data = intake
    return result


def open_run(cfg, run, accelerator, raw, optimizer, scheduler, method, resume_from, tokenizer, train_set,
             total) -> tuple[dict[str, Any], Any]:
    """Progress (restored from a checkpoint when resuming), the saved config and tokenizer, and the log."""
    progress = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": None, "examples": 0, "seconds": 0.0}
    main = accelerator.is_main_process
    if resume_from is not None:
        progress, method_state = checkpoint.load(resume_from, raw, optimizer, scheduler)
        if method.load_state and method_state is not None:
            method.load_state(raw, method_state)
    elif main:
        cfg.save(run / "config.yaml")
        tokenizer.save_pretrained(str(run / "tokenizer"))
    if cfg.training.trackers:
        accelerator.init_trackers(run.name, config=_flat(cfg.to_dict()))
    log = (run / "log.jsonl").open("a", encoding="utf-8") if main else None
    if main:
        _log(log, {"event": "start", "resumed_from": progress["step"], "total_steps": total,
                   "world_size": accelerator.num_processes, "train_examples": len(train_set.examples),
                   "trainable_params": sum(p.numel() for p in raw.parameters() if p.requires_grad),
                   "params": sum(p.numel() for p in raw.parameters()), "kind": cfg.model.kind,
                   "backbone": backbone_source(cfg.model.name, cfg.model.revision),
                   **({"train_set": train_set.info} if getattr(train_set, "info", None) else {}),
                   "outputs": list(raw.labels.outputs)})
    return progress, log


def new_window() -> dict[str, Any]:
    return {"loss": 0.0, "n": 0, "examples": 0, "tokens": 0, "start": time.perf_counter()}


def count(window: dict, progress: dict, loss: float, examples: int, tokens: int) -> None:
    window["loss"] += loss
    window["n"] += 1
    window["examples"] += examples
    window["tokens"] += tokens
    progress["examples"] = progress.get("examples", 0) + examples


def log_window(accelerator, log, bar, window: dict, step: int, epoch: int, lr: float) -> None:
    window["loss"] = accelerator.reduce(torch.tensor(window["loss"], device=accelerator.device), "mean").item()
    record = _window_record(window, step, epoch, lr)
    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", ex_s=f"{record['examples_per_s']:.0f}")
    _report(accelerator, log, record)


def keep_if_best(accelerator, log, run: Path, raw, progress: dict, step: int, figures: dict[str, Any]) -> None:
    """Log a validation, and checkpoint it as the best step when its score is the best so far."""
    _report(accelerator, log, {"step": step, **figures})
    key = figures["val_score"] if figures.get("val_score") is not None else -figures["val_loss"]
    if not sharded(accelerator) and (progress["best"] is None or key > progress["best"]):
        progress.update(best=key, best_step=step)
        if accelerator.is_main_process:
            checkpoint.save_best(run / "checkpoints", raw, {"step": step, **figures})


def _finish(cfg, kind, accelerator, model, tokenizer, data, run, progress, log) -> TrainResult:
    """Keep the best validation step's weights, save the guard, and report on the test split."""
    raw = accelerator.unwrap_model(model)
    best = checkpoint.load_best(run / "checkpoints", raw) if data["validation"] and not sharded(accelerator) else None
    if best is not None and cfg.method.name == "adalora":
        from guardtune.methods import adalora_pattern_from_weights

        adalora_pattern_from_weights(raw)  # the restored step's ranks, not the last step's
    state = accelerator.get_state_dict(model) if sharded(accelerator) else None  # gathers shards; all take part
    test = guard = None
    if accelerator.is_main_process:
        save_weights(raw, run, cfg.method.name, state)
        record_kind(run, cfg.model.kind)
        guard = kind.wrap(raw, tokenizer, cfg, name=run.name)
        if cfg.calibrate.data is not None and not sharded(accelerator) and isinstance(guard, Guard):
            guard.thresholds = calibrate_run(guard, cfg, data, run, log)
        if data["test"] is not None and not sharded(accelerator) and isinstance(guard, Guard):
            examples = data["test"].examples  # sharded: score with guardtune.load(run) afterwards
            test = summary(examples, guard.score(examples), guard.thresholds)
            (run / "test_metrics.json").write_text(json.dumps(test, indent=1) + "\n", encoding="utf-8")
        _log(log, {"event": "end", "step": progress["step"], "best": best, "test": test})
        log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run, progress["step"], best, test, guard, progress.get("examples", 0),
                       progress.get("seconds", 0.0))


def calibration_data(cfg: TrainConfig, data: dict[str, Loaded | None]) -> Loaded:
    """The rows `calibrate.data` names: the run's validation split, or any data spec."""
    if cfg.calibrate.data == "validation":
        if data["validation"] is None:
            raise ValueError("calibrate.data is `validation` but the config has no validation split")
        return data["validation"]
    return load_any(cfg.calibrate.data, cfg.data.on_bad_row)


def calibrate_run(guard: Guard, cfg: TrainConfig, data: dict[str, Loaded | None], run: Path, log: Any) -> Any:
    """`calibrate:` of the config: thresholds (and temperatures) chosen on its data and saved with the run, as
    `guardtune calibrate RUN` would."""
    from guardtune.calibrate import fit_thresholds

    c, loaded = cfg.calibrate, calibration_data(cfg, data)
    thresholds, found = fit_thresholds(guard, loaded.examples, c.strategy, c.target, c.temperature, loaded.label,
                                       per_language=c.min_count if c.per == "language" else None, by="train")
    thresholds.save(run)
    _log(log, {"event": "calibrate", **thresholds.info, "rows": len(loaded.examples),
               "evidence": {k: v for k, v in found["evidence"].items() if "/" not in k}})
    return thresholds


def mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _window_record(window: dict, step: int, epoch: int, lr: float) -> dict[str, Any]:
    elapsed = max(time.perf_counter() - window["start"], 1e-9)
    record = {"step": step, "epoch": epoch, "loss": window["loss"] / max(window["n"], 1), "lr": lr,
              "examples_per_s": window["examples"] / elapsed, "tokens_per_s": window["tokens"] / elapsed,
              "peak_memory_mb": peak_memory_mb()}
    window.update(loss=0.0, n=0, examples=0, tokens=0, start=time.perf_counter())
    return record


def _report(accelerator, log, record: dict[str, Any]) -> None:
    _log(log, record)
    accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"},
                    step=record["step"])


def _log(log, record: dict[str, Any]) -> None:
    if log is not None:
        log.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        log.flush()


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
