"""Trials in a pool of worker processes: same results as in-process, bounded workers/threads, K trials per GPU
placed round-robin (with a faked GPU count: no CUDA needed), a trial out of memory recorded failed while its
neighbours finish, clear errors."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import menas.search.engine as engine
from menas.config import ExecutorConfig, SearchConfig, StrategyConfig, TrainConfig, from_dict
from menas.search.engine import Search, SearchStopped
from menas.search.executors import (
    PoolExecutor,
    WorkerLost,
    _init_worker,
    gpu_share,
    log_gpu_sharing,
    make_executor,
    pool_shape,
    worker_gpu,
)
from menas.search.store import Store
from test_search import results, tiny_config

#: The trial `run_or_oom` makes run out of memory (a child of generation 0 of `tiny_config`, which has 3).
OOM_TRIAL = 1


def test_importing_executors_does_not_import_torch() -> None:
    code = "import sys, menas.search.executors; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_pool_shape_never_oversubscribes() -> None:
    assert pool_shape(ExecutorConfig(kind="pool"), gpus=0, cores=16) == (16, 1)
    assert pool_shape(ExecutorConfig(kind="pool", threads=4), gpus=0, cores=16) == (4, 4)
    assert pool_shape(ExecutorConfig(kind="pool", workers=3), gpus=0, cores=16) == (3, 5)
    assert pool_shape(ExecutorConfig(kind="pool"), gpus=8, cores=64) == (8, 8)  # one worker per GPU
    assert pool_shape(ExecutorConfig(kind="pool", workers=4), gpus=0, cores=2) == (4, 1)  # at least one thread


def test_pool_shape_puts_trials_per_gpu_workers_on_each_gpu() -> None:
    assert pool_shape(ExecutorConfig(kind="pool", trials_per_gpu=3), gpus=2, cores=16) == (6, 2)
    assert pool_shape(ExecutorConfig(kind="pool", trials_per_gpu=4), gpus=1, cores=16) == (4, 4)
    assert pool_shape(ExecutorConfig(kind="pool", trials_per_gpu=8), gpus=1, cores=4) == (8, 1)  # at least one thread
    assert pool_shape(ExecutorConfig(kind="pool", trials_per_gpu=3), gpus=0, cores=16) == (16, 1)  # no GPU: ignored
    assert pool_shape(ExecutorConfig(kind="pool", workers=5, trials_per_gpu=3), gpus=2, cores=10) == (5, 2)


def test_workers_are_placed_round_robin_over_the_visible_gpus() -> None:
    """Worker i gets GPU i % gpus: the first workers the pool starts spread over every GPU, then each GPU gets its
    next one; with the search's own CUDA_VISIBLE_DEVICES, indices are into that list."""
    assert [worker_gpu(slot, gpus=2) for slot in range(6)] == ["0", "1", "0", "1", "0", "1"]
    assert [worker_gpu(slot, gpus=2, visible="3, 5") for slot in range(4)] == ["3", "5", "3", "5"]
    assert [worker_gpu(slot, gpus=1, visible="GPU-1a2b") for slot in range(3)] == ["GPU-1a2b"] * 3
    placed = [worker_gpu(slot, gpus=3) for slot in range(3 * 4)]
    assert all(placed.count(str(gpu)) == 4 for gpu in range(3))  # K = 4 on each of 3 GPUs


def test_ray_asks_for_a_share_that_fits_k_trials_on_one_gpu() -> None:
    assert gpu_share(1) == 1.0 and gpu_share(2) == 0.5 and gpu_share(3) == 0.3333
    for k in range(1, 65):
        assert k * gpu_share(k) <= 1.0 and gpu_share(k) > 1 / k - 1e-4


def test_trials_per_gpu_errors_name_the_field() -> None:
    for value in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"executor.trials_per_gpu: got .*, allowed: integers >= 1"):
            ExecutorConfig(kind="pool", trials_per_gpu=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="executor.trials_per_gpu"):
        from_dict(SearchConfig, {"executor": {"kind": "pool", "trials_per_gpu": 0}}, "config")
    assert from_dict(SearchConfig, {"executor": {"trials_per_gpu": 4}}, "config").executor.trials_per_gpu == 4


def test_the_mps_daemon_is_found_by_its_control_pipe(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)}
    caplog.set_level(logging.INFO, logger="menas.search.executors")
    assert log_gpu_sharing(4, env) is False  # no pipe: the trials time-slice the GPU, and the log says so
    assert "4 trials per GPU without CUDA MPS" in caplog.text and "nvidia-cuda-mps-control -d" in caplog.text
    (tmp_path / "control").write_text("")  # a plain file is not the daemon's FIFO
    assert log_gpu_sharing(1, env) is False
    (tmp_path / "control").unlink()
    os.mkfifo(tmp_path / "control")
    caplog.clear()
    assert log_gpu_sharing(1, env) is True and caplog.text == ""  # one trial per GPU: nothing to say
    assert log_gpu_sharing(2, env) is True and f"2 trials per GPU under CUDA MPS (control daemon at {tmp_path}" in (
        caplog.text
    )


@dataclasses.dataclass(frozen=True)
class Probe:
    """A job for `report_gpu`: what the pool reads of a job (its train config, for the thread count)."""

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def report_gpu(job: Probe) -> tuple[int, str]:
    """A pool worker's run for `test_pool_pins_k_workers_to_each_gpu`: this process and the GPU it was given."""
    time.sleep(1.0)  # keep the worker busy, so the pool starts the next one for the next job
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_a_worker_pins_itself_to_its_slots_gpu_before_torch_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a pool worker runs first, here in this process: slot 3 of a pool on the two GPUs "4,6" the search sees
    is pinned to GPU "6" (3 % 2 = 1), with the pool's thread count."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # restored after the test, as CUDA_VISIBLE_DEVICES
    slots: queue.Queue[int] = queue.Queue()
    slots.put(3)
    _init_worker(slots, 1, 2)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6" and os.environ["OMP_NUM_THREADS"] == "1"


@pytest.mark.slow
def test_pool_pins_k_workers_to_each_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two faked GPUs (the search sees "4,6"), two trials per GPU: every worker process is pinned to one GPU and
    each GPU gets at most two of them. No CUDA is needed: the workers only read their CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    workers, _ = pool_shape(ExecutorConfig(kind="pool", trials_per_gpu=2), gpus=2, cores=4)
    pool = PoolExecutor(workers, threads=1, gpus=2, run=report_gpu)
    try:
        for trial_id in range(workers):
            pool.submit(SimpleNamespace(trial_id=trial_id), Probe())
        seen: list[tuple[int, str]] = []
        for _ in range(workers):
            if pool.busy:
                seen += [result for _, result in pool.wait()]
    finally:
        pool.close()
    assert len(seen) == workers == 4
    gpu_of: dict[int, set[str]] = {}
    for pid, gpu in seen:
        gpu_of.setdefault(pid, set()).add(gpu)
    assert all(len(gpus) == 1 for gpus in gpu_of.values()), gpu_of  # a worker keeps its GPU
    per_gpu = [sum(gpus == {g} for gpus in gpu_of.values()) for g in ("4", "6")]
    assert set().union(*gpu_of.values()) <= {"4", "6"} and max(per_gpu) <= 2, gpu_of


@pytest.mark.parametrize(("executor_threads", "train_threads", "expected"), [(None, 1, 1), (3, None, 3), (2, 2, 2)])
def test_pool_takes_train_threads_when_executor_threads_unset(
    executor_threads: int | None, train_threads: int | None, expected: int
) -> None:
    """A config that says `train.threads: 1` with a pool gets 1 thread per trial, not cores // workers (on a
    16-core host, 2 workers got 8 threads each and searches side by side oversubscribed the cores)."""
    pool = make_executor(ExecutorConfig(kind="pool", workers=2, threads=executor_threads), "cpu",
                         lambda spec, job: None, train_threads)  # fmt: skip
    try:
        assert isinstance(pool, PoolExecutor)
        assert (pool.workers, pool.threads) == (2, expected)
    finally:
        pool.close()


def test_conflicting_thread_counts_are_a_clear_error() -> None:
    raw = {"executor": {"kind": "pool", "threads": 4}, "train": {"threads": 1}}
    with pytest.raises(ValueError, match="train.threads: got 1 with executor.threads 4, allowed: the same value"):
        from_dict(SearchConfig, raw, "config")
    local = from_dict(SearchConfig, {"executor": {"kind": "local", "threads": 4}, "train": {"threads": 1}}, "config")
    assert local.train.threads == 1  # the local executor runs trials with train.threads


def test_executor_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="executor.kind: got 'slurm', allowed: 'local', 'pool', 'ray'"):
        from_dict(SearchConfig, {"executor": {"kind": "slurm"}})
    with pytest.raises(ValueError, match="executor.workers"):
        ExecutorConfig(kind="pool", workers=0)


def test_pool_search_matches_the_in_process_search(tmp_path: Path, reference_run: Path) -> None:
    """Two single-thread workers run the same trials as the in-process search with one thread: the strategy's
    decisions do not depend on the order results arrive in, and each trial is seeded on its own."""
    cfg = tiny_config(executor=ExecutorConfig(kind="pool", workers=2, threads=1))
    assert dataclasses.replace(cfg, executor=ExecutorConfig()) == tiny_config()  # tiny_config trains with 1 thread
    seen = []
    summary = Search(cfg, tmp_path / "run").run(on_result=lambda spec, result: seen.append(spec.trial_id))
    assert summary.trials_done == 6 and sorted(seen) == list(range(6))
    assert results(tmp_path / "run") == results(reference_run)
    with Store.open(tmp_path / "run", readonly=True) as store:
        assert store.run_info().status == "finished"
        trials = store.history()
    # two trials were in flight at once (the second submitted before the first finished); in-process, never
    assert trials[1].started_at < trials[0].finished_at
    with Store.open(reference_run, readonly=True) as store:
        local = store.history()
    assert all(b.started_at >= a.finished_at for a, b in itertools.pairwise(local))


@pytest.mark.parametrize("kind", ["pool", pytest.param("ray", marks=pytest.mark.slow)])
def test_workers_record_a_failing_trial_and_go_on(tmp_path: Path, kind: str) -> None:
    """An exception inside a worker comes back as a failed trial with its own type and message (here: an
    impossible dataset root makes every worker's data loading fail)."""
    if kind == "ray":
        pytest.importorskip("ray")
    summary = _broken_pool_search(tmp_path, population=2, max_failure_share=1.0, kind=kind).run()
    assert summary.trials_failed == 2 and summary.trials_done == 0
    with Store.open(tmp_path / "run", readonly=True) as store:
        errors = [t.error for t in store.history()]
        assert all("UserError" in e and "data.root" in e for e in errors), errors
        assert len(store.events("trial_exception")) == 2


def _broken_pool_search(tmp_path: Path, population: int, max_failure_share: float, kind: str = "pool") -> Search:
    """A search on 2 workers whose every trial fails in the worker (its data root does not exist)."""
    cfg = tiny_config(
        executor=ExecutorConfig(kind=kind, workers=2, threads=1),
        strategy=StrategyConfig(population=population, generations=1, parents=2),
        max_failure_share=max_failure_share,
    )
    search = Search(cfg, tmp_path / "run")
    make_job = search.job

    def broken_job(spec):
        real = make_job(spec)
        data = dataclasses.replace(real.data, dataset="fashion-mnist", root="/nonexistent/menas-test")
        return dataclasses.replace(real, data=data)

    search.job = broken_job
    return search


def test_pool_stops_on_too_many_failures_and_stops_its_workers(tmp_path: Path) -> None:
    with pytest.raises(SearchStopped, match="trials failed"):
        _broken_pool_search(tmp_path, population=8, max_failure_share=0.5).run()
    with Store.open(tmp_path / "run", readonly=True) as store:
        assert store.run_info().status == "failed"
        statuses = [t.status for t in store.history()]
    assert statuses.count("failed") >= 5 and "done" not in statuses


def test_a_dead_worker_stops_with_resume_advice(tmp_path: Path) -> None:
    search = Search(tiny_config(), tmp_path / "run")
    (spec,) = search.strategy.ask(1)
    pool = PoolExecutor(workers=1, threads=1)
    try:
        pool.submit(spec, search.job(spec))
        processes = list(pool._pool._processes.values())  # spawned by submit()
        assert processes
        for process in processes:  # as the OOM killer would
            process.kill()
        with pytest.raises(WorkerLost, match=r"a worker process died while running trial 0 .*menas resume"):
            pool.wait()
    finally:
        pool.close(abort=True)


def run_or_oom(job: Any) -> Any:
    """A pool worker's run: trial `OOM_TRIAL` runs out of memory in its training phase, the others run as usual.

    On CUDA it first takes 90% of the free GPU memory (pressing on its neighbours), then asks for 1 PiB: a real
    `torch.cuda.OutOfMemoryError` from the allocator; its record's error then ends with the memory this worker
    still reserves, which `run_trial` must have handed back. Without CUDA it raises the same exception type."""
    import torch

    from menas.search import trial

    if job.trial_id != OOM_TRIAL:
        return trial.run_trial(job)

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        if torch.cuda.is_available():
            hog = torch.empty(int(torch.cuda.mem_get_info()[0] * 0.9), dtype=torch.uint8, device="cuda")
            torch.empty(1 << 50, dtype=torch.uint8, device=hog.device)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 PiB (simulated)")

    real = trial._train_candidate
    trial._train_candidate = out_of_memory
    try:
        record = trial.run_trial(job)
    finally:
        trial._train_candidate = real
    if torch.cuda.is_available():
        record = dataclasses.replace(record, error=f"{record.error} [reserved after: {torch.cuda.memory_reserved()}]")
    return record


def oom_pool(workers: int, gpus: int = 0) -> Any:
    """`engine.make_executor` for a search whose pool runs `run_or_oom` in `workers` one-thread workers."""

    def make(cfg: ExecutorConfig, device: str, run: Any, train_threads: int | None = None) -> PoolExecutor:
        return PoolExecutor(workers, threads=1, gpus=gpus, run=run_or_oom)

    return make


def test_a_trial_out_of_memory_in_a_worker_is_failed_and_its_neighbours_finish(
    tmp_path: Path, reference_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trial 1 runs out of memory in a pool worker while trials 0 and 2 run beside it: it is recorded as a failed
    trial (one attempt, the reason in its row, no exception), and its neighbours' results equal the in-process
    search's. (There is no retry: a failed trial stays failed, as the search's `max_failure_share` counts it.)"""
    monkeypatch.setattr(engine, "make_executor", oom_pool(workers=2))
    cfg = tiny_config(executor=ExecutorConfig(kind="pool", workers=2, threads=1))
    summary = Search(cfg, tmp_path / "run").run()
    assert summary.trials_failed == 1 and summary.trials_done == 5
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = {t.trial_id: t for t in store.history()}
        assert store.events("trial_exception") == []  # run_trial made it a failed record: nothing was raised
    failed = trials[OOM_TRIAL]
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error.startswith("out of memory: CUDA out of memory. Tried to allocate 1.00 PiB"), failed.error
    reference = {row[0]: row for row in results(reference_run)}
    for row in results(tmp_path / "run"):
        if row[0] in (0, 2):  # generation 0's other children, trained beside it
            assert row == reference[row[0]]


@pytest.mark.slow
def test_pool_interrupted_then_resumed_equals_the_uninterrupted_search(tmp_path: Path, reference_run: Path) -> None:
    """Ctrl-C while a worker is mid-trial: the workers are stopped, the trial stays "running" in the store, and
    `resume` re-runs it; the finished search equals the in-process one at the same thread count."""
    cfg = tiny_config(executor=ExecutorConfig(kind="pool", workers=2, threads=1))

    def interrupt(spec, result) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Search(cfg, tmp_path / "run").run(on_result=interrupt)
    with Store.open(tmp_path / "run", readonly=True) as store:
        assert store.run_info().status == "interrupted"
        statuses = [t.status for t in store.history()]
    assert statuses.count("done") == 1 and "running" in statuses  # the other worker's trial was cut short
    Search(cfg, tmp_path / "run", resume=True).run()
    assert results(tmp_path / "run") == results(reference_run)


@pytest.mark.slow
def test_ray_search_matches_the_in_process_search(tmp_path: Path, reference_run: Path) -> None:
    """Trials as tasks of a local Ray instance (2 CPUs, 1 thread each): the same records as in-process."""
    pytest.importorskip("ray")
    cfg = tiny_config(executor=ExecutorConfig(kind="ray", workers=2, threads=1))
    summary = Search(cfg, tmp_path / "run").run()
    assert summary.trials_done == 6
    assert results(tmp_path / "run") == results(reference_run)
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.history()
    assert trials[1].started_at < trials[0].finished_at  # two tasks in flight at once


def test_cuda_index_with_workers_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tiny_config(executor=ExecutorConfig(kind="pool", workers=2), device="cuda:1")
    with pytest.raises(ValueError, match="device: got 'cuda:1' with executor.kind pool"):
        make_executor(cfg.executor, cfg.device, lambda spec, job: None)
