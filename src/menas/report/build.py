"""Plots and tables of a search, read from its store: what a user looks at after (or during) a run.

The figures the paper shows: accuracy vs MACs per generation (with each lottery ticket linked to the candidate
it was cut from), training epoch time per generation (Fig. 4a), the Pareto front of accuracy against MACs and
params over every finished trial, the per-generation mean and spread of candidate and ticket cost, epoch time and
the share replaced (Fig. 4a/4b, `generations.png`), and, when trials kept their ticket search (`lottery.json`),
candidates beside their proposals and chosen tickets (Fig. 4c, `lottery.png`). Plus `trials.csv` (one row per
trial, every per-phase measurement) and `report.md` (generation tables, best network, Pareto front, and with
individual weight sharing what the bred children inherited and the training it saved: `inheritance`).
Torch-free, and matplotlib is imported only to draw, so `menas report` starts fast; it reads the store read-only
and works while the search runs.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from menas.errors import UserError
from menas.files import write_atomically
from menas.folders import RunFolder
from menas.search import pareto, ranking
from menas.search.record import DERIVED, FIELDS, TrialRecord
from menas.search.store import RetrainRecord, Store
from menas.space.cost import format_count

#: Files `write_report` creates in the report folder.
FIGURES = ("accuracy_vs_macs.png", "epoch_time.png", "pareto.png", "generations.png")
TABLES = ("trials.csv", "report.md")
#: Written after the tables when some trial folder holds a ticket search record (`trials/NNNNN/lottery.json`).
LOTTERY_FIGURE = "lottery.png"
#: Trials drawn in the Fig. 4c analogue: the best ones with a ticket search record.
LOTTERY_PANELS = 4


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
    epoch_s: float | None  # mean training epoch time of the trial (training passes; all epochs in old stores)

    @classmethod
    def from_record(cls, record: TrialRecord) -> Point:
        return cls(
            trial_id=record.trial_id,
            generation=record.generation,
            genome=record.final_genome,
            score=record.final_score,
            macs=record.final_macs,
            params=record.final_params,
            candidate_score=record.trained_score,
            candidate_macs=record.macs,
            ticket=record.ticket is not None,
            epoch_s=_epoch_s(record),
        )


def _epoch_s(record: TrialRecord) -> float | None:
    """The trial's mean training epoch time: its candidate's training passes, else (stores before schema 3) the
    mean of every recorded epoch."""
    times = record.train_epoch_s or record.epoch_s
    return statistics.fmean(times) if times else None


def points(records: Sequence[TrialRecord]) -> list[Point]:
    """The done trials with a final score and cost (failed and unfinished ones are not drawn)."""
    usable = [r for r in records if r.status == "done" and None not in (r.final_score, r.final_macs, r.final_params)]
    return [Point.from_record(r) for r in usable]


def best_point(records: Sequence[TrialRecord]) -> Point | None:
    """The best done trial by `menas.search.ranking.rank_key` (the store's and the strategies' definition), as drawn."""
    top = ranking.best(r for r in records if r.status == "done")
    return None if top is None else Point.from_record(top)


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (cost <= and score >=, one of them strictly), by rising cost:
    the first front of `menas.search.pareto`, the one definition the store, `menas status` and `menas export
    --front` use too. Of several points with the same cost and score, the first is kept."""
    front = pareto.pareto_front(list(zip(scores, costs, strict=True)), (pareto.MAX, pareto.MIN))
    return sorted(front, key=lambda i: (costs[i], i))


@dataclass(frozen=True)
class GenerationInheritance:
    """Individual weight sharing in one generation, over its done trials that tried to inherit (bred children of
    an inheriting search): how many did (`inherited`) or fell back to scratch (`fallbacks`), their tensors by how
    they were filled, and the training they saved against training every one of them from scratch (`epochs_saved`
    epochs, `images_saved` training images; `saved_share` of the images the generation's done trials would have
    trained on from scratch)."""

    generation: int
    done: int
    tried: int
    inherited: int
    fallbacks: int
    copied: int
    sliced: int
    padded: int
    fresh: int
    epochs_saved: int
    images_saved: int
    saved_share: float

    @property
    def inherited_share(self) -> float | None:
        """The share of the generation's done trials that started from their parents' weights."""
        return self.inherited / self.done if self.done else None


def inheritance(records: Sequence[TrialRecord]) -> list[GenerationInheritance]:
    """Per generation, ascending, what weight inheritance did (`TrialRecord.inherited`); [] when no trial tried."""
    by_gen: dict[int, list[TrialRecord]] = {}
    for r in records:
        if r.status == "done":
            by_gen.setdefault(r.generation, []).append(r)
    if not any(r.inherited for group in by_gen.values() for r in group):
        return []
    out = []
    for gen, done in sorted(by_gen.items()):
        tried = [r for r in done if r.inherited]
        ok = [r for r in tried if not r.inherited.get("fallback")]
        counts = {k: sum(r.inherited["counts"][k] for r in ok) for k in ("copied", "sliced", "padded", "fresh")}
        saved = [(r.inherited.get("epochs_saved", 0), r.images_per_epoch or 0) for r in tried]
        images_saved = sum(epochs * per_epoch for epochs, per_epoch in saved)
        scratch = sum(r.train_images or 0 for r in done) + images_saved
        out.append(
            GenerationInheritance(
                generation=gen,
                done=len(done),
                tried=len(tried),
                inherited=len(ok),
                fallbacks=len(tried) - len(ok),
                **counts,
                epochs_saved=sum(epochs for epochs, _ in saved),
                images_saved=images_saved,
                saved_share=images_saved / scratch if scratch else 0.0,
            )
        )
    return out


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> list[Path]:
    """Writes the figures and tables of the run in `run_dir` to `out` (default: `run_dir/report`) and returns
    their paths. Raises ValueError when the run has no finished trial yet (nothing to draw)."""
    with Store.open(run_dir, readonly=True) as store:
        info, records = store.snapshot()
        summaries = store.generation_summary()
        phases = store.generation_phases()
        config = store.config()
        retrains = store.retrains()
    pts = points(records)
    if not pts:
        raise UserError(f"run {os.fspath(run_dir)!r}: no finished trial yet, nothing to report")
    folder = Path(out) if out is not None else RunFolder(run_dir).report
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        _plot_accuracy_vs_macs(pts, folder / FIGURES[0]),
        _plot_epoch_time(pts, folder / FIGURES[1]),
        _plot_pareto(pts, folder / FIGURES[2]),
        _plot_generations(phases, folder / FIGURES[3]),
        _write_csv(records, folder / TABLES[0]),
        _write_markdown(
            _title(run_dir, config, info.status),
            summaries,
            pts,
            best_point(records),
            folder / TABLES[1],
            retrains,
            phases,
            records,
        ),
    ]
    searches = lottery_records(run_dir, records)
    if searches:
        paths.append(_plot_lottery(searches, folder / LOTTERY_FIGURE))
    return paths


def lottery_records(
    run_dir: str | os.PathLike[str], records: Sequence[TrialRecord], limit: int = LOTTERY_PANELS
) -> list[tuple[TrialRecord, dict]]:
    """The best done trials (by `menas.search.ranking.rank_key`) whose folder holds a ticket search record, with it."""
    found = []
    for record in sorted((r for r in records if r.status == "done"), key=ranking.rank_key):
        path = RunFolder(run_dir).trial(record.trial_id).lottery
        if path.is_file():
            found.append((record, json.loads(path.read_text())))
        if len(found) == limit:
            break
    return found


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
        ax.scatter(
            [p.macs / 1e6 for p in group],
            [p.score for p in group],
            color=color,
            label=f"generation {gen}",
            edgecolors=["black" if p.ticket else "none" for p in group],
            zorder=3,
        )
        for p in group:
            if p.ticket and p.candidate_macs is not None and p.candidate_score is not None:
                ax.annotate(
                    "",
                    xy=(p.macs / 1e6, p.score),
                    xytext=(p.candidate_macs / 1e6, p.candidate_score),
                    arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.6},
                )
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
        ax.scatter(
            [costs[i] for i in front], [scores[i] for i in front], color="tab:red", label="Pareto front", zorder=4
        )
        ax.set_xlabel(label)
        ax.set_ylabel("search-val top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Pareto front over all finished trials")
    return _save(fig, path, plt)


def _plot_generations(phases, path: Path) -> Path:
    """Fig. 4a/4b analogue: per generation, mean +- std of candidate and ticket params and MACs, candidate
    training epoch time, and the share of candidates a ticket replaced."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    gens = [p.generation for p in phases]

    def band(ax, attr: str, label: str, scale: float = 1.0) -> None:
        shown = [(p.generation, getattr(p, attr)) for p in phases if getattr(p, attr) is not None]
        if shown:
            ax.errorbar(
                [g for g, _ in shown],
                [m / scale for _, (m, _) in shown],
                yerr=[s / scale for _, (_, s) in shown],
                marker="o",
                capsize=3,
                label=label,
            )

    for ax, what, unit in ((axes[0][0], "params", "params (millions)"), (axes[0][1], "macs", "MACs (millions)")):
        band(ax, what, "candidates", 1e6)
        band(ax, f"ticket_{what}", "tickets", 1e6)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
    band(axes[1][0], "train_epoch_s", "candidates")
    axes[1][0].set_ylabel("training epoch time (s)")
    shares = [(p.generation, p.replaced_share) for p in phases if p.replaced_share is not None]
    axes[1][1].bar([g for g, _ in shares], [100.0 * s for _, s in shares], color="tab:green")
    axes[1][1].set_ylabel("candidates replaced by a ticket (%)")
    axes[1][1].set_ylim(0, 100)
    for ax in (a for row in axes for a in row):
        ax.set_xlabel("generation")
        ax.set_xticks(gens)
        ax.grid(alpha=0.3)
    fig.suptitle("per generation: mean and standard deviation")
    return _save(fig, path, plt)


def _plot_lottery(searches: Sequence[tuple[TrialRecord, dict]], path: Path) -> Path:
    """Fig. 4c analogue, one panel per trial: the candidate (after training; after BN recalibration) beside its
    pruning proposals (search-val top-1 on the scoring subset, or all of it for finalists) and the chosen ticket
    before and after fine-tuning, against MACs."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(searches), figsize=(4.5 * len(searches), 4), squeeze=False)
    for ax, (record, search) in zip(axes[0], searches, strict=True):
        proposals = search["proposals"]
        scores = [p["full_score"] if p["full_score"] is not None else p["subset_score"] for p in proposals]
        ax.scatter([p["macs"] / 1e6 for p in proposals], scores, color="lightgray", label="proposals", zorder=2)
        parent = search["parent"]
        ax.scatter(
            [parent["macs"] / 1e6],
            [record.trained_score],
            marker="*",
            s=150,
            color="tab:blue",
            label="candidate (trained)",
            zorder=4,
        )
        ax.scatter(
            [parent["macs"] / 1e6],
            [parent["score"]],
            marker="o",
            facecolors="none",
            color="tab:blue",
            label="candidate (recalibrated)",
            zorder=4,
        )
        if record.finetuned_score is not None:
            ax.scatter(
                [parent["macs"] / 1e6],
                [record.finetuned_score],
                marker="D",
                color="tab:blue",
                label="candidate after fine-tune",
                zorder=4,
            )
        ticket = search.get("ticket")
        if ticket is not None:
            ax.scatter(
                [ticket["macs"] / 1e6],
                [ticket["score_before_ft"]],
                marker="s",
                color="tab:red",
                label="ticket before fine-tune",
                zorder=5,
            )
            if ticket.get("score_after_ft") is not None:
                ax.scatter(
                    [ticket["macs"] / 1e6],
                    [ticket["score_after_ft"]],
                    marker="D",
                    color="tab:red",
                    label="ticket after fine-tune",
                    zorder=5,
                )
        ax.set_title(
            f"trial {record.trial_id} (generation {record.generation}, {search.get('policy', '?')})", fontsize=9
        )
        ax.set_xlabel("MACs (millions)")
        ax.set_ylabel("search-val top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=7)
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    """Writes a figure atomically and frees it."""
    fig.tight_layout()
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------ tables

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


def _write_csv(records: Sequence[TrialRecord], path: Path) -> Path:
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


def _title(run_dir: str | os.PathLike[str], config: dict, status: str) -> str:
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


def _write_markdown(
    title: str,
    summaries,
    pts: Sequence[Point],
    best: Point,
    path: Path,
    retrains: Sequence[RetrainRecord] = (),
    phases=(),
    records: Sequence[TrialRecord] = (),
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
    lines += _phase_lines(phases)
    lines += _inheritance_lines(records)
    front = pareto_front([p.macs for p in pts], [p.score for p in pts])
    lines += [
        "",
        "## Pareto front (MACs)",
        "",
        "Final search-val top-1 against final MACs, by rising MACs; `menas export RUN --front K` exports row K.",
        "",
        "| trial | top-1 | MACs | params | ticket | genome |",
        "|---|---|---|---|---|---|",
    ]
    for i in front:
        p = pts[i]
        lines.append(
            f"| {p.trial_id} | {p.score:.2f}% | {format_count(p.macs)} | {format_count(p.params)} | "
            f"{'yes' if p.ticket else 'no'} | `{_cell(p.genome)}` |"
        )
    lines += _retrain_lines(retrains, pts)
    lines += ["", "Figures: " + ", ".join(f"[{name}]({name})" for name in FIGURES), ""]
    return write_atomically(path, lambda tmp: tmp.write_text("\n".join(lines)))
