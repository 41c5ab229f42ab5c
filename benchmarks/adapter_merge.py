"""Scoring speed of a PEFT guard with its adapter merged into the weights (what `guardtune.load` does) against
the same guard with the adapter kept apart, measured in one run on the same texts.

  unmerged: PeftModel as trained; every adapted linear layer also runs its adapter
  merged:   merge_and_unload(): the base architecture with updated weights
  expected: merged ~ the base model's speed; scores equal to float tolerance

Each rate is the best of three passes, and the base model is timed again at the end to show the drift.

The adapters get random weights (speed does not depend on them; a zero LoRA B would make the equality check
trivial).

  python benchmarks/adapter_merge.py [--n 400] [--methods lora dora adalora]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PARAMS = {"lora": ["method.r=16"], "dora": ["method.r=16"], "adalora": ["method.init_r=24", "method.target_r=16"],
          "ia3": [], "loha": ["method.r=16"]}


def rate(guard, examples, repeats: int = 3) -> tuple[float, object]:
    """The best of `repeats` passes (this machine's speed drifts by 10-20% between passes)."""
    guard.score(examples[:64])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        scores = guard.score(examples)
        best = min(best, time.perf_counter() - start)
    return len(examples) / best, scores.probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--methods", nargs="+", default=["lora", "dora", "adalora"], choices=sorted(PARAMS))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from guardtune import config
    from guardtune.data import load
    from guardtune.data.registry import get
    from guardtune.kinds.classifier import ClassifierGuard
    from guardtune.labels import LabelSpace
    from guardtune.models.backbone import load_tokenizer
    from guardtune.models.build import build_model, load_model, save_weights
    from guardtune.paths import data_root

    name = "toxicchat_human:test" if get("toxicchat_human").available(data_root()) else "demo:all"
    examples = load({"name": name, "sample": args.n, "seed": 0}).examples
    labels = LabelSpace(("prompt_harmful",), ("S1", "S2", "S10"))
    torch.manual_seed(0)
    base_cfg = config.load(None, [f"model.name={MINILM}", "model.max_length=256"])
    tokenizer = load_tokenizer(base_cfg.model)
    base = ClassifierGuard(build_model(base_cfg, labels, apply_method=False).eval(), tokenizer, 256, batch_size=64)
    base_rate, _ = rate(base, examples)
    print(f"data: {name}, {len(examples)} examples; device cpu, threads {torch.get_num_threads()}")
    print(f"{'base model (no adapter)':28s} {base_rate:7.1f} ex/s")
    for method in args.methods:
        cfg = config.load(None, [f"model.name={MINILM}", "model.max_length=256", f"method.name={method}",
                                 *PARAMS[method]])
        model = build_model(cfg, labels)
        with torch.no_grad():
            for pname, p in model.backbone.named_parameters():
                if p.requires_grad:
                    p.add_(0.02 * torch.randn_like(p))
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp)
            save_weights(model, run, method)
            kept = ClassifierGuard(load_model(run, cfg, merge=False), tokenizer, 256, batch_size=64)
            merged = ClassifierGuard(load_model(run, cfg, merge=True), tokenizer, 256, batch_size=64)
            kept_rate, kept_p = rate(kept, examples)
            merged_rate, merged_p = rate(merged, examples)
        diff = float(abs(kept_p - merged_p).max())
        print(f"{method + ' unmerged':28s} {kept_rate:7.1f} ex/s")
        print(f"{method + ' merged':28s} {merged_rate:7.1f} ex/s   = {merged_rate / kept_rate:.2f}x unmerged, "
              f"{merged_rate / base_rate:.2f}x base; max |score difference| {diff:.1e}")
    again, _ = rate(base, examples)  # the machine's drift over the run: compare like with like
    print(f"{'base model again':28s} {again:7.1f} ex/s")


if __name__ == "__main__":
    main()
