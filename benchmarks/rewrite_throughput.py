"""Rewriting throughput: guardtune's batched rewriting vs Hugging Face `generate` one text at a time, on the
same model and texts, measured in one run.

  one at a time: model.generate(text) for each text (greedy, the same max_new_tokens), as common scripts do
  guardtune:     TextRewriter.rewrite: longest first, padding-bounded batches of --batch-size, one generate each
  target:        guardtune / one at a time >= 5x

The seq2seq model is a t5-small-shaped T5 (6+6 layers, 512 wide) with random weights: no pretrained seq2seq
model can be had offline here, and speed does not depend on the weights' values. min_new_tokens =
max_new_tokens makes both sides generate the same number of tokens. It also times the shipped edit tagger
(MiniLM, one encoder pass per batch) when runs/paradetox-minilm-tagger exists.

  python benchmarks/rewrite_throughput.py [--n 256] [--batch-size 32] [--new-tokens 24]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def texts(n: int) -> list:
    from guardtune.data import load
    from guardtune.data.registry import get
    from guardtune.paths import data_root

    name = "paradetox:test" if get("paradetox").available(data_root()) else "demo:test"
    return load({"name": name, "sample": n, "seed": 0}).examples, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from guardtune.kinds.rewriter import TextRewriter
    from guardtune.labels import LabelSpace
    from guardtune.models.backbone import resolve
    from guardtune.models.rewriter import RewriterLM

    examples, source = texts(args.n)
    tokenizer = AutoTokenizer.from_pretrained(resolve("sentence-transformers/all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    model = RewriterLM(T5ForConditionalGeneration(config).eval(), LabelSpace(("prompt_harmful",)))
    model.backbone.generation_config.min_new_tokens = args.new_tokens
    rewriter = TextRewriter(model, tokenizer, 128, batch_size=args.batch_size, max_new_tokens=args.new_tokens)
    print(f"{len(examples)} texts from {source}; t5-small shape, random weights; {args.new_tokens} new tokens each; "
          f"{torch.get_num_threads()} threads")
    rewriter.rewrite(examples[:4])  # warm-up

    start = time.perf_counter()
    ids = [rewriter.format.source(ex.prompt) for ex in examples]
    with torch.inference_mode():
        for row in ids:
            tensor = torch.tensor([row])
            model.backbone.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), do_sample=False,
                                    num_beams=1, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    single = time.perf_counter() - start

    start = time.perf_counter()
    rewriter.rewrite(examples)
    batched = time.perf_counter() - start
    print(f"HF generate, one at a time: {len(examples) / single:8.1f} texts/s")
    print(f"guardtune rewrite, batched: {len(examples) / batched:8.1f} texts/s")
    print(f"speed-up: {single / batched:.2f}x (target >= 5x)")

    run = Path("runs/paradetox-minilm-tagger")
    if run.is_dir():
        import guardtune

        tagger = guardtune.load(run)
        tagger.rewrite(examples[:4])
        start = time.perf_counter()
        tagger.rewrite(examples)
        print(f"edit tagger ({run}): {len(examples) / (time.perf_counter() - start):8.1f} texts/s")


if __name__ == "__main__":
    main()
