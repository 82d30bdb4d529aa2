"""The report page in a real browser: headless Chromium, driven over the Chrome DevTools Protocol by the small
client below (`--remote-debugging-pipe`: JSON messages ended by a NUL byte on file descriptors 3 and 4, standard
library only). `report.html` of a run must render without a console error or an uncaught exception, with a table
row per trial and a plot mark per finished trial; `menas dashboard`'s page must show a trial a writer adds, by
itself, without a manual reload.

Skipped when no Chromium binary is found (`MENAS_CHROMIUM`, else `chromium` on PATH); `make test` installs Debian's
`chromium` package where apt-get is available (scripts/install-chromium.sh), so CI runs them.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from menas.report.build import write_report
from menas.report.dashboard import Dashboard, bind, url
from menas.search.store import Store
from test_dashboard import add_trial
from test_report import _run_with_phases, _run_with_trials

CHROMIUM = os.environ.get("MENAS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
#: CI installs chromium (make test: scripts/install-chromium.sh), so there a missing browser fails, never skips
REQUIRED = os.environ.get("CI", "").lower() in ("1", "true", "yes")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not REQUIRED,
    reason="no chromium binary (set MENAS_CHROMIUM, or apt-get install chromium: make test does)",
)
WIDTH, HEIGHT = 1280, 900
#: Runs `argv[3:]` with the pipe ends `argv[1]` and `argv[2]` as its fds 3 and 4, where `--remote-debugging-pipe`
#: expects them (copied above 9 first, so neither is overwritten by the other; no preexec_fn in a threaded process).
ON_FDS_3_AND_4 = """import fcntl, os, sys
ends = [int(fd) for fd in sys.argv[1:3]]
copies = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends]
for fd in ends:
    os.close(fd)
os.dup2(copies[0], 3)
os.dup2(copies[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


class ProtocolError(RuntimeError):
    """The browser answered a command with an error (or not at all)."""


class Browser:
    """A headless Chromium of its own (temporary profile, new process group) and its DevTools connection: commands
    go to the browser's fd 3, answers and events come back on its fd 4; a reader thread files answers by id and
    keeps events. `close` ends the browser, killing its process group if it does not end by itself."""

    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._answers, from_browser = os.pipe()
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                 "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                 f"--window-size={WIDTH},{HEIGHT}", "about:blank"]  # fmt: skip
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", ON_FDS_3_AND_4, str(to_browser), str(from_browser), binary, *flags],
                pass_fds=(to_browser, from_browser),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        os.close(to_browser)
        os.close(from_browser)
        self._next_id, self._results, self.events = 0, {}, []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Files every message from the browser until it closes its end."""
        buffer = b""
        while chunk := os.read(self._answers, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._changed:
                for message in map(json.loads, messages):
                    if "id" in message:
                        self._results[message["id"]] = message
                    else:
                        self.events.append(message)
                self._changed.notify_all()

    def call(self, method: str, session: str | None = None, timeout: float = 20.0, **params: Any) -> dict:
        """Sends one command (to the page of `session`, else the browser) and returns its result."""
        with self._changed:
            self._next_id += 1
            number = self._next_id
        message = {"id": number, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        with self._changed:
            if not self._changed.wait_for(lambda: number in self._results, timeout):
                raise ProtocolError(f"{method}: no answer in {timeout} s")
            answer = self._results.pop(number)
        if "error" in answer:
            raise ProtocolError(f"{method}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        """Asks the browser to close, then kills whatever of its process group is left."""
        try:
            self.call("Browser.close", timeout=5)
            self.proc.wait(10)
        except (ProtocolError, OSError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        os.close(self._commands)
        self._reader.join(5)
        os.close(self._answers)


class Tab:
    """One page of the browser, attached in flat mode, with its console errors and uncaught exceptions."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.call("Target.attachToTarget", targetId=self.target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: Any) -> dict:
        return self.browser.call(method, self.session, **params)

    def open(self, address: str) -> None:
        """Navigates and waits for the load event."""
        loaded = len(self._events("Page.loadEventFired"))
        self.call("Page.navigate", url=address)
        self.wait_for(lambda: len(self._events("Page.loadEventFired")) > loaded, f"{address} loaded")

    def evaluate(self, expression: str) -> Any:
        """The value of a JS expression in the page (promises awaited); an exception raises ProtocolError."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: Any, what: str, timeout: float = 20.0) -> Any:
        """Polls `condition` (a JS expression, or a callable) until it is truthy; a page between two documents (a
        reload) answers with an error, which counts as not yet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(condition) if isinstance(condition, str) else condition()
            except ProtocolError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"waited {timeout} s for {what}; console errors: {self.errors()}")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def _events(self, method: str) -> list[dict]:
        with self.browser._changed:
            return [
                e["params"] for e in self.browser.events if e["method"] == method and e.get("sessionId") == self.session
            ]

    def errors(self) -> list[str]:
        """Console errors, failed asserts, uncaught exceptions and error log entries (a resource that failed to
        load, a violation) of this page so far."""
        found = []
        for call in self._events("Runtime.consoleAPICalled"):
            if call["type"] in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in call["args"]))
        for thrown in self._events("Runtime.exceptionThrown"):
            details = thrown["exceptionDetails"]
            found.append(f"exception: {details.get('exception', {}).get('description', details['text'])}")
        for entry in self._events("Log.entryAdded"):
            if entry["entry"]["level"] == "error":
                found.append(f"log: {entry['entry']['text']} ({entry['entry'].get('url', '')})")
        return found

    def close(self) -> None:
        self.browser.call("Target.closeTarget", targetId=self.target)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One headless Chromium for the module's tests, always ended after them."""
    if CHROMIUM is None:
        pytest.fail("CI is set but no chromium binary is installed (make test runs scripts/install-chromium.sh)")
    folder = tmp_path_factory.mktemp("chromium")
    with tempfile.TemporaryDirectory(prefix="menas-chromium-") as profile:
        started = Browser(CHROMIUM, Path(profile), folder / "chromium.log")
        try:
            started.call("Browser.getVersion", timeout=30)
            yield started
        finally:
            started.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    page = Tab(browser)
    try:
        yield page
    finally:
        page.close()


#: Per trace of a figure: its name, its trial ids and the marks plotly drew for it (SVG points, in trace order).
MARKS = """(function (name) {
  var div = document.getElementById("fig-" + name);
  var drawn = Array.prototype.map.call(div.querySelectorAll(".scatterlayer .trace"), function (g) {
    return g.querySelectorAll("path.point").length;
  });
  return div.data.map(function (t, i) { return {name: t.name, ids: t.customdata, drawn: drawn[i]}; });
})"""
ROWS = "document.querySelectorAll('#trials tbody tr').length"


def accuracy_marks(tab: Tab) -> list[int]:
    """The trial ids drawn in the accuracy figure's generation traces, each checked to have one mark per id."""
    traces = [t for t in tab.evaluate(MARKS + '("accuracy")') if t["name"].startswith("generation ")]
    for trace in traces:
        assert trace["drawn"] == len(trace["ids"]), trace
    return sorted(i for t in traces for i in t["ids"])


def expected(run: Path) -> tuple[list[int], list[int]]:
    """(every trial id, the done trials' ids) of a run, from its store."""
    with Store.open(run, readonly=True) as store:
        records = store.trials()
    return [r.trial_id for r in records], [r.trial_id for r in records if r.status == "done"]


def assert_not_blank(png: bytes) -> None:
    """A screenshot of the page's size with plots in it: many colours, not one background."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "a blank (or nearly blank) screenshot"
    assert max(count for count, _ in colours) < 0.97 * WIDTH * HEIGHT


@pytest.mark.parametrize("make_run", [_run_with_trials, _run_with_phases], ids=["trials", "phases"])
def test_report_html_renders_every_trial_without_an_error(tmp_path: Path, tab: Tab, make_run) -> None:
    run = make_run(tmp_path)
    page = write_report(run)[-1]
    trials, done = expected(run)
    tab.open(page.as_uri())
    figures = list(json.loads(tab.evaluate("document.getElementById('figures').textContent")))
    tab.wait_for(f"document.querySelectorAll('.plot .main-svg').length >= {len(figures)}", "every figure drawn")

    rows = tab.evaluate("Array.prototype.map.call(document.querySelectorAll('#trials tbody tr'), r => r.id)")
    assert rows == [f"trial-{i}" for i in trials]  # one row per trial, failed and queued ones too
    assert tab.evaluate("document.getElementById('shown').textContent") == f"{len(trials)} of {len(trials)} trials"
    assert accuracy_marks(tab) == done  # one mark per finished trial
    assert all(t["drawn"] == len(t["ids"]) for t in tab.evaluate(MARKS + '("pareto")'))
    assert_not_blank(tab.screenshot())
    (tmp_path / "report.png").write_bytes(tab.screenshot())  # kept with the test's files, to look at

    # the page's own JS works: the filter keeps the rows holding the word, a header click sorts
    tab.evaluate("var f = document.getElementById('filter'); f.value = 'done'; f.dispatchEvent(new Event('input'))")
    assert tab.evaluate("document.querySelectorAll('#trials tbody tr:not([hidden])').length") == len(done)
    tab.evaluate("document.querySelector('#trials th').click(); document.querySelector('#trials th').click()")
    assert tab.evaluate("document.querySelector('#trials tbody tr').id") == f"trial-{max(trials)}"
    assert tab.errors() == []


def test_the_dashboard_shows_a_new_trial_by_itself(tmp_path: Path, tab: Tab) -> None:
    run = _run_with_trials(tmp_path)
    trials, done = expected(run)
    server = bind(Dashboard(run, poll_s=0.3), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        tab.open(url(server))
        tab.wait_for(f"{ROWS} === {len(trials)} && document.querySelectorAll('path.point').length > 0", "the page")
        assert accuracy_marks(tab) == done
        # the user's view: only finished trials, newest first
        tab.evaluate("var f = document.getElementById('filter'); f.value = 'done'; f.dispatchEvent(new Event('input'))")
        tab.evaluate("document.querySelector('#trials th').click(); document.querySelector('#trials th').click()")
        tab.evaluate("window.notReloaded = true")
        time.sleep(1.0)  # a few checks of an unchanged store: the page stays (no reload)
        assert tab.evaluate("window.notReloaded") is True

        with Store.open(run) as store:  # a search records a trial
            add_trial(store, len(trials), 75.0)
        tab.wait_for(f"{ROWS} === {len(trials) + 1}", "the new trial's row", timeout=15)
        tab.wait_for("document.querySelectorAll('#fig-accuracy path.point').length > 0", "the plots again")
        assert tab.evaluate("window.notReloaded") is None  # the page reloaded itself
        assert accuracy_marks(tab) == [*done, len(trials)]
        assert tab.evaluate(f"document.getElementById('trial-{len(trials)}').className") == "done"
        # the reload kept the view: the filter typed, the rows it hides, the order chosen (the new trial first)
        assert tab.evaluate("document.getElementById('filter').value") == "done"
        assert tab.evaluate("document.querySelectorAll('#trials tbody tr:not([hidden])').length") == len(done) + 1
        assert tab.evaluate("document.querySelector('#trials th').getAttribute('aria-sort')") == "descending"
        assert tab.evaluate("document.querySelector('#trials tbody tr').id") == f"trial-{len(trials)}"
        assert_not_blank(tab.screenshot())
        assert tab.errors() == []  # while served: once it ends, a check that cannot connect is logged
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
