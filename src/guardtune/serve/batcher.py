"""The batcher: work from concurrent requests, in batches, on one model thread (the model is not re-entrant, and
a batch of 32 costs little more than one on any hardware).

Work is typed: a `Job` names what to run (score, rewrite, similarity, chat) and carries one input (an Example,
or for chat a `ChatTurn`). Jobs of one type are batched together and run by that type's handler. When a batch
fails, each of its jobs is retried alone, so only the job that fails gets the failure: other texts of the
same request, and other requests that shared the batch, are answered normally.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from guardtune.data.example import Example
from guardtune.guard import Guard

Handler = Callable[[list[Any]], list[Any]]  # inputs -> one result per input, in order


class Overloaded(Exception):
    """The queue cannot take the request's jobs now."""


@dataclass
class Job:
    type: str  # a key of the batcher's handlers
    example: Any  # what the handler takes: an Example, or a ChatTurn for "chat"
    future: Future = field(default_factory=Future)


def score_handler(guard: Guard) -> Handler:
    """Scoring jobs: each result is (Scores of the batch, row), and for a cascade also the stage that decided."""
    def run(examples: list[Example]) -> list[Any]:
        scores = guard.score(examples)
        decided = getattr(guard, "decided", None)
        if decided is not None:
            return [(scores, row, int(decided[row])) for row in range(len(examples))]
        return [(scores, row) for row in range(len(examples))]

    return run


def explain_handler(guard: Any) -> Handler:
    """Span jobs (a guard with a span head): each result is the prompt's [start, end) spans."""
    def run(examples: list[Example]) -> list[Any]:
        return guard.explain(examples)

    return run


def rewrite_handler(rewriter: Any) -> Handler:
    """Rewriting jobs: each result is the rewrite (a string)."""
    def run(examples: list[Example]) -> list[Any]:
        return list(rewriter.rewrite(examples))

    return run


def similarity_handler(model_name: str) -> Handler:
    """Content-similarity jobs (detox SIM): each example carries the input as its prompt and the rewrite as its
    response; the result is their cosine. The sentence encoder loads on the first call (the app makes one, empty,
    at start-up)."""
    encoder: list[Any] = []

    def run(examples: list[Example]) -> list[Any]:
        from guardtune.detox import SentenceEncoder

        if not encoder:
            encoder.append(SentenceEncoder(model_name))
        if not examples:  # a warm-up call
            return []
        return [float(x) for x in encoder[0].similarity([ex.prompt for ex in examples],
                                                         [ex.response or "" for ex in examples])]

    return run


@dataclass(frozen=True)
class ChatTurn:
    """A conversation to answer (ending with a user turn) and how to decode: temperature None is the model's own
    generation config, 0 greedy, above 0 sampling (with top_p)."""
    messages: tuple[dict[str, str], ...]
    max_new_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None

    def decoding(self) -> dict[str, Any]:
        if self.temperature is None:
            return {} if self.top_p is None else {"top_p": self.top_p}
        if self.temperature == 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, **({"top_p": self.top_p} if self.top_p else {})}


def chat_handler(guard: Any, mode: str) -> Handler:
    """Chat jobs for a dual-path guard: each result is its `respond` record. Turns decoded alike run as one
    batched generation."""
    def run(turns: list[ChatTurn]) -> list[Any]:
        results: list[Any] = [None] * len(turns)
        groups: dict[tuple, list[int]] = {}
        for i, turn in enumerate(turns):
            groups.setdefault((turn.max_new_tokens, turn.temperature, turn.top_p), []).append(i)
        for index in groups.values():
            first = turns[index[0]]
            out = guard.respond_batch([list(turns[i].messages) for i in index], mode, first.max_new_tokens,
                                      **first.decoding())
            for i, result in zip(index, out):
                results[i] = result
        return results

    return run


class Batcher:
    """Jobs -> batches of one type, run on one worker thread by that type's handler."""

    def __init__(self, handlers: dict[str, Handler], max_batch: int = 32, max_wait_ms: float = 5.0,
                 queue_size: int = 2048, metrics: Any = None):
        self.handlers, self.max_batch, self.max_wait = handlers, max_batch, max_wait_ms / 1000
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.capacity, self.pending = queue_size, 0
        self.lock = threading.Lock()
        self.metrics = metrics
        self.accepting = True
        self.held: Job | None = None  # a job of another type than the batch being gathered: it starts the next
        self.thread = threading.Thread(target=self._run, name="guardtune-batcher", daemon=True)
        self.thread.start()

    def submit(self, jobs: Sequence[Job]) -> list[Future]:
        unknown = {job.type for job in jobs} - set(self.handlers)
        if unknown:
            raise ValueError(f"no handler for job type(s) {sorted(unknown)}; this batcher runs {sorted(self.handlers)}")
        with self.lock:
            if not self.accepting or self.pending + len(jobs) > self.capacity:
                raise Overloaded()
            self.pending += len(jobs)
        for job in jobs:
            self.queue.put(job)
        return [job.future for job in jobs]

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.accepting

    def _take(self) -> list[Job] | None:
        first, self.held = (self.held, None) if self.held is not None else (self.queue.get(), None)
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self.queue.get(timeout=max(remaining, 0)) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)  # stop after this batch
                break
            if job.type != first.type:
                self.held = job
                break
            batch.append(job)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [job for job in batch if not job.future.cancelled()]
            with self.lock:
                self.pending -= len(batch)
            if not live:
                continue
            if self.metrics:
                self.metrics.batch_size.observe(len(live))
            self._execute(live)

    def _execute(self, jobs: list[Job]) -> None:
        handler = self.handlers[jobs[0].type]
        try:
            results = handler([job.example for job in jobs])
        except Exception as err:  # noqa: BLE001 - find the job that fails: each one alone
            if len(jobs) == 1:
                _resolve(jobs[0].future, error=err)
                return
            for job in jobs:
                self._execute([job])
            return
        for job, result in zip(jobs, results):
            _resolve(job.future, result=result)

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
