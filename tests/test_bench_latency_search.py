"""bench/latency_search.py's arithmetic on a tiny complete table (its searches and retrains run in the benchmark):
the calibration finds a MACs bound whose sampled networks match the latency arm's median predicted latency, and
the summary pairs the arms by seed and counts the networks within the measured budget."""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from types import ModuleType

import pytest

from menas.latency.measure import Settings
from menas.latency.predict import Predictor
from menas.latency.table import build_table
from menas.space.operators import random_genome
from menas.space.spaces import PRESETS
from scripts import load_script
from test_latency import HOST, fake_cost

SHAPE = (16, 1, 10)
CONFIG = """space: mobilenet3-ws
budget: {macs_min: 2.5M, macs_max: 5M, params_max: 6M}
strategy: {name: menas-no-tickets, population: 4, generations: 1, parents: 2}
data: {dataset: synthetic, input_size: 16}
"""


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench/latency_search.py", "latency_search")


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenet3-ws at 16 px with known per-block costs (not timed: the test does not depend on the machine's
    load), with an overhead fitted on made-up whole-network times."""
    path = tmp_path_factory.mktemp("table") / "table.json"
    space = PRESETS["mobilenet3-ws"]
    table = build_table(space, *SHAPE, Settings(), path, measure=fake_cost, host=HOST).table
    rng = random.Random(0)
    genomes = [random_genome(space, rng) for _ in range(8)]
    raw = Predictor(table)
    Predictor(table).fit(genomes, [1.1 * raw.table_sum(g) + 0.05 for g in genomes]).save_fit()
    return path


def test_the_calibration_matches_the_arms_median_latency(bench: ModuleType, table_path: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(CONFIG)
    args = bench.parse_args(["--table", str(table_path), "--out", str(tmp_path), "--config", str(config_path),
                             "--shape", *map(str, SHAPE), "--samples", "60"])  # fmt: skip
    config = bench.from_dict(bench.SearchConfig, bench.yaml.safe_load(CONFIG), "config")
    predictor = bench.open_predictor(table_path, PRESETS["mobilenet3-ws"], *SHAPE)
    cal = bench.calibrate(config, predictor, args)
    assert 2.5e6 < cal["macs_max"] < cal["macs_cap"] == 10e6
    assert cal["latency_ms_max"] < cal["config_budget_latency_median_ms"]  # the 0.4 quantile, below the median
    assert cal["latency_arm_sample_median_ms"] <= cal["latency_ms_max"]  # every latency-arm sample is within X
    assert cal["macs_arm_sample_median_ms"] == pytest.approx(cal["latency_arm_sample_median_ms"], rel=0.1)
    assert 0 < cal["macs_arm_samples_within_budget"] < 1
    overrides = bench.arm_overrides("latency", 3, cal, args)
    assert overrides["budget.latency_ms_max"] == cal["latency_ms_max"] and overrides["seed"] == 3
    assert overrides["budget.latency_table"] == str(table_path.resolve())
    assert bench.arm_overrides("macs", 3, cal, args)["budget.macs_max"] == cal["macs_max"]
    assert "budget.latency_table" not in bench.arm_overrides("macs", 3, cal, args)


def test_the_summary_pairs_by_seed_and_counts_the_budget(bench: ModuleType) -> None:
    cal = {"latency_ms_max": 1.0, "macs_max": 3e6, "latency_arm_sample_median_ms": 0.8,
           "macs_arm_sample_median_ms": 0.81, "macs_arm_samples_within_budget": 0.6}  # fmt: skip

    def row(arm: str, seed: int, measured: float, top1: float) -> dict:
        return {"arm": arm, "seed": seed, "trial_id": 1, "macs": 2e6, "params": 1e6, "search_val_top1": 50.0,
                "predicted_ms": 0.9, "measured_ms": measured, "within_budget": measured <= 1.0, "test_top1": top1,
                "trials_predicted_within": 1.0 if arm == "latency" else 0.5}  # fmt: skip

    rows = [row("latency", 0, 0.9, 80.0), row("macs", 0, 1.2, 81.0), row("latency", 1, 0.95, 82.0),
            row("macs", 1, 0.9, 80.0), row("latency", 2, 1.05, 79.0), row("macs", 2, 1.3, 79.5)]  # fmt: skip
    text = bench.summarize(rows, cal)
    assert "- latency arm: 2 of 3 chosen networks within the measured budget; 100% of its trials" in text
    assert "- macs arm: 1 of 3 chosen networks within the measured budget; 50% of its trials" in text
    diffs = [-1.0, 2.0, -0.5]
    assert f"(n = 3): -1.00, +2.00, -0.50; mean {statistics.fmean(diffs):+.2f} [" in text
    assert "- pairs where both meet the measured budget: 1 of 3." in text
    assert text.count("| latency |") == 3 and text.count("| macs |") == 3


def test_save_to_keeps_the_finished_small_files_and_no_weights(bench: ModuleType, tmp_path: Path) -> None:
    out, dst = tmp_path / "out", tmp_path / "saved"
    job = out / "jobs" / "latency-s0-t1-s0-e3"
    job.mkdir(parents=True)
    for name in (bench.refs.RESULT_FILE, bench.refs.JOB_FILE, "model.safetensors", "retrain.ckpt"):
        (job / name).write_text(name)
    unfinished = out / "jobs" / "macs-s0-t2-s0-e3"
    unfinished.mkdir()
    (unfinished / bench.refs.JOB_FILE).write_text("{}")
    (out / "logs").mkdir()
    (out / "logs" / "latency-s0.log").write_text("log")
    for name in ("results.json", "summary.md", "calibration.json"):
        (out / name).write_text(name)
    bench.save_to(out, dst)
    saved = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert saved == ["calibration.json", "jobs/latency-s0-t1-s0-e3/job.json", "jobs/latency-s0-t1-s0-e3/versus.json",
                     "logs/latency-s0.log", "results.json", "summary.md"]  # fmt: skip
