"""Subcommands of the ``hf-taskgroup`` CLI.

Each module here declares its subcommand from the configuration spine (:mod:`hf_taskgroup.config`):

- ``CONFIG``: the config dataclass the subcommand's parser is built from (``HfArgumentParser``); every
  flag is one of its fields, so the flag's default and help are the library's;
- ``HELP`` / ``DESCRIPTION``: the help texts;
- ``configure(parser)`` (optional): deprecated aliases of renamed flags;
- ``run(config, ctx) -> int``: the command, a thin layer over library functions (``ctx.progress`` tells
  whether to show progress bars).

The CLI (:mod:`hf_taskgroup.cli`) builds the parsers, reads ``--config file.yaml`` and handles errors.
"""

COMMAND_MODULES = ("run", "train", "pvi", "group", "llm", "export")
