"""Training throughput and peak memory, same model, data and method, measured in one run (ratios are what count).

  (a) a plain loop that pads every text to 512 tokens (what common fine-tuning scripts do)  vs
  (b) guardtune's loop (dynamic padding, length-grouped batches)                     target (b)/(a) >= 3x
  (c) freeze top-2 with and without the cached trunk, seconds per epoch after the first: target >= 5x
      on a deep backbone; shown for MiniLM (6 blocks) and a 32-block backbone of MiniLM's width (random
      weights, speed only: Phi-4-mini has 32 blocks)
  (d) LoRA vs DoRA vs AdaLoRA in guardtune's loop: target DoRA overhead over LoRA <= 30%

Each case runs in its own process so that peak memory (RSS on CPU, allocated on CUDA) is its own.
Data: a seeded sample of ../shared/data/toxicchat_human (real length distribution), or the demo set.

  python benchmarks/train_throughput.py            (about 8 minutes on 2 CPU cores)
  python benchmarks/train_throughput.py --quick    (fewer steps, for a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def data_spec(n: int) -> dict:
    from guardtune.data.registry import get
    from guardtune.paths import data_root

    name = "toxicchat_human:train" if get("toxicchat_human").available(data_root()) else "demo:all"
    return {"name": name, "sample": n, "seed": 0}


def base_settings(run_dir: str, model: str, n: int, max_length: int) -> list[str]:
    return [f"output_dir={run_dir}", f"model.name={model}", f"model.max_length={max_length}",
            "model.head_dropout=0.0", f"data.train={json.dumps(data_spec(n))}", "data.validation=null",
            "data.test=null", "training.batch_size=16", "training.log_every=1", "training.lr=5e-4"]


def run_guardtune(settings: list[str]) -> dict:
    from guardtune import config
    from guardtune.train import peak_memory_mb, train

    cfg = config.load(None, settings)
    result = train(cfg, overwrite=True, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    start = next(r for r in records if r.get("event") == "start")
    timed = steps[2:] or steps  # the first steps warm up allocators and caches
    per_epoch: dict[int, float] = {}
    previous = steps[0]["time"]
    for r in steps:
        per_epoch[r["epoch"]] = per_epoch.get(r["epoch"], 0.0) + r["time"] - previous
        previous = r["time"]
    return {"examples_per_s": sum(r["examples_per_s"] for r in timed) / len(timed),
            "peak_memory_mb": peak_memory_mb(), "epoch_seconds": per_epoch, "trainable": start["trainable_params"]}


def run_plain(model: str, n: int, steps: int) -> dict:
    """The common script: tokenizer(padding='max_length', max_length=512), shuffled DataLoader, same model,
    same LoRA, same optimiser."""
    import torch

    from guardtune import config, methods
    from guardtune.data import load
    from guardtune.encoding import template
    from guardtune.labels import LabelSpace
    from guardtune.models.backbone import load_tokenizer
    from guardtune.models.build import build_model
    from guardtune.models.classifier import masked_bce
    from guardtune.train import peak_memory_mb

    torch.manual_seed(0)
    cfg = config.load(None, base_settings("unused", model, n, 512))
    examples = load(data_spec(n)).examples
    labels = LabelSpace.from_examples(examples)
    tokenizer = load_tokenizer(cfg.model)
    pairs = [template(ex) for ex in examples]
    enc = tokenizer([p for p, _ in pairs], padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    targets, mask = (torch.from_numpy(a) for a in labels.targets(examples))
    dataset = torch.utils.data.TensorDataset(enc["input_ids"], enc["attention_mask"], targets, mask)
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)
    model_ = build_model(cfg, labels, methods.Context(total_steps=steps))
    optimizer = torch.optim.AdamW([p for p in model_.parameters() if p.requires_grad], lr=5e-4)
    model_.train()
    done, start = 0, None
    for step, (ids, attn, y, m) in enumerate(loader):
        if step == 2:
            start, done = time.perf_counter(), 0
        loss = masked_bce(model_(input_ids=ids, attention_mask=attn), y, m)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        done += len(ids)
        if step + 1 >= steps:
            break
    return {"examples_per_s": done / (time.perf_counter() - start), "peak_memory_mb": peak_memory_mb()}


def deep_backbone(directory: Path, layers: int) -> str:
    """MiniLM's width with `layers` blocks and random weights (throughput does not depend on the weights)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from guardtune.models.backbone import resolve

    if not (directory / "config.json").exists():
        cfg = AutoConfig.from_pretrained(resolve(MINILM), num_hidden_layers=layers)
        AutoModel.from_config(cfg).save_pretrained(directory)
        AutoTokenizer.from_pretrained(resolve(MINILM)).save_pretrained(directory)
    return str(directory)


def case(name: str, work: Path, quick: bool) -> dict:
    n, steps = (160, 8) if quick else (480, 24)
    run = str(work / name)
    if name == "a_plain_pad512":  # about 20 s a step on 2 CPU cores: 4 timed steps give a stable rate
        return run_plain(MINILM, n, 6)
    if name == "b_guardtune":
        return run_guardtune(base_settings(run, MINILM, n, 512) + [f"training.max_steps={steps}"])
    if name.startswith("c_"):
        model = MINILM if "minilm" in name else deep_backbone(work / "deep32", 32)
        cached = name.endswith("_cached")
        size = 128 if quick else 256
        return run_guardtune(base_settings(run, model, size, 128) + [
            "method.name=freeze", "method.top_k=2", f"method.cache_trunk={str(cached).lower()}", "training.epochs=3"])
    if name.startswith("d_"):
        method = name[2:]
        extra = ["method.init_r=16", "method.target_r=8"] if method == "adalora" else ["method.r=16"]
        return run_guardtune(base_settings(run, MINILM, n, 512) + [f"method.name={method}",
                                                                   f"training.max_steps={steps}", *extra])
    raise KeyError(name)


CASES = ["a_plain_pad512", "b_guardtune", "c_minilm_uncached", "c_minilm_cached", "c_deep32_uncached",
         "c_deep32_cached", "d_lora", "d_dora", "d_adalora"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", nargs="*", default=CASES, help="run only these cases (report needs all)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print("RESULT " + json.dumps(case(args.case, Path(args.work), args.quick)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.cases:
            cmd = [sys.executable, __file__, "--case", name, "--work", work] + (["--quick"] if args.quick else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"case {name} failed:\n{out.stderr[-3000:]}")
            results[name] = json.loads(line[0][7:])
            print(f"  {name}: {results[name]['examples_per_s']:.1f} examples/s, "
                  f"peak {results[name]['peak_memory_mb']:.0f} MB", flush=True)
    if set(results) == set(CASES):
        report(results)


def after_first(r: dict) -> float:
    epochs = {int(k): v for k, v in r["epoch_seconds"].items()}
    later = [v for k, v in epochs.items() if k > 0]
    return sum(later) / len(later)


def report(r: dict) -> None:
    import torch

    print(f"\ndevice: {'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
          f"threads {torch.get_num_threads()}")
    a, b = r["a_plain_pad512"], r["b_guardtune"]
    print(f"(a) plain loop, pad to 512:   {a['examples_per_s']:8.1f} ex/s  peak {a['peak_memory_mb']:7.0f} MB")
    print(f"(b) guardtune loop:           {b['examples_per_s']:8.1f} ex/s  peak {b['peak_memory_mb']:7.0f} MB")
    print(f"    (b)/(a) = {b['examples_per_s'] / a['examples_per_s']:.1f}x   (target >= 3x)")
    for model in ("minilm", "deep32"):
        plain, cached = r[f"c_{model}_uncached"], r[f"c_{model}_cached"]
        ratio = after_first(plain) / after_first(cached)
        print(f"(c) freeze top-2, {model:6s}: {after_first(plain):6.2f} s/epoch uncached, "
              f"{after_first(cached):6.2f} s/epoch cached (after the first) = {ratio:.1f}x   (target >= 5x)")
    lora = r["d_lora"]["examples_per_s"]
    for method in ("lora", "dora", "adalora"):
        x = r[f"d_{method}"]
        print(f"(d) {method:8s} {x['examples_per_s']:8.1f} ex/s  peak {x['peak_memory_mb']:7.0f} MB  "
              f"trainable {x['trainable']:,}  overhead vs LoRA {100 * (lora / x['examples_per_s'] - 1):+.0f}%")
    print("    target: DoRA overhead <= 30%")


if __name__ == "__main__":
    main()
