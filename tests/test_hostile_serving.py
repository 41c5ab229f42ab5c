"""The server under hostile requests: any body gets an answer under 500 (fuzzed), OpenAI-style errors for
malformed bodies, the size limit held while reading a chunked body, and the run's name (not its path)."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_serve import guard, server  # noqa: F401 - the module's guard fixture and server helper


@pytest.fixture(scope="module")
def url(guard):  # noqa: F811
    from guardtune.baselines import DeleteRewriter
    from guardtune.data.example import Example

    rewriter = DeleteRewriter(min_count=1).fit([Example(prompt="you damn fool", rewrite="you fool")])
    with server(guard, rewriter=rewriter, max_chars=200, max_inputs=4) as (address, _):  # /v1/detox too
        yield address


def is_openai_error(response: httpx.Response) -> bool:
    body = response.json()
    return set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]) \
        and body["error"]["code"] == response.status_code


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=10)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["input", "model", "prompt", "response"]), json_values, max_size=3)
    .map(lambda v: json.dumps(v).encode()),
    st.lists(st.text(alphabet=st.characters(codec=None), max_size=20), max_size=5)
    .map(lambda texts: json.dumps({"input": texts}).encode()),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(["/v1/moderations", "/v1/guard", "/v1/detox"]))
def test_any_body_gets_an_answer_under_500(url, body, path):
    r = httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert is_openai_error(r), r.text


@pytest.mark.parametrize("body,words", [
    ('{"input": "café"}'.encode("latin-1"), "not UTF-8"),
    (b'{"input": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nested"),  # under the size limit, over the depth
    (b'{"input": "x", "model": ' + b"9" * 20_000 + b"}", "digits"),
    (b'{"input": "x", "input": "y"}', "duplicate key"),
    (b'{"input": NaN}', "not a JSON value"),
    (b'{"input": "unterminated', "invalid JSON"),
])
def test_malformed_bodies_get_openai_style_400s(url, body, words):
    for path in ("/v1/moderations", "/v1/detox"):
        r = httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and is_openai_error(r) and words in r.json()["error"]["message"]


def test_a_lone_surrogate_is_refused_with_its_index_not_scored(url):
    body = b'{"input": ["fine", "bad \\ud800 text"]}'
    for path in ("/v1/moderations", "/v1/detox"):
        r = httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["param"] == "input[1]"


def test_a_chunked_body_is_refused_at_the_limit(url):
    def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(80):
            yield b"x" * 65536

    r = httpx.post(f"{url}/v1/moderations", content=chunks(), headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code == 413 and is_openai_error(r)


def test_the_body_check_stops_reading_at_the_limit():
    import asyncio

    from guardtune.serve.app import BodyCheck

    read = {"chunks": 0}
    sent: list[dict] = []

    async def receive():  # a client streaming 150 MB in 64 KiB chunks
        read["chunks"] += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": read["chunks"] < 2400}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # never reached
        raise AssertionError("the app must not see an oversized body")

    check = BodyCheck(app, limit=1_000_000)
    asyncio.run(check({"type": "http", "method": "POST", "headers": []}, receive, send))
    assert sent[0]["status"] == 413
    assert read["chunks"] * 65536 <= 1_000_000 + 65536  # read up to the limit and one chunk, not 150 MB


def test_responses_name_the_run_not_its_path(tmp_path):
    import guardtune
    from guardtune.baselines import TfidfGuard
    from guardtune.data import load_any

    run = TfidfGuard().fit(load_any("demo:train").examples).save(tmp_path / "secret-place" / "my-guard")
    loaded = guardtune.load(run)
    with server(loaded) as (address, _):
        body = httpx.post(f"{address}/v1/moderations", json={"input": "hello"}).json()
        guard_body = httpx.post(f"{address}/v1/guard", json={"prompt": "hello"}).json()
    assert body["model"] == guard_body["model"] == "my-guard" and "secret-place" not in json.dumps(body)
