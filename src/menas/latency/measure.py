"""Inference latency of one network, measured the way the hardware-aware NAS literature measures it.

Batch 1 by default, a fixed number of intra-op threads (set for the measurement and restored after), a runtime
(`torch` eager, or `onnxruntime` on a graph exported to a temporary file), a device (`cpu`, or `cuda`
synchronised around every run), at least `warmup` untimed runs, then at least `runs` timed runs and until
`min_time_s` has passed. The result is the median, the 90th percentile and the spread (inter-quartile range) of
the per-run times, with what it ran on: CPU model (from /proc/cpuinfo), GPU name, torch and runtime versions.

Torch is imported inside the functions that measure, so `Settings` and the checks can be used (and a bad
argument refused) without it.
"""

from __future__ import annotations

import gc
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from menas.errors import UserError, check, is_int, is_real
from menas.machine import cpu_cores

if TYPE_CHECKING:
    from torch import nn

RUNTIMES = ("torch", "onnxruntime")
DEVICES = ("cpu", "cuda")
#: Timed runs stop at this many times `runs` even when `min_time_s` has not passed (a bounded loop).
MAX_RUNS_FACTOR = 100
#: Seconds of timed runs at least, by default, per measurement: a whole network (`menas latency`, the final front of
#: a search) and a table's block (`menas latency-table`). Sub-millisecond networks need ~1,000 runs for a stable
#: median: onnxruntime at 32 px on one thread (0.1-0.3 ms a network) was 73% within ±10% of the table's prediction
#: at 100 runs and 95% at 1,000 (BENCHMARKS.md "Latency predictor against measured latency"); slower networks keep
#: their `runs`.
NETWORK_MIN_TIME_S = 0.2
BLOCK_MIN_TIME_S = 0.02


@dataclass(frozen=True)
class Settings:
    """How to measure: batch, threads, runtime, device and the number of runs. Checked on construction, so a bad
    value is a `UserError` naming the command-line flag before anything is built."""

    batch: int = 1
    threads: int = 1
    runtime: str = "torch"
    device: str = "cpu"
    warmup: int = 10
    runs: int = 100
    min_time_s: float = 0.0

    def __post_init__(self) -> None:
        check(is_int(self.batch) and self.batch >= 1, "--batch", self.batch, "integers >= 1")
        cores = cpu_cores()
        check(
            is_int(self.threads) and 1 <= self.threads <= cores,
            "--threads",
            self.threads,
            f"1..{cores} (the cores this machine lets menas use)",
        )
        check(self.runtime in RUNTIMES, "--runtime", self.runtime, ", ".join(RUNTIMES))
        check(self.device in DEVICES, "--device", self.device, ", ".join(DEVICES))
        check(is_int(self.warmup) and self.warmup >= 0, "--warmup", self.warmup, "integers >= 0")
        check(is_int(self.runs) and self.runs >= 1, "--runs", self.runs, "integers >= 1")
        check(is_real(self.min_time_s) and self.min_time_s >= 0, "--min-time", self.min_time_s, "seconds >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_available(settings: Settings) -> None:
    """Raises a one-line `UserError` when the runtime or the device of `settings` is missing on this machine: the
    onnxruntime runtime needs the `export` extra (onnx and onnxruntime), cuda a CUDA device (and onnxruntime's
    CUDA provider). Called before any network is loaded."""
    if settings.runtime == "onnxruntime":
        for package in ("onnx", "onnxruntime"):
            try:
                __import__(package)
            except ImportError:
                raise UserError(
                    f"--runtime onnxruntime: the {package} package is not installed: pip install 'menas[export]'"
                ) from None
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device on this machine, allowed here: cpu")
        if settings.runtime == "onnxruntime":
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise UserError(
                    "--device cuda --runtime onnxruntime: this onnxruntime has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu, or measure with --runtime torch)"
                )


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (lscpu's "Model name"), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):  # x86 names the model, some ARM boards the SoC
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_info(settings: Settings) -> dict[str, Any]:
    """What a measurement ran on: CPU model and cores, the device's name, python, torch and runtime versions."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": cpu_cores(),
        "device_name": torch.cuda.get_device_name() if settings.device == "cuda" else cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if settings.runtime == "onnxruntime":
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    info["runtime_version"] = info.get(settings.runtime, torch.__version__)
    return info


@dataclass(frozen=True)
class Measurement:
    """The latency of one network: statistics of the per-run times (one run = one batch) in milliseconds, and the
    settings and host they were measured with."""

    median_ms: float
    p90_ms: float
    iqr_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    timed_s: float
    input_shape: tuple[int, ...]
    settings: Settings
    host: dict[str, Any] = field(default_factory=dict)
    # more than 1: the median over this many fresh processes (`menas.latency.rounds`), each process's median here
    rounds: int = 1
    round_medians_ms: tuple[float, ...] = ()

    @property
    def round_spread(self) -> float:
        """(largest - smallest) of the rounds' medians over their median; 0 for one round."""
        if len(self.round_medians_ms) < 2:
            return 0.0
        return (max(self.round_medians_ms) - min(self.round_medians_ms)) / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["round_medians_ms"] = list(self.round_medians_ms)
        if self.rounds > 1:
            data["round_spread"] = self.round_spread
        return data

    def summary(self) -> dict[str, float]:
        """The statistics a lookup table keeps per block."""
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "iqr_ms": self.iqr_ms}


def statistics(times_s: list[float]) -> dict[str, float]:
    """Median, 90th percentile, inter-quartile range, mean and minimum of per-run times, in milliseconds."""
    import numpy as np

    ms = np.asarray(times_s, dtype=float) * 1e3
    q25, median, q75, p90 = np.percentile(ms, [25, 50, 75, 90])
    return {
        "median_ms": float(median),
        "p90_ms": float(p90),
        "iqr_ms": float(q75 - q25),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
    }


def time_runs(run: Callable[[], object], sync: Callable[[], None], settings: Settings) -> list[float]:
    """`settings.warmup` untimed calls, then the seconds of each timed call: at least `runs` of them and until
    `min_time_s` has passed, never more than `MAX_RUNS_FACTOR` x `runs`. `sync` waits for the device (CUDA runs
    asynchronously), before the clock starts and before it stops. Python's garbage collector is off while timing
    (as `timeit` does; restored after): it halved the spread of one torch network's repeated medians in one process
    (2.5% -> 1.4%, BENCHMARKS.md "How repeatable one measurement is")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _timed_calls(run, sync, settings)
    finally:
        if enabled:
            gc.enable()


def _timed_calls(run: Callable[[], object], sync: Callable[[], None], settings: Settings) -> list[float]:
    for _ in range(settings.warmup):
        run()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(settings.runs * MAX_RUNS_FACTOR):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
        if len(times) >= settings.runs and time.perf_counter() - start >= settings.min_time_s:
            break
    return times


def measure(model: nn.Module, input_shape: tuple[int, ...], settings: Settings, seed: int = 0) -> Measurement:
    """The latency of `model` on a random batch of `settings.batch` inputs of `input_shape` (channels, height,
    width), in eval mode, with `settings.threads` intra-op threads (torch's setting is restored after). The model
    is put in eval mode and moved to the settings' device."""
    import torch

    check_available(settings)
    before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        example = torch.randn((settings.batch, *input_shape), generator=generator)
        run, sync = _runner(model.eval(), example, settings)
        times = time_runs(run, sync, settings)
        host = host_info(settings)
    finally:
        torch.set_num_threads(before)
    stats = statistics(times)
    return Measurement(
        **stats,
        runs=len(times),
        timed_s=sum(times),
        input_shape=(settings.batch, *input_shape),
        settings=settings,
        host=host,
    )


def _runner(model: nn.Module, example: Any, settings: Settings) -> tuple[Callable[[], object], Callable[[], None]]:
    """(one inference, wait for the device) for the settings' runtime and device."""
    if settings.runtime == "onnxruntime":
        return _onnxruntime_runner(model, example, settings)
    import torch

    device = torch.device(settings.device)
    model = model.to(device)
    inputs = example.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else _no_sync

    def run() -> object:
        with torch.inference_mode():
            return model(inputs)

    return run, sync


def _no_sync() -> None:
    pass


def _onnxruntime_runner(
    model: nn.Module, example: Any, settings: Settings
) -> tuple[Callable[[], object], Callable[[], None]]:
    """The model exported to ONNX in a temporary folder and loaded into an onnxruntime session with
    `settings.threads` intra-op threads, one inter-op thread and sequential execution (the session keeps the graph
    in memory, so the file can go)."""
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="menas-latency-") as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, example, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        provider = "CUDAExecutionProvider" if settings.device == "cuda" else "CPUExecutionProvider"
        session = onnxruntime.InferenceSession(str(path), options, providers=[provider])
    feed = {session.get_inputs()[0].name: example.numpy()}
    return (lambda: session.run(None, feed)), _no_sync


def export_onnx(model: nn.Module, example: Any, path: Path) -> None:
    """Writes `model` (on the CPU, eval mode) as ONNX with a fixed input shape. The TorchScript-based exporter
    first: it takes about 20 ms per block where the `torch.export`-based one takes 1-2 s (measured on this
    project's CPU; a latency table exports tens of thousands of blocks), and falls back to the latter where a torch
    no longer has it."""
    import torch

    model = model.to("cpu").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"])
        except (TypeError, RuntimeError, ImportError):
            torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, verbose=False)
