"""The `menas` command line: the top-level parser assembled from the command modules, and the error handling.
Every user mistake (`UserError`) ends in one line on stderr and exit code 2, no traceback; a bug prints one line
(the traceback with `--debug`). Each command lives in its own module (`cli.genomes`, `cli.train`, `cli.search`,
...), which imports the torch-side modules inside the command, so this module starts without torch."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from menas import __version__
from menas.cli import evaluate, export, genomes, latency, report, retrain, search, train, transfer
from menas.cli.common import EXIT_FAILURE, EXIT_USAGE, Parser
from menas.errors import MenasError, UserError

#: The commands in the order `menas --help` lists them.
COMMANDS = (
    "inspect",
    "sample",
    "train",
    "search",
    "retrain",
    "transfer",
    "resume",
    "status",
    "export",
    "evaluate",
    "latency",
    "latency-table",
    "report",
    "dashboard",
    "lottery",
    "space",
)
#: The modules whose `PARSERS` (command name -> function adding its parser) make up the command line.
MODULES = (genomes, train, search, retrain, transfer, export, evaluate, latency, report)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="menas", description="Multi-trial evolutionary NAS with lottery tickets.")
    parser.add_argument("--version", action="version", version=f"menas {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    adders = {name: add for module in MODULES for name, add in module.PARSERS.items()}
    assert sorted(adders) == sorted(COMMANDS), "every command module's parsers, each listed once in COMMANDS"
    for name in COMMANDS:
        adders[name](sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a command. A user mistake (`UserError`) is one line and exit 2; menas' own failure (`MenasError`) one
    line and exit 1; anything else is a bug: one line and exit 1, with the traceback under `--debug` or
    MENAS_DEBUG=1."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("MENAS_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="menas: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"menas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file or folder the user named cannot be read or written (missing, permissions, full)
        print(f"menas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MenasError as exc:  # menas' own failures (a stopped search, an export that does not match): one line
        print(f"menas: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("menas: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so, and where to find the traceback
        if debug:
            raise
        print(
            f"menas: internal error: {type(exc).__name__}: {exc} (a bug: run with --debug or MENAS_DEBUG=1 for "
            "the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
