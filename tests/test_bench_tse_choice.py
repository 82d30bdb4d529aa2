"""bench/bench_tse_choice.py on hand-made trial tables: the top rung's networks (promoted lineages at their highest
rung, probes left out), the choice by search-val and by TSE, and the paired retrain figures, with the retrains
faked (they are `menas retrain` runs of minutes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from scripts import load_script

COLUMNS = ("trial_id", "role", "parent_ids", "recipe", "status", "train_losses", "final_genome", "final_score",
           "final_macs")  # fmt: skip


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_tse_choice.py", "bench_tse_choice")


def trial(tid: int, val: float, losses: list[float], rung: int = 0, role: str = "sample", parent: int | None = None,
          status: str = "done", macs: int = 1000) -> dict:  # fmt: skip
    return {"trial_id": tid, "role": role, "parent_ids": json.dumps([] if parent is None else [parent]),
            "recipe": json.dumps({"rung": rung}), "status": status, "train_losses": json.dumps(losses),
            "final_genome": f"net{tid}", "final_score": val, "final_macs": macs}  # fmt: skip


def write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


SEARCH = [
    trial(0, 50.0, [2.0]), trial(1, 55.0, [1.5]), trial(2, 52.0, [1.9]),
    trial(3, 64.0, [1.2, 1.0], rung=1, role="promote", parent=1),  # search-val's choice (TSE -1.1)
    trial(4, 60.0, [0.9, 0.7], rung=1, role="promote", parent=2),  # TSE's choice (-0.8)
    trial(5, 70.0, [0.1], rung=1, role="repeat", parent=1),  # a probe: never chosen
    trial(6, 99.0, [0.1], rung=1, role="promote", parent=0, status="failed"),
]  # fmt: skip


def test_the_top_rung_and_the_two_choices(bench) -> None:
    nets = bench.top_rung([{k: str(v) for k, v in row.items()} for row in SEARCH])
    assert sorted(n["trial_id"] for n in nets) == [3, 4]
    by = bench.choices(nets)
    assert by["val"]["trial_id"] == 3 and by["tse"]["trial_id"] == 4
    assert by["tse"]["tse"] == pytest.approx(-0.8) and by["val"]["genome"] == "net3"


def test_the_pairs_are_retrained_and_compared_on_the_held_out_part(bench, tmp_path: Path, monkeypatch, capsys):
    runs = tmp_path / "fid"
    write(runs / "rungs-s0.trials.csv", SEARCH)
    write(runs / "rungs-s1.trials.csv", [trial(0, 50.0, [1.0], macs=3_500_000), trial(1, 60.0, [2.0], macs=1_000_000)])
    write(runs / "rungs-s2.trials.csv", [trial(0, 50.0, [1.0]), trial(1, 40.0, [2.0])])  # the same network
    write(runs / "rungs-s3.trials.csv", [trial(0, 50.0, []), trial(1, 40.0, [])])  # no losses recorded: left out
    held = {"net3": 80.0, "net4": 81.5, "net1": 79.0, "net0": 78.5}
    asked = []

    def fake_retrain(genome: str, out: Path, args) -> dict:
        asked.append((genome, out.relative_to(tmp_path / "out").as_posix()))
        record = {
            "kept": "ema",
            "holdout": {"ema": {"top1": held[genome]}},
            "test": {"ema": {"top1": held[genome] - 1}},
        }
        out.mkdir(parents=True)
        (out / bench.RESULT).write_text(json.dumps(record))
        return record

    monkeypatch.setattr(bench, "retrain", fake_retrain)
    assert bench.main([str(runs / "rungs-s*.trials.csv"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    assert sorted(asked) == [("net0", "fid/rungs-s1-tse"), ("net1", "fid/rungs-s1-val"),
                             ("net3", "fid/rungs-s0-val"), ("net4", "fid/rungs-s0-tse")]  # fmt: skip
    out = capsys.readouterr().out
    assert "left out (no training losses recorded): fid/rungs-s3" in out
    assert "3 searches; the choices differ in 2" in out
    # held-out differences +1.50 and -0.50: mean +0.50, half-width 12.706 x 1.4142 / sqrt(2) = 12.706
    assert (
        "holdout top-1, by TSE - by val, paired by search (n = 2): +0.50 [-12.21, +13.21]; TSE's ahead in 1 of 2" in out
    )
    # MACs differences 0 and +2.5M (s1: TSE's choice is trial 0): mean +1.25, half-width 12.706 x 1.7678 / sqrt(2)
    assert "final MACs (M), by TSE - by val, the same pairs: +1.25 [-14.63, +17.13]; larger in 1 of 2" in out
    figures = json.loads((tmp_path / "out" / "results.json").read_text())
    assert figures["paired"]["holdout"]["diffs"] == pytest.approx([1.5, -0.5])
    assert [r["same"] for r in figures["runs"]] == [False, False, True]
    # collected again from the folders alone: the same figures, nothing retrained
    monkeypatch.setattr(bench, "retrain", None)
    assert bench.main([str(runs / "rungs-s*.trials.csv"), "--out", str(tmp_path / "out"), "--collect-only"]) == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["paired"] == figures["paired"]
    with pytest.raises(SystemExit, match="RUN.trials.csv"):
        bench.main([str(tmp_path / "nothing*"), "--out", str(tmp_path / "out")])


def test_whole_searches_are_paired_by_seed_across_variants(bench, tmp_path: Path, monkeypatch, capsys) -> None:
    """--across rungs=rungs-tse: the val search's result by search-val against the tse search's result by TSE,
    matched by seed across folders; a seed only one variant has is left out; equal genomes are not retrained."""
    base = [trial(0, 50.0, []), trial(1, 55.0, []), trial(2, 61.0, [], rung=1, role="promote", parent=1)]
    write(tmp_path / "old" / "rungs-s0.trials.csv", base)  # searched by val before losses were recorded
    write(tmp_path / "old" / "rungs-s1.trials.csv", [trial(7, 50.0, [])])
    write(tmp_path / "old" / "rungs-s2.trials.csv", [trial(0, 50.0, [])])  # no rungs-tse seed 2
    write(tmp_path / "old" / "rungs-s3.trials.csv", [trial(0, 50.0, [])])
    write(tmp_path / "new" / "rungs-tse-s3.trials.csv", [trial(0, 50.0, [])])  # no losses: the tse search is named
    write(tmp_path / "new" / "rungs-tse-s0.trials.csv", SEARCH)  # its TSE choice: trial 4, net4
    write(tmp_path / "new" / "rungs-tse-s1.trials.csv", [{**trial(3, 40.0, [1.0]), "final_genome": "net7"}])
    held = {"net2": 80.0, "net4": 82.0}
    asked = []

    def fake_retrain(genome: str, out: Path, args) -> dict:
        asked.append((genome, out.relative_to(tmp_path / "out").as_posix()))
        return {"kept": "raw", "holdout": {"raw": {"top1": held[genome]}}, "test": {"raw": {"top1": held[genome]}}}

    monkeypatch.setattr(bench, "retrain", fake_retrain)
    globs = [str(tmp_path / "old" / "rungs-s*.trials.csv"), str(tmp_path / "new" / "*.trials.csv")]
    assert bench.main([*globs, "--across", "rungs=rungs-tse", "--out", str(tmp_path / "out")]) == 0
    assert sorted(asked) == [("net2", "old/rungs-s0-val"), ("net4", "new/rungs-tse-s0-tse")]
    out = capsys.readouterr().out
    assert "left out (no pair or no training losses): old/rungs-s2, new/rungs-tse-s3" in out
    assert "2 seeds paired; the choices differ in 1: s0: old/rungs-s0 / new/rungs-tse-s0" in out
    assert "| s1: old/rungs-s1 / new/rungs-tse-s1 | 7, 50.00, -, 0.00M | 3, 40.00, -1.000, 0.00M | same network" in out
    figures = json.loads((tmp_path / "out" / "results.json").read_text())
    assert figures["paired"]["holdout"]["diffs"] == pytest.approx([2.0])
    # over both seeds, s1 (the same network) counting 0: mean +1.00, half-width 12.706 x 1.4142 / sqrt(2)
    assert "holdout top-1 over all 2 seeds (the 1 ending on the same network count 0): +1.00 [-11.71, +13.71]" in out
    assert figures["paired"]["holdout_all_seeds"]["diffs"] == pytest.approx([2.0, 0.0])
    assert figures["runs"][0]["val_from"] == "old/rungs-s0" and figures["runs"][0]["tse_from"] == "new/rungs-tse-s0"
    for bad in ("rungs", "rungs=rungs", "=rungs-tse"):
        with pytest.raises(SystemExit, match="--across"):
            bench.main([*globs, "--across", bad, "--out", str(tmp_path / "out"), "--collect-only"])
