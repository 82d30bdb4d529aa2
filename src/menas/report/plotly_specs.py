"""The interactive figures of `report.html` and `menas dashboard` as Plotly JSON specs: plain dicts built from the
same data the PNGs draw (`menas.report.points`, the store's `GenerationPhases`, the ticket searches), so building
them costs no plotting import; `menas.report.html` puts them on the page. One figure a function: score per
generation by phase, accuracy against MACs and params per generation (candidate -> ticket arrows), the Pareto
front, accuracy against latency, the lottery's proposals. No torch.
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Sequence
from typing import Any

from menas.report.points import Point
from menas.search.record import TrialRecord
from menas.search.summaries import GenerationPhases
from menas.space.cost import format_count

Figure = dict[str, Any]  # a Plotly figure spec: {"data": [traces], "layout": {...}}

CANDIDATE, TICKET, FRONT, OTHERS = "#1f77b4", "#d62728", "#d62728", "#bbbbbb"
#: viridis at 0, 1/4, 1/2, 3/4 and 1, as the PNGs colour generations
_VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
#: the phases' scores drawn per generation: record field -> label
PHASE_SCORES = {
    "trained_score": "candidate trained",
    "finetuned_score": "candidate fine-tuned",
    "ticket_recalibrated_score": "ticket recalibrated",
    "ticket_finetuned_score": "ticket fine-tuned",
}
TOP1 = "search-val top-1 (%)"


# ------------------------------------------------------------------------------------------------ helpers


def _viridis(k: int, n: int) -> str:
    """The colour of generation number `k` of `n` (linear between viridis' anchors)."""
    x = (k / max(1, n - 1)) * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    rgb = (round(a + (b - a) * (x - i)) for a, b in zip(_VIRIDIS[i], _VIRIDIS[i + 1], strict=True))
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _spread(values: Sequence[float]) -> tuple[float, float] | None:
    return (statistics.fmean(values), statistics.pstdev(values)) if values else None


def _genome_lines(genome: str) -> str:
    """A genome for a hover box: one stage a line."""
    return "<br>".join(html.escape(stage) for stage in genome.split("|"))


def _hover(p: Point) -> str:
    """What hovering a trial's point shows: its id, generation, final score and cost, candidate, genome."""
    lines = [
        f"<b>trial {p.trial_id}</b> (generation {p.generation})",
        f"top-1 {p.score:.2f}%, {format_count(p.macs)} MACs, {format_count(p.params)} params",
    ]
    if _linked(p):
        lines.append(f"a lottery ticket of a {p.candidate_score:.2f}%, {format_count(p.candidate_macs)} candidate")
    return "<br>".join([*lines, _genome_lines(p.genome)])


def _suffix(k: int) -> str:
    """Plotly's name suffix of the axes of subplot `k` (0-based): x, x2, x3, ..."""
    return "" if k == 0 else str(k + 1)


def _axes(k: int) -> dict[str, str]:
    """A trace's axes in subplot `k`."""
    return {"xaxis": "x" + _suffix(k), "yaxis": "y" + _suffix(k)}


def _layout(title: str, height: int, panels: Sequence[tuple[str, str]], columns: int = 1, **extra: Any) -> dict:
    """A figure's layout: its title and height, an (x title, y title) per panel, `columns` panels a row."""
    layout = {"title": {"text": title}, "height": height, "hovermode": "closest", "margin": {"t": 60}, **extra}
    if len(panels) > 1:
        layout["grid"] = {"rows": -(-len(panels) // columns), "columns": columns, "pattern": "independent"}
    for k, (x, y) in enumerate(panels):
        layout["xaxis" + _suffix(k)] = {"title": {"text": x}}
        layout["yaxis" + _suffix(k)] = {"title": {"text": y}}
    return layout


def _band(x: list[int], spreads: list[tuple[float, float] | None], scale: float = 1.0) -> dict[str, Any]:
    """A trace of mean +- standard deviation per generation, generations without a value left out."""
    shown = [(g, s) for g, s in zip(x, spreads, strict=True) if s is not None]
    return {
        "type": "scatter",
        "mode": "lines+markers",
        "x": [g for g, _ in shown],
        "y": [m / scale for _, (m, _) in shown],
        "error_y": {"type": "data", "array": [s / scale for _, (_, s) in shown], "visible": True},
    }


# ------------------------------------------------------------------------------------------------ figures


def generations_figure(
    phases: Sequence[GenerationPhases], pts: Sequence[Point], records: Sequence[TrialRecord]
) -> Figure:
    """Fig. 4a/4b analogue, one panel each: candidate and ticket params and MACs (mean +- std), the trials' training
    epoch times (a box per generation), the share of candidates a ticket replaced, the phases' scores (mean +- std)
    and the compute each generation used."""
    gens = [p.generation for p in phases]
    data: list[dict[str, Any]] = []
    for k, what in enumerate(("params", "macs")):
        for name, attr, color in (("candidates", what, CANDIDATE), ("tickets", f"ticket_{what}", TICKET)):
            trace = _band(gens, [getattr(p, attr) for p in phases], 1e6)
            if not trace["x"]:
                continue
            data.append(
                {
                    **trace,
                    **_axes(k),
                    "name": name,
                    "legendgroup": name,
                    "showlegend": k == 0,
                    "marker": {"color": color},
                }
            )
    data += _epoch_traces(pts, _axes(2))
    data.append(
        {
            "type": "bar",
            "name": "replaced by a ticket",
            "marker": {"color": "#2ca02c"},
            **_axes(3),
            "x": [p.generation for p in phases if p.replaced_share is not None],
            "y": [100.0 * p.replaced_share for p in phases if p.replaced_share is not None],
        }
    )
    for field, label in PHASE_SCORES.items():
        spreads = [_spread(_scores(records, g, field)) for g in gens]
        if any(spreads):
            data.append({**_band(gens, spreads), **_axes(4), "name": label})
    data.append(
        {
            "type": "bar",
            "name": "compute",
            "x": gens,
            "y": [p.compute_images for p in phases],
            "marker": {"color": "#7f7f7f"},
            **_axes(5),
        }
    )
    titles = (
        "params (millions)",
        "MACs (millions)",
        "training epoch (s)",
        "replaced by a ticket (%)",
        TOP1,
        "compute (training images)",
    )
    layout = _layout("per generation: mean and standard deviation (Fig. 4a/4b)", 900,
                     [("generation", title) for title in titles], columns=2)  # fmt: skip
    for k in range(len(titles)):
        layout["xaxis" + _suffix(k)]["dtick"] = 1
    layout["yaxis4"]["range"] = [0, 100]
    return {"data": data, "layout": layout}


def _scores(records: Sequence[TrialRecord], generation: int, field: str) -> list[float]:
    """The done trials' scores of one phase in one generation."""
    return [
        getattr(r, field)
        for r in records
        if r.status == "done" and r.generation == generation and getattr(r, field) is not None
    ]


def _epoch_traces(pts: Sequence[Point], axes: dict[str, str]) -> list[dict[str, Any]]:
    """The trials' training epoch times as one box per generation, and their means joined (`plot_epoch_time`)."""
    timed = [p for p in pts if p.epoch_s is not None]
    gens = sorted({p.generation for p in timed})
    means = [statistics.fmean(p.epoch_s for p in timed if p.generation == g) for g in gens]
    box = {
        "type": "box",
        "name": "epoch time",
        "x": [p.generation for p in timed],
        "y": [p.epoch_s for p in timed],
        "boxpoints": "all",
        "customdata": [p.trial_id for p in timed],
        "marker": {"color": CANDIDATE},
        "hovertext": [f"trial {p.trial_id}: {p.epoch_s:.2f} s" for p in timed],
        **axes,
    }
    mean = {
        "type": "scatter",
        "mode": "lines+markers",
        "name": "mean epoch time",
        "x": gens,
        "y": means,
        "marker": {"color": "#ff7f0e"},
        **axes,
    }
    return [box, mean]


def accuracy_figure(pts: Sequence[Point]) -> Figure:
    """Accuracy against MACs, a trace per generation (each point a trial, tickets edged in black), the candidates
    tickets were cut from as open circles with an arrow to their ticket (`plot_accuracy_vs_macs`)."""
    gens = sorted({p.generation for p in pts})
    data, arrows = [], []
    for k, gen in enumerate(gens):
        color, group = _viridis(k, len(gens)), [p for p in pts if p.generation == gen]
        data.append(_trial_trace(f"generation {gen}", group, color))
        arrows += [_arrow(p, color) for p in group if _linked(p)]
    linked = [p for p in pts if _linked(p)]
    if linked:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "candidate of a ticket",
                "x": [p.candidate_macs / 1e6 for p in linked],
                "y": [p.candidate_score for p in linked],
                "customdata": [p.trial_id for p in linked],
                "hovertext": [
                    f"trial {p.trial_id}'s candidate: {p.candidate_score:.2f}%, {format_count(p.candidate_macs)} MACs"
                    for p in linked
                ],
                "hoverinfo": "text",
                "marker": {"symbol": "circle-open", "size": 9, "color": "#555555"},
            }
        )
    title = "accuracy vs MACs per generation (black edge: lottery ticket; arrow: from its candidate)"
    layout = _layout(title, 560, [("MACs (millions)", TOP1)], annotations=arrows)
    return {"data": data, "layout": layout}


def _linked(p: Point) -> bool:
    """Whether the point is a ticket whose candidate's score and MACs are known (an arrow links them)."""
    return p.ticket and p.candidate_macs is not None and p.candidate_score is not None


def _trial_trace(name: str, group: Sequence[Point], color: str) -> dict[str, Any]:
    """One marker per trial, its id as customdata (a click picks its table row) and its hover box."""
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": [p.macs / 1e6 for p in group],
        "y": [p.score for p in group],
        "customdata": [p.trial_id for p in group],
        "hovertext": [_hover(p) for p in group],
        "hoverinfo": "text",
        "marker": {
            "color": color,
            "size": 10,
            "line": {"color": ["black" if p.ticket else color for p in group], "width": 2},
        },
    }


def _arrow(p: Point, color: str) -> dict[str, Any]:
    """An arrow from a ticket's candidate to the ticket, in data coordinates (the axes take in both ends)."""
    return {
        "x": p.macs / 1e6,
        "y": p.score,
        "ax": p.candidate_macs / 1e6,
        "ay": p.candidate_score,
        "xref": "x",
        "yref": "y",
        "axref": "x",
        "ayref": "y",
        "text": "",
        "showarrow": True,
        "arrowhead": 2,
        "arrowcolor": color,
        "opacity": 0.6,
    }


def pareto_figure(pts: Sequence[Point], front: Sequence[int], objectives: Sequence[str]) -> Figure:
    """The run's front (`run_front` over `objectives`) among every finished trial, against MACs and params; the
    front joined as a staircase on the panel of its one cost."""
    panels = (("macs", "MACs (millions)"), ("params", "params (millions)"))
    members = [pts[i] for i in front]
    others = [p for i, p in enumerate(pts) if i not in set(front)]
    data = []
    for k, (cost, _) in enumerate(panels):
        staircase = list(objectives[1:]) == [cost]
        for name, group, color in (("other trials", others, OTHERS), ("Pareto front", members, FRONT)):
            trace = {**_trial_trace(name, group, color), **_axes(k), "legendgroup": name, "showlegend": k == 0}
            trace["x"] = [getattr(p, cost) / 1e6 for p in group]
            data.append(trace)
        if staircase:
            data[-1].update(mode="lines+markers", line={"shape": "hv", "color": FRONT})
    title = f"Pareto front ({', '.join(objectives)}) of the networks at the highest rung"
    layout = _layout(title, 480, [(label, TOP1) for _, label in panels], columns=2)
    return {"data": data, "layout": layout}


def latency_figure(pts: Sequence[Point], front: Sequence[int], objectives: Sequence[str]) -> Figure:
    """Accuracy against predicted latency, a trace per generation (the trials with one), the networks measured on
    the search's machine as black diamonds at their measured latency, and the run's front (`front` over
    `objectives`) when latency is one of its objectives, a staircase when it is the only cost
    (`plot_accuracy_vs_latency`)."""
    predicted = [p for p in pts if p.latency_ms is not None]
    gens = sorted({p.generation for p in predicted})
    data = []
    for k, gen in enumerate(gens):
        trace = _trial_trace(f"generation {gen}", [p for p in predicted if p.generation == gen], _viridis(k, len(gens)))
        data.append({**trace, "x": [p.latency_ms for p in predicted if p.generation == gen]})
    if "latency" in objectives:
        members = sorted((pts[i] for i in front if pts[i].latency_ms is not None), key=lambda p: p.latency_ms)
        trace = {**_trial_trace("Pareto front", members, FRONT), "x": [p.latency_ms for p in members]}
        trace["marker"] = {"color": "rgba(0,0,0,0)", "size": 14, "line": {"color": FRONT, "width": 2}}
        if list(objectives[1:]) == ["latency"]:
            trace.update(mode="lines+markers", line={"shape": "hv", "color": FRONT})
        data.append(trace)
    measured = [p for p in predicted if p.measured_latency_ms is not None]
    if measured:
        data.append(
            {
                **_trial_trace("measured on the search's machine", measured, "black"),
                "x": [p.measured_latency_ms for p in measured],
                "hovertext": [
                    f"trial {p.trial_id}: {p.measured_latency_ms:.3g} ms measured, {p.latency_ms:.3g} ms predicted"
                    for p in measured
                ],
                "marker": {"symbol": "diamond", "size": 10, "color": "black"},
            }
        )
    title = "accuracy vs latency (predicted from the table; diamonds: measured whole on the search's machine)"
    return {"data": data, "layout": _layout(title, 520, [("latency (ms)", TOP1)])}


def lottery_figure(searches: Sequence[tuple[TrialRecord, dict]]) -> Figure:
    """Fig. 4c analogue, a panel per trial (`plot_lottery`): the candidate (trained, recalibrated, fine-tuned)
    beside its pruning proposals and the chosen ticket before and after fine-tuning, against MACs."""
    data = []
    for k, (record, search) in enumerate(searches):
        data += [
            {**trace, **_axes(k), "legendgroup": trace["name"], "showlegend": k == 0}
            for trace in _lottery_traces(record, search)
        ]
    panels = [(f"trial {r.trial_id} (gen. {r.generation}, {s.get('policy', '?')}): MACs (M)", TOP1 if k == 0 else "")
              for k, (r, s) in enumerate(searches)]  # fmt: skip
    layout = _layout("candidates beside their pruning proposals and tickets (Fig. 4c)", 440, panels, len(searches))
    return {"data": data, "layout": layout}


def _lottery_traces(record: TrialRecord, search: dict) -> list[dict[str, Any]]:
    """One panel's traces: proposals, the candidate's three scores and the ticket's two (those measured)."""
    proposals, parent, ticket = search["proposals"], search["parent"], search.get("ticket") or {}
    scores = [p["full_score"] if p["full_score"] is not None else p["subset_score"] for p in proposals]
    traces = [
        _marks(
            "proposals",
            [p["macs"] for p in proposals],
            scores,
            "circle",
            OTHERS,
            [
                f"proposal {p['index']}: {s:.2f}%<br>{_genome_lines(p['genome'])}"
                for p, s in zip(proposals, scores, strict=True)
            ],
        )
    ]
    marks = (
        ("candidate (trained)", parent["macs"], record.trained_score, "star", CANDIDATE),
        ("candidate (recalibrated)", parent["macs"], parent["score"], "circle-open", CANDIDATE),
        ("candidate after fine-tune", parent["macs"], record.finetuned_score, "diamond", CANDIDATE),
        ("ticket before fine-tune", ticket.get("macs"), ticket.get("score_before_ft"), "square", TICKET),
        ("ticket after fine-tune", ticket.get("macs"), ticket.get("score_after_ft"), "diamond", TICKET),
    )
    for name, macs, score, symbol, color in marks:
        if macs is not None and score is not None:
            hover = f"trial {record.trial_id}, {name}: {score:.2f}%, {format_count(macs)} MACs"
            traces.append({**_marks(name, [macs], [score], symbol, color, [hover]), "customdata": [record.trial_id]})
    return traces


def _marks(name: str, macs: list[int], scores: list[float], symbol: str, color: str, hover: list[str]) -> dict:
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": [m / 1e6 for m in macs],
        "y": scores,
        "hovertext": hover,
        "hoverinfo": "text",
        "marker": {"symbol": symbol, "size": 11, "color": color},
    }
