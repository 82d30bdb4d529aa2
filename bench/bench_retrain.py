"""Retraining throughput with and without the retrain recipe's augmentation (issue 9: RandAugment must not make
the CPU the bottleneck; goal: with >= 0.8x the img/s without).

Measures `menas.train.loop.train` fed by `menas.data.loaders.DeviceLoader` on Fashion-MNIST at 32x32 (retrain split:
the
training set minus a 2% held-out part), batch 128, on a demo-sized network (a seeded MobileNet3-MT sample in the
demo's budget, 5.58M MACs, 1.89M params; the demo's winner had 5.77M MACs, 1.94M params), three variants:

* plain: random crop + flip only (the short recipe);
* randaugment: + `BatchRandAugment` "rand-m9-mstd0.5" on the uint8 batch (groups of 16 images, each its own draw);
* paper: + random erasing 0.2 on the normalised batch (the paper recipe's whole data path).

Each measurement is one epoch over the first `--batches` batches of the split (the training loop as a retrain
runs it: label smoothing, RMSpropTF, EMA, dropout). The variants alternate (plain, randaugment, paper, plain, ...)
so a slow spell of the shared machine hits each of them; ratios use the best repeat of each variant, medians are
printed too. The data path alone (augmentation without a model) is timed as well.

Usage:
    python bench/bench_retrain.py               # about 3 minutes on a quiet 2-core CPU
    python bench/bench_retrain.py --quick       # under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import subprocess
import time

import torch

from menas.config import DataConfig, RetrainConfig
from menas.data.device import resolve_device
from menas.data.loaders import DeviceLoader
from menas.data.splits import build_loaders
from menas.nn.builder import build_model
from menas.space.genome import Genome
from menas.train.loop import seed_trial, train

GENOME = Genome.from_str(
    "stem_c16_hs-ds_k3_c16_re|ir_k5_s2_m64_c16_re-ir_k3_m96_c16_re-ir_k3_m96_c16_re-ir_k5_m80_c16_re|"
    "ir_k7_s2_m80_c40_se_re|ir_k7_s2_m80_c80_se_hs-ir_k5_m400_c80_hs-ir_k5_m160_c80_hs-ir_k3_m480_c80_se_hs-"
    "ir_k5_m80_c80_se_hs-ir_k5_m320_c80_hs|ir_k3_m320_c56_hs-ir_k7_m280_c56_se_hs|ir_k3_m224_c120_se_hs-"
    "ir_k5_m600_c120_hs-ir_k5_m240_c120_hs|head_c720_f1280_hs"
)
VARIANTS = {"plain": (None, 0.0), "randaugment": ("rand-m9-mstd0.5", 0.0), "paper": ("rand-m9-mstd0.5", 0.2)}


def cpu_info() -> dict[str, object]:
    """CPU model and whether AVX-512 / AMX are there (they change CPU training speed a lot)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    return {
        "model": fields.get("Model name", platform.processor()).strip(),
        "cpus": fields.get("CPU(s)", "?").strip(),
        "avx512f": "avx512f" in flags,
        "amx": any(f.startswith("amx") for f in flags),
        "threads": torch.get_num_threads(),
    }


def loaders(base: DeviceLoader, batches: int) -> dict[str, DeviceLoader]:
    """One training loader per variant over the same first `batches` batches' worth of images."""
    n = batches * base.batch_size
    common = {"num_classes": base.num_classes, "batch_size": base.batch_size, "mean": base.mean, "std": base.std,
              "train": True, "seed": 0, "crop_padding": 4, "hflip": True}  # fmt: skip
    images, labels = base.images[:n].contiguous(), base.labels[:n]
    return {name: DeviceLoader(images, labels, randaugment=ra, random_erasing=erasing, **common)
            for name, (ra, erasing) in VARIANTS.items()}  # fmt: skip


def time_data_path(loader: DeviceLoader) -> float:
    """Images per second of iterating the loader alone (augmentation, normalisation), no model."""
    tic = time.perf_counter()
    count = sum(len(labels) for _, labels in loader)
    return count / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    parser.add_argument("--batches", type=int, default=None, help="batches per measured epoch (default 40)")
    parser.add_argument("--repeats", type=int, default=None, help="measurements per variant (default 4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (batches are augmented there)")
    parser.add_argument("--root", default=None, help="Fashion-MNIST folder (default: the dataset's usual)")
    args = parser.parse_args()
    batches = args.batches or (15 if args.quick else 40)
    repeats = args.repeats or (2 if args.quick else 4)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = build_loaders(DataConfig(root=args.root, input_size=32, batch_size=128), device, mode="retrain")
    variants = loaders(data.train, batches)
    cfg = dataclasses.replace(RetrainConfig.preset("short", epochs=1).train, threads=args.threads)
    seed_trial(0)
    model = build_model(GENOME, 10, 1).to(device)
    train(model, variants["plain"], None, cfg)  # warm-up: allocator, kernels
    results: dict[str, list[float]] = {name: [] for name in variants}
    data_path: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, loader in variants.items():
            history = train(model, loader, None, cfg)
            results[name].append(history.epochs[0].images_per_s)
            data_path[name].append(time_data_path(loader))
    best = {name: max(values) for name, values in results.items()}
    report = {
        "cpu": cpu_info(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "genome": GENOME.to_str(),
        "batches_per_epoch": batches,
        "repeats": repeats,
        "img_per_s": results,
        "best": best,
        "median": {name: statistics.median(values) for name, values in results.items()},
        "data_path_img_per_s_best": {name: max(values) for name, values in data_path.items()},
        "ratio_randaugment": best["randaugment"] / best["plain"],
        "ratio_paper": best["paper"] / best["plain"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
