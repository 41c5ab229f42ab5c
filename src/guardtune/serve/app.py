"""The app: FastAPI with OpenAI-style errors for every client error, optional Bearer keys (constant time), size
limits, Prometheus metrics, and the batcher's lifespan. Routes live in routes.py."""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guardtune.guard import Guard, Rewriter
from guardtune.serve.batcher import (Batcher, chat_handler, explain_handler, rewrite_handler, score_handler,
                                     similarity_handler)


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 32  # texts scored together at most (1: no batching)
    max_wait_ms: float = 5.0  # how long the first text of a batch waits for company
    queue_size: int = 2048  # texts waiting at most; beyond, 503 with Retry-After
    timeout_s: float = 30.0  # per request; beyond, 504
    max_chars: int = 32_000  # per text; beyond, 413
    max_inputs: int = 128  # texts per request; beyond, 413
    fail: str = "closed"  # closed | open: the answer when the guard itself errors
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    model_id: str = ""
    similarity_model: str = "sentence-transformers/all-MiniLM-L6-v2"  # /v1/detox SIM (loaded at start-up)
    chat_mode: str = "block"  # /v1/chat/completions (a dual-path guard): block | annotate (see kinds/dual_path.py)
    max_new_tokens: int = 512  # /v1/chat/completions: the most tokens an answer may have (max_tokens is capped)

    def __post_init__(self) -> None:
        if self.fail not in ("closed", "open"):
            raise ValueError(f"fail must be 'closed' or 'open', got {self.fail!r}")
        if self.chat_mode not in ("block", "annotate"):
            raise ValueError(f"chat_mode must be 'block' or 'annotate', got {self.chat_mode!r}")
        if self.max_batch < 1 or self.queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")


def read_api_keys(path: str | None = None) -> tuple[str, ...]:
    """Keys from a file (one per line, # comments) or, without one, from $GUARDTUNE_API_KEYS (comma-separated)."""
    if path:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        keys = [k.strip() for k in os.environ.get("GUARDTUNE_API_KEYS", "").split(",") if k.strip()]
    return tuple(keys)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("guardtune_requests_total", "HTTP requests", ["endpoint", "code"],
                                registry=self.registry)
        self.latency = Histogram("guardtune_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("guardtune_batch_size", "texts scored per model call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.texts = Counter("guardtune_texts_total", "texts scored", registry=self.registry)
        self.failures = Counter("guardtune_guard_failures_total", "requests answered by the fail policy",
                                ["policy"], registry=self.registry)
        self.queue = Gauge("guardtune_queue_texts", "texts waiting to be scored", registry=self.registry)


def error(status: int, message: str, kind: str, param: str | None = None, headers: dict | None = None):
    """An OpenAI-style error response."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                        status_code=status, headers=headers)


class State:
    """What routes share: the guard, the settings, the metrics and (while the app runs) the batcher."""

    def __init__(self, guard: Guard | None, settings: ServeSettings, rewriter: Rewriter | None = None):
        self.guard, self.rewriter, self.settings, self.metrics = guard, rewriter, settings, Metrics()
        self.model_id = settings.model_id or getattr(guard or rewriter, "name", "") or "guardtune"
        self.batcher: Batcher | None = None


def create_app(guard: Guard | None, settings: ServeSettings | None = None, rewriter: Rewriter | None = None):
    """The FastAPI app for `guard` (the moderation routes) and/or `rewriter` (/v1/detox); the batcher starts and
    stops with the app's lifespan, one model thread for both."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from guardtune.serve.routes import add_routes

    if guard is None and rewriter is None:
        raise ValueError("nothing to serve: give a guard, a rewriter, or both")
    state = State(guard, settings or ServeSettings(), rewriter)
    handlers = {**({"score": score_handler(guard)} if guard is not None else {}),
                **({"chat": chat_handler(guard, state.settings.chat_mode)} if can_chat(guard) else {}),
                **({"explain": explain_handler(guard)} if getattr(guard, "explains", False) else {}),
                **({"rewrite": rewrite_handler(rewriter), "similarity": similarity_handler(state.settings.similarity_model)}
                   if rewriter is not None else {})}

    @asynccontextmanager
    async def lifespan(app):
        s = state.settings
        if "similarity" in handlers:  # load the sentence encoder now, not in the first request's time budget
            await asyncio.get_running_loop().run_in_executor(None, handlers["similarity"], [])
        state.batcher = Batcher(handlers, s.max_batch, s.max_wait_ms, s.queue_size, state.metrics)
        yield
        await asyncio.get_running_loop().run_in_executor(None, state.batcher.stop)  # drain, then stop

    app = FastAPI(title="guardtune", version="1", lifespan=lifespan,
                  description="Content-moderation guard with OpenAI-compatible /v1/moderations (and, for a "
                              "dual-path guard, /v1/chat/completions) endpoints.")
    add_error_handlers(app)
    add_limits(app, state)
    add_routes(app, state)
    app.add_middleware(BodyCheck, limit=body_limit(state.settings), keys=state.settings.api_keys)  # outermost
    return app


def can_chat(guard: Guard | None) -> bool:
    """A guard that is also a chat model (the dual-path kind) serves /v1/chat/completions."""
    return callable(getattr(guard, "respond_batch", None))


def body_limit(settings: ServeSettings) -> int:
    return settings.max_chars * settings.max_inputs * 6 + 65_536  # JSON escapes take at most 6 bytes a char


class BodyCheck:
    """ASGI middleware for POST bodies: read at most `limit` bytes (chunked bodies too: the limit holds while
    reading, not only by Content-Length), then check the body is UTF-8 JSON that is not nested absurdly deep
    and has no absurd numbers, answering OpenAI-style 4xx errors; the app then reads the checked body."""

    def __init__(self, app: Any, limit: int, keys: Sequence[str] = ()):
        self.app, self.limit, self.keys = app, limit, keys

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        if self.keys and not authorised(_Headers(scope), self.keys):  # refused unread (the app answers 401)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await _send_error(send, 413, f"request body over the limit of {self.limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        problem = check_json(body) if body else None
        if problem:
            return await _send_error(send, 400, problem)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class _Headers:
    """Just enough of a request for `authorised`: its headers, from an ASGI scope."""

    def __init__(self, scope: dict):
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def check_json(body: bytes) -> str | None:
    """Why a request body is not acceptable JSON, or None."""
    import json

    from guardtune.data.reading import JSONRejected, loads

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"the body is not UTF-8 (byte {err.start}: {body[err.start:err.start + 1]!r}); send UTF-8 JSON"
    try:
        loads(text.removeprefix("\ufeff"))
    except JSONRejected as err:
        return f"invalid JSON body: {err}"
    except json.JSONDecodeError as err:
        return f"invalid JSON body: {err.msg} at line {err.lineno} column {err.colno}"
    except (ValueError, RecursionError) as err:
        return f"invalid JSON body: {str(err)[:200]}"
    return None


async def _send_error(send: Any, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": status}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def add_error_handlers(app: Any) -> None:
    """Every error a client can cause is an OpenAI-style body with a 4xx status; anything else is a 500 with no
    detail (the traceback stays in the server's log)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return error(422, f"invalid request body: {problems}"[:2000], "invalid_request_error")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error(exc.status_code, str(exc.detail), kind, headers=getattr(exc, "headers", None))


def add_limits(app: Any, state: State) -> None:
    """Authentication on /v1/, the body-size limit, and request metrics."""
    from fastapi import Request

    settings, metrics = state.settings, state.metrics

    @app.middleware("http")
    async def guard_requests(request: Request, call_next):
        start = time.perf_counter()
        path = request.url.path
        if settings.api_keys and path.startswith("/v1/") and not authorised(request, settings.api_keys):
            response = error(401, "missing or invalid API key: send Authorization: Bearer <key>",
                             "authentication_error", headers={"WWW-Authenticate": "Bearer"})
        else:
            length = request.headers.get("content-length")
            limit = body_limit(settings)
            if length is not None and length.isdigit() and int(length) > limit:
                response = error(413, f"request body of {length} bytes is over the limit of {limit}",
                                 "invalid_request_error")
            else:
                response = await call_next(request)
        if path.startswith("/v1/"):
            metrics.requests.labels(path, str(response.status_code)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response


def authorised(request: Any, keys: Sequence[str]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    ok = False
    for key in keys:  # every key is compared, in constant time each: no early exit to time
        ok |= hmac.compare_digest(token.strip().encode("utf-8"), key.encode("utf-8"))
    return ok


def serve(guard: Guard | None, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", rewriter: Rewriter | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(guard, settings, rewriter), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=int(settings.timeout_s) + 5)
