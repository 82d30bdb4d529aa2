"""The baseline strategies: random search (the paper's Table 3 baselines, in any space) and regularized evolution
(Real et al., AAAI 2019), in the same engine as MENAS (`menas.search.strategies`), so every comparison is at equal
compute. Both follow the base class's determinism contract (`menas.search.base`); with fidelity stages
(`menas.search.fidelity`) random search stages each batch of samples and regularized evolution breeds in blocks of
`population` children. No torch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from menas.errors import BudgetError, check, is_int
from menas.search import fidelity
from menas.search import pareto as pareto_module
from menas.search.base import Strategy
from menas.search.protocol import ROLE_FILL, ROLE_MUTATION, ROLE_SAMPLE, TRIES_PER_SLOT, Recipe, TrialOutcome
from menas.search.ranking import rank_key
from menas.space.cost import Budget
from menas.space.operators import MUTATION_PROB, check_mutation_prob, mutate
from menas.space.spaces import SearchSpace

#: What selection optimises (the config's `strategy.objective`, `menas.config.ObjectiveName`).
OBJECTIVES = ("accuracy", "pareto")


def check_objective(objective: str) -> None:
    """The library edge's check of `objective`, the config's rule."""
    check(objective in OBJECTIVES, "objective", objective, ", ".join(OBJECTIVES))


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
        self._samples = 0  # samples proposed so far

    @property
    def total_trials(self) -> int:
        if not self.recipe.fidelity.staged:
            return self.trials
        size = self.batch or self.trials
        batches = [min(size, self.trials - start) for start in range(0, self.trials, size)]
        return sum(self.recipe.fidelity.planned(n) for n in batches)

    def _proposed_all(self) -> bool:
        if not self.recipe.fidelity.staged:
            return super()._proposed_all()
        return self._samples >= self.trials and not self._next_stage(self._samples_generation(self._samples - 1))

    def _samples_generation(self, sample: int) -> int:
        return sample // (self.batch or self.trials)

    def _refill(self) -> None:
        if self.recipe.fidelity.staged:  # a batch at a time: its stages run before the next batch
            self._refill_batch()
            return
        trial_id = len(self._specs) + len(self._queue)
        if trial_id < self.trials:
            (text,) = self._fresh(1, set())
            self._enqueue(text, self._samples_generation(trial_id), ROLE_SAMPLE)
            self._samples += 1

    def _refill_batch(self) -> None:
        """With fidelity stages: the current batch's next stage, else the next batch of samples."""
        if len(self._outcomes) < len(self._specs):
            return
        if self._samples and self._enqueue_stage(self._samples_generation(self._samples - 1)):
            return
        if self._samples >= self.trials:
            return
        count = min(self.batch or self.trials, self.trials - self._samples)
        for text in self._fresh(count, set()):
            self._enqueue(text, self._samples_generation(self._samples), ROLE_SAMPLE)
        self._samples += count


# --------------------------------------------------------------------------------------------- regularized evolution


class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al., "Regularized Evolution for Image Classifier Architecture Search", 2019).

    The first `population` trials are budgeted samples. Then each child is one cycle: a tournament of
    `sample_size` random members of the population, the best (by ticket score, ties fewer MACs; with
    `objective="pareto"`, the lowest front and then the largest crowding distance, computed over the current
    population) mutated into the child; when the child's outcome is applied it joins the population and the oldest
    member leaves. Failed trials never join. Outcomes are applied strictly in trial_id order: child `t` sees the
    population after the outcomes of trials `< max(population, t - parallel + 1)`, so up to `parallel` trials can
    run at once and the search stays reproducible whatever order results arrive in (`parallel=1` is the
    sequential algorithm).

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
        objective: "accuracy" (by final score) or "pareto" (NSGA-II over final score and MACs).
    """

    name = "regularized-evolution"
    setting_names = ("population", "sample_size", "cycles", "mutation_prob", "parallel", "objective", "pareto")

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
        objective: str = "accuracy",
        pareto: tuple[str, ...] = pareto_module.DEFAULT_OBJECTIVES,
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
        check_objective(objective)
        super().__init__(space, budget, seed, use_tickets, recipe)
        self.population = population
        self.sample_size = sample_size
        self.cycles = cycles
        self.mutation_prob = mutation_prob
        self.parallel = parallel
        self.objective = objective
        self.pareto = pareto_module.check_objectives(pareto)
        self._members: deque[TrialOutcome] = deque()  # the aging population, oldest first
        self._applied = 0  # outcomes of trials < _applied are applied to the population
        self._member_tickets: set[str] = set()  # tickets of applied outcomes (dedup)
        self._blocks = 0  # with fidelity stages: blocks of `population` children proposed (the first: samples)
        self._children = 0  # ... and children (samples and mutations, not stage trials) proposed

    def _block_sizes(self) -> list[int]:
        """Children per block with fidelity stages: the initial population, then `population` at a time."""
        rest = [min(self.population, self.cycles - start) for start in range(0, self.cycles, self.population)]
        return [self.population, *rest]

    @property
    def total_trials(self) -> int:
        if self.recipe.fidelity.staged:
            return sum(self.recipe.fidelity.planned(n) for n in self._block_sizes())
        return self.population + self.cycles

    @property
    def members(self) -> list[TrialOutcome]:
        """The current population (as applied so far), oldest first."""
        return list(self._members)

    def _proposed_all(self) -> bool:
        if not self.recipe.fidelity.staged:
            return super()._proposed_all()
        return self._blocks == len(self._block_sizes()) and not self._next_stage(self._blocks - 1)

    def _refill(self) -> None:
        if self.recipe.fidelity.staged:
            self._refill_block()
            return
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
        self._breed_one(1 + (trial_id - self.population) // self.population)

    def _refill_block(self) -> None:
        """With fidelity stages the cycles run in blocks of `population` children: a block's children are bred
        from the population as it stands, its stages (repeats, promotions) run, then its outcomes join the
        population (a promotion takes its network's place, keeping its age) and the oldest members leave."""
        if len(self._outcomes) < len(self._specs):
            return
        block = self._blocks - 1
        if self._enqueue_stage(block):
            return
        if block >= 0 and self._applied <= block:
            self._apply_block(block)
        if self._blocks >= len(self._block_sizes()):
            return
        count = self._block_sizes()[self._blocks]
        if self._blocks == 0:
            for text in self._fresh(count, set()):
                self._enqueue(text, 0, ROLE_SAMPLE)
        else:
            for _ in range(count):
                self._breed_one(self._blocks)
        self._blocks += 1
        self._children += count

    def _apply_block(self, block: int) -> None:
        """Block `block`'s done children join the population, its done promotions replace the network they
        continue in place (`_applied` then counts applied blocks)."""
        self._members = self._joined(block)
        joined = (o for o in self._generation_outcomes(block) if o.ok and o.role not in fidelity.PROBES)
        self._member_tickets.update(o.final_genome for o in joined)
        self._applied = block + 1

    def _joined(self, block: int) -> deque[TrialOutcome]:
        """The population once block `block` joins it (a promotion under `fidelity.tickets: top` brings a ticket;
        repeats and re-score replicas join nothing)."""
        members = deque(self._members)
        for outcome in self._generation_outcomes(block):
            if not outcome.ok or outcome.role in fidelity.PROBES:
                continue
            if outcome.role == fidelity.ROLE_PROMOTE:
                for k, member in enumerate(members):
                    if member.trial_id == outcome.parent_ids[0]:
                        members[k] = outcome
                continue
            members.append(outcome)
            if len(members) > self.population:
                members.popleft()
        return members

    def rescore_elites(self, generation: int) -> list[Any]:
        """The population once block `generation` joined it, best first (its lineages' scores as re-scored so
        far): what `fidelity.rescore` may re-score."""
        members = self._members if self._applied > generation else self._joined(generation)
        return self._best_first(self._scored(members))

    def _scored(self, members: Iterable[TrialOutcome]) -> list[Any]:
        """`members` with the scores selection reads: a re-scored lineage's mean (`fidelity.Rescored`)."""
        lineages = {o.trial_id: o for o in fidelity.representatives(self._outcomes[t] for t in sorted(self._outcomes))}
        return [lineages.get(m.trial_id, m) for m in members]

    def _breed_one(self, generation: int) -> None:
        """One child of a tournament over the current members (a fresh sample when mutation finds nothing new)."""
        members = self._scored(self._members) if self.recipe.fidelity.rescore else list(self._members)
        key = self._tournament_key(members)
        for _ in range(TRIES_PER_SLOT if members else 0):
            contenders = self._rng.sample(members, min(self.sample_size, len(members)))
            winner = min(contenders, key=key)
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

    def _tournament_key(self, members: list[TrialOutcome]) -> Callable[[TrialOutcome], Any]:
        """What a tournament minimises: `rank_key`, or under the pareto objective the NSGA-II key (front, -crowding
        distance, trial_id) computed over the current population `members`."""
        if self.objective != "pareto":
            return rank_key
        ranks = pareto_module.nsga2_ranks(members, self.pareto)
        return lambda outcome: ranks[outcome.trial_id]


__all__ = ["OBJECTIVES", "RandomSearch", "RegularizedEvolution", "check_objective"]
