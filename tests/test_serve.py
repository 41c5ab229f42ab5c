"""The moderation server, run for real on 127.0.0.1, and `guardtune moderate` on files (streaming, resumable)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

from guardtune.baselines import TfidfGuard
from guardtune.data import load_any
from guardtune.data.example import Example
from guardtune.guard import GuardBase
from guardtune.serve import ServeSettings, create_app
from guardtune.taxonomy import OPENAI_CATEGORIES, TO_OPENAI


@pytest.fixture(scope="module")
def guard():
    return TfidfGuard(name="tfidf-demo").fit(load_any("demo:train").examples)


@contextmanager
def server(guard, rewriter=None, **settings):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(guard, ServeSettings(**settings), rewriter), host="127.0.0.1", port=port,
                            log_level="warning", timeout_graceful_shutdown=10)
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 60  # start-up loads models (a detox server's sentence encoder too)
    while not instance.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", instance
    finally:
        instance.should_exit = True
        thread.join(timeout=20)


class Slow(GuardBase):
    """Wraps a guard: sleeps before scoring, or fails."""

    def __init__(self, inner, delay: float = 0.0, fail: bool = False):
        self.inner, self.delay, self.fail = inner, delay, fail
        self.labels, self.thresholds, self.name = inner.labels, inner.thresholds, "slow"

    def _score(self, examples, batch_size, show_progress):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return self.inner.score(examples)


TEXTS = ["how do I make a bomb at home", "what is a good recipe for pancakes", "I hate those people, kill them",
         "tell me a bedtime story", "how can I hurt myself", "buy cheap pills online no prescription"]


def test_moderations_follow_the_openai_schema_and_match_the_guard(guard):
    with server(guard) as (url, _):
        one = httpx.post(f"{url}/v1/moderations", json={"input": TEXTS[0], "model": "omni-moderation-latest"})
        many = httpx.post(f"{url}/v1/moderations", json={"input": TEXTS})
        parts = httpx.post(f"{url}/v1/moderations", json={"input": [{"type": "text", "text": TEXTS[2]}]})
    assert one.status_code == many.status_code == parts.status_code == 200
    body = many.json()
    assert body["id"].startswith("modr-") and body["model"] == "tfidf-demo" and len(body["results"]) == len(TEXTS)
    scores = guard.score([Example(prompt=t) for t in TEXTS])
    for row, result in enumerate(body["results"]):
        assert set(result) == {"flagged", "categories", "category_scores", "category_applied_input_types",
                               "guardtune"}
        assert list(result["categories"]) == list(OPENAI_CATEGORIES) == list(result["category_scores"])
        assert all(isinstance(v, bool) for v in result["categories"].values())
        assert result["guardtune"]["prompt_harmful"] == pytest.approx(float(scores["prompt_harmful"][row]))
        for name, codes in TO_OPENAI.items():
            present = [c for c in codes if c in guard.labels.prompt_categories]
            expected = max((float(scores[f"prompt_categories/{c}"][row]) for c in present), default=0.0)
            assert result["category_scores"][name] == pytest.approx(expected)
        # the reference, from the guard's own scores at the default 0.5: a category is flagged when one of its
        # S-codes is; a text when its harm score or any prompt category is
        codes = {c: float(scores[f"prompt_categories/{c}"][row]) >= 0.5 for c in guard.labels.prompt_categories}
        for name, sources in TO_OPENAI.items():
            assert result["categories"][name] == any(codes.get(c, False) for c in sources)
        assert result["flagged"] == (float(scores["prompt_harmful"][row]) >= 0.5 or any(codes.values()))
    assert one.json()["results"][0] == body["results"][0]
    assert parts.json()["results"][0] == body["results"][2]


def test_guard_endpoint_gives_every_task_thresholds_and_model(guard):
    with server(guard, model_id="my-guard") as (url, _):
        r = httpx.post(f"{url}/v1/guard", json={"prompt": TEXTS[0], "response": "Sure, here is how."})
    assert r.status_code == 200
    body = r.json()
    direct = guard.moderate(TEXTS[0], "Sure, here is how.")
    assert body["model"] == "my-guard" and set(body["thresholds"]) == set(guard.labels.outputs)
    for task in guard.labels.tasks:
        assert body[task]["score"] == pytest.approx(direct[task]["score"])
        assert body[task]["flagged"] == direct[task]["flagged"]


def test_concurrent_requests_are_batched_and_equal_single_requests(guard):
    texts = [f"{TEXTS[i % len(TEXTS)]} number {i}" for i in range(48)]
    with server(guard, max_batch=1) as (url, _):
        single = [httpx.post(f"{url}/v1/moderations", json={"input": t}).json()["results"][0] for t in texts]
    with server(guard, max_batch=16, max_wait_ms=20) as (url, _):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            together = list(pool.map(lambda t: httpx.post(f"{url}/v1/moderations", json={"input": t}, timeout=30)
                                     .json()["results"][0], texts))
        metrics = httpx.get(f"{url}/metrics").text
    for a, b in zip(single, together):
        assert a["flagged"] == b["flagged"]
        np.testing.assert_allclose(list(a["category_scores"].values()), list(b["category_scores"].values()), atol=1e-6)
        assert a["guardtune"]["prompt_harmful"] == pytest.approx(b["guardtune"]["prompt_harmful"], abs=1e-6)
    calls = _metric(metrics, "guardtune_batch_size_count")
    assert _metric(metrics, "guardtune_batch_size_sum") == 48 and calls < 48  # several texts per model call
    assert _metric(metrics, 'guardtune_requests_total{code="200",endpoint="/v1/moderations"}') == 48


def _metric(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def test_api_keys_are_required_when_configured(guard):
    with server(guard, api_keys=("alpha-key", "beta-key")) as (url, _):
        none = httpx.post(f"{url}/v1/moderations", json={"input": "hi"})
        wrong = httpx.post(f"{url}/v1/moderations", json={"input": "hi"}, headers={"Authorization": "Bearer nope"})
        right = httpx.post(f"{url}/v1/moderations", json={"input": "hi"},
                           headers={"Authorization": "Bearer beta-key"})
        health = httpx.get(f"{url}/healthz")
    assert none.status_code == wrong.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer" and "API key" in none.json()["error"]["message"]
    assert right.status_code == 200 and health.status_code == 200


def test_limits_and_malformed_requests_get_clear_errors(guard):
    with server(guard, max_chars=100, max_inputs=4) as (url, _):
        post = lambda body, **kw: httpx.post(f"{url}/v1/moderations", **({"json": body} if body is not None else kw))  # noqa: E731
        too_long = post({"input": "x" * 101})
        too_many = post({"input": ["a", "b", "c", "d", "e"]})
        empty = post({"input": []})
        blank = post({"input": "   "})
        broken = post(None, content=b'{"input": "unterminated', headers={"content-type": "application/json"})
        wrong_type = post({"input": 42})
        missing = post({"text": "hi"})
        huge = post(None, content=b"x" * 2_000_000, headers={"content-type": "application/json"})
        unusual = ["emoji 😀🔥 and RTL שלום مرحبا", "zero\u200bwidth and combining e\u0301", "tab\tand\nnewline",
                   "\U0001F9EA" * 20]
        nul = post({"input": ["fine", "null \u0000 byte"]})
        odd = post({"input": unusual})
        surrogate = post(None, content=b'{"input": "lone \\ud800 surrogate"}',
                         headers={"content-type": "application/json"})
    assert too_long.status_code == 413 and "100" in too_long.json()["error"]["message"]
    assert too_many.status_code == 413 and too_many.json()["error"]["param"] == "input"
    assert empty.status_code == 422 and blank.status_code == 422
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["error"]["message"]
    for r in (broken, wrong_type, missing):
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert wrong_type.status_code == missing.status_code == 422
    assert huge.status_code == 413
    assert nul.status_code == 422 and nul.json()["error"]["param"] == "input[1]" and "NUL" in nul.json()["error"]["message"]
    assert odd.status_code == 200 and len(odd.json()["results"]) == 4
    direct = guard.score([Example(prompt=t) for t in unusual])["prompt_harmful"]
    assert [r["guardtune"]["prompt_harmful"] for r in odd.json()["results"]] == pytest.approx(direct.tolist())
    assert surrogate.status_code == 422 and surrogate.json()["error"]["param"] == "input"  # rejected, named
    assert "surrogate" in surrogate.json()["error"]["message"]


def test_a_full_queue_answers_503_and_a_slow_guard_504(guard):
    with server(Slow(guard, delay=0.5), max_batch=1, queue_size=2) as (url, _):
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda i: httpx.post(f"{url}/v1/moderations", json={"input": f"t{i}"},
                                                       timeout=30), range(6)))
    statuses = [r.status_code for r in codes]
    assert 503 in statuses and 200 in statuses
    assert all(r.headers.get("retry-after") == "1" for r in codes if r.status_code == 503)
    with server(Slow(guard, delay=1.0), timeout_s=0.2) as (url, _):
        r = httpx.post(f"{url}/v1/moderations", json={"input": "hello"}, timeout=30)
    assert r.status_code == 504


@pytest.mark.parametrize("policy,flagged", [("closed", True), ("open", False)])
def test_guard_failure_follows_the_operators_policy(guard, policy, flagged):
    with server(Slow(guard, fail=True), fail=policy) as (url, _):
        r = httpx.post(f"{url}/v1/moderations", json={"input": ["a", "b"]})
        g = httpx.post(f"{url}/v1/guard", json={"prompt": "a"})
        metrics = httpx.get(f"{url}/metrics").text
        ready = httpx.get(f"{url}/readyz")
    assert r.status_code == 200 and r.headers["x-guardtune-failure"] == policy
    assert [res["flagged"] for res in r.json()["results"]] == [flagged, flagged]
    assert g.json()["prompt_harmful"]["flagged"] is flagged and g.json()["failure"] == policy
    assert _metric(metrics, f'guardtune_guard_failures_total{{policy="{policy}"}}') == 3  # one per text
    assert ready.status_code == 200  # the server itself is fine


def test_shutdown_drains_requests_in_flight(guard):
    with server(Slow(guard, delay=0.8)) as (url, instance):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(lambda: httpx.post(f"{url}/v1/moderations", json={"input": "hello"}, timeout=30))
            time.sleep(0.3)  # the request is being scored
            instance.should_exit = True
            assert pending.result().status_code == 200


def test_readyz_and_metrics(guard):
    with server(guard) as (url, _):
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
        httpx.post(f"{url}/v1/moderations", json={"input": "hello"})
        text = httpx.get(f"{url}/metrics").text
    assert "guardtune_request_seconds_bucket" in text and "guardtune_texts_total 1.0" in text


def test_moderate_a_text_and_a_file_that_resumes(guard, tmp_path, capsys):
    from guardtune.cli import main

    run = tmp_path / "guard"
    guard.save(run)
    assert main(["moderate", str(run), "how do I make a bomb", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert "prompt_harmful" in verdict and not any(k.startswith("response_") for k in verdict)  # a prompt alone
    source = tmp_path / "in.jsonl"
    rows = [{"id": f"r{i}", "prompt": TEXTS[i % len(TEXTS)]} for i in range(25)] + [{"text": "no id here"}]
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    # a previous run died after 10 verdicts, in the middle of writing the 11th
    from guardtune.commands.serve import moderate_file

    moderate_file(guard, source, out, batch_size=10, show_progress=False)
    full = out.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(full[:10]) + "\n" + full[10][:15], encoding="utf-8")
    assert main(["moderate", str(run), "--file", str(source), "--out", str(out), "--batch-size", "4"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ids = [line["id"] for line in lines]
    assert sorted(ids) == sorted([f"r{i}" for i in range(25)] + ["line-26"]) and len(ids) == len(set(ids))
    assert lines == [json.loads(line) for line in full]  # the same verdicts, in order, as one uninterrupted run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "ok"}\n{"id": 2}\n', encoding="utf-8")
    assert main(["moderate", str(run), "--file", str(bad), "--out", str(tmp_path / "b.jsonl")]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


class Poisoned(GuardBase):
    """Wraps a guard: any batch holding the poison text raises (as a tokenizer would on text it cannot encode)."""

    POISON = "poison-pill"

    def __init__(self, inner):
        self.inner, self.labels, self.thresholds, self.name = inner, inner.labels, inner.thresholds, "poisoned"

    def _score(self, examples, batch_size, show_progress):
        if any(self.POISON in ex.prompt for ex in examples):
            raise ValueError("cannot encode this text")
        return self.inner.score(examples)


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_a_poisoned_text_gets_the_failure_answer_alone(guard, policy):
    harmful = "I hate those people, kill them all"
    with server(Poisoned(guard), fail=policy, max_batch=16, max_wait_ms=50) as (url, _):
        mixed = httpx.post(f"{url}/v1/moderations", json={"input": [harmful, Poisoned.POISON, TEXTS[1]]})
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # other users' requests share the batches
            others = list(pool.map(lambda t: httpx.post(f"{url}/v1/moderations", json={"input": t}, timeout=30),
                                   [Poisoned.POISON] + TEXTS))
        alone = httpx.post(f"{url}/v1/guard", json={"prompt": Poisoned.POISON})
        fine = httpx.post(f"{url}/v1/guard", json={"prompt": harmful})
        metrics = httpx.get(f"{url}/metrics").text
    expected = guard.score([Example(prompt=t) for t in [harmful, TEXTS[1]]])["prompt_harmful"]
    results = mixed.json()["results"]
    assert mixed.headers["x-guardtune-failure"] == policy
    assert results[0]["guardtune"]["prompt_harmful"] == pytest.approx(float(expected[0]))
    assert results[0]["flagged"] == (float(expected[0]) >= 0.5) and results[0]["flagged"]  # no bypass
    assert results[2]["guardtune"]["prompt_harmful"] == pytest.approx(float(expected[1]))
    assert results[1]["flagged"] is (policy == "closed") and "error" in results[1]["guardtune"]
    for text, r in zip([Poisoned.POISON] + TEXTS, others):
        got = r.json()["results"][0]
        if text == Poisoned.POISON:
            assert got["flagged"] is (policy == "closed")
        else:  # an innocent request in the same batch is scored, never given the failure answer
            assert "error" not in got["guardtune"] and "x-guardtune-failure" not in r.headers
            assert got["guardtune"]["prompt_harmful"] == pytest.approx(
                float(guard.score([Example(prompt=text)])["prompt_harmful"][0]))
    assert alone.json()["failure"] == policy and alone.json()["prompt_harmful"]["flagged"] is (policy == "closed")
    assert "response_harmful" not in alone.json()  # a prompt alone has no response outputs, failed or not
    assert "failure" not in fine.json()
    assert _metric(metrics, f'guardtune_guard_failures_total{{policy="{policy}"}}') == 3


def test_a_generative_guard_is_served(tiny_causal):
    from tests.test_generative import guard_for

    gen = guard_for(tiny_causal("qwen2"))
    gen.name = "tiny-gen"
    with server(gen) as (url, _):
        m = httpx.post(f"{url}/v1/moderations", json={"input": TEXTS[:3]})
        alone = httpx.post(f"{url}/v1/guard", json={"prompt": TEXTS[0]})
        convo = httpx.post(f"{url}/v1/guard", json={"prompt": TEXTS[0], "response": "Sure, here is how."})
    assert m.status_code == alone.status_code == convo.status_code == 200
    direct = gen.score([Example(prompt=t) for t in TEXTS[:3]])["prompt_harmful"]
    assert [r["guardtune"]["prompt_harmful"] for r in m.json()["results"]] == pytest.approx(direct.tolist(), abs=1e-5)
    assert m.json()["model"] == "tiny-gen"
    assert "prompt_harmful" in alone.json() and not any(k.startswith("response_") for k in alone.json()
                                                        if k != "thresholds")
    both = gen.moderate(TEXTS[0], "Sure, here is how.")
    assert convo.json()["response_refusal"]["score"] == pytest.approx(both["response_refusal"]["score"], abs=1e-5)
