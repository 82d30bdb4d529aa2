"""Training and evaluation of one candidate network.

This module owns the inner loop of a trial: optimizer (timm's RMSpropTF or SGD), learning-rate schedule (timm's
step or cosine scheduler, stepped per update), label-smoothed cross entropy, optional EMA of the weights
(timm's `ModelEmaV3`), optional knowledge distillation from a teacher (`kd_loss`), mixed precision on CUDA,
channels_last, the non-finite and exploding loss guards, per-epoch statistics, and atomic checkpoints that resume
bit-identically on CPU. Under torchrun, `train` shards the loader and trains through DistributedDataParallel
(`menas.train.distributed`; nothing changes in one process).

A trainer consumes any `Loader`-like object (see `menas.data.loaders.Loader`): iterable of (images, labels) already on
the training device, with `device`, `batch_size`, `num_samples`, `num_classes` and `set_epoch(epoch)`.

Epoch checkpoints and the checks before resuming one are `menas.train.resume`'s.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from menas.config import TrainConfig
from menas.data.loaders import Loader
from menas.errors import TrialFailed, UserError
from menas.train import distributed
from menas.train.checkpoint import load_checkpoint, save_checkpoint
from menas.train.resume import (
    Parts,
    check_checkpoint_owner,
    check_payload_resumable,
    checkpoint_identity,
    checkpoint_payload,
    restore,
)

#: A loss above this many times its reference (its first value, or the chance level ln(classes) if lower) is a
#: failed run: such a loss has diverged even when it is not yet NaN.
EXPLODE_FACTOR = 100.0

# --------------------------------------------------------------------------------------------- results


@dataclasses.dataclass
class EpochStats:
    """What one training epoch did. `epoch` counts from 1; accuracies are in percent."""

    epoch: int
    lr: float  # learning rate of the epoch's last update
    train_loss: float  # mean label-smoothed training loss over the epoch's batches
    train_seconds: float  # wall time of the training pass
    eval_seconds: float  # wall time of scoring the validation split (0 when not scored this epoch)
    images_per_s: float  # training images per second of train_seconds
    val_top1: float | None = None
    val_top5: float | None = None
    val_loss: float | None = None

    @property
    def seconds(self) -> float:
        """Wall time of the epoch: training plus validation."""
        return self.train_seconds + self.eval_seconds


@dataclasses.dataclass
class History:
    """Per-epoch statistics of a training run (including epochs done before a resume)."""

    epochs: list[EpochStats] = dataclasses.field(default_factory=list)
    resumed_at: int | None = None  # epochs already done when this process resumed from a checkpoint

    @property
    def total_seconds(self) -> float:
        """Wall time of all epochs (training plus validation), summed over resumes."""
        return sum(e.seconds for e in self.epochs)

    @property
    def val_top1(self) -> float | None:
        """The last validation top-1 accuracy in percent (None if never scored)."""
        scored = [e.val_top1 for e in self.epochs if e.val_top1 is not None]
        return scored[-1] if scored else None

    @property
    def epoch_seconds(self) -> list[float]:
        return [e.seconds for e in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (JSON/YAML-friendly and loadable with `torch.load(weights_only=True)`)."""
        return {"epochs": [dataclasses.asdict(e) for e in self.epochs], "resumed_at": self.resumed_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls([EpochStats(**e) for e in data["epochs"]], data.get("resumed_at"))


# --------------------------------------------------------------------------------------------- seeding, precision


def seed_trial(seed: int) -> torch.Generator:
    """Seeds torch's default generators (CPU and every CUDA device) and returns a fresh `torch.Generator`.

    Weight initialisation and dropout draw from torch's default generator, so build the model right after this
    call to make a trial reproducible. NumPy's global RNG is left alone: menas passes explicit generators.
    """
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Stops glibc's malloc from handing freed memory back to the OS after every training step.

    A CPU training step frees and re-allocates many 0.1-10 MiB activation buffers; with glibc's defaults they
    can be mmap-ed/trimmed and page-faulted back in every step. Raising the mmap and trim thresholds (what
    `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` do) keeps them in the heap for reuse: faster training in a
    fresh process, no change where glibc's dynamic thresholds have already risen, the same peak memory.
    Process-wide and idempotent; a no-op where the C library is not glibc.

    Returns:
        True if the thresholds are (now) raised.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_threshold, 64 << 20) and libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):
        return False
    return _ALLOCATOR_TUNED


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an `amp` setting on a device, or None for full float32.

    "auto" is bf16 (fp16 without bf16 support) on CUDA and off elsewhere: on a CPU, bf16 autocast can make
    training slower rather than faster.
    """
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


# --------------------------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module, loader: Iterable, *, amp: str = "auto", channels_last: bool = True, confusion: bool = False
) -> dict[str, Any]:
    """Scores a model on every batch of a loader.

    Args:
        model: the network; put in eval mode for the pass, its previous mode restored afterwards.
        loader: yields (images, labels) on the device of the model (see `menas.data.loaders.Loader`).
        amp: autocast setting (see `amp_dtype`).
        channels_last: convert the model's parameters to channels_last first (in place; values unchanged).
        confusion: also count the confusion matrix (`menas evaluate`).

    Returns:
        {"top1", "top5" (percent; top-k with k = min(5, classes)), "loss" (mean plain cross entropy),
        "images", "seconds"}, and with `confusion` "confusion": counts[true class][predicted class].
    """
    device = next(model.parameters()).device
    if channels_last:  # outside inference mode: converted parameters must stay usable for training
        model.to(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        return _score(model, loader, device, amp_dtype(amp, device), confusion)
    finally:
        model.train(was_training)


@torch.inference_mode()
def _score(
    model: nn.Module, loader: Iterable, device: torch.device, dtype: torch.dtype | None, confusion: bool = False
) -> dict[str, Any]:
    start = time.perf_counter()
    correct1 = torch.zeros((), dtype=torch.int64, device=device)
    correct5, loss_sum = torch.zeros_like(correct1), torch.zeros((), dtype=torch.float64, device=device)
    matrix: torch.Tensor | None = None
    count = 0
    for images, labels in loader:
        with _autocast(device, dtype):
            logits = model(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(labels[:, None])
        correct1 += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        if confusion:  # counts of (true, predicted) pairs, kept on the device
            classes = logits.shape[1]
            pairs = torch.bincount(labels * classes + top[:, 0], minlength=classes * classes)
            matrix = pairs if matrix is None else matrix + pairs
        count += len(labels)
    if count == 0:
        raise UserError("evaluate: the loader yielded no samples")
    top1, top5, loss = (correct1.item(), correct5.item(), loss_sum.item())  # one device sync
    seconds = time.perf_counter() - start
    scores: dict[str, Any] = {
        "top1": 100.0 * top1 / count,
        "top5": 100.0 * top5 / count,
        "loss": loss / count,
        "images": count,
        "seconds": seconds,
    }
    if matrix is not None:
        side = math.isqrt(len(matrix))
        scores["confusion"] = matrix.view(side, side).tolist()
    return scores


# --------------------------------------------------------------------------------------------- losses


def kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Knowledge distillation (Hinton et al.): (1 - alpha) * CE(student, labels) + alpha * T^2 *
    KL(softmax(teacher / T) || softmax(student / T)), the KL averaged over the batch. T^2 keeps the soft term's
    gradients on the scale of the hard one's as T changes."""
    ce = F.cross_entropy(student, labels, label_smoothing=label_smoothing)
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), reduction="batchmean", log_target=True
    )
    return (1.0 - alpha) * ce + alpha * t * t * kl


class _Criterion:
    """The training loss: label-smoothed cross entropy, or `kd_loss` against a teacher when one is given. The
    teacher runs in eval mode under inference mode (no graph, no BN statistics updates)."""

    def __init__(self, cfg: TrainConfig, teacher: nn.Module | None) -> None:
        self.cfg, self.teacher = cfg, teacher
        if teacher is not None:
            teacher.eval()

    def __call__(self, logits: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        with torch.inference_mode():
            soft = self.teacher(images)
        soft = soft.clone().to(logits.dtype)  # a normal tensor: inference tensors cannot be saved for backward
        return kd_loss(logits, soft, labels, self.cfg.kd_alpha, self.cfg.kd_temperature, self.cfg.label_smoothing)


def check_explosion(history: History, num_classes: int, factor: float = EXPLODE_FACTOR) -> None:
    """Raises `TrialFailed` when the last epoch's training or validation loss is above `factor` x its reference:
    the first epoch's value, or the chance-level loss ln(num_classes) when that is lower (so a loss that is
    already absurd after the first epoch counts too)."""
    last = history.epochs[-1]
    for name in ("train_loss", "val_loss"):
        values = [getattr(e, name) for e in history.epochs if getattr(e, name) is not None]
        if not values or getattr(last, name) is None:
            continue
        reference = min(values[0], math.log(max(2, num_classes)))
        if values[-1] > factor * reference:
            what = name.replace("_", " ")
            raise TrialFailed(
                f"{what} exploded at epoch {last.epoch}: {values[-1]:.4g}, over {factor:g}x its "
                f"reference {reference:.3g} (first value {values[0]:.3g}); lower the learning rate "
                "or use the short recipe"
            )


# --------------------------------------------------------------------------------------------- training parts


def _build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    if cfg.optimizer == "rmsproptf":
        # TF-style RMSprop: decay 0.9 (timm's alpha), momentum 0.9, eps 1e-3 (EfficientNet/MobileNetV3 recipe)
        extra: dict[str, Any] = {"eps": cfg.opt_eps}
    else:
        extra = {"nesterov": True}
    return create_optimizer_v2(
        model, opt=cfg.optimizer, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, **extra
    )


def _build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    """timm scheduler stepped per update: linear warmup from 0, then step decay (or cosine to 0)."""
    from timm.scheduler import CosineLRScheduler, StepLRScheduler

    total = cfg.epochs * steps_per_epoch
    warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
    common = {"warmup_t": warmup, "warmup_lr_init": 0.0, "warmup_prefix": True, "t_in_epochs": False}
    if cfg.schedule == "cosine":
        return CosineLRScheduler(optimizer, t_initial=max(1, total - warmup + 1), lr_min=0.0, **common)
    decay_t = max(1, round(cfg.decay_epochs * steps_per_epoch))
    return StepLRScheduler(optimizer, decay_t=decay_t, decay_rate=cfg.decay_rate, **common)


def _build_parts(model: nn.Module, cfg: TrainConfig, loader: Loader) -> Parts:
    from timm.utils import ModelEmaV3

    optimizer = _build_optimizer(model, cfg, cfg.peak_lr(loader.batch_size))
    scheduler = _build_scheduler(optimizer, cfg, len(loader))
    ema = None
    if cfg.ema:
        ema = ModelEmaV3(model, decay=cfg.ema_decay_for(loader.batch_size), use_warmup=cfg.ema_warmup)
    dtype = amp_dtype(cfg.amp, loader.device)
    scaler = torch.amp.GradScaler(loader.device.type) if dtype == torch.float16 else None
    return Parts(optimizer, scheduler, ema, scaler, dtype)


# --------------------------------------------------------------------------------------------- the loop


class _LossLog:
    """Per-step losses kept on the device, checked for non-finite values every `every` steps and at the end.

    A check is a host sync on CUDA (and 6 small ops on CPU), so it runs every 25 steps; the buffer still names
    the exact first bad step.
    """

    def __init__(self, steps: int, device: torch.device, epoch: int, every: int = 25) -> None:
        self.values = torch.zeros(steps, dtype=torch.float32, device=device)
        self.every, self.epoch, self.checked, self.count = every, epoch, 0, 0

    def add(self, loss: torch.Tensor) -> None:
        self.values[self.count] = loss.detach()
        self.count += 1
        if self.count - self.checked >= self.every:
            self.check()

    def check(self) -> None:
        window = self.values[self.checked : self.count]
        bad = torch.nonzero(~torch.isfinite(window))
        if len(bad):
            step = self.checked + int(bad[0, 0])
            kind = "NaN" if math.isnan(float(self.values[step])) else "infinite"
            raise TrialFailed(f"loss became {kind} at epoch {self.epoch} step {step + 1}")
        self.checked = self.count

    def mean(self) -> float:
        self.check()
        return float(self.values[: self.count].mean()) if self.count else float("nan")


def _train_step(
    model: nn.Module, parts: Parts, criterion: _Criterion, images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    with _autocast(images.device, parts.amp):
        loss = criterion(model(images), images, labels)
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        loss.backward()
        parts.optimizer.step()
    return loss


def _train_epoch(
    model: nn.Module, parts: Parts, criterion: _Criterion, loader: Loader, epoch: int, num_updates: int
) -> tuple[float, int, int]:
    """One pass over the training loader. Returns (mean loss, updates done so far, images seen)."""
    model.train()
    loader.set_epoch(epoch)
    log = _LossLog(len(loader), loader.device, epoch + 1)
    images_seen = 0
    for step, (images, labels) in enumerate(loader):
        parts.scheduler.step_update(num_updates + 1)  # lr of update t (1-based): warmup reaches the peak at t=W
        try:
            loss = _train_step(model, parts, criterion, images, labels)
        except torch.cuda.OutOfMemoryError as exc:
            raise TrialFailed(f"out of memory at epoch {epoch + 1} step {step + 1}") from exc
        num_updates += 1
        if parts.ema is not None:
            parts.ema.update(distributed.unwrap(model), step=num_updates)
        log.add(loss)
        images_seen += len(labels)
    return log.mean(), num_updates, images_seen


def train(
    model: nn.Module,
    train_loader: Loader,
    val_loader: Iterable | None,
    cfg: TrainConfig,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = True,
    progress: Callable[[EpochStats], None] | None = None,
    owner: dict[str, Any] | None = None,
    teacher: nn.Module | None = None,
) -> History:
    """Trains `model` in place for `cfg.epochs` epochs, scoring `val_loader` every `cfg.eval_every` epochs and
    after the last.

    Args:
        model: the network; moved to the loader's device (and channels_last when configured).
        train_loader: search-train batches (see `menas.data.loaders.Loader`); `set_epoch` makes each epoch
            reproducible.
        val_loader: search-val batches, or None to skip scoring.
        cfg: optimizer, schedule, regularisation, precision, seed.
        checkpoint_path: if set, a checkpoint is written atomically after every epoch; with `resume`, an existing
            one is loaded and training continues after its last finished epoch (bit-identical on CPU).
        resume: False ignores (and then overwrites) an existing checkpoint.
        progress: called with each finished epoch's `EpochStats` (after its checkpoint is written).
        owner: who the checkpoint belongs to besides the model's genome (e.g. {"trial_id": 3}); a checkpoint of
            another genome or owner is refused, never resumed (see `checkpoint_identity`).
        teacher: distil from this network (on the loader's device, same classes): the loss becomes `kd_loss` with
            `cfg.kd_alpha` and `cfg.kd_temperature`; the teacher stays in eval mode and is never updated.

    Returns:
        The `History` of all epochs. With `cfg.ema`, the EMA weights are copied into `model` at the end, so
        `model` is what was scored.

    Raises:
        TrialFailed: the training loss became NaN/infinite (names epoch and step), a loss exploded (see
            `check_explosion`), or CUDA ran out of memory.
        UserError: the checkpoint belongs to another network, or does not match `cfg` or the loader.
    """
    device = train_loader.device
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.tune_allocator and device.type == "cpu":
        tune_cpu_allocator()
    model.to(device=device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    train_loader, net = distributed.shard(train_loader), distributed.wrap(model, device)  # as is in one process
    parts = _build_parts(model, cfg, train_loader)
    criterion = _Criterion(cfg, teacher)
    history, start = History(), 0
    identity = checkpoint_identity(model, owner)
    if checkpoint_path is not None and resume and Path(checkpoint_path).is_file():
        payload = load_checkpoint(checkpoint_path)
        check_checkpoint_owner(checkpoint_path, identity, payload)
        check_payload_resumable(payload, cfg, train_loader, checkpoint_path)
        restore(model, parts, payload, checkpoint_path)
        history, start = History.from_dict(payload["history"]), payload["epoch"]
        history.resumed_at = start
    else:
        seed_trial(cfg.seed)
    eval_model = parts.ema.module if parts.ema is not None else model
    num_updates = start * len(train_loader)
    for epoch in range(start, cfg.epochs):
        tic = time.perf_counter()
        loss, num_updates, seen = _train_epoch(net, parts, criterion, train_loader, epoch, num_updates)
        loss, seen = distributed.mean(loss, device), seen * distributed.world_size()  # over the ranks
        distributed.average_buffers(model, parts.ema.module if parts.ema is not None else None)
        train_seconds = time.perf_counter() - tic
        stats = EpochStats(
            epoch=epoch + 1,
            lr=parts.optimizer.param_groups[0]["lr"],
            train_loss=loss,
            train_seconds=train_seconds,
            eval_seconds=0.0,
            images_per_s=seen / train_seconds if train_seconds > 0 else 0.0,
        )
        last = epoch + 1 == cfg.epochs
        if val_loader is not None and (last or (epoch + 1) % cfg.eval_every == 0):
            scores = evaluate(eval_model, val_loader, amp=cfg.amp, channels_last=cfg.channels_last)
            stats.val_top1, stats.val_top5, stats.val_loss = scores["top1"], scores["top5"], scores["loss"]
            stats.eval_seconds = scores["seconds"]
        history.epochs.append(stats)
        check_explosion(history, train_loader.num_classes)
        if checkpoint_path is not None and distributed.is_main():
            payload = checkpoint_payload(model, parts, cfg, train_loader, epoch + 1, history.to_dict(), identity)
            save_checkpoint(checkpoint_path, payload)
        distributed.barrier()  # the other ranks read the checkpoint only once rank 0 wrote it
        if progress is not None:
            progress(stats)
    if parts.ema is not None:
        model.load_state_dict(parts.ema.module.state_dict())
    return history
