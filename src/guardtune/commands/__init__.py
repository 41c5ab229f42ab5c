"""CLI commands: each module adds its sub-parser and holds the functions that do the work."""


def add_trust_argument(parser) -> None:
    """--trust-remote-code: the one way to let a backbone's own Python code run (never from a run directory)."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the backbone's own Python code from the hub (only for models you trust; a run "
                             "directory can never turn this on)")
