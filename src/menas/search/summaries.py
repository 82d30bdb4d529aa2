"""Summaries of a run's trials: per-generation statistics (`generation_summary`, the Fig. 4a/4b figures of
`generation_phases`), the compute used and the time left. Plain functions of `TrialRecord`s; no torch, no SQL.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from menas.search.record import TrialRecord


@dataclass(frozen=True)
class GenerationSummary:
    """Statistics of one generation. Scores, MACs and params are over done trials (None when there are none);
    `ticket_*` are the final (ticket, else candidate) values; `epoch_s_mean` averages the candidates' training
    epoch times (training passes, `train_epoch_s`; every recorded epoch time of trials from before schema 3)."""

    generation: int
    trials: int
    done: int
    failed: int
    in_flight: int
    score_mean: float | None
    score_median: float | None
    score_best: float | None
    ticket_score_mean: float | None
    ticket_score_best: float | None
    macs_mean: float | None
    params_mean: float | None
    ticket_macs_mean: float | None
    ticket_params_mean: float | None
    epoch_s_mean: float | None


@dataclass(frozen=True)
class GenerationPhases:
    """Per generation, over done trials: mean and spread (population standard deviation; 0 for one trial) of the
    candidates' params, MACs and training epoch time (each trial's mean training-pass seconds per epoch, scoring
    excluded), the kept tickets' params and MACs, the share of candidates a ticket replaced, and the compute the
    generation's finished trials used (training-image equivalents, as `compute.images` counts). None where there is
    nothing to average."""

    generation: int
    done: int
    params: tuple[float, float] | None
    macs: tuple[float, float] | None
    train_epoch_s: tuple[float, float] | None
    ticket_params: tuple[float, float] | None
    ticket_macs: tuple[float, float] | None
    replaced_share: float | None
    final_score_best: float | None
    compute_images: int


@dataclass(frozen=True)
class ComputeUsed:
    """The search compute its finished (done and failed) trials used, as `compute` budgets count it."""

    images: int  # training-image equivalents: trained and fine-tuned images, + calibrated and scored ones / 3
    trial_s: float  # the sum of the trials' wall seconds (started to finished)
    trials: int


def _spread(values: list[float]) -> tuple[float, float] | None:
    """(mean, population standard deviation) of `values`; None when empty."""
    return (statistics.fmean(values), statistics.pstdev(values)) if values else None


@dataclass(frozen=True)
class TimeLeft:
    """How long the rest of a search should take, from the trials finished so far."""

    per_trial_s: float  # mean wall seconds of a finished trial
    parallel: float  # trials run side by side so far (trial seconds per wall second, >= 1)
    trials_left: int
    seconds: float
    bound: str = "trials"  # what ends the run first: "trials" (all done), "images" or "trial_s" (`compute` budget)


def estimate_time_left(
    trials: Iterable[TrialRecord],
    total: int,
    used: ComputeUsed | None = None,
    limits: tuple[float, float] = (math.inf, math.inf),
) -> TimeLeft | None:
    """The time left for `total` trials at the pace of the finished ones (None before the first finishes), or
    less when the `compute` budget (`limits`: images, trial seconds; `used`: what the finished trials used) stops
    the run first: at the finished trials' mean cost, the budget left lasts ceil(left / mean) more trials (the
    one that crosses it still runs), and never fewer than those running now."""
    trials = list(trials)
    finished = [t for t in trials if t.finished_at and t.started_at]
    if not finished:
        return None
    busy = sum(t.finished_at - t.started_at for t in finished)
    per_trial = busy / len(finished)
    wall = max(t.finished_at for t in finished) - min(t.started_at for t in finished)
    parallel = max(1.0, busy / wall) if wall > 0 else 1.0
    left = max(0, total - sum(1 for t in trials if t.status in ("done", "failed")))
    bound = "trials"
    if used is not None and used.trials > 0:
        running = sum(1 for t in trials if t.status == "running")
        for name, limit, spent in (("images", limits[0], used.images), ("trial_s", limits[1], used.trial_s)):
            if math.isinf(limit):
                continue
            per = spent / used.trials
            more = math.ceil((limit - spent) / per) if spent < limit and per > 0 else 0
            if max(running, more) < left:
                left, bound = max(running, more), name
    return TimeLeft(per_trial, parallel, left, left * per_trial / parallel, bound)


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _by_generation(trials: Iterable[TrialRecord]) -> list[tuple[int, list[TrialRecord]]]:
    """Every trial grouped by generation, ascending."""
    by_gen: dict[int, list[TrialRecord]] = {}
    for record in trials:
        by_gen.setdefault(record.generation, []).append(record)
    return sorted(by_gen.items())


def generation_summary(trials: Iterable[TrialRecord]) -> list[GenerationSummary]:
    """Per generation, ascending: counts by status, score and cost statistics of done trials, epoch time."""
    out = []
    for gen, records in _by_generation(trials):
        done = [r for r in records if r.status == "done"]
        scores = [r.trained_score for r in done]
        finals = [r.final_score for r in done]
        out.append(
            GenerationSummary(
                generation=gen,
                trials=len(records),
                done=len(done),
                failed=sum(r.status == "failed" for r in records),
                in_flight=sum(r.in_flight for r in records),
                score_mean=_mean(scores),
                score_median=statistics.median(scores) if scores else None,
                score_best=max(scores, default=None),
                ticket_score_mean=_mean(finals),
                ticket_score_best=max(finals, default=None),
                macs_mean=_mean([r.macs for r in done]),
                params_mean=_mean([r.params for r in done]),
                ticket_macs_mean=_mean([r.final_macs for r in done]),
                ticket_params_mean=_mean([r.final_params for r in done]),
                epoch_s_mean=_mean([t for r in done for t in (r.train_epoch_s or r.epoch_s)]),
            )
        )
    return out


def generation_phases(trials: Iterable[TrialRecord]) -> list[GenerationPhases]:
    """Per generation, ascending: what the paper's Fig. 4a/4b show (cost and training epoch time of the
    candidates, cost of their tickets, the share replaced), from the per-phase columns."""
    out = []
    for gen, records in _by_generation(trials):
        done = [r for r in records if r.status == "done"]
        tickets = [r for r in done if r.replaced]
        epoch_s = [statistics.fmean(r.train_epoch_s) for r in done if r.train_epoch_s]
        out.append(
            GenerationPhases(
                generation=gen,
                done=len(done),
                params=_spread([r.params for r in done]),
                macs=_spread([r.macs for r in done]),
                train_epoch_s=_spread(epoch_s),
                ticket_params=_spread([r.ticket_params for r in tickets]),
                ticket_macs=_spread([r.ticket_macs for r in tickets]),
                replaced_share=len(tickets) / len(done) if done else None,
                final_score_best=max((r.final_score for r in done), default=None),
                compute_images=round(sum(r.budget_images or 0 for r in records if not r.in_flight)),
            )
        )
    return out
