"""guardtune: fine-tune, evaluate, compare and serve content-moderation guards built on language models."""

__version__ = "0.1.0"


def load(run_dir, device=None):
    """The guard trained into `run_dir`: `guard.score(examples)`, `guard.moderate(text, response=None)`."""
    from guardtune.guard import load as load_guard

    return load_guard(run_dir, device)
