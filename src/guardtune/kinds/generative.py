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
                 name: str = "", batch_size: int = 16, shots: Any = None):
        from guardtune.models.generative import Prompter

        self.model = model.eval()
        self.labels: LabelSpace = model.labels
        self.format = model.format
        self.prompter = Prompter(model.format, tokenizer, max_length)
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.batch_size = batch_size
        self.shots = shots

    def prompt_ids(self, example: Example) -> list[int]:
        return self.prompter.prompt_ids(example, self.shots(example) if self.shots else ())

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        from guardtune.models.generative import score

        probs = score(self.model, self.prompter, examples, batch_size or self.batch_size, self.prompt_ids,
                      show_progress)
        return Scores(self.labels, probs)

    def generate(self, examples: Sequence[Example], batch_size: int | None = None,
                 show_progress: bool = False) -> list[dict[str, Any]]:
        """Constrained greedy decoding: one parsed verdict per example, e.g. {"request": "harmful",
        "request_violations": ["S1"]}, with the raw answer text under "text"."""
        from guardtune.models.generative import decode

        texts = decode(self.model, self.prompter, examples, batch_size or self.batch_size, self.prompt_ids,
                       show_progress)
        return [{**self.format.parse(text, ex.response is not None), "text": text}
                for text, ex in zip(texts, examples)]


def build(cfg: Any, labels: LabelSpace, backbone: Any) -> Any:
    from guardtune.chat_format import ChatFormat, read_policy
    from guardtune.models.generative import GenerativeLM

    return GenerativeLM(backbone, labels, ChatFormat(labels, read_policy(cfg.model.policy, labels)))


def encode(cfg: Any, labels: LabelSpace, tokenizer: Any, data: dict) -> tuple[Any, Any, Any]:
    from guardtune.chat_format import ChatFormat, read_policy
    from guardtune.models.generative import GenEncoded, Prompter

    if cfg.training.pos_weight is not None:
        raise ValueError("training.pos_weight applies to classifier guards; a generative guard learns answer words")
    policy = read_policy(cfg.model.policy, labels)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, policy=policy))
    prompter = Prompter(ChatFormat(labels, policy), tokenizer, cfg.model.max_length)
    train = GenEncoded.build(data["train"].examples, prompter)
    validation = GenEncoded.build(data["validation"].examples, prompter) if data.get("validation") else None
    return cfg, train, validation


def wrap(model: Any, tokenizer: Any, cfg: Any, thresholds: Thresholds | None = None,
         name: str = "") -> GenerativeGuard:
    return GenerativeGuard(model, tokenizer, cfg.model.max_length, thresholds, name, cfg.training.eval_batch_size)


GENERATIVE = Kind(auto="AutoModelForCausalLM", max_length=1024, build=build, encode=encode, wrap=wrap)
