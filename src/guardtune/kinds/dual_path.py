"""The dual-path kind (LoRA-Guard): a causal chat model that also guards. Adapters (any registered method that
switches off exactly) and a multi-task head sit on the chat model: with adapters on it guards, with them off it
chats exactly as the base model. The run stores only the adapter and the head; loading never merges them.

    chat = guardtune.load("runs/dual")
    chat.moderate("how do I pick a lock?")             # a verdict, as any guard
    chat.generate([{"role": "user", "content": "hi"}]) # the base model's own answer
    chat.respond([{"role": "user", "content": "hi"}])  # guard the prompt, answer, guard the answer

`respond` shares work between chat and guard (models/dual_path.py): with adapters only on the top k of L blocks,
the guard reads the states the chat pass computed below them, so guarding the prompt and the answer costs about
k/L of a forward pass each, and the answer is guarded from the generation's own cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from guardtune.data.example import Example
from guardtune.guard import GuardBase, Scores, Thresholds, verdict, without_absent
from guardtune.kinds.kind import Kind
from guardtune.labels import LabelSpace

# what blocks a turn: the prompt is refused when `prompt_harmful` is flagged, the answer when `response_harmful`
# is (refusal is reported, never blocking); a guard without the task cannot block on that side
BLOCKING = {"prompt": "prompt_harmful", "response": "response_harmful"}
REFUSAL = "I can't help with that."
MODES = ("block", "annotate")


class DualPathGuard(GuardBase):
    """A dual-path guard: the Guard protocol (score, moderate) with adapters on, plus `generate` (adapters off)
    and `respond` (the two together, sharing the chat pass). `share=False` runs every guard pass in full."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, thresholds: Thresholds | None = None,
                 name: str = "", batch_size: int = 16, share: bool = True, refusal: str = REFUSAL):
        from guardtune.models.dual_path import ChatTemplate, first_adapted_block

        self.model = model.eval()
        self.labels: LabelSpace = model.labels
        self.template = ChatTemplate(tokenizer, max_length)
        self.tokenizer = self.template.tokenizer
        self.max_length = max_length
        self.thresholds = thresholds or Thresholds()
        self.name = name
        self.batch_size = batch_size
        self.refusal = refusal
        n_blocks = len(model.blocks()[2])
        self.shared = min(first_adapted_block(model.backbone), n_blocks - 1) if share else 0

    @property
    def info(self) -> dict[str, Any]:
        """Parameter counts: the base chat model's, and what guarding adds (adapter and head) as a share of it."""
        added = sum(p.numel() for n, p in self.model.named_parameters() if _is_added(n))
        total = sum(p.numel() for p in self.model.parameters())
        base = total - added
        return {"kind": "dual_path", "base_params": base, "added_params": added, "overhead": added / max(base, 1),
                "blocks": len(self.model.blocks()[2]), "shared_blocks": self.shared}

    # ---- guarding --------------------------------------------------------------------------------------------

    def _score(self, examples: Sequence[Example], batch_size: int | None, show_progress: bool) -> Scores:
        return Scores(self.labels, self._probs([self.template.example_ids(ex) for ex in examples], batch_size,
                                               show_progress))

    def _probs(self, ids: Sequence[Sequence[int]], batch_size: int | None = None,
               show_progress: bool = False) -> np.ndarray:
        import torch

        from guardtune.encoding import score_batches
        from guardtune.models.dual_path import adapters

        device = self.model.head.weight.device

        @torch.inference_mode()
        def forward(batch: dict) -> np.ndarray:
            with adapters(self.model.backbone, True):
                logits = self.model(**{k: v.to(device) for k, v in batch.items()})
            return torch.sigmoid(logits.float()).cpu().numpy()

        return score_batches(ids, self.tokenizer.pad_token_id, forward, len(self.labels.outputs),
                             batch_size or self.batch_size, self.max_length, show_progress)

    def guard_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The guard's input for a conversation: one user turn (and its answer) as in training, shortened to fit;
        a longer conversation keeps its last max_length tokens (the head reads the last one)."""
        roles = [m["role"] for m in messages]
        if roles in (["user"], ["user", "assistant"]):
            return self.template.ids(messages[0]["content"], messages[1]["content"] if len(messages) > 1 else None)
        return self.template.render(messages)[-self.max_length:]

    # ---- chatting --------------------------------------------------------------------------------------------

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int = 256, **generate_kwargs: Any) -> str:
        """The base chat model's answer (adapters off: exactly what the model without guardtune would say)."""
        return self.generate_batch([messages], max_new_tokens, **generate_kwargs)[0]

    def generate_batch(self, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int = 256,
                       **generate_kwargs: Any) -> list[str]:
        """The base chat model's answers to several conversations, in one batched generation; nothing guarded."""
        for messages in conversations:
            check_messages(messages)
        return self._chat(conversations, max_new_tokens, generate_kwargs, mode=None)["texts"]

    def respond(self, messages: list[dict[str, str]], mode: str = "block", max_new_tokens: int = 256,
                **generate_kwargs: Any) -> dict[str, Any]:
        """Guard the prompt, answer it unless it is blocked, guard the answer: see `respond_batch`."""
        return self.respond_batch([messages], mode, max_new_tokens, **generate_kwargs)[0]

    def respond_batch(self, conversations: Sequence[list[dict[str, str]]], mode: str = "block",
                      max_new_tokens: int = 256, **generate_kwargs: Any) -> list[dict[str, Any]]:
        """For each conversation (ending with a user turn): the prompt's verdict, the answer, the answer's verdict
        and the decision. `mode="block"`: a flagged prompt is not answered and a flagged answer is withheld, the
        reply being the refusal; `mode="annotate"`: the answer is always returned, with the verdicts."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        for messages in conversations:
            check_messages(messages)
        run = self._chat(conversations, max_new_tokens, generate_kwargs, mode)
        prompt_scores = run["prompt_verdicts"]
        answered = [i for i, blocked in enumerate(run["blocked"]) if not blocked]
        response_probs = self._response_probs(conversations, run, answered)
        out = []
        for i, messages in enumerate(conversations):
            flagged = {"prompt": _flagged(prompt_scores[i], "prompt"), "response": False}
            text = run["texts"][i] if i in response_probs else None
            response_verdict = None
            if i in response_probs:
                response_verdict = self._verdicts(response_probs[i][None], prompt_only=False)[0]
                flagged["response"] = _flagged(response_verdict, "response")
            blocked = mode == "block" and (flagged["prompt"] or flagged["response"])
            out.append({"reply": self.refusal if blocked else text, "blocked": blocked, "flagged": flagged,
                        "response": text, "prompt_moderation": prompt_scores[i],
                        "response_moderation": response_verdict,
                        "finish_reason": "content_filter" if blocked else run["finish"][i],
                        "prompt_tokens": len(run["prompts"][i]),
                        "completion_tokens": len(run["tokens"][i]) if text is not None else 0,
                        "shared": {"prompt": run["prompt_shared"][i], "response": i in run["response_shared"]}})
        return out

    def _verdicts(self, probs: np.ndarray, prompt_only: bool) -> list[dict[str, Any]]:
        examples = [Example(prompt="-", response=None if prompt_only else "-")] * len(probs)
        scores = self.thresholds.rescale(without_absent(examples, Scores(self.labels, probs.astype(np.float32))))
        return [verdict(self, scores, row) for row in range(len(probs))]

    def _chat(self, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int, generate_kwargs: dict,
              mode: str | None) -> dict[str, Any]:
        """One batched generation with adapters off. With a `mode`, the states entering the first adapted block
        are recorded while it runs, and right after the prefill the prompts are guarded from them (in block mode
        a flagged prompt stops its row there); without one, nothing is guarded or recorded."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from guardtune.models.dual_path import Recorder, adapters

        model, tokenizer = self.model, self.tokenizer
        device = model.head.weight.device
        prompts = [self.template.render(m) for m in conversations]
        width = max(map(len, prompts))
        input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):  # left padding: every row's next token is in the same column
            input_ids[row, width - len(ids):] = torch.as_tensor(ids)
            mask[row, width - len(ids):] = 1
        recorder = Recorder(model.blocks()[2], self.shared) if self.shared and mode else None
        state: dict[str, Any] = {"verdicts": None, "prompt_shared": [False] * len(prompts)}
        guard_rows = [self.guard_ids(m) for m in conversations] if mode else []

        def guard_prompts() -> np.ndarray:
            shared = [recorder is not None and g == p for g, p in zip(guard_rows, prompts)]
            probs = np.zeros((len(prompts), len(self.labels.outputs)), dtype=np.float32)
            rest = [i for i, s in enumerate(shared) if not s]
            if rest:
                probs[rest] = self._probs([guard_rows[i] for i in rest])
            rows = [i for i, s in enumerate(shared) if s]
            if rows:
                with recorder.paused():
                    states = recorder.chunks[0]
                    logits = model.logits_from(self.shared, [prompts[i] for i in rows],
                                               [states[i, width - len(prompts[i]):] for i in rows])
                probs[rows] = torch.sigmoid(logits.float()).cpu().numpy()
            state["prompt_shared"] = shared
            return probs

        guard = self

        class PromptGate(StoppingCriteria):
            """Called after each step; after the first (the prefill) it guards the prompts."""

            def __call__(self, ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
                stop = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
                if state["verdicts"] is None:
                    with adapters(model.backbone, True):
                        state["verdicts"] = guard._verdicts(guard_prompts(), prompt_only=True)
                    if mode == "block":
                        stop = torch.tensor([_flagged(v, "prompt") for v in state["verdicts"]], device=ids.device)
                return stop

        eos = end_tokens(model.lm, tokenizer)
        with torch.inference_mode(), adapters(model.backbone, False), \
                (recorder.active() if recorder else nullcontext()):
            out = model.lm.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                    max_new_tokens=max_new_tokens,
                                    stopping_criteria=StoppingCriteriaList([PromptGate()] if mode else []),
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos),
                                    return_dict_in_generate=True, **generate_kwargs)
        new = out.sequences[:, width:].tolist()
        tokens, finish = [], []
        for row in new:
            end = next((j for j, t in enumerate(row) if t in eos), None)
            tokens.append(row if end is None else row[:end + 1])
            finish.append("length" if end is None else "stop")
        verdicts = state["verdicts"]
        blocked = [mode == "block" and _flagged(v, "prompt") for v in verdicts] if verdicts else [False] * len(prompts)
        return {"prompts": prompts, "width": width, "tokens": tokens, "finish": finish, "blocked": blocked,
                "texts": [tokenizer.decode(t, skip_special_tokens=True) for t in tokens],
                "prompt_verdicts": verdicts, "prompt_shared": state["prompt_shared"], "recorder": recorder,
                "cache": out.cache if "cache" in out else out.past_key_values, "response_shared": set()}

    def _response_probs(self, conversations: Sequence[list[dict[str, str]]], run: dict,
                        rows: list[int]) -> dict[int, np.ndarray]:
        """Guard each answered conversation's answer: the pair view continues the chat sequence, so the states of
        their common part come from the generation; the few tokens after it (the template's end of turn) run
        through the unadapted blocks on the generation's cache; then the adapted blocks run once."""
        import torch

        if not rows:
            return {}
        pair_ids = {i: self.guard_ids([*conversations[i], {"role": "assistant", "content": run["texts"][i]}])
                    for i in rows}
        recorder, width = run["recorder"], run["width"]
        shared: dict[int, int] = {}
        if recorder is not None:
            states = recorder.states()
            steps = states.shape[1] - width  # decoding steps fed back (every generated token but the last)
            for i in rows:
                chat = run["prompts"][i] + run["tokens"][i]
                known = len(run["prompts"][i]) + min(len(run["tokens"][i]), steps)
                common = next((j for j, (a, b) in enumerate(zip(pair_ids[i], chat[:known])) if a != b),
                              min(len(pair_ids[i]), known))
                if common >= len(run["prompts"][i]):  # at least the prompt's states are shared
                    shared[i] = common
        probs: dict[int, np.ndarray] = {}
        rest = [i for i in rows if i not in shared]
        if rest:
            probs.update(zip(rest, self._probs([pair_ids[i] for i in rest])))
        if shared:
            index = list(shared)
            columns = {i: _columns(len(run["prompts"][i]), width, shared[i]) for i in index}
            known_states = [states[i, columns[i]] for i in index]
            tails = [pair_ids[i][shared[i]:] if i in shared else [] for i in range(states.shape[0])]  # every row
            if any(tails):
                first = [shared.get(i, len(run["prompts"][i])) for i in range(states.shape[0])]
                cache_mask = torch.zeros(states.shape[0], states.shape[1], dtype=torch.long)
                for i in range(states.shape[0]):  # rows without a tail still attend to their prompt (no empty row)
                    cache_mask[i, columns[i] if i in columns else _columns(len(run["prompts"][i]), width, first[i])] = 1
                with torch.inference_mode():
                    tail_states = self.model.lower_states(self.shared, tails, run["cache"], cache_mask, first)
                known_states = [torch.cat([k, tail_states[i]]) for k, i in zip(known_states, index)]
            with torch.inference_mode():
                logits = self.model.logits_from(self.shared, [pair_ids[i] for i in index], known_states)
            probs.update(zip(index, torch.sigmoid(logits.float()).cpu().numpy()))
            run["response_shared"].update(index)
        return probs


def _columns(prompt_length: int, width: int, n: int) -> list[int]:
    """Cache columns of the first n tokens of a left-padded row's chat sequence (prompt, then generated)."""
    start = width - prompt_length
    return [start + j if j < prompt_length else width + j - prompt_length for j in range(n)]


def _flagged(result: dict[str, Any], side: str) -> bool:
    task = result.get(BLOCKING[side])
    return bool(task and task["flagged"])


def _is_added(name: str) -> bool:
    return name.startswith("head.") or any(key in name for key in ADAPTER_KEYS)


# names of the parameters a PEFT adapter adds (LoRA and DoRA, AdaLoRA, IA3, VeRA, LoHa, LoKr)
ADAPTER_KEYS = ("lora_", "ia3_", "vera_", "hada_", "lokr_")


def end_tokens(lm: Any, tokenizer: Any) -> set[int]:
    """Tokens that end an answer: the model's generation config's (Llama 3 has several) and the tokenizer's."""
    configured = getattr(lm.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured] if configured is not None else [])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


ROLES = ("system", "user", "assistant")


def check_messages(messages: Any) -> None:
    """A conversation to answer: {role, content} messages, text a tokenizer can encode, the last one the user's.
    A problem raises FieldError naming the message (`messages[2].content`)."""
    from guardtune.data.example import FieldError, check_unicode

    if not isinstance(messages, list) or not messages:
        raise FieldError("messages", "must be a non-empty list of {role, content}")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise FieldError(f"messages[{k}]", "must be {\"role\": system|user|assistant, \"content\": string}")
        if m.get("role") not in ROLES:
            raise FieldError(f"messages[{k}].role", f"must be one of {', '.join(ROLES)}, got {m.get('role')!r}")
        check_unicode(f"messages[{k}].content", m["content"])
    if messages[-1]["role"] != "user":
        raise FieldError(f"messages[{len(messages) - 1}].role", "the last message must be the user's (the turn to "
                                                                "answer)")


def build(cfg: Any, labels: LabelSpace, backbone: Any) -> Any:
    import torch

    from guardtune import methods
    from guardtune.models.dual_path import DualPathLM

    method = methods.get(cfg.method.name)
    if not (method.peft and method.switchable):
        ok = sorted(n for n, m in methods.METHODS.items() if m.peft and m.switchable)
        raise ValueError(f"model.kind dual_path must chat exactly as the base model with its adapter off; method "
                         f"{cfg.method.name!r} changes the base weights. Choose one of: {', '.join(ok)}")
    bias = getattr(cfg.method.build(), "bias", "none")
    if bias != "none":
        raise ValueError(f"model.kind dual_path needs method.bias: none (bias {bias!r} trains the base model's own "
                         "biases, which stay on with the adapter off)")
    model = DualPathLM(backbone, labels, cfg.model.head_dropout)
    model.head.to(torch.float32)
    return model


def encode(cfg: Any, labels: LabelSpace, tokenizer: Any, data: dict) -> tuple[Any, Any, Any]:
    from guardtune.kinds.classifier import encode_targets
    from guardtune.models.dual_path import ChatTemplate

    template = ChatTemplate(tokenizer, cfg.model.max_length)
    return encode_targets(cfg, labels, data, lambda examples: [template.example_ids(ex) for ex in examples])


def wrap(model: Any, tokenizer: Any, cfg: Any, thresholds: Thresholds | None = None,
         name: str = "") -> DualPathGuard:
    return DualPathGuard(model, tokenizer, cfg.model.max_length, thresholds, name, cfg.training.eval_batch_size)


DUAL_PATH = Kind(auto="AutoModelForCausalLM", max_length=512, build=build, encode=encode, wrap=wrap, merge=False)
