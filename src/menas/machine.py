"""What this machine offers the process: the CPU cores it may use and the worker counts that follow from them, and
whether the CUDA MPS control daemon is there for trials that share a GPU. No torch, so the strategy side (executors)
and `menas latency` can ask without importing it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

#: Most DataLoader worker processes image-folder loading starts by default (`data.workers: null`).
MAX_DEFAULT_WORKERS = 4


def cpu_cores() -> int:
    """CPU cores this process may use (the affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """DataLoader workers when `data.workers` is null: min(4, cores - 1), leaving a core to the training process
    (4 workers on a 2-core machine made torch warn, and slowed image-folder training)."""
    return max(0, min(MAX_DEFAULT_WORKERS, cpu_cores() - 1))


#: Where the CUDA MPS control daemon makes its pipes when `CUDA_MPS_PIPE_DIRECTORY` is unset (NVIDIA's MPS guide).
MPS_PIPE_DIRECTORY = "/tmp/nvidia-mps"


def mps_control_pipe(environ: Mapping[str, str] | None = None) -> str | None:
    """The CUDA MPS control daemon's pipe when one is there, else None.

    With the daemon running (`nvidia-cuda-mps-control -d`), every CUDA process of the same user becomes a client of
    one MPS server per GPU, so kernels of several processes on one GPU run side by side instead of taking turns in
    time slices; nothing in the process needs to change. The daemon makes a FIFO named `control` in
    `CUDA_MPS_PIPE_DIRECTORY` (default `/tmp/nvidia-mps`), which is what this looks for: no process is started and no
    GPU touched. A pipe left behind by a killed daemon reads as present.

    Args:
        environ: the environment to read `CUDA_MPS_PIPE_DIRECTORY` from (default: this process's).
    """
    environ = os.environ if environ is None else environ
    control = Path(environ.get("CUDA_MPS_PIPE_DIRECTORY") or MPS_PIPE_DIRECTORY) / "control"
    try:
        return str(control) if stat.S_ISFIFO(control.stat().st_mode) else None
    except OSError:
        return None


__all__ = ["MAX_DEFAULT_WORKERS", "MPS_PIPE_DIRECTORY", "cpu_cores", "default_workers", "mps_control_pipe"]
