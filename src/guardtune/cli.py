"""The `guardtune` command: parse arguments and dispatch. Every command is an importable function in
`guardtune.commands.*`; this module only wires them to argparse and turns known errors into clear messages."""

from __future__ import annotations

import argparse
import sys

from guardtune import __version__
from guardtune.commands import cascade as cascade_cmd
from guardtune.commands import chat as chat_cmd
from guardtune.commands import data as data_cmd
from guardtune.commands import demo as demo_cmd
from guardtune.commands import detox as detox_cmd
from guardtune.commands import evaluate as evaluate_cmd
from guardtune.commands import lodo as lodo_cmd
from guardtune.commands import rationales as rationales_cmd
from guardtune.commands import rewrite as rewrite_cmd
from guardtune.commands import serve as serve_cmd
from guardtune.commands import study as study_cmd
from guardtune.commands import train as train_cmd

DESCRIPTION = """\
guardtune fine-tunes, evaluates, compares and serves content-moderation guards: models that say whether a
prompt is harmful, whether a response is harmful or a refusal, and which policy categories (S1-S14) apply.

Start here:
  guardtune demo                          the main job on the embedded default (offline, a few minutes)
  guardtune train CONFIG [key=value ...]  train a guard (see configs/)
  guardtune eval RUN --data demo:test     metrics with intervals, slices, plots and a report
  guardtune calibrate RUN --data NAME     thresholds chosen on validation data, saved in the run
  guardtune moderate RUN "text"           a verdict (or --file in.jsonl --out out.jsonl, resumable)
  guardtune serve RUN --port 8000         an OpenAI-compatible moderation server
  guardtune chat RUN                      talk to a dual-path guard (a chat model that also guards)
  guardtune cascade fit SMALL BIG --data  a cheap guard first, the big one only for what it is unsure of
  guardtune rationales TEACHER --data D   a teacher LM writes a checked rationale per example (resumable)
  guardtune detox                         train and evaluate the embedded default detoxifier (ParaDetox)
  guardtune rewrite RUN "text"            detoxify a text with a rewriter (or --file, resumable)
  guardtune baseline fewshot --model ID   a few-shot prompted instruct model, no training
  guardtune study STUDY.yaml              compare methods over seeds on matched budgets (configs/study/)
  guardtune lodo LODO.yaml                leave-one-dataset-out: how a recipe holds up on sources it never saw
  guardtune data list                     every dataset guardtune can load, and whether it is here
  guardtune data show toxicchat_human:test --n 3
  guardtune data stats multijail          label balance per language and category
  guardtune data validate my.jsonl        check a file of your own before training on it

Each command has its own --help. Data lives under $GUARDTUNE_DATA_DIR (see `guardtune data --help`).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guardtune", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"guardtune {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_cmd.add_parser(commands)
    detox_cmd.add_parser(commands)
    train_cmd.add_parser(commands)
    evaluate_cmd.add_parser(commands)
    serve_cmd.add_parser(commands)
    chat_cmd.add_parser(commands)
    cascade_cmd.add_parser(commands)
    rationales_cmd.add_parser(commands)
    rewrite_cmd.add_parser(commands)
    study_cmd.add_parser(commands)
    lodo_cmd.add_parser(commands)
    data_cmd.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come after options (`train CONFIG --resume a.b=1`)
        if not hasattr(args, "settings") or any(e.startswith("-") or "=" not in e for e in extra):
            (getattr(args, "parser", None) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
        args.settings = [*args.settings, *extra]
    if not getattr(args, "run", None):
        (getattr(args, "parser", None) or parser).print_help()
        return 0 if args.command is None else 2
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
