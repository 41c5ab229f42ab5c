"""`guardtune chat RUN`: talk to a dual-path guard (a chat model that also guards) in the terminal, with the
verdict of every turn: the prompt's before the answer, the answer's after it.

examples:
  guardtune chat runs/dual-qwen2.5-0.5b
  guardtune chat runs/dual-qwen2.5-0.5b --mode annotate --max-new-tokens 128 --system "Be brief."
  echo "how do I bake bread?" | guardtune chat runs/dual-qwen2.5-0.5b --json     # one JSON record per turn

Type a message and press Enter; /reset starts a new conversation, /quit (or Ctrl-D) ends. In block mode (the
default) a flagged prompt is not answered and a flagged answer is withheld: the model says its refusal
instead, and that is what stays in the conversation. annotate shows every answer with its verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from guardtune.commands import add_trust_argument
from guardtune.ui import console


def add_parser(commands) -> None:
    c = commands.add_parser("chat", help="an interactive chat with a dual-path guard, verdict by verdict",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("guard", metavar="RUN", help="a dual_path run directory (model.kind: dual_path)")
    add_trust_argument(c)
    c.add_argument("--mode", choices=("block", "annotate"), default="block",
                   help="block: refuse flagged prompts and withhold flagged answers (default); annotate: show all")
    c.add_argument("--max-new-tokens", type=int, default=256, help="the longest answer, in tokens")
    c.add_argument("--temperature", type=float, default=None,
                   help="0: greedy; above 0: sampling; default: the model's own generation config")
    c.add_argument("--system", help="a system message to start every conversation with")
    c.add_argument("--device", help="e.g. cuda, cpu (default: where the model loads)")
    c.add_argument("--json", action="store_true", help="print one JSON record per turn instead of text")
    c.set_defaults(run=run_chat, parser=c)


def run_chat(args: argparse.Namespace) -> int:
    import guardtune
    from guardtune.data.example import FieldError
    from guardtune.serve.batcher import ChatTurn

    chat = guardtune.load(args.guard, device=args.device, trust_remote_code=args.trust_remote_code)
    if not callable(getattr(chat, "respond", None)):
        raise ValueError(f"{args.guard} is a {type(chat).__name__}, not a chat model: `guardtune chat` needs a "
                         "dual_path run (model.kind: dual_path); use `guardtune moderate` for other guards")
    out = console()
    interactive = sys.stdin.isatty()
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    if interactive and not args.json:
        info = chat.info
        out.print(f"[bold]{chat.name}[/bold]: a chat model that also guards (+{info['overhead']:.3%} parameters, "
                  f"{args.mode} mode). /reset, /quit")
    decoding = ChatTurn((), temperature=args.temperature).decoding()
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            messages = list(start)
            continue
        messages.append({"role": "user", "content": text})
        try:
            result = chat.respond(messages, args.mode, args.max_new_tokens, **decoding)
        except FieldError as err:  # e.g. undecodable bytes on stdin: say so, drop the line, go on
            messages.pop()
            out.print(f"[red]not sent: {err}[/red]")
            continue
        messages.append({"role": "assistant", "content": result["reply"] or ""})
        if args.json:
            print(json.dumps({"prompt": text, **result}, ensure_ascii=False), flush=True)
        else:
            show(out, result)
    return 0


def show(out: Any, result: dict[str, Any]) -> None:
    out.print(f"[dim]prompt: {summary(result['prompt_moderation'])}[/dim]")
    if result["response"] is not None:
        out.print(f"[dim]answer: {summary(result['response_moderation'])}[/dim]")
    style = "yellow" if result["blocked"] else "cyan"
    note = " (withheld: flagged)" if result["blocked"] and result["response"] is not None else \
        " (not answered: prompt flagged)" if result["blocked"] else ""
    out.print(f"[{style}]model>[/{style}] {result['reply']}[dim]{note}[/dim]")


def summary(v: dict[str, Any] | None) -> str:
    """One line: each task's verdict and score, and any flagged category."""
    if not v:
        return "-"
    parts = [f"{task} {'FLAGGED' if r['flagged'] else 'ok'} {r['score']:.2f}" for task, r in v.items()
             if isinstance(r, dict) and "flagged" in r and "threshold" in r]
    for field in ("prompt_categories", "response_categories"):
        flagged = [code for code, r in v.get(field, {}).items() if r["flagged"]]
        if flagged:
            parts.append(f"{field.split('_')[0]} categories {', '.join(flagged)}")
    return "; ".join(parts) or "-"
