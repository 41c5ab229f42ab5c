"""`guardtune data ...`: list, inspect, validate and compare datasets."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from guardtune.data import DataSpec, Example, load, load_config
from guardtune.data.loader import is_config
from guardtune.data.example import BINARY_TASKS
from guardtune.data.intake import ON_BAD_ROW
from guardtune.data.registry import DATASETS
from guardtune.data.stats import compute, labelled_tasks
from guardtune.paths import ENV, data_root
from guardtune.taxonomy import CATEGORIES, SCHEMES, describe
from guardtune.ui import console, progress, table

DATA_HELP = f"""\
Datasets are named NAME or NAME:SPLIT (see `guardtune data list`); a path to a .jsonl, .csv, .tsv or
.parquet file (optionally .xz/.gz compressed) in guardtune's schema works wherever a name does, and so does
a YAML data config (stats, check): one spec, or a weighted mixture, e.g.

  mixture:
    - {{name: cold, split: train, sample: 2000, seed: 42}}
    - {{path: export.csv, columns: {{prompt: text, prompt_harmful: label}}, weight: 2}}
  size: 5000
  seed: 0

Local copies live under the data root: ${ENV} if set, else ../shared/data when it exists, else
~/.local/share/guardtune/data. Hub datasets load by id through `datasets` (or from a copy of the hub
repository under <data root>/hub/<owner>/<name>).

Every record has the same fields: prompt, response, prompt_harmful, response_harmful, response_refusal
(0, 1 or null = unlabelled), prompt_categories, response_categories (S1-S14 codes, or a source's own names
where no sound mapping exists), language, rationale, rewrite, source, id.
"""


def add_parser(commands) -> None:
    p = commands.add_parser("data", help="list, inspect, validate and compare datasets", description=DATA_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(parser=p)
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    s = sub.add_parser("list", help="every dataset: languages, tasks, rows, licence, available here or hub-only")
    s.add_argument("--json", action="store_true", help="one JSON object per dataset instead of a table")
    s.set_defaults(run=cmd_list)

    s = sub.add_parser("show", help="print a few examples", description="Print the first N examples "
                       "(or a seeded random sample with --sample).\n\nexample: guardtune data show multijail --n 3",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("dataset", help="NAME[:SPLIT] or a file")
    s.add_argument("--n", type=int, default=5, help="how many examples (default 5)")
    s.add_argument("--sample", action="store_true", help="a seeded random sample instead of the first N")
    s.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    s.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    _bad_row_options(s)
    s.set_defaults(run=cmd_show)

    s = sub.add_parser("stats", help="label balance per language and category",
                       description="Rows, label balance per task and language, and category counts.\n\n"
                       "example: guardtune data stats cold:train",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("dataset", help="NAME[:SPLIT] or a file")
    _bad_row_options(s)
    s.set_defaults(run=cmd_stats)

    s = sub.add_parser("validate", help="check a file row by row: every bad row named by line and field",
                       description=VALIDATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("file", help="a .jsonl, .csv, .tsv or .parquet file, or a YAML data config")
    s.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="read FIELD from the file's COLUMN (repeatable), e.g. --map prompt=text")
    s.add_argument("--label", action="append", nargs="+", default=[], metavar=("FIELD", "WORD=VALUE"),
                   help="accept words as labels of a binary FIELD (repeatable), e.g. "
                        "--label prompt_harmful unsafe=1 safe=0")
    s.add_argument("--categories", default="canonical",
                   help=f"scheme of category cells: canonical (S-codes), any, or one of {', '.join(SCHEMES)}")
    s.add_argument("--language", help="language of every row when the file has no language column")
    _bad_row_options(s)
    s.set_defaults(run=cmd_validate)

    s = sub.add_parser("check", help="exact and near-duplicate overlap between two datasets",
                       description=CHECK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("train", help="NAME[:SPLIT] or a file")
    s.add_argument("test", help="NAME[:SPLIT] or a file")
    s.add_argument("--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold (default 0.8)")
    s.add_argument("--examples", type=int, default=5, help="how many overlapping pairs to print (default 5)")
    s.set_defaults(run=cmd_check)

    s = sub.add_parser("taxonomy", help="the S1-S14 categories and every mapping onto them")
    s.add_argument("--scheme", choices=sorted(SCHEMES), help="show one scheme's mapping")
    s.set_defaults(run=cmd_taxonomy)


VALIDATE_HELP = """\
Read a file in guardtune's schema (or mapped onto it with --map) and check every row. A bad row (broken
JSON or CSV, a wrong type, an unknown label value or category, empty text, invalid UTF-8, an oversized
line) is an error naming the file, the line and the field. With --on-bad-row skip, bad rows go to a rejects
JSONL file with the same details, and the summary reconciles: read = accepted + rejected.

examples:
  guardtune data validate my.jsonl
  guardtune data validate export.csv --map prompt=text --map prompt_harmful=label --on-bad-row skip
"""

CHECK_HELP = """\
Find test rows whose prompt also appears in the training set: exactly (after Unicode, case, punctuation
and whitespace normalisation) or nearly (MinHash estimate of character 5-gram Jaccard >= --threshold).
Public safety sets overlap; check before trusting a score.

example: guardtune data check toxicchat_human:train toxicchat_human:test
"""


def _bad_row_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-bad-row", choices=ON_BAD_ROW, default="error",
                   help="error: stop at the first bad row (default); skip: write it to the rejects file and go on")
    p.add_argument("--rejects", help="rejects JSONL path for --on-bad-row skip (default: <name>.rejects.jsonl)")


def _load(args: argparse.Namespace, spec: DataSpec | str):
    """A name, file, spec or YAML data config, under the command's bad-row options."""
    on_bad_row = getattr(args, "on_bad_row", "error")
    config = isinstance(spec, str) and is_config(spec)
    if not config:
        spec = DataSpec.parse(spec)
    stem = Path(spec if config else (spec.path or spec.name)).name.split(".")[0].replace(":", "-")
    rejects = Path(getattr(args, "rejects", None) or f"{stem}.rejects.jsonl") if on_bad_row == "skip" else None
    if rejects is not None:
        rejects.unlink(missing_ok=True)  # each run writes its own rejects file
    return load_config(spec, on_bad_row, rejects) if config else load(spec, on_bad_row, rejects)


def cmd_list(args: argparse.Namespace) -> int:
    root = data_root()
    rows = []
    for name, info in DATASETS.items():
        where = {"local": "here" if info.available(root) else "missing", "embedded": "embedded",
                 "hub": "hub copy here" if info.available(root) else "hub-only"}[info.kind]
        langs = ", ".join(info.languages) if len(info.languages) <= 5 else f"{len(info.languages)} languages"
        tasks = ", ".join(t.replace("_harmful", " harm").replace("response_refusal", "refusal") for t in info.tasks)
        rows.append((name, langs, tasks, " / ".join(info.all_splits), info.rows, info.licence, where))
        if args.json:
            print(json.dumps({"name": name, "kind": info.kind, "languages": list(info.languages),
                              "tasks": list(info.tasks), "splits": list(info.all_splits), "rows": info.rows,
                              "licence": info.licence, "available": where, "hub_id": info.hub_id}))
    if args.json:
        return 0
    console().print(table(f"Datasets (data root: {root})", ("name", "languages", "tasks", "splits", "rows",
                                                           "licence", "available"), rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if is_config(args.dataset):
        raise ValueError("data show takes NAME[:SPLIT] or a file; use `data stats` for a YAML data config")
    spec = DataSpec.parse(args.dataset)
    if args.sample:
        spec = DataSpec(**{**spec.__dict__, "sample": args.n, "seed": args.seed})
    loaded = _load(args, spec)
    examples = loaded.examples[: args.n]
    if args.json:
        for ex in examples:
            print(json.dumps(ex.to_dict(), ensure_ascii=False))
        return 0
    out = console()
    for ex in examples:
        out.print(table(f"{ex.id or '(no id)'}  [{ex.language}, {ex.source}]", ("field", "value"), _fields(ex)))
    out.print(loaded.report.summary())
    return 0


def _fields(ex: Example) -> list[tuple[str, str]]:
    rows = []
    for name, value in ex.to_dict().items():
        if name in ("id", "language", "source", "group") or value in (None, "", {}):
            continue
        text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        rows.append((name, text if len(text) <= 400 else text[:400] + "..."))
    return rows


def print_stats(examples: Sequence[Example], label: str) -> None:
    stats = compute(examples)
    out = console()
    out.print(f"[bold]{label}[/bold]: {stats.rows:,} examples, {stats.with_response:,} with a response, "
              f"{len(stats.languages)} language(s)")
    tasks = labelled_tasks(stats) or list(BINARY_TASKS[:1])
    rows = [(lang, n, *(str(stats.by_language[lang][t]) for t in tasks))
            for lang, n in stats.languages.most_common()]
    if len(rows) > 1:
        rows.append(("all", stats.rows, *(str(stats.tasks[t]) for t in tasks)))
    out.print(table("Positives / labelled, per language", ("language", "rows", *tasks), rows))
    for task, counts in stats.categories.items():
        harm = stats.category_harm if task == "prompt_categories" else {}
        rows = [(describe(name), n, str(harm[name]) if name in harm else "-") for name, n in counts.most_common(25)]
        more = f" (top 25 of {len(counts)})" if len(counts) > 25 else ""
        out.print(table(f"{task}{more}", ("category", "rows", "prompt harmful"), rows))


def cmd_stats(args: argparse.Namespace) -> int:
    loaded = _load(args, args.dataset)
    print_stats(loaded.examples, loaded.label)
    console().print(loaded.report.summary())
    return 0


def word_labels(items: list[list[str]]) -> dict[str, dict[str, int]]:
    """--label FIELD WORD=VALUE ... -> {FIELD: {WORD: VALUE}}; values are 0 or 1."""
    labels: dict[str, dict[str, int]] = {}
    for field, *pairs in items:
        if field not in BINARY_TASKS:
            raise ValueError(f"--label {field}: not a binary field; choose from {', '.join(BINARY_TASKS)}")
        if not pairs:
            raise ValueError(f"--label {field} needs WORD=VALUE pairs, e.g. --label {field} unsafe=1 safe=0")
        for pair in pairs:
            word, sep, value = pair.rpartition("=")
            if not sep or not word or value not in ("0", "1"):
                raise ValueError(f"--label {field}: expected WORD=0 or WORD=1, got {pair!r}")
            labels.setdefault(field, {})[word] = int(value)
    return labels


def cmd_validate(args: argparse.Namespace) -> int:
    if is_config(args.file):
        if args.map or args.label:
            raise ValueError("--map and --label apply to a file; a YAML data config carries its own mapping")
        loaded = _load(args, args.file)
        return _validated(args.file, loaded.report)
    columns = {}
    for item in args.map:
        field, sep, column = item.partition("=")
        if not sep:
            raise ValueError(f"--map expects FIELD=COLUMN, got {item!r}")
        columns[field.strip()] = column.strip()
    spec = DataSpec(path=args.file, columns=columns, labels=word_labels(args.label), categories=args.categories,
                    language=args.language)
    loaded = _load(args, spec)
    return _validated(args.file, loaded.report)


def _validated(name: str, report) -> int:
    console().print(f"{name}: {report.summary()}")
    for line in report.first_errors:
        console().print(f"  {line}")
    if not report.reconciles:
        raise RuntimeError(f"internal error: counts do not reconcile ({report})")
    return 1 if report.rejected else 0


def cmd_check(args: argparse.Namespace) -> int:
    from guardtune.data.overlap import check

    train, test = _load(args, args.train), _load(args, args.test)
    result = check(train.examples, test.examples, threshold=args.threshold, progress=progress)
    out = console()
    n = max(result.test_rows, 1)
    out.print(table(f"Overlap of {test.label} with {train.label}", ("", "test rows", "share of test"), [
        ("exact duplicates", result.test_rows_exact, f"{result.test_rows_exact / n:.1%}"),
        (f"near duplicates (>= {args.threshold})", result.test_rows_near, f"{result.test_rows_near / n:.1%}"),
        ("total", result.test_rows, ""),
    ]))
    pairs = [("exact", 1.0, i, j) for i, j in result.exact] + [("near", s, i, j) for i, j, s in result.near]
    if pairs and args.examples:
        out.print(table("Examples", ("kind", "similarity", "test prompt", "train prompt"), [
            (kind, f"{sim:.2f}", test.examples[i].prompt[:120], train.examples[j].prompt[:120])
            for kind, sim, i, j in pairs[: args.examples]]))
    return 0


def cmd_taxonomy(args: argparse.Namespace) -> int:
    out = console()
    if not args.scheme:
        out.print(table("Canonical categories", ("code", "name"), CATEGORIES.items()))
    for scheme in [args.scheme] if args.scheme else SCHEMES:
        out.print(table(f"{scheme} -> canonical", ("label", "maps to"), [
            (label, ", ".join(describe(c) for c in codes) or "(kept as is)")
            for label, codes in SCHEMES[scheme].items()]))
    return 0
