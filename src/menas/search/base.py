"""The strategy base class: trial ids, ask/tell validation, dedup of asked genomes and replay for resume.

Determinism contract, which is what makes resume exact: a strategy draws from one `random.Random(seed)`, and what
it draws depends only on the seed, its settings and the outcomes *in trial_id order*; never on the order in
which results arrive, on how many specs `ask` hands out per call, or on the clock. Replaying the recorded
(spec, outcome) pairs in trial_id order (`replay`) therefore rebuilds the state of the uninterrupted run, and
trials that were asked but not told come back as `pending`. No torch.
"""

from __future__ import annotations

import dataclasses
import random
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar

from menas.errors import UserError, check, is_int
from menas.search import fidelity, pareto
from menas.search.protocol import TRIES_PER_SLOT, Recipe, SearchExhausted, TrialOutcome, TrialSpec, spec_diff
from menas.search.ranking import rank_key
from menas.space.cost import Budget
from menas.space.genome import Genome
from menas.space.operators import Origin, check_feasible, sample
from menas.space.spaces import SearchSpace

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
    #: What selection optimises and, under "pareto", the front's objectives: strategies that select set their own.
    objective: str = "accuracy"
    pareto: tuple[str, ...] = pareto.DEFAULT_OBJECTIVES

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
        for outcome in batch:  # the lineage fields come from the spec, whatever the caller filled in
            spec = self._specs[outcome.trial_id]
            rung = (spec.recipe or {}).get("rung", 0)
            self._outcomes[outcome.trial_id] = dataclasses.replace(
                outcome, role=spec.role, parent_ids=spec.parent_ids, rung=rung
            )

    # -- queries --------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once every trial was asked and told (with fidelity stages, `total_trials` is the most a run asks:
        a rung promotes only networks that finished the one before)."""
        return not self._queue and len(self._outcomes) == len(self._specs) and self._proposed_all()

    def _proposed_all(self) -> bool:
        """Whether nothing is left to propose, once every asked trial is told."""
        return len(self._specs) >= self.total_trials

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
                    f"replay: trial {expected} differs from the record ({spec_diff(spec, proposed[0])}): the run used "
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
        recipe: dict[str, Any] | None = None,
        use_tickets: bool | None = None,
    ) -> None:
        trial_id = len(self._specs) + len(self._queue)
        recorded = None if origin is None else origin.to_dict()
        genomes, ids = tuple(p.final_genome for p in parents), tuple(p.trial_id for p in parents)
        if recipe is None:
            recipe = self.recipe.for_trial(bred=origin is not None, finetunes=self.use_tickets or self.finetunes)
        if use_tickets is None:  # a child: tickets after its first rung, unless they wait for the top one
            use_tickets = self.use_tickets and self.recipe.fidelity.ticket_rung(0)
        self._queue.append(TrialSpec(trial_id, genome, generation, role, genomes, use_tickets, recorded, ids, recipe))
        self._seen.add(genome)

    # -- fidelity stages (`menas.search.fidelity`) ----------------------------------------------------

    def order(self, outcomes: list[TrialOutcome]) -> list[TrialOutcome]:
        """Done outcomes of one rung, best first by the strategy's objective: `rank_key`, or NSGA-II's order under
        `objective="pareto"` (ties in it broken by `rank_key`)."""
        ranked = sorted(outcomes, key=rank_key)
        return pareto.nsga2_sorted(ranked, self.pareto) if self.objective == "pareto" else ranked

    def _generation_outcomes(self, generation: int) -> list[TrialOutcome]:
        """The told outcomes of one generation's asked trials, in trial_id order (call once all are told)."""
        return [self._outcomes[s.trial_id] for s in self._specs if s.generation == generation]

    def _next_stage(self, generation: int) -> list[tuple[str, TrialOutcome, int]]:
        """What generation `generation`'s next fidelity stage proposes ([]: the generation is complete): its
        repeats and promotions, then the re-scores of the elites (`rescore_elites`)."""
        if generation < 0 or not self.recipe.fidelity.staged:
            return []
        outcomes = self._generation_outcomes(generation)
        stage = fidelity.next_stage(self.recipe.fidelity, outcomes, self.order)
        if stage or not self.recipe.fidelity.rescore:
            return stage
        told = [self._outcomes[t] for t in sorted(self._outcomes)]
        return fidelity.rescore_stage(self.recipe.fidelity, outcomes, told, lambda: self.rescore_elites(generation))

    def rescore_elites(self, generation: int) -> list[Any]:
        """The lineages `fidelity.rescore` may re-score once generation `generation` is complete, best first:
        every network so far (`fidelity.representatives`, by `order`); MENAS and regularized evolution narrow it
        to their parent pool and population."""
        return self._best_first(fidelity.representatives(self._outcomes[t] for t in sorted(self._outcomes)))

    def _best_first(self, lineages: list[Any]) -> list[Any]:
        """`lineages` best first: the highest rung first, each rung in the strategy's `order`."""
        top = max((o.rung for o in lineages), default=0)
        return [o for r in range(top, -1, -1) for o in self.order([x for x in lineages if x.rung == r])]

    def _enqueue_stage(self, generation: int) -> bool:
        """Enqueues generation `generation`'s next fidelity stage; False when it is complete. A repeat (and a
        re-score replica's first rung) trains its source's candidate from scratch with its own seed (tickets as the
        source did); a promotion (and a replica's later rungs) continues its source's final network from its
        weights, without tickets, except at the top rung under `fidelity.tickets: top`, where it searches its ticket
        and fine-tunes it (as a child does under "first")."""
        proposals = self._next_stage(generation)
        for role, source, rung in proposals:
            if role in fidelity.PROBES and rung == 0:  # a repeat, or a re-score's first rung: the child again
                finetunes = self.use_tickets or self.finetunes
                recipe = self.recipe.for_trial(bred=False, finetunes=finetunes)
                tickets = self._specs[source.trial_id].use_tickets
                self._enqueue(source.genome, generation, role, (source,), recipe=recipe, use_tickets=tickets)
            else:
                genome = source.final_genome
                recipe = self.recipe.for_promotion(rung, finetunes=self.use_tickets or self.finetunes)
                tickets = self.use_tickets and self.recipe.fidelity.ticket_rung(rung)
                self._enqueue(genome, generation, role, (source,), recipe=recipe, use_tickets=tickets)
        return bool(proposals)

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


__all__ = ["Strategy"]
