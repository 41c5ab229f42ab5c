"""A TF-IDF -> MiniLM confidence cascade against the MiniLM guard alone, both measured in one run.

  stage 0: TF-IDF + logistic regression, fitted on the MiniLM run's own training rows (its holdout excluded)
  stage 1: the MiniLM guard of RUN (default: configs/cpu/toxicchat-minilm-lora.yaml's run)
  bands:   fitted on the MiniLM run's holdout (validation) rows (never on the test set): by default rule
           quality, the least cost whose AUPRC is within --tolerance of MiniLM's alone; --rule rate --target
           0.3 escalates 30%; band shape low (TF-IDF only clears what it is sure is safe) or two-sided
  targets: on the test set, AUPRC and F1 within 0.005 of MiniLM alone, at most 30% of examples sent to MiniLM,
           at <= 35% of MiniLM's cost per example (timed: the cascade's score() and MiniLM's, same examples)

Latency is also measured one request at a time (p50/p95/p99 over 300 requests): the cascade's median is the
cheap stage's, its tail the escalated requests that pay for both.

Also on a second test set with both classes (--other, default ethos:all, out of ToxicChat's domain), with the
same stages and bands. Intervals: 95% percentile bootstrap over test rows; differences paired.

  guardtune train configs/cpu/toxicchat-minilm-lora.yaml        # about 10 minutes on 2 cores, once
  python benchmarks/cascade.py [--guard runs/toxicchat-minilm-lora] [--other ethos:all] [--json out.json]
  python benchmarks/cascade.py --rule rate --target 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def measure(guard, examples, repeats: int = 3) -> float:
    """Milliseconds per example of guard.score over all examples (median of repeats, a warm-up first)."""
    guard.score(examples[:16])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        guard.score(examples)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000 / len(examples)


def latencies(guard, examples, n: int = 300) -> dict[str, float]:
    """Per-request latency, one example per call as an unbatched client would send it: p50, p95 and p99 in ms
    over the first n examples (a warm-up call first). A cascade's tail is its escalated requests, which pay for
    both stages."""
    guard.score(examples[:1])
    times = []
    for ex in examples[:n]:
        start = time.perf_counter()
        guard.score([ex])
        times.append((time.perf_counter() - start) * 1000)
    return {f"p{q}": float(np.percentile(times, q)) for q in (50, 95, 99)}


def quality(examples, probs, threshold: float, seed: int = 0) -> dict:
    from guardtune import metrics

    y = np.array([ex.prompt_harmful for ex in examples])
    m = metrics.binary(y, probs, threshold)
    ci = metrics.bootstrap_binary(y, probs, threshold, 1000, seed)
    return {"n": len(y), "positives": int(y.sum()), "auprc": m["auprc"], "auprc_ci": ci.get("auprc"),
            "f1": m["f1"], "f1_ci": ci.get("f1")}


def paired(examples, a, b, threshold: float) -> dict:
    from guardtune import metrics

    y = np.array([ex.prompt_harmful for ex in examples])
    out = {}
    for name, draws in (("auprc", metrics.auprc_draws),
                        ("f1", lambda y_, p, W: metrics.f1_draws(y_, p >= threshold, W))):
        result = metrics.paired_bootstrap(draws, y, b, a, 1000, 0)  # a - b: the cascade minus the guard alone
        out[name] = result
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guard", default="runs/toxicchat-minilm-lora")
    parser.add_argument("--test", default="toxicchat_human:test")
    parser.add_argument("--other", default="ethos:all", help="a second test set with both classes ('' for none)")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--rule", choices=("quality", "rate", "budget"), default="quality")
    parser.add_argument("--target", type=float, help="rule rate: share escalated; budget: ms per example")
    parser.add_argument("--shape", choices=("low", "two-sided"), default="low")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import guardtune
    from guardtune import config
    from guardtune.baselines import TfidfGuard
    from guardtune.cascade import Cascade, fit
    from guardtune.data import load_any
    from guardtune.data.splits import grouped_split
    from guardtune.train import HOLDOUT

    run = Path(args.guard)
    if not (run / "config.yaml").is_file():
        raise SystemExit(f"{run} is not a trained run: guardtune train configs/cpu/toxicchat-minilm-lora.yaml")
    cfg = config.load(run / "config.yaml")
    if cfg.data.validation != "holdout":
        raise SystemExit("this benchmark reproduces the run's holdout split; the run must use validation: holdout")
    train_all = load_any(cfg.data.train).examples
    train = grouped_split(train_all, "train", cfg.training.seed, HOLDOUT)
    validation = grouped_split(train_all, "validation", cfg.training.seed, HOLDOUT)
    minilm = guardtune.load(run)
    tfidf = TfidfGuard(name="tfidf").fit(train)
    task = "prompt_harmful"
    threshold = minilm.thresholds[task]
    print(f"stages: tfidf (fitted on {len(train)} rows) -> {minilm.name}; bands fitted on {len(validation)} "
          f"holdout rows, rule {args.rule} (target {args.target}, AUPRC tolerance {args.tolerance}), shape {args.shape}")
    fitted = fit([tfidf, minilm], validation, args.rule, args.target, costs=None, metric="auprc",
                 tolerance=args.tolerance, shape=args.shape)
    c = fitted.chosen
    print(f"  fit: {c['escalated']:.1%} escalated on validation, band {fitted.bands[0][task]}, measured costs "
          f"{c['costs_ms'][0]:.3f} / {c['costs_ms'][1]:.3f} ms/example")
    results = {"fit": {k: v for k, v in c.items()}, "bands": fitted.bands, "sets": {}}
    for spec in [args.test] + ([args.other] if args.other else []):
        examples = [ex for ex in load_any(spec).examples if ex.prompt_harmful is not None]
        cascade = Cascade([tfidf, minilm], fitted.bands, name="cascade")
        cascaded = cascade.score(examples)[task]
        escalated = float((cascade.decided == 1).mean())
        alone = minilm.score(examples)[task]
        cost_alone, cost_cascade = measure(minilm, examples), measure(cascade, examples)
        lat_alone, lat_cascade = latencies(minilm, examples), latencies(cascade, examples)
        q_alone, q_cascade = quality(examples, alone, threshold), quality(examples, cascaded, threshold)
        diff = paired(examples, cascaded, alone, threshold)
        results["sets"][spec] = {"minilm": {**q_alone, "ms_per_example": cost_alone, "latency_ms": lat_alone},
                                 "cascade": {**q_cascade, "ms_per_example": cost_cascade, "escalated": escalated,
                                             "latency_ms": lat_cascade},
                                 "difference": diff, "cost_ratio": cost_cascade / cost_alone}
        print(f"{spec} ({q_alone['n']} rows, {q_alone['positives']} harmful):")
        for name, q, cost in (("MiniLM alone", q_alone, cost_alone), ("cascade", q_cascade, cost_cascade)):
            print(f"  {name:<13} AUPRC {q['auprc']:.3f} {_ci(q['auprc_ci'])}  F1 {q['f1']:.3f} {_ci(q['f1_ci'])}  "
                  f"{cost:.3f} ms/example")
        for name, lat in (("MiniLM alone", lat_alone), ("cascade", lat_cascade)):
            print(f"  {name:<13} one request at a time: p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, "
                  f"p99 {lat['p99']:.2f} ms")
        print(f"  cascade - alone: AUPRC {_diff(diff['auprc'])}, F1 {_diff(diff['f1'])} (targets: within 0.005)")
        print(f"  escalated to MiniLM: {escalated:.1%} (target <= 30%); cost {cost_cascade / cost_alone:.1%} of "
              f"MiniLM's (target <= 35%)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")


def _ci(interval) -> str:
    return "[-]" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _diff(d: dict) -> str:
    return f"{d['difference']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"


if __name__ == "__main__":
    main()
