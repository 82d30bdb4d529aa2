"""The ask/tell protocol between the search loop and a strategy: the records that cross it (`TrialSpec` goes out
with its `Recipe`, `TrialOutcome` comes back, a projection of the trial's record), the roles of a proposed trial
and `SearchExhausted`. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from menas.errors import MenasError, check, is_int, is_real
from menas.search.fidelity import ROLE_PROMOTE, ROLE_REPEAT, Fidelity

#: Outcome statuses a strategy accepts.
STATUSES = ("done", "failed")

#: Roles of a proposed trial: how its genome was made.
ROLE_SAMPLE = "sample"  # drawn uniformly within the budget (initial population, random search)
ROLE_CROSSOVER = "crossover"  # one of two children of two parents, repaired into the budget
ROLE_MUTATION = "mutation"  # a mutated copy of one parent
ROLE_FILL = "fill"  # a fresh sample standing in after breeding ran out of tries (or of parents)
# ROLE_REPEAT ("repeat", a noise probe) and ROLE_PROMOTE ("promote", the next rung): `menas.search.fidelity`

#: Bounded loops: tries allowed per genome still needed before breeding gives up and falls back.
TRIES_PER_SLOT = 50


class SearchExhausted(MenasError):
    """No new genome (neither asked before nor a known ticket) was found within the bounded number of tries."""


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Recipe:
    """How the strategy's trials train, from the config: the strategy decides each trial's recipe from it
    (`for_trial`), so the search builds jobs from specs and never re-derives a decision.

    Attributes:
        epochs: training epochs of a candidate from scratch (`train.epochs`).
        finetune_epochs: fine-tune epochs of a trial that fine-tunes (`finetune_epochs`).
        inherit: whether bred children start from their parents' weights (`inherit.enabled`).
        inherit_epochs: training epochs of an inheriting child (`inherit.epochs`; None: `epochs`).
        fidelity: the rungs, promotions and noise repeats (`fidelity`); with rungs a child trains `rungs[0]`
            epochs instead of `epochs`.
    """

    epochs: int = 1
    finetune_epochs: int = 0
    inherit: bool = False
    inherit_epochs: int | None = None
    fidelity: Fidelity = field(default_factory=Fidelity)

    @property
    def first_epochs(self) -> int:
        """Training epochs of a child from scratch: the first rung's, else `epochs`."""
        return self.fidelity.rungs[0] if self.fidelity.rungs else self.epochs

    def for_trial(self, bred: bool, finetunes: bool) -> dict[str, Any]:
        """A trial's recipe as plain data: {"epochs", "finetune_epochs", "inherit"} (and "rung": 0 when the
        search has rungs). A bred child (one with a gene origin) inherits when inheritance is on; a trial
        fine-tunes when its strategy fine-tunes every candidate or it searches tickets."""
        inherit = self.inherit and bred
        epochs = self.inherit_epochs if inherit and self.inherit_epochs is not None else self.first_epochs
        finetunes = finetunes and self.fidelity.ticket_rung(0)
        recipe = {"epochs": epochs, "finetune_epochs": self.finetune_epochs if finetunes else 0, "inherit": inherit}
        return self._scored({**recipe, "rung": 0} if len(self.fidelity.rungs) > 1 else recipe)

    def for_promotion(self, rung: int, finetunes: bool = False) -> dict[str, Any]:
        """A promotion's recipe: `rungs[rung] - rungs[rung - 1]` more epochs from its parent's weights at
        `lr_scale` x the peak lr; fine-tuning (`finetune_epochs`, when the strategy fine-tunes: `finetunes`) only at
        the top rung under `fidelity.tickets: top`."""
        finetunes = finetunes and self.fidelity.ticket_rung(rung)
        return self._scored(
            {
                "epochs": self.fidelity.extra_epochs(rung),
                "finetune_epochs": self.finetune_epochs if finetunes else 0,
                "inherit": False,
                "rung": rung,
                "continues": True,
                "lr_scale": self.fidelity.lr_scale,
            }
        )

    def _scored(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """`recipe` with "score": "tse" when selection ranks by the training-speed estimate (`fidelity.score`), so
        the trial's record says what it is ranked by (`TrialRecord.fitness`); unchanged under "val" (recipes
        recorded before the option compare equal on replay)."""
        return {**recipe, "score": "tse"} if self.fidelity.score == "tse" else recipe


@dataclass(frozen=True)
class TrialSpec:
    """A proposal from `ask()`: evaluate `genome` as trial `trial_id`.

    Attributes:
        trial_id: assigned by the strategy in ask order (0, 1, 2, ...); the store keys on it.
        genome: canonical genome string.
        generation: MENAS generation; the batch index for random search; 0 for regularized evolution's initial
            population, then one per `population` children.
        role: how the genome was made (`ROLE_SAMPLE`, `ROLE_CROSSOVER`, `ROLE_MUTATION`, `ROLE_FILL`).
        parents: genome strings of the parents (tickets when tickets are on); empty for samples.
        parent_ids: the trials whose final networks the parents are, in the order of `parents`.
        recipe: how the trial trains (`Recipe.for_trial`): training epochs, fine-tune epochs, whether it starts
            from its parents' weights. The search builds the trial's job from it.
        use_tickets: whether the trial should search lottery tickets after training.
        origin: where each gene of a bred child came from (`menas.space.operators.Origin.to_dict()`, its parent k being
            `parents[k]`), which weight inheritance reads; None for samples and strategies that keep no origins.
    """

    trial_id: int
    genome: str
    generation: int
    role: str
    parents: tuple[str, ...] = ()
    use_tickets: bool = False
    origin: dict[str, Any] | None = field(default=None, hash=False)  # a dict: not hashed, compared
    parent_ids: tuple[int, ...] = ()
    recipe: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        check(is_int(self.trial_id) and self.trial_id >= 0, "TrialSpec.trial_id", self.trial_id, "integers >= 0")
        check(isinstance(self.genome, str) and self.genome != "", "TrialSpec.genome", self.genome, "a genome string")
        check(
            is_int(self.generation) and self.generation >= 0, "TrialSpec.generation", self.generation, "integers >= 0"
        )
        check(isinstance(self.role, str) and self.role != "", "TrialSpec.role", self.role, "a non-empty string")
        parents = tuple(self.parents) if isinstance(self.parents, list | tuple) else self.parents
        check(
            isinstance(parents, tuple) and all(isinstance(p, str) for p in parents),
            "TrialSpec.parents",
            self.parents,
            "a sequence of genome strings",
        )
        object.__setattr__(self, "parents", parents)
        parent_ids = tuple(self.parent_ids) if isinstance(self.parent_ids, list | tuple) else self.parent_ids
        check(
            isinstance(parent_ids, tuple)
            and all(is_int(i) and i >= 0 for i in parent_ids)
            and len(parent_ids) in (0, len(parents)),
            "TrialSpec.parent_ids",
            self.parent_ids,
            "trial ids, one per parent",
        )
        object.__setattr__(self, "parent_ids", parent_ids)
        check(isinstance(self.use_tickets, bool), "TrialSpec.use_tickets", self.use_tickets, "true or false")
        check(
            self.origin is None or isinstance(self.origin, dict),
            "TrialSpec.origin",
            self.origin,
            "None or a mapping (Origin.to_dict())",
        )

    @classmethod
    def from_record(cls, record: Any) -> TrialSpec:
        """Reads a spec from any object with the same attribute names (e.g. the store's `TrialRecord`)."""
        return cls(
            trial_id=record.trial_id,
            genome=record.genome,
            generation=record.generation,
            role=record.role,
            parents=tuple(record.parents),
            use_tickets=bool(record.use_tickets),
            origin=getattr(record, "origin", None),
            parent_ids=tuple(getattr(record, "parent_ids", ())),
            recipe=getattr(record, "recipe", None),
        )


@dataclass(frozen=True)
class TrialOutcome:
    """What the search loop tells a strategy about a finished trial: the projection of its record
    (`menas.search.record.TrialRecord`) that selection reads. Failed outcomes never become parents.

    Attributes:
        trial_id: the spec's trial id.
        genome: the spec's genome string (the candidate).
        status: "done" or "failed".
        score: the score the search ranks by (`TrialRecord.fitness`: the final network's search-val top-1, or the
            training-speed estimate under `fidelity.score: tse`); required when done.
        macs: the final network's multiply-accumulates; required when done.
        params: the final network's parameter count; required when done.
        ticket: the lottery ticket's genome string when one replaced the candidate (then the final network and a
            parent in its stead), else None.
        role: the spec's role (repeats and promotions are read by `menas.search.fidelity`).
        parent_ids: the spec's parents' trial ids (a repeat's or a promotion's: the trial it repeats or continues).
        rung: the rung the trial's network reached (0 without rungs).
        latency_ms: the final network's predicted latency in ms (`TrialRecord.final_latency_ms`: a search with a
            latency table), what `strategy.pareto`'s latency objective reads; None without a table.
    """

    trial_id: int
    genome: str
    status: str
    score: float | None = None
    macs: int | None = None
    params: int | None = None
    ticket: str | None = None
    role: str = ROLE_SAMPLE
    parent_ids: tuple[int, ...] = ()
    rung: int = 0
    latency_ms: float | None = None

    def __post_init__(self) -> None:
        check(is_int(self.trial_id) and self.trial_id >= 0, "TrialOutcome.trial_id", self.trial_id, "integers >= 0")
        check(isinstance(self.genome, str) and self.genome != "", "TrialOutcome.genome", self.genome, "a genome string")
        check(self.status in STATUSES, "TrialOutcome.status", self.status, ", ".join(STATUSES))
        check(
            self.ticket is None or (isinstance(self.ticket, str) and self.ticket != ""),
            "TrialOutcome.ticket",
            self.ticket,
            "a genome string or None",
        )
        check(
            self.latency_ms is None or (is_real(self.latency_ms) and self.latency_ms >= 0),
            "TrialOutcome.latency_ms",
            self.latency_ms,
            "None or numbers >= 0 (ms)",
        )
        if self.status != "done":
            return
        check(is_real(self.score), "TrialOutcome.score", self.score, "a finite number when status is done")
        object.__setattr__(self, "score", float(self.score))
        for name in ("macs", "params"):
            value = getattr(self, name)
            check(is_int(value) and value >= 0, f"TrialOutcome.{name}", value, "integers >= 0 when done")

    @property
    def ok(self) -> bool:
        """True for a done trial (it may become a parent)."""
        return self.status == "done"

    @property
    def final_genome(self) -> str:
        """The network a parent pool takes: the ticket when one was kept, else the candidate."""
        return self.ticket if self.ticket is not None else self.genome

    @property
    def final_score(self) -> float | None:
        return self.score

    @property
    def fitness(self) -> float | None:
        """What selection ranks by (`menas.search.ranking.rank_key`): the score."""
        return self.score

    @property
    def final_macs(self) -> int | None:
        return self.macs

    @property
    def final_params(self) -> int | None:
        return self.params

    @property
    def final_latency_ms(self) -> float | None:
        return self.latency_ms

    @classmethod
    def from_record(cls, record: Any) -> TrialOutcome | None:
        """The outcome of a trial record (`TrialRecord`); None while the trial is in flight."""
        if record.status not in STATUSES:
            return None
        lineage = {
            "role": getattr(record, "role", ROLE_SAMPLE),
            "parent_ids": tuple(getattr(record, "parent_ids", ())),
            "rung": (getattr(record, "recipe", None) or {}).get("rung", 0),
        }
        if record.status == "failed":
            return cls(trial_id=record.trial_id, genome=record.genome, status="failed", **lineage)
        return cls(
            record.trial_id,
            record.genome,
            "done",
            record.fitness,
            record.final_macs,
            record.final_params,
            record.ticket,
            **lineage,
            latency_ms=getattr(record, "final_latency_ms", None),
        )


def spec_diff(recorded: TrialSpec, proposed: TrialSpec) -> str:
    """The fields where two specs differ, values shortened: 'genome: recorded '...' proposed '...''."""
    parts = []
    for name in ("genome", "generation", "role", "parents", "parent_ids", "use_tickets", "origin", "recipe"):
        a, b = getattr(recorded, name), getattr(proposed, name)
        if a != b:
            parts.append(f"{name}: recorded {str(a)[:60]!r}, proposed {str(b)[:60]!r}")
    return "; ".join(parts)


__all__ = [
    "ROLE_CROSSOVER",
    "ROLE_FILL",
    "ROLE_MUTATION",
    "ROLE_PROMOTE",
    "ROLE_REPEAT",
    "ROLE_SAMPLE",
    "STATUSES",
    "TRIES_PER_SLOT",
    "Recipe",
    "SearchExhausted",
    "TrialOutcome",
    "TrialSpec",
    "spec_diff",
]
