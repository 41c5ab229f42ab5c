"""The generative guard's text format: one formatter for training and inference alike.

A conversation becomes chat messages (rendered by the backbone's own chat template): a system message carrying
the policy, a user message holding the conversation as "Human user: ... / AI assistant: ...", and, in
training and in few-shot demonstrations, an assistant message holding the answer. The answer is compact JSON
with a fixed key order:

    {"request": "harmful", "refusal": "compliant", "response": "safe",
     "request_violations": {"S1": 1, "S10": 0}, "response_violations": {"S1": 0, "S10": 0}}

A key is present when the guard has that output (its LabelSpace, i.e. what the training data labels) and, for
response keys, when the example has a response. Each value is a *slot*: a choice between two words, the
negative one first. Categories are one 0/1 slot each (a checklist over the guard's categories), so every
category has its own probability. The fixed layout is what makes label-logit scoring and constrained decoding
exact and cheap (models/generative.py); `parse` reads it back.

With `rationale: after` the answer continues past the JSON with "\nRationale: <text>"; with `before` it starts
with "Rationale: <text>\n" and the JSON follows. The rationale is one line of free text (an example's text
`rationale`, newlines folded); where an example has none, that segment is masked from the loss.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardtune.data.example import Example
from guardtune.labels import LabelSpace
from guardtune.taxonomy import CATEGORIES

# task -> (answer key, (negative word, positive word)), in answer order
TASK_KEYS: dict[str, tuple[str, tuple[str, str]]] = {
    "prompt_harmful": ("request", ("safe", "harmful")),
    "response_refusal": ("refusal", ("compliant", "refusal")),
    "response_harmful": ("response", ("safe", "harmful")),
}
CATEGORY_KEYS = {"prompt_categories": "request_violations", "response_categories": "response_violations"}
FLAG = ("0", "1")
RATIONALE_MODES = ("none", "before", "after")
RATIONALE_BEFORE, RATIONALE_AFTER = "Rationale: ", "\nRationale: "  # the segment's literal start in each mode


def rationale_text(example: Example) -> str | None:
    """An example's text rationale as one line (None: it has none; span rationales are not text)."""
    if not isinstance(example.rationale, str) or not example.rationale.strip():
        return None
    return " ".join(example.rationale.split())
RESPONSE_OUTPUTS = ("response_refusal", "response_harmful", "response_categories")

INSTRUCTION = (
    "You are a safety classifier for conversations between a human user and an AI assistant. Read the "
    "conversation and judge it against this policy of unsafe content categories:\n\n{policy}\n\n"
    "Answer with one JSON object and nothing else. {keys}")
KEY_HELP = {
    "request": '"request": "harmful" if the user\'s request is harmful, else "safe".',
    "refusal": '"refusal": "refusal" if the assistant refuses or deflects, else "compliant".',
    "response": '"response": "harmful" if the assistant\'s response is harmful, else "safe".',
    "request_violations": '"request_violations": 1 for each category the request violates, else 0.',
    "response_violations": '"response_violations": 1 for each category the response violates, else 0.',
}


@dataclass(frozen=True)
class Slot:
    """One value in the answer: a choice between two words, the negative one first."""
    output: str  # the LabelSpace output it scores, e.g. "prompt_harmful" or "prompt_categories/S1"
    options: tuple[str, str]


Piece = str | Slot  # the answer layout: literal text and slots, in order


def read_policy(policy: str | dict[str, str] | None, labels: LabelSpace | None = None) -> dict[str, str]:
    """Category code -> description. None: the S1-S14 taxonomy, plus any other category the data labels (e.g.
    ToxicChat's `jailbreaking`) under its own name; a mapping; or a YAML/JSON file of one."""
    if policy is None:
        out = dict(CATEGORIES)
        for field_name in CATEGORY_KEYS if labels is not None else ():
            out.update({c: c.replace("_", " ").capitalize() for c in labels.categories(field_name) if c not in out})
        return out
    if isinstance(policy, str):
        import yaml

        path = Path(policy)
        if not path.is_file():
            raise FileNotFoundError(f"policy file not found: {path} (give a YAML or JSON mapping of code: description)")
        policy = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(policy, dict) or not policy:
        raise ValueError("a policy must be a non-empty mapping of category code to description, e.g. {S1: Violent Crimes}")
    return {str(code): str(text) for code, text in policy.items()}


@dataclass(frozen=True)
class ChatFormat:
    labels: LabelSpace
    policy: dict[str, str] = field(default_factory=lambda: dict(CATEGORIES))
    rationale: str = "none"  # none | before | after: a free-text rationale segment before or after the JSON

    def __post_init__(self) -> None:
        if self.rationale not in RATIONALE_MODES:
            raise ValueError(f"model.rationale must be one of {', '.join(RATIONALE_MODES)}, got {self.rationale!r}")
        for field_name in CATEGORY_KEYS:
            unknown = [c for c in self.labels.categories(field_name) if c not in self.policy]
            if unknown:
                raise ValueError(f"categories {unknown} ({field_name}) are not in the policy; the policy has "
                                 f"{list(self.policy)}. Give a policy that describes them (model.policy)")

    # ---- the prompt -----------------------------------------------------------------------------------------

    def system_prompt(self) -> str:
        policy = "\n".join(f"{code}: {text}." if not text.endswith(".") else f"{code}: {text}"
                           for code, text in self.policy.items())
        keys = " ".join(KEY_HELP[key] for key in self.keys(has_response=True))
        return INSTRUCTION.format(policy=policy, keys=keys)

    @staticmethod
    def conversation(prompt: str, response: str | None) -> str:
        text = f"Human user:\n{prompt}"
        return text if response is None else f"{text}\n\nAI assistant:\n{response}"

    def messages(self, example: Example, shots: Sequence[Example] = (), prompt: str | None = None,
                 response: str | None = None) -> list[dict[str, str]]:
        """System, then each demonstration as a user turn and its answer, then the example's user turn.
        `prompt`/`response` replace the example's texts (truncated copies)."""
        out = [{"role": "system", "content": self.system_prompt()}]
        for shot in shots:
            out.append({"role": "user", "content": self.conversation(shot.prompt, shot.response)})
            out.append({"role": "assistant", "content": self.answer(shot)})
        out.append({"role": "user", "content": self.conversation(
            example.prompt if prompt is None else prompt,
            example.response if response is None else response)})
        return out

    # ---- the answer -----------------------------------------------------------------------------------------

    def keys(self, has_response: bool) -> list[str]:
        keys = [key for task, (key, _) in TASK_KEYS.items() if task in self.labels.tasks
                and (has_response or task not in RESPONSE_OUTPUTS)]
        keys += [key for field_name, key in CATEGORY_KEYS.items() if self.labels.categories(field_name)
                 and (has_response or field_name not in RESPONSE_OUTPUTS)]
        return keys

    def layout(self, has_response: bool) -> list[Piece]:
        """The answer as literal text and slots, e.g. ['{"request": "', Slot(prompt_harmful), '"}']."""
        pieces: list[Piece] = []
        text = "{"
        for i, key in enumerate(self.keys(has_response)):
            text += ("" if i == 0 else ", ") + f'"{key}": '
            task = next((t for t, (k, _) in TASK_KEYS.items() if k == key), None)
            if task is not None:
                pieces += [text + '"', Slot(task, TASK_KEYS[task][1])]
                text = '"'
                continue
            field_name = next(f for f, k in CATEGORY_KEYS.items() if k == key)
            text += "{"
            for j, code in enumerate(self.labels.categories(field_name)):
                pieces += [text + ("" if j == 0 else ", ") + f'"{code}": ', Slot(f"{field_name}/{code}", FLAG)]
                text = ""
            text += "}"
        pieces.append(text + "}")
        return pieces

    def values(self, example: Example) -> dict[str, int | None]:
        """The example's label for every slot of its layout (None: not labelled)."""
        y, known = self.labels.targets([example])
        return {slot.output: (int(y[0, j]) if known[0, j] else None)
                for slot in self.layout(example.response is not None) if isinstance(slot, Slot)
                for j in [self.labels.index(slot.output)]}

    def render(self, layout: Sequence[Piece], values: dict[str, int | None]) -> str:
        """The answer text; an unlabelled slot shows its negative word (training masks its loss)."""
        return "".join(p if isinstance(p, str) else p.options[values.get(p.output) or 0] for p in layout)

    def answer(self, example: Example) -> str:
        return self.render(self.layout(example.response is not None), self.values(example))

    def parse(self, text: str, has_response: bool) -> dict[str, Any]:
        """An answer back into a verdict: {"request": "harmful", ..., "request_violations": ["S1"]}.
        Raises ValueError when the text does not follow the schema."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON: {err}: {text[:200]!r}") from None
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object: {text[:200]!r}")
        expected = self.keys(has_response)
        if [k.strip() for k in data] != expected:
            raise ValueError(f"keys {list(data)} do not match the schema {expected}")
        out: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = raw_key.strip()
            task = next((t for t, (k, _) in TASK_KEYS.items() if k == key), None)
            if task is not None:
                word = str(value).strip()
                if word not in TASK_KEYS[task][1]:
                    raise ValueError(f"{key}: {value!r} is not one of {TASK_KEYS[task][1]}")
                out[key] = word
                continue
            field_name = next(f for f, k in CATEGORY_KEYS.items() if k == key)
            codes = self.labels.categories(field_name)
            if not isinstance(value, dict) or [c.strip() for c in value] != list(codes) \
                    or any(v not in (0, 1) for v in value.values()):
                raise ValueError(f"{key}: {value!r} is not a 0/1 flag for each of {list(codes)}")
            out[key] = [c.strip() for c, v in value.items() if v == 1]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "rationale": self.rationale}
