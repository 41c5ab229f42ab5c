"""A study's results: results.csv (one row per cell, arm, test set and metric), results.json (that, plus the
search, every run's figures and the failures), report.md and plots/.

Quality is the mean over seeds at each arm's chosen search candidate, with a 95% two-level bootstrap interval
(rows and seeds; see `stats`). Every arm is compared with the reference on the same rows; p-values are also
given Holm-adjusted over all the comparisons of the report, so "significant" means it across the table.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from guardtune.metrics import percentile_interval, resample_weights
from guardtune.study import stats
from guardtune.study.runner import ARRAYS, cascade_runs, read_result, run_dir, selection, write_json
from guardtune.study.markdown import HEADLINES, MEAN, PER_ROW, QUALITY, headline, label, render
from guardtune.study.spec import Run, Study

class Arm:
    """One arm in one cell at its chosen candidate: its finished seeds' results and arrays."""

    def __init__(self, study: Study, cell: str, name: str, candidate: str | None, search: dict[str, Any],
                 runs: list[Run] | None = None):
        """`runs`: the arm's runs (default: its chosen candidate at every seed; a cascade arm gives its own)."""
        self.cell, self.name, self.candidate, self.search = cell, name, candidate, search
        self.results: list[dict[str, Any]] = []
        self.arrays: list[dict[str, np.ndarray]] = []
        if runs is None:
            runs = [study.run(cell, name, candidate, seed) for seed in study.seeds] if candidate is not None else []
        for run in runs:
            result = read_result(study, run)
            if result and result.get("status") == "ok":
                with np.load(run_dir(study, run) / ARRAYS) as data:
                    self.arrays.append({k: data[k] for k in data.files})
                self.results.append(result)

    def has(self, dataset: str, output: str, metric: str) -> bool:
        suffix = metric if metric in PER_ROW else "y"
        return bool(self.arrays) and all(f"{dataset}|{output}|{suffix}" in a for a in self.arrays)

    def values(self, dataset: str, output: str, metric: str, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per seed: the metric on all rows (seeds,) and on each resample (seeds x draws)."""
        points, draws = [], []
        for a in self.arrays:
            if metric in PER_ROW:  # a mean of per-row values (Jaccard; a rewriter's J, STA, SIM, FL)
                y = p = a[f"{dataset}|{output}|{metric}"]
                t = 0.0
            else:
                y, p, t = a[f"{dataset}|{output}|y"], a[f"{dataset}|{output}|p"], float(a[f"{dataset}|{output}|t"][0])
            fn = stats.METRICS[metric]
            points.append(fn(y, p, t, np.ones((1, len(y))))[0])
            draws.append(fn(y, p, t, W))
        return np.array(points), np.array(draws)

    def cost(self) -> dict[str, Any]:
        r = self.results
        if not r:
            return {}
        trainable, total = r[0].get("trainable_params"), r[0].get("params")
        def avg(key: str) -> float | None:
            known = [x[key] for x in r if x.get(key) is not None]
            return float(np.mean(known)) if known else None

        return {"trainable_params": trainable, "trainable_pct": 100 * trainable / total if trainable and total else None,
                "train_seconds": avg("train_seconds"), "train_examples_per_s": avg("train_examples_per_s"),
                "peak_memory_mb": float(max(x["peak_memory_mb"] for x in r)),
                "inference_ms_per_example": avg("inference_ms_per_example"), "seeds_ok": len(r),
                **({"decided": self.decided()} if any("decided" in t for x in r for t in x["tests"].values()) else {})}

    def decided(self) -> dict[str, list[float]]:
        """A cascade arm's share of each test set's rows decided by each stage, mean over seeds."""
        out: dict[str, list[float]] = {}
        for name in self.results[0]["tests"]:
            shares = [np.array(x["tests"][name]["decided"]) / max(x["tests"][name]["n"], 1) for x in self.results
                      if "decided" in x["tests"].get(name, {})]
            if shares:
                out[name] = np.mean(shares, axis=0).tolist()
        return out


def datasets(study: Study, arms: list[Arm]) -> dict[str, int]:
    """The test sets and their sizes; every finished run must have scored exactly the same rows."""
    seen: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for arm in arms:
        for result in arm.results:
            for name, info in result["tests"].items():
                if seen.setdefault(name, info["ids"]) != info["ids"]:
                    raise ValueError(f"test set {name!r}: runs scored different rows (was its spec changed "
                                     f"mid-study?); see {study.output_dir / 'runs'}")
                sizes[name] = info["n"]
    return {name: sizes[name] for name in study.test if name in sizes}


def compare_cell(study: Study, arms: list[Arm], tests: dict[str, int]) -> list[dict[str, Any]]:
    """Rows for one cell: every arm x test set x metric, and the mean over test sets, against the reference."""
    reference = next((a for a in arms if a.name == study.reference), None)
    rows: list[dict[str, Any]] = []
    for output, metric in QUALITY:
        present = [d for d in tests if any(a.has(d, output, metric) for a in arms)]
        per_arm: dict[str, list[tuple[str, float, np.ndarray]]] = {}
        for dataset in present:
            first = next(a.arrays[0] for a in arms if a.has(dataset, output, metric))
            n = len(first[f"{dataset}|{output}|{metric if metric in PER_ROW else 'y'}"])
            positives = None if metric in PER_ROW else int(first[f"{dataset}|{output}|y"].sum())
            W = resample_weights(n, study.bootstrap, stats.stable_seed(arm_cell(arms), dataset, output))
            ref = (_summarise(study, reference, dataset, output, metric, W)
                   if reference and reference.has(dataset, output, metric) else None)
            for arm in arms:
                if not arm.has(dataset, output, metric):
                    continue
                mine = _summarise(study, arm, dataset, output, metric, W)
                rows.append(_row(arm, dataset, output, metric, n, positives, mine, ref, arm is reference))
                per_arm.setdefault(arm.name, []).append((dataset, mine[0], mine[1]))
        if (output, metric) in HEADLINES and len(present) > 1:
            rows.extend(_mean_rows(study, arms, reference, per_arm, output, metric, present))
    return rows


def arm_cell(arms: list[Arm]) -> str:
    return arms[0].cell if arms else ""


def _summarise(study: Study, arm: Arm, dataset: str, output: str, metric: str, W: np.ndarray):
    points, per_seed = arm.values(dataset, output, metric, W)
    draws = stats.seed_draws(per_seed, stats.stable_seed(arm.name, dataset, output, metric))
    return float(np.nanmean(points)) if not np.isnan(points).all() else None, draws, points


def _row(arm: Arm, dataset: str, output: str, metric: str, n: int, positives: int | None, mine, ref,
         is_reference: bool) -> dict[str, Any]:
    point, draws, points = mine
    row = {"cell": arm.cell, "arm": arm.name, "candidate": arm.candidate, "dataset": dataset, "output": output,
           "metric": metric, "n": n, "positives": positives, "seeds": len(points), "mean": point, "ci": percentile_interval(draws),
           "seed_sd": float(np.nanstd(points, ddof=1)) if np.sum(~np.isnan(points)) > 1 else None}
    if ref is not None and not is_reference and ref[0] is not None and point is not None:
        diff = draws - ref[1]
        row.update(difference=point - ref[0], difference_ci=percentile_interval(diff), p_value=stats.p_value(diff))
    return row


def _mean_rows(study, arms, reference, per_arm, output, metric, present) -> list[dict[str, Any]]:
    """The headline: the mean over the test sets where every arm has the metric defined."""
    common = [d for d in present if all(any(x[0] == d and x[1] is not None for x in per_arm.get(a.name, []))
                                        for a in arms if a.arrays)]
    if len(common) < 2:
        return []
    averaged = {}
    for arm in arms:
        parts = [x for x in per_arm.get(arm.name, []) if x[0] in common]
        if len(parts) == len(common):
            averaged[arm.name] = (float(np.mean([x[1] for x in parts])), np.mean([x[2] for x in parts], axis=0))
    rows = []
    for arm in arms:
        if arm.name not in averaged:
            continue
        point, draws = averaged[arm.name]
        row = {"cell": arm.cell, "arm": arm.name, "candidate": arm.candidate, "dataset": MEAN, "output": output,
               "metric": metric, "n": len(common), "seeds": len(arm.results), "mean": point,
               "ci": percentile_interval(draws), "seed_sd": None, "datasets": common}
        if reference is not None and arm is not reference and reference.name in averaged:
            ref_point, ref_draws = averaged[reference.name]
            diff = draws - ref_draws
            row.update(difference=point - ref_point, difference_ci=percentile_interval(diff), p_value=stats.p_value(diff))
        rows.append(row)
    return rows


def collect(study: Study) -> dict[str, Any]:
    chosen = selection(study)
    cells: dict[str, list[Arm]] = {}
    for (cell, name), (candidate, search) in chosen.items():
        cells.setdefault(cell, []).append(Arm(study, cell, name, candidate, search))
    cascades, _ = cascade_runs(study)
    for cell, _ in study.cells:
        for name in study.cascades:
            mine = [r for r in cascades if (r.cell, r.arm) == (cell, name)]
            cells.setdefault(cell, []).append(Arm(study, cell, name, "", {}, mine))
    failures, runs = [], []
    for run in study.search_runs() + [r for (c, a), (cand, _) in chosen.items() if cand is not None
                                      for r in study.seed_runs(c, a, cand)] + cascades:
        result = read_result(study, run)
        if result is None:
            continue
        entry = {"key": run.key, "dir": run.dirname, "status": result.get("status")}
        if result.get("status") == "ok":
            entry.update({k: result.get(k) for k in ("train_seconds", "train_examples_per_s", "peak_memory_mb",
                                                       "inference_ms_per_example", "trainable_params", "best")})
        else:
            entry["error"] = result.get("error")
            failures.append(entry)
        runs.append(entry)
    rows: list[dict[str, Any]] = []
    tests: dict[str, int] = {}
    for arms in cells.values():
        sizes = datasets(study, arms)
        tests.update(sizes)
        rows.extend(compare_cell(study, arms, sizes))
    for row, adjusted in zip(rows, stats.holm([r.get("p_value") for r in rows])):
        if "p_value" in row:
            row["p_holm"] = adjusted
    costs = {f"{arm.cell}/{arm.name}" if arm.cell else arm.name: arm.cost() for arms in cells.values() for arm in arms}
    search = {f"{arm.cell}/{arm.name}" if arm.cell else arm.name: {"chosen": arm.candidate, "validation": arm.search}
              for arms in cells.values() for arm in arms}
    return {"study": study.name, "source": str(study.source) if study.source else None, "reference": study.reference,
            "select": study.select, "seeds": study.seeds, "threshold": study.threshold, "bootstrap": study.bootstrap,
            "tests": tests, "search": search, "costs": costs, "rows": rows, "runs": runs, "failures": failures,
            "planned_runs": study.total_runs}


CSV_COLUMNS = ("cell", "arm", "candidate", "dataset", "output", "metric", "n", "positives", "seeds", "mean", "ci_low", "ci_high",
               "seed_sd", "difference", "difference_ci_low", "difference_ci_high", "p_value", "p_holm",
               "trainable_params", "trainable_pct", "train_seconds", "train_examples_per_s", "peak_memory_mb",
               "inference_ms_per_example")


def write_csv(results: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in results["rows"]:
            key = f"{row['cell']}/{row['arm']}" if row["cell"] else row["arm"]
            ci, dci = row.get("ci") or (None, None), row.get("difference_ci") or (None, None)
            writer.writerow({**row, **results["costs"].get(key, {}), "ci_low": ci[0], "ci_high": ci[1],
                             "difference_ci_low": dci[0], "difference_ci_high": dci[1]})


def write_report(study: Study, make_plots: bool = True) -> dict[str, Any]:
    out = study.output_dir
    out.mkdir(parents=True, exist_ok=True)
    results = collect(study)
    write_json(out / "results.json", results)
    write_csv(results, out / "results.csv")
    plots = _plots(results, out / "plots") + _grid_plot(study, results, out / "plots") \
        if make_plots and results["rows"] else []
    (out / "report.md").write_text(render(study, results, plots), encoding="utf-8")
    return results


def _plots(results: dict[str, Any], folder: Path) -> list[Path]:
    """Quality against trainable parameters and against training time, one panel per headline metric, a
    point per arm with its 95% interval."""
    from guardtune.plots import _plt, _save

    plt = _plt()
    paths = []
    cells = sorted({r["cell"] for r in results["rows"]})
    metrics = headline(results)
    for x_key, x_label, name in (("trainable_params", "trainable parameters", "quality_vs_params"),
                                 ("train_seconds", "training wall time (s)", "quality_vs_time")):
        fig, axes = plt.subplots(len(cells), len(metrics), figsize=(5.2 * len(metrics), 3.8 * len(cells)),
                                 squeeze=False)
        for i, cell in enumerate(cells):
            for j, (output, metric) in enumerate(metrics):
                ax = axes[i][j]
                rows = _headline_rows(results, cell, output, metric)
                for row in rows:
                    key = f"{cell}/{row['arm']}" if cell else row["arm"]
                    x = results["costs"].get(key, {}).get(x_key)
                    if x is None or row["mean"] is None:
                        continue
                    lo, hi = row["ci"] or (row["mean"], row["mean"])
                    ax.errorbar([x], [row["mean"]], yerr=[[row["mean"] - lo], [hi - row["mean"]]], fmt="o", capsize=3)
                    ax.annotate(row["arm"], (x, row["mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
                if x_key == "trainable_params":
                    ax.set_xscale("log")
                where = rows[0]["dataset"] if rows else ""
                ax.set_title(f"{cell + ': ' if cell else ''}{label(output, metric)} ({where})", fontsize=9)
                ax.set_xlabel(x_label)
                ax.set_ylabel(label(output, metric))
                ax.grid(alpha=0.3)
        paths.append(_save(fig, folder / f"{name}.png"))
    return paths


def _grid_plot(study: Study, results: dict[str, Any], folder: Path) -> list[Path]:
    """With one numeric grid axis (training rows, rank, length...): quality against it, a line per arm with
    95% intervals, a panel per headline metric and test set (a learning curve, for a grid over data size)."""
    if len(study.grid) != 1:
        return []
    (key, values), = study.grid.items()
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return []
    from guardtune.plots import _plt, _save

    plt = _plt()
    labels = [cell for cell, _ in study.cells]
    metrics = headline(results)
    sets = sorted({r["dataset"] for r in results["rows"] if r["dataset"] != MEAN}) + \
        ([MEAN] if any(r["dataset"] == MEAN for r in results["rows"]) else [])
    arms = list(dict.fromkeys(r["arm"] for r in results["rows"]))
    found = {(r["cell"], r["arm"], r["dataset"], r["output"], r["metric"]): r for r in results["rows"]}
    fig, axes = plt.subplots(len(sets), len(metrics), figsize=(5.2 * len(metrics), 3.4 * len(sets)), squeeze=False)
    for i, dataset in enumerate(sets):
        for j, (output, metric) in enumerate(metrics):
            ax = axes[i][j]
            for arm in arms:
                points = []
                for x, cell in zip(values, labels):
                    row = found.get((cell, arm, dataset, output, metric))
                    if row is not None and row["mean"] is not None:
                        points.append((x, row["mean"], *(row["ci"] or (row["mean"], row["mean"]))))
                if points:
                    xs, ys, lo, hi = map(np.array, zip(*points))
                    ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], fmt="o-", capsize=3, label=arm)
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(values, [str(v) for v in values])
            ax.set_title(f"{label(output, metric)} ({dataset})", fontsize=9)
            ax.set_xlabel(key)
            ax.set_ylabel(label(output, metric))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return [_save(fig, folder / "quality_vs_grid.png")]


def _headline_rows(results: dict[str, Any], cell: str, output: str, metric: str) -> list[dict[str, Any]]:
    rows = [r for r in results["rows"] if r["cell"] == cell and r["output"] == output and r["metric"] == metric]
    mean = [r for r in rows if r["dataset"] == MEAN]
    if mean:
        return mean
    first = rows[0]["dataset"] if rows else None
    return [r for r in rows if r["dataset"] == first]

