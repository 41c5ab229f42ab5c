"""Generative guard inference: three ways to get verdicts from the same causal LM on the same examples.

  (a) outlines, one at a time: the full chat prompt per example, JSON generated under outlines' JSON-schema
      constraint, as common scripts do
  (b) guardtune constrained decoding: batched `generate` with the format logits processor and the shared
      prefix cache (GenerativeGuard.generate)
  (c) guardtune label-logit scoring: one batched pass, probabilities for every task (GenerativeGuard.score)
  targets: (c)/(a) >= 15x, (b)/(a) >= 3x

No pretrained causal LM is available offline, so the model is a randomly initialised one with a real
architecture and size (default: SmolLM2-135M's Llama config; --size qwen2.5-0.5b for Qwen2.5-0.5B's) and a
byte-level BPE tokenizer trained here on ToxicChat text, so token counts are realistic. Speed does not depend
on the weights: every way does the same work whatever the model answers. Ablations without the prefix cache
are printed too. Data: ToxicChat test prompts from ../shared/data (the demo set when absent).

  python benchmarks/generative.py [--n 32] [--size smollm-135m|qwen2.5-0.5b] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

SIZES = {
    "smollm-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def train_tokenizer(texts: list[str], vocab_size: int = 16000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)


def load_examples(n: int):
    from guardtune.data import load_any

    try:
        train, test = load_any("toxicchat_human:train").examples, load_any("toxicchat_human:test").examples
    except (FileNotFoundError, OSError, ValueError, KeyError):
        train, test = load_any("demo:train").examples, load_any("demo:test").examples
    return train, [ex for ex in test if len(ex.prompt) < 2000][:n]


def json_schema(fmt, has_response: bool) -> str:
    from guardtune.chat_format import CATEGORY_KEYS, TASK_KEYS

    props, keys = {}, fmt.keys(has_response)
    for key in keys:
        task = next((t for t, (k, _) in TASK_KEYS.items() if k == key), None)
        if task is not None:
            props[key] = {"type": "string", "enum": list(TASK_KEYS[task][1])}
        else:
            field = next(f for f, k in CATEGORY_KEYS.items() if k == key)
            props[key] = {"type": "object", "properties": {c: {"type": "integer", "enum": [0, 1]}
                                                           for c in fmt.labels.categories(field)},
                          "required": list(fmt.labels.categories(field)), "additionalProperties": False}
    return json.dumps({"type": "object", "properties": props, "required": keys, "additionalProperties": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="examples (the same ones for every way)")
    parser.add_argument("--size", choices=sorted(SIZES), default="smollm-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import outlines
    except ImportError:
        raise SystemExit("outlines is not installed: pip install -e '.[bench]'") from None
    from transformers import AutoConfig, AutoModelForCausalLM

    from guardtune.chat_format import ChatFormat, read_policy
    from guardtune.labels import LabelSpace
    from guardtune.models.generative import GenerativeLM, Prompter, decode, score

    train, examples = load_examples(args.n)
    labels = LabelSpace.from_examples(train)
    fmt = ChatFormat(labels, read_policy(None, labels))
    tokenizer = train_tokenizer([ex.prompt for ex in train[:5000]] + [fmt.system_prompt()] * 20)
    spec = dict(SIZES[args.size])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, max_position_embeddings=4096,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                  bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config).eval()
    model = GenerativeLM(lm, labels, fmt).eval()
    prompter = Prompter(fmt, tokenizer, 4096)
    n_params = sum(p.numel() for p in lm.parameters())
    prompt_tokens = [len(prompter.prompt_ids(ex)) for ex in examples]
    print(f"model: random {args.size} ({n_params / 1e6:.0f}M parameters), {torch.get_num_threads()} threads; "
          f"{len(examples)} examples, outputs {list(labels.outputs)}; prompt tokens mean "
          f"{sum(prompt_tokens) / len(prompt_tokens):.0f} (policy included)")

    results: dict[str, float] = {}

    def timed(name: str, fn) -> object:
        fn_out = fn(examples[:2])  # warm-up (not timed)
        start = time.perf_counter()
        fn_out = fn(examples)
        results[name] = len(examples) / (time.perf_counter() - start)
        print(f"  {name:<44} {results[name]:8.2f} ex/s", flush=True)
        return fn_out

    # (a) outlines, one example at a time, full prompt each time
    o_model = outlines.from_transformers(lm, tokenizer)
    generators = {has: outlines.Generator(o_model, outlines.types.JsonSchema(json_schema(fmt, has)))
                  for has in (False, True)}

    def outlines_one_by_one(exs):
        return [generators[ex.response is not None](prompter.text(ex), max_new_tokens=128, do_sample=False)
                for ex in exs]

    with torch.inference_mode():
        texts_a = timed("(a) outlines JSON, one at a time", outlines_one_by_one)
    parsed_a = sum(_parses(t) for t in texts_a)
    texts_b = timed("(b) guardtune constrained decoding, batched",
                    lambda exs: decode(model, prompter, exs, args.batch))
    timed("    (b) without the prefix cache", lambda exs: decode(model, prompter, exs, args.batch,
                                                                 prefix_cache=False))
    timed("(c) guardtune label-logit scoring, batched", lambda exs: score(model, prompter, exs, args.batch))
    timed("    (c) without the prefix cache", lambda exs: score(model, prompter, exs, args.batch, prefix_cache=False))
    parsed_b = sum(_verdict(fmt, t, ex) for t, ex in zip(texts_b, examples))
    a = results["(a) outlines JSON, one at a time"]
    b = results["(b) guardtune constrained decoding, batched"]
    c = results["(c) guardtune label-logit scoring, batched"]
    print(f"(b)/(a) = {b / a:.1f}x (target >= 3x)   (c)/(a) = {c / a:.1f}x (target >= 15x)")
    print(f"outputs that parse: (a) {parsed_a}/{len(texts_a)}, (b) {parsed_b}/{len(texts_b)} (into the schema)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"size": args.size, "n": len(examples), "examples_per_s": results,
                       "b_over_a": b / a, "c_over_a": c / a}, f, indent=1)


def _parses(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _verdict(fmt, text: str, example) -> bool:
    try:
        fmt.parse(text, example.response is not None)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    main()
