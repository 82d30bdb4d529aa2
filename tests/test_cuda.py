"""The CUDA paths end to end: a trial (bf16 autocast, channels_last, lottery, fine-tune), a search in a pool
worker that owns the GPU, several trials sharing one GPU (`executor.trials_per_gpu`: the same scores as one at a
time; one out of memory is failed while its neighbours finish), a retrain with the paper's data path augmented on
the GPU, distillation, evaluation, export and `menas.load`. Skipped without a GPU (CI has none); run on a lent GPU
machine with `pytest tests/test_cuda.py` (BENCHMARKS.md "GPU checks")."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import menas
from menas.cli.main import main
from menas.config import DataConfig, ExecutorConfig, LotteryConfig, TrainConfig
from menas.search.engine import Search
from menas.search.executors import PoolExecutor, make_executor
from menas.search.record import TrialRecord
from menas.search.store import Store
from menas.search.trial import TrialJob, run_trial
from menas.train.checkpoint import load_weights

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

GENOME = "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_re|ir_k3_s2_m32_c24_se_re-ir_k5_m48_c24_hs|head_c64_f128_hs"
SYNTH = ["--data", "synthetic", "--set", "data.input_size=16", "--device", "cuda"]
#: three small networks of different shapes, for the trials that share one GPU
SHARED_GENOMES = (
    GENOME,
    "stem_c8_hs-ds_k3_c8_re|ir_k5_s2_m24_c16_re|ir_k3_s2_m48_c32_hs-ir_k3_m64_c32_se_hs|head_c96_f128_hs",
    "stem_c16_hs-ds_k3_c16_re|ir_k3_s2_m32_c16_re-ir_k7_m48_c16_re|ir_k5_s2_m64_c40_se_hs|head_c80_f128_hs",
)
#: how far a trial's scores (percent of 1,000 search-val images) may move when it shares the GPU: its kernels are
#: the same, but cuDNN may pick another algorithm with less free memory, and bf16 sums in another order drift
SCORE_TOLERANCE = 2.0


def test_a_trial_trains_finds_a_ticket_and_fine_tunes_on_cuda(tmp_path: Path) -> None:
    data = DataConfig(
        dataset="synthetic", input_size=16, search_train_fraction=0.7, search_val_fraction=0.2, batch_size=32
    )
    lottery = LotteryConfig(proposals=4, score_images=128, rescore_top=2, tolerance=100.0)
    job = TrialJob(0, GENOME, data, TrainConfig(epochs=2), lottery, 1, str(tmp_path / "t"), device="cuda")
    result = run_trial(job)
    assert result.status == "done", result.error
    assert result.ticket is not None and result.ticket_macs < result.macs  # tolerance 100: a smaller ticket is kept
    # synthetic classes are separable: above 10% chance
    assert result.trained_score > 20.0 and result.final_score > 20.0
    model = menas.load(tmp_path / "t")  # weights saved from the GPU load on the CPU
    assert next(model.parameters()).device.type == "cpu" and model.genome.to_str() == result.ticket
    # `evaluate --split val` on the GPU reproduces the recorded final score (same data, same weights)
    assert main(["evaluate", str(tmp_path / "t"), "--split", "val", "--device", "cuda"]) == 0
    record = json.loads((tmp_path / "t" / "evaluate-val.json").read_text())
    assert record["top1"] == pytest.approx(result.final_score, abs=0.5)


def test_a_pool_search_runs_one_trial_per_gpu(tmp_path: Path) -> None:
    from test_search import tiny_config

    cfg = tiny_config(device="cuda", executor=ExecutorConfig(kind="pool"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=None))
    summary = Search(cfg, tmp_path / "run").run()
    assert summary.trials_done == 6
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.history()
        assert all(t.status == "done" for t in trials)
        assert len({t.worker for t in trials}) == 1  # one GPU: one worker process, not the search's own
        assert trials[0].worker.split(":")[-1] != str(__import__("os").getpid())


def test_retrain_with_the_paper_data_path_distils_evaluates_and_exports_on_cuda(tmp_path: Path) -> None:
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    paper_data = [
        "--set",
        "data.randaugment=rand-m9-mstd0.5",
        "--set",
        "data.random_erasing=0.2",
        "--set",
        "data.batch_size=32",
    ]
    assert main(["retrain", GENOME, "--epochs", "2", "--out", str(teacher), *paper_data, *SYNTH]) == 0
    record = json.loads((teacher / "retrain.json").read_text())
    assert record["device"].startswith("cuda") and record["config"]["data"]["randaugment"] == "rand-m9-mstd0.5"
    assert record["test"]["raw"]["top1"] > 20.0 and record["test"]["ema"] is not None
    args = ["retrain", GENOME, "--epochs", "1", "--out", str(student), "--teacher", str(teacher), *SYNTH]
    assert main(args) == 0
    assert json.loads((student / "retrain.json").read_text())["teacher"] is not None
    assert main(["evaluate", str(student), "--device", "cuda"]) == 0
    export = tmp_path / "export"
    assert main(["export", str(student), "--out", str(export), "--format", "safetensors,torchscript"]) == 0
    model = menas.load(export)
    x = torch.randn(3, 1, 16, 16)
    scripted = torch.jit.load(str(export / "model.torchscript.pt"))
    torch.testing.assert_close(scripted(x), model(x), atol=1e-4, rtol=1e-4)
    on_gpu = load_weights(student / "model.safetensors").cuda().eval()
    with torch.inference_mode():
        torch.testing.assert_close(on_gpu(x.cuda()).cpu(), model(x), atol=1e-3, rtol=1e-3)


def test_an_inheriting_pool_search_maps_gpu_trained_weights_into_children_on_cuda(tmp_path: Path) -> None:
    """Individual weight sharing (issue 12) on the GPU: parents' weights saved from CUDA are read back in the pool
    worker that owns the GPU, mapped into every bred child (no fallback), recalibrated and trained fewer epochs."""
    from test_search_inherit import FULL_EPOCHS, INHERIT_EPOCHS, inherit_config

    cfg = inherit_config(device="cuda", executor=ExecutorConfig(kind="pool"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=None))
    assert Search(cfg, tmp_path / "run").run().trials_done == 6
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.history()
        assert store.events("inherit_fallback") == []
    bred = [t for t in trials if t.role in ("crossover", "mutation")]
    assert bred and all(t.status == "done" for t in trials)
    for t in bred:
        counts = t.inherited["counts"]
        assert t.inherited["fallback"] is None and counts["copied"] + counts["sliced"] + counts["padded"] > 0
        assert t.inherited["epochs_saved"] == FULL_EPOCHS - INHERIT_EPOCHS and t.epochs == INHERIT_EPOCHS + 1


def _shared_jobs(folder: Path) -> list[TrialJob]:
    """One trial per `SHARED_GENOMES` network: 16 px synthetic data, 2 epochs, a 2-proposal lottery, 1 fine-tune
    epoch, seeded by its trial id."""
    data = DataConfig(
        dataset="synthetic", input_size=16, search_train_fraction=0.7, search_val_fraction=0.2, batch_size=32
    )
    lottery = LotteryConfig(proposals=2, score_images=128, rescore_top=1, tolerance=100.0)
    return [TrialJob(k, genome, data, TrainConfig(epochs=2), lottery, 1, str(folder / f"{k:05d}"), seed=k,
                     device="cuda") for k, genome in enumerate(SHARED_GENOMES)]  # fmt: skip


def _run_all(pool: Any, jobs: list[TrialJob]) -> dict[int, Any]:
    """Runs the jobs on an executor as the search loop does (submit while slots are free, then wait)."""
    queue, finished = list(jobs), {}
    for _ in range(2 * len(jobs) + 1):
        while pool.free > 0 and queue:
            job = queue.pop(0)
            pool.submit(SimpleNamespace(trial_id=job.trial_id), job)
        if pool.busy == 0:
            break
        finished |= {spec.trial_id: result for spec, result in pool.wait()}
    pool.close()
    return finished


def test_k_trials_sharing_one_gpu_score_as_one_at_a_time(tmp_path: Path) -> None:
    """`executor.trials_per_gpu: 3`: the pool starts 3 workers per GPU and the three trials run side by side on
    it; each scores as when the trials run one at a time (one worker per GPU), within `SCORE_TOLERANCE`."""
    gpus = torch.cuda.device_count()
    alone = make_executor(ExecutorConfig(kind="pool", trials_per_gpu=1), "cuda", lambda spec, job: None)
    shared = make_executor(ExecutorConfig(kind="pool", trials_per_gpu=3), "cuda", lambda spec, job: None)
    assert (alone.workers, shared.workers) == (gpus, 3 * gpus)
    one = _run_all(alone, _shared_jobs(tmp_path / "alone"))
    three = _run_all(shared, _shared_jobs(tmp_path / "shared"))
    records = [*one.values(), *three.values()]
    assert all(isinstance(r, TrialRecord) and r.status == "done" for r in records), records
    assert len({r.worker for r in three.values()}) > 1  # side by side, in different worker processes
    for k in range(len(SHARED_GENOMES)):
        a, b = one[k], three[k]
        assert a.trained_score > 20.0  # learned: above 10% chance
        assert b.trained_score == pytest.approx(a.trained_score, abs=SCORE_TOLERANCE), k
        assert b.final_score == pytest.approx(a.final_score, abs=SCORE_TOLERANCE), k


def test_a_trial_out_of_memory_on_a_shared_gpu_is_failed_and_its_neighbours_finish(tmp_path: Path) -> None:
    """Three workers on one GPU; trial 1 takes 90% of the free memory, then asks for 1 PiB and runs out: it is a
    failed record (no exception), its worker hands the memory back, and trials 0 and 2 beside it finish."""
    from test_executors import OOM_TRIAL, run_or_oom

    results = _run_all(PoolExecutor(3, threads=2, gpus=1, run=run_or_oom), _shared_jobs(tmp_path))
    failed = results.pop(OOM_TRIAL)
    assert isinstance(failed, TrialRecord) and failed.status == "failed", failed
    assert failed.error.startswith("out of memory: CUDA out of memory"), failed.error
    reserved = int(re.search(r"\[reserved after: (\d+)\]", failed.error).group(1))
    assert reserved < 1 << 30, f"{reserved / 2**30:.1f} GiB still reserved by the failed trial's worker"
    assert all(r.status == "done" and r.trained_score > 20.0 for r in results.values()), results
