"""The report's figures, drawn with matplotlib (imported only to draw): accuracy vs MACs per generation with
tickets linked to their candidates, accuracy vs latency (predicted, and measured for the final front), epoch time
per generation, the Pareto front, the per-generation phases (the paper's Fig. 4a/4b) and candidates beside their
pruning proposals (Fig. 4c). No torch."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from menas.files import write_atomically
from menas.report.points import Point, pareto_front
from menas.search.record import TrialRecord


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed (servers, CI)
    import matplotlib.pyplot as plt

    return plt


def _generations(pts: Sequence[Point]) -> list[int]:
    return sorted({p.generation for p in pts})


def plot_accuracy_vs_macs(pts: Sequence[Point], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    draw_accuracy_vs_macs(ax, pts, plt.get_cmap("viridis"))
    return _save(fig, path, plt)


def draw_accuracy_vs_macs(ax: Any, pts: Sequence[Point], cmap: Any) -> None:
    """Accuracy against MACs per generation on `ax`, tickets edged in black with an arrow from their candidate; the
    axes take in the arrows' starts too (matplotlib does not scale to annotations), so no arrow comes from outside."""
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
    starts = [(p.candidate_macs / 1e6, p.candidate_score) for p in pts
              if p.ticket and p.candidate_macs is not None and p.candidate_score is not None]  # fmt: skip
    if starts:
        ax.update_datalim(starts)
        ax.autoscale_view()
    _label_accuracy_axes(
        ax, "MACs (millions)", "accuracy vs MACs per generation (black edge: lottery ticket; arrow: from its candidate)"
    )


def plot_accuracy_vs_latency(
    pts: Sequence[Point], path: Path, front: Sequence[int] = (), staircase: bool = False
) -> Path:
    """Accuracy against predicted latency per generation (the trials with one), the networks measured on the
    search's machine as black diamonds at their measured latency (a dotted line from the prediction), and the
    run's Pareto front (`front`: indices into `pts`, given when latency is one of its objectives) edged in red,
    joined as a staircase when latency is its only cost."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    draw_accuracy_vs_latency(ax, pts, plt.get_cmap("viridis"), front, staircase)
    return _save(fig, path, plt)


def draw_accuracy_vs_latency(
    ax: Any, pts: Sequence[Point], cmap: Any, front: Sequence[int] = (), staircase: bool = False
) -> None:
    """`plot_accuracy_vs_latency` on `ax`."""
    predicted = [p for p in pts if p.latency_ms is not None]
    gens = _generations(predicted)
    for k, gen in enumerate(gens):
        group = [p for p in predicted if p.generation == gen]
        ax.scatter([p.latency_ms for p in group], [p.score for p in group], color=cmap(k / max(1, len(gens) - 1)),
                   label=f"generation {gen} (predicted)", zorder=3)  # fmt: skip
    members = sorted((pts[i] for i in front if pts[i].latency_ms is not None), key=lambda p: p.latency_ms)
    if members:
        xs, ys = [p.latency_ms for p in members], [p.score for p in members]
        if staircase:
            ax.step(xs, ys, where="post", color="tab:red", zorder=2)
        ax.scatter(xs, ys, facecolors="none", edgecolors="tab:red", s=120, linewidths=2, label="Pareto front",
                   zorder=4)  # fmt: skip
    measured = [p for p in predicted if p.measured_latency_ms is not None]
    for p in measured:
        ax.plot([p.latency_ms, p.measured_latency_ms], [p.score, p.score], ":", color="gray", zorder=2)
    if measured:
        ax.scatter([p.measured_latency_ms for p in measured], [p.score for p in measured], marker="D",
                   color="black", label="measured on the search's machine", zorder=5)  # fmt: skip
    _label_accuracy_axes(ax, "latency (ms)", "accuracy vs latency (predicted from the table; diamonds: measured whole)")


def _label_accuracy_axes(ax: Any, xlabel: str, title: str) -> None:
    """Labels, a small title, a light grid and the legend of a search-val accuracy figure against a cost."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("search-val top-1 (%)")
    ax.set_title(title)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_epoch_time(pts: Sequence[Point], path: Path) -> Path:
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


def plot_pareto(pts: Sequence[Point], path: Path) -> Path:
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


def plot_generations(phases, path: Path) -> Path:
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


def plot_lottery(searches: Sequence[tuple[TrialRecord, dict]], path: Path) -> Path:
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
