"""`menas dashboard`: a run's report page served over HTTP and kept fresh from its store while a search runs.

The page is `menas.report.html.page`, the one `menas report` writes as `report.html`, plus its live script: every
few seconds the page asks `GET /version` and reloads once the store's version differs from the one it was built
from. The version is a digest of what the page shows (run status, config, every trial record), read from the store
only when its files changed (`files_state`: size and time of `menas.sqlite` and its WAL), so an idle poll costs
two `stat` calls; the page is rebuilt at most once per version, whatever the number of browsers.

Read-only by construction: each refresh opens the store with `Store.open(readonly=True)` for one snapshot and closes
it, never writes it and never takes the run's lock (`menas.lock`), so a search writing the run (WAL mode: readers
never block its writer) goes on untouched, and a finished run is served the same way. The server is the standard
library's `ThreadingHTTPServer`, bound to 127.0.0.1 unless told otherwise; it serves `/` (the page), `/version`
and an empty `/favicon.ico`, nothing else. No torch.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import logging
import os
import socket
import socketserver
import sqlite3
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from menas.errors import UserError
from menas.folders import RunFolder
from menas.report.html import page
from menas.report.points import lottery_records
from menas.report.tables import title
from menas.search.pareto import config_objectives
from menas.search.record import TrialRecord
from menas.search.store import Store, store_path
from menas.search.summaries import generation_phases

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Seconds between the page's version checks: a trial takes minutes, so a few seconds' delay is nothing, and an
#: unchanged store costs the server two `stat` calls per check.
POLL_S = 2.0
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What the page of one store version is built from, read in one read transaction."""

    version: str
    title: str
    records: tuple[TrialRecord, ...]
    config: dict


def files_state(run_dir: Path) -> tuple:
    """(size, modification time) of the store's file and its WAL: a commit changes one of them (the WAL grows or
    is rewritten; a checkpoint rewrites the file), so equal states mean nothing to read again."""
    state = []
    for path in (store_path(run_dir), Path(f"{store_path(run_dir)}-wal")):
        try:
            st = path.stat()
            state.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            state.append(None)
    return tuple(state)


def read_snapshot(run_dir: Path) -> Snapshot:
    """The store's run status, config and trials, read-only in one snapshot, and their digest as the version."""
    with Store.open(run_dir, readonly=True) as store:
        info, records = store.snapshot()
        config = store.config()
    digest = hashlib.sha256(repr((info.status, config, records)).encode()).hexdigest()[:16]
    return Snapshot(digest, title(run_dir, config, info.status), tuple(records), config)


class Dashboard:
    """The page of one run, rebuilt from its store when the store changed; safe to call from the server's
    threads (one lock: one store read and one page build at a time)."""

    def __init__(self, run_dir: str | os.PathLike[str], poll_s: float = POLL_S) -> None:
        """Reads the store once, so a folder that is not a run fails here, before any port is opened."""
        self.run_dir = Path(run_dir)
        if not store_path(self.run_dir).is_file():
            raise UserError(f"run: {str(self.run_dir)!r} holds no search (no {RunFolder(self.run_dir).store.name})")
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._state: tuple | None = None  # the store files' state when last read (`files_state`)
        self._page: tuple[str, bytes] | None = None  # (version, the page's bytes)
        self._snapshot = self._refresh()

    def version(self) -> str:
        """The store's current version (read again only when its files changed since the last read)."""
        with self._lock:
            return self._refresh().version

    def page(self) -> bytes:
        """The page of the store's current version, UTF-8, built once per version."""
        with self._lock:
            snap = self._refresh()
            if self._page is None or self._page[0] != snap.version:
                self._page = (snap.version, self._build(snap).encode("utf-8"))
            return self._page[1]

    def _refresh(self) -> Snapshot:
        """The latest snapshot; the files' state is taken before reading, so a write during the read is seen at
        the next check, never lost."""
        state = files_state(self.run_dir)
        if state != self._state:
            self._snapshot = read_snapshot(self.run_dir)
            self._state = state
        return self._snapshot

    def _build(self, snap: Snapshot) -> str:
        """`menas report`'s page of the snapshot, with the live script."""
        records = list(snap.records)
        objectives = config_objectives(snap.config)
        searches = lottery_records(self.run_dir, records)
        live = (snap.version, self.poll_s)
        return page(snap.title, records, generation_phases(records), searches, objectives, live=live)


class Handler(BaseHTTPRequestHandler):
    """GET `/` (the page), `/version` (text), `/favicon.ico` (empty, so a browser logs no 404); 404 otherwise.
    A store that cannot be read at the moment answers 503 with the reason; the page retries at its next check."""

    server: DashboardServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            return
        if path not in ("/", "/index.html", "/version"):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            if path == "/version":
                self._send(HTTPStatus.OK, self.server.dashboard.version().encode(), "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.OK, self.server.dashboard.page(), "text/html; charset=utf-8")
        except (UserError, OSError, sqlite3.Error) as exc:  # the run moved, a disk error: say so, keep serving
            LOG.warning("cannot read the run: %s", exc)
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, f"{exc}\n".encode(), "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a check every few seconds would fill the terminal."""


class DashboardServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` serving one `Dashboard`; its address family is set per instance by `bind`."""

    daemon_threads = True

    def __init__(self, address: tuple, dashboard: Dashboard, family: int) -> None:
        self.address_family = family
        self.dashboard = dashboard
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Binds without `HTTPServer`'s reverse DNS lookup of the host (slow, and unused here)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: object, client_address: object) -> None:
        """A browser that closed its connection mid-answer (a reload) is no error worth a traceback; anything else
        is a bug, printed as `socketserver` does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            LOG.debug("connection from %s ended early", client_address)
            return
        super().handle_error(request, client_address)


def resolve(host: str, port: int) -> tuple[int, tuple]:
    """(address family, socket address) to listen on `host:port`; a host that names no address is a UserError."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"--host: got {host!r}, allowed: an address or name of this machine ({exc})") from None
    return family, address


def is_loopback(address: tuple) -> bool:
    """Whether a socket address is reachable from this machine only."""
    return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback


def bind(dashboard: Dashboard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> DashboardServer:
    """A server listening on `host:port` (port 0: a free one, see `server_address`), not yet serving.
    A port in use or an address not of this machine is a UserError."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port: got {port}, allowed: 0 (a free port) to 65535")
    family, address = resolve(host, port)
    try:
        return DashboardServer(address, dashboard, family)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"--port: {port} is in use on {host}; choose another, or --port 0 for a free one") from None
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None


def url(server: DashboardServer) -> str:
    """The page's address as a browser takes it (IPv6 in brackets)."""
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}/" if ":" in str(host) else f"http://{host}:{port}/"
