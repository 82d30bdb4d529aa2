"""Where trials run: in the search's own process, in a pool of worker processes (one trial per worker at a
time; with GPUs, `executor.trials_per_gpu` workers on each GPU, else an equal share of the CPU cores), or as Ray
tasks on a cluster (1 / `trials_per_gpu` of a GPU each).

The search loop drives both the same way: `submit` while `free` slots remain, then `wait` for at least one
finished trial. The store, the strategy and every decision stay in the search's process; workers only turn a
`TrialJob` (plain data) into a `TrialRecord`. A trial's exception comes back as the exception, for the loop to
record as a failed trial. This module does not import torch at import time: a worker must set
`CUDA_VISIBLE_DEVICES` and its thread count before torch starts. An exception from a worker keeps the worker's
traceback (as its cause, or a note for Ray), for the search to store with the failed trial.

Several trials on one GPU (`trials_per_gpu` > 1) run side by side only under CUDA MPS; without its daemon the
processes take turns on the GPU in time slices, which was slower than running them in turn (BENCHMARKS.md, "GPU
checks"), so the executors log a line saying which it is (`log_gpu_sharing`).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from menas.config import ExecutorConfig
from menas.errors import MenasError, UserError
from menas.machine import cpu_cores, mps_control_pipe

Finished = tuple[Any, Any]  # (the spec, a TrialRecord or the exception the trial raised)

logger = logging.getLogger(__name__)


class WorkerLost(MenasError):
    """A worker process died (killed, out of memory); the trials it ran are still in the store as running."""


def pool_shape(cfg: ExecutorConfig, gpus: int, cores: int) -> tuple[int, int]:
    """(workers, torch threads per worker) of a pool: `trials_per_gpu` workers per GPU when there are GPUs, else
    CPU cores // threads; threads default to an equal share of the cores, so workers never oversubscribe them
    (two 2-thread processes on 2 cores ran 8-100x slower here). An explicit `workers` wins over both."""
    if cfg.workers is not None:
        workers = cfg.workers
    elif gpus > 0:
        workers = gpus * cfg.trials_per_gpu
    else:
        workers = max(1, cores // (cfg.threads or 1))
    threads = cfg.threads if cfg.threads is not None else max(1, cores // workers)
    return workers, threads


def worker_gpu(slot: int, gpus: int, visible: str | None = None) -> str:
    """The `CUDA_VISIBLE_DEVICES` of pool worker `slot` (0, 1, ... in the order the pool starts them): GPU
    `slot % gpus` of the GPUs the search sees (`visible`, its own `CUDA_VISIBLE_DEVICES`, else 0..gpus-1).

    Round-robin rather than `slot // trials_per_gpu`: the pool starts workers as trials arrive, so a search with
    fewer trials at once than workers still spreads them over every GPU before any GPU gets a second one, and an
    explicit `executor.workers` that is not a multiple of the GPUs differs by at most one trial between GPUs.
    """
    ids = [i.strip() for i in visible.split(",")] if visible else [str(i) for i in range(gpus)]
    return ids[slot % len(ids)]


def gpu_share(trials_per_gpu: int) -> float:
    """The fraction of a GPU a Ray task asks for: 1 / `trials_per_gpu`, rounded down to Ray's resource precision
    (1e-4), so `trials_per_gpu` tasks always fit on one GPU (1/6 rounded to nearest would be 0.1667, and six of
    them 1.0002 GPUs)."""
    return math.floor(10_000 / trials_per_gpu) / 10_000


def log_gpu_sharing(trials_per_gpu: int, environ: Mapping[str, str] | None = None) -> bool:
    """Logs whether trials that share a GPU run side by side (CUDA MPS) or take turns in time slices, and returns
    whether the MPS control daemon's pipe is there (`machine.mps_control_pipe`). Logs nothing with one trial per
    GPU."""
    pipe = mps_control_pipe(environ)
    if trials_per_gpu > 1 and pipe is not None:
        logger.info("%d trials per GPU under CUDA MPS (control daemon at %s)", trials_per_gpu, pipe)
    elif trials_per_gpu > 1:
        logger.warning(
            "%d trials per GPU without CUDA MPS (no control daemon in $CUDA_MPS_PIPE_DIRECTORY or /tmp/nvidia-mps): "
            "the trials on a GPU take turns in time slices; `nvidia-cuda-mps-control -d` starts the daemon, which "
            "runs them side by side (docs/distributed.md)",
            trials_per_gpu,
        )
    return pipe is not None


class LocalExecutor:
    """Runs each submitted trial in this process, when `wait` is called (one slot)."""

    def __init__(self, run: Callable[[Any, Any], Any]) -> None:
        self._run = run  # (spec, job) -> TrialRecord; raises what the trial raises
        self._queued: list[tuple[Any, Any]] = []

    @property
    def free(self) -> int:
        return 1 - len(self._queued)

    @property
    def busy(self) -> int:
        return len(self._queued)

    def submit(self, spec: Any, job: Any) -> None:
        assert self.free > 0, "submit beyond the executor's slots"
        self._queued.append((spec, job))

    def wait(self) -> list[Finished]:
        spec, job = self._queued.pop(0)
        try:
            return [(spec, self._run(spec, job))]
        except Exception as exc:  # recorded as a failed trial by the loop
            return [(spec, exc)]

    def close(self, abort: bool = False) -> None:
        self._queued.clear()


class _Workers:
    """Bookkeeping shared by the executors that run trials elsewhere: `workers` slots, `threads` per trial."""

    workers: int
    threads: int
    _running: dict[Any, Any]  # handle of a running trial -> its spec

    @property
    def free(self) -> int:
        return self.workers - len(self._running)

    @property
    def busy(self) -> int:
        return len(self._running)

    def _with_threads(self, job: Any) -> Any:
        """The job with the worker's thread share, so trials never oversubscribe the cores."""
        assert self.free > 0, "submit beyond the executor's slots"
        return dataclasses.replace(job, train=dataclasses.replace(job.train, threads=self.threads))


class PoolExecutor(_Workers):
    """`workers` processes (spawned, so CUDA works in them), each with `threads` CPU threads and, with GPUs, pinned
    to GPU `slot % gpus` (`worker_gpu`): ceil(workers / gpus) trials share a GPU.

    `run` is what a worker calls with each job (a module-level function, so the spawned workers can import it):
    `run_trial`; tests hand in a function that makes one trial fail as a trial would."""

    def __init__(self, workers: int, threads: int, gpus: int = 0, run: Callable[[Any], Any] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        slots = ctx.Queue()
        for slot in range(workers):
            slots.put(slot)
        self.workers, self.threads, self.gpus = workers, threads, gpus
        self._run = run or _run_in_worker
        self._pool = futures.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(slots, threads, gpus)
        )
        self._running = {}
        per_gpu = -(-workers // gpus) if gpus > 0 else 0
        logger.info("pool of %d worker processes, %d threads each, %d GPUs (up to %d trials per GPU)",
                    workers, threads, gpus, per_gpu)  # fmt: skip
        if gpus > 0:
            log_gpu_sharing(per_gpu)

    def submit(self, spec: Any, job: Any) -> None:
        self._running[self._pool.submit(self._run, self._with_threads(job))] = spec

    def wait(self) -> list[Finished]:
        done, _ = futures.wait(list(self._running), return_when=futures.FIRST_COMPLETED)
        finished = []
        for future in sorted(done, key=lambda f: self._running[f].trial_id):
            spec = self._running.pop(future)
            try:
                finished.append((spec, future.result()))
            except BrokenProcessPool as exc:
                logger.error("worker process lost while running trial %d: %s", spec.trial_id, exc)
                raise WorkerLost(
                    f"a worker process died while running trial {spec.trial_id} ({exc}); finished trials are kept, "
                    "`menas resume` runs the interrupted ones again"
                ) from None
            except Exception as exc:  # its cause holds the worker's traceback (concurrent.futures' _RemoteTraceback)
                logger.debug("trial %d raised in a worker: %r", spec.trial_id, exc)
                finished.append((spec, exc))
        return finished

    def close(self, abort: bool = False) -> None:
        """Waits for the workers to exit; with `abort` (Ctrl-C, a stopped search) stops running trials at once:
        they stay "running" in the store and `menas resume` runs them again from their last epoch checkpoint."""
        if abort:
            logger.info("stopping %d running trial(s)", len(self._running))
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(_Workers):
    """Each trial a Ray task (1 / `trials_per_gpu` of a GPU, or `threads` CPUs), at most `workers` at once. The
    store and the strategy stay in the search's process; on a cluster the run folder (trial checkpoints) and the data
    must be at the same paths on every node (a shared filesystem), as with any Ray training job. Whether MPS runs is
    checked on this machine only: the line logged says nothing of the other nodes."""

    def __init__(self, cfg: ExecutorConfig) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("executor.kind: ray needs the ray package: pip install 'menas[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:  # address None: RAY_ADDRESS when set, else a Ray instance on this machine
            ray.init(address=cfg.address, include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.workers, self.threads = pool_shape(cfg, gpus, int(resources.get("CPU", 1)))
        options = {"num_gpus": gpu_share(cfg.trials_per_gpu)} if gpus > 0 else {"num_cpus": self.threads}
        logger.info("Ray: at most %d trials at once, %s each", self.workers, options)
        if gpus > 0:
            log_gpu_sharing(cfg.trials_per_gpu)
        self._task = ray.remote(max_retries=0, **options)(_run_in_ray_worker)
        self._running = {}

    def submit(self, spec: Any, job: Any) -> None:
        self._running[self._task.remote(self._with_threads(job), self.threads)] = spec

    def wait(self) -> list[Finished]:
        ray = self._ray
        ready, _ = ray.wait(list(self._running), num_returns=1)
        more, _ = (
            ray.wait([r for r in self._running if r not in ready], num_returns=len(self._running) - 1, timeout=0)
            if len(self._running) > 1
            else ([], [])
        )
        finished = []
        for ref in sorted([*ready, *more], key=lambda r: self._running[r].trial_id):
            spec = self._running.pop(ref)
            try:
                finished.append((spec, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # the trial raised: its own exception
                cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
                if cause is not exc:  # the worker's traceback, which the cause alone does not carry
                    cause.add_note(f"in the Ray worker:\n{getattr(exc, 'traceback_str', exc)}")
                finished.append((spec, cause))
            except ray.exceptions.RayError as exc:  # the worker or its node died
                logger.error("Ray worker lost while running trial %d: %r", spec.trial_id, exc)
                raise WorkerLost(
                    f"the Ray worker running trial {spec.trial_id} was lost ({type(exc).__name__}); finished trials "
                    "are kept, `menas resume` runs the interrupted ones again"
                ) from None
        return finished

    def close(self, abort: bool = False) -> None:
        if abort:
            for ref in self._running:
                self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owns:
            self._ray.shutdown()


def make_executor(
    cfg: ExecutorConfig, device: str, run: Callable[[Any, Any], Any], train_threads: int | None = None
) -> LocalExecutor | PoolExecutor | RayExecutor:
    """The executor a search config asks for (`run` is used by the local one only). A pool or Ray worker runs each
    trial with `executor.threads` threads, or `train.threads` (`train_threads`) when only that is set, so searches
    side by side on a many-core host do not oversubscribe it (BENCHMARKS.md, "GPU checks")."""
    if cfg.kind == "local":
        return LocalExecutor(run)
    if cfg.threads is None and train_threads is not None:
        cfg = dataclasses.replace(cfg, threads=train_threads)
    if device.startswith("cuda:"):
        raise UserError(
            f"device: got {device!r} with executor.kind {cfg.kind}, allowed: auto, cuda or cpu "
            "(each worker gets its own GPU)"
        )
    if cfg.kind == "ray":
        return RayExecutor(cfg)
    gpus = 0
    if device != "cpu":
        import torch

        gpus = torch.cuda.device_count()
    if gpus == 0 and cfg.trials_per_gpu > 1:
        logger.info("executor.trials_per_gpu %d is ignored: no GPU, the pool shares the CPU cores", cfg.trials_per_gpu)
    workers, threads = pool_shape(cfg, gpus, cpu_cores())
    return PoolExecutor(workers, threads, gpus)


def _init_worker(slots: Any, threads: int, gpus: int) -> None:
    """Runs once in each worker before torch is imported there: its GPU (`worker_gpu`) and thread count."""
    slot = slots.get()
    if gpus > 0:  # index into the GPUs the search itself sees (its CUDA_VISIBLE_DEVICES, when set)
        os.environ["CUDA_VISIBLE_DEVICES"] = worker_gpu(slot, gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _run_in_worker(job: Any) -> Any:
    from menas.search.trial import run_trial

    return run_trial(job)


def _run_in_ray_worker(job: Any, threads: int) -> Any:
    """A trial in a Ray worker process (Ray sets CUDA_VISIBLE_DEVICES to the task's GPU)."""
    import torch

    torch.set_num_threads(threads)
    return _run_in_worker(job)
