"""Detoxification metrics, the field's own: reference-based (sacreBLEU BLEU and chrF against every reference,
ROUGE-1/2/L, self-BLEU against the input) and the joint score per sample, averaged, with bootstrap intervals:

- STA, style accuracy: 1 when a toxicity guard scores the output below its threshold (any guardtune guard);
- SIM, content similarity: cosine of sentence embeddings of input and output (mean-pooled MiniLM by default);
- FL, fluency: a fluency guard's verdict when one is given; otherwise chrF against the references, as in
  PAN 2024's multilingual detoxification task.

The protocol is named in every result: `paradetox` (J = STA x SIM x FL with a fluency guard) or `pan24`
(J = STA x SIM x chrF).

    result = evaluate_rewrites(examples, outputs, style_guard=guard)   # {"bleu", "chrf", "sta", "sim", "j", ...}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from guardtune.data.example import Example

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError as err:
        raise RuntimeError("detox metrics need sacrebleu: pip install 'guardtune[detox]'") from err
    return sacrebleu


def references_of(example: Example) -> list[str]:
    refs = example.meta.get("references") if example.meta else None
    return [str(r) for r in refs] if refs else ([example.rewrite] if example.rewrite is not None else [])


def _streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacreBLEU's reference streams (None where an item has fewer)."""
    width = max((len(r) for r in refs), default=0)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


def corpus_bleu(outputs: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """sacreBLEU corpus BLEU (0-100) against every reference of each item."""
    return float(_sacrebleu().corpus_bleu(list(outputs), _streams(refs), force=True).score)  # data as given


def corpus_chrf(outputs: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """sacreBLEU corpus chrF (0-100) against every reference of each item."""
    return float(_sacrebleu().corpus_chrf(list(outputs), _streams(refs)).score)


def sentence_chrf(outputs: Sequence[str], refs: Sequence[Sequence[str]]) -> np.ndarray:
    """chrF of each output against its own references, in [0, 1]."""
    chrf = _sacrebleu().CHRF()
    return np.array([chrf.sentence_score(o, list(r)).score / 100 if r else np.nan for o, r in zip(outputs, refs)])


def rouge(outputs: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures (the `rouge-score` package), each output against the best of its
    references, averaged over items."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise RuntimeError("detox metrics need rouge-score: pip install 'guardtune[detox]'") from err
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score_multi(list(r), o) for o, r in zip(outputs, refs) if r]
    return {name: float(np.mean([s[name].fmeasure for s in scores])) if scores else None
            for name in ("rouge1", "rouge2", "rougeL")}


def self_bleu(outputs: Sequence[str], inputs: Sequence[str]) -> float:
    """BLEU of the outputs against the inputs: how much was kept (100: copied)."""
    return float(_sacrebleu().corpus_bleu(list(outputs), [list(inputs)], force=True).score)


class SentenceEncoder:
    """Mean-pooled, normalised token states of an encoder (all-MiniLM-L6-v2's own recipe), batched."""

    def __init__(self, name: str = DEFAULT_ENCODER, batch_size: int = 64, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        from guardtune.models.backbone import resolve

        path = resolve(name)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.batch_size, self.max_length = batch_size, max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        from guardtune.encoding import score_batches

        ids = self.tokenizer([t if t.strip() else "." for t in texts], truncation=True,
                             max_length=self.max_length)["input_ids"]
        width = self.model.config.hidden_size

        @torch.inference_mode()
        def forward(batch: dict) -> np.ndarray:
            hidden = self.model(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
            return torch.nn.functional.normalize(pooled, dim=-1).numpy()

        return score_batches(ids, self.tokenizer.pad_token_id or 0, forward, width, self.batch_size,
                             self.max_length)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Cosine per pair, clipped to [0, 1] (a negative cosine keeps no content)."""
        return np.clip(np.sum(self.encode(a) * self.encode(b), axis=1), 0.0, 1.0)


def style_accuracy(outputs: Sequence[str], guard: Any, task: str = "prompt_harmful") -> np.ndarray:
    """1 where the guard does not flag the output as toxic (at its own threshold), else 0."""
    texts = [o if o.strip() else "." for o in outputs]
    scores = guard.score([Example(prompt=t) for t in texts])[task]
    return (scores < guard.thresholds[task]).astype(np.float64)


def interval(values: np.ndarray, n: int, seed: int) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of a mean of per-sample values."""
    from guardtune.metrics import percentile_interval, weight_chunks

    values = values[~np.isnan(values)]
    if not len(values) or not n:
        return None
    draws = np.concatenate([(W @ values) / W.sum(axis=1) for W in weight_chunks(len(values), n, seed)])
    return percentile_interval(draws)


def evaluate_rewrites(examples: Sequence[Example], outputs: Sequence[str], style_guard: Any = None,
                      encoder: SentenceEncoder | None = None, fluency_guard: Any = None, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Every detox metric for `outputs` (one per example), with per-sample J and 95% intervals."""
    inputs = [ex.prompt for ex in examples]
    refs = [references_of(ex) for ex in examples]
    with_refs = [i for i, r in enumerate(refs) if r]
    result: dict[str, Any] = {"n": len(examples), "with_references": len(with_refs),
                              "protocol": "paradetox" if fluency_guard is not None else "pan24",
                              "self_bleu": self_bleu(outputs, inputs)}
    if with_refs:
        result["bleu"] = corpus_bleu([outputs[i] for i in with_refs], [refs[i] for i in with_refs])
        result["chrf"] = corpus_chrf([outputs[i] for i in with_refs], [refs[i] for i in with_refs])
        result.update(rouge([outputs[i] for i in with_refs], [refs[i] for i in with_refs]))
    per: dict[str, np.ndarray] = {}
    per["sim"] = (encoder or SentenceEncoder()).similarity(inputs, outputs)
    per["fl"] = style_accuracy(outputs, fluency_guard, "prompt_harmful") if fluency_guard is not None else \
        sentence_chrf(outputs, refs)
    if style_guard is not None:
        per["sta"] = style_accuracy(outputs, style_guard)
        per["j"] = per["sta"] * per["sim"] * per["fl"]
    for key, values in per.items():
        defined = values[~np.isnan(values)]
        result[key] = float(defined.mean()) if len(defined) else None
        result[f"{key}_ci95"] = interval(values, n_boot, seed)
    result["per_sample"] = {k: [None if np.isnan(x) else float(x) for x in v] for k, v in per.items()}
    return result


def human_references(examples: Sequence[Example]) -> tuple[list[int], list[Example], list[str]]:
    """The human row: each item's first reference as the output, scored against the item's other references.
    Items with a single reference cannot be scored so and are left out (say how many). Returns the kept
    items' positions, the items with their first reference removed, and those first references: a system
    scored on the same items against the same references is under the human row's protocol."""
    index, kept, outputs = [], [], []
    for i, ex in enumerate(examples):
        refs = references_of(ex)
        if len(refs) >= 2:
            index.append(i)
            kept.append(ex.replace(rewrite=refs[1], meta={**ex.meta, "references": refs[1:]}))
            outputs.append(refs[0])
    return index, kept, outputs


def compare_rewriters(systems: dict[str, Any], datasets: Sequence[Any], style_guard: Any = None,
                      encoder: Any = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every system (and the copy baseline and the human references) on every dataset, with the same STA and
    SIM models: per system, all items against every reference, and the human row's items against the
    references other than the first (the table to compare with the human row)."""
    from guardtune.baselines import CopyRewriter

    systems = {**systems, "copy": systems.get("copy") or CopyRewriter()}
    encoder = encoder or SentenceEncoder()
    results: dict[str, Any] = {"datasets": {}}
    for loaded in datasets:
        examples = [ex for ex in loaded.examples if references_of(ex)] or list(loaded.examples)
        index, kept, human = human_references(examples)
        rows: dict[str, Any] = {}
        for name, system in systems.items():
            outputs = system.rewrite(examples)
            rows[name] = evaluate_rewrites(examples, outputs, style_guard, encoder, n_boot=n_boot, seed=seed)
            rows[name]["examples"] = showcase(examples, outputs, rows[name])
            if kept:
                same = evaluate_rewrites(kept, [outputs[i] for i in index], style_guard, encoder, n_boot=n_boot,
                                         seed=seed)
                rows[name]["on_human_items"] = {k: v for k, v in same.items() if k != "per_sample"}
        if kept:
            rows["human references"] = evaluate_rewrites(kept, human, style_guard, encoder, n_boot=n_boot, seed=seed)
            rows["human references"]["on_human_items"] = {k: v for k, v in rows["human references"].items()
                                                          if k != "per_sample"}
        for row in rows.values():
            row.pop("per_sample", None)
        results["datasets"][loaded.label] = {"n": len(examples), "human_items": len(kept),
                                             "left_out_of_human_row": len(examples) - len(kept), "systems": rows}
    return results


def write_results(results: dict[str, Any], out: Any, make_plots: bool = True) -> None:
    """detox_metrics.json, detox_report.md and (per dataset) plots/detox-<dataset>.png."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if make_plots:
        results["plots"] = [str(plot(label, data, out / "plots").relative_to(out))
                            for label, data in results["datasets"].items()]
    (out / "detox_metrics.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "detox_report.md").write_text(render(results), encoding="utf-8")


def plot(label: str, data: dict[str, Any], folder: Any) -> Any:
    """J, STA, SIM and FL per system, with 95% intervals, on the human row's items (where every system and the
    human references are scored alike), else on all items."""
    from pathlib import Path

    from guardtune.plots import _plt, _save
    from guardtune.report import slug

    plt = _plt()
    metrics = ("j", "sta", "sim", "fl")
    systems = data["systems"]
    fig, ax = plt.subplots(figsize=(3.6 + 1.9 * len(metrics), 3.6))
    width = 0.8 / max(len(systems), 1)
    for k, (name, row) in enumerate(systems.items()):
        row = row.get("on_human_items") or row
        means = [row.get(m) if row.get(m) is not None else np.nan for m in metrics]
        low = [m - (row.get(f"{k_}_ci95") or (m, m))[0] if not np.isnan(m) else 0 for k_, m in zip(metrics, means)]
        high = [(row.get(f"{k_}_ci95") or (m, m))[1] - m if not np.isnan(m) else 0 for k_, m in zip(metrics, means)]
        ax.bar(np.arange(len(metrics)) + k * width, means, width, capsize=2, label=name,
               yerr=[np.maximum(low, 0), np.maximum(high, 0)])  # an interval may sit a rounding error off its mean
    ax.set_xticks(np.arange(len(metrics)) + width * (len(systems) - 1) / 2, [m.upper() for m in metrics])
    ax.set_ylim(0, 1.05)
    where = "the items with 2+ references" if any(r.get("on_human_items") for r in systems.values()) else "all items"
    ax.set_title(f"{label}: detox scores on {where} (95% intervals)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(folder) / f"detox-{slug(label)}.png")


def showcase(examples: Sequence[Example], outputs: Sequence[str], result: dict[str, Any], k: int = 3) -> dict:
    """Examples for the report: the best and worst by J (or SIM when there is no J), and the most changed."""
    per = result["per_sample"]
    key = "j" if "j" in per else "sim"
    values = np.array([np.nan if v is None else v for v in per[key]])
    order = [i for i in np.argsort(-np.nan_to_num(values, nan=-1.0)) if not np.isnan(values[i])]
    changed = np.argsort(np.array(per["sim"], dtype=float))
    pick = lambda rows: [{"input": examples[i].prompt, "output": outputs[i],  # noqa: E731
                          "references": references_of(examples[i]), key: float(values[i])} for i in rows]
    return {"by": key, "best": pick(order[:k]), "worst": pick(order[::-1][:k]), "most_changed": pick(changed[:k])}


def render(results: dict[str, Any]) -> str:
    """detox_report.md: per dataset, every system's metrics with 95% intervals, then examples."""
    def f(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"

    def ci(row: dict, key: str) -> str:
        c = row.get(f"{key}_ci95")
        return f"{f(row.get(key))} [{f(c[0])}, {f(c[1])}]" if c else f(row.get(key))

    headline = ("j", "sta", "sim", "fl", "chrf")
    lines = [f"# Detoxification: {results.get('rewriter', '')}", "",
             f"Style guard (STA): {results.get('style_guard') or 'none given: STA and J not computed'}. "
             "SIM: cosine of mean-pooled sentence embeddings of input and output. FL: chrF against the references "
             "(`pan24` protocol: J = STA x SIM x chrF per sample, averaged) unless a fluency guard is given "
             "(`paradetox`: J = STA x SIM x FL). BLEU and chrF are sacreBLEU corpus scores against every reference; "
             "self-BLEU is BLEU against the input. Intervals: 95% bootstrap over items.", ""]
    for path in results.get("plots", []):
        lines += [f"![{path}]({path})", ""]
    for label, data in results["datasets"].items():
        lines += [f"## {label} ({data['n']} items)", "",
                  f"The human row scores each item's first reference against its other references; "
                  f"{data['left_out_of_human_row']} items with a single reference are left out of it.", "",
                  "| system | J | STA | SIM | FL | BLEU | chrF | ROUGE-1/2/L | self-BLEU |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in data["systems"].items():
            rouges = "/".join(f(row.get(k)) for k in ("rouge1", "rouge2", "rougeL"))
            lines.append(f"| {name} | {ci(row, 'j')} | {ci(row, 'sta')} | {ci(row, 'sim')} | {ci(row, 'fl')} | "
                         f"{f(row.get('bleu'))} | {f(row.get('chrf'))} | {rouges} | {f(row.get('self_bleu'))} |")
        same = {name: row["on_human_items"] for name, row in data["systems"].items() if row.get("on_human_items")}
        if same:
            lines += ["", f"On the {data['human_items']} items with two or more references, every system scored "
                      "against the references other than the first (the human row's own protocol: the numbers "
                      "in this table compare with the human row directly):", "",
                      "| system | J | STA | SIM | FL | chrF |", "|---|---|---|---|---|---|"]
            lines += [f"| {name} | " + " | ".join(ci(row, k) if k != "chrf" else f(row.get(k)) for k in headline) + " |"
                      for name, row in same.items()]
        lines.append("")
        for name, row in data["systems"].items():
            shown = row.get("examples")
            if not shown:
                continue
            lines += [f"### {name}: examples", ""]
            for part in ("best", "worst", "most_changed"):
                lines.append(f"**{part.replace('_', ' ')}** (by {shown['by']})")
                lines += [f"- `{e['input'][:160]}` -> `{e['output'][:160]}`" for e in shown[part]]
                lines.append("")
    return "\n".join(lines) + "\n"
