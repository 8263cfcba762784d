"""The ``hf-taskgroup`` command: ``hf-taskgroup [--verbose|--quiet] [--debug] {run,train,pvi,group} ...``.

``hf-taskgroup`` with no arguments runs the default main job (``run`` on the built-in demo suite).
Every subcommand's flags are the fields of its config dataclass (:mod:`hf_taskgroup.config`), and
every subcommand reads ``--config file.yaml`` (keys = flag names; flags given on the command line win).

One error boundary: a user's mistake (a bad flag value, a bad suite, a missing file or model folder)
prints ``hf-taskgroup: error: ...`` and a hint on stderr and exits 2; an internal error prints one line
(its traceback with ``--debug``) and exits 1; Ctrl-C exits 130 ("interrupted; re-run the same command
to resume": every stage resumes from its finished artifacts).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType, SimpleNamespace
from typing import Any, NoReturn

from hf_taskgroup import __version__
from hf_taskgroup.commands import COMMAND_MODULES
from hf_taskgroup.config import ConfigError, _parser_class, load_config_file, namespace_to_config

PROG = "hf-taskgroup"
#: global flags, accepted anywhere on the command line
GLOBAL_FLAGS = {"--debug": "debug", "-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}
INTERRUPTED_MESSAGE = "interrupted; re-run the same command to resume"


class _TopParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _commands() -> dict[str, ModuleType]:
    out = {}
    for name in COMMAND_MODULES:
        try:
            out[name] = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as err:
            if err.name == f"{__package__}.commands.{name}":
                continue  # subcommand not available in this build
            raise
    return out


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each subcommand's parser is an ``HfArgumentParser`` over its ``CONFIG``."""
    parser = _TopParser(
        prog=PROG,
        description="Find which tasks to train together, train the grouped models and share them. "
                    "`hf-taskgroup` alone runs the demo (`run`).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level, show library output")
    parser.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_parser_class())
    for name, module in _commands().items():
        p = sub.add_parser(name, dataclass_types=[module.CONFIG], help=module.HELP, description=module.DESCRIPTION)
        if hasattr(module, "configure"):
            module.configure(p)
        p.set_defaults(_command=name)
    return parser


def _split_globals(argv: Sequence[str]) -> tuple[list[str], SimpleNamespace]:
    flags = SimpleNamespace(debug=False, verbose=False, quiet=False)
    rest = []
    for arg in argv:
        if arg in GLOBAL_FLAGS:
            setattr(flags, GLOBAL_FLAGS[arg], True)
        else:
            rest.append(arg)
    if flags.verbose and flags.quiet:
        raise ConfigError("--verbose and --quiet contradict each other")
    return rest, flags


def _configure_output(flags: SimpleNamespace) -> None:
    """The application (not the library) decides what is shown: INFO with -v, errors only with -q."""
    level = logging.INFO if flags.verbose else logging.ERROR if flags.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_taskgroup").setLevel(level)
    if not flags.verbose:  # the stages show their own progress bars; library chatter only with -v
        import datasets
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    if flags.quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")


def parse(argv: Sequence[str]) -> tuple[str, Any]:
    """``(command, config)`` for a command line (without the global flags); ``--config`` files applied."""
    argv = list(argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run", *argv]  # `hf-taskgroup` alone (or with run's flags) runs the main job
    parser = build_parser()
    namespace = parser.parse_args(argv)
    if getattr(namespace, "_command", None) is None:
        parser.print_help()
        raise SystemExit(2)
    module = _commands()[namespace._command]
    if namespace.config:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[namespace._command]
        sub.set_defaults(**load_config_file(namespace.config, [module.CONFIG]))
        namespace = parser.parse_args(argv)
    return namespace._command, namespace_to_config(module.CONFIG, namespace)


def _user_errors() -> tuple[type[BaseException], ...]:
    from hf_taskgroup.artifacts import ArtifactError
    from hf_taskgroup.data.tasks import TaskValidationError

    # ArtifactError: a refused publish (a folder modified, damaged or unfinished); a RuntimeError for library
    # callers, a user-facing condition here
    return (ConfigError, TaskValidationError, ArtifactError, FileNotFoundError, NotADirectoryError,
            IsADirectoryError)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 2000 else text[:2000] + " ..."


def _hint(err: BaseException, command: str | None) -> str:
    from hf_taskgroup.data.tasks import TaskValidationError

    if isinstance(err, TaskValidationError):
        return "hint: fix the task suite (file, split, column) named above and re-run"
    from hf_taskgroup.artifacts import ArtifactError

    if isinstance(err, ArtifactError):
        return ("hint: the artifact named above was modified or damaged after it was written; re-run the same "
                "command to compute it again (or delete it)")
    if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return "hint: check the path"
    return f"hint: see `{PROG} {command or ''} --help`".replace("  ", " ")


class _Interrupts:
    """SIGINT raises KeyboardInterrupt once; a second Ctrl-C ends the process at once (exit 130).

    ``seen`` stays True after a Ctrl-C even if some library swallowed the KeyboardInterrupt, so the
    command still exits 130 instead of reporting success.
    """

    def __init__(self) -> None:
        self.seen = False
        self.previous: Any = None

    def __enter__(self) -> _Interrupts:
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.seen:
            print(f"{PROG}: {INTERRUPTED_MESSAGE}", file=sys.stderr, flush=True)
            os._exit(130)
        self.seen = True
        raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 internal error, 2 user error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    state = SimpleNamespace(command=None, flags=SimpleNamespace(debug="--debug" in argv, verbose=False, quiet=False))

    def body() -> int:
        rest, state.flags = _split_globals(argv)
        state.command, config = parse(rest)
        _configure_output(state.flags)
        flags = state.flags
        ctx = SimpleNamespace(progress=not flags.quiet, verbose=flags.verbose, quiet=flags.quiet, debug=flags.debug)
        return int(_commands()[state.command].run(config, ctx) or 0)

    return run_guarded(body, state=state)


def run_guarded(body: Callable[[], Any], *, state: SimpleNamespace | None = None, debug: bool | None = None) -> int:
    """Run ``body()`` inside the CLI's error boundary and return the exit code (used by ``main`` and scripts/).

    Example::

        >>> run_guarded(lambda: 0)
        0
    """
    if state is None:
        state = SimpleNamespace(command=None, flags=SimpleNamespace(
            debug=bool(debug) if debug is not None else "--debug" in sys.argv, verbose=False, quiet=False))
    with _Interrupts() as interrupts:
        try:
            code = int(body() or 0)
        except KeyboardInterrupt:
            print(f"{PROG}: {INTERRUPTED_MESSAGE}", file=sys.stderr)
            return 130
        except _user_errors() as err:
            if state.flags.debug:
                traceback.print_exc()
            print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
            print(_hint(err, state.command), file=sys.stderr)
            return 2
        except SystemExit:
            raise
        except Exception as err:  # an internal error: one line, the traceback with --debug
            if state.flags.debug:
                traceback.print_exc()
            print(f"{PROG}: internal error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
            if not state.flags.debug:
                print("re-run with --debug for the traceback", file=sys.stderr)
            return 1
    if interrupts.seen:  # a library swallowed the KeyboardInterrupt: still not a success
        print(f"{PROG}: {INTERRUPTED_MESSAGE}", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
