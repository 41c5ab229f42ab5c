"""Over-refusal and in-domain AUPRC of one trained run, as a leave-one-out file measures them for its runs.

    python scripts/over_refusal.py runs/general-en-minilm
    python scripts/over_refusal.py RUN --lodo configs/lodo/general-en.yaml --test toxicchat_human:test

The harmless and harmful sets and the recall come from the leave-one-out file's `over_refusal:` section; the
FPR and its interval are computed by the same function as `guardtune lodo`'s over-refusal table. `--test`
adds harmful-prompt AUPRC with a 95% bootstrap interval over its rows. For a variant of a recipe trained with
`guardtune train` (another weight, another seed), so that it need not be run through a whole leave-one-out.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a trained run directory (guardtune train's output_dir)")
    parser.add_argument("--lodo", default="configs/lodo/general-en.yaml", help="the file whose over_refusal: to use")
    parser.add_argument("--test", action="append", default=[], help="a test split for AUPRC (repeatable)")
    parser.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default 1000)")
    args = parser.parse_args(argv)

    import guardtune
    from guardtune.data.loader import load_any
    from guardtune.lodo import auprc_cell, load_lodo, over_refusal, specs_of

    lodo = load_lodo(args.lodo)
    if not lodo.over_refusal:
        parser.error(f"{args.lodo} has no over_refusal: section")
    guard = guardtune.load(args.run)
    j = guard.labels.index("prompt_harmful")

    def scored(specs: list) -> tuple[np.ndarray, np.ndarray]:
        examples = [ex for spec in specs for ex in load_any(spec).examples]
        y = np.array([np.nan if ex.prompt_harmful is None else ex.prompt_harmful for ex in examples], dtype=float)
        return y, guard.score(examples, calibrated=False, show_progress=True).probs[:, j].astype(np.float64)

    y_bad, p_bad = scored(specs_of(lodo.over_refusal["harmful"]))
    y_ok, p_ok = scored(specs_of(lodo.over_refusal["harmless"]))
    out = {"run": args.run, "recall": lodo.over_refusal["recall"],
           "over_refusal": over_refusal(p_bad[y_bad == 1], p_ok[y_ok == 0], lodo.over_refusal["recall"], args.draws)}
    for spec in args.test:
        y, p = scored([spec])
        known = ~np.isnan(y)
        out[spec] = {"rows": int(known.sum()), "harmful": int(y[known].sum()),
                     **auprc_cell(y[known], p[known], args.draws, 2000)}
    json.dump(out, sys.stdout, default=float)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
