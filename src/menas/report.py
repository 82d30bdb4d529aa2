"""Plots and tables of a search, read from its store: what a user looks at after (or during) a run.

Three figures, as the paper shows them: accuracy vs MACs per generation (with each lottery ticket linked to the
candidate it was cut from), epoch time per generation, and the Pareto front of accuracy against MACs and params
over every finished trial. Plus `trials.csv` (one row per trial) and `report.md` (generation table, best network,
Pareto front). Torch-free, and matplotlib is imported only to draw, so `menas report` starts fast; it reads the
store read-only and works while the search runs.
"""

from __future__ import annotations

import csv
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from menas import ranking
from menas.cost import format_count
from menas.errors import UserError
from menas.files import write_atomically
from menas.store import RetrainRecord, Store, TrialRecord

#: Files `write_report` creates in the report folder.
FIGURES = ("accuracy_vs_macs.png", "epoch_time.png", "pareto.png")
TABLES = ("trials.csv", "report.md")


@dataclass(frozen=True)
class Point:
    """One finished trial as the report draws it: final (ticket, else candidate) score and cost, and the
    candidate's own, so a ticket can be linked to where it came from."""

    trial_id: int
    generation: int
    genome: str  # the final network: the ticket's genome when a ticket was kept
    score: float
    macs: int
    params: int
    candidate_score: float | None
    candidate_macs: int | None
    ticket: bool
    epoch_s: float | None  # mean training epoch time of the trial

    @classmethod
    def from_record(cls, record: TrialRecord) -> Point:
        return cls(
            trial_id=record.trial_id,
            generation=record.generation,
            genome=record.ticket or record.genome,
            score=record.final_score,
            macs=record.final_macs,
            params=record.final_params,
            candidate_score=record.score,
            candidate_macs=record.macs,
            ticket=record.ticket is not None,
            epoch_s=statistics.fmean(record.epoch_times) if record.epoch_times else None,
        )


def points(records: Sequence[TrialRecord]) -> list[Point]:
    """The done trials with a final score and cost (failed and unfinished ones are not drawn)."""
    usable = [r for r in records if r.status == "done" and None not in (r.final_score, r.final_macs, r.final_params)]
    return [Point.from_record(r) for r in usable]


def best_point(records: Sequence[TrialRecord]) -> Point | None:
    """The best done trial by `menas.ranking.rank_key` (the store's and the strategies' definition), as drawn."""
    top = ranking.best(r for r in records if r.status == "done")
    return None if top is None else Point.from_record(top)


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (cost <= and score >=, one of them strictly), by rising cost.

    Of several points with the same cost and score, the first is kept.
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i], i))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Writes the figures and tables of the run in `run_dir` to `out` (default: `run_dir/report`) and returns
    their paths. Raises ValueError when the run has no finished trial yet (nothing to draw)."""
    with Store.open(run_dir, readonly=True) as store:
        info, records = store.snapshot()
        summaries = store.generation_summary()
        config = store.config()
        retrains = store.retrains()
    pts = points(records)
    if not pts:
        raise UserError(f"run {os.fspath(run_dir)!r}: no finished trial yet, nothing to report")
    folder = Path(out) if out is not None else Path(run_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        _plot_accuracy_vs_macs(pts, folder / FIGURES[0]),
        _plot_epoch_time(pts, folder / FIGURES[1]),
        _plot_pareto(pts, folder / FIGURES[2]),
        _write_csv(records, folder / TABLES[0]),
        _write_markdown(_title(run_dir, config, info.status), summaries, pts, best_point(records), folder / TABLES[1],
                        retrains),
    ]
    return paths


# ------------------------------------------------------------------------------------------ figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed (servers, CI)
    import matplotlib.pyplot as plt

    return plt


def _generations(pts: Sequence[Point]) -> list[int]:
    return sorted({p.generation for p in pts})


def _plot_accuracy_vs_macs(pts: Sequence[Point], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    cmap = plt.get_cmap("viridis")
    gens = _generations(pts)
    for k, gen in enumerate(gens):
        color = cmap(k / max(1, len(gens) - 1))
        group = [p for p in pts if p.generation == gen]
        ax.scatter([p.macs / 1e6 for p in group], [p.score for p in group], color=color, label=f"generation {gen}",
                   edgecolors=["black" if p.ticket else "none" for p in group], zorder=3)  # fmt: skip
        for p in group:
            if p.ticket and p.candidate_macs is not None and p.candidate_score is not None:
                ax.annotate("", xy=(p.macs / 1e6, p.score), xytext=(p.candidate_macs / 1e6, p.candidate_score),
                            arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.6})  # fmt: skip
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("search-val top-1 (%)")
    ax.set_title("accuracy vs MACs per generation (black edge: lottery ticket; arrow: from its candidate)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, plt)


def _plot_epoch_time(pts: Sequence[Point], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    gens = _generations(pts)
    data = [[p.epoch_s for p in pts if p.generation == g and p.epoch_s is not None] for g in gens]
    shown = [(g, d) for g, d in zip(gens, data, strict=True) if d]
    if shown:
        ax.boxplot([d for _, d in shown], positions=[g for g, _ in shown], widths=0.6)
        ax.plot([g for g, _ in shown], [statistics.fmean(d) for _, d in shown], "o-", label="mean")
        ax.legend(fontsize=8)
    ax.set_xlabel("generation")
    ax.set_ylabel("training epoch time (s)")
    ax.set_title("epoch time per generation")
    ax.grid(alpha=0.3)
    return _save(fig, path, plt)


def _plot_pareto(pts: Sequence[Point], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    scores = [p.score for p in pts]
    panels = (("MACs (millions)", [p.macs / 1e6 for p in pts]), ("params (millions)", [p.params / 1e6 for p in pts]))
    for ax, (label, costs) in zip(axes, panels, strict=True):
        front = pareto_front(costs, scores)
        ax.scatter(costs, scores, color="lightgray", label="all trials", zorder=2)
        ax.step([costs[i] for i in front], [scores[i] for i in front], where="post", color="tab:red", zorder=3)
        ax.scatter([costs[i] for i in front], [scores[i] for i in front], color="tab:red", label="Pareto front",
                   zorder=4)  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel("search-val top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Pareto front over all finished trials")
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    """Writes a figure atomically and frees it."""
    fig.tight_layout()
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------ tables

CSV_FIELDS = ("trial_id", "generation", "role", "status", "genome", "macs", "params", "score", "ticket",
              "ticket_macs", "ticket_params", "ticket_score_before_ft", "ticket_score", "final_score", "final_macs",
              "final_params", "epochs", "epoch_s_mean", "train_s", "lottery_s", "error")  # fmt: skip


def _write_csv(records: Sequence[TrialRecord], path: Path) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_FIELDS)
            for r in records:  # final_* are TrialRecord properties; the mean epoch time is the one derived column
                epoch_s = statistics.fmean(r.epoch_times) if r.epoch_times else None
                row = [epoch_s if f == "epoch_s_mean" else getattr(r, f) for f in CSV_FIELDS]
                writer.writerow(["" if value is None else value for value in row])

    return write_atomically(path, write)


def _cell(text: str) -> str:
    """Genome strings separate stages with '|', which would split a Markdown table cell."""
    return text.replace("|", "\\|")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _title(run_dir: str | os.PathLike[str], config: dict, status: str) -> str:
    strategy, space = (config.get("strategy") or {}).get("name", "?"), config.get("space", "?")
    return f"Search report: {Path(run_dir).resolve().name} (strategy {strategy}, space {space}, {status})"


def _retrain_lines(retrains: Sequence[RetrainRecord], pts: Sequence[Point]) -> list[str]:
    """The "Retrained" section: each `menas retrain` of a network of the run, test top-1 beside its search score."""
    if not retrains:
        return []
    search = {p.trial_id: p.score for p in pts}
    lines = ["", "## Retrained (test split)", "",
             "| trial | search-val top-1 | recipe | epochs | test top-1 | test top-5 | EMA top-1 | EMA top-5 | kept | "
             "MACs | params | minutes | img/s | device |", "|---" * 14 + "|"]  # fmt: skip
    for r in retrains:
        trial = "-" if r.trial_id is None else str(r.trial_id)
        recipe = r.recipe + (f" + KD from {_cell(r.teacher)}" if r.teacher else "")
        lines.append(f"| {trial} | {_pct(search.get(r.trial_id))} | {recipe} | {r.epochs} | {_pct(r.test_top1)} | "
                     f"{_pct(r.test_top5)} | {_pct(r.ema_top1)} | {_pct(r.ema_top5)} | {r.kept} | "
                     f"{format_count(r.macs or 0)} | {format_count(r.params or 0)} | {(r.wall_s or 0) / 60:.1f} | "
                     f"{r.images_per_s or 0:,.0f} | {r.device or '-'} |")  # fmt: skip
    return lines


def _write_markdown(
    title: str, summaries, pts: Sequence[Point], best: Point, path: Path, retrains: Sequence[RetrainRecord] = ()
) -> Path:
    lines = [
        f"# {title}",
        "",
        f"{len(pts)} finished trials. Best: trial {best.trial_id}, {best.score:.2f}% search-val top-1, "
        f"{format_count(best.macs)} MACs, {format_count(best.params)} params"
        f"{' (a lottery ticket)' if best.ticket else ''}:",
        "",
        f"`{best.genome}`",
        "",
        "## Generations",
        "",
        "| generation | done | failed | best final top-1 | median candidate top-1 | mean final MACs | mean epoch (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        macs = "-" if s.ticket_macs_mean is None else format_count(s.ticket_macs_mean)
        epoch = "-" if s.epoch_s_mean is None else f"{s.epoch_s_mean:.2f}"
        lines.append(f"| {s.generation} | {s.done} | {s.failed} | {_pct(s.ticket_score_best)} | "
                     f"{_pct(s.score_median)} | {macs} | {epoch} |")  # fmt: skip
    front = pareto_front([p.macs for p in pts], [p.score for p in pts])
    lines += ["", "## Pareto front (MACs)", "", "| trial | top-1 | MACs | params | ticket | genome |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for i in front:
        p = pts[i]
        lines.append(f"| {p.trial_id} | {p.score:.2f}% | {format_count(p.macs)} | {format_count(p.params)} | "
                     f"{'yes' if p.ticket else 'no'} | `{_cell(p.genome)}` |")  # fmt: skip
    lines += _retrain_lines(retrains, pts)
    lines += ["", "Figures: " + ", ".join(f"[{name}]({name})" for name in FIGURES), ""]
    return write_atomically(path, lambda tmp: tmp.write_text("\n".join(lines)))
