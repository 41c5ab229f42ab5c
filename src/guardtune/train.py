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

import numpy as np
import torch

from guardtune import checkpoint, methods
from guardtune.config import TrainConfig
from guardtune.data import Loaded, load_any
from guardtune.data.splits import grouped_split
from guardtune.encoding import Encoded, length_grouped_batches, length_sorted_batches
from guardtune.guard import ClassifierGuard, GenerativeGuard, Scores
from guardtune.labels import LabelSpace
from guardtune.metrics import summary
from guardtune.models.backbone import load_tokenizer
from guardtune.models.build import build_model, save_weights
from guardtune.models.generative import GenEncoded
from guardtune.models.classifier import masked_bce


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best: dict[str, Any] | None
    test: dict[str, dict[str, Any]] | None
    guard: ClassifierGuard | GenerativeGuard | None = None  # the trained guard, in memory (main process only)
    examples: int = 0  # training examples seen (all processes, a resumed run's earlier part included)
    seconds: float = 0.0  # wall time spent in training steps, validation included (likewise)


HOLDOUT = {"train": 0.9, "validation": 0.1}


def read_data(cfg: TrainConfig, run_dir: Path) -> dict[str, Loaded | None]:
    """train / validation / test. `validation: holdout` keeps a grouped 10% of the training data aside (for
    datasets without a validation split); the rest trains."""
    rejects = run_dir / "rejects.jsonl" if cfg.data.on_bad_row == "skip" else None
    out = {split: load_any(value, cfg.data.on_bad_row, rejects) if value not in (None, "holdout") else None
           for split in ("train", "validation", "test") for value in [getattr(cfg.data, split)]}
    if cfg.data.validation == "holdout":
        train = out["train"]
        out["train"], out["validation"] = (
            Loaded(grouped_split(train.examples, part, cfg.training.seed, HOLDOUT), train.report,
                   f"{train.label} ({part} {share:.0%})") for part, share in HOLDOUT.items())
    return out


def param_groups(model: torch.nn.Module, t: Any) -> list[dict[str, Any]]:
    """No weight decay on biases and norms; the freshly initialised head learns faster (10 x lr unless set)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith("head."), p.ndim >= 2), []).append(p)
    return [{"params": ps, "lr": (t.head_lr or 10 * t.lr) if head else t.lr, "weight_decay": t.weight_decay if decay else 0.0}
            for (head, decay), ps in sorted(groups.items())]


def positive_weight(setting: Any, enc: Encoded) -> torch.Tensor | None:
    if setting is None:
        return None
    if setting == "auto":
        positives = (enc.targets * enc.mask).sum(0)
        negatives = ((1 - enc.targets) * enc.mask).sum(0)
        return torch.tensor(np.clip(negatives / np.maximum(positives, 1), 1.0, 10.0), dtype=torch.float32)
    return torch.full((enc.targets.shape[1],), float(setting))


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches; every process gets the same number (required by collective ops)."""
    usable = len(batches) - len(batches) % world if len(batches) >= world else len(batches)
    return batches[:usable][rank::world] or batches[:1]


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@torch.no_grad()
def evaluate(model, enc, labels: LabelSpace, accelerator, batch_size: int, pad_id: int,
             prompter: Any = None) -> dict[str, Any]:
    """Validation loss and AUPRC per task, every process scoring its share (a generative guard's probabilities
    come from label-logit scoring, its loss from the answer tokens)."""
    from accelerate.utils import gather_object

    model.eval()
    if prompter is None:
        rows, total_loss, cells = _classifier_validation(model, enc, accelerator, batch_size, pad_id)
    else:
        rows, total_loss, cells = _generative_validation(model, enc, accelerator, batch_size, pad_id, prompter)
    gathered = gather_object([(rows, total_loss, cells)])
    probs = np.zeros((len(enc.examples), len(labels.outputs)), dtype=np.float32)
    for part_rows, _, _ in gathered:
        for index, p in part_rows:
            probs[index] = p
    model.train()
    metrics = summary(enc.examples, Scores(labels, probs))
    auprcs = [m["auprc"] for task, m in metrics.items() if m.get("auprc") is not None]
    loss = sum(g[1] for g in gathered) / max(1.0, sum(g[2] for g in gathered))
    return {"val_loss": loss, "val_auprc": float(np.mean(auprcs)) if auprcs else None,
            **{f"val_{task}_auprc": m["auprc"] for task, m in metrics.items() if "auprc" in m}}


def _classifier_validation(model, enc: Encoded, accelerator, batch_size: int, pad_id: int):
    batches = length_sorted_batches(enc.lengths, batch_size)
    mine = batches[accelerator.process_index::accelerator.num_processes]
    n_calls = math.ceil(len(batches) / accelerator.num_processes)
    rows, total_loss, cells = [], 0.0, 0.0
    for k in range(n_calls):  # same number of forward calls on every process (FSDP needs it); extras dropped
        index = mine[k] if k < len(mine) else batches[0]
        batch = enc.batch(index, pad_id)
        logits = model(input_ids=batch["input_ids"].to(accelerator.device),
                       attention_mask=batch["attention_mask"].to(accelerator.device)).float().cpu()
        if k < len(mine):
            total_loss += masked_bce(logits, batch["targets"], batch["mask"]).item() * batch["mask"].sum().item()
            cells += batch["mask"].sum().item()
            rows.append((index, torch.sigmoid(logits).numpy()))
    return rows, total_loss, cells


def _generative_validation(model, enc, accelerator, batch_size: int, pad_id: int, prompter: Any):
    from guardtune.models.generative import IGNORE, score

    raw = accelerator.unwrap_model(model)
    mine = list(range(accelerator.process_index, len(enc.examples), accelerator.num_processes))
    total_loss, cells = 0.0, 0.0
    for index in length_sorted_batches(enc.lengths[mine], batch_size):
        batch = enc.batch([mine[i] for i in index], pad_id)
        answer = int((batch["labels"][:, 1:] != IGNORE).sum())
        loss = raw(batch["input_ids"].to(accelerator.device), batch["attention_mask"].to(accelerator.device),
                   batch["labels"].to(accelerator.device))
        total_loss, cells = total_loss + loss.item() * answer, cells + answer
    probs = score(raw, prompter, [enc.examples[i] for i in mine], batch_size)
    return [(mine, probs)], total_loss, cells


def prepare_run_dir(run: Path, resume: bool, overwrite: bool) -> None:
    started = (run / "config.yaml").exists()
    if started and not (resume or overwrite):
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it, --overwrite to start "
                              "again, or choose another output_dir=...")
    if overwrite and not resume and started:
        import shutil

        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, show_progress: bool = True) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from guardtune import ui

    t, run = cfg.training, Path(cfg.output_dir)
    # Launched as several processes on a machine without CUDA: data-parallel on CPU over gloo.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(cpu=multi_cpu, mixed_precision=mixed_precision(t.mixed_precision),
                              log_with=list(t.trackers) or None, project_dir=str(run))
    main = accelerator.is_main_process
    # FSDP and ZeRO shard parameters: the final guard is gathered and saved, but resumable checkpoints and the
    # best-step selection (which read whole tensors on one process) are not supported there yet.
    sharded = accelerator.distributed_type in ("FSDP", "DEEPSPEED")
    if accelerator.distributed_type == "DEEPSPEED" and t.grad_accum > 1:
        raise ValueError("under DeepSpeed set gradient accumulation in the DeepSpeed config "
                         "(deepspeed_config.gradient_accumulation_steps) and keep training.grad_accum=1")
    if main:
        prepare_run_dir(run, resume, overwrite)
    accelerator.wait_for_everyone()
    ckpt_root = run / "checkpoints"
    if resume and sharded:
        raise ValueError("--resume is not supported with FSDP or DeepSpeed yet (sharded optimiser state)")
    resume_from = checkpoint.latest(ckpt_root) if resume else None
    if resume and resume_from is None and (run / "labels.json").exists():
        raise FileExistsError(f"{run} is a finished run; nothing to resume")

    data = read_data(cfg, run)
    labels = LabelSpace.from_examples(data["train"].examples)
    tokenizer = load_tokenizer(cfg.model)
    pad_id = tokenizer.pad_token_id
    pad_multiple = 8 if accelerator.device.type == "cuda" else None
    prompter = None
    if cfg.model.kind == "generative":
        cfg, prompter = _generative_setup(cfg, labels, tokenizer)
    encode = (lambda split: GenEncoded.build(split.examples, prompter)) if prompter else (  # noqa: E731
        lambda split: Encoded.build(split.examples, tokenizer, labels, cfg.model.max_length))
    train_set = encode(data["train"])
    val_set = encode(data["validation"]) if data["validation"] else None
    world, rank = accelerator.num_processes, accelerator.process_index
    epoch_batches = lambda epoch: shard(length_grouped_batches(  # noqa: E731
        train_set.lengths, t.batch_size, t.seed, epoch, t.group_by_length), rank, world)
    steps_per_epoch = math.ceil(len(epoch_batches(0)) / t.grad_accum)
    total = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
    eval_every = t.eval_every or steps_per_epoch
    save_every = t.save_every or eval_every

    set_seed(t.seed)
    method, params = methods.get(cfg.method.name), cfg.method.build()
    model = build_model(cfg, labels, methods.Context(total_steps=total, run_dir=run))
    optimizer = torch.optim.AdamW(param_groups(model, t), lr=t.lr)
    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=round(t.warmup_ratio * total),
                              num_training_steps=total)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    pos_weight = positive_weight(t.pos_weight, train_set) if prompter is None else None
    pos_weight = pos_weight.to(accelerator.device) if pos_weight is not None else None
    groups = torch.tensor(labels.groups, device=accelerator.device)

    progress = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": None, "examples": 0, "seconds": 0.0}
    if resume_from is not None:
        progress, method_state = checkpoint.load(resume_from, raw, optimizer, scheduler)
        if method.load_state and method_state is not None:
            method.load_state(raw, method_state)
    elif main:
        cfg.save(run / "config.yaml")
        tokenizer.save_pretrained(str(run / "tokenizer"))
    if t.trackers:
        accelerator.init_trackers(run.name, config=_flat(cfg.to_dict()))
    log = (run / "log.jsonl").open("a", encoding="utf-8") if main else None
    if main:
        trainable = sum(p.numel() for p in raw.parameters() if p.requires_grad)
        everything = sum(p.numel() for p in raw.parameters())
        _log(log, {"event": "start", "resumed_from": progress["step"], "total_steps": total, "world_size": world,
                   "train_examples": len(train_set.examples), "trainable_params": trainable, "params": everything,
                   "outputs": list(labels.outputs)})

    bar = ui.bar(total, f"training {cfg.method.name}", enabled=show_progress and main, initial=progress["step"])
    window = {"loss": 0.0, "n": 0, "examples": 0, "tokens": 0, "start": time.perf_counter()}
    model.train()
    clock = time.perf_counter()
    while progress["step"] < total:
        batches = epoch_batches(progress["epoch"])
        for b in range(progress["batch"], len(batches)):
            batch = train_set.batch(batches[b], pad_id, pad_multiple)
            sync = (b + 1) % t.grad_accum == 0 or b + 1 == len(batches)
            with nullcontext() if sync else accelerator.no_sync(model):
                inputs = {"input_ids": batch["input_ids"].to(accelerator.device),
                          "attention_mask": batch["attention_mask"].to(accelerator.device), "index": batch["index"]}
                if prompter is not None:  # generative: the model returns the answer-token loss
                    loss = model(**inputs, labels=batch["labels"].to(accelerator.device))
                else:
                    loss = masked_bce(model(**inputs), batch["targets"].to(accelerator.device),
                                      batch["mask"].to(accelerator.device), pos_weight, groups)
                if method.extra_loss is not None:
                    loss = loss + method.extra_loss(raw, params)
                accelerator.backward(loss / t.grad_accum)
            window["loss"] += loss.item()
            window["n"] += 1
            window["examples"] += len(batch["index"]) * world
            progress["examples"] = progress.get("examples", 0) + len(batch["index"]) * world
            window["tokens"] += int(batch["attention_mask"].sum()) * world
            progress["batch"] = b + 1
            if not sync:
                continue
            if t.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
            optimizer.step()
            scheduler.step()
            progress["step"] += 1
            now = time.perf_counter()
            progress["seconds"] = progress.get("seconds", 0.0) + now - clock
            clock = now
            if method.on_step is not None:
                method.on_step(raw, progress["step"])
            optimizer.zero_grad(set_to_none=True)
            step = progress["step"]
            bar.update(1)
            if step % t.log_every == 0 or step == total:
                window["loss"] = accelerator.reduce(torch.tensor(window["loss"], device=accelerator.device), "mean").item()
                record = _window_record(window, step, progress["epoch"], scheduler.get_last_lr()[0])
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                ex_s=f"{record['examples_per_s']:.0f}")
                _report(accelerator, log, record)
            if val_set is not None and (step % eval_every == 0 or step == total):
                scores = evaluate(model, val_set, labels, accelerator, t.eval_batch_size, pad_id, prompter)
                _report(accelerator, log, {"step": step, **scores})
                key = scores["val_auprc"] if scores["val_auprc"] is not None else -scores["val_loss"]
                if not sharded and (progress["best"] is None or key > progress["best"]):
                    progress.update(best=key, best_step=step)
                    if main:
                        checkpoint.save_best(ckpt_root, raw, {"step": step, **scores})
            if step % save_every == 0 and step < total and main and not sharded:
                checkpoint.save(ckpt_root, raw, optimizer, scheduler, progress,
                                method.state(raw) if method.state else None, t.keep_checkpoints)
            accelerator.wait_for_everyone()
            if step >= total:
                break
        else:
            progress["epoch"] += 1
            progress["batch"] = 0
    bar.close()
    return _finish(cfg, accelerator, model, tokenizer, data, run, progress, log)


def _finish(cfg, accelerator, model, tokenizer, data, run, progress, log) -> TrainResult:
    """Keep the best validation step's weights, save the guard, and report on the test split."""
    raw = accelerator.unwrap_model(model)
    sharded = accelerator.distributed_type in ("FSDP", "DEEPSPEED")
    best = checkpoint.load_best(run / "checkpoints", raw) if data["validation"] and not sharded else None
    state = accelerator.get_state_dict(model) if sharded else None  # gathers shards; every process takes part
    test = guard = None
    if accelerator.is_main_process:
        save_weights(raw, run, cfg.method.name, state)
        kind = GenerativeGuard if cfg.model.kind == "generative" else ClassifierGuard
        guard = kind(raw, tokenizer, cfg.model.max_length, name=str(run), batch_size=cfg.training.eval_batch_size)
        if data["test"] is not None and not sharded:  # sharded: score with guardtune.load(run) afterwards
            examples = data["test"].examples
            test = summary(examples, guard.score(examples))
            (run / "test_metrics.json").write_text(json.dumps(test, indent=1) + "\n", encoding="utf-8")
        _log(log, {"event": "end", "step": progress["step"], "best": best, "test": test})
        log.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run, progress["step"], best, test, guard, progress.get("examples", 0),
                       progress.get("seconds", 0.0))


def _generative_setup(cfg: TrainConfig, labels: LabelSpace, tokenizer: Any) -> tuple[TrainConfig, Any]:
    """The policy written into the run's config (a policy file may change later; the run must not), and the
    prompter that formats training and validation data exactly as inference will."""
    import dataclasses

    from guardtune.chat_format import ChatFormat, read_policy
    from guardtune.models.generative import Prompter

    if cfg.training.pos_weight is not None:
        raise ValueError("training.pos_weight applies to classifier guards; a generative guard learns answer words")
    policy = read_policy(cfg.model.policy, labels)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, policy=policy))
    return cfg, Prompter(ChatFormat(labels, policy), tokenizer, cfg.model.max_length)


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
