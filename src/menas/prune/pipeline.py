"""The one network pipeline: build a candidate, train it, search its lottery ticket, fine-tune the final network,
save it. A search trial (`menas.search.trial`) and `menas train` / `menas lottery` (`menas.cli.train`) run these
same steps; where they differ, the difference is a parameter the caller sets:

- the batches that recalibrate BN in the ticket search (`calib_epoch`): a trial takes the epoch after its
  training (`train.epochs`), `menas lottery` epoch 0 (it reads a finished network);
- the fine-tuning learning rate (`finetune_lr_scale`): a trial's job may set its own scale, else the lottery's;
- resumable fine-tuning (`checkpoint_path`, `owner`): a trial keeps `finetune.ckpt`, owned by its trial id;
  `menas lottery` fine-tunes without a checkpoint;
- what `run.json` records (`menas.train.checkpoint.run_record`: kind and provenance).

What the callers do around the steps stays with them: which network is fine-tuned (a trial: the ticket, else the
unpruned candidate; `menas lottery`: only a ticket), what lottery.json says when nothing was fine-tuned, the
checkpoint ownership checks before `menas train` writes, a trial's measurements and the CLI's messages.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from menas.config import LotteryConfig, TrainConfig
from menas.data.splits import SearchData
from menas.files import write_json
from menas.folders import LOTTERY_FILE, RUN_FILE, WEIGHTS_FILE
from menas.nn.builder import MenasNet, build_model
from menas.prune.recalibrate import calibration_batches
from menas.prune.tickets import LotteryResult, search_ticket
from menas.space.genome import Genome
from menas.train.checkpoint import save_weights
from menas.train.loop import EpochStats, History, seed_trial, train

Progress = Callable[[EpochStats], None] | None


def build_candidate(genome: Genome, data: SearchData, seed: int) -> MenasNet:
    """The untrained candidate for the data's classes and input channels, its weights drawn right after seeding
    torch's generators with `seed` (so the same seed builds the same network)."""
    seed_trial(seed)
    return build_model(genome, data.num_classes, data.in_chans)


def train_candidate(
    model: nn.Module,
    data: SearchData,
    cfg: TrainConfig,
    checkpoint_path: Path,
    *,
    owner: dict[str, Any] | None = None,
    resume: bool = True,
    progress: Progress = None,
) -> History:
    """Trains `model` in place on search-train with `cfg`, scoring search-val, with an epoch checkpoint at
    `checkpoint_path` (resumed unless `resume` is False; refused when it belongs to another genome or `owner`)."""
    return train(
        model, data.train, data.val, cfg, checkpoint_path=checkpoint_path, resume=resume, progress=progress, owner=owner
    )


def search_and_choose_ticket(
    model: MenasNet,
    data: SearchData,
    cfg: LotteryConfig,
    rng: random.Random,
    calib_epoch: int,
    admits: Callable[[Genome], bool] | None = None,
) -> LotteryResult:
    """The ticket search on a trained `model` (left unchanged): `cfg.calib_batches` search-train batches of epoch
    `calib_epoch` recalibrate BN, `rng` draws the proposals, search-val scores those `admits` lets through (all
    without it; a search's latency bound), and the ticket is chosen by `cfg.policy` (`LotteryResult.chosen`, None
    when the unpruned network stays)."""
    calib = calibration_batches(data.train, cfg.calib_batches, epoch=calib_epoch)
    return search_ticket(model, calib, data.val, cfg, rng, data.input_size, admits=admits)


def finetune_lr_scale(scale: float | None, lottery: LotteryConfig | None) -> float:
    """Fine-tuning peak lr / training peak lr: `scale` when given, else the lottery's, else 1 (no lottery)."""
    if scale is not None:
        return scale
    return lottery.finetune_lr_scale if lottery is not None else 1.0


def finetune(
    model: nn.Module,
    data: SearchData,
    train_cfg: TrainConfig,
    epochs: int,
    lr_scale: float,
    *,
    checkpoint_path: Path | None = None,
    owner: dict[str, Any] | None = None,
    progress: Progress = None,
) -> History:
    """Fine-tunes `model` in place for `epochs` epochs with the training recipe at `lr_scale` x its peak lr and no
    warmup (`TrainConfig.finetune`), scoring search-val; resumable from `checkpoint_path` when one is given."""
    cfg = train_cfg.finetune(epochs, data.train.batch_size, lr_scale)
    return train(model, data.train, data.val, cfg, checkpoint_path=checkpoint_path, progress=progress, owner=owner)


def write_lottery(folder: Path, found: LotteryResult, finetuned: float | None, finetune_epochs: int) -> Path:
    """lottery.json in `folder`: the parent, every proposal and the ticket with its score after `finetune_epochs`
    epochs of fine-tuning (`finetuned`; both only recorded with a ticket)."""
    return write_json(folder / LOTTERY_FILE, found.to_record(finetuned, finetune_epochs))


def save_network(folder: Path, model: nn.Module, genome: Genome, run_record: dict[str, Any] | None = None) -> Path:
    """The final network's weights (`model.safetensors`, the genome in their metadata) and, when given, its
    run.json (`menas.train.checkpoint.run_record`) in `folder`; returns the weights' path."""
    path = save_weights(model, genome, folder / WEIGHTS_FILE)
    if run_record is not None:
        write_json(folder / RUN_FILE, run_record)
    return path
