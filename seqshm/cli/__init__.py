"""The ``seqshm`` command line: list channels, show one's layout and state, watch it live,
record every write to a file, serve channels to Prometheus, and a live demo. One module per
command (COMMANDS); only the chosen one is imported, with its dependencies."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Protocol

import seqshm
from seqshm.cli._base import (
    EPILOG,
    EXIT_FAILED,
    EXIT_USAGE,
    Failure,
    Signalled,
    error_text,
    raise_signalled,
)
from seqshm.cli._format import printable

__all__ = ["COMMANDS", "build_parser", "main"]

#: Each command: the module that adds its arguments and runs it, and its one-line summary for
#: ``seqshm --help`` (pip's commands_dict). In the order --help lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("seqshm.cli.list", "list the channels in /dev/seqshm and /dev/shm"),
    "info": ("seqshm.cli.info", "print a channel's layout and state"),
    "watch": ("seqshm.cli.watch", "show a channel live with its update rate"),
    "record": ("seqshm.cli.record", "record every write of a channel to a file"),
    "export": ("seqshm.cli.export",
               "serve channels as Prometheus metrics (pip install 'seqshm[export]')"),
    "demo": ("seqshm.cli.demo", "publish this host's per-CPU times and watch them live"),
}


class _Command(Protocol):
    """What a command's module provides."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


def _command(name: str) -> _Command:
    module: _Command = importlib.import_module(COMMANDS[name][0])
    return module


def _chosen(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (the top level's
    options, -h and --version, take no value)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of the command line, with the arguments of ``command`` only (its module is
    imported; the others' are not, nor their dependencies)."""
    parser = argparse.ArgumentParser(
        prog="seqshm", description="Lock-free snapshots of live data shared by a seqlock.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {seqshm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        # each command's --help ends with what a CHANNEL is and the exit statuses
        p = sub.add_parser(name, help=summary, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == command:
            _command(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seqshm`` command with the arguments ``argv`` (None: ``sys.argv[1:]``) and
    return its exit status: 0 success, 1 a runtime error, 2 a usage error, 130 Ctrl-C, 128+N
    signal N (the ``seqshm`` console script and ``python -m seqshm`` call it)."""
    # (no list() in this module: importing seqshm.cli.list binds the name here to that module)
    words = sys.argv[1:] if argv is None else [*argv]
    args = build_parser(_chosen(words)).parse_args(words)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, raise_signalled)
                    for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _command(args.command).run(args)
    except KeyboardInterrupt as e:
        return 128 + (e.signum if isinstance(e, Signalled) else signal.SIGINT)
    except BrokenPipeError:
        # the reader of our output went away (| head): say nothing more, as C tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Failure as e:
        code, text = e.code, str(e)
    except seqshm.FileTruncated as e:
        code, text = EXIT_FAILED, error_text(e)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            seqshm.FormatError) as e:
        code, text = EXIT_USAGE, error_text(e)
    except (OSError, seqshm.SeqshmError) as e:
        code, text = EXIT_FAILED, error_text(e)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"seqshm: {printable(text)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
