"""`report.html`: the report in one self-contained page (plotly.js inlined once, the figures as Plotly JSON, a row
per trial), built from stores recorded by hand as `test_report` builds them. No browser: the page's structure and
data are checked here, its rendering by the browser test."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest

from menas.cli.main import main
from menas.report.build import PAGE, write_report
from menas.report.html import COLUMNS, plotly_js
from menas.search.store import Store
from menas.search.strategies import TrialSpec
from test_report import _run_with_phases, _run_with_trials

FIGURES_JSON = re.compile(r'<script type="application/json" id="figures">(.*?)</script>', re.S)
ROW = re.compile(r'<tr id="trial-(\d+)" class="(\w+)">(.*?)</tr>', re.S)


def _figures(page: str) -> dict[str, dict]:
    """The page's figure specs, each checked by plotly's own validators (a misspelt property fails)."""
    figures = json.loads(FIGURES_JSON.search(page).group(1))
    for spec in figures.values():
        go.Figure(spec)
    return figures


def _rows(page: str) -> dict[int, tuple[str, list[str]]]:
    """trial id -> (row class, cell texts) of the trials table."""
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    return {int(i): (status, re.findall(r"<td[^>]*>(.*?)</td>", cells)) for i, status, cells in ROW.findall(body)}


def _cell(cells: list[str], column: str) -> str:
    return cells[list(COLUMNS).index(column)]


def _trial_points(figure: dict) -> list[int]:
    """The trial ids of the accuracy figure's per-generation traces, one marker per done trial."""
    return [i for t in figure["data"] if t["name"].startswith("generation ") for i in t["customdata"]]


def test_report_html_is_one_self_contained_page(tmp_path: Path) -> None:
    run = _run_with_trials(tmp_path)
    paths = write_report(run)
    assert paths[-1] == run / "report" / PAGE and [p.name for p in (run / "report").glob("*.html")] == [PAGE]
    page = paths[-1].read_text()
    bundle = plotly_js()
    assert page.count(bundle) == 1 and page.count("<script") == 3  # plotly.js, the figures' JSON, the page's JS
    rest = page.replace(bundle, "")
    # nothing loaded from elsewhere: no URL outside plotly's bundle (whose URLs are strings of map and logo
    # attributions, unused here), no element that loads a file
    assert "http://" not in rest and "https://" not in rest and "//" not in rest.replace("// ", "")
    assert not re.search(r"<(link|img|iframe|object|embed)\b|<script[^>]*\bsrc=|@import|url\(", rest)

    rows = _rows(page)
    assert sorted(rows) == list(range(6)) and rows[2][0] == "failed" and rows[5][0] == "queued"
    assert _cell(rows[1][1], "ticket") == "ticket-1" and _cell(rows[1][1], "MACs") == "4M"
    assert _cell(rows[1][1], "final top-1") == "71.50" and _cell(rows[1][1], "trained") == "72.00"
    assert [i for i, (_, cells) in sorted(rows.items()) if _cell(cells, "front") == "front"] == [1, 3, 4]
    assert 'data-v="71.5"' in page  # numbers sort by value

    figures = _figures(page)
    assert list(figures) == ["generations", "accuracy", "pareto"]  # no ticket search recorded: no lottery panels
    accuracy = figures["accuracy"]
    assert sorted(_trial_points(accuracy)) == [0, 1, 3, 4]
    generation_0 = accuracy["data"][0]
    hover = dict(zip(generation_0["customdata"], generation_0["hovertext"], strict=True))
    assert "trial 1" in hover[1] and "ticket-1" in hover[1] and "71.50%" in hover[1] and "72.00%" in hover[1]
    (arrow,) = accuracy["layout"]["annotations"]  # the ticket linked to its candidate
    assert (arrow["ax"], arrow["ay"], arrow["x"], arrow["y"]) == (7.0, 72.0, 4.0, 71.5)
    front = [t for t in figures["pareto"]["data"] if t["name"] == "Pareto front"]
    assert [t["customdata"] for t in front] == [[3, 1, 4]] * 2 and front[0]["mode"] == "lines+markers"
    assert "Best: trial 4, 74.00% search-val top-1, 8M MACs" in page


def test_report_html_has_the_generations_and_the_lottery_panels(tmp_path: Path) -> None:
    run = _run_with_phases(tmp_path)
    figures = _figures(write_report(run)[-1].read_text())
    assert list(figures) == ["generations", "accuracy", "pareto", "lottery"]
    generations = {t["name"]: t for t in figures["generations"]["data"]}
    assert generations["candidates"]["x"] == [0, 1] and generations["tickets"]["error_y"]["array"][0] == 0.0
    assert generations["replaced by a ticket"]["y"] == [50.0, 50.0]
    assert generations["ticket fine-tuned"]["y"] == [71.0, 73.0] and generations["candidate trained"]["x"] == [0, 1]
    assert sorted(generations["epoch time"]["customdata"]) == [0, 1, 2, 3]
    lottery = {t["name"]: t for t in figures["lottery"]["data"]}
    assert len(lottery["proposals"]["x"]) == 5 and lottery["proposals"]["y"][:3] == [51.0, 52.0, 52.0]
    assert (lottery["ticket after fine-tune"]["x"], lottery["ticket after fine-tune"]["y"]) == ([4.0], [71.0])
    assert lottery["candidate (trained)"]["customdata"] == [1]


def test_report_html_escapes_what_the_store_holds(tmp_path: Path) -> None:
    """A genome string that looks like markup stays text: in the table, and in the figures' JSON."""
    run = tmp_path / "run"
    odd = 'stem</script><img src="x">&|ir'
    with Store.create(run, {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(0, odd, 0, "sample", (), False)])
        store.finish_trial(0, trained_score=50.0, macs=1_000_000, params=10_000)
    page = write_report(run)[-1].read_text()
    assert odd not in page and "</script><img" not in page
    assert _cell(_rows(page)[0][1], "genome") == html.escape(odd)
    hover = _figures(page)["accuracy"]["data"][0]["hovertext"][0]
    assert "stem&lt;/script&gt;&lt;img src=&quot;x&quot;&gt;&amp;<br>ir" in hover  # a stage a line


def test_report_cli_prints_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_with_trials(tmp_path)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"open {run / 'report' / PAGE} in a browser" in out.replace("\n", "")
    assert (run / "report" / PAGE).stat().st_size > len(plotly_js())
