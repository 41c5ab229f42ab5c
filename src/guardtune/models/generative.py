"""Generative guards: a causal LM that reads the policy and the conversation and answers in the fixed JSON
format of `chat_format`. This module turns that format into tokens, once, for training and inference alike:

- `Prompter.prompt_ids(example)`: the chat-template prompt (with the generation prompt), truncated so the
  conversation gives way, never the policy or the answer.
- `Layout`: the answer compiled to token ids: forced runs and two-way choices (each a slot of the format).
  Every piece is tokenised on its own, so the ids of a slot never depend on its neighbours.
- `GenerativeLM`: the training module. The loss is cross-entropy on answer tokens only (an unlabelled slot's
  tokens are masked too), and the LM head runs on those positions only, never on the whole sequence.
- `score`: label-logit scoring. One forward pass over every prompt (batched, right-padded), then, per
  remaining slot, one cached step over the few tokens up to it. Each slot's probability is the two option
  words' first-token logits, softmaxed; the path continues with the more likely word, which is exactly the
  path greedy decoding takes.
- `decode`: batched constrained decoding with `generate` and `FormatProcessor`, a logits processor that
  allows only the next token of the format, so every output parses.
- `generate_text`: batched greedy free text up to a newline: a rationale (`rationale: before` writes it before
  the verdict is scored; `after` writes it after the decoded verdict).

Both share a prefix cache: the tokens every prompt starts with (the system prompt with the policy, usually
most of the prompt) are run once per call, and each batch starts from a copy of their keys and values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from guardtune.chat_format import RATIONALE_AFTER, RATIONALE_BEFORE, ChatFormat, Slot, rationale_text
from guardtune.data.example import Example
from guardtune.encoding import token_budget_batches
from guardtune.labels import LabelSpace
from guardtune.models.classifier import GuardModule

IGNORE = -100
BATCH_TOKENS_PER_ROW = 96  # inference batches hold batch_size rows or batch_size x this many padded tokens

# Used only when a tokenizer has no chat template (a base model): plain role headers, saved with the run.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def prepare_tokenizer(tokenizer: Any) -> Any:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_TEMPLATE
    if tokenizer.eos_token_id is None:
        raise ValueError("a generative guard needs a tokenizer with an end-of-sequence token (eos_token)")
    return tokenizer


def encode_piece(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Choice:
    output: int  # column of the LabelSpace output this slot scores
    options: tuple[tuple[int, ...], tuple[int, ...]]  # token ids of the negative and the positive word


Item = tuple[int, ...] | Choice  # a forced run of tokens, or a choice


class Layout:
    """The answer of one kind of example (with or without a response) as token items."""

    def __init__(self, fmt: ChatFormat, tokenizer: Any, has_response: bool):
        self.items: list[Item] = []
        for piece in fmt.layout(has_response):
            if isinstance(piece, str):
                ids = tuple(encode_piece(tokenizer, piece))
                if self.items and not isinstance(self.items[-1], Choice):
                    self.items[-1] = self.items[-1] + ids
                elif ids:
                    self.items.append(ids)
                continue
            options = tuple(tuple(encode_piece(tokenizer, word)) for word in piece.options)
            if not all(options) or options[0][0] == options[1][0]:
                raise ValueError(f"the words {piece.options} of slot {piece.output} begin with the same token for "
                                 "this tokenizer, so one token cannot tell them apart")
            self.items.append(Choice(fmt.labels.index(piece.output), options))  # type: ignore[arg-type]
        self.slots = [p for p in fmt.layout(has_response) if isinstance(p, Slot)]
        self.choices = [item for item in self.items if isinstance(item, Choice)]
        self.eos = tokenizer.eos_token_id
        self._after = [[list(word) + self._following(i) for word in item.options]
                       for i, item in enumerate(self.items) if isinstance(item, Choice)]

    def _following(self, position: int) -> list[int]:
        following = self.items[position + 1] if position + 1 < len(self.items) else ()
        return list(following) if not isinstance(following, Choice) else []

    def ids(self, values: Sequence[int | None]) -> tuple[list[int], list[int]]:
        """(answer ids + eos, training labels): one value per choice (None: unlabelled, its tokens masked)."""
        ids: list[int] = []
        labels: list[int] = []
        k = 0
        for item in self.items:
            if isinstance(item, Choice):
                value = values[k]
                k += 1
                word = item.options[value or 0]
                ids += word
                labels += list(word) if value is not None else [IGNORE] * len(word)
            else:
                ids += item
                labels += item
        return ids + [self.eos], labels + [self.eos]

    @property
    def max_length(self) -> int:
        return 1 + sum(max(map(len, i.options)) if isinstance(i, Choice) else len(i) for i in self.items)

    def head(self) -> list[int]:
        """Forced tokens before the first choice (they end the prompt in scoring)."""
        return list(self.items[0]) if self.items and not isinstance(self.items[0], Choice) else []

    def after(self, k: int, option: int) -> list[int]:
        """Tokens fed after choosing `option` at choice k: that word (its first token was only predicted so far)
        and the forced run up to the next choice."""
        return self._after[k][option]


class Prompter:
    """Chat-template prompts of a format, truncated to fit `max_length` together with the answer (and, with
    `rationale: before`, room for `rationale_tokens` of rationale ahead of it)."""

    def __init__(self, fmt: ChatFormat, tokenizer: Any, max_length: int, rationale_tokens: int = 64):
        self.fmt, self.tokenizer, self.max_length = fmt, prepare_tokenizer(tokenizer), max_length
        self.layouts = {has: Layout(fmt, tokenizer, has) for has in (False, True)}
        self.system_role = self._accepts_system_role()
        self.rationale_tokens = rationale_tokens
        # a rationale segment is [marker][text][newline], each piece tokenised on its own (as the layout's pieces
        # are), so the text the guard generates after the marker is exactly what it was trained to produce
        self.marks = {"before": encode_piece(tokenizer, RATIONALE_BEFORE), "after": encode_piece(tokenizer, RATIONALE_AFTER)}
        self.newline = encode_piece(tokenizer, "\n")
        # `before`: the prompt leaves room for the segment; `after` keeps the prompt exactly as `none` (so its
        # scores are the same), and its rationale is cut to what room is left
        self.room = rationale_tokens + len(self.marks["before"]) + len(self.newline) if fmt.rationale == "before" else 0
        self._newlines: set[int] | None = None

    def words(self, text: str | None) -> list[int]:
        return encode_piece(self.tokenizer, text)[:self.rationale_tokens] if text else []

    def before(self, words: list[int]) -> list[int]:
        """The `before` segment that precedes the verdict: "Rationale: " + the rationale's tokens + newline."""
        return self.marks["before"] + list(words[:self.rationale_tokens]) + self.newline

    def newline_ids(self) -> set[int]:
        """Every token whose text holds a newline (a rationale ends at one)."""
        if self._newlines is None:
            size = len(self.tokenizer)
            texts = self.tokenizer.batch_decode([[i] for i in range(size)])
            self._newlines = {i for i, t in enumerate(texts) if "\n" in t}
        return self._newlines

    def _accepts_system_role(self) -> bool:
        try:
            self.tokenizer.apply_chat_template([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
                                               tokenize=False, add_generation_prompt=True)
            return True
        except Exception:  # noqa: BLE001 - jinja raises its own errors (e.g. "System role not supported")
            return False

    def text(self, example: Example, shots: Sequence[Example] = (), prompt: str | None = None,
             response: str | None = None) -> str:
        """The prompt string exactly as the model reads it, training and inference alike."""
        messages = self.fmt.messages(example, shots, prompt, response)
        if not self.system_role:  # e.g. Gemma: the policy goes at the top of the first user turn
            system = messages.pop(0)["content"]
            messages[0] = {**messages[0], "content": f"{system}\n\n{messages[0]['content']}"}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, example: Example, shots: Sequence[Example] = ()) -> list[int]:
        layout = self.layouts[example.response is not None]
        return fit_conversation(
            lambda prompt, response: encode_piece(self.tokenizer, self.text(example, shots, prompt, response)),
            self.tokenizer, example.prompt, example.response, self.max_length - layout.max_length,
            f"model.max_length={self.max_length}", f"the policy and the answer (+{layout.max_length + self.room} "
            "tokens)", self.room)

    def training_ids(self, example: Example) -> tuple[list[int], list[int]]:
        """(input ids, labels): the prompt as at inference, then the answer; loss on the answer only. A rationale
        segment is trained where the example has a text rationale and masked where it has none."""
        ids, labels, _ = self.training_row(example)
        return ids, labels

    def training_row(self, example: Example) -> tuple[list[int], list[int], list[bool]]:
        """`training_ids`, and which positions are the rationale segment's (for `model.rationale_weight`)."""
        prompt = self.prompt_ids(example)
        layout = self.layouts[example.response is not None]
        values = self.fmt.values(example)
        answer, labels = layout.ids([values[s.output] for s in layout.slots])
        flags = [False] * len(answer)
        text = rationale_text(example)
        if self.fmt.rationale == "before":
            segment = self.before(self.words(text))
            answer, labels = segment + answer, (segment if text else [IGNORE] * len(segment)) + labels
            flags = [True] * len(segment) + flags
        elif self.fmt.rationale == "after":
            body, eos = answer[:-1], answer[-1]
            room = self.max_length - len(prompt) - len(answer) - len(self.marks["after"])
            segment = self.marks["after"] + self.words(text)[:max(0, room)] if text and room > 0 else []
            answer = body + segment + [eos]
            labels = labels[:-1] + segment + ([eos] if segment else [IGNORE])  # unknown: no loss on what follows
            flags = flags[:-1] + [True] * (len(segment) + 1)
        return prompt + answer, [IGNORE] * len(prompt) + labels, [False] * len(prompt) + flags


def fit_conversation(render: Callable[[str, str | None], list[int]], tokenizer: Any, prompt: str,
                     response: str | None, budget: int, limit: str, fixed: str, reserved: int = 0) -> list[int]:
    """`render(prompt, response)` (token ids), with the conversation shortened, the longer of prompt and response
    first, until it fits `budget` tokens. `limit` and `fixed` name the limit and what else takes room, for errors."""
    budget -= reserved
    ids = render(prompt, response)
    if len(ids) <= budget:
        return ids
    first = encode_piece(tokenizer, prompt)
    second = encode_piece(tokenizer, response) if response is not None else []
    for _ in range(4):  # re-tokenising at the cut can shift a few tokens; tighten and retry
        room = len(first) + len(second) - (len(ids) - budget)
        if room <= 0:
            raise ValueError(f"{limit} leaves no room for the conversation after the template and {fixed} "
                             f"({len(ids) - len(first) - len(second)} tokens); raise it")
        first, second = _shorten(first, second, room)
        ids = render(tokenizer.decode(first), tokenizer.decode(second) if response is not None else None)
        if len(ids) <= budget:
            return ids
    raise ValueError(f"cannot fit the conversation into {limit}")


def _shorten(a: list[int], b: list[int], room: int) -> tuple[list[int], list[int]]:
    """Cut the longer of a and b first so that len(a) + len(b) <= room."""
    if len(a) + len(b) <= room:
        return a, b
    short, long_ = sorted((len(a), len(b)))
    keep_short = min(short, room // 2) if long_ > room - short else short
    keep_long = room - keep_short
    return (a[:keep_long], b[:keep_short]) if len(a) >= len(b) else (a[:keep_short], b[:keep_long])


@dataclass
class GenEncoded:
    """A tokenised split for answer-only SFT (same interface as encoding.Encoded for the training loop)."""
    examples: Sequence[Example]
    input_ids: list[list[int]]
    labels: list[list[int]]
    lengths: np.ndarray
    rationale: list[list[bool]] | None = None  # per position: a rationale token (with model.rationale_weight)

    @classmethod
    def build(cls, examples: Sequence[Example], prompter: Prompter, weighted: bool = False) -> GenEncoded:
        rows = [prompter.training_row(ex) for ex in examples]
        ids = [r[0] for r in rows]
        return cls(examples, ids, [r[1] for r in rows], np.array([len(x) for x in ids], dtype=np.int64),
                   [r[2] for r in rows] if weighted else None)

    def batch(self, index: list[int], pad_id: int, pad_to_multiple_of: int | None = None) -> dict:
        from guardtune.encoding import collate

        out = collate([self.input_ids[i] for i in index], pad_id, pad_to_multiple_of)
        labels = torch.full_like(out["input_ids"], IGNORE)
        for row, i in enumerate(index):
            labels[row, :len(self.labels[i])] = torch.as_tensor(self.labels[i])
        out["labels"] = labels
        if self.rationale is not None:
            flags = torch.zeros_like(out["input_ids"], dtype=torch.bool)
            for row, i in enumerate(index):
                flags[row, :len(self.rationale[i])] = torch.as_tensor(self.rationale[i])
            out["rationale_mask"] = flags
        out["index"] = list(index)
        return out


def causal_lm(backbone: nn.Module) -> nn.Module:
    """The transformers causal LM inside a (possibly PEFT-wrapped) backbone."""
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


class GenerativeLM(GuardModule):
    """A causal LM guard in training: `forward` returns the answer-token loss."""

    def __init__(self, backbone: nn.Module, labels: LabelSpace, fmt: ChatFormat, rationale_weight: float | None = None):
        super().__init__(backbone, labels)
        self.format = fmt
        self.rationale_weight = rationale_weight  # alpha: alpha * verdict loss + (1 - alpha) * rationale loss

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: list[int] | None = None,
               **kwargs: Any) -> Any:
        use_cache = self.trunk is not None and index is not None
        with self.trunk.around(index, attention_mask) if use_cache else nullcontext():
            return causal_lm(self.backbone).get_decoder()(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def logits_at(self, hidden: torch.Tensor) -> torch.Tensor:
        return causal_lm(self.backbone).get_output_embeddings()(hidden).float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                index: list[int] | None = None, rationale_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy on the answer tokens. With `rationale_weight` alpha (and the batch's rationale mask) it is
        alpha * the verdict tokens' mean + (1 - alpha) * the rationale tokens' mean (distilling step-by-step);
        a batch with only one of the two gets that one's mean."""
        hidden = self.hidden(input_ids, attention_mask, index, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        answer = targets != IGNORE  # the LM head runs on answer positions only
        logits = self.logits_at(hidden[:, :-1][answer])
        if logits.numel() == 0:
            return hidden.sum() * 0.0
        if self.rationale_weight is None or rationale_mask is None:
            return F.cross_entropy(logits, targets[answer])
        losses = F.cross_entropy(logits, targets[answer], reduction="none")
        is_rationale = rationale_mask[:, 1:][answer]
        parts = [(self.rationale_weight, losses[~is_rationale]), (1 - self.rationale_weight, losses[is_rationale])]
        present = [(w, x.mean()) for w, x in parts if x.numel()]
        if len(present) == 1:
            return present[0][1]
        return sum(w * x for w, x in present)


class PrefixCache:
    """Keys and values of the tokens all prompts of a call share, computed once; `take(n)` gives a copy for a
    batch of n rows. Off (length 0) when the shared part is too short to be worth it."""

    MIN_TOKENS = 16

    def __init__(self, model: GenerativeLM, rows: Sequence[Sequence[int]], enabled: bool = True):
        self.length, self.cache = 0, None
        if not enabled or not rows:
            return
        shortest = min(len(r) for r in rows) - 1  # every row keeps at least one token of its own
        first = rows[0]
        length = next((j for j in range(shortest) if any(r[j] != first[j] for r in rows)), shortest)
        if length < self.MIN_TOKENS:
            return
        device = next(model.parameters()).device
        ids = torch.tensor([list(first[:length])], device=device)
        self.cache = model.hidden(ids, torch.ones_like(ids), use_cache=True).past_key_values
        self.length = length

    def take(self, n: int) -> Any:
        if self.cache is None:
            return None
        import copy

        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(n)
        return cache


@torch.inference_mode()
def score(model: GenerativeLM, prompter: Prompter, examples: Sequence[Example], batch_size: int = 16,
          prompts: Callable[[Example], list[int]] | None = None, show_progress: bool = False,
          prefix_cache: bool = True) -> np.ndarray:
    """Label-logit probabilities [n_examples, n_outputs]. An output absent from an example's layout (response
    outputs of a prompt-only example) scores 0: there is nothing to flag."""
    from guardtune.ui import progress

    prompts = prompts or prompter.prompt_ids
    probs = np.zeros((len(examples), len(model.labels.outputs)), dtype=np.float32)
    device = next(model.parameters()).device
    pad = prompter.tokenizer.pad_token_id
    ids = {i: prompts(ex) + prompter.layouts[ex.response is not None].head() for i, ex in enumerate(examples)
           if prompter.layouts[ex.response is not None].choices}
    prefix = PrefixCache(model, list(ids.values()), prefix_cache)
    batches = []
    for has in (False, True):
        rows = [i for i in ids if (examples[i].response is not None) == has]
        own = [len(ids[i]) - prefix.length for i in rows]
        batches += [(prompter.layouts[has], [rows[j] for j in batch])
                    for batch in token_budget_batches(own, batch_size, batch_size * BATCH_TOKENS_PER_ROW)]
    for layout, index in progress(batches, "scoring", enabled=show_progress, unit="batch"):
        probs[index] = _score_batch(model, layout, [ids[i][prefix.length:] for i in index], pad, device, prefix)
    return probs


def _score_batch(model: GenerativeLM, layout: Layout, rows: list[list[int]], pad: int, device,
                 prefix: PrefixCache) -> np.ndarray:
    from guardtune.encoding import collate

    n = len(rows)
    out = np.zeros((n, len(model.labels.outputs)), dtype=np.float32)
    batch = collate(rows, pad)
    own = batch["attention_mask"].to(device)
    mask = torch.cat([torch.ones(n, prefix.length, dtype=own.dtype, device=device), own], dim=1)
    last = torch.tensor([prefix.length + len(r) - 1 for r in rows], device=device)  # each row's last position
    result = model.hidden(batch["input_ids"].to(device), mask, position_ids=_positions(mask)[:, prefix.length:],
                          past_key_values=prefix.take(n), use_cache=True)
    cache = result.past_key_values
    hidden = result.last_hidden_state[torch.arange(n, device=device), last - prefix.length]
    for k, choice in enumerate(layout.choices):
        logits = model.logits_at(hidden)
        pair = logits[:, [choice.options[0][0], choice.options[1][0]]]
        p = torch.softmax(pair, dim=-1)[:, 1]
        out[:, choice.output] = p.cpu().numpy()
        if k + 1 == len(layout.choices):
            break
        picked = (pair[:, 1] > pair[:, 0]).tolist()  # the more likely word (an exact tie: the negative one)
        chunk = [layout.after(k, int(c)) for c in picked]
        step = collate(chunk, pad)
        step_mask = step["attention_mask"].to(device)
        positions = last.unsqueeze(1) + torch.cumsum(step_mask, dim=1)
        mask = torch.cat([mask, step_mask], dim=1)
        result = model.hidden(step["input_ids"].to(device), mask, position_ids=positions, past_key_values=cache,
                              use_cache=True)
        cache = result.past_key_values
        ends = torch.tensor([len(c) - 1 for c in chunk], device=device)
        hidden = result.last_hidden_state[torch.arange(n, device=device), ends]
        last = last + step_mask.sum(dim=1)
    return out


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


class FormatProcessor:
    """A logits processor for `generate`: each row may only emit the next token of its answer layout (at a slot,
    either word's next token); after the layout, only eos. Rows are left-padded prompts of width `start`."""

    def __init__(self, layouts: Sequence[Layout], start: int):
        self.layouts, self.start = list(layouts), start
        self.state = [(0, 0, -1) for _ in layouts]  # (item, offset in item, chosen option or -1)

    def allowed(self, row: int) -> list[int]:
        layout, (i, j, option) = self.layouts[row], self.state[row]
        if i >= len(layout.items):
            return [layout.eos]
        item = layout.items[i]
        if isinstance(item, Choice):
            return [item.options[0][0], item.options[1][0]] if option < 0 else [item.options[option][j]]
        return [item[j]]

    def advance(self, row: int, token: int) -> None:
        layout, (i, j, option) = self.layouts[row], self.state[row]
        if i >= len(layout.items):
            return
        item = layout.items[i]
        if isinstance(item, Choice):
            option = option if option >= 0 else (0 if token == item.options[0][0] else 1)
            word = item.options[option]
            self.state[row] = (i + 1, 0, -1) if j + 1 >= len(word) else (i, j + 1, option)
        else:
            self.state[row] = (i + 1, 0, -1) if j + 1 >= len(item) else (i, j + 1, -1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.start:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self.advance(row, token)
        keep = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            allowed = self.allowed(row)
            keep[row, allowed] = scores[row, allowed]
        return keep


@torch.inference_mode()
def decode(model: GenerativeLM, prompter: Prompter, examples: Sequence[Example], batch_size: int = 16,
           prompts: Callable[[Example], list[int]] | None = None, show_progress: bool = False,
           prefix_cache: bool = True, answer_ids: list[list[int]] | None = None) -> list[str]:
    """Constrained greedy decoding, batched: the answer text of every example (always parses). Rows are
    [shared prefix | padding | own prompt], so every row ends in the same column and the prefix cache fits all.
    `answer_ids`, when given, receives each answer's token ids (without eos), in order."""
    from transformers import LogitsProcessorList

    from guardtune.ui import progress

    prompts = prompts or prompter.prompt_ids
    lm = causal_lm(model.backbone)
    device = next(model.parameters()).device
    tokenizer = prompter.tokenizer
    ids = [prompts(ex) for ex in examples]
    prefix = PrefixCache(model, ids, prefix_cache)
    batches = token_budget_batches([len(r) - prefix.length for r in ids], batch_size, batch_size * BATCH_TOKENS_PER_ROW)
    texts: list[str] = [""] * len(examples)
    answers: list[list[int]] = [[] for _ in examples]
    for index in progress(batches, "decoding", enabled=show_progress, unit="batch"):
        width = max(len(ids[i]) for i in index)
        input_ids = torch.full((len(index), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        input_ids[:, :prefix.length] = torch.as_tensor(ids[index[0]][:prefix.length])
        mask[:, :prefix.length] = 1
        for row, i in enumerate(index):  # padding before each row's own part: all rows end in the same column
            input_ids[row, width - len(ids[i]) + prefix.length:] = torch.as_tensor(ids[i][prefix.length:])
            mask[row, width - len(ids[i]) + prefix.length:] = 1
        layouts = [prompter.layouts[examples[i].response is not None] for i in index]
        processor = FormatProcessor(layouts, width)
        cache = {"past_key_values": prefix.take(len(index))} if prefix.length else {}
        out = lm.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=False, **cache,
                          max_new_tokens=max(lay.max_length for lay in layouts),
                          logits_processor=LogitsProcessorList([processor]), eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
        for row, i in enumerate(index):
            texts[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True)
            answers[i] = [t for t in out[row, width:].tolist() if t not in (tokenizer.eos_token_id,
                                                                              tokenizer.pad_token_id)]
    if answer_ids is not None:
        answer_ids.extend(answers)
    return texts


class NewlineStop:
    """A stopping criterion for `generate`: a row is done once it emits a token holding a newline (or eos)."""

    def __init__(self, newline_ids: set[int], eos: int):
        self.stop = torch.tensor(sorted(newline_ids | {eos}))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.isin(input_ids[:, -1], self.stop.to(input_ids.device))


@torch.inference_mode()
def generate_text(model: GenerativeLM, prompter: Prompter, rows: Sequence[Sequence[int]], batch_size: int = 16,
                  show_progress: bool = False) -> list[tuple[str, list[int]]]:
    """Greedy free text after each row of ids, up to the first newline (or eos, or rationale_tokens), batched:
    rows are left-padded so that each batch continues in one column. Returns each text (stripped) and its token
    ids (without the token that ended it)."""
    from transformers import StoppingCriteriaList

    from guardtune.ui import progress

    lm = causal_lm(model.backbone)
    device = next(model.parameters()).device
    tokenizer = prompter.tokenizer
    stop = NewlineStop(prompter.newline_ids(), tokenizer.eos_token_id)
    texts: list[tuple[str, list[int]]] = [("", [])] * len(rows)
    ends = prompter.newline_ids() | {tokenizer.eos_token_id, tokenizer.pad_token_id}
    batches = token_budget_batches([len(r) for r in rows], batch_size, batch_size * BATCH_TOKENS_PER_ROW)
    for index in progress(batches, "writing rationales", enabled=show_progress, unit="batch"):
        width = max(len(rows[i]) for i in index)
        input_ids = torch.full((len(index), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, i in enumerate(index):
            input_ids[row, width - len(rows[i]):] = torch.as_tensor(list(rows[i]))
            mask[row, width - len(rows[i]):] = 1
        out = lm.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=False,
                          max_new_tokens=prompter.rationale_tokens, stopping_criteria=StoppingCriteriaList([stop]),
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        for row, i in enumerate(index):
            ids = []
            for token in out[row, width:].tolist():
                if token in ends:
                    break
                ids.append(token)
            texts[i] = (tokenizer.decode(ids, skip_special_tokens=True).strip(), ids)
    return texts
