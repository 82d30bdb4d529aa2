"""Batch loaders with one interface (`Loader`): batches of normalised float images and int64 labels on the device.

* `DeviceLoader` keeps a small dataset as one uint8 tensor on the training device and augments whole batches there
  (faster than a DataLoader with workers on a small CPU: see BENCHMARKS.md, "Training");
* `FolderLoader` wraps a torchvision DataLoader with workers for datasets that do not fit in memory;
* both normalise on the device (`renormalize` changes the statistics), shard a training loader over the processes of
  a torchrun (`shard`), and apply RandAugment and random erasing from `menas.data.augment` when asked.

Every random choice comes from a generator seeded by the data seed and the epoch (`epoch_seed`), so an epoch's
batches are identical after a resume.

Imports `menas.data.augment` and `menas.errors` from menas.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from menas.data.augment import BatchRandAugment, random_erasing
from menas.errors import UserError

# --------------------------------------------------------------------------------------------- loaders


class Loader(Protocol):
    """What the trainer consumes: batches of (float images NCHW in channels_last on `device`, int64 labels)."""

    device: torch.device
    batch_size: int
    num_samples: int
    num_classes: int
    in_chans: int
    input_size: int

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration use the shuffling/augmentation of this epoch (deterministic per epoch)."""


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed for one epoch's shuffling and augmentation, derived from the data seed and the epoch;
    `stream` > 0 gives independent seeds for other draws of the same epoch (RandAugment, random erasing)."""
    entropy = [seed, epoch] + ([stream] if stream else [])
    return int(np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resizes uint8 images (N, C, H, W) to size x size once (bilinear, antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    shrink = size < max(images.shape[-2:])
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8, device=images.device)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (in [0, 1] units) of uint8 images (N, C, H, W), accumulated in float64."""
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].double().div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float().cpu(), std.float().cpu()


class _Normalize:
    """uint8 (N, C, H, W) -> float32 channels_last, (x / 255 - mean) / std, as one multiply-add on the device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, channels_last: bool) -> None:
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)  # what export records
        self.scale = (1.0 / (255.0 * std_t)).to(device)
        self.shift = (-mean_t / std_t).to(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # one output allocation and one pass reading uint8, instead of a float copy normalised in further passes
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device, memory_format=self.memory_format)
        return torch.addcmul(self.shift, images, self.scale, out=out)


@functools.lru_cache(maxsize=16)
def _crop_grids(h: int, w: int, wp: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat offsets of an h x w window inside rows of width wp: (plain, mirrored), each (H * W,) int64."""
    rows = torch.arange(h, device=device).view(h, 1) * wp
    cols = torch.arange(w, device=device).view(1, w)
    return (rows + cols).flatten(), (rows + (w - 1) - cols).flatten()


def crop_flip_index(
    offsets: torch.Tensor,
    shifts: torch.Tensor | None,
    flips: torch.Tensor | None,
    shape: tuple[int, int, int],
    padding: int,
) -> torch.Tensor:
    """Flat indices that crop and flip a batch out of zero-padded images stored contiguously.

    Args:
        offsets: (B,) flat offset of each sample's padded image (sample index x C x (H+2p) x (W+2p)).
        shifts: (B, 2) crop offsets in [-padding, padding] (rows, columns), or None for the centre.
        flips: (B,) booleans (mirror the columns), or None.
        shape: (C, H, W) of the output images.
        padding: the zero padding p stored around every image.

    Returns:
        (B * C * H * W,) int64 indices for `flat_store.gather(0, index)`: index arithmetic plus one gather costs
        less than 4-D advanced indexing, padding and a separate mirror pass.
    """
    c, h, w = shape
    hp, wp = h + 2 * padding, w + 2 * padding
    plain, mirrored = _crop_grids(h, w, wp, offsets.device)
    base = offsets + (padding * wp + padding)
    if shifts is not None:
        base = base + shifts[:, 0] * wp + shifts[:, 1]
    base = base.view(-1, 1, 1) + torch.arange(c, device=offsets.device).view(1, c, 1) * (hp * wp)  # (B, C, 1)
    # One full-size allocation, then in place: with two live temporaries of this size glibc's malloc hands the
    # memory back to the OS on every call, and the page faults then cost far more than the arithmetic.
    if flips is None:
        return (plain + base).view(-1)
    index = torch.where(flips.view(-1, 1, 1).expand(-1, c, 1), mirrored, plain)
    index += base
    return index.view(-1)


def random_crop_flip(
    images: torch.Tensor, shifts: torch.Tensor | None, flips: torch.Tensor | None, padding: int
) -> torch.Tensor:
    """Batch augmentation on the device: random crop from a zero-padded image, then horizontal flip.

    Args:
        images: (B, C, H, W), any dtype.
        shifts: (B, 2) integer offsets in [-padding, padding] (rows, columns), or None for no crop.
        flips: (B,) booleans, or None for no flip.
        padding: zero padding on each side used by the crop.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4).contiguous() if padding else images.contiguous()
    offsets = torch.arange(b, device=images.device) * padded[0].numel()
    index = crop_flip_index(offsets, shifts if padding else None, flips, (c, h, w), padding)
    return padded.view(-1).gather(0, index).view(b, c, h, w)


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device, non_blocking=True)


def _part(tensor: torch.Tensor | None, part: slice) -> torch.Tensor | None:
    return None if tensor is None else tensor[part]


def _check_shardable(train: bool, batch_size: int, num_samples: int, world: int) -> None:
    """A loader shards only for training, and only when each of `world` ranks gets an equal slice of a batch."""
    if not train:
        raise UserError("shard: only a training loader is sharded (evaluation runs whole on every rank)")
    if batch_size % world or min(batch_size, num_samples) % world:
        raise UserError(
            f"data.batch_size: got {batch_size}, allowed: a multiple of the {world} processes "
            "(each takes an equal slice of every training batch)"
        )


class DeviceLoader:
    """Batches from a small dataset held as one uint8 tensor on the training device.

    Training loaders shuffle and augment (random crop with zero padding, optional horizontal flip) whole batches
    on the device with random numbers drawn once per epoch from a `torch.Generator` seeded by
    `epoch_seed(seed, epoch)`; they drop the last partial batch. Evaluation loaders keep the order and every
    sample. No worker processes, no per-sample Python. Optional RandAugment (`BatchRandAugment`, on the uint8
    batch after crop and flip) and random erasing (on the normalised batch) draw from a second generator per
    epoch, so they are reproducible too.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        num_classes: int,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        seed: int = 0,
        crop_padding: int = 0,
        hflip: bool = False,
        channels_last: bool = True,
        randaugment: str | None = None,
        random_erasing: float = 0.0,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise UserError(f"images: got {images.dtype} {tuple(images.shape)}, allowed: uint8 (N, C, H, W)")
        if len(images) == 0:
            raise UserError("images: got an empty dataset, allowed: at least one sample")
        self.labels = labels.to(images.device, torch.int64)
        self.device = images.device
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.num_samples, self.num_classes = len(images), num_classes
        self.in_chans, self.input_size = images.shape[1], images.shape[-1]
        self.crop_padding, self.hflip = (crop_padding, hflip) if train else (0, False)
        self.augment = self.crop_padding > 0 or self.hflip
        self.randaugment = BatchRandAugment(randaugment) if train and randaugment else None
        self.random_erasing = random_erasing if train else 0.0
        # training images are stored zero-padded once, so a batch is cropped and flipped by a single `take`
        p = self.crop_padding
        self._store = F.pad(images, (p, p, p, p)).contiguous() if p else images.contiguous()
        self.normalize = _Normalize(mean, std, self.device, channels_last)
        self.mean, self.std = list(mean), list(std)
        self.epoch = 0
        self.rank, self.world = 0, 1  # see `shard`

    def shard(self, rank: int, world: int) -> DeviceLoader:
        """This loader for rank `rank` of `world` processes (`menas.train.distributed`): the same batches in the same
        seed-derived order, each global batch of `batch_size` cut into `world` equal slices of which this view
        yields slice `rank` (training loaders; `batch_size` stays the global batch, for the lr and EMA scaling).
        The images are shared, not copied."""
        _check_shardable(self.train, self.batch_size, self.num_samples, world)
        view = copy.copy(self)
        view.rank, view.world = rank, world
        return view

    @property
    def images(self) -> torch.Tensor:
        """The stored uint8 images (N, C, H, W), without the crop padding."""
        p, size = self.crop_padding, self.input_size
        return self._store[:, :, p : p + size, p : p + size] if p else self._store

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.train:
            return max(1, self.num_samples // self.batch_size)
        return math.ceil(self.num_samples / self.batch_size)

    def _epoch_randomness(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Order, crop offsets and flips for this epoch, drawn on the CPU and moved to the device in one go."""
        if not self.train:
            return torch.arange(self.num_samples, device=self.device), None, None
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=g)
        p = self.crop_padding
        shifts = torch.randint(-p, p + 1, (self.num_samples, 2), generator=g) if p > 0 else None
        flips = torch.rand(self.num_samples, generator=g) < 0.5 if self.hflip else None
        return _to(order, self.device), _to(shifts, self.device), _to(flips, self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, shifts, flips = self._epoch_randomness()
        extra = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=1))  # RandAugment, erasing
        size = min(self.batch_size, self.num_samples)
        shape = (self.in_chans, self.input_size, self.input_size)
        local = size // self.world  # one process: the whole batch
        for i in range(len(self)):
            part = slice(i * size + self.rank * local, i * size + (self.rank + 1) * local)
            idx = order[part]
            if self.augment:
                index = crop_flip_index(
                    idx * self._store[0].numel(), _part(shifts, part), _part(flips, part), shape, self.crop_padding
                )
                images = self._store.view(-1).gather(0, index).view(len(idx), *shape)
            else:
                images = self._store[idx]
            if self.randaugment is not None:
                images = self.randaugment(images, extra)
            batch = self.normalize(images)
            if self.random_erasing > 0:
                batch = random_erasing(batch, self.random_erasing, extra)
            yield batch, self.labels[idx]


class _FileDataset(torch.utils.data.Dataset):
    """(path, label) samples read with torchvision's default image loader and one transform."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: object) -> None:
        self.samples, self.transform = list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[index]
        return self.transform(default_loader(path)), label


class _GlobalBatches(torch.utils.data.Sampler):
    """Sample indices of a folder loader's batches: global batches of `batch_size` (a permutation drawn from
    `generator` for training, dropping the last partial batch; the dataset's order for evaluation), of which rank
    `rank` of `world` takes its equal slice (`FolderLoader.shard`)."""

    def __init__(self, num_samples: int, batch_size: int, train: bool, generator: torch.Generator) -> None:
        self.num_samples, self.batch_size, self.train, self.generator = num_samples, batch_size, train, generator
        self.rank, self.world = 0, 1

    def __len__(self) -> int:
        if self.train:
            return max(1, self.num_samples // self.batch_size)
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_samples, generator=self.generator) if self.train else None
        size = min(self.batch_size, self.num_samples) if self.train else self.batch_size
        local = size // self.world
        for i in range(len(self)):
            start = i * size + self.rank * local
            stop = start + local if self.world > 1 else min(start + size, self.num_samples)
            yield (order[start:stop] if order is not None else torch.arange(start, stop)).tolist()


class FolderLoader:
    """Batches from image files via a torchvision DataLoader (workers, pinned memory), normalised on the device.

    Transforms are timm's (`create_transform`: random-resized crop, flip, optional RandAugment for training;
    resize + centre crop for evaluation) producing uint8 tensors, so only uint8 crosses process boundaries and
    the host-to-device copy. Shuffling and the workers' seeds come from a generator reseeded in `set_epoch`, so
    an epoch is reproducible when `workers > 0` (with `workers == 0`, augmentation uses torch's global RNG).
    Under torchrun a training loader is sharded like `DeviceLoader` (`shard`): the same global batches, each
    rank reading only its slice's files.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: object,
        *,
        num_classes: int,
        input_size: int,
        batch_size: int,
        device: torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        seed: int = 0,
        workers: int = 4,
        channels_last: bool = True,
        random_erasing: float = 0.0,
    ) -> None:
        self.device, self.batch_size, self.train, self.seed = device, batch_size, train, seed
        self.random_erasing = random_erasing if train else 0.0
        self.num_samples, self.num_classes, self.in_chans, self.input_size = len(samples), num_classes, 3, input_size
        self.normalize = _Normalize(mean, std, device, channels_last)
        self.generator = torch.Generator()
        self.epoch = 0
        self.batches = _GlobalBatches(len(samples), batch_size, train, self.generator)
        self._dataset, self._workers = _FileDataset(samples, transform), workers
        self.loader = self._data_loader()

    def _data_loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self._dataset,
            batch_sampler=self.batches,
            num_workers=self._workers,
            pin_memory=self.device.type == "cuda",
            generator=self.generator,
            persistent_workers=False,  # fresh workers per epoch get seeds from the reseeded generator
        )

    @property
    def rank(self) -> int:
        return self.batches.rank

    @property
    def world(self) -> int:
        return self.batches.world

    def shard(self, rank: int, world: int) -> FolderLoader:
        """This loader for rank `rank` of `world` processes (see `DeviceLoader.shard`): every rank draws the same
        global batches (the same seeded permutation) and reads only its slice's files; `batch_size` stays the
        global batch. Augmentation draws come from each rank's own workers, so augmented images differ from a
        one-process run's (the samples per global batch do not)."""
        _check_shardable(self.train, self.batch_size, self.num_samples, world)
        view = copy.copy(self)
        view.generator = torch.Generator()
        view.batches = copy.copy(self.batches)
        view.batches.generator, view.batches.rank, view.batches.world = view.generator, rank, world
        view.loader = view._data_loader()
        return view

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        extra = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, stream=1))
        for images, labels in self.loader:
            batch = self.normalize(images.to(self.device, non_blocking=True))
            if self.random_erasing > 0:
                batch = random_erasing(batch, self.random_erasing, extra)
            yield batch, labels.to(self.device, non_blocking=True)


def renormalize(loader: Loader, mean: Sequence[float], std: Sequence[float]) -> None:
    """Makes `loader` normalise with another `mean`/`std` (those a network was trained with, when they differ
    from the split statistics this configuration gives, e.g. a network retrained on the whole training set)."""
    old = loader.normalize  # type: ignore[attr-defined]
    channels_last = old.memory_format == torch.channels_last
    loader.normalize = _Normalize(mean, std, loader.device, channels_last)  # type: ignore[attr-defined]
