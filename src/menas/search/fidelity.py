"""Multi-fidelity selection and the search's own noise estimate: which trials of a generation go on to the next
rung, which are repeated with another seed, and what a lineage's score is. No torch.

A generation runs in stages, each proposed once every trial before it is told (so the stages depend only on
outcomes in trial_id order, and a resumed run proposes the same trials):

1. its children (samples or bred), each trained `rungs[0]` epochs (then the lottery and fine-tuning, as always);
2. `repeats` noise probes: the generation's best children trained again from scratch with another seed
   (role "repeat"). They measure the fitness noise (`noise_estimate`); they never change selection;
3. for each further rung r: the best `ceil(n / eta)` of the n networks proposed at rung r - 1 continue from
   their own weights for `rungs[r] - rungs[r - 1]` more epochs (role "promote"; a trial of its own, so it is
   resumable mid-rung and counted by the compute budget like any other).

A *lineage* is a network and its promotions: its score is the one of its highest rung reached. Selection (parent
pools, the run's best, fronts) ranks lineages by `representatives`: rung first, then score (`ranking.rank_key`),
so a network trained longer is never passed over for one lucky short training.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from menas.errors import check, is_int

ROLE_REPEAT = "repeat"  # a child trained again with another seed: measures the fitness noise
ROLE_PROMOTE = "promote"  # a network continued from its own weights to the next rung
#: Where a search with rungs cuts its lottery tickets (`fidelity.tickets`): after every child's first rung
#: ("first"), or only when a network reaches the top rung ("top": the promotion searches the ticket and fine-tunes
#: it; children and lower rungs neither search nor fine-tune).
TICKET_PLACES = ("first", "top")


class Staged(Protocol):
    """What the stage logic reads of a trial (`TrialOutcome`, `TrialRecord`)."""

    trial_id: int
    role: str
    parent_ids: tuple[int, ...]

    @property
    def rung(self) -> int: ...

    @property
    def ok(self) -> bool: ...


T = TypeVar("T", bound=Staged)


@dataclass(frozen=True)
class Fidelity:
    """A search's fidelity schedule (the config's `fidelity` section).

    Attributes:
        rungs: cumulative training epochs of each rung; () for one rung of the recipe's epochs.
        eta: the best 1/eta of a rung's networks go on to the next.
        repeats: children per generation trained again with another seed, to measure the score's noise.
        lr_scale: a promotion's peak lr as a share of the training peak lr (cosine to 0, no warmup).
        tickets: where tickets (and fine-tuning) happen with rungs: "first" (every child, after rung 0) or "top"
            (only promotions to the top rung); the same without rungs.
    """

    rungs: tuple[int, ...] = ()
    eta: int = 3
    repeats: int = 0
    lr_scale: float = 1.0
    tickets: str = "first"

    def __post_init__(self) -> None:
        rungs = tuple(self.rungs)
        check(
            all(is_int(r) and r >= 1 for r in rungs) and all(a < b for a, b in itertools.pairwise(rungs)),
            "fidelity.rungs",
            list(rungs),
            "a rising list of training epochs >= 1, e.g. [1, 3, 9]",
        )
        object.__setattr__(self, "rungs", rungs)
        check(is_int(self.eta) and self.eta >= 2, "fidelity.eta", self.eta, "integers >= 2")
        check(is_int(self.repeats) and self.repeats >= 0, "fidelity.repeats", self.repeats, "integers >= 0")
        check(self.tickets in TICKET_PLACES, "fidelity.tickets", self.tickets, ", ".join(TICKET_PLACES))

    @property
    def tickets_at_top(self) -> bool:
        """Whether tickets and fine-tuning wait for the top rung (`tickets: top` with more than one rung)."""
        return self.tickets == "top" and len(self.rungs) > 1

    def ticket_rung(self, rung: int) -> bool:
        """Whether a trial reaching `rung` searches tickets and fine-tunes (when its strategy does at all)."""
        return rung == (len(self.rungs) - 1 if self.tickets_at_top else 0)

    @property
    def staged(self) -> bool:
        """Whether a generation has stages after its children (promotions or repeats)."""
        return len(self.rungs) > 1 or self.repeats > 0

    def promotions(self, children: int) -> list[int]:
        """Networks proposed at rungs 1, 2, ... when a generation has `children` children (at most: a rung promotes
        only networks that finished the one before)."""
        counts, n = [], children
        for _ in self.rungs[1:]:
            n = math.ceil(n / self.eta)
            counts.append(n)
        return counts

    def planned(self, children: int) -> int:
        """Trials of a generation of `children` children, every stage full."""
        return children + min(self.repeats, children) + sum(self.promotions(children))

    def extra_epochs(self, rung: int) -> int:
        """Training epochs a promotion to `rung` (>= 1) adds."""
        return self.rungs[rung] - self.rungs[rung - 1]


def next_stage(
    fidelity: Fidelity, generation: Sequence[T], order: Callable[[list[T]], list[T]]
) -> list[tuple[str, T, int]]:
    """The next stage of a generation whose asked trials (`generation`, in trial_id order) are all told, as
    (role, the trial it repeats or continues, the rung it reaches): repeats of its best children, else the next
    rung's promotions; [] once it is complete. `order` sorts done trials of one
    rung best first (the strategy's objective). A stage with nothing to propose is skipped."""
    roles = {t.role for t in generation}
    children = [t for t in generation if t.role not in (ROLE_REPEAT, ROLE_PROMOTE)]
    if fidelity.repeats and ROLE_REPEAT not in roles:
        best = order([t for t in children if t.ok])[: fidelity.repeats]
        if best:
            return [(ROLE_REPEAT, t, 0) for t in best]
    below = children
    for rung in range(1, len(fidelity.rungs)):
        at_rung = [t for t in generation if t.role == ROLE_PROMOTE and t.rung == rung]
        if not at_rung:
            best = order([t for t in below if t.ok])[: math.ceil(len(below) / fidelity.eta)]
            return [(ROLE_PROMOTE, t, rung) for t in best]
        below = at_rung
    return []


def representatives(trials: Iterable[T]) -> list[T]:
    """One done trial per lineage, the one at its highest rung reached (a done promotion stands for the network
    it continued); repeats are noise probes and stand for nothing. In trial_id order."""
    done = [t for t in trials if t.ok and t.role != ROLE_REPEAT]
    continued = {t.parent_ids[0] for t in done if t.role == ROLE_PROMOTE and t.parent_ids}
    return [t for t in done if t.trial_id not in continued]


@dataclass(frozen=True)
class NoiseEstimate:
    """The search-val score's noise from pairs of trainings of one network with two seeds.

    Attributes:
        sigma: standard deviation of one trial's score, sqrt(mean squared pair difference / 2), in points.
        pairs: how many pairs it rests on.
    """

    sigma: float
    pairs: int

    def describe(self) -> str:
        """One line for `menas status` and the report."""
        return (
            f"score noise ±{self.sigma:.2f} points (one trial's standard deviation, from {self.pairs} repeated "
            f"trial{'s' if self.pairs != 1 else ''}); gaps under {2 * self.sigma:.2f} points are ties"
        )


def noise_estimate(pairs: Iterable[tuple[float, float]]) -> NoiseEstimate | None:
    """The noise of scores measured twice (`pairs`: the first and the repeated score); None without pairs."""
    diffs = [a - b for a, b in pairs]
    if not diffs:
        return None
    return NoiseEstimate(math.sqrt(sum(d * d for d in diffs) / (2 * len(diffs))), len(diffs))


def repeat_pairs(trials: Sequence[Any]) -> list[tuple[float, float]]:
    """(original final score, repeated final score) of every done repeat whose original is done (records or
    outcomes with `final_score`)."""
    by_id = {t.trial_id: t for t in trials}
    pairs = []
    for t in trials:
        if t.role != ROLE_REPEAT or not t.ok or not t.parent_ids:
            continue
        original = by_id.get(t.parent_ids[0])
        if original is not None and original.ok:
            pairs.append((original.final_score, t.final_score))
    return pairs


__all__ = [
    "ROLE_PROMOTE",
    "ROLE_REPEAT",
    "TICKET_PLACES",
    "Fidelity",
    "NoiseEstimate",
    "next_stage",
    "noise_estimate",
    "repeat_pairs",
    "representatives",
]
