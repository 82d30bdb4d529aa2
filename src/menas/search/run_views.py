"""What a run offers, derived from its trials and config alone: its networks (each lineage at its highest rung),
the best, the ranking, the Pareto front, the final networks, the score noise.

`RunViews` is a mixin of `menas.search.store.Store` (which supplies `trials` and `config` from its SQLite file);
anything else that holds a run's trial records can mix it in the same way. No torch, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from menas.search import fidelity, pareto, ranking
from menas.search.record import TrialRecord


class RunViews:
    """The derived reads of a run, over `trials()` and `config()` of the class it is mixed into."""

    def trials(self, status: str | Iterable[str] | None = None, generation: int | None = None) -> list[TrialRecord]:
        raise NotImplementedError  # supplied by the store

    def config(self) -> dict[str, Any]:
        raise NotImplementedError  # supplied by the store

    def lineages(self) -> list[TrialRecord]:
        """The done trials that stand for a network (`menas.search.fidelity.representatives`): every done trial
        in a search without fidelity stages; with them, each network at its highest rung reached and no noise
        repeats."""
        return fidelity.representatives(self.trials("done"))

    def best(self) -> TrialRecord | None:
        """The best network's trial by `menas.search.ranking.rank_key` (highest rung, final score, then fewer final
        MACs, then the earlier trial); None before any trial is done."""
        return ranking.best(self.lineages())

    def ranked(self, limit: int | None = None) -> list[TrialRecord]:
        """The networks' trials (`lineages`), best first, by `menas.search.ranking.rank_key` (at most `limit`)."""
        ordered = sorted(self.lineages(), key=ranking.rank_key)
        return ordered if limit is None else ordered[:limit]

    def front(self) -> list[TrialRecord]:
        """The networks' trials (`lineages`; with rungs, those at the highest rung any reached) on the first Pareto
        front of the run's `strategy.pareto` objectives (by default final search-val score up, final MACs down), by
        rising first cost; of trials equal in both, the
        earliest (`menas.search.pareto.trial_front`): a run's result under `strategy.objective: pareto`, and what
        `menas export --front K` counts."""
        lineages = self.lineages()
        top = max((t.rung for t in lineages), default=0)
        return pareto.trial_front([t for t in lineages if t.rung == top], self.pareto_objectives())

    def final_networks(self) -> list[TrialRecord]:
        """The run's result: its Pareto front (`front`) when the search optimised one (`strategy.objective:
        pareto`), else its best network alone (`best`); [] before any trial is done. What the search measures for
        real at its end under a latency table (`menas.latency.front`)."""
        if self.config().get("strategy", {}).get("objective") == "pareto":
            return self.front()
        best = self.best()
        return [] if best is None else [best]

    def pareto_objectives(self) -> tuple[str, ...]:
        """What the run's front trades (`strategy.pareto` of its config; accuracy and MACs before it existed)."""
        return pareto.config_objectives(self.config())

    def noise(self) -> fidelity.NoiseEstimate | None:
        """The score noise the run's repeated trials measure (`fidelity.repeats`); None without a done pair."""
        return fidelity.noise_estimate(fidelity.repeat_pairs(self.trials("done")))
