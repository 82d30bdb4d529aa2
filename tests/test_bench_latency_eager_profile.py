"""bench/latency_eager_profile.py end to end on one small network at 16 px: eager and frozen timings, and the
profile's operators with their calls per inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from menas.space.genome import MOBILENETV3_SMALL, Genome
from scripts import load_script


@pytest.fixture(scope="module")
def profile():
    return load_script("bench/latency_eager_profile.py", "latency_eager_profile")


def test_it_times_both_modes_and_profiles_the_convolutions(profile, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"args": {"in_chans": 1, "input_size": 16, "num_classes": 10},
                                   "genomes": [{"genome": MOBILENETV3_SMALL}]}))  # fmt: skip
    out = tmp_path / "profile.json"
    argv = ["--results", str(results), "--n", "1", "--runs", "3", "--profile-runs", "2", "--top", "40"]
    assert profile.main([*argv, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    (row,) = record["networks"]
    assert row["eager_ms"] > 0 and row["frozen_ms"] > 0
    assert row["eager_over_frozen"] == pytest.approx(row["eager_ms"] / row["frozen_ms"])
    ops = {op["op"]: op for op in record["profile"]}
    convs = sum(op["calls_per_inference"] for name, op in ops.items() if name == "aten::conv2d")
    genome = Genome.from_str(MOBILENETV3_SMALL)
    assert convs >= sum(len(stage.layers) for stage in genome.stages)  # at least one convolution a block
    assert sum(op["self_share"] for op in record["profile"]) <= 1.0 + 1e-9
