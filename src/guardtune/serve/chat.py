"""POST /v1/chat/completions for a dual-path guard: OpenAI's chat schema in, one assistant message out, with the
same model moderating the prompt and the answer (kinds/dual_path.py).

The operator chooses what a flagged turn gets (`ServeSettings.chat_mode`): `block` answers with the refusal
(finish_reason "content_filter"; a flagged prompt is never answered at all), `annotate` returns the completion.
Either way the verdicts ride along under "moderation". With "stream": true the reply comes as server-sent
events, in one content chunk: an answer is released only once it has been moderated.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, Field

from guardtune.data.example import FieldError
from guardtune.kinds.dual_path import check_messages
from guardtune.serve.app import State, error
from guardtune.serve.batcher import ChatTurn
from guardtune.serve.routes import FAILED, TextPart, check_text, score_all

class ChatMessage(BaseModel):
    role: str
    content: str | list[TextPart]


class ChatRequest(BaseModel):
    messages: list[ChatMessage]
    model: str | None = None  # accepted and ignored: this server has one model
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    n: int = 1


def turn_of(body: ChatRequest, state: State) -> tuple[ChatTurn | None, Any]:
    """The request as a chat job, every message checked at the edge (its index named), or an error."""
    settings = state.settings
    if body.n != 1:
        return None, error(422, "n must be 1: this server returns one completion", "invalid_request_error", "n")
    if not body.messages:
        return None, error(422, "messages is empty", "invalid_request_error", "messages")
    if len(body.messages) > settings.max_inputs:
        return None, error(413, f"messages has {len(body.messages)} items; the limit is {settings.max_inputs}",
                           "invalid_request_error", "messages")
    messages = [{"role": m.role, "content": m.content if isinstance(m.content, str) else
                 "".join(part.text for part in m.content)} for m in body.messages]
    for i, m in enumerate(messages):
        if len(m["content"]) > settings.max_chars:
            return None, error(413, f"messages[{i}].content has {len(m['content'])} characters; the limit is "
                                    f"{settings.max_chars}", "invalid_request_error", f"messages[{i}].content")
    total = sum(len(m["content"]) for m in messages)
    if total > settings.max_chars:  # the model reads the whole conversation: one text's limit bounds it all
        return None, error(413, f"the messages have {total} characters together; the limit is {settings.max_chars}",
                           "invalid_request_error", "messages")
    try:
        check_messages(messages)
    except FieldError as err:
        return None, error(422, str(err), "invalid_request_error", err.field)
    if problem := check_text(state, messages[-1]["content"], f"messages[{len(messages) - 1}].content"):
        return None, problem
    wanted = body.max_completion_tokens or body.max_tokens or settings.max_new_tokens
    return ChatTurn(tuple(messages), min(wanted, settings.max_new_tokens), body.temperature, body.top_p), None


def add_chat_route(app: Any, state: State) -> None:
    from fastapi.responses import JSONResponse, StreamingResponse

    settings = state.settings

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        turn, problem = turn_of(body, state)
        if problem:
            return problem
        results, problem = await score_all(state, [turn], "chat")
        if problem:
            return problem
        if results[0] is FAILED:  # nothing unmoderated may go out, whatever the fail policy
            return error(500, "the model failed on this conversation; nothing was answered", "server_error",
                         headers={"X-Guardtune-Failure": settings.fail})
        r = results[0]
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        moderation = {"mode": settings.chat_mode, "blocked": r["blocked"], "flagged": r["flagged"],
                      "prompt": r["prompt_moderation"], "response": r["response_moderation"]}
        usage = {"prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
                 "total_tokens": r["prompt_tokens"] + r["completion_tokens"]}
        if not body.stream:
            return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": state.model_id,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": r["reply"]},
                                              "finish_reason": r["finish_reason"]}],
                                 "usage": usage, "moderation": moderation})

        def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
            data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": state.model_id,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        def events():
            yield chunk({"role": "assistant"})
            yield chunk({"content": r["reply"]})
            yield chunk({}, r["finish_reason"], usage=usage, moderation=moderation)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
