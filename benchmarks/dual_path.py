"""The dual path (one chat model that also guards) against a chat model plus a separate guard of the same size.

A request is: guard the prompt, generate the answer (64 tokens), guard the answer. Two ways, same model size,
same conversations, same decoding (greedy, exactly `--new-tokens` tokens):

  (a) two models: the chat model generates; a separate guard of the same architecture and size reads the
      prompt, then the prompt with the answer, each in a full forward pass
  (b) dual path: DualPathGuard.respond_batch with the adapter on the top k blocks only: the guard passes start
      from the states the chat pass computed below them (prompt from the prefill, answer from the generation)
  targets: (b)/(a) throughput >= 1.8x; the guard's added compute in (b) <= 15% of the chat request's
  (the chat request alone, generation with nothing guarded, is timed too: (b) - chat = what guarding adds)

No pretrained chat model is available offline: the model is randomly initialised with a real architecture
(default SmolLM2-135M's Llama config) and a byte-level BPE tokenizer trained here, so token counts are
realistic; speed does not depend on the weights (decoding is forced to the same length). Prompts are ToxicChat
test prompts from ../shared/data (the demo set when absent), optionally lengthened with --context (a
retrieval-style preamble, as in assistants that read documents), since the share of guarding depends on how
long the prompt is against how long the answer is.

--overhead prints the parameter overhead (adapter + head over the base) of the shipped recipes, on their real
architectures (Llama-3.2-1B, Qwen2.5-0.5B; built on the meta device, no weights): target <= 0.5%.

  python benchmarks/dual_path.py [--size smollm-135m] [--k 2] [--batch 4] [--requests 8] [--context 0]
  python benchmarks/dual_path.py --overhead
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generative import SIZES, load_examples, train_tokenizer  # noqa: E402

ARCHITECTURES = {
    **SIZES,
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}
RECIPES = {"llama-3.2-1b": "configs/dual_path/llama-3.2-1b-beavertails-lora.yaml",
           "qwen2.5-0.5b": "configs/dual_path/qwen2.5-0.5b-beavertails-lora.yaml",
           "smollm-135m": "configs/dual_path/cpu-smollm2-135m-demo.yaml"}
ROOT = Path(__file__).resolve().parents[1]


def labels():
    from guardtune.labels import LabelSpace
    from guardtune.taxonomy import CODES

    return LabelSpace(("prompt_harmful", "response_harmful", "response_refusal"), tuple(CODES), tuple(CODES))


def dual_model(size: str, method: str, params: dict, tokenizer=None, device: str | None = None):
    from transformers import AutoConfig, AutoModelForCausalLM

    from guardtune import methods
    from guardtune.models.dual_path import DualPathLM

    spec = dict(ARCHITECTURES[size])
    extra = {} if tokenizer is None else dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                              bos_token_id=tokenizer.eos_token_id)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, max_position_embeddings=4096, **extra)
    torch.manual_seed(0)
    with torch.device(device) if device else torch.device("cpu"):
        lm = AutoModelForCausalLM.from_config(config).eval()
        model = DualPathLM(lm, labels())
    methods.apply(method, model, methods.method_params(method, params), methods.Context())
    return model.eval()


def overhead() -> dict:
    from guardtune import config

    out = {}
    for size, recipe in RECIPES.items():
        cfg = config.load(ROOT / recipe)
        params = {k: v for k, v in cfg.to_dict()["method"].items() if k != "name"}
        model = dual_model(size, cfg.method.name, params, device="meta")
        added = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
        base = sum(p.numel() for p in model.parameters()) - added
        out[size] = {"recipe": recipe, "base_params": base, "added_params": added, "overhead": added / base}
        print(f"  {recipe:<58} base {base / 1e6:8.1f}M  added {added / 1e6:6.3f}M  overhead {added / base:.4%} "
              f"(target <= 0.5%)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(ARCHITECTURES), default="smollm-135m")
    parser.add_argument("--k", type=int, default=2, help="adapted top blocks")
    parser.add_argument("--batch", type=int, default=4, help="conversations answered together")
    parser.add_argument("--requests", type=int, default=8, help="conversations per timed round")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=0,
                        help="words of document context put before each prompt (0: the prompt alone)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (medians reported)")
    parser.add_argument("--overhead", action="store_true", help="only the shipped recipes' parameter overhead")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.overhead:
        result = {"overhead": overhead()}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        return

    from guardtune.kinds.dual_path import DualPathGuard
    from guardtune.models.dual_path import adapters

    train, examples = load_examples(args.requests)
    tokenizer = train_tokenizer([ex.prompt for ex in train[:5000]])
    model = dual_model(args.size, "lora", {"r": 8, "layers": f"top:{args.k}"}, tokenizer)
    guard = DualPathGuard(model, tokenizer, max_length=4096, batch_size=args.batch)
    context = " ".join((ex.prompt for ex in train[:400]))
    preamble = " ".join(context.split()[:args.context])
    conversations = [[{"role": "user", "content": (f"Document:\n{preamble}\n\nQuestion: " if args.context else "")
                       + ex.prompt}] for ex in examples]
    decoding = dict(do_sample=False, min_new_tokens=args.new_tokens)
    n_blocks = len(model.blocks()[2])
    prompt_tokens = [len(guard.template.render(c)) for c in conversations]
    print(f"model: random {args.size} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"{n_blocks} blocks, LoRA on the top {args.k}), {torch.get_num_threads()} threads; {len(conversations)} "
          f"conversations in batches of {args.batch}, prompt tokens mean {statistics.mean(prompt_tokens):.0f}, "
          f"{args.new_tokens} new tokens each")

    def batches():
        return [conversations[i:i + args.batch] for i in range(0, len(conversations), args.batch)]

    def chat_only():
        for batch in batches():
            guard.generate_batch(batch, args.new_tokens, **decoding)

    def two_models():  # chat, then a separate guard of the same size (adapter off: a plain model with a head)
        for batch in batches():
            texts = guard.generate_batch(batch, args.new_tokens, **decoding)
            with adapters(model.backbone, False):
                guard._probs([guard.guard_ids(m) for m in batch])
                guard._probs([guard.guard_ids([*m, {"role": "assistant", "content": t}]) for m, t in zip(batch, texts)])

    def dual_path():
        for batch in batches():
            results = guard.respond_batch(batch, "annotate", args.new_tokens, **decoding)
            assert all(r["shared"]["prompt"] and r["shared"]["response"] for r in results), "a pass was not shared"

    ways = {"chat alone (no guarding)": chat_only, "(a) chat + separate guard": two_models, "(b) dual path": dual_path}
    with torch.inference_mode():
        chat_only()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):  # interleaved, so drift in machine speed hits every way alike
            for name, fn in ways.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    rate = {name: len(conversations) / t for name, t in median.items()}
    for name in ways:
        print(f"  {name:<30} {rate[name]:7.3f} requests/s  (median of {args.rounds}: {median[name]:.2f} s; "
              f"all: {', '.join(f'{t:.2f}' for t in times[name])})")
    chat, a, b = (median[n] for n in ways)
    ratio = a / b
    added_b, added_a = (b - chat) / chat, (a - chat) / chat
    print(f"(b)/(a) throughput = {ratio:.2f}x (target >= 1.8x)")
    print(f"guarding adds to the chat request: (b) {added_b:.1%} (target <= 15%), (a) {added_a:.1%}")
    # the same comparison in compute, counted (not timed): block evaluations of one token, for these conversations
    texts = [r["response"] for batch in batches() for r in guard.respond_batch(batch, "annotate", args.new_tokens,
                                                                                **decoding)]
    pairs = [len(guard.guard_ids([*c, {"role": "assistant", "content": t}])) for c, t in zip(conversations, texts)]
    fed = [t + args.new_tokens - 1 for t in prompt_tokens]  # the chat pass: every token but the last generated
    chat_work = sum(n_blocks * f for f in fed)
    separate = sum(n_blocks * (t + q) for t, q in zip(prompt_tokens, pairs))
    dual = sum(args.k * (t + q) + (n_blocks - args.k) * max(q - f, 0) for t, q, f in zip(prompt_tokens, pairs, fed))
    counted = (chat_work + separate) / (chat_work + dual)
    print(f"counted block-token work: guarding adds (b) {dual / chat_work:.1%}, (a) {separate / chat_work:.1%} of "
          f"the chat's; (b)/(a) = {counted:.2f}x where time follows work (compute-bound serving), not measured here")
    info = guard.info
    print(f"memory: (b) one model, {(info['base_params'] + info['added_params']) * 4 / 2**20:.0f} MiB of fp32 "
          f"weights; (a) two, {(2 * info['base_params'] + model.head.weight.numel()) * 4 / 2**20:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "size": args.size, "k": args.k, "batch": args.batch, "requests": len(conversations),
            "new_tokens": args.new_tokens, "context_words": args.context,
            "prompt_tokens_mean": statistics.mean(prompt_tokens), "seconds": times, "requests_per_s": rate,
            "b_over_a": ratio, "added_share_b": added_b, "added_share_a": added_a,
            "counted": {"added_share_b": dual / chat_work, "added_share_a": separate / chat_work,
                        "b_over_a": counted}}, indent=1) + "\n",
            encoding="utf-8")


if __name__ == "__main__":
    main()
