"""`guardtune rationales TEACHER --data SPEC --out FILE.jsonl`: a teacher writes a short rationale per example.

examples:
  guardtune rationales runs/qwen-guard --data toxicchat_human:train --out runs/rationales/toxicchat.jsonl
  guardtune rationales hf:Qwen/Qwen2.5-7B-Instruct --data cold:train --out cold.jsonl --show-label
  guardtune rationales runs/qwen-guard --data SPEC --out r.jsonl --sample --temperature 0.7 --seed 1
  guardtune train configs/generative/... data.train=runs/rationales/toxicchat.jsonl model.rationale=after

TEACHER is a trained generative guard (its policy is used) or a causal chat LM (hub id or directory, `hf:`
optional). Decoding is greedy unless --sample (then seeded). With --show-label the teacher is told the gold
verdict and asked to explain it; every row records `label_shown`. After each rationale the teacher's own
verdict is read from label logits (" harmful" against " safe" after "Verdict:"): a rationale that contradicts
the gold label goes to OUT.contradictions.jsonl (or stays, marked `"consistent": false`, with
--on-contradiction flag), and the counts are printed. OUT is a data file (the example's fields plus
`rationale`) any training config reads. Rerun the same command to resume after a stop.
"""

from __future__ import annotations

import argparse

from guardtune.commands import add_trust_argument
from guardtune.ui import console


def add_parser(commands) -> None:
    p = commands.add_parser("rationales", help="a teacher LM writes a checked rationale per example (resumable)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher", metavar="TEACHER", help="a generative guard run, or a causal LM (hub id or directory)")
    p.add_argument("--data", required=True, help="the examples (a dataset spec, file or YAML data config)")
    p.add_argument("--out", required=True, help="the JSONL file to write (appended to: rerun to resume)")
    p.add_argument("--show-label", action="store_true", help="tell the teacher the gold verdict (recorded per row)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding (seeded)")
    p.add_argument("--temperature", type=float, default=0.7, help="with --sample (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="with --sample: the seed (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="the longest rationale, in tokens (default 96)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--on-contradiction", choices=("drop", "flag"), default="drop",
                   help="drop (default): a rationale whose verdict contradicts the gold label goes to "
                        "OUT.contradictions.jsonl; flag: it stays in OUT, marked consistent: false")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: where the model loads)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_trust_argument(p)
    p.set_defaults(run=run, parser=p)


def run(args: argparse.Namespace) -> int:
    from guardtune.data import load_any
    from guardtune.rationales import Teacher, write_rationales
    from guardtune.ui import table

    if args.sample and args.temperature <= 0:
        args.parser.error("--temperature must be positive with --sample")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        args.parser.error("--max-new-tokens and --batch-size must be positive")
    examples = load_any(args.data).examples
    teacher = Teacher.load(args.teacher, args.trust_remote_code, args.device)
    counts = write_rationales(teacher, examples, args.out, args.show_label, args.sample, args.temperature,
                              args.seed, args.max_new_tokens, args.batch_size, args.on_contradiction,
                              show_progress=not args.quiet)
    checked = counts["consistent"] + counts["contradicting"]
    rows = [("already in the output", counts["already"]), ("written to " + args.out, counts["written"]),
            ("consistent with the gold label", counts["consistent"]),
            (f"contradicting it ({'dropped' if args.on_contradiction == 'drop' else 'flagged'})", counts["contradicting"]),
            ("no gold label (unchecked)", counts["unchecked"]), ("empty (set aside)", counts["empty"])]
    console().print(table(f"rationales by {teacher.name} ({'label shown' if args.show_label else 'label not shown'}"
                          f"; {'sampled' if args.sample else 'greedy'})", ["", "rows"], rows))
    if checked:
        console().print(f"agreement with the gold label: {counts['consistent'] / checked:.1%} of {checked} checked")
    return 0
