"""Sampling, mutation, crossover and repair: validity, budgets, rates, reproducibility."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.errors import BudgetError
from menas.space.cost import Budget
from menas.space.genome import MOBILENETV3_LARGE, Genome
from menas.space.operators import (
    LAYER_GENES,
    Origin,
    check_feasible,
    crossover,
    crossover_traced,
    extreme_genome,
    identity_origin,
    mutate,
    mutate_traced,
    reachable_costs,
    repair,
    repair_traced,
    sample,
)
from menas.space.spaces import PRESETS

from genomes import MT, WS, seeded_genomes

BUDGETS = {
    "mobilenet3-mt": Budget(macs_min=150e6, macs_max=300e6, params_max=8e6, input_size=224),
    "mobilenet3-ws": Budget(macs_min=200e6, macs_max=350e6, input_size=224),
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_samples_are_in_space_and_budget(name: str) -> None:
    budget = BUDGETS[name]
    for genome in seeded_genomes(name, 40, seed=1, budget=budget):
        PRESETS[name].check(genome)
        assert budget.contains(genome)


def test_sampling_is_reproducible_and_varied() -> None:
    first = seeded_genomes("mobilenet3-mt", 10, seed=7, budget=BUDGETS["mobilenet3-mt"])
    again = seeded_genomes("mobilenet3-mt", 10, seed=7, budget=BUDGETS["mobilenet3-mt"])
    other = seeded_genomes("mobilenet3-mt", 10, seed=8, budget=BUDGETS["mobilenet3-mt"])
    assert first == again
    assert first != other
    assert len({g.to_str() for g in first}) == 10


def test_narrow_budget_is_met_by_repair() -> None:
    # a 5%-wide MACs window around MobileNetV3-Large: rejection alone rarely hits it
    budget = Budget(macs_min=210e6, macs_max=220e6, params_max=6e6, input_size=224)
    rng = random.Random(3)
    genomes = [sample(MT, rng, budget) for _ in range(10)]
    assert all(budget.contains(g) and MT.contains(g) for g in genomes)


def test_infeasible_budget_names_the_reachable_range() -> None:
    low, high = reachable_costs(MT, Budget(input_size=224))
    with pytest.raises(BudgetError, match=r"infeasible: space mobilenet3-mt reaches MACs 21.4M\.\.181G"):
        check_feasible(MT, Budget(macs_max=1e6, input_size=224))
    with pytest.raises(BudgetError, match="params"):
        sample(MT, random.Random(0), Budget(params_max=low.params - 1, input_size=224))
    with pytest.raises(BudgetError):
        sample(WS, random.Random(0), Budget(macs_min=high.macs + 1, input_size=224))
    assert low.macs < high.macs and low.params < high.params


@pytest.mark.parametrize("name", list(PRESETS))
def test_extremes_bound_every_sample(name: str) -> None:
    budget = Budget(input_size=64, num_classes=10)
    low, high = budget.cost(extreme_genome(PRESETS[name], False)), budget.cost(extreme_genome(PRESETS[name], True))
    for genome in seeded_genomes(name, 50, seed=2):
        cost = budget.cost(genome)
        assert low.macs <= cost.macs <= high.macs
        assert low.params <= cost.params <= high.params


def _kernel_genes(genome: Genome) -> dict[tuple[int, int], int]:
    return {(i, j): layer.kernel for i, s in enumerate(genome.stages) for j, layer in enumerate(s.layers)}


@pytest.mark.parametrize("name", list(PRESETS))
def test_mutation_changes_genes_at_rate_p_to_different_values(name: str) -> None:
    """Kernel genes of layers that survive mutation change at rate p (binomial, 5 sigma band), always to a
    value allowed by the space."""
    p = 0.08
    rng = random.Random(11)
    parents = seeded_genomes(name, 20, seed=5)
    changed = total = 0
    for parent in parents:
        for _ in range(25):
            child = mutate(parent, PRESETS[name], rng, p=p)
            PRESETS[name].check(child)
            before, after = _kernel_genes(parent), _kernel_genes(child)
            for key in before.keys() & after.keys():
                total += 1
                changed += before[key] != after[key]
    sigma = math.sqrt(total * p * (1 - p))
    assert abs(changed - p * total) < 5 * sigma, (changed, total)


def test_mutation_with_p_zero_and_one() -> None:
    parent = Genome.from_str(MOBILENETV3_LARGE)
    rng = random.Random(0)
    assert mutate(parent, MT, rng, p=0.0) == parent
    child = mutate(parent, MT, rng, p=1.0)
    # every layer gene was re-drawn to a different value: no surviving layer keeps its kernel
    before, after = _kernel_genes(parent), _kernel_genes(child)
    assert all(before[k] != after[k] for k in before.keys() & after.keys())
    with pytest.raises(ValueError, match="mutation probability"):
        mutate(parent, MT, rng, p=1.5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), name=st.sampled_from(list(PRESETS)))
def test_mutation_and_crossover_stay_in_space_and_budget(seed: int, name: str) -> None:
    space, budget = PRESETS[name], BUDGETS[name]
    rng = random.Random(seed)
    a, b = sample(space, rng, budget), sample(space, rng, budget)
    child = mutate(a, space, rng, budget=budget)
    assert space.contains(child) and budget.contains(child)
    for c in crossover(a, b, space, rng):
        space.check(c)
        fixed = repair(c, space, rng, budget)
        # measured: children of in-budget parents were always repaired (1,600 of 1,600; 1,217 needed nothing)
        assert fixed is not None and budget.contains(fixed) and space.contains(fixed)
        if budget.contains(c):
            assert fixed == c  # nothing to repair


def test_crossover_children_inherit_each_gene_from_a_parent() -> None:
    rng = random.Random(4)
    for a, b in zip(*[iter(seeded_genomes("mobilenet3-ws", 40, seed=9))] * 2, strict=True):
        c1, c2 = crossover(a, b, WS, rng)
        for i in range(len(a.stages)):
            # in WS widths are fixed, so inherited layers keep their exact genes
            assert {c1.stages[i].depth, c2.stages[i].depth} == {a.stages[i].depth, b.stages[i].depth}
            for j, layer in enumerate(c1.stages[i].layers):
                sources = [s.stages[i].layers[j] for s in (a, b) if j < s.stages[i].depth]
                assert layer in sources


def test_crossover_of_identical_parents_returns_them() -> None:
    (a,) = seeded_genomes("mobilenet3-mt", 1, seed=3)
    assert crossover(a, a, MT, random.Random(0)) == (a, a)


def test_repair_moves_into_budget_in_both_directions() -> None:
    rng = random.Random(0)
    large = Genome.from_str(MOBILENETV3_LARGE)
    shrink = Budget(macs_min=50e6, macs_max=120e6, input_size=224)
    grow = Budget(macs_min=400e6, macs_max=600e6, input_size=224)
    for budget in (shrink, grow):
        fixed = repair(large, MT, rng, budget)
        assert fixed is not None and budget.contains(fixed) and MT.contains(fixed)


# ------------------------------------------------------------------------------------------ gene origins


def _check_origin(child: Genome, origin: Origin, parents: tuple[Genome, ...]) -> None:
    """Every gene of `child` maps to a gene of a parent with the same role (and, unless listed as changed, the
    same value), or is marked new; the record survives a JSON round trip."""
    assert origin.parents == len(parents) and 0 <= origin.backbone < len(parents)
    assert len(origin.stages) == len(child.stages)
    for i, (stage, record) in enumerate(zip(child.stages, origin.stages, strict=True)):
        for p, value, attr in ((record.depth, stage.depth, "depth"), (record.out, stage.out_chs, "out_chs"),
                               (record.stride, stage.stride, "stride")):  # fmt: skip
            assert p is None or getattr(parents[p].stages[i], attr) == value
        assert len(record.layers) == stage.depth
        for j, source in enumerate(record.layers):
            if source is None:
                continue
            assert (source.stage, source.layer) == (i, j)  # positions are kept
            theirs = parents[source.parent].stages[source.stage]
            assert source.layer < theirs.depth
            mine = dict(zip(LAYER_GENES, _genes(child, i, j), strict=True))
            their = dict(zip(LAYER_GENES, _genes(parents[source.parent], i, j), strict=True))
            assert {k for k in LAYER_GENES if mine[k] != their[k]} == set(source.changed)
    assert Origin.from_json(json.dumps(origin.to_dict())) == origin


def _genes(genome: Genome, i: int, j: int) -> tuple:
    layer = genome.stages[i].layers[j]
    return layer.kernel, layer.mid_chs, layer.se, layer.act, genome.layer_in_chs()[i][j], genome.stages[i].out_chs


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31), name=st.sampled_from(list(PRESETS)), p=st.sampled_from([0.0, 0.08, 0.5]))
def test_every_child_gene_maps_to_a_parent_gene_or_is_new(seed: int, name: str, p: float) -> None:
    space, budget = PRESETS[name], BUDGETS[name]
    rng = random.Random(seed)
    a, b = sample(space, rng, budget), sample(space, rng, budget)
    child, origin = mutate_traced(a, space, rng, p, budget)
    _check_origin(child, origin, (a,))
    for child, origin in crossover_traced(a, b, space, rng):
        _check_origin(child, origin, (a, b))
        fixed = repair_traced(child, origin, (a, b), space, rng, budget)
        if fixed is not None:
            _check_origin(*fixed, (a, b))
            assert budget.contains(fixed[0])


def test_traced_operators_make_the_same_children() -> None:
    space, budget = MT, BUDGETS["mobilenet3-mt"]
    a, b = seeded_genomes("mobilenet3-mt", 2, seed=5, budget=budget)
    for seed in range(10):
        plain = mutate(a, space, random.Random(seed), 0.3, budget)
        assert mutate_traced(a, space, random.Random(seed), 0.3, budget)[0] == plain
        pair = crossover(a, b, space, random.Random(seed))
        traced = crossover_traced(a, b, space, random.Random(seed))
        assert (traced[0][0], traced[1][0]) == pair
        assert traced[0][1].backbone == 0 and traced[1][1].backbone == 1
        r1, r2 = random.Random(seed), random.Random(seed)
        assert repair(pair[0], space, r1, budget) == (repair_traced(pair[0], traced[0][1], (a, b), space, r2, budget)
                                                      or (None,))[0]  # fmt: skip


def test_a_child_identical_to_its_parent_maps_every_gene_to_itself() -> None:
    (a,) = seeded_genomes("mobilenet3-mt", 1, seed=2, budget=BUDGETS["mobilenet3-mt"])
    child, origin = mutate_traced(a, MT, random.Random(0), 0.0)
    assert child == a and origin == identity_origin(a) and origin.new_layers == 0
    assert all(x is not None and not x.changed for s in origin.stages for x in s.layers)
    (c0, o0), (c1, o1) = crossover_traced(a, a, MT, random.Random(1))
    assert c0 == c1 == a
    for origin in (o0, o1):
        assert all(x is not None and not x.changed for s in origin.stages for x in s.layers)
        assert all(None not in (s.depth, s.out, s.stride) for s in origin.stages)


def test_a_depth_mutation_marks_added_layers_new() -> None:
    genome = Genome.from_str(MOBILENETV3_LARGE)
    space = PRESETS["mobilenet3-mt"]
    for seed in range(50):  # the first seed whose mutation deepens a stage
        child, origin = mutate_traced(genome, space, random.Random(seed), 0.3)
        deeper = [i for i, (s, t) in enumerate(zip(child.stages, genome.stages, strict=True)) if s.depth > t.depth]
        if deeper:
            break
    i = deeper[0]
    layers = origin.stages[i].layers
    depth = genome.stages[i].depth
    assert all(x is None for x in layers[depth:]) and all(x is not None for x in layers[:depth])
    assert origin.stages[i].depth is None and origin.new_layers >= child.stages[i].depth - depth
