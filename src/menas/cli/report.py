"""`menas report`: the figures and tables of a search, written from its store (also while it runs); `menas
dashboard`: the same page served on localhost and kept fresh while the search runs. Torch-free."""

from __future__ import annotations

import argparse
import sys
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serves the run's report page (`menas.report.dashboard`) until Ctrl-C, read-only: a running search is never
    blocked, a finished run is served the same way."""
    from menas.report import dashboard

    board = dashboard.Dashboard(args.run)
    host = dashboard.DEFAULT_HOST if args.host is None else args.host
    server = dashboard.bind(board, host, dashboard.DEFAULT_PORT if args.port is None else args.port)
    try:
        if not dashboard.is_loopback(server.server_address):
            print(
                f"menas: warning: serving on {host}, reachable from other machines: whoever reaches it sees "
                "the run (no authentication); the default --host 127.0.0.1 keeps it on this machine",
                file=sys.stderr,
            )
        print(f"dashboard of {args.run} at {dashboard.url(server)} (Ctrl-C ends it)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:  # the way a dashboard ends: not an error
        print("dashboard stopped", flush=True)
    finally:
        server.server_close()
    return 0


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    # the defaults live in menas.report.dashboard (DEFAULT_PORT, DEFAULT_HOST), imported only when the command runs
    p = sub.add_parser("dashboard", help="the report page served live on localhost (follows a running search)")
    p.add_argument("run", help="the run folder")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default 8765; 0: a free one, printed)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1: this machine only)")
    p.set_defaults(func=cmd_dashboard)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"report": _add_report, "dashboard": _add_dashboard}
