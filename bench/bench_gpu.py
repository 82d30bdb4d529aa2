"""Issue 21 on a lent GPU: where a trial's first training epoch goes, how many trials one GPU runs side by side,
and the search's trials per hour on one GPU against the CPU. GPU only (one line and exit 2 without CUDA);
`--smoke` runs the same code on the CPU at toy sizes to test the script (its numbers mean nothing).

Parts (`--parts`, in this order; each is bounded by its own seconds and by `--seconds` in all, and the JSON is
written after each, so a part cut short still leaves the ones before it):

* **first-epoch**: per cause of the first epoch's extra cost, one fresh process per variant (`VARIANTS`: bf16
  autocast as menas does today, float32 with cuDNN's TF32 convolutions, strict float32, NCHW instead of
  channels_last, `cudnn.benchmark` on, cuDNN off, CUDA modules loaded eagerly instead of lazily) trains the same
  `--genomes` networks of the config's budget for its 2 epochs (no lottery, no fine-tune): epoch 1 and epoch 2
  seconds, their ratio and difference, warm img/s, the search-val score. Genome 0's extra cost minus genome 1's is
  what one warm-up per worker process would save (CUDA context, libraries, allocator: paid once per process); what
  genome 1 still pays is per new architecture (cuDNN's per-shape set-up, kernels loaded on first use). The process's
  CUDA start, data loading and the data path alone (no model, epoch 1 and 2) are timed too. The variant with the
  fastest two epochs is `best`.
* **sweep**: img/s per trial at K = `--ks` processes training the same network on one GPU at once (after a warm-up
  of `--warmup-steps` steps, all started together for `--sweep-s` seconds), the GPU's busy share (NVML's
  utilization: the share of time some kernel ran) and memory; whether CUDA MPS ran is in `host.mps`.
* **trials**: trials per hour of the config's full trials (train, lottery, fine-tune: `run_trial`, what a pool
  worker runs) with K processes on one GPU for `--trial-s` seconds each, per `--trial-runs` ("VARIANT:K"; K "auto"
  is the sweep's best K, VARIANT "best" the first-epoch part's). A process's rate is its finished trials over the
  time from its start-up (CUDA, data) to its last finished trial; the GPU's is the sum.
* **cpu**: the same trials on one CPU core (one thread, no GPU in use) for `--cpu-s` seconds, and all the host's
  cores estimated as cores x one core (an upper bound: cores share memory bandwidth and turbo).

Measurement plan (what these numbers decide; nothing below is built before it is measured):
1. Per-device defaults: whichever variant removes the first-epoch cost (or most of it) at no loss of score becomes
   the default on that device (`train.amp`, `train.channels_last`; a torch flag such as `cudnn.benchmark` would get
   a setting of its own). If the cost is per process, a warm-up per pool worker; if per architecture and no variant
   removes it, per-shape caching is the lead (cuDNN v9's heuristics mode, `torch.backends.cudnn` plan caches).
2. `executor.trials_per_gpu`'s default: the K where the sweep's total img/s stops rising (with and without MPS),
   within the GPU memory free per trial.
3. Launch overhead, once a warm step is known launch-bound (GPU busy share low at K = 1): CUDA graphs of the train
   step (`torch.cuda.graphs.make_graphed_callables` or `torch.compile(mode="reduce-overhead")`, with a test that a
   graphed step equals an eager one), timm's foreach/fused RMSprop, larger evaluation batches; RandAugment on the
   GPU at >= 0.9x plain (bench/bench_retrain.py).

Usage (scripts/gpu-checks.sh, PARTS=gpu21, runs it with its figures to $OUT):
    python3 bench/bench_gpu.py --root .data/fashion-mnist --out /tmp/gpu21/bench_gpu.json
    python3 bench/bench_gpu.py --parts first-epoch --variants base,tf32-nchw --genomes 3
    python bench/bench_gpu.py --smoke --seconds 240 --out /tmp/smoke.json     # the script itself, on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

CONFIGS = {"demo": HERE.parent / "configs" / "demo.yaml", "evidence": HERE / "evidence" / "base.yaml"}
PARTS = ("first-epoch", "sweep", "trials", "cpu")
#: each part's own bound in seconds (the defaults fit all four in ~7.5 minutes; `--seconds` bounds them together)
PART_SECONDS = {"first-epoch": 170.0, "sweep": 110.0, "trials": 130.0, "cpu": 40.0}
GENOME_SEED = 21  # the networks are sampled in the config's budget from random.Random(GENOME_SEED)
#: toy sizes of `--smoke`: 16 px synthetic data and small networks, so the script's code runs on a CPU in minutes
SMOKE_OVERRIDES = (
    "data.dataset=synthetic",
    "data.input_size=16",
    "data.search_train_fraction=0.1",
    "data.search_val_fraction=0.1",
    "data.batch_size=64",
    "budget.macs_min=0",
    "budget.macs_max=2M",
    "budget.params_max=800K",
    "lottery.proposals=2",
    "lottery.score_images=64",
    "train.threads=1",
)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run a trial's kernels, as the first-epoch part compares them."""

    amp: str = "auto"  # train.amp and lottery.amp: "auto" is bf16 autocast on CUDA (menas' default), "off" float32
    channels_last: bool = True  # train.channels_last
    tf32: bool | None = None  # cudnn.allow_tf32 and cuda.matmul.allow_tf32; None: torch's (TF32 convolutions only)
    benchmark: bool = False  # torch.backends.cudnn.benchmark: time every algorithm of each new shape, keep the best
    cudnn: bool = True  # torch.backends.cudnn.enabled
    env: tuple[tuple[str, str], ...] = ()  # the process's environment, e.g. CUDA_MODULE_LOADING

    @property
    def in_config(self) -> bool:
        """Whether a search config (train.amp, train.channels_last) and the environment express it: a pool's
        spawned workers do not inherit torch flags set in the search's process."""
        return self.tf32 is None and not self.benchmark and self.cudnn


#: The first-epoch part's variants, most telling first (the part stops at its time bound).
VARIANTS = {
    "base": Variant(),
    "tf32": Variant(amp="off"),
    "tf32-nchw": Variant(amp="off", channels_last=False),
    "bf16-nchw": Variant(channels_last=False),
    "benchmark": Variant(benchmark=True),
    "no-cudnn": Variant(cudnn=False),
    "eager-load": Variant(env=(("CUDA_MODULE_LOADING", "EAGER"),)),
    "fp32": Variant(amp="off", tf32=False),
}


@dataclasses.dataclass
class Settings:
    """What the parent and its child processes share (written to the work folder as JSON)."""

    config: str = "demo"
    root: str | None = None
    smoke: bool = False
    genomes: int = 2
    variants: tuple[str, ...] = tuple(VARIANTS)
    ks: tuple[int, ...] = (1, 2, 4, 8)
    sweep_variant: str = "best"
    sweep_s: float = 8.0
    warmup_steps: int = 30
    trial_runs: tuple[str, ...] = ("best:1", "best:4")
    trial_s: float = 55.0
    cpu_s: float = 35.0
    part_s: dict[str, float] = dataclasses.field(default_factory=dict)  # a part's own bound, over PART_SECONDS'

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Settings:
        raw = json.loads(path.read_text())
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


# --------------------------------------------------------------------------------------------- shared set-up


def search_config(settings: Settings, variant: Variant, device: str, threads: int | None = None) -> Any:
    """The config's search settings with the variant's precision and layout (and `--smoke`'s toy sizes)."""
    from menas.config import SearchConfig, apply_override, load_yaml

    cfg = load_yaml(SearchConfig, CONFIGS[settings.config])
    overrides = ([f"data.root={settings.root}"] if settings.root else []) + list(
        SMOKE_OVERRIDES if settings.smoke else ()
    )
    for override in [*overrides, f"device={device}"]:
        cfg = apply_override(cfg, override, "bench_gpu")
    train = dataclasses.replace(cfg.train, amp=variant.amp, channels_last=variant.channels_last)
    if threads is not None:
        train = dataclasses.replace(train, threads=threads)
    lottery = dataclasses.replace(cfg.lottery, amp="off" if variant.amp == "off" else cfg.lottery.amp)
    return dataclasses.replace(cfg, train=train, lottery=lottery)


def sample_genomes(settings: Settings, count: int) -> list[str]:
    """`count` networks of the config's space in its budget, the same for every process and variant."""
    from menas.data.datasets import dataset_shape
    from menas.search.engine import make_budget
    from menas.space.operators import sample
    from menas.space.spaces import load_space

    cfg = search_config(settings, VARIANTS["base"], "cpu")
    budget = make_budget(cfg, dataset_shape(cfg.data))
    space, rng = load_space(cfg.space), random.Random(GENOME_SEED)
    return [sample(space, rng, budget).to_str() for _ in range(count)]


def apply_flags(variant: Variant) -> None:
    """The variant's torch flags, in this process, before any CUDA work."""
    import torch

    torch.backends.cudnn.benchmark = variant.benchmark
    torch.backends.cudnn.enabled = variant.cudnn
    if variant.tf32 is not None:
        torch.backends.cudnn.allow_tf32 = variant.tf32
        torch.backends.cuda.matmul.allow_tf32 = variant.tf32


def sync(device: Any) -> None:
    """Waits for the device's queued work (a no-op on the CPU), so wall times include it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit(record: dict[str, Any]) -> None:
    """One result line of a child process, flushed at once: a child killed at its deadline keeps what it printed."""
    print(json.dumps(record), flush=True)


def start_device(settings: Settings, variant: Variant, device_name: str, threads: int | None = None) -> tuple:
    """A child's start-up: flags, config, device, loaders; (cfg, device, data, seconds of CUDA start, of loading)."""
    import torch

    from menas.search.trial import load_data

    apply_flags(variant)
    cfg = search_config(settings, variant, device_name, threads)
    torch.set_num_threads(cfg.train.threads or 1)  # K processes side by side must not oversubscribe the cores
    device = torch.device(device_name)
    tic = time.perf_counter()
    torch.zeros(1, device=device).add_(1)  # the CUDA context and the first kernel
    sync(device)
    init_s = time.perf_counter() - tic
    tic = time.perf_counter()
    data = load_data(cfg.data, device)
    sync(device)
    return cfg, device, data, init_s, time.perf_counter() - tic


# --------------------------------------------------------------------------------------------- child processes


def time_data_epoch(loader: Any, epoch: int) -> float:
    """Seconds of one pass over a loader with no model: the data path alone (crop, flip, normalise on the device)."""
    loader.set_epoch(epoch)
    tic = time.perf_counter()
    for _ in loader:
        pass
    sync(loader.device)
    return time.perf_counter() - tic


def child_first_epoch(settings: Settings, variant_name: str, work: Path, device_name: str) -> None:
    """Trains each of the first `settings.genomes` networks for the config's epochs (no lottery, no fine-tune) in
    this fresh process, printing one line per network."""
    from menas.search.trial import TrialJob, run_trial

    variant = VARIANTS[variant_name]
    cfg, device, data, init_s, data_s = start_device(settings, variant, device_name)
    data_epochs = [time_data_epoch(data.train, epoch) for epoch in (0, 1)]
    emit(
        {"kind": "process", "cuda_init_s": init_s, "data_s": data_s, "data_epoch_s": data_epochs, **device_info(device)}
    )
    genomes = json.loads((work / "genomes.json").read_text())[: settings.genomes]
    for k, genome in enumerate(genomes):
        job = TrialJob(k, genome, cfg.data, cfg.train, None, 0, str(work / f"{variant_name}-{k}"), seed=k,
                       device=device_name)  # fmt: skip
        tic = time.perf_counter()
        r = run_trial(job)
        emit({"kind": "trial", "genome": k, "macs": r.macs, "status": r.status, "error": r.error,
              "train_epoch_s": list(r.train_epoch_s), "images_per_epoch": r.images_per_epoch, "eval_s": r.eval_s,
              "wall_s": time.perf_counter() - tic, "trained_score": r.trained_score})  # fmt: skip


def batches(loader: Any) -> Iterator[tuple[Any, Any]]:
    """The loader's batches, epoch after epoch, for as long as they are asked for."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def child_sweep(settings: Settings, variant_name: str, work: Path, device_name: str, index: int, k: int) -> None:
    """Process `index` of K: trains genome 0 as fast as it goes: warm-up steps, then the file "kK-ready-INDEX" in the
    work folder, then, once the parent makes "kK-go", steps for `settings.sweep_s` seconds; prints the images and
    seconds."""
    import torch

    from menas.nn.builder import build_model
    from menas.space.genome import Genome
    from menas.train.loop import _build_parts, _Criterion, _train_step, seed_trial

    variant = VARIANTS[variant_name]
    cfg, device, data, _, _ = start_device(settings, variant, device_name)
    seed_trial(index)
    genome = Genome.from_str(json.loads((work / "genomes.json").read_text())[0])
    layout = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = build_model(genome, data.num_classes, data.in_chans).to(device, memory_format=layout).train()
    parts, criterion, stream = (
        _build_parts(model, cfg.train, data.train),
        _Criterion(cfg.train, None),
        batches(data.train),
    )
    tic = time.perf_counter()
    for _ in range(settings.warmup_steps):
        _train_step(model, parts, criterion, *next(stream))
    sync(device)
    warmup_s = time.perf_counter() - tic
    (work / f"k{k}-ready-{index}").touch()
    if not wait_for(work / f"k{k}-go", 120.0):
        return
    images, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < settings.sweep_s:
        batch = next(stream)
        _train_step(model, parts, criterion, *batch)
        images += len(batch[1])
    sync(device)
    seconds = time.perf_counter() - tic
    emit({"kind": "sweep", "index": index, "warmup_s": warmup_s, "images": images, "seconds": seconds,
          "img_s": images / seconds, "max_memory_mib": _max_memory_mib(device)})  # fmt: skip


def _max_memory_mib(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else None


def wait_for(path: Path, timeout: float) -> bool:
    """Polls for a file every 20 ms; False after `timeout` seconds without it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return False


def child_trials(settings: Settings, variant_name: str, work: Path, device_name: str, index: int, k: int,
                 until: float) -> None:  # fmt: skip
    """Runs full trials (train, lottery, fine-tune) of genomes index, index + k, ... one after another until the
    wall clock passes `until` (the parent kills this process at its deadline; a cut trial prints nothing)."""
    from menas.search.trial import TrialJob, run_trial

    threads = 1 if device_name == "cpu" else None
    cfg, device, _, init_s, data_s = start_device(settings, VARIANTS[variant_name], device_name, threads)
    emit({"kind": "ready", "at": time.time(), "cuda_init_s": init_s, "data_s": data_s, **device_info(device)})
    genomes = json.loads((work / "genomes.json").read_text())
    for j in range(index, len(genomes), k):
        if time.time() >= until:
            break
        folder = work / f"trial-{device_name}-{variant_name}-{k}-{j}"
        job = TrialJob(j, genomes[j], cfg.data, cfg.train, cfg.lottery, cfg.finetune_epochs, str(folder), seed=j,
                       device=device_name)  # fmt: skip
        start = time.time()
        r = run_trial(job)
        emit({"kind": "trial", "genome": j, "start": start, "end": time.time(), "status": r.status,
              "macs": r.macs, "train_epoch_s": list(r.train_epoch_s), "train_s": r.train_s, "lottery_s": r.lottery_s,
              "finetune_s": r.finetune_s, "final_score": r.final_score})  # fmt: skip


# --------------------------------------------------------------------------------------------- GPU busy share


def parse_smi_line(line: str) -> tuple[float, float] | None:
    """(utilization %, memory used MiB) from a line of `nvidia-smi --query-gpu=utilization.gpu,memory.used
    --format=csv,noheader,nounits`; None for anything else ("[N/A]", a header, a blank line)."""
    fields = [f.strip() for f in line.split(",")]
    try:
        return float(fields[0]), float(fields[1])
    except (ValueError, IndexError):
        return None


def nvml_index() -> int:
    """The GPU's index as NVML and nvidia-smi count them: the first of CUDA_VISIBLE_DEVICES when it is a number."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


class BusySampler:
    """The GPU's busy share (NVML's utilization.gpu: the share of each sample period in which some kernel ran) and
    memory used, every 0.2 s in a thread while the `with` block runs: pynvml when installed, else `nvidia-smi -lms
    200`. Off (an empty summary) on the CPU."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.samples, self.source = enabled, [], None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._smi: subprocess.Popen | None = None

    def __enter__(self) -> BusySampler:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._smi is not None:
            self._smi.terminate()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index())
        except Exception:  # not installed, or no NVML library: nvidia-smi reads the same counter
            self._run_smi()
            return
        self.source = "pynvml"
        while not self._stop.wait(0.2):
            util, memory = pynvml.nvmlDeviceGetUtilizationRates(handle), pynvml.nvmlDeviceGetMemoryInfo(handle)
            self.samples.append((float(util.gpu), memory.used / 2**20))

    def _run_smi(self) -> None:
        command = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                   "-lms", "200", "-i", str(nvml_index())]  # fmt: skip
        try:
            self._smi = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.source = "none (no pynvml, no nvidia-smi)"
            return
        self.source = "nvidia-smi"
        assert self._smi.stdout is not None
        for line in self._smi.stdout:
            sample = parse_smi_line(line)
            if sample is not None:
                self.samples.append(sample)

    def summary(self) -> dict[str, Any]:
        """Mean and median busy %, peak memory MiB, sample count and source."""
        if not self.samples:
            return {"busy_pct": None, "source": self.source, "samples": 0}
        busy = [b for b, _ in self.samples]
        return {
            "busy_pct": statistics.fmean(busy),
            "busy_pct_median": statistics.median(busy),
            "memory_mib_max": max(m for _, m in self.samples),
            "samples": len(busy),
            "source": self.source,
        }


# --------------------------------------------------------------------------------------------- running children


def child_command(kind: str, work: Path, variant: str, device: str, *extra: object) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--work", str(work), "--variant", variant,
            "--device", device, *map(str, extra)]  # fmt: skip


def launch(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """A child process with its stdout (result lines) and stderr (kept for errors) piped."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def collect(
    process: subprocess.Popen, deadline: float, expect_cut: bool = False
) -> tuple[list[dict[str, Any]], str | None]:
    """The child's result lines once it ends, or what it printed by `deadline` (then it is killed), and what went
    wrong: an exit status other than 0, a kill at the deadline when not `expect_cut`, or no result line (with the
    tail of its stderr); None when nothing did."""
    try:
        out, err = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
        cut = False
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        cut = True
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if cut and not expect_cut:
        problem = "killed at its deadline"
    elif not cut and process.returncode != 0:
        problem = f"exit {process.returncode}"
    elif not lines:
        problem = "no result"
    else:
        return lines, None
    return lines, f"{problem}: {' | '.join(err.strip().splitlines()[-4:])}"


# --------------------------------------------------------------------------------------------- the parts


def first_epoch_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: mean epoch-1 and epoch-2 training seconds over its networks, their ratio and difference, warm
    img/s; the warm-up one per process would save (genome 0's extra cost minus the later networks')."""
    done = [t for t in trials if t["status"] == "done" and len(t["train_epoch_s"]) >= 2]
    if not done:
        return {"networks": 0}
    first = statistics.fmean(t["train_epoch_s"][0] for t in done)
    warm = statistics.fmean(t["train_epoch_s"][1] for t in done)
    extra = [t["train_epoch_s"][0] - t["train_epoch_s"][1] for t in done]
    summary = {"networks": len(done), "epoch1_s": first, "epoch2_s": warm, "ratio": first / warm,
               "extra_s": statistics.fmean(extra), "two_epochs_s": first + warm,
               "warm_img_s": statistics.fmean(t["images_per_epoch"] / t["train_epoch_s"][1] for t in done),
               "trained_score": statistics.fmean(t["trained_score"] for t in done)}  # fmt: skip
    if len(extra) > 1:
        summary["per_process_s"] = extra[0] - statistics.fmean(extra[1:])
        summary["per_network_s"] = statistics.fmean(extra[1:])
    return summary


def best_variant(first_epoch: dict[str, Any], networks: int) -> str:
    """The variant whose two epochs took least, among those that trained every network; "base" without any."""
    complete = {name: r["summary"] for name, r in first_epoch.items() if r["summary"].get("networks") == networks}
    return min(complete, key=lambda name: complete[name]["two_epochs_s"]) if complete else "base"


def part_first_epoch(settings: Settings, work: Path, device: str, deadline: float) -> dict[str, Any]:
    """Each variant in a fresh process, one after another while time is left."""
    results: dict[str, Any] = {}
    for name in settings.variants:
        if deadline - time.monotonic() < 20:
            results[name] = {"skipped": "out of time"}
            continue
        with BusySampler(device == "cuda") as busy:
            process = launch(child_command("first-epoch", work, name, device), dict(VARIANTS[name].env))
            lines, problem = collect(process, deadline)
        trials = [line for line in lines if line["kind"] == "trial"]
        results[name] = {"process": next((line for line in lines if line["kind"] == "process"), None),
                         "trials": trials, "summary": first_epoch_summary(trials), "gpu": busy.summary(),
                         "error": problem}  # fmt: skip
        log(f"first-epoch {name}: {results[name]['summary']}" + (f" ({problem})" if problem else ""))
    ran = {name: r for name, r in results.items() if "summary" in r}
    return {"variants": results, "best": best_variant(ran, settings.genomes)}


def part_sweep(settings: Settings, work: Path, device: str, variant: str, deadline: float) -> dict[str, Any]:
    """For each K: K processes train genome 0 on the GPU at once, started together after their warm-up."""
    per_k: dict[str, Any] = {}
    for k in settings.ks:
        if deadline - time.monotonic() < settings.sweep_s + 15:
            per_k[str(k)] = {"skipped": "out of time"}
            continue
        command = [child_command("sweep", work, variant, device, "--index", i, "--k", k) for i in range(k)]
        processes = [launch(c, dict(VARIANTS[variant].env)) for c in command]
        ready = all(wait_for(work / f"k{k}-ready-{i}", max(0.0, deadline - time.monotonic() - settings.sweep_s))
                    for i in range(k))  # fmt: skip
        with BusySampler(device == "cuda" and ready) as busy:
            (work / f"k{k}-go").touch()
            outputs = [collect(p, deadline) for p in processes]
        runs = [line for lines, _ in outputs for line in lines if line["kind"] == "sweep"]
        errors = [problem for _, problem in outputs if problem]
        per_k[str(k)] = sweep_summary(runs, k) | {"gpu": busy.summary(), "errors": errors, "runs": runs}
        log(f"sweep K={k}: {per_k[str(k)].get('img_s_per_trial')} img/s per trial, busy {busy.summary()['busy_pct']}")
    return {"variant": variant, "per_k": per_k, "best_k": best_k(per_k)}


def sweep_summary(runs: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Mean img/s per trial and their sum, over the K processes that reported."""
    if len(runs) < k:
        return {"complete": False, "reported": len(runs)}
    rates = [r["img_s"] for r in runs]
    return {"complete": True, "img_s_per_trial": statistics.fmean(rates), "img_s_total": sum(rates),
            "warmup_s": statistics.fmean(r["warmup_s"] for r in runs)}  # fmt: skip


def best_k(per_k: dict[str, Any]) -> int | None:
    """The K with the most img/s in all, among the complete ones."""
    totals = {int(k): r["img_s_total"] for k, r in per_k.items() if r.get("complete")}
    return max(totals, key=lambda k: totals[k]) if totals else None


def trial_rates(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One process's finished trials (done or failed: both took their time) and its rate: trials over the seconds
    from its start-up to its last finished trial (no rate without one); its trials' lines kept (phases, epochs)."""
    ready = next((line["at"] for line in lines if line["kind"] == "ready"), None)
    trials = [line for line in lines if line["kind"] == "trial"]
    counts = {"trials": len(trials), "done": sum(t["status"] == "done" for t in trials)}
    if ready is None or not trials:
        return counts | {"per_hour": None, "lines": trials}
    busy = max(t["end"] for t in trials) - ready
    wall = statistics.fmean(t["end"] - t["start"] for t in trials)
    return counts | {"per_hour": 3600.0 * len(trials) / busy, "wall_s": wall, "lines": trials}


def parse_run(run: str, best: str, auto_k: int | None) -> tuple[str, int]:
    """ "VARIANT:K" with "best" and "auto" resolved (K "auto" without a sweep: 4)."""
    variant, _, k = run.partition(":")
    variant = best if variant == "best" else variant
    if variant not in VARIANTS:
        raise SystemExit(f"--trial-runs: got variant {variant!r} in {run!r}, allowed: best, {', '.join(VARIANTS)}")
    return variant, (auto_k or 4) if k == "auto" else int(k or 1)


def part_trials(settings: Settings, work: Path, device: str, runs: list[tuple[str, int]], seconds: float,
                deadline: float) -> list[dict[str, Any]]:  # fmt: skip
    """For each (variant, K): K processes run full trials for `seconds`; per process and summed trials per hour."""
    results = []
    for variant, k in runs:
        if deadline - time.monotonic() < min(seconds, 30.0):
            results.append({"variant": variant, "k": k, "skipped": "out of time"})
            continue
        end = min(deadline, time.monotonic() + seconds)
        until = time.time() + (end - time.monotonic())
        env = dict(VARIANTS[variant].env)
        if device == "cpu":  # one core, and no GPU touched
            env |= {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
        command = [child_command("trials", work, variant, device, "--index", i, "--k", k, "--until", until)
                   for i in range(k)]  # fmt: skip
        with BusySampler(device == "cuda") as busy:
            processes = [launch(c, env) for c in command]
            outputs = [collect(p, end, expect_cut=True) for p in processes]
        per_process = [trial_rates(lines) for lines, _ in outputs]
        rates = [p["per_hour"] for p in per_process if p["per_hour"] is not None]
        results.append({"variant": variant, "k": k, "device": device, "seconds": seconds,
                        "per_hour": sum(rates) if len(rates) == k else None, "processes": per_process,
                        "gpu": busy.summary(), "errors": [e for _, e in outputs if e]})  # fmt: skip
        counts = [(p["trials"], p["done"]) for p in per_process]
        log(f"trials {device} {variant} K={k}: {results[-1]['per_hour']} per hour; (finished, done): {counts}")
    return results


# --------------------------------------------------------------------------------------------- the report


def host_info(device: str) -> dict[str, Any]:
    """The versions, the cores, whether CUDA MPS' daemon is there and the GPU as nvidia-smi names it. Nothing here
    touches the GPU, so this process holds no CUDA context (and none of its memory) while the children measure;
    each child records what torch sees of it (`device_info`)."""
    import torch

    from menas.machine import cpu_cores, mps_control_pipe

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cores": cpu_cores(),
        "mps": mps_control_pipe(),
        "module_loading": os.environ.get("CUDA_MODULE_LOADING"),
    }
    if device == "cuda":
        info["gpu"] = smi_query("name,memory.total,driver_version,compute_mode")
    return info


def smi_query(fields: str) -> str | None:
    """One `nvidia-smi --query-gpu` line for the measured GPU, or None without nvidia-smi."""
    command = ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader", "-i", str(nvml_index())]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(device: Any) -> dict[str, Any]:
    """What torch sees of the device in a child: name, compute capability, memory, cuDNN's version and the flags
    the variant set (as torch reports them back)."""
    import torch

    if device.type != "cuda":
        return {"device": str(device)}
    props = torch.cuda.get_device_properties(device)
    info = {
        "device": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gib": props.total_memory / 2**30,
        "cudnn": torch.backends.cudnn.version(),
        "cudnn_enabled": torch.backends.cudnn.enabled,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    try:
        info |= {"cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_tf32": torch.backends.cuda.matmul.allow_tf32}
    except RuntimeError as exc:  # torch >= 2.9 refuses the legacy getters once the new fp32_precision API was used
        info["tf32"] = str(exc)
    return info


def derived(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's ratios: GPU trials per hour against one CPU core and against all cores (estimated)."""
    cpu = next((r["per_hour"] for r in results.get("cpu", []) if r.get("per_hour")), None)
    gpu = [r for r in results.get("trials", []) if r.get("per_hour")]
    out: dict[str, Any] = {"cpu_core_per_hour": cpu}
    if cpu:
        out["cpu_all_cores_per_hour_estimate"] = cpu * results["host"]["cores"]
    for r in gpu:
        key = f"gpu_{r['variant']}_k{r['k']}"
        out[f"{key}_per_hour"] = r["per_hour"]
        if cpu:
            out[f"{key}_vs_cpu_core"] = r["per_hour"] / cpu
            out[f"{key}_vs_all_cores"] = r["per_hour"] / out["cpu_all_cores_per_hour_estimate"]
    return out


def fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: dict[str, Any]) -> str:
    """The short table printed at the end."""
    lines = [f"host: {json.dumps(results['host'])}"]
    variants = results.get("first_epoch", {}).get("variants", {})
    if variants:
        lines.append("variant      epoch1 s epoch2 s  ratio extra s per-proc s warm img/s  score busy %")
        for name, r in variants.items():
            s, busy = r.get("summary", {}), r.get("gpu", {}).get("busy_pct")
            cells = [fmt(s.get("epoch1_s")), fmt(s.get("epoch2_s")), fmt(s.get("ratio"), ".1f"), fmt(s.get("extra_s"))]
            cells += [fmt(s.get("per_process_s")), fmt(s.get("warm_img_s"), ",.0f"), fmt(s.get("trained_score"), ".1f")]
            widths = (8, 8, 6, 7, 10, 10, 6, 6)
            row = " ".join(cell.rjust(width) for cell, width in zip([*cells, fmt(busy, ".0f")], widths, strict=True))
            lines.append(f"{name:11s} {row}  {r.get('skipped') or r.get('error') or ''}".rstrip())
        lines.append(f"best: {results['first_epoch']['best']}")
    sweep = results.get("sweep")
    if sweep:
        lines.append(f"sweep ({sweep['variant']}): K, img/s per trial, img/s in all, busy %; best K {sweep['best_k']}")
        for k, r in sweep["per_k"].items():
            cells = [fmt(r.get("img_s_per_trial"), ",.0f"), fmt(r.get("img_s_total"), ",.0f")]
            lines.append(
                f"  {k:>2s} {cells[0]:>10s} {cells[1]:>10s} {fmt(r.get('gpu', {}).get('busy_pct'), '.0f'):>6s}"
            )
    for r in [*results.get("trials", []), *results.get("cpu", [])]:
        note = f" ({r['skipped']})" if "skipped" in r else ""
        lines.append(f"trials {r.get('device', '')} {r['variant']} K={r['k']}: {fmt(r.get('per_hour'), '.0f')}/h{note}")
    lines.append(f"derived: {json.dumps(results.get('derived', {}))}")
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--config", default="demo", choices=sorted(CONFIGS))
    parser.add_argument("--root", default=None, help="the Fashion-MNIST folder (default: the config's)")
    parser.add_argument("--out", default="bench_gpu.json", help="the JSON file written after each part")
    parser.add_argument("--seconds", type=float, default=450.0, help="all parts together stop within this")
    parser.add_argument("--genomes", type=int, default=2, help="first-epoch: networks per variant")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="first-epoch: which, in order")
    parser.add_argument("--ks", default="1,2,4,8", help="sweep: processes on the GPU at once")
    parser.add_argument("--sweep-variant", default="best", help="sweep: a variant, or best (first-epoch's)")
    parser.add_argument("--sweep-s", type=float, default=8.0, help="sweep: measured seconds per K")
    parser.add_argument("--warmup-steps", type=int, default=30, help="sweep: steps before measuring")
    parser.add_argument("--trial-runs", default="best:1,best:4", help="trials: VARIANT:K,... (best; auto: sweep's K)")
    parser.add_argument("--trial-s", type=float, default=55.0, help="trials: seconds per run")
    parser.add_argument("--cpu-s", type=float, default=35.0, help="cpu: seconds of one-core trials")
    parser.add_argument("--part-s", default="", help="PART=SECONDS,... : a part's own bound (default: PART_SECONDS)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: tests the script itself")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="base", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_of(args: argparse.Namespace) -> Settings:
    """The command line's settings, checked (a wrong name is one line naming the option)."""
    variants = tuple(args.variants.split(","))
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: got {', '.join(unknown)}, allowed: {', '.join(VARIANTS)}")
    return Settings(config=args.config, root=args.root, smoke=args.smoke, genomes=args.genomes, variants=variants,
                    ks=tuple(int(k) for k in args.ks.split(",")), sweep_variant=args.sweep_variant,
                    sweep_s=args.sweep_s, warmup_steps=args.warmup_steps, trial_runs=tuple(args.trial_runs.split(",")),
                    trial_s=args.trial_s, cpu_s=args.cpu_s, part_s=part_seconds(args.part_s))  # fmt: skip


def part_seconds(text: str) -> dict[str, float]:
    """ "first-epoch=200,sweep=90" as {part: seconds}."""
    bounds = {}
    for item in filter(None, text.split(",")):
        part, _, seconds = item.partition("=")
        if part not in PARTS or not seconds.replace(".", "", 1).isdigit():
            raise SystemExit(f"--part-s: got {item!r}, allowed: PART=SECONDS with PART one of {', '.join(PARTS)}")
        bounds[part] = float(seconds)
    return bounds


def run_child(args: argparse.Namespace) -> int:
    """A child process's part of the work (`--child`), with the settings the parent wrote."""
    work = Path(args.work)
    settings = Settings.load(work / "settings.json")
    if args.child == "first-epoch":
        child_first_epoch(settings, args.variant, work, args.device)
    elif args.child == "sweep":
        child_sweep(settings, args.variant, work, args.device, args.index, args.k)
    else:
        child_trials(settings, args.variant, work, args.device, args.index, args.k, args.until)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    import torch

    from menas.errors import UserError

    if not args.smoke and not torch.cuda.is_available():
        print("bench_gpu.py measures a CUDA GPU and this machine has none (torch.cuda.is_available() is False); "
              "--smoke runs its code on the CPU at toy sizes (the numbers mean nothing)", file=sys.stderr)  # fmt: skip
        return 2
    settings, parts = settings_of(args), [p for p in args.parts.split(",") if p]
    if any(p not in PARTS for p in parts):
        raise SystemExit(f"--parts: got {args.parts!r}, allowed: {', '.join(PARTS)}")
    device = "cpu" if args.smoke else "cuda"
    deadline = time.monotonic() + args.seconds
    results: dict[str, Any] = {"host": host_info(device), "settings": dataclasses.asdict(settings), "smoke": args.smoke}
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as tmp:
        work = Path(tmp)
        settings.save(work / "settings.json")
        try:
            genomes = sample_genomes(settings, 64)
        except UserError as exc:  # data.root without the dataset, a budget no network meets
            print(f"bench_gpu.py: {exc}", file=sys.stderr)
            return 2
        (work / "genomes.json").write_text(json.dumps(genomes))
        run_parts(settings, parts, work, device, deadline, results, out)
    print(table(results))
    return 0


def run_parts(settings: Settings, parts: list[str], work: Path, device: str, deadline: float,
              results: dict[str, Any], out: Path) -> None:  # fmt: skip
    """The parts in order, each within its own bound and the overall deadline; the JSON written after each."""

    def part_deadline(part: str) -> float:
        return min(deadline, time.monotonic() + settings.part_s.get(part, PART_SECONDS[part]))

    for part in parts:
        best = results.get("first_epoch", {}).get("best", "base")
        if part == "first-epoch":
            results["first_epoch"] = part_first_epoch(settings, work, device, part_deadline(part))
        elif part == "sweep":
            variant = best if settings.sweep_variant == "best" else settings.sweep_variant
            results["sweep"] = part_sweep(settings, work, device, variant, part_deadline(part))
        elif part == "trials":
            auto_k = results.get("sweep", {}).get("best_k")
            runs = [parse_run(run, best, auto_k) for run in settings.trial_runs]
            results["trials"] = part_trials(settings, work, device, runs, settings.trial_s, part_deadline(part))
        else:
            results["cpu"] = part_trials(settings, work, "cpu", [("base", 1)], settings.cpu_s, part_deadline(part))
        results["derived"] = derived(results)
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
