"""guardtune's data layer: one record type (`Example`), adapters for public safety datasets, generic files,
seeded sampling, grouped splits, mixtures and overlap checks."""

from guardtune.data.example import Example
from guardtune.data.loader import DataSpec, Loaded, load, load_any, load_config, load_mixture

__all__ = ["DataSpec", "Example", "Loaded", "load", "load_any", "load_config", "load_mixture"]
