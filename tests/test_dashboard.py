"""`menas dashboard`: the report page served from a run's store and kept fresh while a search writes it, read-only
(no write, no lock, never in the writer's way); bad input is one line and exit 2. No browser here: the page's
rendering and its reload are checked by tests/test_browser.py."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from menas.cli.main import main
from menas.files import FolderLock
from menas.folders import LOCK_FILE
from menas.report import dashboard
from menas.report.dashboard import Dashboard, bind, read_snapshot, url
from menas.search.store import Store
from menas.search.strategies import TrialSpec
from test_report import _run_with_trials


@contextmanager
def serving(board: Dashboard) -> Iterator[str]:
    """The dashboard served on a free loopback port in a thread; yields its URL, shuts it down after."""
    server = bind(board, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get(address: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(address, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def add_trial(store: Store, trial_id: int, score: float) -> None:
    """What a search records of one trial: queued, running, done."""
    store.add_trials([TrialSpec(trial_id, f"genome-{trial_id}", 2, "sample", (), False)])
    store.mark_running(trial_id)
    store.finish_trial(trial_id, trained_score=score, macs=1_000_000 + trial_id, params=10_000, epoch_s=[1.0])


def test_dashboard_serves_the_page_and_follows_the_store(tmp_path: Path) -> None:
    run = _run_with_trials(tmp_path)
    board = Dashboard(run, poll_s=0.5)
    with serving(board) as address:
        status, kind, body = get(address)
        page = body.decode()
        assert status == 200 and kind == "text/html; charset=utf-8"
        assert page.count('<tr id="trial-') == 6 and "trial-6" not in page
        version = get(address + "version")[2].decode()
        assert version == read_snapshot(run).version and f'{{"version":"{version}","every_ms":500}}' in page
        assert get(address + "version")[2].decode() == version  # nothing changed: the same version
        assert get(address + "favicon.ico")[:1] == (204,) and get(address + "nothing")[0] == 404

        with Store.open(run) as store:  # a search records another trial
            add_trial(store, 6, 75.0)
        new = get(address + "version")[2].decode()
        assert new != version and new == read_snapshot(run).version
        page = get(address)[2].decode()
        assert page.count('<tr id="trial-') == 7 and 'id="trial-6" class="done"' in page and new in page
        with Store.open(run) as store:  # the run's status alone is a change too
            store.set_status("finished")
        assert get(address + "version")[2].decode() != new and ", finished)" in get(address)[2].decode()


def test_the_page_is_built_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run_with_trials(tmp_path)
    board = Dashboard(run)
    board.version()  # the first read-only open may add SQLite's -wal and -shm files: one more read, once
    built, reads = [], []
    monkeypatch.setattr(dashboard, "page", lambda *a, **k: built.append(a) or "page")
    monkeypatch.setattr(dashboard, "read_snapshot", lambda r: reads.append(r) or read_snapshot(r))
    assert board.page() == board.page() == b"page" and len(built) == 1
    for _ in range(3):
        board.version()
    assert reads == []  # the store's files did not change: not read again
    with Store.open(run) as store:
        add_trial(store, 6, 75.0)
    assert board.page() == board.page() == b"page" and len(built) == 2 and reads
    # (the writer's close removed the WAL, the next read-only open adds it back: a second read, the same version)
    count = len(reads)
    for _ in range(3):
        board.version()
    assert len(reads) == count and len(built) == 2


def test_a_writing_search_is_never_blocked(tmp_path: Path) -> None:
    """A search-like writer holds the run's lock and records trials while clients read the page and its version
    as fast as they can: every write goes through at once (the writer would fail on the first lock conflict: no
    busy wait), the dashboard never needs the lock, and it ends showing every trial."""
    run = _run_with_trials(tmp_path)
    board = Dashboard(run, poll_s=0.1)
    stop, seen, waits = threading.Event(), [], []

    def client(address: str, path: str) -> None:
        while not stop.is_set():
            seen.append(get(address + path)[0])

    with serving(board) as address, FolderLock(run, "search"):
        clients = [threading.Thread(target=client, args=(address, p)) for p in ("", "version", "version")]
        for c in clients:
            c.start()
        try:
            with Store.open(run) as store:
                store._conn.execute("PRAGMA busy_timeout = 0")  # a lock the dashboard held would fail a write
                for i in range(6, 26):
                    start = time.perf_counter()
                    add_trial(store, i, 60.0 + i / 2)
                    waits.append(time.perf_counter() - start)
                    time.sleep(0.02)
        finally:
            stop.set()
            for c in clients:
                c.join(30)
        page = get(address)[2].decode()
    assert len(waits) == 20 and max(waits) < 2.0, waits  # three fsynced commits each, never a busy wait
    assert seen.count(200) == len(seen) and len(seen) > 20
    assert page.count('<tr id="trial-') == 26 and board.version() == read_snapshot(run).version


def test_the_dashboard_writes_nothing_and_takes_no_lock(tmp_path: Path) -> None:
    run = _run_with_trials(tmp_path)
    with Store.open(run) as store:
        store.set_status("finished")  # a finished run is served the same way
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with serving(Dashboard(run)) as address:
        assert get(address)[0] == 200 and get(address + "version")[0] == 200
    assert not (run / LOCK_FILE).exists() and not (run / "report").exists()
    assert (run / "menas.sqlite").read_bytes() == before["menas.sqlite"]


def test_an_unreadable_store_answers_503_and_the_server_goes_on(tmp_path: Path) -> None:
    run = _run_with_trials(tmp_path)
    moved = tmp_path / "moved"
    with serving(Dashboard(run)) as address:
        assert get(address + "version")[0] == 200
        run.rename(moved)  # the run folder moved away while served
        status, _, body = get(address + "version")
        assert status == 503 and b"no menas store there" in body
        moved.rename(run)
        assert get(address + "version")[0] == 200


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("menas: error: "), err
    return err[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["dashboard", str(empty)]) == 2 and "holds no search" in _one_error_line(capsys)
    assert main(["dashboard", str(tmp_path / "missing")]) == 2 and "holds no search" in _one_error_line(capsys)
    assert list(empty.iterdir()) == [] and not (tmp_path / "missing").exists()
    (empty / "menas.sqlite").write_text("not a database")
    assert main(["dashboard", str(empty)]) == 2 and "not a menas store" in _one_error_line(capsys)

    run = _run_with_trials(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", str(run), "--port", str(port)]) == 2
        assert f"--port: {port} is in use" in _one_error_line(capsys)
    assert main(["dashboard", str(run), "--port", "70000"]) == 2 and "--port: got 70000" in _one_error_line(capsys)
    assert main(["dashboard", str(run), "--host", "192.0.2.1", "--port", "0"]) == 2  # not this machine's address
    assert "cannot listen there" in _one_error_line(capsys)
    assert main(["dashboard", str(run), "--host", "no-such-host.invalid"]) == 2
    assert "--host: got 'no-such-host.invalid'" in _one_error_line(capsys)
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("menas.sqlite")) == []


def test_the_help_names_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dashboard", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {dashboard.DEFAULT_PORT};" in text and f"default {dashboard.DEFAULT_HOST}:" in text


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_the_command_prints_its_url_and_ends_on_ctrl_c(tmp_path: Path, host: str) -> None:
    """One line with the URL; another host than loopback warns first; Ctrl-C (SIGINT) ends it with exit 0."""
    run = _run_with_trials(tmp_path)
    # Ctrl-C as a terminal sends it, even when this test runs in the background (where SIGINT is inherited ignored)
    entry = "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    entry += "from menas.cli.main import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", entry, "dashboard", str(run), "--port", "0", "--host", host]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        address = line.split(" at ")[1].split()[0]
        assert line.startswith(f"dashboard of {run} at http://{host}:") and address.endswith("/")
        assert get(address + "version")[2].decode() == read_snapshot(run).version
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and out == "dashboard stopped\n"
    if host == "127.0.0.1":
        assert err == ""
    else:
        assert (
            err.startswith("menas: warning: serving on 0.0.0.0, reachable from other machines")
            and len(err.splitlines()) == 1
        )
