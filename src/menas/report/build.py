"""Plots and tables of a search, read from its store: what a user looks at after (or during) a run.

The figures the paper shows: accuracy vs MACs per generation (with each lottery ticket linked to the candidate it
was cut from), accuracy vs latency when the search had a latency table (`accuracy_vs_latency.png`: predicted, the
final front measured on the search's machine, the front on latency when it is an objective), training epoch time per
generation (Fig. 4a), the Pareto front of accuracy against MACs and params over every finished trial, the
per-generation mean and spread of candidate and ticket cost, epoch time and the share replaced (Fig. 4a/4b,
`generations.png`), and, when trials kept their ticket search (`lottery.json`), candidates beside their proposals
and chosen tickets (Fig. 4c, `lottery.png`). Plus `trials.csv` (one row per trial, every per-phase measurement),
`report.md` (generation tables, best network, Pareto front, and with individual weight sharing what the bred
children inherited and the training it saved: `inheritance`) and `report.html` (`menas.report.html`: the same
figures interactive, and a sortable, filterable table of every trial, in one self-contained page that opens
offline). Torch-free, and matplotlib is imported only to draw, so `menas report` starts fast; it reads the store
read-only and works while the search runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from menas.errors import UserError
from menas.folders import RunFolder
from menas.report.figures import (
    plot_accuracy_vs_latency,
    plot_accuracy_vs_macs,
    plot_epoch_time,
    plot_generations,
    plot_lottery,
    plot_pareto,
)
from menas.report.html import write_page
from menas.report.points import (
    FIGURES,
    LATENCY_FIGURE,
    LOTTERY_FIGURE,
    LOTTERY_PANELS,
    PAGE,
    TABLES,
    GenerationInheritance,
    Point,
    best_point,
    inheritance,
    lottery_records,
    pareto_front,
    points,
    run_front,
)
from menas.report.tables import CSV_FIELDS, title, write_csv, write_markdown
from menas.search.pareto import config_objectives
from menas.search.store import Store


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Writes the figures and tables of the run in `run_dir` to `out` (default: `run_dir/report`) and returns
    their paths, `report.html` last. Raises UserError when the run has no finished trial yet (nothing to draw)."""
    with Store.open(run_dir, readonly=True) as store:
        info, records = store.snapshot()
        summaries = store.generation_summary()
        phases = store.generation_phases()
        config = store.config()
        retrains = store.retrains()
        # a latency table's run measures its result (front, else best) at its end: the report says how it went
        final = store.final_networks() if (config.get("budget") or {}).get("latency_table") else []
    pts = points(records)
    if not pts:
        raise UserError(f"run {os.fspath(run_dir)!r}: no finished trial yet, nothing to report")
    folder = Path(out) if out is not None else RunFolder(run_dir).report
    folder.mkdir(parents=True, exist_ok=True)
    heading = title(run_dir, config, info.status)
    objectives = config_objectives(config)
    paths = [
        plot_accuracy_vs_macs(pts, folder / FIGURES[0]),
        plot_epoch_time(pts, folder / FIGURES[1]),
        plot_pareto(pts, folder / FIGURES[2]),
        plot_generations(phases, folder / FIGURES[3]),
        write_csv(records, folder / TABLES[0]),
        write_markdown(
            heading,
            summaries,
            pts,
            best_point(records),
            folder / TABLES[1],
            retrains,
            phases,
            records,
            objectives,
            final,
        ),
    ]
    if any(p.latency_ms is not None for p in pts):
        paths.append(_latency_figure(pts, records, objectives, folder / LATENCY_FIGURE))
    searches = lottery_records(run_dir, records)
    if searches:
        paths.append(plot_lottery(searches, folder / LOTTERY_FIGURE))
    paths.append(write_page(folder / PAGE, heading, records, phases, searches, objectives))
    return paths


def _latency_figure(pts: list[Point], records: list, objectives: tuple[str, ...], path: Path) -> Path:
    """Accuracy vs latency, with the run's front on it when latency is one of its objectives (a staircase when
    it is the only cost)."""
    front = run_front(pts, records, objectives) if "latency" in objectives else []
    return plot_accuracy_vs_latency(pts, path, front, staircase=tuple(objectives[1:]) == ("latency",))


__all__ = [
    "CSV_FIELDS",
    "FIGURES",
    "LATENCY_FIGURE",
    "LOTTERY_FIGURE",
    "LOTTERY_PANELS",
    "PAGE",
    "TABLES",
    "GenerationInheritance",
    "Point",
    "best_point",
    "inheritance",
    "lottery_records",
    "pareto_front",
    "points",
    "write_report",
]
