"""bench/bench_heritability.py: the gene distance on hand-edited genomes, parents followed back to rung 0, and the
heritability estimates on runs built so that the answer is known."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scripts import load_script

LARGE = (
    "stem_c16_hs-ds_k3_c16_re|ir_k3_s2_m64_c24_re-ir_k3_m72_c24_re|ir_k5_s2_m72_c40_se_re-ir_k5_m120_c40_se_re"
    "|ir_k3_s2_m240_c80_hs-ir_k3_m200_c80_hs|ir_k5_s2_m672_c160_se_hs-ir_k5_m960_c160_se_hs|head_c960_f1280_hs"
)
ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    return load_script("bench/bench_heritability.py", "bench_heritability")


def test_gene_distance_counts_each_changed_gene() -> None:
    bench = _bench()
    assert bench.gene_distance(LARGE, LARGE) == 0
    kernel = LARGE.replace("ir_k3_m72_c24_re", "ir_k5_m72_c24_re")
    assert bench.gene_distance(LARGE, kernel) == 1 and not bench.strides_moved(LARGE, kernel)
    two = LARGE.replace("ir_k3_m72_c24_re", "ir_k5_m80_c24_se_re")  # kernel, expansion, SE
    assert bench.gene_distance(LARGE, two) == 3
    deeper = LARGE.replace("-ir_k3_m72_c24_re", "-ir_k3_m72_c24_re-ir_k3_m72_c24_re")  # depth 2 -> 3: 1 + 4 genes
    assert bench.gene_distance(LARGE, deeper) == bench.gene_distance(deeper, LARGE) == 5
    moved = LARGE.replace("ir_k3_s2_m240_c80_hs", "ir_k3_m240_c80_hs")
    assert bench.gene_distance(LARGE, moved) == 1 and bench.strides_moved(LARGE, moved)
    head = LARGE.replace("head_c960_f1280_hs", "head_c960_f1024_re")
    assert bench.gene_distance(LARGE, head) == 2


def _row(tid: int, role: str, score: float | None, parents: tuple[int, ...] = (), genome: str = LARGE) -> dict:
    generation = 1 if role in ("mutation", "crossover") else 0
    return {"trial_id": tid, "role": role, "status": "done", "parent_ids": list(parents), "genome": genome,
            "final_genome": genome, "final_score": score, "generation": generation}  # fmt: skip


def test_a_promoted_parent_stands_for_its_rung0_score() -> None:
    """A child bred from a promoted trial is set against the rung-0 score of that lineage, not the longer rung's."""
    bench = _bench()
    kernel = LARGE.replace("ir_k3_m72_c24_re", "ir_k5_m72_c24_re")
    rows = [_row(0, "sample", 40.0), _row(1, "sample", 50.0), _row(2, "promote", 80.0, (1,)),
            _row(3, "mutation", 45.0, (2,), kernel), _row(4, "crossover", 41.0, (0, 2)),
            _row(5, "repeat", 70.0, (1,)), _row(6, "mutation", None, (0,))]  # fmt: skip
    pairs = bench.run_pairs(rows)
    assert [(p["child"], p["parents"], p["role"], p["distance"]) for p in pairs] == [
        (45.0, 50.0, "mutation", 1), (41.0, 45.0, "crossover", 0)]  # fmt: skip
    assert [p["pool"] for p in pairs] == [45.0, 45.0]  # generation 0's rung-0 networks: 40 and 50


def _runs(heritable: float, seed: int, n_runs: int = 12, children: int = 30) -> dict[str, list[dict[str, Any]]]:
    """Runs whose children score `heritable` x their parents' deviation plus noise, around a per-run level."""
    rng = random.Random(seed)
    runs = {}
    for r in range(n_runs):
        level = rng.uniform(30, 70)  # runs differ in level; centring removes it
        pairs = []
        for i in range(children):
            parent = rng.gauss(0, 3)
            child = level + heritable * (5 + parent) + rng.gauss(0, 0.5)  # parents 5 above the pool, on average
            pairs.append({"child": child, "parents": level + 5 + parent, "role": ("crossover", "mutation")[i % 2],
                          "distance": i % 15, "strides_moved": i % 3 == 0, "pool": level})  # fmt: skip
        runs[f"run{r}"] = pairs
    return runs


@pytest.mark.parametrize("heritable", [0.0, 0.4, 1.0])
def test_the_slope_recovers_a_known_heritability(heritable: float) -> None:
    bench = _bench()
    result = bench.analyse(_runs(heritable, seed=int(heritable * 10)), boot=200)
    low, high = result["children"]["slope_ci"]
    assert low <= heritable <= high and high - low < 0.2
    assert abs(result["children"]["slope"] - heritable) < 0.1
    if heritable == 1.0:
        assert result["children"]["spearman"] > 0.9
        assert all(e["slope"] == pytest.approx(1.0, abs=0.1) for e in result["by_role"].values())
    assert result["children"]["pairs"] == 12 * 30 and result["by_strides"]["yes"]["pairs"] == 12 * 10
    # the breeder's equation: parents 5 points above their pool (S), children heritable x that above it (R)
    selection = result["selection"]
    assert selection["differential"] == pytest.approx(5.0, abs=0.5)
    assert selection["differential_ci"][0] <= 5.0 <= selection["differential_ci"][1]
    assert selection["response"] == pytest.approx(5.0 * heritable, abs=0.5)


def test_main_reads_a_trials_csv_and_writes_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = _bench()
    csv = ROOT / "bench/results/fidelity/2026-12-05-rescore/rungs-s0.trials.csv"
    out = tmp_path / "h.json"
    assert bench.main([str(csv), "--boot", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    crossover = sum(1 for line in csv.read_text().splitlines() if ",crossover," in line)
    assert result["by_role"]["crossover"]["pairs"] <= crossover and result["children"]["pairs"] > 10
    assert result["runs"] == [str(csv)] and "child on parents' mean" in capsys.readouterr().out
    assert bench.main([str(csv), "--boot", "20", "--out", str(out), "--score", "tse"]) == 0
    tse = json.loads(out.read_text())
    assert tse["children"]["pairs"] == result["children"]["pairs"]  # the same children, another measure
    assert tse["selection"]["differential"] != result["selection"]["differential"]
    assert abs(tse["selection"]["differential"]) < 2  # in loss units, not points of top-1
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path / "nothing-*.csv")])


def test_a_run_folder_reads_as_its_trials_csv(reference_run: Path, tmp_path: Path) -> None:
    """The store path and the csv path give the same rows (the csv as menas.report.tables.write_csv writes it)."""
    from menas.report.tables import write_csv
    from menas.search.store import Store

    bench = _bench()
    with Store.open(reference_run, readonly=True) as store:
        csv = write_csv(store.trials(), tmp_path / "run.trials.csv")
    from_store, from_csv = bench.read_rows(reference_run), bench.read_rows(csv)
    assert from_store == from_csv and len(from_store) > 4
    assert any(r["role"] in bench.CHILD_ROLES for r in from_store)
    pairs = bench.run_pairs(from_store)
    assert pairs == bench.run_pairs(from_csv) and pairs
