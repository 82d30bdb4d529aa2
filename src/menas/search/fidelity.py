"""Multi-fidelity selection and the search's own noise estimate: which trials of a generation go on to the next
rung, which are repeated with another seed, and what a lineage's score is. No torch.

A generation runs in stages, each proposed once every trial before it is told (so the stages depend only on
outcomes in trial_id order, and a resumed run proposes the same trials):

1. its children (samples or bred), each trained `rungs[0]` epochs (then the lottery and fine-tuning, as always);
2. `repeats` noise probes: the generation's best children trained again from scratch with another seed
   (role "repeat"). They measure the fitness noise (`noise_estimate`); they never change selection;
3. for each further rung r: the best `ceil(n / eta)` of the n networks proposed at rung r - 1 continue from
   their own weights for `rungs[r] - rungs[r - 1]` more epochs (role "promote"; a trial of its own, so it is
   resumable mid-rung and counted by the compute budget like any other);
4. `rescore` elites re-scored (role "rescore"): the best networks so far that were scored once (the strategy
   names them: MENAS its parent pool, regularized evolution its population, random search all) are trained
   again from scratch with another seed, each through the same rungs as its first training (a replica: its child
   repeated, then promoted rung by rung from its own weights). Their score becomes the mean of the two trainings
   at that rung, so an elite is not kept on one lucky number.

A *lineage* is a network and its promotions: its score is the one of its highest rung reached, or with a re-score
the mean of its trainings there (`Rescored`). Selection (parent pools, the run's best, fronts) ranks lineages by
`representatives`: rung first, then score (`ranking.rank_key`), so a network trained longer is never passed over
for one lucky short training. The score selection reads is the trial's fitness (`fidelity.score`): its search-val
top-1, or the training-speed estimate (minus its mean training loss), which compares trials only within a rung,
as selection does.
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
ROLE_RESCORE = "rescore"  # a replica of an elite's training with another seed: its score joins the elite's mean
#: Roles of trials that stand for no network of their own: noise probes and re-score replicas.
PROBES = (ROLE_REPEAT, ROLE_RESCORE)
#: Where a search with rungs cuts its lottery tickets (`fidelity.tickets`): after every child's first rung
#: ("first"), or only when a network reaches the top rung ("top": the promotion searches the ticket and fine-tunes
#: it; children and lower rungs neither search nor fine-tune).
TICKET_PLACES = ("first", "top")
#: What selection ranks by (`Fidelity.score`): the final network's search-val top-1, or the training-speed estimate.
SCORES = ("val", "tse")


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
        rescore: elites re-scored after each generation (replicas with another seed, `ROLE_RESCORE`).
        score: what selection ranks by: "val" (the final network's search-val top-1) or "tse" (minus the mean
            training loss of the trial's own training epochs, `TrialRecord.tse`); every trial's recipe names it.
    """

    rungs: tuple[int, ...] = ()
    eta: int = 3
    repeats: int = 0
    lr_scale: float = 1.0
    tickets: str = "first"
    rescore: int = 0
    score: str = "val"

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
        check(is_int(self.rescore) and self.rescore >= 0, "fidelity.rescore", self.rescore, "integers >= 0")
        check(self.score in SCORES, "fidelity.score", self.score, ", ".join(SCORES))

    @property
    def tickets_at_top(self) -> bool:
        """Whether tickets and fine-tuning wait for the top rung (`tickets: top` with more than one rung)."""
        return self.tickets == "top" and len(self.rungs) > 1

    def ticket_rung(self, rung: int) -> bool:
        """Whether a trial reaching `rung` searches tickets and fine-tunes (when its strategy does at all)."""
        return rung == (len(self.rungs) - 1 if self.tickets_at_top else 0)

    @property
    def staged(self) -> bool:
        """Whether a generation has stages after its children (promotions, repeats or re-scores)."""
        return len(self.rungs) > 1 or self.repeats > 0 or self.rescore > 0

    def promotions(self, children: int) -> list[int]:
        """Networks proposed at rungs 1, 2, ... when a generation has `children` children (at most: a rung promotes
        only networks that finished the one before)."""
        counts, n = [], children
        for _ in self.rungs[1:]:
            n = math.ceil(n / self.eta)
            counts.append(n)
        return counts

    def planned(self, children: int) -> int:
        """Trials of a generation of `children` children, every stage full (re-scores at most one replica per
        rung each)."""
        rescores = self.rescore * max(1, len(self.rungs))
        return children + min(self.repeats, children) + sum(self.promotions(children)) + rescores

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
    children = [t for t in generation if t.role not in (*PROBES, ROLE_PROMOTE)]
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


def rescore_stage(
    fidelity: Fidelity, generation: Sequence[T], trials: Sequence[T], elites: Callable[[], Sequence[Any]]
) -> list[tuple[str, T, int]]:
    """A generation's re-score stage, once its other stages are complete, as (role, the trial it repeats or
    continues, the rung it reaches): the first replicas (each elite's child trained again, rung 0) when the
    generation has none yet, else each replica continued one rung until it reaches its elite's rung; [] once
    done. `trials` are all the run's told trials, `elites` gives the lineages eligible, best first (only those
    scored once are re-scored; called only when the replicas start)."""
    if not fidelity.rescore:
        return []
    by_id = {t.trial_id: t for t in trials}
    replicas = [t for t in generation if t.role == ROLE_RESCORE]
    if not replicas:
        taken = {lineage_root(t, by_id) for t in trials if t.role == ROLE_RESCORE}  # re-scored already
        chosen = []
        for elite in elites():
            root = lineage_root(elite, by_id)
            if elite.ok and root in by_id and root not in taken:
                chosen.append(by_id[root])
                taken.add(root)
            if len(chosen) == fidelity.rescore:
                break
        return [(ROLE_RESCORE, child, 0) for child in chosen]
    continued = {t.parent_ids[0] for t in replicas if t.parent_ids}
    tips = [t for t in replicas if t.trial_id not in continued and t.ok]
    targets = {t.trial_id: _lineage_rung(lineage_root(t, by_id), trials) for t in tips}
    return [(ROLE_RESCORE, t, t.rung + 1) for t in tips if t.rung < targets[t.trial_id]]


def lineage_root(trial: Staged, by_id: dict[int, Any]) -> int:
    """The trial id of the child a promotion or re-score replica goes back to (the trial itself for a child)."""
    current = trial
    for _ in range(len(by_id) + 1):  # a chain never revisits a trial
        if current.role not in (ROLE_PROMOTE, ROLE_RESCORE) or not current.parent_ids:
            return current.trial_id
        parent = by_id.get(current.parent_ids[0])
        if parent is None:
            return current.parent_ids[0]
        current = parent
    raise AssertionError(f"trial {trial.trial_id}: its parents form a cycle")


def _lineage_rung(root: int, trials: Iterable[Staged]) -> int:
    """The highest rung the lineage of child `root` reached (its promotions, not its replicas)."""
    rung, frontier = 0, {root}
    for t in sorted(trials, key=lambda t: t.trial_id):  # a promotion always comes after the trial it continues
        if t.role == ROLE_PROMOTE and t.ok and t.parent_ids and t.parent_ids[0] in frontier:
            frontier.add(t.trial_id)
            rung = max(rung, t.rung)
    return rung


class Rescored:
    """A lineage's representative that was re-scored: every attribute is its trial's, except `final_score` and
    `fitness`, the means of its own and its replicas' at the same rung (`evaluations` trainings in all)."""

    def __init__(self, trial: Any, scores: Sequence[float], fitnesses: Sequence[float] | None = None) -> None:
        self.trial = trial
        self.scores = tuple(scores)  # final scores (search-val), its own first
        self.fitnesses = tuple(scores if fitnesses is None else fitnesses)  # what selection ranks by, its own first

    @property
    def final_score(self) -> float:
        return sum(self.scores) / len(self.scores)

    @property
    def fitness(self) -> float:
        """The mean of the trainings' fitness (`TrialRecord.fitness`; the final score under `fidelity.score: val`)."""
        return sum(self.fitnesses) / len(self.fitnesses)

    @property
    def own_score(self) -> float:
        """The representative's own score (its first training)."""
        return self.scores[0]

    @property
    def evaluations(self) -> int:
        return len(self.scores)

    def __getattr__(self, name: str) -> Any:
        if name == "trial":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.trial, name)

    def __eq__(self, other: object) -> bool:
        mine, theirs = (self.trial, self.scores, self.fitnesses), (other.trial, other.scores, other.fitnesses)
        return isinstance(other, Rescored) and mine == theirs

    def __hash__(self) -> int:
        return hash((self.trial.trial_id, self.scores, self.fitnesses))

    def __repr__(self) -> str:
        return f"Rescored({self.trial!r}, scores={self.scores})"


def evaluations(trial: Any) -> int:
    """How many trainings a lineage's score averages (1 unless it is `Rescored`)."""
    return trial.evaluations if isinstance(trial, Rescored) else 1


def representatives(trials: Iterable[T]) -> list[T]:
    """One done trial per lineage, the one at its highest rung reached (a done promotion stands for the network
    it continued), as `Rescored` when replicas of it reached that rung; repeats and replicas stand for no network
    of their own. In trial_id order."""
    every = list(trials)
    done = [t for t in every if t.ok and t.role not in PROBES]
    continued = {t.parent_ids[0] for t in done if t.role == ROLE_PROMOTE and t.parent_ids}
    reps = [t for t in done if t.trial_id not in continued]
    replicas = _replica_scores(every)
    if not replicas:
        return reps
    by_id = {t.trial_id: t for t in every}
    out: list[Any] = []
    for rep in reps:
        found = replicas.get((lineage_root(rep, by_id), rep.rung), [])
        if found:
            scores, fitnesses = zip(*found, strict=True)
            rep = Rescored(rep, [rep.final_score, *scores], [rep.fitness, *fitnesses])
        out.append(rep)
    return out


def _replica_scores(trials: Sequence[Any]) -> dict[tuple[int, int], list[tuple[float, float]]]:
    """(final score, fitness) of the done re-score replicas by (the child they replicate, the rung they reached)."""
    by_id = {t.trial_id: t for t in trials}
    scores: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for t in trials:
        if t.role == ROLE_RESCORE and t.ok and t.final_score is not None and t.fitness is not None:
            scores.setdefault((lineage_root(t, by_id), t.rung), []).append((t.final_score, t.fitness))
    return scores


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
    """(original final score, repeated final score) of every done repeat whose original is done, and of every
    re-scored lineage (its own score, each replica's at its rung) (records or outcomes with `final_score`)."""
    by_id = {t.trial_id: t for t in trials}
    pairs = []
    for t in trials:
        if t.role != ROLE_REPEAT or not t.ok or not t.parent_ids:
            continue
        original = by_id.get(t.parent_ids[0])
        if original is not None and original.ok:
            pairs.append((original.final_score, t.final_score))
    for rep in representatives(trials):
        if isinstance(rep, Rescored):
            pairs += [(rep.own_score, score) for score in rep.scores[1:]]
    return pairs


__all__ = [
    "PROBES",
    "ROLE_PROMOTE",
    "ROLE_REPEAT",
    "ROLE_RESCORE",
    "SCORES",
    "TICKET_PLACES",
    "Fidelity",
    "NoiseEstimate",
    "Rescored",
    "evaluations",
    "lineage_root",
    "next_stage",
    "noise_estimate",
    "repeat_pairs",
    "representatives",
    "rescore_stage",
]
