"""bench/bench_retrain_table.py: the distillation teacher is chosen on held-out data, never on the test split."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from scripts import ROOT, load_script


def _bench() -> ModuleType:
    """bench/bench_retrain_table.py, loaded as a module."""
    return load_script("bench/bench_retrain_table.py", "bench_retrain_table")


def _record(held_out: float, test: float, kept: str = "ema") -> dict[str, Any]:
    """A retrain.json record with only the scores that matter here (the other weights score 1 point lower)."""
    other = "raw" if kept == "ema" else "ema"
    return {"kept": kept,
            "holdout": {kept: {"top1": held_out}, other: {"top1": held_out - 1.0}},
            "test": {kept: {"top1": test}, other: {"top1": test - 1.0}}}  # fmt: skip


def test_the_teacher_is_the_best_on_held_out_data_not_on_test() -> None:
    bench = _bench()
    records = {"best_on_test": _record(held_out=80.0, test=90.0), "best_held_out": _record(held_out=82.0, test=70.0)}
    assert bench.pick_teacher(records) == "best_held_out"
    # test scores changed at will, even removed, do not change the choice
    for test in (0.0, 50.0, 99.9):
        records["best_on_test"]["test"]["ema"]["top1"] = test
        assert bench.pick_teacher(records) == "best_held_out"
    for record in records.values():
        del record["test"]
    assert bench.pick_teacher(records) == "best_held_out"


def test_the_teacher_is_scored_by_its_kept_weights_and_a_tie_goes_to_the_first() -> None:
    bench = _bench()
    # kept raw: its held-out score is the raw one (81), not the EMA's (80)
    records = {"a": _record(held_out=80.5, test=50.0), "b": _record(held_out=81.0, test=40.0, kept="raw")}
    assert bench.pick_teacher(records) == "b"
    tie = {"first": _record(held_out=80.0, test=1.0), "second": _record(held_out=80.0, test=99.0)}
    assert bench.pick_teacher(tie) == "first"


def test_no_held_out_score_is_an_error_not_a_fallback_to_test() -> None:
    bench = _bench()
    records = {"a": _record(held_out=80.0, test=90.0), "b": {"kept": "ema", "test": {"ema": {"top1": 99.0}}}}
    with pytest.raises(ValueError, match="held-out"):
        bench.pick_teacher(records)
    with pytest.raises(ValueError):
        bench.pick_teacher({})


def test_the_committed_retrain_table_gets_the_same_teacher_by_the_held_out_rule() -> None:
    """BENCHMARKS.md "Retrain table": the committed records pick mobilenetv3_large_100 on held-out data too."""
    bench = _bench()
    folder = ROOT / "bench" / "results" / "retrain-table"
    records = {name: json.loads((folder / f"{name}.retrain.json").read_text()) for name in bench.REFERENCES}
    assert bench.pick_teacher(records) == "mobilenetv3_large_100"
    scores = {name: bench.held_out_top1(name, record) for name, record in records.items()}
    assert scores == pytest.approx({"mobilenetv3_small_100": 80.5833, "mobilenetv3_large_100": 85.1667}, abs=1e-3)
