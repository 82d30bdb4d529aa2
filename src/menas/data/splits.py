"""The splits of a dataset and the loaders over them: `build_loaders` reads the dataset a `DataConfig` names and
returns its `SearchData` (train, val and test loaders).

* mode "search": `search-train` (a class-balanced fraction of the training set, 10% per class by default as in the
  paper), `search-val` (a class-balanced part of the training set disjoint from search-train; the test split is
  never used during search) and `test` (the official test/val split, for final evaluation only);
* mode "final": the whole training set; mode "retrain": the whole training set minus a class-balanced held-out part;
* `preprocessing`: what a user must do to an image outside menas, recorded beside a network.

Splits are drawn from `DataConfig.seed`, so they are reproducible.

Imports `menas.config`, `menas.data.augment`, `menas.data.datasets`, `menas.data.loaders` and `menas.errors` from
menas.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from menas.config import DataConfig
from menas.data.augment import RandAugmentSpec
from menas.data.datasets import ImageArrays, class_balanced_split, default_input_size, folder_samples, load_arrays
from menas.data.loaders import DeviceLoader, FolderLoader, Loader, channel_stats, resize_uint8
from menas.errors import UserError
from menas.machine import default_workers

_NO_FLIP = {"digits", "synthetic"}  # flipping changes what a digit or a synthetic pattern means

Mode = Literal["search", "final", "retrain"]


# --------------------------------------------------------------------------------------------- entry point


@dataclass
class SearchData:
    """The three loaders of a trial plus what a model builder and the search record need.

    `split_indices["search_train"]` / `["search_val"]` index the dataset's official training set (for digits,
    the fixed 80% that plays that role); `split_digest` is a short hash of both, for the store.
    """

    train: Loader
    val: Loader
    test: Loader
    num_classes: int
    in_chans: int
    input_size: int
    split_indices: dict[str, np.ndarray] = field(repr=False)
    mode: Mode = "search"

    @property
    def split_digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.split_indices):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.split_indices[name], dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def build_loaders(
    cfg: DataConfig,
    device: torch.device | str = "cpu",
    *,
    mode: Mode = "search",
    channels_last: bool = True,
    holdout_fraction: float = 0.02,
) -> SearchData:
    """Reads the dataset `cfg` names and returns its loaders.

    Args:
        cfg: dataset, root, split fractions, batch sizes, seed, augmentation.
        device: where batches are produced (small datasets are stored there).
        mode: "search": train = search-train, val = search-val (both from the training set, disjoint);
            "final": train = the whole training set, val = the test split;
            "retrain": train = the whole training set minus a class-balanced `holdout_fraction` of every class,
            val = that held-out part (for the per-epoch curve of a retrain, so the test split is not looked at
            before the end). `test` is the official test split in every mode.
        channels_last: memory format of the image batches (match the model's).
        holdout_fraction: the held-out share of the training set in "retrain" mode.

    Raises:
        ValueError: unknown dataset, missing or malformed files (the message names the path or field).
    """
    device = torch.device(device)
    if mode not in ("search", "final", "retrain"):
        raise UserError(f"mode: got {mode!r}, allowed: search, final, retrain")
    if not 0.0 < holdout_fraction < 1.0:
        raise UserError(f"holdout_fraction: got {holdout_fraction!r}, allowed: 0 < fraction < 1")
    if cfg.randaugment:
        RandAugmentSpec.parse(cfg.randaugment)  # a bad spec is a one-line error before any data is read
    if cfg.dataset == "imagefolder":
        return _build_folder(cfg, device, mode, channels_last, holdout_fraction)
    train, test = load_arrays(cfg)
    return _build_in_memory(cfg, train, test, device, mode, channels_last, holdout_fraction)


def _split(
    labels: np.ndarray, cfg: DataConfig, mode: Mode, holdout_fraction: float = 0.02
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """(indices to record, training indices, held-out validation indices or None in "final" mode)."""
    if mode == "final":
        everything = np.arange(len(labels))
        return {"train": everything}, everything, None
    if mode == "retrain":
        train, holdout = class_balanced_split(labels, 1.0 - holdout_fraction, holdout_fraction, cfg.seed)
        return {"train": train, "holdout": holdout}, train, holdout
    train, val = class_balanced_split(labels, cfg.search_train_fraction, cfg.search_val_fraction, cfg.seed)
    return {"search_train": train, "search_val": val}, train, val


def _augmentation(cfg: DataConfig, size: int) -> tuple[int, bool]:
    """(random-crop padding, horizontal flip) of the training loader, after defaults and the master switch."""
    padding = cfg.crop_padding if cfg.crop_padding is not None else size // 8
    hflip = cfg.hflip if cfg.hflip is not None else cfg.dataset not in _NO_FLIP
    return (padding, hflip) if cfg.augment else (0, False)


def _on_device(
    arrays: ImageArrays, idx: np.ndarray | None, size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected samples as (uint8 images resized to `size`, int64 labels) on `device`."""
    images, labels = (arrays.images, arrays.labels) if idx is None else (arrays.images[idx], arrays.labels[idx])
    images_t = resize_uint8(torch.from_numpy(np.ascontiguousarray(images)).to(device), size)
    return images_t, torch.from_numpy(np.ascontiguousarray(labels)).to(device)


def _build_in_memory(
    cfg: DataConfig,
    train: ImageArrays,
    test: ImageArrays,
    device: torch.device,
    mode: Mode,
    channels_last: bool,
    holdout_fraction: float = 0.02,
) -> SearchData:
    size = cfg.input_size or default_input_size(cfg.dataset)
    padding, hflip = _augmentation(cfg, size)
    indices, train_idx, val_idx = _split(train.labels, cfg, mode, holdout_fraction)
    train_x, train_y = _on_device(train, train_idx, size, device)
    mean, std = channel_stats(train_x)  # from the training split only; val and test reuse them
    common = {"num_classes": train.num_classes, "mean": mean.tolist(), "std": std.tolist()}
    common["channels_last"] = channels_last

    def eval_loader(arrays: ImageArrays, idx: np.ndarray | None) -> DeviceLoader:
        return DeviceLoader(
            *_on_device(arrays, idx, size, device), batch_size=cfg.eval_batch_size, train=False, **common
        )

    train_loader = DeviceLoader(
        train_x,
        train_y,
        batch_size=cfg.batch_size,
        train=True,
        seed=cfg.seed,
        crop_padding=padding,
        hflip=hflip,
        randaugment=cfg.randaugment if cfg.augment else None,
        random_erasing=cfg.random_erasing if cfg.augment else 0.0,
        **common,
    )
    test_loader = eval_loader(test, None)
    val_loader = test_loader if val_idx is None else eval_loader(train, val_idx)
    in_chans = train.images.shape[1]
    return SearchData(train_loader, val_loader, test_loader, train.num_classes, in_chans, size, indices, mode)


def _folder_transforms(cfg: DataConfig, size: int) -> tuple[object, object]:
    """timm transforms (train, eval) producing uint8 tensors; normalisation happens on the device."""
    from timm.data import create_transform

    eval_tf = create_transform(size, is_training=False, normalize=False)
    if not cfg.augment:
        return eval_tf, eval_tf
    hflip = cfg.hflip if cfg.hflip is not None else True
    train_tf = create_transform(
        size,
        is_training=True,
        hflip=0.5 if hflip else 0.0,
        color_jitter=None,
        auto_augment=cfg.randaugment,
        normalize=False,
    )
    return train_tf, eval_tf


def _build_folder(
    cfg: DataConfig, device: torch.device, mode: Mode, channels_last: bool, holdout_fraction: float = 0.02
) -> SearchData:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    if cfg.root is None:
        raise UserError("data.root: got None, allowed: a folder with train/ and val/ (ImageNet layout)")
    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(f"data.root: {str(root)!r} is not a directory")
    train_samples, class_to_idx = folder_samples(root / "train")
    test_samples, _ = folder_samples(root / "val", class_to_idx)
    size = cfg.input_size or default_input_size(cfg.dataset)
    train_tf, eval_tf = _folder_transforms(cfg, size)
    labels = np.array([label for _, label in train_samples], dtype=np.int64)
    indices, train_idx, val_idx = _split(labels, cfg, mode, holdout_fraction)
    num_classes = len(class_to_idx)
    common = {
        "num_classes": num_classes,
        "input_size": size,
        "device": device,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "workers": default_workers() if cfg.workers is None else cfg.workers,
        "channels_last": channels_last,
        "seed": cfg.seed,
    }

    def loader(samples: list, transform: object, train: bool) -> FolderLoader:
        batch = cfg.batch_size if train else cfg.eval_batch_size
        erasing = cfg.random_erasing if cfg.augment else 0.0
        return FolderLoader(samples, transform, batch_size=batch, train=train, random_erasing=erasing, **common)

    train_loader = loader([train_samples[i] for i in train_idx], train_tf, True)
    test_loader = loader(test_samples, eval_tf, False)
    val_loader = test_loader if val_idx is None else loader([train_samples[i] for i in val_idx], eval_tf, False)
    return SearchData(train_loader, val_loader, test_loader, num_classes, 3, size, indices, mode)


# --------------------------------------------------------------------------------------------- preprocessing record


def preprocessing(data: SearchData) -> dict[str, object]:
    """What a user must do to an image outside menas so the network sees what it saw in training: input size,
    resize rule, channel count, and the per-channel `mean` and `std` the loaders normalised with (statistics of
    the training split: search-train in "search" mode, the whole training set in "final" mode; ImageNet's for
    image folders). Recorded in run.json and genome.json so exported graphs are usable without menas."""
    normalize = data.train.normalize
    size = data.input_size
    if isinstance(data.test, FolderLoader):
        resize = (
            f"shorter side to {math.floor(size / 0.875)} px (bilinear, antialiased), then a centre crop of "
            f"{size}x{size} (timm's evaluation transform); RGB"
        )
        stats = "ImageNet (timm's IMAGENET_DEFAULT_MEAN/STD)"
    else:
        resize = (
            f"the whole image to {size}x{size} px (bilinear, antialiased when shrinking, rounded back to "
            "0-255 integers), no crop"
        )
        stats = "search-train split" if data.mode == "search" else "whole training set"
    return {
        "input_size": size,
        "in_chans": data.in_chans,
        "resize": resize,
        "layout": "NCHW float32",
        "scale": "pixel values (0-255) / 255, then (x - mean) / std per channel",
        "mean": list(normalize.mean),
        "std": list(normalize.std),
        "statistics": stats,
    }
