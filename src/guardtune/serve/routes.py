"""The moderation routes: POST /v1/moderations (OpenAI's schema), POST /v1/guard (full verdicts), POST /v1/detox,
POST /v1/chat/completions for a dual-path guard (serve/chat.py), and /healthz, /readyz, /metrics. Each text is validated at the edge; scoring goes through the batcher."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pydantic import BaseModel, Field

from guardtune.data.example import Example
from guardtune.guard import RESPONSE_PREFIX, Guard, language_of, verdict
from guardtune.labels import CATEGORY_FIELDS
from guardtune.serve.app import State, error
from guardtune.serve.batcher import Job, Overloaded
from guardtune.taxonomy import OPENAI_CATEGORIES, TO_OPENAI

FAILED = object()  # the guard failed on this text: the fail policy answers for it


class TextPart(BaseModel):
    type: str = "text"
    text: str


LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})?$"  # an ISO 639 code, as in guardtune's data (en, zh, pt-BR)


class ModerationRequest(BaseModel):
    input: str | list[str | TextPart]
    model: str | None = None  # accepted for compatibility and ignored: this server has one guard
    language: str | None = Field(None, pattern=LANGUAGE)  # guardtune's extension: the inputs' language, for
                                                         # per-language thresholds (default: detected per input)


class DetoxRequest(BaseModel):
    input: str | list[str | TextPart]
    only_flagged: bool = False  # rewrite only what the served guard flags (moderate, then rewrite)
    scores: bool = False  # the guard's toxicity of each input and of its rewrite, and their similarity (SIM)
    model: str | None = None  # accepted and ignored, as in /v1/moderations


class GuardRequest(BaseModel):
    prompt: str
    response: str | None = None
    explain: bool = False  # a guard with a span head: also the prompt's spans that made it harmful
    language: str | None = Field(None, pattern=LANGUAGE)  # for per-language thresholds (default: detected)


def openai_result(guard: Guard, v: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI moderation result from a guardtune verdict of a single text (read as a prompt)."""
    codes = v.get("prompt_categories", {})
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    for name in OPENAI_CATEGORIES:
        sources = [c for c in TO_OPENAI.get(name, ()) if c in codes]
        categories[name] = any(codes[c]["flagged"] for c in sources)
        scores[name] = max((codes[c]["score"] for c in sources), default=0.0)
    harmful = v.get("prompt_harmful")
    flagged = bool(harmful["flagged"]) if harmful else False
    flagged = flagged or any(categories.values()) or any(c["flagged"] for c in codes.values())
    extension: dict[str, Any] = {task: v[task]["score"] for task in guard.labels.tasks if task in v}
    if "stage" in v:  # a cascade: the stage that decided
        extension["stage"] = v["stage"]
    if "thresholds_from" in v:  # per-language thresholds: the language, and whose thresholds applied
        extension.update(language=v["language"], thresholds_from=v["thresholds_from"])
    if codes:
        extension["categories"] = {c: codes[c]["score"] for c in codes}
    return {"flagged": flagged, "categories": categories, "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
            "guardtune": extension}


def verdict_of(guard: Guard, result: tuple, text: str = "", language: str | None = None) -> dict[str, Any]:
    """A scoring job's verdict: (Scores, row), and for a cascade the stage that decided (under "stage"). A guard
    with per-language thresholds applies `language`'s, or those of the language detected in `text`."""
    v = verdict(guard, result[0], result[1], language_of(guard, text, language))
    return {**v, "stage": result[2]} if len(result) > 2 else v


def failed_result(guard: Guard, flagged: bool) -> dict[str, Any]:
    scores = {name: float(flagged) for name in OPENAI_CATEGORIES}
    return {"flagged": flagged, "categories": {name: False for name in OPENAI_CATEGORIES}, "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
            "guardtune": {"error": "the guard failed; this answer is the server's fail policy"}}


def failed_verdict(guard: Guard, flagged: bool, has_response: bool) -> dict[str, Any]:
    """The fail policy's verdict: every output that applies to the example (a prompt alone: no response ones)."""
    applies = (lambda name: has_response or not name.startswith(RESPONSE_PREFIX))  # noqa: E731
    out: dict[str, Any] = {task: {"flagged": flagged, "score": float(flagged), "threshold": None}
                           for task in guard.labels.tasks if applies(task)}
    for field_name in CATEGORY_FIELDS:
        codes = guard.labels.categories(field_name)
        if codes and applies(field_name):
            out[field_name] = {c: {"flagged": False, "score": float(flagged)} for c in codes}
    return out


async def score_all(state: State, examples: list[Example], job: str = "score") -> tuple[list | None, Any]:
    """(one result per example: (Scores, row) for "score" jobs, a string for "rewrite" jobs, or FAILED where
    the model failed on that text; or an error response)."""
    batcher, settings, metrics = state.batcher, state.settings, state.metrics
    if not examples:
        return [], None
    try:
        futures = batcher.submit([Job(job, ex) for ex in examples])
    except Overloaded:
        return None, error(503, "the server is at capacity; retry shortly", "overloaded", headers={"Retry-After": "1"})
    metrics.queue.set(batcher.pending)
    waiting = [asyncio.wrap_future(f) for f in futures]
    try:
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), settings.timeout_s)
    except asyncio.TimeoutError:
        for f in futures:
            f.cancel()
        return None, error(504, f"not scored within {settings.timeout_s:g} s", "timeout")
    failed = sum(isinstance(r, BaseException) for r in results)
    if failed:
        metrics.failures.labels(settings.fail).inc(failed)
    metrics.texts.inc(len(examples) - failed)
    return [FAILED if isinstance(r, BaseException) else r for r in results], None


def check_text(state: State, text: str, param: str):
    limit = state.settings.max_chars
    if len(text) > limit:
        return error(413, f"{param} has {len(text)} characters; the limit is {limit}", "invalid_request_error", param)
    if not text.strip():
        return error(422, f"{param} is empty", "invalid_request_error", param)
    return None


def make_example(prompt: str, response: str | None, param: str):
    try:
        return Example(prompt=prompt, response=response), None
    except ValueError as err:
        return None, error(422, f"{param}: {err}", "invalid_request_error", param)


def texts_of(body: Any, state: State) -> tuple[list[Example] | None, Any]:
    """The request's texts as examples, each checked at the edge (the field and index named), or an error."""
    texts = [body.input] if isinstance(body.input, str) else \
        [part if isinstance(part, str) else part.text for part in body.input]
    if not texts:
        return None, error(422, "input is an empty list", "invalid_request_error", "input")
    if len(texts) > state.settings.max_inputs:
        return None, error(413, f"input has {len(texts)} items; the limit is {state.settings.max_inputs}",
                           "invalid_request_error", "input")
    examples = []
    for i, text in enumerate(texts):
        param = "input" if isinstance(body.input, str) else f"input[{i}]"
        problem = check_text(state, text, param)
        example, problem = (None, problem) if problem else make_example(text, None, param)
        if problem:
            return None, problem
        examples.append(example)
    return examples, None


def add_routes(app: Any, state: State) -> None:
    from guardtune.serve.app import can_chat

    if state.guard is not None:
        add_moderation_routes(app, state)
    if can_chat(state.guard):
        from guardtune.serve.chat import add_chat_route

        add_chat_route(app, state)
    if state.rewriter is not None:
        add_detox_route(app, state)
    add_health_routes(app, state)


def add_detox_route(app: Any, state: State) -> None:
    """POST /v1/detox: rewrites, with the same limits, auth and error bodies as /v1/moderations. A text the
    rewriter fails on gets the fail policy: closed answers "" (nothing toxic goes out), open the input."""
    from fastapi.responses import JSONResponse

    guard, settings = state.guard, state.settings

    @app.post("/v1/detox")
    async def detox(body: DetoxRequest):
        examples, problem = texts_of(body, state)
        if problem:
            return problem
        if body.only_flagged and guard is None:
            return error(400, "only_flagged needs a guard: serve one beside the rewriter "
                              "(guardtune serve GUARD --rewriter RUN)", "invalid_request_error", "only_flagged")
        before = None
        if guard is not None and (body.only_flagged or body.scores):
            before, problem = await score_all(state, examples)
            if problem:
                return problem
        flagged = [before is None or r is FAILED or
                   verdict_of(guard, r, ex.prompt).get("prompt_harmful", {}).get("flagged", True)
                   for r, ex in zip(before or [None] * len(examples), examples)]
        chosen = [i for i, f in enumerate(flagged) if f or not body.only_flagged]
        rewrites, problem = await score_all(state, [examples[i] for i in chosen], "rewrite")
        if problem:
            return problem
        out = [{"input": ex.prompt, "rewrite": ex.prompt, "rewritten": False} for ex in examples]
        failed = False
        for i, text in zip(chosen, rewrites):
            if text is FAILED:
                failed = True
                out[i].update(rewrite="" if settings.fail == "closed" else examples[i].prompt, failed=True)
            else:
                out[i].update(rewrite=text, rewritten=True)
        if body.scores:
            pairs = [Example(prompt=o["input"], response=o["rewrite"] or ".") for o in out]
            similar, problem = await score_all(state, pairs, "similarity")
            if problem:
                return problem
            for o, sim in zip(out, similar):
                o["similarity"] = None if sim is FAILED else sim
        if body.scores and guard is not None:  # STA: the served guard's toxicity before and after
            after, problem = await score_all(state, [Example(prompt=o["rewrite"] or ".") for o in out])
            if problem:
                return problem
            for o, b, a in zip(out, before, after):
                o["score_before"] = None if b is FAILED else float(b[0]["prompt_harmful"][b[1]])
                o["score_after"] = None if a is FAILED else float(a[0]["prompt_harmful"][a[1]])
        headers = {"X-Guardtune-Failure": settings.fail} if failed else None
        return JSONResponse({"id": f"detox-{uuid.uuid4().hex}", "model": state.model_id, "results": out},
                            headers=headers)


def add_moderation_routes(app: Any, state: State) -> None:
    from fastapi.responses import JSONResponse

    guard, settings = state.guard, state.settings
    closed = settings.fail == "closed"

    @app.post("/v1/moderations")
    async def moderations(body: ModerationRequest):
        examples, problem = texts_of(body, state)
        if problem:
            return problem
        results, problem = await score_all(state, examples)
        if problem:
            return problem
        answers = [failed_result(guard, closed) if r is FAILED else
                   openai_result(guard, verdict_of(guard, r, ex.prompt, body.language))
                   for r, ex in zip(results, examples)]
        headers = {"X-Guardtune-Failure": settings.fail} if any(r is FAILED for r in results) else None
        return JSONResponse({"id": f"modr-{uuid.uuid4().hex}", "model": state.model_id, "results": answers},
                            headers=headers)

    @app.post("/v1/guard")
    async def guard_endpoint(body: GuardRequest):
        for text, param in ((body.prompt, "prompt"), (body.response, "response")):
            if text is not None and (problem := check_text(state, text, param)):
                return problem
        example, problem = make_example(body.prompt, body.response, "prompt")
        if problem:
            return problem
        if body.explain and not getattr(guard, "explains", False):
            return error(400, f"this guard ({state.model_id}) has no span head, so it cannot explain; train one "
                              "with model.span_head=true", "invalid_request_error", "explain")
        results, problem = await score_all(state, [example])
        if problem:
            return problem
        spans = None
        if body.explain:
            found, problem = await score_all(state, [example], "explain")
            if problem:
                return problem
            spans = None if found[0] is FAILED else [{"start": a, "end": b, "text": body.prompt[a:b]}
                                                      for a, b in found[0]]
        thresholds = {output: guard.thresholds[output] for output in guard.labels.outputs}
        if results[0] is FAILED:
            return JSONResponse({"model": state.model_id, **failed_verdict(guard, closed, body.response is not None),
                                 "thresholds": thresholds, "failure": settings.fail},
                                headers={"X-Guardtune-Failure": settings.fail})
        return {"model": state.model_id, **verdict_of(guard, results[0], body.prompt, body.language),
                "thresholds": thresholds,
                "calibrated": guard.thresholds.calibrated, **({"spans": spans} if body.explain else {})}


def add_health_routes(app: Any, state: State) -> None:
    from fastapi.responses import JSONResponse, Response

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if state.batcher is None or not state.batcher.alive:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "model": state.model_id}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        state.metrics.queue.set(state.batcher.pending if state.batcher else 0)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
