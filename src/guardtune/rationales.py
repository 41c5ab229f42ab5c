"""Teacher rationales: a generative guard or any causal chat LM writes a short analysis of each example, and a
consistency check reads the teacher's own verdict after it from label logits.

    guardtune rationales TEACHER --data SPEC --out rationales.jsonl [--show-label] [--sample --seed 0]

- The prompt gives the policy and the conversation and asks for one or two sentences on whether the request
  (or, for a conversation with a response, the exchange) is harmful under the policy. With `show_label` it
  also gives the gold verdict ("explain why it is harmful"): the rationale is then a justification, not a
  judgement, and every output row records which it was (`label_shown`).
- Greedy by default; sampling only when asked, with a seed (each batch seeded from the seed and its first
  row's id, so a rerun of the same rows writes the same text).
- The check: after the rationale comes "Verdict:", and the teacher's probability of " harmful" against
  " safe" (their first tokens' logits, softmaxed) is its verdict, never a string search in free text. A
  rationale whose verdict contradicts the gold label is dropped (to OUT.contradictions.jsonl) or, with
  `on_contradiction="flag"`, kept with `"consistent": false`. Rows without a gold label are kept, unchecked;
  an empty rationale is set aside with the contradictions (`"empty": true`).
- The output is a JSONL data file: the example's own fields plus `rationale` (text), so any training config
  can read it (`data.train: rationales.jsonl`); resumable like `moderate --file` (rows already in OUT or in
  the contradictions file are skipped; a cut-off last line is removed).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guardtune.data.example import Example

INSTRUCTION = (
    "You are a content-safety analyst. Policy of unsafe content categories:\n\n{policy}\n\n"
    "Read the conversation and explain, in one or two sentences, whether the user's request{response} is harmful "
    "under this policy and why. Do not repeat the conversation.")
SHOWN = "The correct verdict is: {verdict}. Explain why."
VERDICT = "\nVerdict:"
WORDS = (" safe", " harmful")  # the consistency check's two words, negative first
MAX_CHARS = 600  # a rationale is cut at this many characters (after folding to one line)


def gold(example: Example) -> int | None:
    """The label a rationale must agree with: the request's harm, else the response's."""
    return example.prompt_harmful if example.prompt_harmful is not None else example.response_harmful


@dataclass
class Teacher:
    """A causal LM with its tokenizer (chat template) and the policy it is told."""
    lm: Any
    tokenizer: Any
    policy: dict[str, str]
    name: str

    @classmethod
    def load(cls, source: str, trust_remote_code: bool = False, device: str | None = None) -> Teacher:
        """A trained generative guard (a run directory: its backbone, adapter merged, and its policy), or a hub
        id / local directory of a causal LM (`hf:` prefix optional) with the S1-S14 policy."""
        from guardtune.chat_format import read_policy
        from guardtune.models.generative import causal_lm, prepare_tokenizer

        path = Path(source)
        if (path / "guard.json").is_file():
            import guardtune

            guard = guardtune.load(path, device=device, trust_remote_code=trust_remote_code)
            if not hasattr(guard, "prompter"):
                raise ValueError(f"{source} is not a generative guard (a teacher writes text); give a generative "
                                 "run or a causal LM")
            return cls(causal_lm(guard.model.backbone).eval(), guard.prompter.tokenizer, dict(guard.format.policy),
                       path.name)
        from guardtune.config import ModelConfig
        from guardtune.models.backbone import load_backbone, load_tokenizer

        model_cfg = ModelConfig(name=source.removeprefix("hf:"), kind="generative", trust_remote_code=trust_remote_code)
        lm = load_backbone(model_cfg, auto="AutoModelForCausalLM").eval()
        if device:
            lm.to(device)
        return cls(lm, prepare_tokenizer(load_tokenizer(model_cfg)), read_policy(None), model_cfg.name)

    # ---- prompts --------------------------------------------------------------------------------------------

    def prompt_ids(self, example: Example, show_label: bool) -> list[int]:
        from guardtune.chat_format import ChatFormat

        policy = "\n".join(f"{code}: {text}" for code, text in self.policy.items())
        system = INSTRUCTION.format(policy=policy, response=" and the assistant's response"
                                    if example.response is not None else "")
        user = ChatFormat.conversation(example.prompt, example.response)
        label = gold(example)
        if show_label and label is not None:
            user += "\n\n" + SHOWN.format(verdict="harmful" if label else "safe")
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template without a system role (Gemma): the policy joins the user turn
            merged = [{"role": "user", "content": f"{system}\n\n{user}"}]
            text = self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # ---- writing and checking -------------------------------------------------------------------------------

    @torch.inference_mode()
    def write(self, rows: Sequence[list[int]], max_new_tokens: int = 96, sample: bool = False,
              temperature: float = 0.7, seed: int = 0, key: str = "") -> list[str]:
        """One rationale per row of prompt ids, batched (left-padded), greedy unless `sample` (seeded)."""
        tok = self.tokenizer
        device = next(self.lm.parameters()).device
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r):] = torch.as_tensor(r)
            mask[i, width - len(r):] = 1
        options: dict[str, Any] = {"do_sample": False}
        if sample:
            torch.manual_seed(int(hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()[:8], 16))
            options = {"do_sample": True, "temperature": temperature, "top_p": 1.0}
        out = self.lm.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                               max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id, **options)
        return [clean(tok.decode(out[i, width:], skip_special_tokens=True)) for i in range(len(rows))]

    @torch.inference_mode()
    def verdicts(self, rows: Sequence[list[int]], rationales: Sequence[str]) -> np.ndarray:
        """The teacher's probability that the example is harmful, read after its own rationale and "Verdict:"
        from the two words' first-token logits."""
        from guardtune.encoding import collate
        from guardtune.models.generative import encode_piece

        tok = self.tokenizer
        first = [encode_piece(tok, w)[0] for w in WORDS]
        if first[0] == first[1]:
            raise ValueError(f"the words {WORDS} begin with the same token for this tokenizer")
        ids = [list(r) + encode_piece(tok, text) + encode_piece(tok, VERDICT) for r, text in zip(rows, rationales)]
        batch = collate(ids, tok.pad_token_id)
        device = next(self.lm.parameters()).device
        logits = self.lm(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        last = torch.tensor([len(x) - 1 for x in ids], device=device)
        pair = logits[torch.arange(len(ids), device=device), last][:, first].float()
        return torch.softmax(pair, dim=-1)[:, 1].cpu().numpy()


def clean(text: str) -> str:
    """One line, without a verdict the teacher may have appended, at most MAX_CHARS characters."""
    text = " ".join(text.split())
    cut = text.lower().find("verdict:")
    text = text[:cut].strip() if cut >= 0 else text
    return text[:MAX_CHARS]


def row_of(example: Example, key: str) -> dict[str, Any]:
    data = example.to_dict()
    data["id"] = key
    return {k: v for k, v in data.items() if v not in (None, (), [], "", {}) or k in ("prompt",)}


def write_rationales(teacher: Teacher, examples: Sequence[Example], out: str | Path, show_label: bool = False,
                     sample: bool = False, temperature: float = 0.7, seed: int = 0, max_new_tokens: int = 96,
                     batch_size: int = 8, on_contradiction: str = "drop", show_progress: bool = True) -> dict[str, int]:
    """Rationales for `examples` into `out` (resumable), with the consistency check. Returns the counts."""
    from guardtune.commands.streaming import _written_ids
    from guardtune.ui import bar

    if on_contradiction not in ("drop", "flag"):
        raise ValueError(f"on_contradiction is drop or flag, got {on_contradiction!r}")
    out = Path(out)
    rejected = out.with_name(out.name.removesuffix(".jsonl") + ".contradictions.jsonl")
    keys = keys_of(examples)
    done = _written_ids(out) | _written_ids(rejected)
    todo = [(k, ex) for k, ex in zip(keys, examples) if k not in done]
    counts = {"already": len(examples) - len(todo), "written": 0, "consistent": 0, "contradicting": 0,
              "unchecked": 0, "empty": 0}
    decoding = f"sample(temperature={temperature}, seed={seed})" if sample else "greedy"
    progress = bar(len(todo), "writing rationales", enabled=show_progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as sink, rejected.open("a", encoding="utf-8") as contradictions:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            rows = [teacher.prompt_ids(ex, show_label) for _, ex in chunk]
            texts = teacher.write(rows, max_new_tokens, sample, temperature, seed, chunk[0][0])
            probs = teacher.verdicts(rows, texts)
            for (key, ex), text, p in zip(chunk, texts, probs):
                label = gold(ex)
                consistent = None if label is None else bool((p >= 0.5) == bool(label))
                record = {**row_of(ex, key), "rationale": text, "label_shown": bool(show_label and label is not None),
                          "teacher": teacher.name, "decoding": decoding, "teacher_p_harmful": float(p),
                          "consistent": consistent}
                counts["unchecked" if consistent is None else "consistent" if consistent else "contradicting"] += 1
                if not text:  # nothing written: set aside too (so a rerun does not redo it), and counted
                    record["empty"] = True
                    counts["empty"] += 1
                target = contradictions if not text or (consistent is False and on_contradiction == "drop") else sink
                target.write(json.dumps(record, ensure_ascii=False) + "\n")
                counts["written"] += target is sink
            for f in (sink, contradictions):
                f.flush()
                os.fsync(f.fileno())
            progress.update(len(chunk))
    progress.close()
    return counts


def keys_of(examples: Sequence[Example]) -> list[str]:
    """Each example's name in the output: its id when the ids are unique, else its position."""
    ids = [ex.id for ex in examples]
    return ids if all(ids) and len(set(ids)) == len(ids) else [f"row-{i}" for i in range(len(examples))]
