"""Genetic operators on genomes: sampling, mutation, crossover, and budget repair.

Every function takes an explicit `random.Random`; the same seed gives the same genomes. A budget bounds MACs,
params and, with a latency model, predicted latency (`Budget.contains`); repair shrinks a genome that is too
expensive or predicted too slow, and feasibility names the latency the space reaches. All loops are bounded: an
operator that cannot meet a budget raises `BudgetError` instead of trying forever. The public operators are an
entry point of the library: they check their genomes against the space and `mutate` checks its probability
(`check_mutation_prob`), so a direct caller gets a one-line `UserError`.

The genes an operator touches are, per stage: depth, output width, stride (down-sampling); per layer:
kernel, expanded width, SE, activation. A layer's expanded width is tied to the input width it was chosen
for: when a width change or a crossover gives a layer a different input, its expansion ratio is kept and the
expanded width recomputed.

`mutate_traced`, `crossover_traced` and `repair_traced` make the same draws and genomes as `mutate`,
`crossover` and `repair` and also return the child's `Origin`: which parent (and which parent layer) each gene
came from, or that it is new. Weight inheritance (`menas.search.inherit`) maps the parents' trained tensors by it.

This module never imports torch.
"""

from __future__ import annotations

import random

from menas.errors import BudgetError, check, is_real
from menas.space.cost import Budget, Cost, format_count
from menas.space.genome import Genome, LayerGene, StageGene, make_divisible
from menas.space.origins import LAYER_GENES, LayerOrigin, Origin, StageOrigin, identity_origin, layer_genes
from menas.space.spaces import SearchSpace

#: Default mutation probability per gene (the paper's 0.08).
MUTATION_PROB = 0.08


class _Layer:
    """A mutable layer while an operator edits a genome; `design_in` is the input width `mid` was chosen for;
    `source` is the (parent, stage, layer) it was taken from, None for a layer drawn new."""

    __slots__ = ("act", "design_in", "kernel", "mid", "se", "source")

    def __init__(
        self, kernel: int, mid: int, design_in: int, se: bool, act: str, source: tuple[int, int, int] | None = None
    ) -> None:
        self.kernel, self.mid, self.design_in, self.se, self.act = kernel, mid, design_in, se, act
        self.source = source

    def copy(self) -> _Layer:
        return _Layer(self.kernel, self.mid, self.design_in, self.se, self.act, self.source)


class _Stage:
    """A mutable stage; `sources` names the parent each stage gene (depth, out, stride) was taken from."""

    __slots__ = ("layers", "out", "sources", "stride")

    def __init__(self, out: int, stride: int, layers: list[_Layer], sources: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.out, self.stride, self.layers, self.sources = out, stride, layers, sources

    def copy(self) -> _Stage:
        return _Stage(self.out, self.stride, [layer.copy() for layer in self.layers], self.sources)


def _draft(genome: Genome, parent: int = 0) -> list[_Stage]:
    stages, in_chs = [], genome.ds.out_chs
    for i, stage in enumerate(genome.stages):
        layers = []
        for j, layer in enumerate(stage.layers):
            layers.append(_Layer(layer.kernel, layer.mid_chs, in_chs, layer.se, layer.act, (parent, i, j)))
            in_chs = stage.out_chs
        stages.append(_Stage(stage.out_chs, stage.stride, layers, (parent, parent, parent)))
    return stages


def _rescaled_mid(space: SearchSpace, i: int, layer: _Layer, in_chs: int) -> int:
    """The layer's expanded width for a new input width, keeping its expansion ratio within the space."""
    if in_chs == layer.design_in:
        return layer.mid
    choices = space.mid_choices(i, in_chs)
    target = layer.mid * in_chs / layer.design_in
    if space.allow_pruning:
        return min(make_divisible(target, space.divisor), choices[-1])
    return min(choices, key=lambda c: (abs(c - target), c))


def _finish(space: SearchSpace, template: Genome, stages: list[_Stage]) -> Genome:
    """Turns edited stages back into a genome: input widths re-chained, expanded widths rescaled, head derived."""
    result, in_chs = [], template.ds.out_chs
    for i, stage in enumerate(stages):
        layers = []
        for layer in stage.layers:
            mid = _rescaled_mid(space, i, layer, in_chs)
            layers.append(LayerGene(kernel=layer.kernel, mid_chs=mid, se=layer.se, act=layer.act))
            in_chs = stage.out
        result.append(StageGene(out_chs=stage.out, stride=stage.stride, layers=tuple(layers)))
    return Genome(stem=space.stem, ds=space.ds, stages=tuple(result), head=space.head_gene(in_chs))


def _random_layer(space: SearchSpace, i: int, in_chs: int, rng: random.Random) -> _Layer:
    choices = space.stages[i]
    mid = rng.choice(space.mid_choices(i, in_chs))
    return _Layer(rng.choice(choices.kernels), mid, in_chs, rng.choice(choices.se), rng.choice(choices.acts))


def random_genome(space: SearchSpace, rng: random.Random) -> Genome:
    """A genome with every gene drawn uniformly from its choices (no budget)."""
    strides = rng.choice(space.stride_vectors)
    stages, in_chs = [], space.ds.out_chs
    for i, choices in enumerate(space.stages):
        out = rng.choice(space.stage_outs(i))
        depth = rng.choice(choices.depths)
        layers = [_random_layer(space, i, in_chs if j == 0 else out, rng) for j in range(depth)]
        stages.append(_Stage(out, strides[i], layers))
        in_chs = out
    return _finish(space, _template(space), stages)


def _template(space: SearchSpace) -> Genome:
    """Any genome carrying the space's stem and ds (operators only read those two from a template)."""
    layer = LayerGene(kernel=space.stages[0].kernels[0], mid_chs=space.ds.out_chs, act=space.stages[0].acts[0])
    stage = StageGene(out_chs=space.ds.out_chs, stride=1, layers=(layer,))
    return Genome(stem=space.stem, ds=space.ds, stages=(stage,), head=space.head_gene(space.ds.out_chs))


def extreme_genome(space: SearchSpace, largest: bool) -> Genome:
    """The space's cheapest genome (`largest=False`: every choice smallest, down-sampling as early and as often
    as allowed) or its most expensive one (every choice largest, as little down-sampling as allowed)."""
    pick = max if largest else min
    strides = (min if largest else max)(space.stride_vectors, key=lambda v: [s == 2 for s in v])
    stages, in_chs = [], space.ds.out_chs
    for i, choices in enumerate(space.stages):
        out = pick(space.stage_outs(i))
        layers = []
        for j in range(pick(choices.depths)):
            mid = pick(space.mid_choices(i, in_chs if j == 0 else out))
            layers.append(
                _Layer(pick(choices.kernels), mid, in_chs if j == 0 else out, pick(choices.se), choices.acts[0])
            )
        stages.append(_Stage(out, strides[i], layers))
        in_chs = out
    return _finish(space, _template(space), stages)


def reachable_costs(space: SearchSpace, budget: Budget) -> tuple[Cost, Cost]:
    """(cheapest, most expensive) cost a sampled genome of the space can have at the budget's input shape."""
    return budget.cost(extreme_genome(space, False)), budget.cost(extreme_genome(space, True))


def reachable_latency(space: SearchSpace, budget: Budget) -> tuple[float, float] | None:
    """(cheapest genome's, most expensive genome's) predicted latency in ms under the budget's latency model
    (`extreme_genome`: every choice smallest or largest); None without one. With a table whose latency grows with
    width, kernel, depth and resolution these are the space's extremes; a table that does not can leave a budget
    below the first unmet, and sampling then says so after its bounded tries."""
    if budget.latency is None:
        return None
    return budget.latency(extreme_genome(space, False)), budget.latency(extreme_genome(space, True))


def _reach_text(space: SearchSpace, budget: Budget) -> str:
    low, high = reachable_costs(space, budget)
    latency = reachable_latency(space, budget)
    reach = "" if latency is None else f", predicted latency {latency[0]:.3g}..{latency[1]:.3g} ms"
    return (
        f"space {space.name} reaches MACs {format_count(low.macs)}..{format_count(high.macs)} and params "
        f"{format_count(low.params)}..{format_count(high.params)}{reach} at {budget.input_size} px, "
        f"{budget.in_chans} channel(s), {budget.num_classes} classes"
    )


def check_feasible(space: SearchSpace, budget: Budget) -> None:
    """Raises BudgetError naming the reachable range when no genome of the space can meet the budget (its MACs,
    params or predicted latency)."""
    low, high = reachable_costs(space, budget)
    latency = reachable_latency(space, budget)
    too_slow = latency is not None and latency[0] > budget.latency_ms_max
    if low.macs > budget.macs_max or high.macs < budget.macs_min or low.params > budget.params_max or too_slow:
        raise BudgetError(f"budget ({budget.describe()}) is infeasible: {_reach_text(space, budget)}")


def sample(space: SearchSpace, rng: random.Random, budget: Budget | None = None, max_tries: int = 200) -> Genome:
    """A random genome of the space within the budget: rejection sampling (uniform within the budget) first,
    then repair of random genomes; both bounded by `max_tries`."""
    if budget is None:
        return random_genome(space, rng)
    check_feasible(space, budget)
    for _ in range(max_tries):
        genome = random_genome(space, rng)
        if budget.contains(genome):
            return genome
    for _ in range(max_tries):
        genome = repair(random_genome(space, rng), space, rng, budget)
        if genome is not None:
            return genome
    raise BudgetError(
        f"no genome within the budget ({budget.describe()}) found after {2 * max_tries} tries; "
        f"widen it ({_reach_text(space, budget)})"
    )


def check_mutation_prob(p: object, where: str = "mutation probability") -> None:
    """The one rule for a per-gene mutation probability: a finite number in [0, 1]. `mutate` and the strategies'
    constructors (the library's entry points) apply it; the config applies its own to what a user writes."""
    check(is_real(p) and 0.0 <= p <= 1.0, where, p, "0 <= p <= 1")


def _other(rng: random.Random, choices: tuple, current: object) -> object | None:
    """A choice different from `current`, or None when there is none."""
    options = [c for c in choices if c != current]
    return rng.choice(options) if options else None


def _mutate_once(genome: Genome, space: SearchSpace, rng: random.Random, p: float) -> list[_Stage]:
    stages = _draft(genome)
    downsamples = sum(1 for s in stages if s.stride == 2)
    for i, (stage, choices) in enumerate(zip(stages, space.stages, strict=True)):
        if rng.random() < p and (depth := _other(rng, choices.depths, len(stage.layers))) is not None:
            if depth < len(stage.layers):
                del stage.layers[depth:]
            else:
                stage.layers += [_random_layer(space, i, stage.out, rng) for _ in range(depth - len(stage.layers))]
        if rng.random() < p and (out := _other(rng, space.stage_outs(i), stage.out)) is not None:
            stage.out = out
        stride = _other(rng, choices.strides, stage.stride) if rng.random() < p else None
        if stride == 1 or (stride == 2 and downsamples < space.max_downsamples):
            downsamples += 1 if stride == 2 else -1
            stage.stride = stride
        for layer in stage.layers:
            if rng.random() < p and (kernel := _other(rng, choices.kernels, layer.kernel)) is not None:
                layer.kernel = kernel
            if rng.random() < p and (mid := _other(rng, space.mid_choices(i, layer.design_in), layer.mid)) is not None:
                layer.mid = mid
            if rng.random() < p and (se := _other(rng, choices.se, layer.se)) is not None:
                layer.se = se
            if rng.random() < p and (act := _other(rng, choices.acts, layer.act)) is not None:
                layer.act = act
    return stages


def mutate(
    genome: Genome,
    space: SearchSpace,
    rng: random.Random,
    p: float = MUTATION_PROB,
    budget: Budget | None = None,
    max_tries: int = 100,
) -> Genome:
    """Each gene re-drawn with probability `p` to a different value; the child is repaired into the budget,
    or the mutation re-drawn, at most `max_tries` times."""
    return mutate_traced(genome, space, rng, p, budget, max_tries)[0]


def mutate_traced(
    genome: Genome,
    space: SearchSpace,
    rng: random.Random,
    p: float = MUTATION_PROB,
    budget: Budget | None = None,
    max_tries: int = 100,
) -> tuple[Genome, Origin]:
    """`mutate` (same draws, same child) and the child's `Origin` (one parent, index 0)."""
    check_mutation_prob(p)
    space.check(genome)
    for _ in range(max_tries):
        stages = _mutate_once(genome, space, rng, p)
        child = _finish(space, genome, stages)
        sources = [[layer.source for layer in stage.layers] for stage in stages]
        if budget is None or budget.contains(child):
            return child, _origin(child, (genome,), 0, stages, sources)
        repaired = _repair(child, space, rng, budget, sources)
        if repaired is not None:
            return repaired, _origin(repaired, (genome,), 0, stages, sources)
    raise BudgetError(f"no mutation of {genome} within the budget ({budget.describe()}) after {max_tries} tries")


def crossover(a: Genome, b: Genome, space: SearchSpace, rng: random.Random) -> tuple[Genome, Genome]:
    """Uniform crossover gene by gene: each stage gene (depth, width, stride) and each layer present in both
    parents goes to one child or the other with probability 1/2; a layer only one parent has is copied to the
    children deep enough to hold it. Children are not repaired: the caller applies its budget (`repair`)."""
    (first, _), (second, _) = crossover_traced(a, b, space, rng)
    return first, second


def crossover_traced(
    a: Genome, b: Genome, space: SearchSpace, rng: random.Random
) -> tuple[tuple[Genome, Origin], tuple[Genome, Origin]]:
    """`crossover` (same draws, same children), each child with its `Origin` (parent 0 is `a`, 1 is `b`; child
    0's stem, ds and head are `a`'s, child 1's `b`'s). Repair a child with `repair_traced` to keep its origin."""
    space.check(a)
    space.check(b)
    children: tuple[list[_Stage], list[_Stage]] = ([], [])
    for sa, sb in zip(_draft(a, 0), _draft(b, 1), strict=True):
        values = ((len(sa.layers), len(sb.layers)), (sa.out, sb.out), (sa.stride, sb.stride))
        swaps = [rng.random() >= 0.5 for _ in values]  # one draw per stage gene, in this order
        layers: tuple[list[_Layer], list[_Layer]] = ([], [])
        for j in range(max(len(sa.layers), len(sb.layers))):
            la = sa.layers[j] if j < len(sa.layers) else None
            lb = sb.layers[j] if j < len(sb.layers) else None
            first, second = (la, lb) if rng.random() < 0.5 else (lb, la)
            layers[0].append((first or second).copy())
            layers[1].append((second or first).copy())
        for c in (0, 1):
            picks = [c ^ swap for swap in swaps]  # the parent each of depth, out, stride comes from
            depth, out, stride = (pair[k] for pair, k in zip(values, picks, strict=True))
            children[c].append(_Stage(out, stride, layers[c][:depth], tuple(picks)))
    results = []
    for c, (stages, parent) in enumerate(zip(children, (a, b), strict=True)):
        if sum(1 for s in stages if s.stride == 2) > space.max_downsamples:
            for stage, original in zip(stages, parent.stages, strict=True):
                stage.stride = original.stride
                stage.sources = (*stage.sources[:2], c)
        child = _finish(space, parent, stages)
        results.append((child, _origin(child, (a, b), c, stages, [[x.source for x in s.layers] for s in stages])))
    return results[0], results[1]


def _moves(genome: Genome, space: SearchSpace, shrink: bool, strides: bool) -> list[tuple]:
    """Single-gene edits that lower (`shrink`) or raise the cost; stride edits only when `strides`."""
    moves: list[tuple] = []
    step = -1 if shrink else 1
    downsamples = sum(1 for s in genome.stages if s.stride == 2)
    in_chs = genome.ds.out_chs
    for i, (stage, choices) in enumerate(zip(genome.stages, space.stages, strict=True)):
        for name, current, options in (
            ("depth", stage.depth, choices.depths),
            ("out", stage.out_chs, space.stage_outs(i)),
        ):
            if (value := _neighbour(options, current, step)) is not None:
                moves.append((name, i, None, value))
        if strides:
            wanted = 2 if shrink else 1
            if (
                stage.stride != wanted
                and wanted in choices.strides
                and (wanted == 1 or downsamples < space.max_downsamples)
            ):
                moves.append(("stride", i, None, wanted))
        for j, layer in enumerate(stage.layers):
            for name, current, options in (
                ("kernel", layer.kernel, choices.kernels),
                ("mid", layer.mid_chs, space.mid_choices(i, in_chs if j == 0 else stage.out_chs)),
                ("se", layer.se, choices.se),
            ):
                if (value := _neighbour(options, current, step)) is not None:
                    moves.append((name, i, j, value))
        in_chs = stage.out_chs
    return moves


def _neighbour(options: tuple, current: object, step: int) -> object | None:
    """The nearest option below (step -1) or above (step +1) `current`, or None."""
    if step < 0:
        lower = [o for o in options if o < current]
        return max(lower) if lower else None
    higher = [o for o in options if o > current]
    return min(higher) if higher else None


def _apply(
    genome: Genome, space: SearchSpace, move: tuple, rng: random.Random, sources: list[list] | None = None
) -> Genome:
    """`genome` with one move applied; `sources` (per stage, each layer's source) follows a depth move."""
    name, i, j, value = move
    stages = _draft(genome)
    stage = stages[i]
    if name == "depth":
        if value < len(stage.layers):
            del stage.layers[value:]
        else:
            stage.layers += [_random_layer(space, i, stage.out, rng) for _ in range(value - len(stage.layers))]
        if sources is not None:
            sources[i] = (sources[i] + [None] * value)[:value]
    elif name == "out":
        stage.out = value
    elif name == "stride":
        stage.stride = value
    else:
        setattr(stage.layers[j], name, value)
    return _finish(space, genome, stages)


def repair(
    genome: Genome, space: SearchSpace, rng: random.Random, budget: Budget, max_steps: int = 200
) -> Genome | None:
    """Walks the genome into the budget by random single-gene shrinks (too expensive, too many params or too slow
    by the budget's latency model) or grows (too cheap).

    Returns None when `max_steps` edits did not suffice; the caller re-draws.
    """
    return _repair(genome, space, rng, budget, None, max_steps)


def repair_traced(
    genome: Genome,
    origin: Origin,
    parents: tuple[Genome, ...],
    space: SearchSpace,
    rng: random.Random,
    budget: Budget,
    max_steps: int = 200,
) -> tuple[Genome, Origin] | None:
    """`repair` (same draws, same genome) of a child whose `origin` refers to `parents`, with the repaired
    child's origin: a layer a depth move removed is gone, one it added is new, changed genes are re-listed."""
    sources = [[None if x is None else (x.parent, x.stage, x.layer) for x in stage.layers] for stage in origin.stages]
    repaired = _repair(genome, space, rng, budget, sources, max_steps)
    if repaired is None:
        return None
    picks = [(s.depth, s.out, s.stride) for s in origin.stages]
    return repaired, _origin(repaired, parents, origin.backbone, picks, sources)


def _repair(
    genome: Genome,
    space: SearchSpace,
    rng: random.Random,
    budget: Budget,
    sources: list[list] | None,
    max_steps: int = 200,
) -> Genome | None:
    for _ in range(max_steps):
        cost, slow = budget.cost(genome), not budget.fast_enough(genome)
        if budget.admits(cost) and not slow:
            return genome
        shrink = slow or cost.macs > budget.macs_max or cost.params > budget.params_max
        # strides change MACs and latency, never params: use them unless only the parameter count is too high
        strides = not shrink or slow or cost.macs > budget.macs_max
        moves = _moves(genome, space, shrink, strides)
        if not moves:
            return None
        genome = _apply(genome, space, rng.choice(moves), rng, sources)
    return None


def _origin(child: Genome, parents: tuple[Genome, ...], backbone: int, picks: list, sources: list[list]) -> Origin:
    """The child's origin from the parent each stage gene and layer was taken from (`picks`: per stage the
    parents of depth, out, stride, or `_Stage`s carrying them; `sources`: per stage each layer's source)."""
    stages = []
    for i, stage in enumerate(child.stages):
        pick = picks[i].sources if isinstance(picks[i], _Stage) else picks[i]
        values = (stage.depth, stage.out_chs, stage.stride)
        genes = []
        for k, (p, value) in enumerate(zip(pick, values, strict=True)):
            if p is None:
                genes.append(None)
                continue
            theirs = parents[p].stages[i]
            genes.append(p if (theirs.depth, theirs.out_chs, theirs.stride)[k] == value else None)
        layers: list[LayerOrigin | None] = []
        for j, source in enumerate(sources[i][: stage.depth]):
            if source is None:
                layers.append(None)
                continue
            p, si, lj = source
            mine, theirs = layer_genes(child, i, j), layer_genes(parents[p], si, lj)
            changed = tuple(n for n, x, y in zip(LAYER_GENES, mine, theirs, strict=True) if x != y)
            layers.append(LayerOrigin(p, si, lj, changed))
        layers += [None] * (stage.depth - len(layers))
        stages.append(StageOrigin(genes[0], genes[1], genes[2], tuple(layers)))
    return Origin(len(parents), backbone, tuple(stages))


__all__ = [
    "LAYER_GENES",
    "MUTATION_PROB",
    "LayerOrigin",
    "Origin",
    "StageOrigin",
    "check_feasible",
    "check_mutation_prob",
    "crossover",
    "crossover_traced",
    "extreme_genome",
    "identity_origin",
    "mutate",
    "mutate_traced",
    "random_genome",
    "reachable_costs",
    "reachable_latency",
    "repair",
    "repair_traced",
    "sample",
]
