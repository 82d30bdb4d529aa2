"""bench/bench_gpu.py (issue 21): its summaries on hand-made figures, its option parsing, the one-line exit without
CUDA, and (slow) a smoke run of its parts on the CPU at toy sizes. Its measurements need a lent GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from scripts import ROOT, load_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/bench_gpu.py, loaded as a module."""
    return load_script("bench/bench_gpu.py", "bench_gpu")


def _trial(epochs: tuple[float, float], images: int = 3000, score: float = 70.0) -> dict:
    return {"status": "done", "train_epoch_s": list(epochs), "images_per_epoch": images, "trained_score": score}


def test_first_epoch_summary_splits_per_process_from_per_network_cost(bench: ModuleType) -> None:
    """Network 0 pays 9 s more in its first epoch, network 1 7 s more: 2 s per process, 7 s per new network."""
    s = bench.first_epoch_summary([_trial((10.0, 1.0)), _trial((9.0, 2.0), score=80.0)])
    assert s["networks"] == 2 and s["epoch1_s"] == 9.5 and s["epoch2_s"] == 1.5
    assert s["ratio"] == pytest.approx(9.5 / 1.5) and s["extra_s"] == 8.0 and s["two_epochs_s"] == 11.0
    assert s["per_process_s"] == 2.0 and s["per_network_s"] == 7.0
    assert s["warm_img_s"] == pytest.approx((3000 / 1.0 + 3000 / 2.0) / 2) and s["trained_score"] == 75.0
    assert bench.first_epoch_summary([{"status": "failed", "train_epoch_s": []}]) == {"networks": 0}


def test_the_best_variant_is_the_fastest_that_trained_every_network(bench: ModuleType) -> None:
    ran = {
        "base": {"summary": {"networks": 2, "two_epochs_s": 11.0}},
        "tf32": {"summary": {"networks": 2, "two_epochs_s": 4.0}},
        "benchmark": {"summary": {"networks": 1, "two_epochs_s": 1.0}},  # cut short: not comparable
    }
    assert bench.best_variant(ran, networks=2) == "tf32"
    assert bench.best_variant({}, networks=2) == "base"


def test_sweep_totals_and_best_k(bench: ModuleType) -> None:
    runs = [{"img_s": 1000.0, "warmup_s": 2.0}, {"img_s": 800.0, "warmup_s": 4.0}]
    assert bench.sweep_summary(runs, 2) == {"complete": True, "img_s_per_trial": 900.0, "img_s_total": 1800.0,
                                             "warmup_s": 3.0}  # fmt: skip
    assert bench.sweep_summary(runs[:1], 2) == {"complete": False, "reported": 1}
    per_k = {"1": bench.sweep_summary(runs[:1], 1), "2": bench.sweep_summary(runs, 2), "4": {"skipped": "time"}}
    assert bench.best_k(per_k) == 2 and bench.best_k({"1": {"skipped": "time"}}) is None


def test_trial_rates_count_from_start_up_to_the_last_finished_trial(bench: ModuleType) -> None:
    lines = [
        {"kind": "ready", "at": 100.0},
        {"kind": "trial", "status": "done", "start": 100.0, "end": 130.0},
        {"kind": "trial", "status": "failed", "start": 130.0, "end": 160.0},
    ]
    rates = bench.trial_rates(lines)
    assert rates["trials"] == 2 and rates["done"] == 1
    assert rates["per_hour"] == pytest.approx(3600 * 2 / 60) and rates["wall_s"] == 30.0
    assert bench.trial_rates(lines[:1])["per_hour"] is None  # cut before its first trial finished


def test_options_resolve_best_and_auto_and_refuse_unknown_names(bench: ModuleType) -> None:
    assert bench.parse_run("best:1", "tf32", 4) == ("tf32", 1)
    assert bench.parse_run("base:auto", "tf32", 8) == ("base", 8)
    assert bench.parse_run("best:auto", "base", None) == ("base", 4)  # no sweep: 4
    with pytest.raises(SystemExit, match="--trial-runs: got variant 'fast'"):
        bench.parse_run("fast:2", "base", None)
    assert bench.part_seconds("first-epoch=200,sweep=90.5") == {"first-epoch": 200.0, "sweep": 90.5}
    with pytest.raises(SystemExit, match="--part-s: got 'warmup=10'"):
        bench.part_seconds("warmup=10")
    with pytest.raises(SystemExit, match="--variants: got fast"):
        bench.settings_of(bench.parse_args(["--variants", "base,fast"]))


def test_nvidia_smi_lines_and_config_variants(bench: ModuleType) -> None:
    assert bench.parse_smi_line("87, 1234\n") == (87.0, 1234.0)
    assert bench.parse_smi_line("[N/A], 1234") is None and bench.parse_smi_line("") is None
    # what a search config (and a pool's spawned workers) can express, and what needs a torch flag
    assert {n for n, v in bench.VARIANTS.items() if v.in_config} == {"base", "tf32", "tf32-nchw", "bf16-nchw",
                                                                     "eager-load"}  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the exit without CUDA")
def test_without_cuda_it_exits_with_one_line() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench/bench_gpu.py")], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "measures a CUDA GPU and this machine has none" in result.stderr and "--smoke" in result.stderr


@pytest.mark.slow
def test_a_smoke_run_writes_every_part(tmp_path: Path) -> None:
    """Toy sizes on the CPU: each part runs its child processes and the JSON holds its figures."""
    out = tmp_path / "gpu.json"
    args = ["--smoke", "--out", str(out), "--seconds", "150", "--variants", "base,tf32", "--ks", "1,2", "--sweep-s",
            "1", "--warmup-steps", "2", "--trial-runs", "best:1", "--trial-s", "15", "--cpu-s", "10"]  # fmt: skip
    result = subprocess.run([sys.executable, str(ROOT / "bench/bench_gpu.py"), *args], capture_output=True,
                            text=True, timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    variants = figures["first_epoch"]["variants"]
    assert set(variants) == {"base", "tf32"} and all(v["summary"]["networks"] == 2 for v in variants.values())
    assert figures["first_epoch"]["best"] in ("base", "tf32")
    assert all(figures["sweep"]["per_k"][k]["complete"] for k in ("1", "2")) and figures["sweep"]["best_k"]
    assert figures["trials"][0]["per_hour"] > 0 and figures["cpu"][0]["per_hour"] > 0
    assert figures["derived"]["cpu_all_cores_per_hour_estimate"] > 0
    assert "variant      epoch1 s" in result.stdout and "best: " in result.stdout
