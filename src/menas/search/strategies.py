"""Search strategies: which genomes to evaluate next, given the results so far.

- `MENAS`: generations of a fixed size. Generation 0 is sampled within the budget; every later generation is
  bred by crossover and mutation from the top-K lottery tickets found so far (optionally mixed with the largest
  models), repaired into the budget and deduplicated against every genome already asked or found as a ticket.
  `MENAS(use_tickets=False)` is the paper's ablation. Each bred child's spec carries its gene `origin` (the traced
  operators: the same draws and children as the plain ones), its parents' trial ids and its recipe, which
  individual weight sharing reads (`menas.search.inherit`; the strategy breeds the same either way).
- `RandomSearch`, `RegularizedEvolution`: the baselines, in `menas.search.baselines` (re-exported here).

Selection optimises `objective`: "accuracy" ranks by `menas.search.ranking.rank_key` (final score, then fewer
MACs); "pareto" by NSGA-II over (final score up, final MACs down) (`menas.search.pareto`: front, then crowding
distance, then trial_id), for MENAS' parent pool and regularized evolution's tournaments. Random search does not
select.

They follow the base class's determinism contract (`menas.search.base`): MENAS breeds a generation only once
every trial of the previous one is told; regularized evolution breeds child `t` from the population after exactly
the outcomes of trials `< max(population, t - parallel + 1)`. `make_strategy` builds the one a config names.
Scores are "higher is better" (search-val top-1). No torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from menas.config import SearchConfig
from menas.errors import BudgetError, UserError, check, is_int, is_real
from menas.search import fidelity
from menas.search import pareto as pareto_module
from menas.search.base import Strategy
from menas.search.baselines import OBJECTIVES, RandomSearch, RegularizedEvolution, check_objective
from menas.search.protocol import (
    ROLE_CROSSOVER,
    ROLE_FILL,
    ROLE_MUTATION,
    ROLE_SAMPLE,
    STATUSES,
    TRIES_PER_SLOT,
    Recipe,
    SearchExhausted,
    TrialOutcome,
    TrialSpec,
)
from menas.search.ranking import rank_key
from menas.space.cost import Budget, parse_count
from menas.space.genome import Genome
from menas.space.operators import (
    MUTATION_PROB,
    Origin,
    check_mutation_prob,
    crossover_traced,
    mutate_traced,
    repair_traced,
)
from menas.space.spaces import SearchSpace, load_space


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
    score (ties: fewer MACs; with `objective="pareto"`, the first K in NSGA-II order instead), of which a share
    `keep_largest` is instead taken as the largest remaining models by ticket MACs (the later version of the paper
    does this against a collapse into tiny models). Offspring come from crossover (two random parents -> two
    children, each repaired into the budget; a child that cannot be repaired is dropped) with probability
    `crossover_share`, else from mutation of one random parent (each gene re-drawn with `mutation_prob`), until
    `population` new genomes are found; a genome already asked or known as a ticket is dropped. After
    `TRIES_PER_SLOT * population` operator draws the rest is filled with fresh samples (role "fill"), and
    `SearchExhausted` is raised if even those run out.

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
        objective: "accuracy" (the paper: by final score) or "pareto" (NSGA-II over final score and MACs).
    """

    name = "menas"
    finetunes = True
    setting_names = (
        "population",
        "generations",
        "parents",
        "keep_largest",
        "mutation_prob",
        "crossover_share",
        "objective",
        "pareto",
    )

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
        objective: str = "accuracy",
        pareto: tuple[str, ...] = pareto_module.DEFAULT_OBJECTIVES,
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
        check_objective(objective)
        self.num_parents = _resolve_count("parents", parents, population)
        super().__init__(space, budget, seed, use_tickets, recipe)
        self.population = population
        self.generations = generations
        self.parents = parents
        self.keep_largest = keep_largest
        self.mutation_prob = mutation_prob
        self.crossover_share = crossover_share
        self.objective = objective
        self.pareto = pareto_module.check_objectives(pareto)
        self._pools: list[tuple[str, ...]] = []  # parent pool used to breed each generation (gen 0: ())

    @property
    def total_trials(self) -> int:
        return self.generations * self.recipe.fidelity.planned(self.population)

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
        """The parent pool from the done outcomes told so far, best first, one per distinct ticket genome (its
        best-ranked trial). With the pareto objective "best first" is NSGA-II's order over those distinct
        outcomes: lower front, then larger crowding distance, then trial_id."""
        ranked, seen = [], set()
        lineages = fidelity.representatives(self._outcomes[t] for t in sorted(self._outcomes))
        for outcome in sorted(lineages, key=rank_key):
            if outcome.final_genome not in seen:
                seen.add(outcome.final_genome)
                ranked.append(outcome)
        if self.objective == "pareto":  # NSGA-II within each rung, the highest rung first
            rungs = sorted({o.rung for o in ranked}, reverse=True)
            ranked = [
                o for r in rungs for o in pareto_module.nsga2_sorted([x for x in ranked if x.rung == r], self.pareto)
            ]
        n_large = round(self.keep_largest * self.num_parents)
        top = ranked[: self.num_parents - n_large]
        rest = sorted(ranked[len(top) :], key=lambda o: (-o.macs, o.trial_id))
        return top + rest[:n_large]

    def _proposed_all(self) -> bool:
        return len(self._pools) == self.generations and not self._next_stage(self.generation)

    def rescore_elites(self, generation: int) -> list[Any]:
        """The parent pool the next generation would be bred from (`select_parents`): what `fidelity.rescore`
        may re-score once generation `generation` is complete."""
        return list(self.select_parents())

    def _refill(self) -> None:
        if len(self._outcomes) < len(self._specs):
            return  # waiting for the current stage's results
        if self._enqueue_stage(self.generation):
            return  # the current generation's repeats or next rung
        generation = len(self._pools)
        if generation >= self.generations:
            return  # all generations proposed
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
        objective=s.objective,
        pareto=tuple(s.pareto),
    )


def recipe_of(cfg: SearchConfig) -> Recipe:
    """The strategy's `Recipe` from a search config."""
    f = cfg.fidelity
    schedule = fidelity.Fidelity(tuple(f.rungs or ()), f.eta, f.repeats, f.lr_scale, f.tickets, f.rescore, f.score)
    return Recipe(cfg.train.epochs, cfg.finetune_epochs, cfg.inherits, cfg.inherit.epochs, schedule)


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
        objective=s.objective,
        pareto=tuple(s.pareto),
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
    "OBJECTIVES",
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
