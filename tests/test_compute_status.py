"""The compute budget in training-image equivalents, `menas status`'s time left under a budget, and `menas train`
refusing another seed before it writes anything."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from menas.cli.main import main
from menas.search.record import FORWARD_IMAGES_PER_TRAINING_IMAGE
from menas.search.store import Store
from menas.search.strategies import TrialSpec
from menas.search.summaries import ComputeUsed, estimate_time_left

INF = math.inf


def test_forward_only_images_count_a_third(tmp_path: Path) -> None:
    """Calibration and scoring images cost a forward pass, about a third of a training image: the budget counts
    them so, from the stored raw counts (`compute_images` keeps every image passed through)."""
    assert FORWARD_IMAGES_PER_TRAINING_IMAGE == 3
    with Store.create(tmp_path / "run", {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(i, "g", 0, "sample", (), True) for i in range(3)])
        store.finish_trial(0, trained_score=1.0, macs=1, params=1, train_images=300, calib_images=60, eval_images=90)
        store.finish_trial(1, trained_score=1.0, macs=1, params=1, train_images=300)  # no forward-only images recorded
        store.fail_trial(2, "boom", train_images=30, calib_images=30)
        assert store.trial(0).raw_images == 450
        assert [store.trial(i).budget_images for i in range(3)] == [300 + 50, 300, 30 + 10]  # what the sum counts
        assert store.compute_used().images == (300 + 50) + 300 + (30 + 10)


def _records(tmp_path: Path, finished: int, running: int, total: int) -> list:
    """`total` trials: `finished` done ones of 10 s each, one after the other, then `running` running ones."""
    with Store.create(tmp_path / "run", {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(i, "g", 0, "sample", (), True) for i in range(total)])
        for i in range(finished):
            store.finish_trial(i, trained_score=1.0, macs=1, params=1, train_images=1000)
        for i in range(finished, finished + running):
            store.mark_running(i)
        records = store.trials()
    times = {i: (100.0 + 10 * i, 110.0 + 10 * i) for i in range(finished)}
    return [dataclasses.replace(r, started_at=times[r.trial_id][0], finished_at=times[r.trial_id][1])
            if r.trial_id in times else r for r in records]  # fmt: skip


@pytest.mark.parametrize(
    ("limits", "running", "left", "bound"),
    [
        ((INF, INF), 0, 8, "trials"),  # no budget: every trial left
        ((INF, 50.0), 0, 3, "trial_s"),  # 30 trial-s left at 10 s a trial
        ((INF, 55.0), 0, 4, "trial_s"),  # the trial that crosses the budget still runs
        ((2500, INF), 0, 1, "images"),  # 500 images left at 1000 a trial
        ((2500, 45.0), 0, 1, "images"),  # the tighter limit wins
        ((1500, INF), 0, 0, "images"),  # used: no new trial starts
        ((1500, INF), 1, 1, "images"),  # used, but the running trial still finishes
        ((INF, 1000.0), 0, 8, "trials"),  # a budget larger than the trials: the trials end it
    ],
)
def test_time_left_honours_the_compute_budget(limits: tuple, running: int, left: int, bound: str,
                                              tmp_path: Path) -> None:  # fmt: skip
    """min(trials-left estimate, budget-left estimate): 2 of 10 trials done, 10 s and 1000 images each."""
    records = _records(tmp_path, 2, running, 10)
    estimate = estimate_time_left(records, 10, ComputeUsed(2000, 20.0, 2), limits)
    assert (estimate.trials_left, estimate.bound) == (left, bound)
    assert estimate.seconds == pytest.approx(left * 10.0)


def test_train_refuses_another_seed_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`menas train` over a folder trained with --seed 0, now with --seed 1: refused, run.json untouched."""
    genome = "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_re|ir_k3_s2_m32_c24_re-ir_k3_m48_c24_re|head_c64_f128_hs"
    data = ["--data", "synthetic", "--input-size", "16", "--batch-size", "64", "--threads", "1"]
    out = tmp_path / "trained"
    assert main(["train", genome, *data, "--seed", "0", "--epochs", "1", "--out", str(out)]) == 0
    before = (out / "run.json").read_bytes()
    (out / "run.json").write_bytes(before + b" ")  # any rewrite would drop the mark
    capsys.readouterr()
    assert main(["train", genome, *data, "--seed", "1", "--epochs", "1", "--out", str(out)]) == 2  # a UserError
    assert "train.seed was 0, now 1" in capsys.readouterr().err
    assert (out / "run.json").read_bytes() == before + b" "


def _bench_policy():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_policy.py"
    spec = importlib.util.spec_from_file_location("bench_policy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _policy_run(folder: Path, scores: dict[int, tuple[int, float, bool]]) -> None:
    """A finished-looking run: trial id -> (generation, final score, ticket kept), 1000 MACs (ticket 600)."""
    with Store.create(folder, {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(i, f"g{i}", gen, "sample", (), True) for i, (gen, _, _) in scores.items()])
        for i, (_, score, ticket) in scores.items():
            extra = (
                {"ticket": f"t{i}", "ticket_finetuned_score": score, "ticket_macs": 600, "ticket_params": 6}
                if ticket
                else {}
            )
            store.finish_trial(
                i, trained_score=score - 1.0 if ticket else score, macs=1000, params=10, train_epoch_s=[2.0], **extra
            )


def test_bench_policy_collects_generations_and_pairs(tmp_path: Path) -> None:
    """bench/bench_policy.py: per generation the final MACs, share replaced, best and median final score; the gain
    of the last generation's best over generation 0's; and the same candidates' scores paired across two runs."""
    bench = _bench_policy()
    _policy_run(tmp_path / "a", {0: (0, 50.0, False), 1: (0, 60.0, True), 2: (1, 55.0, True), 3: (1, 70.0, True)})
    _policy_run(tmp_path / "b", {0: (0, 52.0, False), 1: (0, 58.0, False)})
    result = bench.collect(tmp_path / "a")
    first, last = result["rows"]
    assert (first["macs"], first["replaced"], first["best"], first["median"]) == (800.0, 0.5, 60.0, 55.0)
    assert (last["macs"], last["replaced"], last["best"], last["epoch_s"]) == (600.0, 1.0, 70.0, 2.0)
    assert result["gain"] == 10.0 and result["best"] == 70.0
    # candidate scores (before any ticket): trial 1 scored 59 in a (its ticket 60), 58 in b
    assert bench.paired_candidates(tmp_path / "a", tmp_path / "b") == [(0, 50.0, 52.0), (1, 59.0, 58.0)]


def test_bench_policy_size_drift_splits_the_change_into_tickets_selection_and_breeding(tmp_path: Path) -> None:
    """Generation 0: g0 (1000 MACs) replaced by its ticket t0 (800), g1 (1000) kept; the pool's mean final MACs is
    900. Generation 1: g2 (880 MACs) bred from t0 alone: selection 800 / 900, breeding 880 / 800."""
    bench = _bench_policy()
    with Store.create(tmp_path / "run", {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(0, "g0", 0, "sample", (), True), TrialSpec(1, "g1", 0, "sample", (), True),
                          TrialSpec(2, "g2", 1, "mutation", ("t0",), True)])  # fmt: skip
        store.finish_trial(
            0,
            trained_score=58.0,
            macs=1000,
            params=10,
            ticket="t0",
            ticket_finetuned_score=60.0,
            ticket_macs=800,
            ticket_params=8,
        )
        store.finish_trial(1, trained_score=50.0, macs=1000, params=10)
        store.finish_trial(2, trained_score=65.0, macs=880, params=9)
        drift = bench.size_drift(store.trials())
    assert drift["children"] == 1
    assert drift["tickets"] == pytest.approx((0.8 + 1.0 + 1.0) / 3)
    assert drift["selection"] == pytest.approx(800 / 900)
    assert drift["breeding"] == pytest.approx(880 / 800)
    assert drift["size_rank"] == pytest.approx(-0.5)  # final MACs 800, 1000, 880 against scores 60, 50, 65
    with Store.create(tmp_path / "unbred", {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(0, "g0", 0, "sample", (), True)])
        store.finish_trial(0, trained_score=58.0, macs=1000, params=10)
        assert bench.size_drift(store.trials()) is None  # no bred children: nothing to split
