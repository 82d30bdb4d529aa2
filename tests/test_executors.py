"""Trials in a pool of worker processes: same results as in-process, bounded workers/threads, clear errors."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from menas.config import ExecutorConfig, SearchConfig, StrategyConfig, from_dict
from menas.search.engine import Search, SearchStopped
from menas.search.executors import PoolExecutor, WorkerLost, make_executor, pool_shape
from menas.search.store import Store
from test_search import results, tiny_config


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
