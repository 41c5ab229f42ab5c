"""guardtune: fine-tune, evaluate, compare and serve content-moderation guards built on language models."""

__version__ = "0.1.0"


def load(run_dir, device=None, label_map=None, merge_adapters=True):
    """The guard in `run_dir` (or `hf:<model id>`): `guard.score(examples)`, `guard.moderate(text, response=None)`.
    A PEFT adapter comes merged into the weights unless `merge_adapters=False`."""
    from guardtune.guard import load as load_guard

    return load_guard(run_dir, device, label_map, merge_adapters)
