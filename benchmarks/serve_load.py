"""Serving under load: the same guard served twice on 127.0.0.1, with micro-batching on (max batch 32, 5 ms
wait) and off (max batch 1), each hit by a local client at concurrency 1, 8 and 32.

Prints requests/s, p50 and p99 latency and errors for each; target: >= 4x throughput at concurrency 32 with
batching, and zero errors for valid requests. The server runs in its own process (`guardtune serve`); the
client is httpx on asyncio. Texts: ToxicChat test prompts from ../shared/data (the demo set when absent).

  python benchmarks/serve_load.py [--requests 1000] [--run RUN]

Without --run, a MiniLM classifier guard is trained for a few steps into a temporary directory (the weights do
not change the speed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def quick_guard(directory: Path) -> Path:
    from guardtune import config
    from guardtune.train import train

    cfg = config.load(None, [f"output_dir={directory}", "training.max_steps=2", "data.validation=null",
                             "data.test=null"])
    train(cfg, overwrite=True, show_progress=False)
    return directory


def texts() -> list[str]:
    from guardtune.data import load_any

    try:
        examples = load_any("toxicchat_human:test").examples
    except (FileNotFoundError, OSError, ValueError, KeyError):
        examples = load_any("demo:test").examples
    return [ex.prompt[:2000] for ex in examples]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "guardtune", "serve", str(run), "--port", str(port),
                             "--max-batch", str(max_batch), "--queue-size", "100000", "--timeout", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not become ready")


async def load(url: str, pool: list[str], requests: int, concurrency: int) -> dict[str, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            start = time.perf_counter()
            r = await client.post(f"{url}/v1/moderations", json={"input": pool[i % len(pool)]})
            latencies.append(time.perf_counter() - start)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await client.post(f"{url}/v1/moderations", json={"input": "warm-up"})
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"rps": requests / elapsed, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests per (mode, concurrency)")
    parser.add_argument("--run", help="a guard run directory (default: a quickly trained MiniLM guard)")
    parser.add_argument("--concurrency", default="1,8,32")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    levels = [int(c) for c in args.concurrency.split(",")]
    pool = texts()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else quick_guard(Path(tmp) / "guard")
        results = {}
        for mode, max_batch in (("batching off", 1), ("batching on", 32)):
            proc, url = start(run, max_batch)
            try:
                for c in levels:
                    results[mode, c] = asyncio.run(load(url, pool, args.requests, c))
                    r = results[mode, c]
                    print(f"{mode:<13} concurrency {c:>3}: {r['rps']:7.1f} req/s   p50 {r['p50']:7.1f} ms   "
                          f"p99 {r['p99']:7.1f} ms   errors {r['errors']}", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    top = max(levels)
    ratio = results["batching on", top]["rps"] / results["batching off", top]["rps"]
    errors = sum(r["errors"] for r in results.values())
    print(f"throughput at concurrency {top}: batching on / off = {ratio:.1f}x (target >= 4x); "
          f"errors for valid requests: {errors} (target 0)")


if __name__ == "__main__":
    main()
