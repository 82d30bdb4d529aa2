"""bench/versus/references.py: MACs of timm models counted as menas counts them, the results.json schema and its
t-intervals, and a finished job folder read instead of trained again. bench/versus/carry.py: finished jobs and
searches saved without weights and restored into a fresh --out, where nothing finished is done again."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    """bench/versus/references.py, loaded as a module."""
    return load_script("bench/versus/references.py", "versus_references")


@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "mobilenetv3_large_100"])
def test_timm_macs_agree_with_menas_count_of_the_same_network(name: str) -> None:
    """FlopCounterMode / 2 on timm's model = count_cost of menas' genome of it (32 px, 1 channel, 10 classes)."""
    from menas.nn.builder import build_model
    from menas.space.cost import count_cost
    from menas.space.genome import REFERENCE_GENOMES, Genome

    bench = _bench()
    genome = Genome.from_str(REFERENCE_GENOMES[name])
    menas = count_cost(genome, 32, 1, 10)
    macs, params = bench.counted_cost(bench.timm_model(name, 10, 1), 32, 1)
    assert macs == pytest.approx(menas.macs, rel=0.03)
    assert params == pytest.approx(menas.params, rel=0.03)
    # the counter measures menas' own network the same way
    assert bench.counted_cost(build_model(genome, 10, 1), 32, 1) == pytest.approx((menas.macs, menas.params), rel=0.03)


def test_every_timm_reference_builds_for_one_channel_at_32_px() -> None:
    bench = _bench()
    for name, built_by in bench.REFERENCES.items():
        if built_by == "timm":
            macs, params = bench.counted_cost(bench.timm_model(name, 10, 1), 32, 1)
            assert 0.3e6 < macs < 10e6 and 0.3e6 < params < 5e6, name


def test_t_interval_on_a_hand_made_example() -> None:
    bench = _bench()
    mean, half = bench.t_interval([88.0, 90.0])  # s = sqrt(2), t_{0.975,1} = 12.706
    assert mean == 89.0 and half == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2))
    mean, half = bench.t_interval([1.0, 2.0, 3.0])  # s = 1, t_{0.975,2} = 4.303
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3))
    assert bench.t_interval([5.0]) == (5.0, None)


def _record(name: str, seed: int, epochs: int, top1: float, arm: str = "reference") -> dict[str, Any]:
    return {"arm": arm, "seed": seed, "budget_macs": None, "name": name, "macs": 2_000_000, "params": 1_500_000,
            "test_top1": top1, "chosen_by": "hand-designed", "built_by": "timm", "epochs": epochs,
            "holdout_top1": top1 - 1, "kept": "ema", "train_seconds_per_epoch": 100.0,
            "history": [{"epoch": 1}]}  # fmt: skip


def test_the_plateau_check_decides_on_held_out_top1_never_on_test() -> None:
    bench = _bench()
    records = [_record("mobilenetv3_small_100", 0, 10, 88.0), _record("mobilenetv3_small_100", 0, 15, 89.0)]
    records[1]["holdout_top1"] = records[0]["holdout_top1"] + 0.1  # test gains +1.0, held-out +0.1
    plateau = bench.plateau_summary(records, 10)
    assert plateau["mean_gain"] == pytest.approx(0.1) and plateau["mean_gain_below_limit"]
    assert plateau["mean_test_gain"] == pytest.approx(1.0)


def test_results_schema_plateau_pairs_and_kept_searched_arms() -> None:
    bench = _bench()
    records = [_record("mobilenetv3_small_100", 0, 10, 88.0), _record("mobilenetv3_small_100", 1, 10, 90.0),
               _record("mobilenetv3_small_100", 0, 15, 88.1), _record("mobilenetv3_small_100", 1, 15, 90.3),
               _record("lcnet_050", 1, 10, 85.0), _record("lcnet_050", 0, 10, 84.0)]  # fmt: skip
    searched = {"arm": "menas", "seed": 0, "budget_macs": 8_000_000, "name": "stem_...", "macs": 7e6, "params": 1e6,
                "test_top1": 91.0, "chosen_by": "search-val top-1"}  # fmt: skip
    previous = {"networks": [_record("lcnet_050", 0, 10, 1.0), searched], "generations": [{"arm": "menas"}],
                "meta": {"date": "old"}}  # fmt: skip
    results = bench.build_results(records, 10, {"date": "now", "command": "x"}, previous)
    assert set(results) >= {"networks", "generations", "meta", "plateau_check"}
    assert results["generations"] == [{"arm": "menas"}] and results["meta"]["date"] == "now"
    refs = [n for n in results["networks"] if n["arm"] == "reference"]
    # the 15-epoch runs are the plateau check's, not networks; the old reference entry is replaced; order by REFERENCES
    assert [(n["name"], n["seed"]) for n in refs] == [("mobilenetv3_small_100", 0), ("mobilenetv3_small_100", 1),
                                                      ("lcnet_050", 0), ("lcnet_050", 1)]  # fmt: skip
    assert results["networks"][-1] == searched
    for n in refs:
        assert {"arm", "seed", "budget_macs", "name", "macs", "params", "test_top1", "chosen_by"} <= set(n)
        assert n["budget_macs"] is None and "history" not in n
    plateau = results["plateau_check"]
    assert (plateau["epochs"], plateau["long_epochs"]) == (10, 15) and plateau["decided_on"] == "held-out top-1"
    # held-out gains decide (_record's held-out is test - 1, so the same gains); the test's are beside them
    assert [p["gain"] for p in plateau["pairs"]] == pytest.approx([0.1, 0.3])
    assert [p["test_gain"] for p in plateau["pairs"]] == pytest.approx([0.1, 0.3])
    assert plateau["mean_gain"] == pytest.approx(0.2) and plateau["mean_gain_below_limit"]
    assert plateau["ci95_half_width"] == pytest.approx(12.706 * math.sqrt(0.02) / math.sqrt(2))
    json.dumps(results)  # plain JSON
    text = bench.table(results)
    assert "| reference | lcnet_050 | timm | 1.50M | 2.00M | 84.00 (s0) / 85.00 (s1) | 84.50 ± 6.35 | 100 |" in text
    assert "| menas | stem_... |" in text and "Plateau check" in text


def test_plan_runs_the_plateau_pair_first_and_each_job_once() -> None:
    bench = _bench()
    jobs = bench.plan(["mobilenetv3_small_100", "lcnet_050"], [0, 1], 10, plateau=True)
    assert [j.folder for j in jobs] == [
        "reference-mobilenetv3_small_100-s0-e10", "reference-mobilenetv3_small_100-s0-e15",
        "reference-lcnet_050-s0-e10", "reference-mobilenetv3_small_100-s1-e10", "reference-lcnet_050-s1-e10",
        "reference-mobilenetv3_small_100-s1-e15"]  # fmt: skip
    assert jobs[0].built_by == "menas-genome" and jobs[0].genome and jobs[2].built_by == "timm"
    assert bench.plateau_epochs(1) == 2 and bench.plateau_epochs(5) == 8


def test_a_finished_job_is_read_not_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One 1-epoch job per builder on synthetic 8 px data, then the same command again trains nothing."""
    bench = _bench()
    argv = ["--out", str(tmp_path), "--epochs", "1", "--seeds", "0", "--networks", "mobilenetv3_small_100",
            "lcnet_050", "--data", "synthetic", "--set", "data.input_size=8"]  # fmt: skip
    assert bench.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(n["name"], n["built_by"]) for n in results["networks"]] == [
        ("mobilenetv3_small_100", "menas-genome"), ("lcnet_050", "timm")]  # fmt: skip
    for n in results["networks"]:
        assert 0 <= n["test_top1"] <= 100 and n["kept"] in ("raw", "ema") and n["epochs"] == 1
    assert results["meta"]["command"].startswith("python bench/versus/references.py")
    assert (tmp_path / "table.md").is_file()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "jobs").glob("*/versus.json")}

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished job was trained again")

    monkeypatch.setattr(bench, "_train_genome", no_training)
    monkeypatch.setattr(bench, "_train_timm", no_training)
    assert bench.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads((tmp_path / "results.json").read_text())["networks"] == results["networks"]
    assert bench.main([*argv, "--collect-only"]) == 0


# --------------------------------------------------------------------------------------------- carry.py

#: A search.py run as small as one gets: random search, 2 trials of 1 epoch at 16 px, one budget, one seed.
TINY_SEARCH = ["data.dataset=synthetic", "data.input_size=16", "data.search_train_fraction=0.1",
               "data.search_val_fraction=0.05", "strategy.population=2", "strategy.generations=1", "strategy.trials=2",
               "fidelity.rungs=[1]", "fidelity.repeats=0", "compute.images=100K", "executor.kind=local"]  # fmt: skip
#: The only file names a saved folder may hold (no weights, checkpoints, trial folders, locks or WAL files).
SMALL_FILES = {"versus.json", "job.json", "menas.sqlite", "config.yaml", "results.json"}


def _carry() -> ModuleType:
    """bench/versus/carry.py, loaded as a module."""
    return load_script("bench/versus/carry.py", "versus_carry")


def _no_training(monkeypatch: pytest.MonkeyPatch, refs: ModuleType, search: ModuleType | None = None) -> None:
    """Any training from here on fails the test: a reference or retrain job, or a search subprocess."""

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("finished work was done again")

    monkeypatch.setattr(refs, "_train_genome", fail)
    monkeypatch.setattr(refs, "_train_timm", fail)
    if search is not None:  # search.py runs `menas search` and `menas resume` through references.run_menas_cli
        monkeypatch.setattr(search.refs, "run_menas_cli", fail)


def _unfinished_leftovers(out: Path) -> None:
    """What a session cut short leaves: a job with a checkpoint but no result, a search store not finished."""
    from menas.search.store import Store

    job = out / "jobs" / "reference-lcnet_075-s0-e1"
    job.mkdir(parents=True)
    (job / "job.json").write_text("{}")
    (job / "retrain.ckpt").write_bytes(b"weights")
    Store.create(out / "runs" / "random-mt-b9-s0", {"seed": 0}).close()


def _save_and_restore(carry: ModuleType, first: Path, second: Path, progress: Path) -> None:
    """`carry.py save` from `first` (with an unfinished job and search beside the finished work), then checks the
    saved folder: finished work only and small files only (no weights, checkpoints, trial folders, locks, WAL
    files); saving again rewrites nothing; `carry.py restore` into `second`."""
    _unfinished_leftovers(first)
    assert carry.main(["save", "--out", str(first), "--progress", str(progress)]) == 0
    files = [p for p in progress.rglob("*") if p.is_file()]
    assert {p.name for p in files} <= SMALL_FILES, sorted(p.name for p in files)
    assert not any(p.name == "trials" for p in progress.rglob("*"))
    assert not (progress / "jobs" / "reference-lcnet_075-s0-e1").exists()
    assert not (progress / "runs" / "random-mt-b9-s0").exists()
    assert sum(p.stat().st_size for p in files) < 200_000
    assert carry.save(first, progress)["written"] == 0  # the same bytes: nothing rewritten, no git churn
    assert carry.main(["restore", "--out", str(second), "--progress", str(progress)]) == 0
    assert carry.restore(progress, second) == {"copied": 0, "kept": len(files)}  # never over a file there


def test_carry_restored_reference_jobs_are_not_trained_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished reference job saved from one --out and restored into a fresh one: references.py with the same
    arguments trains nothing and writes the same results."""
    bench, carry = _bench(), _carry()
    first, second, progress = tmp_path / "first", tmp_path / "second", tmp_path / "progress"
    argv = ["--epochs", "1", "--seeds", "0", "--networks", "lcnet_050", "--data", "synthetic",
            "--set", "data.input_size=8"]  # fmt: skip
    assert bench.main(["--out", str(first), *argv]) == 0
    before = json.loads((first / "results.json").read_text())["networks"]
    _save_and_restore(carry, first, second, progress)
    assert sorted(p.name for p in (progress / "jobs" / "reference-lcnet_050-s0-e1").iterdir()) == [
        "job.json", "versus.json"]  # fmt: skip
    _no_training(monkeypatch, bench)
    assert bench.main(["--out", str(second), *argv]) == 0
    assert json.loads((second / "results.json").read_text())["networks"] == before


@pytest.mark.slow
def test_carry_restored_searches_are_not_searched_or_retrained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished search (a `menas search` subprocess) and the retrain of its chosen network saved from one --out
    and restored into a fresh one: search.py with the same arguments searches and trains nothing, chooses the same
    network from the restored store alone (no trial weights there) and writes the same results."""
    import sqlite3

    search, carry = load_script("bench/versus/search.py", "versus_search"), _carry()
    first, second, progress = tmp_path / "first", tmp_path / "second", tmp_path / "progress"
    argv = ["--arms", "random-mt", "--seeds", "0", "--budgets", "2M", "--epochs", "1", "--data", "synthetic",
            "--set", "data.input_size=8"]  # fmt: skip
    for assignment in TINY_SEARCH:
        argv += ["--search-set", assignment]
    assert search.main(["--out", str(first), *argv]) == 0
    before = json.loads((first / "results.json").read_text())
    assert [n["arm"] for n in before["networks"]] == ["random-mt"]
    _save_and_restore(carry, first, second, progress)
    run = progress / "runs" / "random-mt-b2000000-s0"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "menas.sqlite"]
    with sqlite3.connect(f"file:{run / 'menas.sqlite'}?mode=ro", uri=True) as conn:  # one file: the WAL merged
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT status FROM run").fetchone()[0] == "finished"
    assert len(list((progress / "jobs").iterdir())) == 1  # the chosen network's retrain
    _no_training(monkeypatch, search.refs, search)
    assert search.main(["--out", str(second), *argv]) == 0
    after = json.loads((second / "results.json").read_text())
    assert after["networks"] == before["networks"] and after["generations"] == before["generations"]
    assert not (second / "runs" / "random-mt-b2000000-s0" / "trials").exists()


def test_a_finished_job_of_another_recipe_is_refused_not_read(tmp_path: Path) -> None:
    bench = _bench()
    job = bench.reference_job("lcnet_050", 0, 3)
    args = bench.parse_args(["--out", str(tmp_path), "--epochs", "3", "--set", "holdout_fraction=0.1"])
    folder = tmp_path / "jobs" / job.folder
    folder.mkdir(parents=True)
    done = {"arm": "reference", "test_top1": 80.0}
    (folder / bench.RESULT_FILE).write_text(json.dumps(done))
    theirs = bench.parse_args(["--out", str(tmp_path), "--epochs", "3"])  # the default 2% held-out part
    identity = {**bench.dataclasses.asdict(job), "recipe": bench._plain(bench.recipe_for(theirs, 0, 3))}
    (folder / bench.JOB_FILE).write_text(json.dumps(identity))
    with pytest.raises(SystemExit, match="other settings"):
        bench.run_job(job, args)
    assert bench.run_job(job, theirs) == done  # the same recipe: read, not trained


def test_a_job_another_process_is_training_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes never train one job: while one holds the job folder's lock, run_job raises FolderLocked naming
    it, trains nothing and writes nothing there."""
    from menas.files import FolderLock, FolderLocked

    bench = _bench()
    _no_training(monkeypatch, bench)
    job = bench.reference_job("lcnet_050", 0, 3)
    args = bench.parse_args(["--out", str(tmp_path), "--epochs", "3"])
    folder = tmp_path / "jobs" / job.folder
    folder.mkdir(parents=True)
    with (
        FolderLock(folder, "the other trainer", name=bench.LOCK_FILE),
        pytest.raises(FolderLocked, match="the other trainer"),
    ):
        bench.run_job(job, args)
    assert sorted(p.name for p in folder.iterdir()) == [bench.LOCK_FILE]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_what_carry_saves_is_not_ignored_by_git() -> None:
    """carry.py's progress folder is committed to reach a fresh machine: none of the files it writes may match a
    .gitignore pattern (a bare `runs/` pattern once hid every saved search store)."""
    carry = _carry()
    progress = carry.PROGRESS.relative_to(ROOT)
    paths = [progress / "results.json", progress / "jobs" / "x" / "versus.json", progress / "jobs" / "x" / "job.json",
             progress / "runs" / "menas-b1-s0" / "menas.sqlite", progress / "runs" / "menas-b1-s0" / "config.yaml",
             Path("bench/results/versus/progress-h10/runs/menas-b1-s0/menas.sqlite")]  # fmt: skip
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *map(str, paths)], cwd=ROOT, capture_output=True,
                             text=True)  # fmt: skip
    assert ignored.stdout.strip() == "", f"git ignores {ignored.stdout.split()}"
