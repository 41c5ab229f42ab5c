"""`guardtune rewrite`: detoxify a text, or a JSONL file (streamed in batches, resumable).

examples:
  guardtune rewrite runs/detox "you are a stupid idiot"
  guardtune rewrite runs/detox --file in.jsonl --out out.jsonl     # re-run to resume after a stop
  guardtune baseline delete --data paradetox:train --out runs/delete
  guardtune eval runs/detox --data paradetox:test --style-guard runs/toxicity

Each line of --file holds an id (or is named by its line number) and a `prompt` or `text`; each output line is
{"id": ..., "rewrite": ...}. Every input gets a string: an empty text gets "".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from guardtune.commands import add_trust_argument
from guardtune.ui import console


def add_parser(commands) -> None:
    r = commands.add_parser("rewrite", help="detoxify a text, or a JSONL file (streaming, resumable)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("rewriter", metavar="RUN", help="a rewriter: a run of model.kind=rewriter, or a baseline")
    add_trust_argument(r)
    r.add_argument("text", nargs="?", help="the text to rewrite (or use --file)")
    r.add_argument("--file", help="JSON Lines input: id, prompt (or text)")
    r.add_argument("--out", help="with --file: where rewrites go (default: <file>.rewrites.jsonl)")
    r.add_argument("--batch-size", type=int, default=32, help="texts rewritten per model call")
    r.set_defaults(run=run_rewrite, parser=r)


def load_rewriter(source: str, trust_remote_code: bool = False):
    import guardtune
    from guardtune.guard import Rewriter

    rewriter = guardtune.load(source, trust_remote_code=trust_remote_code)
    if not isinstance(rewriter, Rewriter):
        raise ValueError(f"{source} is a guard, not a rewriter (train one with model.kind=rewriter, or make a "
                         "baseline: guardtune baseline delete --data paradetox:train --out DIR)")
    return rewriter


def rewrite_texts(rewriter, texts: list[str], batch_size: int | None = None) -> list[str]:
    """One string per text; an empty or blank text gets "" (there is nothing to rewrite)."""
    from guardtune.data.example import Example

    real = [i for i, t in enumerate(texts) if t.strip()]
    out = [""] * len(texts)
    for i, text in zip(real, rewriter.rewrite([Example(prompt=texts[i]) for i in real], batch_size=batch_size)):
        out[i] = text
    return out


def run_rewrite(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.file is None):
        args.parser.error("give a text, or --file with JSON Lines (not both)")
    rewriter = load_rewriter(args.rewriter, args.trust_remote_code)
    if args.file:
        out = Path(args.out) if args.out else Path(f"{args.file}.rewrites.jsonl")
        done, new = rewrite_file(rewriter, Path(args.file), out, args.batch_size)
        console().print(f"{new} rewrites written, {done} already there -> {out}")
        return 0
    print(rewrite_texts(rewriter, [args.text])[0])
    return 0


def rewrite_file(rewriter, source: Path, out: Path, batch_size: int = 32,
                 show_progress: bool = True) -> tuple[int, int]:
    """Like `moderate --file` (commands/streaming.py): resumable, ids already in `out` skipped."""
    from guardtune.commands.streaming import stream_jsonl

    def parse(row: dict) -> str:
        text = row.get("prompt", row.get("text"))
        if not isinstance(text, str):
            raise ValueError("needs a prompt or text string")
        return text

    def work(texts: list[str]) -> list[dict]:
        return [{"rewrite": text} for text in rewrite_texts(rewriter, texts, batch_size)]

    return stream_jsonl(source, out, parse, work, batch_size, "rewriting", show_progress=show_progress)
