"""The finished trials as the report draws them (`Point`: final score, cost and latency, and the candidate's), the
Pareto front, what weight inheritance did per generation, and the trials whose ticket search is drawn. No torch."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from menas.folders import RunFolder
from menas.search import fidelity, pareto, ranking
from menas.search.record import TrialRecord

#: Files `write_report` creates in the report folder.
FIGURES = ("accuracy_vs_macs.png", "epoch_time.png", "pareto.png", "generations.png")
TABLES = ("trials.csv", "report.md")
#: The one self-contained page (`menas.report.html`), written last.
PAGE = "report.html"
#: Written after the tables when some trial folder holds a ticket search record (`trials/NNNNN/lottery.json`).
LOTTERY_FIGURE = "lottery.png"
#: Written when trials have a predicted latency (a search with a latency table): accuracy against latency.
LATENCY_FIGURE = "accuracy_vs_latency.png"
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
    latency_ms: float | None = None  # the final network's predicted latency, ms (a search with a latency table)
    measured_latency_ms: float | None = None  # measured on the search's machine (the final front's members)

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
            latency_ms=record.final_latency_ms,
            measured_latency_ms=record.measured_latency_ms,
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
    """The best network's trial by `menas.search.ranking.rank_key` over `fidelity.representatives` (the store's and
    the strategies' definition), as drawn."""
    top = ranking.best(fidelity.representatives(records))
    return None if top is None else Point.from_record(top)


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (cost <= and score >=, one of them strictly), by rising cost:
    the first front of `menas.search.pareto`, the one definition the store, `menas status` and `menas export
    --front` use too. Of several points with the same cost and score, the first is kept."""
    front = pareto.pareto_front(list(zip(scores, costs, strict=True)), (pareto.MAX, pareto.MIN))
    return sorted(front, key=lambda i: (costs[i], i))


def run_front(pts: Sequence[Point], records: Sequence[TrialRecord], objectives: Sequence[str]) -> list[int]:
    """Indices into `pts` of the run's front as `Store.front` finds it: one trial per network, at the highest rung
    any reached, over the run's objectives (`strategy.pareto`); without records, the MACs front of all points."""
    if not records:
        return pareto_front([p.macs for p in pts], [p.score for p in pts])
    lineages = fidelity.representatives(records)
    top = max((t.rung for t in lineages), default=0)
    front = pareto.trial_front([t for t in lineages if t.rung == top], objectives)
    index = {p.trial_id: i for i, p in enumerate(pts)}
    return [index[t.trial_id] for t in front if t.trial_id in index]


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
