"""What this machine offers the process: the CPU cores it may use and the worker counts that follow from them.
No torch, so the strategy side (executors) and `menas latency` can ask without importing it.
"""

from __future__ import annotations

import os

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


__all__ = ["MAX_DEFAULT_WORKERS", "cpu_cores", "default_workers"]
