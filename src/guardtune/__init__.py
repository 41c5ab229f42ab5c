"""guardtune: fine-tune, evaluate, compare and serve content-moderation guards built on language models."""

__version__ = "0.1.0"


def load(source, device=None, label_map=None, merge_adapters=True, trust_remote_code=False):
    """The guard in `source` (a guard directory of any kind, or `hf:<model id>`): `guard.score(examples)`,
    `guard.moderate(text, response=None)`. A PEFT adapter comes merged into the weights unless
    `merge_adapters=False`; a backbone's remote code runs only with `trust_remote_code=True`."""
    from guardtune.loading import load as load_guard

    return load_guard(source, device, label_map, merge_adapters, trust_remote_code)
