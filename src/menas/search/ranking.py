"""Which trial is best: the one definition the strategies, the store, the search summary, `menas status` and the
report share.

A finished trial's *final* network is its lottery ticket when the trial kept one, else the candidate itself; its
final score, MACs and params are the ticket's or the candidate's accordingly (`FinalMetrics`); the candidate's
final score is after its fine-tune epochs when it had them (`finetuned_score`), else after training (`score`).
Trials rank by `rank_key`, best first:

1. higher final score (search-val top-1);
2. then fewer final MACs (of two networks that score the same, the cheaper one is the better find);
3. then the earlier trial (lower trial_id), so the order is total and never depends on the order results arrive.

Parent pools, tournaments, `Strategy.best()`, `Store.best()` and the report all sort with `rank_key`. This module
imports nothing from menas and never imports torch (layer 0), so the store may use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Ranked(Protocol):
    """What `rank_key` reads from a finished trial (`TrialOutcome`, `TrialRecord`, `TrialResult`)."""

    trial_id: int
    final_score: float | None
    final_macs: int | None


T = TypeVar("T", bound=Ranked)


class FinalMetrics:
    """Mixin for trial records with `ticket`, `ticket_score`/`_macs`/`_params`, `score`/`macs`/`params` and
    `finetuned_score` attributes: the final (ticket, else candidate) values."""

    ticket: str | None
    ticket_score: float | None
    ticket_macs: int | None
    ticket_params: int | None
    score: float | None
    macs: int | None
    params: int | None
    finetuned_score: float | None = None  # the candidate after fine-tuning without a ticket (None: not fine-tuned)

    @property
    def final_score(self) -> float | None:
        """The ticket's score when the trial kept a ticket, else the candidate's (after fine-tuning when it was)."""
        if self.ticket is not None:
            return self.ticket_score
        return self.score if self.finetuned_score is None else self.finetuned_score

    @property
    def final_macs(self) -> int | None:
        """The ticket's multiply-accumulates when the trial kept a ticket, else the candidate's."""
        return self.ticket_macs if self.ticket is not None else self.macs

    @property
    def final_params(self) -> int | None:
        """The ticket's parameter count when the trial kept a ticket, else the candidate's."""
        return self.ticket_params if self.ticket is not None else self.params


def rank_key(trial: Ranked) -> tuple[float, int, int]:
    """Sort key of finished trials, best first: higher final score, then fewer final MACs, then earlier trial.

    Only for trials that finished (final score and MACs set): a failed trial is never ranked.
    """
    assert trial.final_score is not None and trial.final_macs is not None, f"trial {trial.trial_id} is unfinished"
    return (-trial.final_score, trial.final_macs, trial.trial_id)


def best(trials: Iterable[T]) -> T | None:
    """The best of finished `trials` by `rank_key`; None when there are none."""
    return min(trials, key=rank_key, default=None)


__all__ = ["FinalMetrics", "Ranked", "best", "rank_key"]
