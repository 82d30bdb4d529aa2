"""bench/latency_repeat.py's arithmetic on hand-made medians (its measurements run in the benchmark): the spread of
one network's medians within a process and between processes, and the share of cross-process pairs within ±10% and
±5%, kept apart per runtime and garbage-collector mode."""

from __future__ import annotations

import pytest

from scripts import load_script


@pytest.fixture(scope="module")
def repeat():
    return load_script("bench/latency_repeat.py", "latency_repeat")


def test_summary_spreads_and_pairs(repeat) -> None:
    # two processes, two networks, two repeats each; onnxruntime only in gc "on"
    processes = [
        {"gc": "on", "medians": {"torch": [[1.0, 1.2], [2.0, 2.0]], "onnxruntime": [[0.1, 0.1], [0.2, 0.2]]}},
        {"gc": "on", "medians": {"torch": [[1.08, 1.08], [2.3, 2.2]], "onnxruntime": [[0.1, 0.1], [0.2, 0.2]]}},
        {"gc": "off", "medians": {"torch": [[1.0, 1.0], [2.0, 2.0]]}},
    ]
    rows = {(r["runtime"], r["gc"]): r for r in repeat.summarize(processes)}
    assert set(rows) == {("torch", "on"), ("onnxruntime", "on"), ("torch", "off")}
    torch_on = rows[("torch", "on")]
    # within: (1.2-1.0)/1.1, 0, 0, (2.3-2.2)/2.25 -> median of [0.1818, 0, 0, 0.0444] = 0.0222
    assert torch_on["within_process_spread"] == pytest.approx((0.0 + 0.1 / 2.25) / 2)
    # between (first repeats): network 0: 1.0 vs 1.08 -> 0.08/1.04; network 1: 2.0 vs 2.3 -> 0.3/2.15
    assert torch_on["between_process_spread"] == pytest.approx((0.08 / 1.04 + 0.3 / 2.15) / 2)
    # pairs: |1.0/1.08 - 1| = 0.074 (within 10%, not 5%), |2.0/2.3 - 1| = 0.130 (neither)
    assert torch_on["pairs"] == 2 and torch_on["pairs_within_10pct"] == 0.5 and torch_on["pairs_within_5pct"] == 0.0
    assert rows[("onnxruntime", "on")]["pairs_within_5pct"] == 1.0
    single = rows[("torch", "off")]
    assert single["between_process_spread"] is None and single["pairs_within_10pct"] is None


def test_rounds_agreement_compares_medians_over_consecutive_processes(repeat) -> None:
    # one network, 4 processes in time order (first repeats 1.0, 1.2, 1.0, 1.05): k = 1 compares neighbours
    processes = [{"gc": "on", "medians": {"torch": [[v, v]]}} for v in (1.0, 1.2, 1.0, 1.05)]
    one = repeat.rounds_agreement(processes, "torch", 1)
    assert one["pairs"] == 3 and one["within_10pct"] == pytest.approx(1 / 3)  # only 1.0 vs 1.05 (|1.0/1.05-1| 4.8%)
    two = repeat.rounds_agreement(processes, "torch", 2)  # median(1.0, 1.2) = 1.1 against median(1.0, 1.05) = 1.025
    assert two["pairs"] == 1 and two["median_diff"] == pytest.approx(1.1 / 1.025 - 1) and two["within_10pct"] == 1
    assert repeat.rounds_agreement(processes, "torch", 3) is None and repeat.rounds_agreement(processes, "x", 1) is None


def test_a_variant_is_named_in_its_rows(repeat) -> None:
    import argparse

    processes = [{"gc": "off", "variant": "rebuild", "medians": {"torch": [[1.0, 1.1]]}}]
    assert [r["variant"] for r in repeat.summarize(processes)] == ["rebuild"]
    assert repeat._variant(argparse.Namespace(rebuild=True, hashseed="0")) == "rebuild hashseed=0"
    assert repeat._variant(argparse.Namespace(rebuild=False, hashseed=None)) == ""
