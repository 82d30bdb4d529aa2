"""`report.html`: the report as one self-contained page that opens offline, the figures interactive.

The page holds plotly.js (inlined once, from the `plotly` package: no CDN, nothing fetched), the figures as Plotly
JSON specs (`menas.report.plotly_specs`, from the same data the PNGs draw), a table of every trial and a little
vanilla JS: the table sorts on a header click and filters on the words typed; hovering a point shows its trial,
clicking it highlights and shows the trial's row; the filter, the order and the scroll position are kept in the
tab's sessionStorage, so `menas dashboard`'s reloads keep the view. The specs are plain dicts (the `plotly` package
is read only for its JS), so writing the page costs no plotting import. No torch.
"""

from __future__ import annotations

import html
import json
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from menas.files import write_atomically
from menas.report.plotly_specs import (
    accuracy_figure,
    generations_figure,
    latency_figure,
    lottery_figure,
    pareto_figure,
)
from menas.report.points import Point, best_point, points, run_front
from menas.search.record import TrialRecord
from menas.search.summaries import GenerationPhases
from menas.space.cost import format_count

# ------------------------------------------------------------------------------------------------ the table


def _count(value: float | None) -> tuple[str, object]:
    return ("", None) if value is None else (format_count(value), value)


def _pct(value: float | None) -> tuple[str, object]:
    return ("", None) if value is None else (f"{value:.2f}", value)


def _seconds(value: float | None) -> tuple[str, object]:
    return ("", None) if value is None else (f"{value:.1f}", value)


def _ms(value: float | None) -> tuple[str, object]:
    """A latency in ms: predicted (`final_latency_ms`) or measured (`measured_latency_ms`)."""
    return ("", None) if value is None else (f"{value:.3g}", value)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


#: The table's columns: header -> (a record, whether it is on the front) -> (text shown, value sorted by; None for
#: the text). Scores in percent, costs final (the ticket's when kept), times in seconds.
COLUMNS: dict[str, Callable[[TrialRecord, bool], tuple[str, object]]] = {
    "trial": lambda r, _: (str(r.trial_id), r.trial_id),
    "gen.": lambda r, _: (str(r.generation), r.generation),
    "rung": lambda r, _: (str(r.rung), r.rung),
    "role": lambda r, _: (r.role, None),
    "status": lambda r, _: (r.status, None),
    "front": lambda r, on: ("front" if on else "", None),
    "final top-1": lambda r, _: _pct(r.final_score),
    "trained": lambda r, _: _pct(r.trained_score),
    "fine-tuned": lambda r, _: _pct(r.finetuned_score),
    "ticket recal.": lambda r, _: _pct(r.ticket_recalibrated_score),
    "ticket fine-tuned": lambda r, _: _pct(r.ticket_finetuned_score),
    "MACs": lambda r, _: _count(r.final_macs),
    "params": lambda r, _: _count(r.final_params),
    "cand. MACs": lambda r, _: _count(r.macs),
    "cand. params": lambda r, _: _count(r.params),
    "latency (ms)": lambda r, _: _ms(r.final_latency_ms),
    "measured (ms)": lambda r, _: _ms(r.measured_latency_ms),
    "epoch (s)": lambda r, _: _seconds(_mean(r.train_epoch_s or r.epoch_s)),
    "train (s)": lambda r, _: _seconds(r.train_s),
    "lottery (s)": lambda r, _: _seconds(r.lottery_s),
    "fine-tune (s)": lambda r, _: _seconds(r.finetune_s),
    "parents": lambda r, _: (" ".join(map(str, r.parent_ids)), None),
    "genome": lambda r, _: (r.genome, None),
    "ticket": lambda r, _: (r.ticket or "", None),
}


def table_rows(records: Sequence[TrialRecord], front: set[int]) -> str:
    """The table body: a row per trial (`id="trial-N"`), numeric cells with their value to sort by."""
    rows = []
    for r in records:
        cells = []
        for fn in COLUMNS.values():
            text, value = fn(r, r.trial_id in front)
            sort = "" if value is None else f' data-v="{value!r}"'
            cells.append(f"<td{sort}>{html.escape(text)}</td>")
        rows.append(f'<tr id="trial-{r.trial_id}" class="{html.escape(r.status)}">{"".join(cells)}</tr>')
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------------ the page


def _summary(records: Sequence[TrialRecord], objectives: Sequence[str]) -> str:
    """The line under the title: trials by status, the best network."""
    by_status = {s: sum(r.status == s for r in records) for s in ("done", "failed", "running", "queued")}
    counts = ", ".join(f"{n} {s}" for s, n in by_status.items() if n)
    best = best_point(records)
    line = f"{len(records)} trials ({counts}); Pareto objectives: {', '.join(objectives)}."
    if best is not None:
        kind = " (a lottery ticket)" if best.ticket else ""
        line += (
            f" Best: trial {best.trial_id}, {best.score:.2f}% search-val top-1, {format_count(best.macs)} MACs, "
            f"{format_count(best.params)} params{kind}{_latency_phrase(best)}."
        )
    return html.escape(line)


def _latency_phrase(best: Point) -> str:
    """The best network's latency for the summary: ", predicted latency 1.2 ms, measured 1.3 ms" (or "not
    measured"); "" without a latency table."""
    if best.latency_ms is None:
        return ""
    measured = "not measured" if best.measured_latency_ms is None else f"measured {best.measured_latency_ms:.3g} ms"
    return f", predicted latency {best.latency_ms:.3g} ms, {measured}"


def _json_script(data: object) -> str:
    """JSON safe inside a <script> element ("<" escaped, so no "</script>" ends it early)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def plotly_js() -> str:
    """plotly.js, minified, from the `plotly` package (the page inlines it once)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def page(
    title: str,
    records: Sequence[TrialRecord],
    phases: Sequence[GenerationPhases],
    searches: Sequence[tuple[TrialRecord, dict]],
    objectives: Sequence[str],
    live: tuple[str, float] | None = None,
) -> str:
    """The whole page: figures (the lottery's when `searches`), the trials table, plotly.js and the page's JS.
    `live` is (the store's version, seconds between checks) for `menas dashboard`: the page then asks its server
    for the version that often and reloads when it changed (`LIVE_SCRIPT`); None for the file `menas report`
    writes."""
    pts = points(records)
    front = run_front(pts, records, objectives)
    figures = {
        "generations": generations_figure(phases, pts, records),
        "accuracy": accuracy_figure(pts),
        "pareto": pareto_figure(pts, front, objectives),
    }
    if any(p.latency_ms is not None for p in pts):
        figures["latency"] = latency_figure(pts, front, objectives)
    if searches:
        figures["lottery"] = lottery_figure(searches)
    parts = {
        "title": html.escape(title),
        "summary": _summary(records, objectives),
        "plots": "\n".join(f'<section><div class="plot" id="fig-{name}"></div></section>' for name in figures),
        "headers": "".join(f"<th>{html.escape(name)}</th>" for name in COLUMNS),
        "rows": table_rows(records, {pts[i].trial_id for i in front}),
        "plotly": plotly_js(),
        "figures": _json_script(figures),
        "live": _live_script(live),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], TEMPLATE)  # one pass: inserted text is not read


def _live_script(live: tuple[str, float] | None) -> str:
    """The dashboard's script element (`LIVE_SCRIPT` given the page's version and its period), or nothing."""
    if live is None:
        return ""
    version, every_s = live
    data = _json_script({"version": version, "every_ms": max(100, round(every_s * 1000))})
    return f"<script>{LIVE_SCRIPT}({data});</script>"


def write_page(
    path: Path,
    title: str,
    records: Sequence[TrialRecord],
    phases: Sequence[GenerationPhases],
    searches: Sequence[tuple[TrialRecord, dict]],
    objectives: Sequence[str],
) -> Path:
    """Writes the `page` of a run to `path` atomically."""
    text = page(title, records, phases, searches, objectives)
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


SCRIPT = """
(function () {
  "use strict";
  var body = document.getElementById("trials").tBodies[0];
  var filter = document.getElementById("filter"), shown = document.getElementById("shown");
  var figures = JSON.parse(document.getElementById("figures").textContent);
  var rows = function () { return Array.prototype.slice.call(body.rows); };

  function pick(id) {  // a clicked point: its row highlighted, shown and scrolled to
    var row = document.getElementById("trial-" + id);
    if (!row) return;
    rows().forEach(function (r) { r.classList.remove("picked"); });
    row.classList.add("picked");
    row.hidden = false;
    row.scrollIntoView({block: "center"});
  }

  function applyFilter() {  // rows holding every word typed
    var words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean), count = 0;
    rows().forEach(function (row) {
      var text = row.textContent.toLowerCase();
      row.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      if (!row.hidden) count += 1;
    });
    shown.textContent = count + " of " + body.rows.length + " trials";
  }

  function key(row, column) {  // numbers by value, text by text; empty cells last either way
    var cell = row.cells[column];
    if (cell.hasAttribute("data-v")) return parseFloat(cell.getAttribute("data-v"));
    return cell.textContent === "" ? null : cell.textContent;
  }

  function sortBy(th, up) {  // up: ascending; undefined: the other way from the column's current order
    var column = th.cellIndex, sign;
    if (up === undefined) up = th.getAttribute("aria-sort") !== "ascending";
    sign = up ? 1 : -1;
    Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    rows().map(function (row) { return [key(row, column), row]; }).sort(function (a, b) {
      if (a[0] === null || b[0] === null) return (a[0] === null) - (b[0] === null);
      return a[0] < b[0] ? -sign : a[0] > b[0] ? sign : 0;
    }).forEach(function (pair) { body.appendChild(pair[1]); });
  }

  Object.keys(figures).forEach(function (name) {
    var div = document.getElementById("fig-" + name);
    Plotly.newPlot(div, figures[name].data, figures[name].layout, {responsive: true, displaylogo: false});
    div.on("plotly_click", function (event) {
      var point = event.points[0];
      if (point && point.customdata !== undefined) pick(point.customdata);
    });
  });
  // the view (filter, sort, scroll) kept in the tab's sessionStorage, so the dashboard's reloads keep it
  var stateKey = "menas-view:" + location.pathname, headers = document.querySelectorAll("#trials th");
  function saveView() {
    var sorted = document.querySelector("#trials th[aria-sort]");
    var view = {filter: filter.value, scroll: window.scrollY, sort: sorted ? sorted.cellIndex : -1,
                up: sorted ? sorted.getAttribute("aria-sort") === "ascending" : true};
    try { sessionStorage.setItem(stateKey, JSON.stringify(view)); } catch (e) { /* storage off: nothing kept */ }
  }
  function restoreView() {
    var view = null;
    try { view = JSON.parse(sessionStorage.getItem(stateKey) || "null"); } catch (e) { view = null; }
    if (!view) return;
    filter.value = typeof view.filter === "string" ? view.filter : "";
    if (view.sort >= 0 && view.sort < headers.length) sortBy(headers[view.sort], !!view.up);
    if (typeof view.scroll === "number") window.scrollTo(0, view.scroll);
  }
  headers.forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); saveView(); });
  });
  filter.addEventListener("input", function () { applyFilter(); saveView(); });
  window.addEventListener("scroll", saveView, {passive: true});
  window.addEventListener("pagehide", saveView);
  restoreView();
  applyFilter();
})();
"""

#: `menas dashboard`'s addition (`page(live=...)`): every `every_ms` it asks the server that sent the page for the
#: store's version ("version", beside the page) and reloads once it differs from the page's, so the page follows a
#: running search without a manual reload; a failed check (server busy or gone) is retried at the next period.
LIVE_SCRIPT = """(function (live) {
  "use strict";
  function check() {
    fetch("version", {cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : live.version; })
      .catch(function () { return live.version; })
      .then(function (v) { if (v !== live.version) location.reload(); else setTimeout(check, live.every_ms); });
  }
  setTimeout(check, live.every_ms);
})"""

TEMPLATE = (
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.plot { min-height: 300px; }
#filter { width: 30em; padding: 0.3em; }
table { border-collapse: collapse; font-size: 0.85em; margin-top: 0.5em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.4em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; position: sticky; top: 0; }
th[aria-sort=ascending]::after { content: " \\25b2"; }
th[aria-sort=descending]::after { content: " \\25bc"; }
td:nth-last-child(-n+2) { text-align: left; font-family: monospace; white-space: normal; word-break: break-all;
  min-width: 25em; }
tr.failed { color: #a00; }
tr.queued, tr.running { color: #888; }
tr.picked { background: #fff3b0; }
</style>
</head>
<body>
<h1>{{title}}</h1>
<p>{{summary}}</p>
{{plots}}
<section>
<h2>Trials</h2>
<p>Click a point to find its trial here; click a header to sort; type to keep the rows holding every word.</p>
<input id="filter" type="search" placeholder="filter, e.g. done front 3" aria-label="filter the trials">
<span id="shown"></span>
<table id="trials">
<thead><tr>{{headers}}</tr></thead>
<tbody>
{{rows}}
</tbody>
</table>
</section>
<script>{{plotly}}</script>
<script type="application/json" id="figures">{{figures}}</script>
<script>"""
    + SCRIPT
    + """</script>
{{live}}
</body>
</html>
"""
)
