"""The generative kind (Llama-Guard style): a causal LM reads the policy and the conversation in its own chat
template and answers guardtune's compact JSON. Trained on answer tokens only (models/generative.py), scored
from label-word logits in one batched pass, decoded under a format constraint so that every answer parses.

The policy is written into the run's config at training time (a policy file may change later; the run must
not), and one Prompter formats training, validation and inference text alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from guardtune.data.example import Example
from guardtune.guard import GuardBase, Scores, Thresholds
from guardtune.kinds.kind import Kind
from guardtune.labels import LabelSpace


class GenerativeGuard(GuardBase):
    """A generative guard (a causal LM answering in guardtune's JSON format): `score` reads label-word
    probabilities in one batched pass; `generate` decodes verdicts that always parse. `shots`, when given,
    picks the few-shot demonstrations for each example (see guardtune.fewshot)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, thresholds: Thresholds | None = None,
                 name: str = "", batch_size: int = 16, shots: Any = None, rationale_tokens: int = 64):
        from guardtune.models.generative import Prompter

        self.model = model.eval()
        self.labels: LabelSpace = model.labels
        self.format = model.format
        self.prompter = Prompter(model.format, tokenizer, max_length, rationale_tokens)
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.batch_size = batch_size
        self.shots = shots

    def prompt_ids(self, example: Example) -> list[int]:
        return self.prompter.prompt_ids(example, self.shots(example) if self.shots else ())

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        from guardtune.models.generative import score

        prompts = self._before(examples, batch_size, show_progress)[1] if self.format.rationale == "before" \
            else self.prompt_ids
        probs = score(self.model, self.prompter, examples, batch_size or self.batch_size, prompts, show_progress)
        return Scores(self.labels, probs)

    def _before(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool):
        """`rationale: before`: the rationale each example's answer starts with (greedy), and the prompts that
        end with it, from which the verdict is scored or decoded."""
        from guardtune.models.generative import generate_text

        start = self.prompter.marks["before"]
        written = generate_text(self.model, self.prompter, [self.prompt_ids(ex) + start for ex in examples],
                                batch_size or self.batch_size, show_progress)
        segments = {id(ex): self.prompter.before(ids) for ex, (_, ids) in zip(examples, written)}
        return [text for text, _ in written], lambda ex: self.prompt_ids(ex) + segments[id(ex)]

    def generate(self, examples: Sequence[Example], batch_size: int | None = None,
                 show_progress: bool = False) -> list[dict[str, Any]]:
        """Constrained greedy decoding: one parsed verdict per example, e.g. {"request": "harmful",
        "request_violations": ["S1"]}, with the raw answer text under "text", and with `model.rationale`
        before or after the guard's rationale under "rationale" (written greedily, up to a newline)."""
        from guardtune.models.generative import decode, generate_text

        size = batch_size or self.batch_size
        rationales, prompts = self._before(examples, batch_size, show_progress) \
            if self.format.rationale == "before" else (None, self.prompt_ids)
        answers: list[list[int]] = []
        texts = decode(self.model, self.prompter, examples, size, prompts, show_progress, answer_ids=answers)
        if self.format.rationale == "after":
            tail = self.prompter.marks["after"]
            rationales = [text for text, _ in generate_text(self.model, self.prompter, [
                self.prompt_ids(ex) + ids + tail for ex, ids in zip(examples, answers)], size, show_progress)]
        return [{**self.format.parse(text, ex.response is not None), "text": text,
                 **({"rationale": rationales[i]} if rationales is not None else {})}
                for i, (text, ex) in enumerate(zip(texts, examples))]


def build(cfg: Any, labels: LabelSpace, backbone: Any) -> Any:
    from guardtune.chat_format import ChatFormat, read_policy
    from guardtune.models.generative import GenerativeLM

    return GenerativeLM(backbone, labels, ChatFormat(labels, read_policy(cfg.model.policy, labels),
                                                     cfg.model.rationale), cfg.model.rationale_weight)


def encode(cfg: Any, labels: LabelSpace, tokenizer: Any, data: dict) -> tuple[Any, Any, Any]:
    from guardtune.chat_format import ChatFormat, read_policy
    from guardtune.models.generative import GenEncoded, Prompter

    if cfg.training.pos_weight is not None:
        raise ValueError("training.pos_weight applies to classifier guards; a generative guard learns answer words")
    policy = read_policy(cfg.model.policy, labels)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, policy=policy))
    prompter = Prompter(ChatFormat(labels, policy, cfg.model.rationale), tokenizer, cfg.model.max_length,
                        cfg.model.rationale_tokens)
    weighted = cfg.model.rationale_weight is not None
    train = GenEncoded.build(data["train"].examples, prompter, weighted)
    validation = GenEncoded.build(data["validation"].examples, prompter, weighted) if data.get("validation") else None
    return cfg, train, validation


def wrap(model: Any, tokenizer: Any, cfg: Any, thresholds: Thresholds | None = None,
         name: str = "") -> GenerativeGuard:
    return GenerativeGuard(model, tokenizer, cfg.model.max_length, thresholds, name, cfg.training.eval_batch_size,
                           rationale_tokens=cfg.model.rationale_tokens)


GENERATIVE = Kind(auto="AutoModelForCausalLM", max_length=1024, build=build, encode=encode, wrap=wrap)
