"""Dataset readers: files on disk (or a seeded generator) to images and labels, and what a dataset looks like.

* readers for Fashion-MNIST (IDX files), CIFAR-10/100 (python-pickle layout, via torchvision), ImageFolder trees
  (ImageNet layout, via torchvision: the (path, label) samples that `FolderLoader`'s workers read), scikit-learn's
  digits and a seeded synthetic dataset; nothing is downloaded;
* `class_balanced_split`, the class-balanced draw behind every split (digits' fixed test split here; the search and
  retrain splits in `menas.data.splits`);
* `dataset_shape`: a dataset's input size, channels and classes from its file headers, without loading images.

Imports `menas.config` and `menas.errors` from menas.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from menas.config import DataConfig
from menas.errors import UserError

#: Where the Debian package `dataset-fashion-mnist` installs the IDX files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
#: Root used for CIFAR when `DataConfig.root` is not set (torchvision's usual `./data`).
CIFAR_ROOT = "data"

_IN_CHANS = {"fashion-mnist": 1, "cifar10": 3, "cifar100": 3, "imagefolder": 3, "digits": 1, "synthetic": 1}
_DIGITS_TEST_FRACTION = 0.2  # digits has no official test split: a fixed class-balanced 20% plays that role
_FIXED_SEED = 20240611  # content seed for synthetic data and the digits test split (independent of DataConfig.seed)


# --------------------------------------------------------------------------------------------- in-memory arrays


@dataclass(frozen=True)
class ImageArrays:
    """A small dataset held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise UserError(f"images: got shape {self.images.shape} {self.images.dtype}, allowed: (N, C, H, W) uint8")
        if len(self.labels) != len(self.images):
            raise UserError(f"labels: got {len(self.labels)} labels for {len(self.images)} images")


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file (the MNIST format, optionally gzipped) into a numpy array.

    Format: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then each dimension as a
    big-endian int32, then the data.

    Raises:
        ValueError: the file is not IDX, not uint8, or truncated (the message names the path).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not a uint8 IDX file (magic {raw[:4].hex() or 'missing'}, expected 000008xx)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">i4")) if len(raw) >= header else ()
    if len(shape) != ndim or len(raw) - header != math.prod(shape):
        raise UserError(f"{path}: truncated IDX file (header {shape}, {len(raw) - header} data bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_shape(path: str | Path) -> tuple[int, ...]:
    """The shape an IDX file's header declares (reads only the header, also of a gzipped file)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            dims = f.read(4 * magic[3]) if len(magic) == 4 else b""
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read IDX file ({exc})") from None
    if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or len(dims) != 4 * magic[3]:
        raise UserError(f"{path}: not a uint8 IDX file (magic {magic.hex() or 'missing'}, expected 000008xx)")
    return tuple(int(d) for d in np.frombuffer(dims, dtype=">i4"))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _fashion_files(root: Path, prefix: str) -> tuple[Path, Path]:
    """(images, labels) IDX files of one Fashion-MNIST split ("train" or "t10k") in `root` or in torchvision's
    `root/FashionMNIST/raw`."""
    if not root.is_dir():
        raise UserError(f"data.root: {str(root)!r} is not a directory (Fashion-MNIST IDX files expected)")
    candidates = [root, root / "FashionMNIST" / "raw"]
    folder = next((c for c in candidates if _find_idx(c, "train-images-idx3-ubyte")), None)
    if folder is None:
        raise UserError(
            f"data.root: no train-images-idx3-ubyte[.gz] in {str(root)!r} or {str(candidates[1])!r} (Fashion-MNIST)"
        )
    images, labels = (_find_idx(folder, f"{prefix}-{kind}-ubyte") for kind in ("images-idx3", "labels-idx1"))
    if images is None or labels is None:
        raise UserError(f"data.root: missing {prefix}-images-idx3-ubyte or {prefix}-labels-idx1-ubyte in {folder}")
    return images, labels


def load_fashion_mnist(root: str | Path) -> tuple[ImageArrays, ImageArrays]:
    """Fashion-MNIST (train, test) from IDX files in `root` or in torchvision's `root/FashionMNIST/raw`."""
    splits = []
    for prefix in ("train", "t10k"):
        paths = _fashion_files(Path(root), prefix)
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{paths[0]}: got images {images.shape} and labels {labels.shape}, allowed: (N,H,W), (N,)")
        splits.append(ImageArrays(images[:, None].copy(), labels.astype(np.int64), 10))
    return splits[0], splits[1]


def _cifar_files(root: str | Path, num_classes: int) -> type:
    """torchvision's CIFAR class for `num_classes`, after checking that its files exist under `root`."""
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if num_classes == 10 else CIFAR100
    folder = Path(root) / base.base_folder
    names = [name for name, _ in base.train_list + base.test_list] + [base.meta["filename"]]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise UserError(f"data.root: missing {folder / missing[0]} (CIFAR-{num_classes} python-pickle layout)")
    return base


def load_cifar(root: str | Path, num_classes: Literal[10, 100]) -> tuple[ImageArrays, ImageArrays]:
    """CIFAR-10 or CIFAR-100 (train, test) from torchvision's python-pickle layout under `root`; never downloads.

    The files are read by torchvision's dataset classes; only their md5 check is replaced by an existence check,
    so that a re-packed or test copy in the same layout loads too.
    """
    base = _cifar_files(root, num_classes)
    folder = Path(root) / base.base_folder

    class _Cifar(base):  # type: ignore[misc, valid-type]
        def _check_integrity(self) -> bool:
            return True  # existence was checked above; md5 sums only match the official archive

        def _load_meta(self) -> None:
            self.classes = []  # class names are not needed; labels come from the batch files

    splits = []
    for train in (True, False):
        try:
            ds = _Cifar(str(root), train=train, download=False)
        except Exception as exc:  # any unpickling/reshaping failure means a bad or foreign file
            raise UserError(f"data.root: cannot read CIFAR-{num_classes} files in {folder} ({exc})") from None
        images = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))
        labels = np.asarray(ds.targets, dtype=np.int64)
        _check_labels(labels, num_classes, str(folder))
        splits.append(ImageArrays(images, labels, num_classes))
    return splits[0], splits[1]


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{where}: labels span {labels.min()}..{labels.max()}, allowed: 0..{num_classes - 1}")


def load_digits() -> tuple[ImageArrays, ImageArrays]:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes; shipped with scikit-learn, no download).

    There is no official test split, so a fixed class-balanced 20% (constant seed) is used as `test`.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise UserError("data.dataset: 'digits' needs scikit-learn (pip install 'menas[digits]')") from None

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    keep, test = class_balanced_split(labels, 1.0 - _DIGITS_TEST_FRACTION, _DIGITS_TEST_FRACTION, _FIXED_SEED)
    return ImageArrays(images[keep], labels[keep], 10), ImageArrays(images[test], labels[test], 10)


def make_synthetic(
    num_classes: int = 10,
    train_per_class: int = 500,
    test_per_class: int = 100,
    size: int = 16,
    seed: int = _FIXED_SEED,
) -> tuple[ImageArrays, ImageArrays]:
    """A seeded, learnable toy dataset: one smooth random pattern per class, randomly shifted, plus noise.

    A small CNN separates the classes within an epoch or two, so tests can assert clearly-above-chance accuracy.
    """
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((num_classes, 1, 4, 4), dtype=np.float32))
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).numpy()

    def draw(per_class: int) -> ImageArrays:
        labels = np.repeat(np.arange(num_classes), per_class)
        shifts = rng.integers(-2, 3, size=(len(labels), 2))
        images = np.stack([np.roll(templates[c], tuple(s), axis=(1, 2)) for c, s in zip(labels, shifts, strict=True)])
        images = images + rng.normal(0.0, 0.25, size=images.shape)
        return ImageArrays(np.clip(images * 255.0, 0, 255).astype(np.uint8), labels.astype(np.int64), num_classes)

    return draw(train_per_class), draw(test_per_class)


# --------------------------------------------------------------------------------------------- ImageFolder


def folder_samples(folder: Path, class_to_idx: dict[str, int] | None = None) -> tuple[list, dict[str, int]]:
    """(path, label) samples of an ImageFolder-layout directory, with one-line errors naming the path."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise UserError(f"data.root: missing split folder {str(folder)!r} (expected train/ and val/ with class dirs)")
    try:
        classes, found = find_classes(folder)
    except FileNotFoundError:
        raise UserError(f"data.root: {str(folder)!r} has no class folders") from None
    if class_to_idx is not None and classes != sorted(class_to_idx):
        raise UserError(f"data.root: class folders of {str(folder)!r} differ from those of train/")
    class_to_idx = class_to_idx or found
    samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = np.bincount([label for _, label in samples], minlength=len(class_to_idx))
    for name, idx in class_to_idx.items():
        if counts[idx] == 0:
            raise UserError(
                f"data.root: class folder {str(folder / name)!r} has no images ({', '.join(IMG_EXTENSIONS)})"
            )
    return samples, class_to_idx


def _folder_classes(cfg: DataConfig) -> list[str]:
    """The class names of an image folder: train/'s subfolders (one directory listing; val/ must exist)."""
    if cfg.root is None:
        raise UserError("data.root: got None, allowed: a folder with train/ and val/ (ImageNet layout)")
    root = Path(cfg.root)
    if not root.is_dir():
        raise UserError(f"data.root: {str(root)!r} is not a directory")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UserError(
                f"data.root: missing split folder {str(root / split)!r} (expected train/ and val/ with class dirs)"
            )
    classes = sorted(entry.name for entry in os.scandir(root / "train") if entry.is_dir())
    if not classes:
        raise UserError(f"data.root: {str(root / 'train')!r} has no class folders")
    return classes


# --------------------------------------------------------------------------------------------- class-balanced split


def class_balanced_split(
    labels: np.ndarray | Sequence[int], train_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint class-balanced index sets: `train_fraction` and `val_fraction` of every class.

    Per class c with n_c samples, round(f * n_c) (at least 1; val capped at what train leaves) indices are drawn
    without replacement with a
    `numpy.random.Generator` seeded by `seed`. The train draw does not depend on `val_fraction`, so changing the
    held-out size never changes search-train.

    Returns:
        (train, val): sorted int64 index arrays into `labels`.

    Raises:
        ValueError: a fraction outside (0, 1], or a class too small to give both sets at least one sample.
    """
    for name, value in (("search_train_fraction", train_fraction), ("search_val_fraction", val_fraction)):
        if not 0.0 < value <= 1.0:
            raise UserError(f"data.{name}: got {value!r}, allowed: 0 < fraction <= 1")
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_train = max(1, round(train_fraction * len(members)))
        n_val = max(1, min(round(val_fraction * len(members)), len(members) - n_train))  # rounding never overlaps
        if n_train + n_val > len(members):
            raise UserError(
                f"data.search_val_fraction: class {c} has {len(members)} samples, too few for "
                f"{n_train} search-train + {n_val} search-val"
            )
        order = rng.permutation(members)
        train.append(order[:n_train])
        val.append(order[n_train : n_train + n_val])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# --------------------------------------------------------------------------------------------- what a config names


def default_input_size(dataset: str) -> int:
    """32 px for the small datasets (MobileNetV3's five stride-2 stages need a multiple of 32), 224 for folders."""
    return 224 if dataset == "imagefolder" else 32


def dataset_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """(input size, input channels, classes) of the dataset `cfg` names, cheaply: what a search needs to set its
    budget, without loading images (a search's own process never builds loaders; trials do, where they run).

    Checks that the files are there (Fashion-MNIST: the IDX headers are read; CIFAR: the batch files exist; an
    image folder: train/ and val/ exist and the classes are train/'s subfolders, no file is listed) and raises
    the same one-line errors as `build_loaders`. Anything inside the files is checked when a trial loads them.
    """
    if cfg.randaugment and cfg.dataset != "imagefolder":
        raise UserError(f"data.randaugment: got {cfg.randaugment!r}, allowed: null unless dataset is imagefolder")
    size = cfg.input_size or default_input_size(cfg.dataset)
    if cfg.dataset == "fashion-mnist":
        for prefix in ("train", "t10k"):
            images, _ = _fashion_files(Path(cfg.root or FASHION_MNIST_ROOT), prefix)
            shape = read_idx_shape(images)
            if len(shape) != 3:
                raise UserError(f"{images}: got IDX shape {shape}, allowed: (N, H, W)")
        return size, 1, 10
    if cfg.dataset in ("cifar10", "cifar100"):
        classes = 10 if cfg.dataset == "cifar10" else 100
        _cifar_files(cfg.root or CIFAR_ROOT, classes)
        return size, 3, classes
    if cfg.dataset == "imagefolder":
        return size, 3, len(_folder_classes(cfg))
    if cfg.dataset == "digits":
        import importlib.util

        if importlib.util.find_spec("sklearn") is None:
            raise UserError("data.dataset: 'digits' needs scikit-learn (pip install 'menas[digits]')")
        return size, 1, 10
    if cfg.dataset == "synthetic":
        return size, 1, 10  # make_synthetic's defaults
    raise UserError(f"data.dataset: got {cfg.dataset!r}, allowed: {', '.join(_IN_CHANS)}")


def load_arrays(cfg: DataConfig) -> tuple[ImageArrays, ImageArrays]:
    """(train, test) arrays of the in-memory dataset `cfg` names (every dataset but imagefolder)."""
    if cfg.dataset == "fashion-mnist":
        return load_fashion_mnist(cfg.root or FASHION_MNIST_ROOT)
    if cfg.dataset in ("cifar10", "cifar100"):
        return load_cifar(cfg.root or CIFAR_ROOT, 10 if cfg.dataset == "cifar10" else 100)
    if cfg.dataset == "digits":
        return load_digits()
    if cfg.dataset == "synthetic":
        return make_synthetic()
    raise UserError(f"data.dataset: got {cfg.dataset!r}, allowed: {', '.join(_IN_CHANS)}")
