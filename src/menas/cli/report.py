"""`menas report`: the figures and tables of a search, written from its store (also while it runs); torch-free."""

from __future__ import annotations

import argparse
from pathlib import Path

from menas.cli.common import make_console
from menas.errors import UserError


def cmd_report(args: argparse.Namespace) -> int:
    """Figures and tables of a search (works while it runs): accuracy vs MACs per generation, epoch time per
    generation, Pareto front, trials.csv, report.md and report.html (all of it in one self-contained page)."""
    from menas.report.build import write_report
    from menas.search.store import store_path

    run = Path(args.run)
    if not store_path(run).exists():
        raise UserError(f"run: {str(run)!r} holds no search (no menas.sqlite)")
    paths = write_report(run, args.out)
    console = make_console()
    console.print(f"wrote {len(paths)} files to {paths[0].parent}/: " + ", ".join(p.name for p in paths))
    console.print(f"open {paths[-1]} in a browser: the report in one page, interactive, works offline")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plots and tables of a search (works while it runs)")
    p.add_argument("run", help="the run folder")
    p.add_argument("--out", default=None, help="folder for the report (default: RUN/report)")
    p.set_defaults(func=cmd_report)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"report": _add_report}
