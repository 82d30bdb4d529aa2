"""bench/bench_proxy.py: the summary's math on hand-made rows (no training) and the resumable plan."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/bench_proxy.py, loaded as a module."""
    return load_script("bench/bench_proxy.py", "bench_proxy")


def _row(variant: str, genome: int, seed: int, final: float, losses: tuple[float, ...] = (2.0, 1.0)) -> dict[str, Any]:
    """A results.jsonl row with what the summary reads."""
    return {"variant": variant, "genome": genome, "seed": seed, "final": final, "score": final - 1.0,
            "train_losses": list(losses), "macs": 1000 + genome, "params": 100 - genome, "ticket": False,
            "images": 100, "seconds": 2.0, "error": None}  # fmt: skip


def test_spearman_on_hand_made_values(bench: ModuleType) -> None:
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert bench.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert bench.spearman([1, 1, 2, 3], [1, 1, 2, 3]) == pytest.approx(1.0)  # ties get average ranks
    assert math.isnan(bench.spearman([1, 1, 1], [1, 2, 3]))  # a constant side
    assert math.isnan(bench.spearman([1, 2], [1, 2]))  # too short


def test_bootstrap_is_deterministic_with_its_seed(bench: ModuleType) -> None:
    values = np.array([float((g * 7) % 11) for g in range(12)])
    other = np.arange(12.0)

    def statistic(i: np.ndarray) -> Any:
        return bench.spearman(values[i], other[i])

    first = bench.bootstrap(statistic, 12, 200, seed=3)
    assert first == bench.bootstrap(statistic, 12, 200, seed=3)
    assert first != bench.bootstrap(statistic, 12, 200, seed=4)
    value, (low, high) = bench.estimate(statistic, 12, 200, seed=3)
    assert (low, high) == first and value == pytest.approx(bench.spearman(values, other))
    assert -1.0 <= low <= value <= high <= 1.0
    assert all(math.isnan(x) for x in bench.bootstrap(statistic, 2, 200, seed=3))  # too few items


def test_tse_is_minus_the_summed_loss_so_lower_loss_ranks_higher(bench: ModuleType) -> None:
    fast, slow = _row("base", 0, 1, 50.0, (1.0, 0.5)), _row("base", 1, 1, 50.0, (2.0, 1.5))
    assert bench.tse(fast) == pytest.approx(-1.5)
    assert bench.tse(fast) > bench.tse(slow)
    assert bench.tse_last(fast) == pytest.approx(-0.5)
    assert bench.tse(_row("base", 2, 1, 50.0, (1.0, math.nan))) is None  # a diverged trial has no score
    assert bench.tse({"final": 1.0}) is None  # rows of an older run, without losses


def test_validity_and_reliability_on_hand_made_rows(bench: ModuleType) -> None:
    # base ranks 5 genomes as the reference does, on both seeds; "ema" ranks them backwards on seed 2
    rows = [_row("reference", g, s, 70.0 + g) for g in range(5) for s in (1, 2)]
    rows += [_row("base", g, s, 50.0 + g + s / 10) for g in range(5) for s in (1, 2)]
    rows += [_row("ema", g, 1, 50.0 + g) for g in range(5)] + [_row("ema", g, 2, 50.0 - g) for g in range(5)]
    keyed = bench.by_key(rows)
    reference = {g: sum(v) / 2 for g, v in bench.replicates(keyed, "reference", lambda r: r["final"], [1, 2]).items()}
    base = bench.replicates(keyed, "base", lambda r: r["final"], [1, 2])
    ema = bench.replicates(keyed, "ema", lambda r: r["final"], [1, 2])
    genomes = list(range(5))
    ref = np.array([reference[g] for g in genomes])
    base, ema = bench.matrix(base, genomes), bench.matrix(ema, genomes)
    assert bench.validity(base, ref) == pytest.approx(1.0)
    assert bench.reliability(base) == pytest.approx(1.0)
    assert bench.validity(ema, ref) == pytest.approx(0.0)  # the mean of +1 and -1
    assert bench.reliability(ema) == pytest.approx(-1.0)
    pooled = bench.replicates(keyed, "ema", lambda r: r["final"], [1, 2], pool=2)
    assert pooled[0] == [50.0] and math.isnan(bench.reliability(bench.matrix(pooled, genomes)))  # one replicate


def test_the_summary_names_every_candidate_with_its_figures(bench: ModuleType) -> None:
    rows = [_row("reference", g, s, 70.0 + g) for g in range(6) for s in (1, 2)]
    rows += [_row("base", g, s, 50.0 + g, (2.0 - g / 10, 1.0)) for g in range(6) for s in (1, 2)]
    rows.append({**_row("base", 0, 1, 0.0), "final": None, "error": "loss nan"})  # a retried, failed trial wins
    text = bench.summary(rows, [1, 2], draws=50)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert {"params", "macs", "base final", "base candidate", "base tse", "base tse-last", "base final x2"} <= set(
        lines
    )
    assert "| 5 |" in lines["base final"]  # genome 0's failed trial leaves it out
    assert "| 1.00 [1.00, 1.00] |" in lines["base tse"]  # lower loss = better = the reference's order
    assert "| -1.00 [-1.00, -1.00] |" in lines["params"]  # the control's sign: more params = better
    assert "Failed trials: base 1" in text


def test_loader_seeds_share_batches_by_design(bench: ModuleType) -> None:
    assert bench.loader_seed("base", 3, 1, 0) == bench.loader_seed("base", 4, 2, 0) == 0  # the status quo
    crn = {bench.loader_seed("crn-seed", g, s, 0) for g in range(5) for s in (1, 2)}
    assert len(crn) == 2  # one per replicate, shared by every genome
    nocrn = {bench.loader_seed("nocrn", g, s, 0) for g in range(40) for s in (1, 2)}
    assert len(nocrn) == 80 and not nocrn & crn


def test_the_plan_skips_done_trials_in_genome_major_order(bench: ModuleType) -> None:
    done = {("reference", 0, 1), ("base", 0, 1), ("base", 0, 2)}
    jobs = bench.plan(2, ["base", "ema"], [1, 2], True, done)
    assert not set(jobs) & done
    assert jobs[:3] == [("reference", 0, 2), ("ema", 0, 1), ("ema", 0, 2)]
    assert [g for _, g, _ in jobs] == sorted(g for _, g, _ in jobs)  # every genome 0 job before genome 1's
    assert len(jobs) == 2 * (2 + 2 * 2) - len(done)
    assert ("reference", 1, 1) not in bench.plan(2, ["base"], [1, 2], False, set())


def test_spearman_runs_row_wise_and_agrees_with_scipy(bench: ModuleType) -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (50, 6)).astype(float), rng.normal(size=(50, 6))  # ties
    a[::7] = 1.0  # constant rows
    rows = bench.spearman(a, b)
    constant = np.ptp(a, axis=1) == 0
    assert constant.any() and np.isnan(rows[constant]).all()
    expected = [spearmanr(a[k], b[k]).statistic for k in np.flatnonzero(~constant)]
    assert np.allclose(rows[~constant], expected)
    assert bench.spearman(a[~constant][0], b[~constant][0]) == pytest.approx(expected[0])
