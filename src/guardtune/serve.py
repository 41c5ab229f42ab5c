"""The HTTP server: any guard behind an OpenAI-compatible moderation endpoint, with dynamic micro-batching.

    guardtune serve runs/demo --port 8000
    curl -s localhost:8000/v1/moderations -H 'content-type: application/json' -d '{"input": "how do I pick a lock?"}'

Endpoints
- POST /v1/moderations  OpenAI's moderation request and response: `input` is a string or a list of strings
  (or of {"type": "text", "text": ...} objects); each result has `flagged`, `categories`, `category_scores`
  under OpenAI's category names (mapped from S1-S14, see taxonomy.TO_OPENAI) and, as an extension that
  clients ignore, `guardtune` with every task and S-code score.
- POST /v1/guard        {"prompt": ..., "response": ...} -> every task's and category's decision and score, the
  thresholds used and the model id.
- GET /healthz (the process is up), /readyz (the guard is loaded and the batcher accepts work),
  /metrics (Prometheus text format).

Behaviour under load and failure
- Requests from many clients are scored together: the batcher waits at most `max_wait_ms` for up to
  `max_batch` texts, then scores them in one call. With `max_batch=1` every text is scored alone.
- The queue is bounded (`queue_size` texts). A request that does not fit gets 503 with Retry-After; a request
  not answered within `timeout_s` gets 504.
- Texts longer than `max_chars` get 413, lists longer than `max_inputs` 413, malformed bodies 422, all with an
  OpenAI-style error body that says what to change.
- API keys (optional): `Authorization: Bearer <key>`, checked in constant time against every configured key
  (from $GUARDTUNE_API_KEYS, comma-separated, or a file with one key per line). /healthz, /readyz and /metrics
  stay open for probes and scrapers.
- When the guard itself fails, `fail="closed"` answers flagged for everything (safe for the product, noisy),
  `fail="open"` answers not flagged (available, unsafe); either way the response carries
  `X-Guardtune-Failure` and the failure is counted in /metrics. The operator chooses; the default is closed.
- Shutdown (SIGTERM/SIGINT) stops accepting connections, lets requests in flight finish (the batcher drains
  its queue), then exits.
- No endpoint takes a path or a model name to load: the server scores with the one guard it started with.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from guardtune.data.example import Example
from guardtune.guard import CATEGORY_FIELDS, verdict
from guardtune.taxonomy import OPENAI_CATEGORIES, TO_OPENAI


class TextPart(BaseModel):
    type: str = "text"
    text: str


class ModerationRequest(BaseModel):
    input: str | list[str | TextPart]
    model: str | None = None  # accepted for compatibility and ignored: this server has one guard


class GuardRequest(BaseModel):
    prompt: str
    response: str | None = None


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

    def __post_init__(self) -> None:
        if self.fail not in ("closed", "open"):
            raise ValueError(f"fail must be 'closed' or 'open', got {self.fail!r}")
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


class Overloaded(Exception):
    """The queue cannot take the request's texts now."""


@dataclass
class _Item:
    example: Example
    future: Future = field(default_factory=Future)


class Batcher:
    """Texts from concurrent requests -> batches scored on one worker thread (the model is not re-entrant, and a
    batch of 32 costs little more than one on any hardware). Results are (Scores, row) per text."""

    def __init__(self, guard: Any, max_batch: int = 32, max_wait_ms: float = 5.0, queue_size: int = 2048,
                 metrics: Any = None):
        self.guard, self.max_batch, self.max_wait = guard, max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[_Item | None] = queue.Queue()
        self.capacity, self.pending = queue_size, 0
        self.lock = threading.Lock()
        self.metrics = metrics
        self.accepting = True
        self.thread = threading.Thread(target=self._run, name="guardtune-batcher", daemon=True)
        self.thread.start()

    def submit(self, examples: Sequence[Example]) -> list[Future]:
        with self.lock:
            if not self.accepting or self.pending + len(examples) > self.capacity:
                raise Overloaded()
            self.pending += len(examples)
        items = [_Item(ex) for ex in examples]
        for item in items:
            self.queue.put(item)
        return [item.future for item in items]

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.accepting

    def _take(self) -> list[_Item] | None:
        first = self.queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self.queue.get(timeout=max(remaining, 0)) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [item for item in batch if not item.future.cancelled()]
            with self.lock:
                self.pending -= len(batch)
            if not live:
                continue
            if self.metrics:
                self.metrics.batch_size.observe(len(live))
            try:
                scores = self.guard.score([item.example for item in live])
            except Exception as err:  # noqa: BLE001 - every waiting request must hear of it
                for item in live:
                    _resolve(item.future, error=err)
                continue
            for row, item in enumerate(live):
                _resolve(item.future, result=(scores, row))

    def stop(self) -> None:
        """Refuse new work, finish what is queued, stop the worker."""
        with self.lock:
            self.accepting = False
        self.queue.put(None)
        self.thread.join()


def _resolve(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.cancelled():
        return
    try:
        future.set_exception(error) if error is not None else future.set_result(result)
    except Exception:  # noqa: BLE001 - cancelled between the check and the set
        pass


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


def openai_result(guard: Any, v: dict[str, Any]) -> dict[str, Any]:
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
    extension = {task: v[task]["score"] for task in guard.labels.tasks if task in v}
    if codes:
        extension["categories"] = {c: codes[c]["score"] for c in codes}
    return {"flagged": flagged, "categories": categories, "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
            "guardtune": extension}


def failed_result(guard: Any, flagged: bool) -> dict[str, Any]:
    scores = {name: float(flagged) for name in OPENAI_CATEGORIES}
    return {"flagged": flagged, "categories": {name: False for name in OPENAI_CATEGORIES}, "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in OPENAI_CATEGORIES},
            "guardtune": {"error": "the guard failed; this answer is the server's fail policy"}}


def failed_verdict(guard: Any, flagged: bool) -> dict[str, Any]:
    out: dict[str, Any] = {task: {"flagged": flagged, "score": float(flagged), "threshold": None}
                           for task in guard.labels.tasks}
    for field_name in CATEGORY_FIELDS:
        codes = guard.labels.categories(field_name)
        if codes:
            out[field_name] = {c: {"flagged": False, "score": float(flagged)} for c in codes}
    return out


def create_app(guard: Any, settings: ServeSettings | None = None):
    """The FastAPI app for `guard`; the batcher starts and stops with the app's lifespan."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    settings = settings or ServeSettings()
    model_id = settings.model_id or getattr(guard, "name", "") or "guardtune"
    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(guard, settings.max_batch, settings.max_wait_ms, settings.queue_size, metrics)
        yield
        await asyncio.get_running_loop().run_in_executor(None, state["batcher"].stop)  # drain, then stop

    app = FastAPI(title="guardtune", version="1", lifespan=lifespan,
                  description="Content-moderation guard with an OpenAI-compatible /v1/moderations endpoint.")

    def error(status: int, message: str, kind: str, param: str | None = None, headers: dict | None = None):
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                            status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return error(422, f"invalid request body: {problems}", "invalid_request_error")

    @app.middleware("http")
    async def guard_requests(request: Request, call_next):
        start = time.perf_counter()
        path = request.url.path
        if settings.api_keys and path.startswith("/v1/") and not _authorised(request, settings.api_keys):
            response = error(401, "missing or invalid API key: send Authorization: Bearer <key>",
                             "authentication_error", headers={"WWW-Authenticate": "Bearer"})
        else:
            length = request.headers.get("content-length")
            limit = settings.max_chars * settings.max_inputs * 6 + 65_536  # JSON escapes at most 6 bytes a char
            if length is not None and length.isdigit() and int(length) > limit:
                response = error(413, f"request body of {length} bytes is over the limit of {limit}",
                                 "invalid_request_error")
            else:
                response = await call_next(request)
        if path.startswith("/v1/"):
            metrics.requests.labels(path, str(response.status_code)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    async def score_all(examples: list[Example]):
        batcher: Batcher = state["batcher"]
        try:
            futures = batcher.submit(examples)
        except Overloaded:
            return None, error(503, "the server is at capacity; retry shortly", "overloaded",
                               headers={"Retry-After": "1"})
        metrics.queue.set(batcher.pending)
        waiting = [asyncio.wrap_future(f) for f in futures]
        try:
            results = await asyncio.wait_for(asyncio.gather(*waiting), settings.timeout_s)
        except asyncio.TimeoutError:
            for f in futures:
                f.cancel()
            return None, error(504, f"not scored within {settings.timeout_s:g} s", "timeout")
        except Exception:  # noqa: BLE001 - the guard failed: the operator's fail policy answers
            metrics.failures.labels(settings.fail).inc()
            return "failed", None
        metrics.texts.inc(len(examples))
        return results, None

    def check_text(text: str, param: str):
        if len(text) > settings.max_chars:
            return error(413, f"{param} has {len(text)} characters; the limit is {settings.max_chars}",
                         "invalid_request_error", param)
        if not text.strip():
            return error(422, f"{param} is empty", "invalid_request_error", param)
        return None

    def make_example(prompt: str, response: str | None, param: str):
        try:
            return Example(prompt=prompt, response=response), None
        except ValueError as err:
            return None, error(422, f"{param}: {err}", "invalid_request_error", param)

    @app.post("/v1/moderations")
    async def moderations(body: ModerationRequest):
        texts = [body.input] if isinstance(body.input, str) else \
            [part if isinstance(part, str) else part.text for part in body.input]
        if not texts:
            return error(422, "input is an empty list", "invalid_request_error", "input")
        if len(texts) > settings.max_inputs:
            return error(413, f"input has {len(texts)} items; the limit is {settings.max_inputs}",
                         "invalid_request_error", "input")
        examples = []
        for i, text in enumerate(texts):
            param = "input" if isinstance(body.input, str) else f"input[{i}]"
            problem = check_text(text, param)
            example, problem = (None, problem) if problem else make_example(text, None, param)
            if problem:
                return problem
            examples.append(example)
        results, problem = await score_all(examples)
        if problem:
            return problem
        body_id = f"modr-{uuid.uuid4().hex}"
        if results == "failed":
            flagged = settings.fail == "closed"
            return JSONResponse({"id": body_id, "model": model_id,
                                 "results": [failed_result(guard, flagged) for _ in examples]},
                                headers={"X-Guardtune-Failure": settings.fail})
        return {"id": body_id, "model": model_id,
                "results": [openai_result(guard, verdict(guard, scores, row)) for scores, row in results]}

    @app.post("/v1/guard")
    async def guard_endpoint(body: GuardRequest):
        for text, param in ((body.prompt, "prompt"), (body.response, "response")):
            if text is not None and (problem := check_text(text, param)):
                return problem
        example, problem = make_example(body.prompt, body.response, "prompt")
        if problem:
            return problem
        results, problem = await score_all([example])
        if problem:
            return problem
        thresholds = {output: guard.thresholds[output] for output in guard.labels.outputs}
        if results == "failed":
            return JSONResponse({"model": model_id, **failed_verdict(guard, settings.fail == "closed"),
                                 "thresholds": thresholds, "failure": settings.fail},
                                headers={"X-Guardtune-Failure": settings.fail})
        scores, row = results[0]
        return {"model": model_id, **verdict(guard, scores, row), "thresholds": thresholds,
                "calibrated": guard.thresholds.calibrated}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        batcher = state.get("batcher")
        if batcher is None or not batcher.alive:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready", "model": model_id}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        batcher = state.get("batcher")
        metrics.queue.set(batcher.pending if batcher else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _authorised(request: Any, keys: Sequence[str]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    ok = False
    for key in keys:  # every key is compared, in constant time each: no early exit to time
        ok |= hmac.compare_digest(token.strip().encode("utf-8"), key.encode("utf-8"))
    return ok


def serve(guard: Any, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(create_app(guard, settings), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=int(settings.timeout_s) + 5)
