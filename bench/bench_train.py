"""Training throughput of menas' trainer against plain PyTorch loops, plus memory and epoch/eval times.

Measures, on Fashion-MNIST at 32x32 (the search split: 10% per class of the 60,000 training images, batch 128):

* ours: `menas.train.loop.train` fed by `menas.data.datasets`'s device-resident loader (with its random crop + flip), on
  MobileNetV3-Large built by `menas.nn.builder` (timm's `mobilenetv3_large_100` if the builder is missing);
* (a) a plain channels_last loop on timm's `mobilenetv3_large_100` over pre-normalised, pre-batched tensors
  (no augmentation, no scheduler; same optimizer, loss and dropout): the ceiling of a hand-written loop;
* (b) the same plain loop fed by a torchvision DataLoader (PIL images, Resize, RandomCrop(32, padding=4), flip,
  ToTensor, Normalize), with `--loader-workers` workers and with none; ratios use the faster of the two.

The same variants also run on timm's `mobilenetv3_small_050` (a model ~30x cheaper, where the data path weighs
more), and each data path is timed alone, without a model.

Our trainer raises glibc's malloc thresholds (`menas.train.loop.tune_cpu_allocator`), which is process-wide, so ours
and the plain loops live in two separate worker processes; the parent interleaves their measurements (ours, a,
b, ours, ...) so a slow spell of the shared machine hits every variant. For transparency the ours-process also
times loop (a) after the tuning ("a_plain_tensors_tuned_malloc"): the gap between that and ours is what our
loader and bookkeeping cost. Ratios use the best repeat of each variant (interference only ever slows a run
down); medians are printed too. Then, in a fresh child process: peak RSS of a 3-epoch trial (train on
search-train, score search-val every epoch), the time of each epoch, and the time to evaluate the 10,000 test
images.

Usage:
    python bench/bench_train.py              # about 3 minutes on a quiet 2-core CPU
    python bench/bench_train.py --quick      # under a minute: 2% per class, 2 repeats, a 1-epoch trial
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from menas.config import DataConfig, TrainConfig
from menas.data.datasets import FASHION_MNIST_ROOT, load_fashion_mnist
from menas.data.splits import SearchData, build_loaders
from menas.train.loop import evaluate, seed_trial, train

BATCH = 128
SIZE = 32


# --------------------------------------------------------------------------------------------- models


def menas_model(num_classes: int = 10, in_chans: int = 1) -> tuple[nn.Module, str]:
    """MobileNetV3-Large from the menas builder, or timm's if the builder is not there yet."""
    try:
        from menas.nn.builder import build_model
        from menas.space.genome import MOBILENETV3_LARGE, Genome
    except ImportError:
        return timm_model("mobilenetv3_large_100"), "timm mobilenetv3_large_100"
    return build_model(Genome.from_str(MOBILENETV3_LARGE), num_classes, in_chans), "menas.nn.builder MobileNetV3-Large"


def timm_model(name: str) -> nn.Module:
    import timm

    # dropout 0.2 before the classifier, as in menas.nn.builder's default (timm's default is 0)
    model = timm.create_model(name, num_classes=10, in_chans=1, drop_rate=0.2)
    return model.to(memory_format=torch.channels_last)


def small_model() -> tuple[nn.Module, str]:
    return timm_model("mobilenetv3_small_050"), "timm mobilenetv3_small_050"


#: model key -> (factory of our trainer's model, the plain loops' model name in timm)
MODELS: dict[str, tuple[Callable[[], tuple[nn.Module, str]], str]] = {
    "large": (menas_model, "mobilenetv3_large_100"),
    "small050": (small_model, "mobilenetv3_small_050"),
}


# --------------------------------------------------------------------------------------------- batch sources


@dataclass
class Inputs:
    """The same search-train images in the three forms the variants consume."""

    data: SearchData  # ours
    tensors: tuple[torch.Tensor, torch.Tensor]  # (a): pre-normalised float images and labels
    feeders: dict[str, Callable[[], Iterator]]  # (b): DataLoader batch sources, by name


class PilDataset(torch.utils.data.Dataset):
    """What torchvision's FashionMNIST does per sample: uint8 array -> PIL image -> transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def dataloader_batches(images: np.ndarray, labels: np.ndarray, mean: float, std: float, workers: int) -> Callable:
    """(b): a torchvision DataLoader with the usual per-sample transforms."""
    from torchvision import transforms as T

    steps = [T.Resize(SIZE), T.RandomCrop(SIZE, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]
    loader = torch.utils.data.DataLoader(
        PilDataset(images, labels, T.Compose([*steps, T.Normalize([mean], [std])])),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    return lambda: iter(loader)


def tensor_batches(images: torch.Tensor, labels: torch.Tensor) -> Callable:
    """(a): pre-normalised float batches sliced from one tensor, fixed order, no augmentation."""

    def gen() -> Iterator:
        for i in range(len(images) // BATCH):
            yield images[i * BATCH : (i + 1) * BATCH], labels[i * BATCH : (i + 1) * BATCH]

    return gen


def device_loader_batches(loader) -> Callable:
    """Our training loader as a batch source, a new epoch (new shuffle and augmentation) per call."""
    epochs = iter(range(1_000_000))

    def gen() -> Iterator:
        loader.set_epoch(next(epochs))
        return iter(loader)

    return gen


def make_inputs(fraction: float, loader_workers: int) -> Inputs:
    cfg = DataConfig(batch_size=BATCH, input_size=SIZE, search_train_fraction=fraction)
    data = build_loaders(cfg, "cpu")
    loader = data.train
    norm = loader.normalize
    x_all = torch.addcmul(norm.shift, loader.images.float(), norm.scale).contiguous(memory_format=torch.channels_last)
    train_arrays, _ = load_fashion_mnist(cfg.root or FASHION_MNIST_ROOT)
    idx = data.split_indices["search_train"]
    raw, raw_labels = train_arrays.images[idx, 0], train_arrays.labels[idx]
    mean, std = float(raw.mean() / 255), float(raw.std() / 255)
    workers = sorted({loader_workers, 0})
    feeders = {f"b_dataloader_w{w}": dataloader_batches(raw, raw_labels, mean, std, w) for w in workers}
    return Inputs(data, (x_all, loader.labels), feeders)


# --------------------------------------------------------------------------------------------- measurements


def plain_loop(model: nn.Module, batches: Callable, steps: int) -> float:
    """Runs `steps` training steps of a plain loop; returns images per second (after 3 warm-up steps)."""
    from timm.optim import create_optimizer_v2

    opt = create_optimizer_v2(model, opt="rmsproptf", lr=0.008, weight_decay=1e-5, momentum=0.9, eps=1e-3)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()

    def run(n: int) -> int:
        seen = 0
        for step, (x, y) in enumerate(batches()):
            if step == n:
                break
            loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
        return seen

    run(3)
    tic = time.perf_counter()
    seen = run(steps)
    return seen / (time.perf_counter() - tic)


def ours(model: nn.Module, data: SearchData) -> float:
    """Images per second of `menas.train.loop.train` over one epoch of search-train (training pass only)."""
    history = train(model, data.train, None, TrainConfig(epochs=1, warmup_epochs=0.0))
    return history.epochs[0].images_per_s


def loader_only(batches: Callable) -> float:
    """Images per second of a batch source alone (no model): the data path's own cost."""
    tic, seen = time.perf_counter(), 0
    for _images, labels in batches():
        seen += len(labels)
    return seen / (time.perf_counter() - tic)


def worker(role: str, fraction: float, loader_workers: int, conn) -> None:
    """A measuring process: 'ours' (menas trainer, allocator tuned) or 'plain' (loops (a) and (b), untuned)."""
    torch.manual_seed(0)
    inputs = make_inputs(fraction, loader_workers)
    steps = len(inputs.data.train)
    models: dict[str, nn.Module] = {}
    sources: dict[str, str] = {}
    for key, (make_ours, timm_name) in MODELS.items():
        models[key], sources[key] = make_ours() if role == "ours" else (timm_model(timm_name), f"timm {timm_name}")
        models[key + "/a"] = timm_model(timm_name)
        if role == "ours":
            ours(models[key], inputs.data)  # warm-up epoch (also tunes the allocator)
    conn.send(sources)
    for command in iter(conn.recv, "stop"):
        key, variant = command
        if variant == "ours":
            conn.send(ours(models[key], inputs.data))
        elif variant.startswith("a_"):
            conn.send(plain_loop(models[key + "/a"], tensor_batches(*inputs.tensors), steps))
        elif variant == "data_path" and role == "ours":
            conn.send({"ours_device_loader": loader_only(device_loader_batches(inputs.data.train))})
        elif variant == "data_path":
            conn.send({name: loader_only(feed) for name, feed in inputs.feeders.items()})
        else:
            conn.send(plain_loop(models[key], inputs.feeders[variant], steps))


def throughput(args: argparse.Namespace) -> dict:
    """Interleaved repeats of every variant in the two worker processes; best and median images per second."""
    ctx = mp.get_context("spawn")
    pipes, procs = {}, []
    for role in ("ours", "plain"):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(role, args.fraction, args.loader_workers, child))
        proc.start()
        pipes[role], procs = parent, [*procs, proc]
    sources = {role: conn.recv() for role, conn in pipes.items()}

    def ask(role: str, command: object) -> object:
        pipes[role].send(command)
        return pipes[role].recv()

    b_names = [f"b_dataloader_w{w}" for w in sorted({args.loader_workers, 0})]
    out: dict = {}
    for key in args.models.split(","):
        plan = [("ours", "ours"), ("plain", "a_plain_tensors"), *[("plain", b) for b in b_names]]
        plan.append(("ours", "a_plain_tensors_tuned_malloc"))
        results: dict[str, list[float]] = {variant: [] for _, variant in plan}
        for r in range(args.repeats):
            for role, variant in plan:
                results[variant].append(ask(role, (key, variant)))
            print(
                f"  {key} repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items())
            )
        out[key] = {"model": sources["ours"][key], "plain_loop_model": sources["plain"][key], **summarise(results)}
    data_path = {k: v for role in ("ours", "plain") for k, v in ask(role, (None, "data_path")).items()}
    for conn in pipes.values():
        conn.send("stop")
    for proc in procs:
        proc.join(timeout=60)
    return {"models": out, "data_path_img_per_s": {k: round(v, 1) for k, v in data_path.items()}}


def summarise(results: dict[str, list[float]]) -> dict:
    """Best and median per variant, and the ratios of the best repeats."""
    best = {k: max(v) for k, v in results.items()}
    best_b = max(v for k, v in best.items() if k.startswith("b_"))
    return {
        "best_img_per_s": {k: round(v, 1) for k, v in best.items()},
        "median_img_per_s": {k: round(statistics.median(v), 1) for k, v in results.items()},
        "all_img_per_s": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "ratio_vs_a": round(best["ours"] / best["a_plain_tensors"], 3),
        "ratio_vs_b": round(best["ours"] / best_b, 3),
        "ratio_vs_a_tuned_malloc": round(best["ours"] / best["a_plain_tensors_tuned_malloc"], 3),
    }


# --------------------------------------------------------------------------------------------- trial (child)


def child_trial(epochs: int, fraction: float) -> None:
    """Runs in a fresh process: a trial of `epochs` epochs, then a 10,000-image evaluation; prints JSON."""
    rss_start = _rss_now_mb()
    data = build_loaders(DataConfig(batch_size=BATCH, input_size=SIZE, search_train_fraction=fraction), "cpu")
    seed_trial(0)
    model, source = menas_model(data.num_classes, data.in_chans)
    history = train(model, data.train, data.val, TrainConfig(epochs=epochs))
    scores = evaluate(model, data.test)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    epochs_out = [
        {
            "train_s": round(e.train_seconds, 2),
            "val_s": round(e.eval_seconds, 2),
            "img_per_s": round(e.images_per_s, 1),
            "val_top1": round(e.val_top1 or 0.0, 2),
        }
        for e in history.epochs
    ]
    result = {
        "model": source,
        "search_train_images": data.train.num_samples,
        "search_val_images": data.val.num_samples,
        "epochs": epochs_out,
        "test_images": scores["images"],
        "test_eval_s": round(scores["seconds"], 2),
        "test_top1": round(scores["top1"], 2),
        "rss_after_imports_mb": round(rss_start, 1),
        "peak_rss_mb": round(peak, 1),
    }
    print(json.dumps(result))


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 repeats on 2%% per class, a 1-epoch trial")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per variant (best is used)")
    parser.add_argument("--fraction", type=float, default=0.1, help="search-train fraction per class")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the memory/epoch-time trial")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers for baseline (b)")
    parser.add_argument("--models", default="large,small050", help="comma list of: " + ", ".join(MODELS))
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child-trial", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_trial:
        child_trial(args.epochs, args.fraction)
        return
    if args.quick:
        args.repeats, args.fraction, args.epochs = 2, 0.02, 1
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    print(f"machine: {machine}; threads {torch.get_num_threads()}; batch {BATCH}, {SIZE}x{SIZE}", flush=True)
    tic = time.perf_counter()
    results: dict = {"machine": machine, "threads": torch.get_num_threads(), "repeats": args.repeats}
    results["load_average_start"] = os.getloadavg()  # other processes on the cores distort every figure
    results["throughput"] = throughput(args)
    command = [
        sys.executable,
        __file__,
        "--child-trial",
        "--epochs",
        str(args.epochs),
        "--fraction",
        str(args.fraction),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    results["trial"] = json.loads(out.stdout.strip().splitlines()[-1])
    results["bench_seconds"] = round(time.perf_counter() - tic, 1)
    results["load_average_end"] = os.getloadavg()
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def report(results: dict) -> None:
    for t in results["throughput"]["models"].values():
        print(f"\ntraining throughput, {t['model']} (ours) vs plain loops on {t['plain_loop_model']} (img/s):")
        for name, best in t["best_img_per_s"].items():
            print(f"  {name:<30} best {best:8.1f}   median {t['median_img_per_s'][name]:8.1f}")
        print(f"  ratio ours / (a) plain loop on tensors:   {t['ratio_vs_a']:.3f}  (goal >= 1.0; best of repeats)")
        print(f"  ratio ours / (b) plain loop + DataLoader: {t['ratio_vs_b']:.3f}  (goal >= 1.3; vs the faster (b))")
        print(f"  ratio ours / (a) with the same malloc tuning: {t['ratio_vs_a_tuned_malloc']:.3f}")
    speeds = results["throughput"]["data_path_img_per_s"]
    print("\ndata path alone, no model (img/s): " + ", ".join(f"{k} {v:.0f}" for k, v in speeds.items()))
    trial = results["trial"]
    epochs, images = len(trial["epochs"]), trial["search_train_images"]
    print(f"\n{epochs}-epoch trial ({trial['model']}) on {images} search-train images:")
    for i, e in enumerate(trial["epochs"], 1):
        speed = f"{e['img_per_s']:.0f} img/s"
        print(f"  epoch {i}: train {e['train_s']:.2f} s ({speed}), val {e['val_s']:.2f} s, top-1 {e['val_top1']:.2f}%")
    print(
        f"  evaluate {trial['test_images']} test images: {trial['test_eval_s']:.2f} s (top-1 {trial['test_top1']:.2f}%)"
    )
    print(f"  peak RSS {trial['peak_rss_mb']:.0f} MiB (RSS after imports {trial['rss_after_imports_mb']:.0f} MiB)")
    print(f"\nbenchmark wall time: {results['bench_seconds']:.0f} s")
    loads = [" ".join(f"{x:.2f}" for x in results[k]) for k in ("load_average_start", "load_average_end")]
    print(f"load average (1/5/15 min) at start: {loads[0]}, at end: {loads[1]}")


if __name__ == "__main__":
    main()
