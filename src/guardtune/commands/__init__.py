"""CLI commands: each module adds its sub-parser and holds the functions that do the work."""
