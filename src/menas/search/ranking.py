"""Which trial is best: the one definition the strategies, the store, the search summary, `menas status` and the
report share.

A finished trial's *final* network is its lottery ticket when the trial kept one, else the candidate itself; its
final score and MACs are the ticket's or the candidate's accordingly (`menas.search.record.TrialRecord.final_score`,
`final_macs`; a strategy's `TrialOutcome` carries them). Trials rank by `rank_key`, best first:

1. higher rung (`menas.search.fidelity`: a network trained to a later rung is scored with less noise; every trial
   is at rung 0 in a search without rungs);
2. then higher fitness: the final score (search-val top-1), or the training-speed estimate under
   `fidelity.score: tse` (`TrialRecord.fitness`);
3. then fewer final MACs (of two networks that score the same, the cheaper one is the better find);
4. then the earlier trial (lower trial_id), so the order is total and never depends on the order results arrive.

Parent pools, tournaments, `Store.best()` and the report all sort with `rank_key` (under `strategy.objective:
pareto`, parent pools and tournaments order by `menas.search.pareto`'s NSGA-II instead). This module
imports nothing from menas and never imports torch (layer 0), so the store may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Ranked(Protocol):
    """What `rank_key` reads from a finished trial (`TrialRecord`, `TrialOutcome`)."""

    trial_id: int
    fitness: float | None
    final_macs: int | None


T = TypeVar("T", bound=Ranked)


def rank_key(trial: Ranked) -> tuple[int, float, int, int]:
    """Sort key of finished trials, best first: higher rung, then higher fitness, then fewer final MACs, then
    earlier trial.

    Only for trials that finished (fitness and MACs set): a failed trial is never ranked.
    """
    assert trial.fitness is not None and trial.final_macs is not None, f"trial {trial.trial_id} is unfinished"
    return (-getattr(trial, "rung", 0), -trial.fitness, trial.final_macs, trial.trial_id)


def best(trials: Iterable[T]) -> T | None:
    """The best of finished `trials` by `rank_key`; None when there are none."""
    return min(trials, key=rank_key, default=None)


__all__ = ["Ranked", "best", "rank_key"]
