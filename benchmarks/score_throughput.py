"""Scoring throughput: guardtune's batched scoring vs a plain loop, same model and data, measured in one run.

  plain:     every text padded to 512 tokens, 8 at a time, in file order, under no_grad (common scripts)
  guardtune: Guard.score: length-sorted batches of 64, padded to the longest in each, under inference_mode
  target:    guardtune / plain >= 5x

It also prints the achieved FLOP/s (useful work only: real tokens, not padding) as a fraction of a
matrix-multiply peak measured on the same machine in the same run.

  python benchmarks/score_throughput.py [--n 1000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def forward_flops(model, lengths: np.ndarray) -> float:
    """2 x (linear parameters) per token, plus attention scores and mixing (4 x layers x T^2 x hidden)."""
    cfg = model.backbone.config
    linear = sum(m.weight.numel() for m in model.backbone.modules() if isinstance(m, torch.nn.Linear))
    return float(sum(2 * linear * t + 4 * cfg.num_hidden_layers * t * t * cfg.hidden_size for t in lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from guardtune import config
    from guardtune.data import load
    from guardtune.data.registry import get
    from guardtune.encoding import template, tokenize
    from guardtune.kinds.classifier import ClassifierGuard
    from guardtune.labels import LabelSpace
    from guardtune.models.backbone import load_tokenizer
    from guardtune.models.build import build_model
    from guardtune.paths import data_root

    name = "toxicchat_human:test" if get("toxicchat_human").available(data_root()) else "demo:all"
    examples = load({"name": name, "sample": args.n, "seed": 0}).examples
    cfg = config.load(None, [f"model.name={MINILM}", "model.max_length=512"])
    labels = LabelSpace(("prompt_harmful",), ("S1", "S2", "S10"))
    model = build_model(cfg, labels, apply_method=False).eval()
    tokenizer = load_tokenizer(cfg.model)

    # plain loop
    plain_n = min(len(examples), 160)  # about 3 s a batch on 2 CPU cores: enough batches for a stable rate
    texts = [template(ex) for ex in examples[:plain_n]]
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, plain_n, 8):
            chunk = texts[i:i + 8]
            enc = tokenizer([p for p, _ in chunk], [r or "" for _, r in chunk] if any(r for _, r in chunk) else None,
                            padding="max_length", max_length=512, truncation=True, return_tensors="pt")
            torch.sigmoid(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    plain = plain_n / (time.perf_counter() - start)

    guard = ClassifierGuard(model, tokenizer, 512, batch_size=64)
    guard.score(examples[:64])  # warm-up
    start = time.perf_counter()
    guard.score(examples)
    elapsed = time.perf_counter() - start
    fast = len(examples) / elapsed

    lengths = np.array([len(x) for x in tokenize(examples, tokenizer, 512)])
    achieved = forward_flops(model, lengths) / elapsed
    peak = matmul_peak()
    print(f"data: {name}, {len(examples)} examples, mean {lengths.mean():.0f} tokens (max 512); "
          f"device cpu, threads {torch.get_num_threads()}")
    print(f"plain loop (pad to 512, batch 8):  {plain:8.1f} examples/s")
    print(f"guardtune Guard.score:             {fast:8.1f} examples/s   = {fast / plain:.1f}x   (target >= 5x)")
    print(f"achieved {achieved / 1e9:.1f} GFLOP/s on real tokens; matmul peak {peak / 1e9:.1f} GFLOP/s "
          f"-> {100 * achieved / peak:.0f}% of peak")


if __name__ == "__main__":
    main()
