"""The demo's guard-vs-TF-IDF comparison with a bootstrap over test *templates* instead of test rows.

    python scripts/demo_template_bootstrap.py runs/demo [more runs ...]

The demo's test rows come in groups: every fill of one template shares its group, and rows of one template are
not independent draws. The demo prints intervals over rows; this resamples whole templates (with the paired
difference resampled the same way), which is the interval that says whether the ranking would hold on other
templates. AUPRC of prompt_harmful, as the demo prints it; the TF-IDF baseline is fitted on demo:train as the
demo fits it. Several runs (seeds) are pooled by averaging their scores' AUPRC per resample.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from sklearn.metrics import average_precision_score


def main() -> int:
    import guardtune
    from guardtune.baselines import TfidfGuard
    from guardtune.data import load_any

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="demo run directories (guardtune demo)")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    test = [ex for ex in load_any("demo:test").examples if ex.prompt_harmful is not None]
    y = np.array([ex.prompt_harmful for ex in test])
    tfidf = TfidfGuard(name="tfidf").fit(load_any("demo:train").examples)
    j = tfidf.labels.index("prompt_harmful")
    baseline = tfidf.score(test, calibrated=False).probs[:, j]
    guards = [guardtune.load(run) for run in args.runs]
    scores = [g.score(test, calibrated=False).probs[:, g.labels.index("prompt_harmful")] for g in guards]

    groups = sorted({ex.group for ex in test})
    rows_of = {g: np.array([i for i, ex in enumerate(test) if ex.group == g]) for g in groups}
    rng = np.random.default_rng(args.seed)
    draws = {"guard": [], "tfidf": []}
    for _ in range(args.draws):
        rows = np.concatenate([rows_of[g] for g in rng.choice(groups, size=len(groups))])
        if len(set(y[rows])) < 2:
            continue
        draws["guard"].append(np.mean([average_precision_score(y[rows], s[rows]) for s in scores]))
        draws["tfidf"].append(average_precision_score(y[rows], baseline[rows]))
    point = {"guard": np.mean([average_precision_score(y, s) for s in scores]),
             "tfidf": average_precision_score(y, baseline)}
    g, t = np.array(draws["guard"]), np.array(draws["tfidf"])
    low, high = np.percentile(t - g, [2.5, 97.5])
    print(f"demo:test prompt_harmful: {len(test)} rows in {len(groups)} templates ({int(y.sum())} harmful); "
          f"{len(args.runs)} guard run(s); {len(g)} template resamples")
    for name, d in (("MiniLM guard", g), ("TF-IDF baseline", t)):
        key = "guard" if d is g else "tfidf"
        lo, hi = np.percentile(d, [2.5, 97.5])
        print(f"  {name:16s} AUPRC {point[key]:.3f} [{lo:.3f}, {hi:.3f}]")
    print(f"  TF-IDF - guard   {point['tfidf'] - point['guard']:+.3f} [{low:+.3f}, {high:+.3f}], "
          f"share of resamples with TF-IDF ahead {np.mean(t >= g):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
