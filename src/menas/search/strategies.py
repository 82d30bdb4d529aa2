"""Search strategies: which genomes to evaluate next, given the results so far.

This module owns the ask/tell protocol between the search loop and a strategy, the two records that cross it
(`TrialSpec` goes out, `TrialOutcome` comes back) and three strategies:

- `MENAS`: generations of a fixed size. Generation 0 is sampled within the budget; every later generation is
  bred by crossover and mutation from the top-K lottery tickets found so far (optionally mixed with the largest
  models), repaired into the budget and deduplicated against every genome already asked or found as a ticket.
  `MENAS(use_tickets=False)` is the paper's ablation. Each bred child's spec carries its gene `origin` (the traced
  operators: the same draws and children as the plain ones), which individual weight sharing reads
  (`strategy.name: menas-inherit`, see `menas.search.inherit`; the strategy breeds the same either way).
- `RandomSearch`: independent samples within the budget (the paper's Table 3 baselines, in any space).
- `RegularizedEvolution`: aging evolution with tournament selection (Real et al., AAAI 2019).

Determinism contract, which is what makes resume exact: a strategy draws from one `random.Random(seed)`, and what
it draws depends only on the seed, its settings and the outcomes *in trial_id order*; never on the order in
which results arrive, on how many specs `ask` hands out per call, or on the clock. MENAS breeds a generation only
once every trial of the previous one is told; regularized evolution breeds child `t` from the population after
exactly the outcomes of trials `< max(population, t - parallel + 1)`. Replaying the recorded (spec, outcome) pairs
in trial_id order (`replay`, `from_history`) therefore rebuilds the state of the uninterrupted run, and trials that
were asked but not told come back as `pending`.

Scores are "higher is better" (search-val top-1). This module never imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from menas.config import SearchConfig
from menas.errors import BudgetError, MenasError, UserError, check, is_int, is_real
from menas.search.ranking import rank_key
from menas.space.cost import Budget, parse_count
from menas.space.genome import Genome
from menas.space.operators import (
    MUTATION_PROB,
    Origin,
    check_feasible,
    check_mutation_prob,
    crossover_traced,
    mutate,
    mutate_traced,
    repair_traced,
    sample,
)
from menas.space.spaces import SearchSpace, load_space

#: Outcome statuses a strategy accepts.
STATUSES = ("done", "failed")

#: Roles of a proposed trial: how its genome was made.
ROLE_SAMPLE = "sample"  # drawn uniformly within the budget (initial population, random search)
ROLE_CROSSOVER = "crossover"  # one of two children of two parents, repaired into the budget
ROLE_MUTATION = "mutation"  # a mutated copy of one parent
ROLE_FILL = "fill"  # a fresh sample standing in after breeding ran out of tries (or of parents)

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
    """

    epochs: int = 1
    finetune_epochs: int = 0
    inherit: bool = False
    inherit_epochs: int | None = None

    def for_trial(self, bred: bool, finetunes: bool) -> dict[str, Any]:
        """A trial's recipe as plain data: {"epochs", "finetune_epochs", "inherit"}. A bred child (one with a gene
        origin) inherits when inheritance is on; a trial fine-tunes when its strategy fine-tunes every candidate or
        it searches tickets."""
        inherit = self.inherit and bred
        epochs = self.inherit_epochs if inherit and self.inherit_epochs is not None else self.epochs
        return {"epochs": epochs, "finetune_epochs": self.finetune_epochs if finetunes else 0, "inherit": inherit}


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
        score: the final network's search-val score, the one the search ranks by (`TrialRecord.final_score`);
            required when done.
        macs: the final network's multiply-accumulates; required when done.
        params: the final network's parameter count; required when done.
        ticket: the lottery ticket's genome string when one replaced the candidate (then the final network and a
            parent in its stead), else None.
    """

    trial_id: int
    genome: str
    status: str
    score: float | None = None
    macs: int | None = None
    params: int | None = None
    ticket: str | None = None

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
    def final_macs(self) -> int | None:
        return self.macs

    @classmethod
    def from_record(cls, record: Any) -> TrialOutcome | None:
        """The outcome of a trial record (`TrialRecord`); None while the trial is in flight."""
        if record.status not in STATUSES:
            return None
        if record.status == "failed":
            return cls(trial_id=record.trial_id, genome=record.genome, status="failed")
        return cls(
            record.trial_id,
            record.genome,
            "done",
            record.final_score,
            record.final_macs,
            record.final_params,
            record.ticket,
        )


# --------------------------------------------------------------------------------------------- base


class Strategy:
    """Common bookkeeping: trial ids, ask/tell validation, dedup of asked genomes, best(), replay.

    Subclasses implement `total_trials` and `_refill()`, which appends the specs that can be proposed now to
    `self._queue` (or nothing while waiting for results), drawing only from `self._rng`.
    """

    name: ClassVar[str] = "strategy"
    #: Whether every trial gets the fine-tune epochs, ticket or not (MENAS and its no-ticket ablation, so that
    #: tickets are the ablation's only difference); other strategies fine-tune only when they search tickets.
    finetunes: ClassVar[bool] = False
    #: The subclass's own settings (constructor arguments kept as attributes of the same name) for `settings()`.
    setting_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, space: SearchSpace, budget: Budget | None, seed: int, use_tickets: bool, recipe: Recipe | None = None
    ) -> None:
        check(isinstance(space, SearchSpace), "space", type(space).__name__, "a SearchSpace")
        check(budget is None or isinstance(budget, Budget), "budget", type(budget).__name__, "a Budget or None")
        check(is_int(seed), "seed", seed, "integers")
        check(isinstance(use_tickets, bool), "use_tickets", use_tickets, "true or false")
        if use_tickets and not space.allow_pruning:
            raise UserError(
                f"use_tickets: got True, but space {space.name} does not allow pruned channel counts "
                "(allow_pruning: false), so tickets could not be parents; use a space with pruning or tickets off"
            )
        if budget is not None:
            check_feasible(space, budget)
        self.space = space
        self.budget = budget
        self.seed = seed
        self.use_tickets = use_tickets
        self.recipe = Recipe() if recipe is None else recipe
        check(isinstance(self.recipe, Recipe), "recipe", type(self.recipe).__name__, "a Recipe or None")
        self._rng = random.Random(seed)
        self._specs: list[TrialSpec] = []  # handed out by ask(); index == trial_id
        self._queue: deque[TrialSpec] = deque()  # proposed, not yet handed out
        self._outcomes: dict[int, TrialOutcome] = {}
        self._seen: set[str] = set()  # genome strings proposed so far (asked or queued)
        self._genomes: dict[str, Genome] = {}  # parsed parents, by string

    # -- to implement ---------------------------------------------------------------------------------

    @property
    def total_trials(self) -> int:
        """How many trials the strategy asks for in all."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The strategy's name and settings (everything but space and budget), for the run's config record."""
        own = {name: getattr(self, name) for name in self.setting_names}
        return {"strategy": self.name, "seed": self.seed, "use_tickets": self.use_tickets, **own}

    def _refill(self) -> None:
        raise NotImplementedError

    # -- ask / tell -----------------------------------------------------------------------------------

    def ask(self, max_trials: int | None = None) -> list[TrialSpec]:
        """Hands out up to `max_trials` new specs (None: all that can be proposed now).

        Returns [] while the strategy waits for results (e.g. the rest of a MENAS generation) and once every
        trial was asked. How many specs are requested per call never changes which specs come out.

        Raises:
            SearchExhausted: no new genome could be found (raised by the call that would return nothing else;
                the specs already made in a call are always returned).
        """
        check(
            max_trials is None or (is_int(max_trials) and max_trials >= 0),
            "ask max_trials",
            max_trials,
            "None or integers >= 0",
        )
        remaining = self.total_trials - len(self._specs)
        count = remaining if max_trials is None else min(max_trials, remaining)
        out: list[TrialSpec] = []
        for _ in range(count):
            if not self._queue:
                try:
                    self._refill()
                except SearchExhausted:
                    if not out:
                        raise
                    break  # hand out what was made; the next call raises again
            if not self._queue:
                break
            spec = self._queue.popleft()
            self._specs.append(spec)
            out.append(spec)
        return out

    def tell(self, outcomes: Iterable[TrialOutcome]) -> None:
        """Records outcomes of asked trials, in any order. The whole batch is checked before any is recorded.

        Raises:
            ValueError: an outcome for a trial never asked or already told, with a genome other than the
                spec's, with a ticket although the spec had tickets off, or with a ticket outside the space.
        """
        batch = list(outcomes)
        ids: set[int] = set()
        for outcome in batch:
            check(isinstance(outcome, TrialOutcome), "tell outcome", type(outcome).__name__, "TrialOutcome")
            tid = outcome.trial_id
            if tid >= len(self._specs):
                raise ValueError(f"tell: trial {tid} was never asked (asked so far: {len(self._specs)} trials)")
            if tid in self._outcomes or tid in ids:
                raise ValueError(f"tell: trial {tid} was already told")
            ids.add(tid)
            spec = self._specs[tid]
            if outcome.genome != spec.genome:
                raise ValueError(f"tell: trial {tid} genome {outcome.genome!r} differs from the asked {spec.genome!r}")
            if outcome.ok and outcome.ticket is not None:
                if not spec.use_tickets:
                    raise ValueError(f"tell: trial {tid} has a ticket {outcome.ticket!r} but was asked without")
                try:
                    ticket = self._parse(outcome.ticket)
                    self.space.check(ticket)
                except ValueError as exc:
                    raise ValueError(f"tell: trial {tid} ticket is not in space {self.space.name}: {exc}") from None
                if ticket.to_str() != outcome.ticket:
                    raise ValueError(
                        f"tell: trial {tid} ticket {outcome.ticket!r} is not canonical, use Genome.to_str()"
                    )
        for outcome in batch:
            self._outcomes[outcome.trial_id] = outcome

    # -- queries --------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once every trial was asked and told."""
        return len(self._outcomes) == self.total_trials

    @property
    def asked(self) -> int:
        """Number of specs handed out so far (the next trial id)."""
        return len(self._specs)

    @property
    def pending(self) -> list[TrialSpec]:
        """Specs asked but not told yet, in trial_id order (after `replay`: the trials to run again)."""
        return [spec for spec in self._specs if spec.trial_id not in self._outcomes]

    def outcome(self, trial_id: int) -> TrialOutcome | None:
        """The told outcome of a trial, or None."""
        return self._outcomes.get(trial_id)

    def history(self) -> list[tuple[TrialSpec, TrialOutcome | None]]:
        """Every asked spec with its outcome (None while pending), in trial_id order: what `replay` takes."""
        return [(spec, self._outcomes.get(spec.trial_id)) for spec in self._specs]

    # -- resume ---------------------------------------------------------------------------------------

    def replay(self, history: Iterable[Any]) -> list[TrialSpec]:
        """Rebuilds the state of a run from its recorded trials; returns the specs still pending.

        Args:
            history: (TrialSpec, TrialOutcome | None) pairs, or records with the spec's and outcome's attribute
                names (the store's `TrialRecord`), in any order; trial ids must be 0..n-1.

        Every recorded spec is re-asked in trial_id order and must equal what this strategy proposes (same seed,
        space, budget and settings), then its outcome (if any) is told. Afterwards the strategy is in the state
        of the uninterrupted run: `pending` holds the asked-but-untold trials, and the next `ask()` returns what
        the uninterrupted run would have returned.

        Raises:
            ValueError: on a strategy that already asked, a gap in the trial ids, or a record that this strategy
                would not have proposed (the strategy is then unusable: build a fresh one).
        """
        if self._specs:
            raise UserError(f"replay: needs a freshly built strategy, this one already asked {len(self._specs)}")
        pairs = sorted((self._as_pair(item) for item in history), key=lambda pair: pair[0].trial_id)
        for expected, (spec, outcome) in enumerate(pairs):
            if spec.trial_id != expected:
                raise UserError(
                    f"replay: trial ids must be 0..{len(pairs) - 1} without gaps, found {spec.trial_id} "
                    f"where {expected} was expected"
                )
            proposed = self.ask(1)
            if not proposed:
                raise UserError(
                    f"replay: {self.name} cannot propose trial {expected} yet (an earlier result it needs is not "
                    "recorded): the history comes from other settings or is damaged"
                )
            if spec.origin is None and proposed[0].origin is not None:  # recorded before origins were (schema 3)
                spec = dataclasses.replace(spec, origin=proposed[0].origin)
            if not spec.parent_ids and proposed[0].parent_ids:  # recorded before parents' ids were (schema 5)
                spec = dataclasses.replace(spec, parent_ids=proposed[0].parent_ids)
            if spec.recipe is None:  # recorded before recipes were (schema 5): the config's, as then
                spec = dataclasses.replace(spec, recipe=proposed[0].recipe)
            if proposed[0] != spec:
                raise UserError(
                    f"replay: trial {expected} differs from the record ({_spec_diff(spec, proposed[0])}): the run used "
                    f"another seed, space, budget or {self.name} settings"
                )
            if outcome is not None:
                self.tell([outcome])
        return self.pending

    @staticmethod
    def _as_pair(item: Any) -> tuple[TrialSpec, TrialOutcome | None]:
        if isinstance(item, tuple) and len(item) == 2:
            spec, outcome = item
            spec = spec if isinstance(spec, TrialSpec) else TrialSpec.from_record(spec)
            check(
                outcome is None or isinstance(outcome, TrialOutcome),
                "replay outcome",
                type(outcome).__name__,
                "TrialOutcome or None",
            )
            return spec, outcome
        return TrialSpec.from_record(item), TrialOutcome.from_record(item)

    # -- helpers for subclasses -----------------------------------------------------------------------

    def _parse(self, text: str) -> Genome:
        genome = self._genomes.get(text)
        if genome is None:
            genome = self._genomes[text] = Genome.from_str(text)
        return genome

    def _enqueue(
        self,
        genome: str,
        generation: int,
        role: str,
        parents: tuple[TrialOutcome, ...] = (),
        origin: Origin | None = None,
    ) -> None:
        trial_id = len(self._specs) + len(self._queue)
        recorded = None if origin is None else origin.to_dict()
        genomes, ids = tuple(p.final_genome for p in parents), tuple(p.trial_id for p in parents)
        recipe = self.recipe.for_trial(bred=origin is not None, finetunes=self.use_tickets or self.finetunes)
        self._queue.append(
            TrialSpec(trial_id, genome, generation, role, genomes, self.use_tickets, recorded, ids, recipe)
        )
        self._seen.add(genome)

    def _fresh(self, count: int, taboo: set[str]) -> list[str]:
        """`count` new budgeted samples, not in `taboo` or already proposed; bounded tries.

        Raises:
            SearchExhausted: fewer than `count` found (nothing is enqueued then, so the state stays whole).
        """
        found: list[str] = []
        for _ in range(TRIES_PER_SLOT * count):
            if len(found) == count:
                break
            text = sample(self.space, self._rng, self.budget).to_str()
            if text not in taboo and text not in self._seen and text not in found:
                found.append(text)
        if len(found) < count:
            raise SearchExhausted(
                f"{self.name}: found only {len(found)} of {count} new genomes after {TRIES_PER_SLOT * count} "
                f"samples of space {self.space.name}; it is nearly exhausted under this budget: widen the space or "
                "budget, or ask for fewer trials"
            )
        return found


def _spec_diff(recorded: TrialSpec, proposed: TrialSpec) -> str:
    """The fields where two specs differ, values shortened: 'genome: recorded '...' proposed '...''."""
    parts = []
    for name in ("genome", "generation", "role", "parents", "parent_ids", "use_tickets", "origin", "recipe"):
        a, b = getattr(recorded, name), getattr(proposed, name)
        if a != b:
            parts.append(f"{name}: recorded {str(a)[:60]!r}, proposed {str(b)[:60]!r}")
    return "; ".join(parts)


def _resolve_count(name: str, value: int | float, of: int) -> int:
    """An absolute count (int >= 1) or a fraction in (0, 1] of `of`, at least 1."""
    if is_int(value):
        check(value >= 1, name, value, "integers >= 1 or a fraction in (0, 1]")
        return value
    check(is_real(value) and 0 < value <= 1, name, value, "integers >= 1 or a fraction in (0, 1]")
    return max(1, round(value * of))


# --------------------------------------------------------------------------------------------- MENAS


#: A MENAS child before it becomes a spec: genome string, role, parents' outcomes, gene origin (None: sampled).
_Child = tuple[str, str, tuple[TrialOutcome, ...], Origin | None]


class MENAS(Strategy):
    """The paper's evolutionary search with lottery tickets (section 2.3, Algorithm 1).

    Generation 0 is `population` genomes sampled within the budget. Generation g > 0 is bred once every trial
    of generation g - 1 is told: the parent pool is the top-K done trials of all generations so far by ticket
    score (ties: fewer MACs), of which a share `keep_largest` is instead taken as the largest remaining models by
    ticket MACs (the later version of the paper does this against a collapse into tiny models). Offspring come
    from crossover (two random parents -> two children, each repaired into the budget; a child that cannot be
    repaired is dropped) with probability `crossover_share`, else from mutation of one random parent (each gene
    re-drawn with `mutation_prob`), until `population` new genomes are found; a genome already asked or known
    as a ticket is dropped. After `TRIES_PER_SLOT * population` operator draws the rest is filled with fresh
    samples (role "fill"), and `SearchExhausted` is raised if even those run out.

    Args:
        space: the search space.
        budget: the compute budget every proposed genome meets (None: unconstrained).
        seed: seed of the strategy's only RNG.
        population: genomes per generation (the paper: 60).
        generations: number of generations including the initial one (the paper: 5).
        parents: K, the parent pool size: an integer, or a fraction of `population`.
        keep_largest: share of the K parents taken as the largest models by ticket MACs, in [0, 1).
        mutation_prob: per-gene mutation probability (the paper: 0.08).
        crossover_share: probability that an offspring draw is a crossover rather than a mutation.
        use_tickets: whether trials search lottery tickets (False: the ablation without tickets).
    """

    name = "menas"
    finetunes = True
    setting_names = ("population", "generations", "parents", "keep_largest", "mutation_prob", "crossover_share")

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget | None,
        seed: int,
        population: int = 60,
        generations: int = 5,
        parents: int | float = 20,
        keep_largest: float = 0.0,
        mutation_prob: float = MUTATION_PROB,
        crossover_share: float = 0.5,
        use_tickets: bool = True,
        recipe: Recipe | None = None,
    ) -> None:
        check(is_int(population) and population >= 1, "population", population, "integers >= 1")
        check(is_int(generations) and generations >= 1, "generations", generations, "integers >= 1")
        check(is_real(keep_largest) and 0 <= keep_largest < 1, "keep_largest", keep_largest, "0 <= share < 1")
        check_mutation_prob(mutation_prob, "mutation_prob")
        check(
            is_real(crossover_share) and 0 <= crossover_share <= 1,
            "crossover_share",
            crossover_share,
            "0 <= share <= 1",
        )
        self.num_parents = _resolve_count("parents", parents, population)
        super().__init__(space, budget, seed, use_tickets, recipe)
        self.population = population
        self.generations = generations
        self.parents = parents
        self.keep_largest = keep_largest
        self.mutation_prob = mutation_prob
        self.crossover_share = crossover_share
        self._pools: list[tuple[str, ...]] = []  # parent pool used to breed each generation (gen 0: ())

    @property
    def total_trials(self) -> int:
        return self.population * self.generations

    @property
    def generation(self) -> int:
        """The latest generation proposed (-1 before the first ask)."""
        return len(self._pools) - 1

    def parent_pool(self, generation: int) -> tuple[str, ...]:
        """The (ticket) genome strings generation `generation` was bred from, best first; () for generation 0."""
        check(
            is_int(generation) and 0 <= generation <= self.generation,
            "generation",
            generation,
            f"0..{self.generation} (generations proposed so far)",
        )
        return self._pools[generation]

    def select_parents(self) -> list[TrialOutcome]:
        """The parent pool from the done outcomes told so far, best first, one per distinct ticket genome."""
        ranked, seen = [], set()
        for outcome in sorted((o for o in self._outcomes.values() if o.ok), key=rank_key):
            if outcome.final_genome not in seen:
                seen.add(outcome.final_genome)
                ranked.append(outcome)
        n_large = round(self.keep_largest * self.num_parents)
        top = ranked[: self.num_parents - n_large]
        rest = sorted(ranked[len(top) :], key=lambda o: (-o.macs, o.trial_id))
        return top + rest[:n_large]

    def _refill(self) -> None:
        generation = len(self._pools)
        if generation >= self.generations or len(self._outcomes) < len(self._specs):
            return  # all generations proposed, or waiting for the current one's results
        if generation == 0:
            pool: tuple[str, ...] = ()
            children: list[_Child] = [(text, ROLE_SAMPLE, (), None) for text in self._fresh(self.population, set())]
        else:
            parents = self.select_parents()
            pool = tuple(o.final_genome for o in parents)
            children = self._breed(parents)
        self._pools.append(pool)  # only once the whole generation is made: SearchExhausted leaves no trace
        for text, role, parents, origin in children:
            self._enqueue(text, generation, role, parents, origin)

    def _breed(self, parents: list[TrialOutcome]) -> list[_Child]:
        """`population` new (genome, role, parents, origin) bred from the `parents` pool, then fresh samples for
        what is missing. The traced operators make the same draws and children as the plain ones, so recording
        origins changes no run's genomes."""
        pool = [o.final_genome for o in parents]
        taboo = {o.final_genome for o in self._outcomes.values() if o.ok}
        need = self.population
        children: list[_Child] = []
        made: set[str] = set()

        def add(genome: Genome, role: str, of: tuple[TrialOutcome, ...], origin: Origin) -> None:
            text = genome.to_str()
            if len(children) < need and text not in taboo and text not in self._seen and text not in made:
                children.append((text, role, of, origin))
                made.add(text)

        if pool:
            for _ in range(TRIES_PER_SLOT * need):
                if len(children) >= need:
                    break
                if len(pool) >= 2 and self._rng.random() < self.crossover_share:
                    i, j = self._rng.sample(range(len(pool)), 2)
                    a, b = self._parse(pool[i]), self._parse(pool[j])
                    for child, origin in crossover_traced(a, b, self.space, self._rng):
                        fitted = self._fit_traced(child, origin, (a, b))
                        if fitted is not None:
                            add(fitted[0], ROLE_CROSSOVER, (parents[i], parents[j]), fitted[1])
                else:
                    k = self._rng.randrange(len(pool))
                    try:
                        child, origin = mutate_traced(
                            self._parse(pool[k]), self.space, self._rng, self.mutation_prob, self.budget
                        )
                    except BudgetError:
                        continue
                    add(child, ROLE_MUTATION, (parents[k],), origin)
        fill = self._fresh(need - len(children), taboo | made) if len(children) < need else []
        return children + [(text, ROLE_FILL, (), None) for text in fill]

    def _fit_traced(
        self, genome: Genome, origin: Origin, parents: tuple[Genome, Genome]
    ) -> tuple[Genome, Origin] | None:
        """The crossover child repaired into the budget (unchanged when it already fits), with its origin kept
        through the repair; None when it cannot be repaired."""
        if self.budget is None or self.budget.contains(genome):
            return genome, origin
        return repair_traced(genome, origin, parents, self.space, self._rng, self.budget)


# --------------------------------------------------------------------------------------------- random search


class RandomSearch(Strategy):
    """Independent samples within the budget, deduplicated (the paper's random baselines, Table 3).

    Args:
        space: the search space (any: MobileNet3-MT or -WS).
        budget: the compute budget (None: unconstrained).
        seed: seed of the strategy's only RNG.
        trials: number of trials in all.
        batch: trials per reported generation (`generation = trial_id // batch`), to compare per-generation
            statistics with MENAS; None: all in generation 0.
        use_tickets: whether trials search lottery tickets (off in the paper's baselines).
    """

    name = "random"
    setting_names = ("trials", "batch")

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget | None,
        seed: int,
        trials: int = 200,
        batch: int | None = None,
        use_tickets: bool = False,
        recipe: Recipe | None = None,
    ) -> None:
        check(is_int(trials) and trials >= 1, "trials", trials, "integers >= 1")
        check(batch is None or (is_int(batch) and batch >= 1), "batch", batch, "None or integers >= 1")
        super().__init__(space, budget, seed, use_tickets, recipe)
        self.trials = trials
        self.batch = batch

    @property
    def total_trials(self) -> int:
        return self.trials

    def _refill(self) -> None:
        trial_id = len(self._specs) + len(self._queue)
        if trial_id < self.trials:
            (text,) = self._fresh(1, set())
            self._enqueue(text, trial_id // (self.batch or self.trials), ROLE_SAMPLE)


# --------------------------------------------------------------------------------------------- regularized evolution


class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al., "Regularized Evolution for Image Classifier Architecture Search", 2019).

    The first `population` trials are budgeted samples. Then each child is one cycle: a tournament of
    `sample_size` random members of the population, the best (by ticket score, ties fewer MACs) mutated into the
    child; when the child's outcome is applied it joins the population and the oldest member leaves. Failed
    trials never join. Outcomes are applied strictly in trial_id order: child `t` sees the population after the
    outcomes of trials `< max(population, t - parallel + 1)`, so up to `parallel` trials can run at once and the
    search stays reproducible whatever order results arrive in (`parallel=1` is the sequential algorithm).

    Args:
        space: the search space.
        budget: the compute budget (None: unconstrained).
        seed: seed of the strategy's only RNG.
        population: size of the aging population (and of the initial random sample).
        sample_size: tournament size, 1..population.
        cycles: number of children in all.
        mutation_prob: per-gene mutation probability.
        parallel: how many children may be bred ahead of their predecessors' results (set it to the number of
            workers); part of the run's settings, as it changes the search.
        use_tickets: whether trials search lottery tickets (members are then their tickets).
    """

    name = "regularized-evolution"
    setting_names = ("population", "sample_size", "cycles", "mutation_prob", "parallel")

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget | None,
        seed: int,
        population: int = 50,
        sample_size: int = 10,
        cycles: int = 150,
        mutation_prob: float = MUTATION_PROB,
        parallel: int = 1,
        use_tickets: bool = False,
        recipe: Recipe | None = None,
    ) -> None:
        check(is_int(population) and population >= 1, "population", population, "integers >= 1")
        check(
            is_int(sample_size) and 1 <= sample_size <= population,
            "sample_size",
            sample_size,
            f"integers 1..population ({population})",
        )
        check(is_int(cycles) and cycles >= 0, "cycles", cycles, "integers >= 0")
        check_mutation_prob(mutation_prob, "mutation_prob")
        check(is_int(parallel) and parallel >= 1, "parallel", parallel, "integers >= 1")
        super().__init__(space, budget, seed, use_tickets, recipe)
        self.population = population
        self.sample_size = sample_size
        self.cycles = cycles
        self.mutation_prob = mutation_prob
        self.parallel = parallel
        self._members: deque[TrialOutcome] = deque()  # the aging population, oldest first
        self._applied = 0  # outcomes of trials < _applied are applied to the population
        self._member_tickets: set[str] = set()  # tickets of applied outcomes (dedup)

    @property
    def total_trials(self) -> int:
        return self.population + self.cycles

    @property
    def members(self) -> list[TrialOutcome]:
        """The current population (as applied so far), oldest first."""
        return list(self._members)

    def _refill(self) -> None:
        trial_id = len(self._specs) + len(self._queue)
        if trial_id >= self.total_trials:
            return
        if trial_id == 0:
            for text in self._fresh(self.population, set()):
                self._enqueue(text, 0, ROLE_SAMPLE)
            return
        need = max(self.population, trial_id - self.parallel + 1)
        if any(t not in self._outcomes for t in range(self._applied, need)):
            return  # waiting for results the tournament must see
        for t in range(self._applied, need):
            outcome = self._outcomes[t]
            if outcome.ok:
                self._members.append(outcome)
                self._member_tickets.add(outcome.final_genome)
                if len(self._members) > self.population:
                    self._members.popleft()
        self._applied = need
        generation = 1 + (trial_id - self.population) // self.population
        members = list(self._members)
        for _ in range(TRIES_PER_SLOT if members else 0):
            contenders = self._rng.sample(members, min(self.sample_size, len(members)))
            winner = min(contenders, key=rank_key)
            try:
                child = mutate(self._parse(winner.final_genome), self.space, self._rng, self.mutation_prob, self.budget)
            except BudgetError:
                continue
            text = child.to_str()
            if text not in self._seen and text not in self._member_tickets:
                self._enqueue(text, generation, ROLE_MUTATION, (winner,))
                return
        (text,) = self._fresh(1, self._member_tickets)
        self._enqueue(text, generation, ROLE_FILL)


# --------------------------------------------------------------------------------------------- search compute


def compute_limits(cfg: SearchConfig) -> tuple[float, float]:
    """The config's search compute budget (`compute`) as (images, trial seconds); inf where unbounded. The search
    loop stops asking every strategy for trials once either is reached (`compute_budget_used`)."""
    value = cfg.compute.images
    images = math.inf if value is None else parse_count(value, "compute.images") if isinstance(value, str) else value
    if images <= 0:
        raise UserError(f"compute.images: got {value!r}, allowed: null or counts > 0 such as 20M")
    return float(images), math.inf if cfg.compute.trial_s is None else float(cfg.compute.trial_s)


def compute_budget_used(cfg: SearchConfig, used: Any) -> bool:
    """Whether `used` (a `store.ComputeUsed`: images and trial seconds of the finished trials) reached either
    limit of the config's compute budget."""
    images, trial_s = compute_limits(cfg)
    return used.images >= images or used.trial_s >= trial_s


# --------------------------------------------------------------------------------------------- from a config


def _menas(cfg: SearchConfig, space: SearchSpace, budget: Budget | None, use_tickets: bool = True) -> Strategy:
    s = cfg.strategy
    return MENAS(
        space,
        budget,
        cfg.seed,
        population=s.population,
        generations=s.generations,
        parents=s.parents,
        keep_largest=s.keep_largest,
        mutation_prob=s.mutation_prob,
        crossover_share=s.crossover_share,
        use_tickets=use_tickets,
        recipe=recipe_of(cfg),
    )


def recipe_of(cfg: SearchConfig) -> Recipe:
    """The strategy's `Recipe` from a search config."""
    return Recipe(cfg.train.epochs, cfg.finetune_epochs, cfg.inherits, cfg.inherit.epochs)


def _menas_no_tickets(cfg: SearchConfig, space: SearchSpace, budget: Budget | None) -> Strategy:
    return _menas(cfg, space, budget, use_tickets=False)


def _random(cfg: SearchConfig, space: SearchSpace, budget: Budget | None) -> Strategy:
    return RandomSearch(
        space, budget, cfg.seed, trials=cfg.strategy.trials, batch=cfg.strategy.population, recipe=recipe_of(cfg)
    )


def _evolution(cfg: SearchConfig, space: SearchSpace, budget: Budget | None) -> Strategy:
    # children bred ahead of results: the pool's size when it is fixed in the config (so a resumed run breeds
    # exactly as the original did, whatever machine it resumes on); 1 otherwise (the sequential algorithm)
    s, ex = cfg.strategy, cfg.executor
    parallel = ex.workers if ex.kind != "local" and ex.workers else 1
    return RegularizedEvolution(
        space,
        budget,
        cfg.seed,
        population=s.population,
        sample_size=s.sample_size,
        cycles=s.cycles,
        mutation_prob=s.mutation_prob,
        parallel=parallel,
        recipe=recipe_of(cfg),
    )


#: The config's strategy names (`strategy.name`, see `menas.config.StrategyName`) and how each is built.
STRATEGIES: dict[str, Callable[[SearchConfig, SearchSpace, Budget | None], Strategy]] = {
    "menas": _menas,
    "menas-no-tickets": _menas_no_tickets,
    "random": _random,
    "evolution": _evolution,
}


def make_strategy(cfg: SearchConfig, space: SearchSpace | None = None, budget: Budget | None = None) -> Strategy:
    """The strategy a search config asks for (`strategy.name`, see `STRATEGIES`), with the config's settings.

    Args:
        cfg: the search config.
        space: the search space (None: loaded from `cfg.space`).
        budget: the compute budget (None: unconstrained; enough to count trials, as `menas status` does,
            without reading the data for the input shape).
    """
    check(cfg.strategy.name in STRATEGIES, "strategy.name", cfg.strategy.name, ", ".join(STRATEGIES))
    return STRATEGIES[cfg.strategy.name](cfg, load_space(cfg.space) if space is None else space, budget)


__all__ = [
    "MENAS",
    "ROLE_CROSSOVER",
    "ROLE_FILL",
    "ROLE_MUTATION",
    "ROLE_SAMPLE",
    "STATUSES",
    "STRATEGIES",
    "RandomSearch",
    "Recipe",
    "RegularizedEvolution",
    "SearchExhausted",
    "Strategy",
    "TrialOutcome",
    "TrialSpec",
    "compute_budget_used",
    "compute_limits",
    "make_strategy",
    "rank_key",
    "recipe_of",
]
