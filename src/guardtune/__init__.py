"""guardtune: fine-tune, evaluate, compare and serve content-moderation guards built on language models."""

__version__ = "0.1.0"
