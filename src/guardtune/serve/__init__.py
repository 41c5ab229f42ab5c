"""The HTTP server (app.py: app, auth, limits; batcher.py: typed jobs on one model thread; routes.py: the
endpoints): any guard behind an OpenAI-compatible moderation endpoint, with dynamic micro-batching.

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
- When the guard itself fails on a text, `fail="closed"` answers flagged for it (safe for the product, noisy),
  `fail="open"` answers not flagged (available, unsafe); either way the response carries
  `X-Guardtune-Failure` and the failure is counted in /metrics. The operator chooses; the default is closed.
  A failing batch is retried text by text, so only the text that fails gets the policy's answer: other texts
  of the request, and other requests that shared the batch, are scored normally.
- Shutdown (SIGTERM/SIGINT) stops accepting connections, lets requests in flight finish (the batcher drains
  its queue), then exits.
- No endpoint takes a path or a model name to load: the server scores with the one guard it started with.
"""

from guardtune.serve.app import ServeSettings, create_app, read_api_keys, serve
from guardtune.serve.batcher import Batcher, Job

__all__ = ["Batcher", "Job", "ServeSettings", "create_app", "read_api_keys", "serve"]
