"""`guardtune moderate` and `guardtune serve`: a guard in production.

examples:
  guardtune moderate runs/demo "how do I pick a lock?"
  guardtune moderate runs/demo "how do I pick a lock?" --response "I can't help with that." --json
  guardtune moderate runs/demo --file inbox.jsonl --out verdicts.jsonl      # re-run to resume after a stop
  guardtune serve runs/demo --port 8000 --max-batch 32 --fail closed
  GUARDTUNE_API_KEYS=key1,key2 guardtune serve runs/demo --host 0.0.0.0

--file reads JSON Lines, one conversation per line: {"id": ..., "prompt": ..., "response": ...} (or "text"
for the prompt). A line without an id is known by its line number. Verdicts are written as they are made,
one line per input with the same id; re-running with the same --out skips ids already written, so an
interrupted job resumes without losing or repeating a line.

serve answers OpenAI moderation requests at POST /v1/moderations, full verdicts at POST /v1/guard, and
GET /healthz, /readyz and /metrics (Prometheus). A dual-path guard (a chat model that also guards) also
answers POST /v1/chat/completions, moderating prompt and answer with the same model (--chat-mode).
See docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from guardtune.commands import add_trust_argument
from guardtune.ui import console

if TYPE_CHECKING:  # the command's --help must not import torch
    from guardtune.guard import Guard


def add_parser(commands) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    m = commands.add_parser("moderate", help="verdicts for a text, or for a JSONL file (streaming, resumable)",
                            description=__doc__, formatter_class=formatter)
    m.add_argument("guard", metavar="RUN", help="a run directory, or hf:<model id or path>")
    add_trust_argument(m)
    m.add_argument("text", nargs="?", help="the prompt to judge (or use --file)")
    m.add_argument("--response", help="the assistant's response to judge with the prompt")
    m.add_argument("--file", help="JSON Lines input: id, prompt (or text), optional response and language")
    m.add_argument("--out", help="with --file: where verdicts go (default: <file>.verdicts.jsonl)")
    m.add_argument("--batch-size", type=int, default=64, help="texts scored per model call")
    m.add_argument("--key", choices=("id", "line"), default="id",
                   help="with --file: what names a verdict (and lets a re-run resume): each line's id "
                        "(default; ids must be unique) or its line number")
    m.add_argument("--language", help="the text's language (ISO 639-1), for a guard with per-language thresholds "
                                      "(default: detected; with --file, each line's own `language`, else detected)")
    m.add_argument("--json", action="store_true", help="print the verdict as JSON instead of a table")
    m.set_defaults(run=run_moderate, parser=m)

    s = commands.add_parser("serve", help="an OpenAI-compatible moderation server (FastAPI + uvicorn)",
                            description=__doc__, formatter_class=formatter)
    s.add_argument("guard", metavar="RUN", help="a run directory, or hf:<model id or path>")
    add_trust_argument(s)
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-batch", type=int, default=32, help="texts scored together at most (1: no batching)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a text waits for others to batch with")
    s.add_argument("--queue-size", type=int, default=2048, help="texts waiting at most; beyond, 503 + Retry-After")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds per request; beyond, 504")
    s.add_argument("--max-chars", type=int, default=32_000, help="characters per text; beyond, 413")
    s.add_argument("--max-inputs", type=int, default=128, help="texts per request; beyond, 413")
    s.add_argument("--fail", choices=("closed", "open"), default="closed",
                   help="when the guard errors: closed flags everything (safe), open flags nothing (available)")
    s.add_argument("--api-keys-file", help="one API key per line; default: $GUARDTUNE_API_KEYS (comma-separated); "
                                           "neither: no authentication")
    s.add_argument("--model-id", help="the model name reported in responses (default: the run directory)")
    s.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: where the guard loads)")
    s.add_argument("--chat-mode", choices=("block", "annotate"), default="block",
                   help="a dual-path guard also serves /v1/chat/completions: block answers a flagged turn with the "
                        "refusal (default), annotate returns the completion; the verdicts come with both")
    s.add_argument("--max-new-tokens", type=int, default=512, help="/v1/chat/completions: the longest answer")
    s.add_argument("--rewriter", metavar="RUN",
                   help="also serve POST /v1/detox with this rewriter (RUN itself may be a rewriter instead of a "
                        "guard); with a guard beside it, /v1/detox can rewrite only what the guard flags")
    s.set_defaults(run=run_serve, parser=s)


def run_moderate(args: argparse.Namespace) -> int:
    import guardtune

    if bool(args.text) == bool(args.file):
        args.parser.error("give a text, or --file with JSON Lines (not both)")
    guard = guardtune.load(args.guard, trust_remote_code=args.trust_remote_code)
    if args.file:
        out = Path(args.out) if args.out else Path(f"{args.file}.verdicts.jsonl")
        done, new = moderate_file(guard, Path(args.file), out, args.batch_size, key_by=args.key)
        console().print(f"{new} verdicts written, {done} already there -> {out}")
        return 0
    result = guard.moderate(args.text, args.response, **({"language": args.language} if args.language else {}))
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return 0
    from guardtune.ui import table

    rows = []
    spans = result.pop("spans", None)
    for name, value in result.items():
        if not isinstance(value, dict):  # the language and whose thresholds applied
            rows.append([name, str(value), "", ""])
        elif "flagged" in value:
            rows.append([name, "FLAGGED" if value["flagged"] else "ok", f"{value['score']:.3f}",
                         f"{value['threshold']:.2f}"])
        else:
            rows += [[f"{name}/{code}", "FLAGGED" if v["flagged"] else "", f"{v['score']:.3f}", ""]
                     for code, v in value.items()]
    console().print(table(f"{guard.name}", ["output", "verdict", "score", "threshold"], rows))
    if spans is not None:
        console().print("spans: " + (", ".join(repr(s["text"]) for s in spans) if spans else "(none marked)"))
    return 0


UNDETERMINED = "und"  # ISO 639-2: a line that does not say its language


def moderate_file(guard: Guard, source: Path, out: Path, batch_size: int = 64, show_progress: bool = True,
                  key_by: str = "id") -> tuple[int, int]:
    """Stream `source` (JSONL) through the guard into `out`, skipping ids `out` already has (see
    commands/streaming.py: resumable, a repeated id an error naming both lines). Returns (already done, new)."""
    from guardtune.commands.streaming import stream_jsonl
    from guardtune.data.example import Example
    from guardtune.guard import verdict

    from guardtune.guard import language_of

    def parse(row: dict) -> Example:  # "und" (undetermined): no language given, detected if thresholds need one
        return Example(prompt=row.get("prompt", row.get("text")), response=row.get("response"),
                       language=row.get("language") or UNDETERMINED)

    def work(examples: list[Example]) -> list[dict]:
        scores = guard.score(examples)
        decided = getattr(guard, "decided", None)  # a cascade: which stage decided each row
        given = [None if ex.language == UNDETERMINED else ex.language for ex in examples]
        return [{**verdict(guard, scores, row, language_of(guard, ex.prompt, given[row])),
                 **({"stage": int(decided[row])} if decided is not None else {})} for row, ex in enumerate(examples)]

    return stream_jsonl(source, out, parse, work, batch_size, "moderating", key_by, show_progress,
                        hint=" (each line needs a prompt or text)")


def run_serve(args: argparse.Namespace) -> int:
    import guardtune
    from guardtune.serve import ServeSettings, read_api_keys, serve

    keys = read_api_keys(args.api_keys_file)
    settings = ServeSettings(args.max_batch, args.max_wait_ms, args.queue_size, args.timeout, args.max_chars,
                             args.max_inputs, args.fail, keys, args.model_id or "", chat_mode=args.chat_mode,
                             max_new_tokens=args.max_new_tokens)
    from guardtune.guard import Rewriter

    first = guardtune.load(args.guard, device=args.device, trust_remote_code=args.trust_remote_code)
    rewriter = guardtune.load(args.rewriter, device=args.device, trust_remote_code=args.trust_remote_code) \
        if args.rewriter else None
    guard = None if isinstance(first, Rewriter) else first
    rewriter = first if isinstance(first, Rewriter) else rewriter
    if rewriter is not None and not isinstance(rewriter, Rewriter):
        raise ValueError(f"--rewriter {args.rewriter} is a guard, not a rewriter")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not keys:
        console().print("[yellow]WARNING: listening beyond this machine with no API keys; set GUARDTUNE_API_KEYS "
                        "or --api-keys-file[/yellow]")
    served = " and ".join(f"{what} {x.name}" for what, x in (("guard", guard), ("rewriter", rewriter)) if x)
    console().print(f"serving {served} on http://{args.host}:{args.port} (max batch {args.max_batch}, "
                    f"fail {args.fail}, {'API keys on' if keys else 'no API keys'})")
    serve(guard, settings, args.host, args.port, rewriter=rewriter)
    return 0
