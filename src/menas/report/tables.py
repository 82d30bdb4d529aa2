"""The report's tables: `trials.csv` (every field of every trial's record, then the derived values) and
`report.md` (generations, best network, Pareto front, the final networks' latency, retrains, weight inheritance).
No torch."""

from __future__ import annotations

import csv
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

from menas.files import write_atomically
from menas.report.points import FIGURES, LATENCY_FIGURE, Point, inheritance, run_front
from menas.search import fidelity, pareto
from menas.search.record import DERIVED, FIELDS, TrialRecord
from menas.search.store import RetrainRecord
from menas.space.cost import format_count

#: The CSV's columns: every field of the trial record (tuples and mappings as JSON), its derived values, and the
#: means of its per-epoch times.
_MEANS = {"epoch_s_mean": "epoch_s", "train_epoch_s_mean": "train_epoch_s", "finetune_epoch_s_mean": "finetune_epoch_s"}
CSV_FIELDS = (*(f.name for f in FIELDS), *DERIVED, *_MEANS)


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def write_csv(records: Sequence[TrialRecord], path: Path) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_FIELDS)
            for r in records:
                means = {f: statistics.fmean(getattr(r, a)) if getattr(r, a) else None for f, a in _MEANS.items()}
                writer.writerow([_csv_cell(means[f] if f in means else getattr(r, f)) for f in CSV_FIELDS])

    return write_atomically(path, write)


def _cell(text: str) -> str:
    """Genome strings separate stages with '|', which would split a Markdown table cell."""
    return text.replace("|", "\\|")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def title(run_dir: str | os.PathLike[str], config: dict, status: str) -> str:
    strategy, space = (config.get("strategy") or {}).get("name", "?"), config.get("space", "?")
    return f"Search report: {Path(run_dir).resolve().name} (strategy {strategy}, space {space}, {status})"


def _retrain_lines(retrains: Sequence[RetrainRecord], pts: Sequence[Point]) -> list[str]:
    """The "Retrained" section: each `menas retrain` of a network of the run, test top-1 beside its search score."""
    if not retrains:
        return []
    search = {p.trial_id: p.score for p in pts}
    lines = [
        "",
        "## Retrained (test split)",
        "",
        "| trial | search-val top-1 | recipe | epochs | test top-1 | test top-5 | EMA top-1 | EMA top-5 | kept | "
        "MACs | params | minutes | img/s | device |",
        "|---" * 14 + "|",
    ]
    for r in retrains:
        trial = "-" if r.trial_id is None else str(r.trial_id)
        recipe = r.recipe + (f" + KD from {_cell(r.teacher)}" if r.teacher else "")
        lines.append(
            f"| {trial} | {_pct(search.get(r.trial_id))} | {recipe} | {r.epochs} | {_pct(r.test_top1)} | "
            f"{_pct(r.test_top5)} | {_pct(r.ema_top1)} | {_pct(r.ema_top5)} | {r.kept} | "
            f"{format_count(r.macs or 0)} | {format_count(r.params or 0)} | {(r.wall_s or 0) / 60:.1f} | "
            f"{r.images_per_s or 0:,.0f} | {r.device or '-'} |"
        )
    return lines


def _spread(value: tuple[float, float] | None, count: bool = True) -> str:
    """ "mean ± std" of a (mean, std) pair, counts with K/M suffixes; "-" for None."""
    if value is None:
        return "-"
    mean, std = value
    return f"{format_count(mean)} ± {format_count(std)}" if count else f"{mean:.2f} ± {std:.2f}"


def _phase_lines(phases) -> list[str]:
    """The per-generation table of the paper's Fig. 4a/4b: candidate and ticket cost, epoch time, share replaced."""
    if not phases:
        return []
    lines = [
        "",
        "## Per generation (mean ± std over done trials)",
        "",
        "| generation | done | candidate params | candidate MACs | training epoch (s) | ticket params | "
        "ticket MACs | replaced | compute (training-image equivalents) |",
        "|---" * 9 + "|",
    ]
    for p in phases:
        share = "-" if p.replaced_share is None else f"{100 * p.replaced_share:.0f}%"
        lines.append(
            f"| {p.generation} | {p.done} | {_spread(p.params)} | {_spread(p.macs)} | "
            f"{_spread(p.train_epoch_s, count=False)} | {_spread(p.ticket_params)} | "
            f"{_spread(p.ticket_macs)} | {share} | {format_count(p.compute_images)} |"
        )
    return lines


def _fidelity_lines(records: Sequence[TrialRecord]) -> list[str]:
    """The score noise the repeated trials measured, and with rungs each generation's networks per rung."""
    lines: list[str] = []
    if any(r.ranks_by_tse for r in records):
        lines += ["", "Selection ranked each rung's networks by the training-speed estimate (`fidelity.score: tse`: "
                  "minus the mean training loss of a trial's own training epochs), not by search-val top-1; the "
                  "scores below are search-val top-1, measured but not selected on."]  # fmt: skip
    noise = fidelity.noise_estimate(fidelity.repeat_pairs([r for r in records if r.status == "done"]))
    if noise is not None:
        lines += ["", "## Score noise", "", noise.describe() + "."]
        rescored = [t for t in fidelity.representatives(records) if isinstance(t, fidelity.Rescored)]
        if rescored:
            change = statistics.fmean(t.final_score - t.own_score for t in rescored)
            lines += ["", f"{len(rescored)} elite(s) re-scored (`fidelity.rescore`): selection reads the mean of "
                      f"their trainings, on average {change:+.2f} points from their first score (a first score "
                      "chosen for being high carries luck that a second training does not)."]  # fmt: skip
    if len({r.rung for r in records}) < 2:
        return lines
    lines += [
        "",
        "## Rungs",
        "",
        "Per generation and rung: networks trained to it (rung 0: the children; a promotion continues its network "
        "from its weights), and their search-val top-1 (noise repeats and re-score replicas left out).",
        "",
        "| generation | rung | networks | done | best top-1 | median top-1 |",
        "|---|---|---|---|---|---|",
    ]
    trials = [r for r in records if r.role not in fidelity.PROBES]
    for generation in sorted({r.generation for r in trials}):
        for rung in sorted({r.rung for r in trials if r.generation == generation}):
            at = [r for r in trials if r.generation == generation and r.rung == rung]
            scores = [r.final_score for r in at if r.status == "done" and r.final_score is not None]
            best = _pct(max(scores)) if scores else "-"
            median = _pct(statistics.median(scores)) if scores else "-"
            lines.append(f"| {generation} | {rung} | {len(at)} | {len(scores)} | {best} | {median} |")
    return lines


def _inheritance_lines(records: Sequence[TrialRecord]) -> list[str]:
    """The "Weight inheritance" table: per generation what the bred children inherited and the training saved."""
    rows = inheritance(records)
    if not rows:
        return []
    lines = [
        "",
        "## Weight inheritance (done trials)",
        "",
        "| generation | done | inherited | fallbacks | tensors copied | sliced | padded | fresh | epochs saved | "
        "images saved |",
        "|---" * 10 + "|",
    ]
    for g in rows:
        share = "-" if g.inherited_share is None else f"{g.inherited} ({100 * g.inherited_share:.0f}%)"
        lines.append(
            f"| {g.generation} | {g.done} | {share} | {g.fallbacks} | {g.copied} | {g.sliced} | "
            f"{g.padded} | {g.fresh} | {g.epochs_saved} | {format_count(g.images_saved)} "
            f"({100 * g.saved_share:.0f}%) |"
        )
    return lines


def _ms(value: float | None, missing: str = "-") -> str:
    return missing if value is None else f"{value:.3g}"


def _best_latency(best: Point) -> str:
    """The best network's latency for the summary line: ", predicted latency 1.2 ms, measured 1.3 ms" (or "not
    measured"); "" without a latency table."""
    if best.latency_ms is None:
        return ""
    return f", predicted latency {best.latency_ms:.3g} ms, " + (
        "not measured" if best.measured_latency_ms is None else f"measured {best.measured_latency_ms:.3g} ms"
    )


def _latency_lines(final: Sequence[TrialRecord]) -> list[str]:
    """The "Latency" section of a search with a latency table: the run's result (its front, else its best)
    measured whole on the search's machine at the table's settings, or that it is not measured yet."""
    if not final:
        return []
    lines = ["", "## Latency (the final networks, measured on the search's machine)", ""]
    missing = [t.trial_id for t in final if t.measured_latency_ms is None]
    if missing:
        lines += [
            f"Not measured: trial(s) {', '.join(map(str, missing))} (predicted latencies only; "
            "`menas latency RUN --front` measures them).",
            "",
        ]
    lines += [
        "| trial | top-1 | predicted ms | measured ms | p90 ms | IQR ms | runs | processes (spread) | batch | "
        "threads | runtime | device | host |",
        "|---" * 13 + "|",
    ]
    for t in final:
        m = t.latency_measurement or {}
        s, host = m.get("settings", {}), m.get("host", {})
        where = "-" if not m else host.get("device_name", "?") + ("" if m.get("same_host") else " (not the table's)")
        lines.append(
            f"| {t.trial_id} | {_pct(t.final_score)} | {_ms(t.final_latency_ms)} | "
            f"{_ms(t.measured_latency_ms, 'not measured')} | {_ms(m.get('p90_ms'))} | {_ms(m.get('iqr_ms'))} | "
            f"{m.get('runs', '-')} | {_processes(m)} | {s.get('batch', '-')} | {s.get('threads', '-')} | "
            f"{s.get('runtime', '-')} | {s.get('device', '-')} | {_cell(where)} |"
        )
    return lines


def _processes(m: dict) -> str:
    """How many processes a measurement's median is taken over, and their spread (`menas.latency.rounds`)."""
    if not m:
        return "-"
    rounds = m.get("rounds", 1)
    return "1" if rounds == 1 else f"{rounds} ({100 * m.get('round_spread', 0):.1f}%)"


def write_markdown(
    title: str,
    summaries,
    pts: Sequence[Point],
    best: Point,
    path: Path,
    retrains: Sequence[RetrainRecord] = (),
    phases=(),
    records: Sequence[TrialRecord] = (),
    objectives: Sequence[str] = pareto.DEFAULT_OBJECTIVES,
    final: Sequence[TrialRecord] = (),
) -> Path:
    """`report.md`; `final` is the run's result under a latency table (its front, else its best: the networks
    measured at the search's end), () without one."""
    lines = [
        f"# {title}",
        "",
        f"{len(pts)} finished trials. Best: trial {best.trial_id}, {best.score:.2f}% search-val top-1, "
        f"{format_count(best.macs)} MACs, {format_count(best.params)} params{_best_latency(best)}"
        f"{' (a lottery ticket)' if best.ticket else ''}:",
        "",
        f"`{best.genome}`",
        "",
        "## Generations",
        "",
        "| generation | done | failed | best final top-1 | median candidate top-1 | mean final MACs | mean training "
        "epoch (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        macs = "-" if s.ticket_macs_mean is None else format_count(s.ticket_macs_mean)
        epoch = "-" if s.epoch_s_mean is None else f"{s.epoch_s_mean:.2f}"
        lines.append(
            f"| {s.generation} | {s.done} | {s.failed} | {_pct(s.ticket_score_best)} | "
            f"{_pct(s.score_median)} | {macs} | {epoch} |"
        )
    lines += _fidelity_lines(records)
    lines += _phase_lines(phases)
    lines += _inheritance_lines(records)
    front = run_front(pts, records, objectives)
    lines += [
        "",
        f"## Pareto front ({', '.join(objectives[1:])})",
        "",
        f"Final search-val top-1 against final {' and '.join(objectives[1:])}, by rising {objectives[1]}; "
        "`menas export RUN --front K` exports row K.",
        "",
    ]
    latency = any(pts[i].latency_ms is not None for i in front)
    extra = " predicted ms | measured ms |" if latency else ""
    lines += [f"| trial | top-1 | MACs | params |{extra} ticket | genome |", "|---" * (6 + 2 * latency) + "|"]
    for i in front:
        p = pts[i]
        ms = f" {_ms(p.latency_ms)} | {_ms(p.measured_latency_ms, 'not measured')} |" if latency else ""
        lines.append(
            f"| {p.trial_id} | {p.score:.2f}% | {format_count(p.macs)} | {format_count(p.params)} |{ms} "
            f"{'yes' if p.ticket else 'no'} | `{_cell(p.genome)}` |"
        )
    lines += _latency_lines(final)
    lines += _retrain_lines(retrains, pts)
    figures = (*FIGURES, LATENCY_FIGURE) if any(p.latency_ms is not None for p in pts) else FIGURES
    lines += ["", "Figures: " + ", ".join(f"[{name}]({name})" for name in figures), ""]
    return write_atomically(path, lambda tmp: tmp.write_text("\n".join(lines)))
