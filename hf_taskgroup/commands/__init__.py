"""Subcommands of the ``hf-taskgroup`` CLI.

Each module here defines ``add_parser(subparsers)``, which registers one subcommand and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code) with
``parser.set_defaults(func=...)``. The CLI stays a thin layer over library functions.
"""

COMMAND_MODULES = ("run", "train", "pvi", "group", "export")
