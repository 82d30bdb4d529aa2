"""A latency-constrained search (`budget: {latency_ms_max, latency_table}`), on synthetic lookup tables (a fake
per-block cost, as tests/test_latency.py builds them; nothing is measured): the bound is never violated by
sampling, mutation, crossover repair or the strategies; tickets keep to it; an infeasible bound, a table for
another space or input size, an incomplete or missing table and half a budget are refused before any training;
a tiny search records every trial's predicted latency and `menas status` prints the best one's. The predictor
the budget uses imports no torch."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.cli.main import main
from menas.config import BudgetConfig, LotteryConfig, SearchConfig, StrategyConfig
from menas.errors import BudgetError, UserError
from menas.latency.blocks import genome_blocks
from menas.latency.measure import Settings
from menas.latency.predict import Predictor, open_predictor
from menas.latency.table import LatencyTable, build_table
from menas.nn.builder import build_model
from menas.prune.tickets import search_ticket
from menas.search.engine import Search, make_budget
from menas.search.protocol import TrialOutcome
from menas.search.store import Store
from menas.search.strategies import make_strategy
from menas.search.trial import _within
from menas.space.cost import Budget
from menas.space.genome import Genome
from menas.space.operators import check_feasible, crossover, extreme_genome, mutate, random_genome, repair, sample
from menas.space.spaces import PRESETS, SearchSpace
from test_latency import CHANS, CLASSES, HOST, SIZE, TINY, fake_cost
from test_search import tiny_config

MT = PRESETS["mobilenet3-mt"]
#: The tiny search's input shape: 16 px synthetic data, 1 channel, 10 classes.
SHAPE = (16, 1, 10)


def _table(space: SearchSpace, out: Path, shape: tuple[int, int, int], **kwargs) -> LatencyTable:
    """A synthetic table of the space at this input shape (fake per-block costs), written once."""
    return build_table(space, *shape, Settings(), out, measure=fake_cost, host=HOST, save_every=10**9, **kwargs).table


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory) -> LatencyTable:
    return _table(TINY, tmp_path_factory.mktemp("tiny") / "tiny.json", (SIZE, CHANS, CLASSES))


@pytest.fixture(scope="module")
def mt_table(tmp_path_factory: pytest.TempPathFactory) -> LatencyTable:
    """mobilenet3-mt at the tiny search's input shape (45,294 blocks, under a second with the fake cost)."""
    return _table(MT, tmp_path_factory.mktemp("mt") / "mt16.json", SHAPE)


def _latency_budget(predictor: Predictor, bound_ms: float, shape: tuple[int, int, int], **macs: float) -> Budget:
    size, chans, classes = shape
    return Budget(input_size=size, in_chans=chans, num_classes=classes, latency_ms_max=bound_ms,
                  latency=predictor.latency_ms, **macs)  # fmt: skip


def _quantile_bound(predictor: Predictor, space: SearchSpace, q: float, seed: int = 0) -> float:
    """A bound that bites: the q-quantile of the predicted latency of random genomes of the space."""
    rng = random.Random(seed)
    latencies = sorted(predictor.latency_ms(random_genome(space, rng)) for _ in range(200))
    return latencies[min(len(latencies) - 1, int(q * len(latencies)))]


# --------------------------------------------------------------------------------------------- operators


def test_the_budget_predictor_imports_no_torch(mt_table: LatencyTable) -> None:
    """Opening a table, predicting and sampling under a latency budget (what the strategy side does) import no
    torch."""
    code = f"""
import random, sys
from menas.latency.predict import open_predictor
from menas.search.strategies import make_strategy
from menas.space.cost import Budget
from menas.space.operators import sample
from menas.space.spaces import PRESETS
space = PRESETS["mobilenet3-mt"]
predictor = open_predictor({str(mt_table.path)!r}, space, 16, 1, 10)
budget = Budget(input_size=16, in_chans=1, num_classes=10, latency_ms_max=10.0, latency=predictor.latency_ms)
assert budget.contains(sample(space, random.Random(0), budget))
assert "torch" not in sys.modules, "torch was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), q=st.floats(0.05, 0.9), p=st.floats(0.1, 0.6))
def test_a_latency_budget_is_never_violated_by_sampling_mutation_and_repair(
    tiny_table: LatencyTable, seed: int, q: float, p: float
) -> None:
    predictor = Predictor.from_table(tiny_table)
    bound = _quantile_bound(predictor, TINY, q)
    budget = _latency_budget(predictor, bound, (SIZE, CHANS, CLASSES))
    rng = random.Random(seed)
    a, b = sample(TINY, rng, budget), sample(TINY, rng, budget)
    children = [a, b, mutate(a, TINY, rng, p, budget), mutate(b, TINY, rng, p, budget)]
    for child in crossover(a, b, TINY, rng):
        children.append(child if budget.contains(child) else repair(child, TINY, rng, budget))
    for child in filter(None, children):
        assert predictor.latency_ms(child) <= bound, child.to_str()


def test_mt_operators_and_strategies_keep_to_latency_and_macs(mt_table: LatencyTable) -> None:
    """On mobilenet3-mt with a MACs window too: every sample, mutation and repaired crossover child, and every
    genome MENAS asks for in both generations (mutation and crossover children included), is within both."""
    predictor = Predictor.from_table(mt_table)
    bound = _quantile_bound(predictor, MT, 0.3)
    budget = _latency_budget(predictor, bound, SHAPE, macs_max=4e6)
    rng = random.Random(5)
    for _ in range(5):
        a, b = sample(MT, rng, budget), sample(MT, rng, budget)
        children = [a, b, mutate(a, MT, rng, 0.3, budget)]
        children += [c if budget.contains(c) else repair(c, MT, rng, budget) for c in crossover(a, b, MT, rng)]
        assert all(budget.contains(c) for c in children if c is not None)
    cfg = dataclasses.replace(tiny_config(), strategy=StrategyConfig(population=8, generations=2, parents=4))
    strategy = make_strategy(cfg, MT, budget)
    first = strategy.ask()
    strategy.tell([_done(spec.trial_id, spec.genome, budget, rng.uniform(10, 90)) for spec in first])
    second = strategy.ask()
    assert {spec.role for spec in second} & {"mutation", "crossover"}
    for spec in first + second:
        genome = Genome.from_str(spec.genome)
        assert budget.contains(genome) and predictor.latency_ms(genome) <= bound


def _done(trial_id: int, genome: str, budget: Budget, score: float) -> TrialOutcome:
    cost = budget.cost(Genome.from_str(genome))
    return TrialOutcome(trial_id, genome, "done", score, cost.macs, cost.params)


def test_an_infeasible_latency_budget_is_named(mt_table: LatencyTable) -> None:
    predictor = Predictor.from_table(mt_table)
    cheapest = predictor.latency_ms(extreme_genome(MT, False))
    with pytest.raises(BudgetError, match=r"predicted latency <= [\d.]+ ms.* is infeasible: .*predicted latency "):
        check_feasible(MT, _latency_budget(predictor, cheapest * 0.9, SHAPE))
    check_feasible(MT, _latency_budget(predictor, cheapest, SHAPE))  # the cheapest genome meets it exactly
    with pytest.raises(UserError, match="budget.latency_ms_max: got 0, allowed: numbers > 0"):
        _latency_budget(predictor, 0, SHAPE)
    with pytest.raises(UserError, match="budget.latency_table: got none with latency_ms_max 2.0"):
        Budget(latency_ms_max=2.0)


def test_a_ticket_over_the_bound_is_neither_scored_nor_kept() -> None:
    """`search_ticket(admits=...)` drops the proposals it refuses (the others are those drawn without it); the trial
    refuses a proposal the table cannot price."""
    genome = sample(MT, random.Random(1), Budget(macs_max=2e6, input_size=16, in_chans=1, num_classes=10))
    torch.manual_seed(0)
    model = build_model(genome, 10, 1).eval()
    calib = [torch.randn(16, 1, 16, 16)]
    val = [(torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,)))]
    cfg = LotteryConfig(proposals=6, score_images=0, rescore_top=6, tolerance=100.0, amp="off")
    everything = search_ticket(model, calib, val, cfg, random.Random(0), input_size=16)
    small = sorted(s.macs for s in everything.scored)[2]
    kept = search_ticket(model, calib, val, cfg, random.Random(0), 16, admits=lambda g: _macs(g) <= small)
    assert [s.index for s in kept.scored] == [s.index for s in everything.scored if s.macs <= small]
    assert kept.chosen is not None and kept.chosen.macs <= small
    none = search_ticket(model, calib, val, cfg, random.Random(0), 16, admits=lambda g: False)
    assert none.scored == [] and none.chosen is None and none.ticket_genome == genome


def _macs(genome: Genome) -> int:
    return Budget(input_size=16, in_chans=1, num_classes=10).cost(genome).macs


def test_a_proposal_the_table_cannot_price_is_refused(tmp_path: Path) -> None:
    rng = random.Random(2)
    first, second = random_genome(TINY, rng), random_genome(TINY, rng)
    only = [b for _, b in genome_blocks(first, SIZE, CHANS, CLASSES)]
    partial = Predictor(_table(TINY, tmp_path / "partial.json", (SIZE, CHANS, CLASSES), only=only))
    admits = _within(partial, 1e9)
    assert admits(first)
    missing = {b for _, b in genome_blocks(second, SIZE, CHANS, CLASSES)} - set(only)
    assert missing and not admits(second)


def test_a_fitted_overhead_is_stored_in_the_table_and_used_by_the_budget(tmp_path: Path) -> None:
    table = _table(TINY, tmp_path / "fit.json", (SIZE, CHANS, CLASSES))
    rng = random.Random(4)
    genomes = [random_genome(TINY, rng) for _ in range(8)]
    plain = Predictor(table)
    measured = [(1.5 + 0.1 * plain.mparams(g)) * plain.predict(g) + 0.25 - 0.01 * (g.depth + 3) for g in genomes]
    fitted = Predictor(table).fit(genomes, measured)
    fitted.save_fit()
    opened = open_predictor(table.path, TINY, SIZE, CHANS, CLASSES)
    coefficients = (opened.scale, opened.sum_per_mparam, opened.overhead_ms, opened.per_block_ms)
    assert coefficients == pytest.approx((1.5, 0.1, 0.25, -0.01))
    assert opened.latency_ms(genomes[0]) == pytest.approx(measured[0])
    assert LatencyTable.load(table.path).fit["fitted_on"] == 8

    # a table fitted before the parameter term existed (no sum_per_mparam) reads it as 0
    older = LatencyTable.load(table.path)
    older.fit = {k: v for k, v in older.fit.items() if k != "sum_per_mparam"}
    older.save()
    old_predictor = open_predictor(table.path, TINY, SIZE, CHANS, CLASSES)
    assert old_predictor.sum_per_mparam == 0.0 and old_predictor.scale == pytest.approx(1.5)


# --------------------------------------------------------------------------------------------- the search


def _config(table: Path | str | None, bound: float | None) -> SearchConfig:
    cfg = tiny_config()
    budget = dataclasses.replace(cfg.budget, latency_ms_max=bound, latency_table=None if table is None else str(table))
    return dataclasses.replace(cfg, budget=budget)


def test_a_bad_table_or_bound_is_refused_before_training(mt_table: LatencyTable, tmp_path: Path) -> None:
    """A table for another input size or space, an incomplete or missing table and an infeasible bound: one line
    naming `budget.latency_table` (or the bound), before the run folder holds a store."""
    at_32 = _table(MT, tmp_path / "mt32.json", (32, 1, 10), max_new=50)
    ws = _table(PRESETS["mobilenet3-ws"], tmp_path / "ws16.json", SHAPE)
    partial = _table(MT, tmp_path / "partial16.json", SHAPE, max_new=50)
    cases = [
        (at_32.path, 5.0, r"budget.latency_table: latency table .*mt32.json': measured for input_size 32, this"),
        (ws.path, 5.0, r"budget.latency_table: latency table .*ws16.json': measured for space 'mobilenet3-ws', this"),
        (partial.path, 5.0, r"budget.latency_table: latency table .* holds 50 of the space's 45294 blocks"),
        (tmp_path / "none.json", 5.0, r"budget.latency_table: got '.*none.json', allowed: a lookup table file"),
        (mt_table.path, 1e-6, r"budget \(MACs .*predicted latency <= 1e-06 ms.*\) is infeasible: space mobilenet3-mt"),
    ]
    for table, bound, message in cases:
        run = tmp_path / f"run-{Path(table).stem}-{bound}"
        with pytest.raises(UserError, match=message):
            Search(_config(table, bound), run)
        assert not (run / "menas.sqlite").exists()
    with pytest.raises(UserError, match="budget.latency_table: got null with budget.latency_ms_max"):
        Search(_config(None, 2.0), tmp_path / "half")
    with pytest.raises(UserError, match="budget.latency_ms_max: got null with budget.latency_table"):
        Search(_config(mt_table.path, None), tmp_path / "half")
    with pytest.raises(UserError, match="budget.latency_ms_max: got 0, allowed: > 0"):
        BudgetConfig(latency_ms_max=0, latency_table="t.json")
    assert not (tmp_path / "half").exists()


@pytest.fixture(scope="module")
def latency_run(mt_table: LatencyTable, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The tiny search (6 trials, tickets) under a bound that bites: the median predicted latency of samples in
    its MACs budget."""
    predictor = Predictor.from_table(mt_table)
    plain = make_budget(tiny_config(), SHAPE)
    rng = random.Random(0)
    latencies = sorted(predictor.latency_ms(sample(MT, rng, plain)) for _ in range(20))
    bound = latencies[len(latencies) // 2]
    run = tmp_path_factory.mktemp("latency") / "run"
    Search(_config(mt_table.path, bound), run).run()
    return run, bound


def test_a_tiny_search_records_predicted_latency_within_the_bound(
    latency_run: tuple[Path, float], mt_table: LatencyTable
) -> None:
    run, bound = latency_run
    predictor = Predictor.from_table(mt_table)
    with Store.open(run, readonly=True) as store:
        trials = store.history()
    assert len(trials) == 6 and all(t.status == "done" for t in trials)
    assert any(t.ticket is not None for t in trials), "no ticket kept (tolerance is 50 points)"
    for t in trials:
        assert t.latency_ms == pytest.approx(predictor.latency_ms(Genome.from_str(t.genome))) and t.latency_ms <= bound
        if t.ticket is None:
            assert t.ticket_latency_ms is None
        else:
            assert t.ticket_latency_ms == pytest.approx(predictor.latency_ms(Genome.from_str(t.ticket)))
            assert t.ticket_latency_ms <= bound
        assert t.final_latency_ms == (t.ticket_latency_ms if t.ticket else t.latency_ms)


def test_menas_status_prints_the_best_networks_predicted_latency(
    latency_run: tuple[Path, float], reference_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, bound = latency_run
    with Store.open(run, readonly=True) as store:
        best, config = store.best(), store.config()
    assert config["budget"]["latency_ms_max"] == bound and config["budget"]["latency_table"].endswith("mt16.json")
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"predicted latency {best.final_latency_ms:.3g} ms (budget {bound:g} ms)" in " ".join(out.split())
    assert main(["status", str(reference_run)]) == 0  # no latency budget: no latency printed
    assert "predicted latency" not in capsys.readouterr().out
