"""One trial of a search: build a candidate from its genome (or inherit it from its parents' weights), train it
briefly, find its lottery ticket, fine-tune the ticket, and measure everything the search records.

A trial is resumable: training and fine-tuning write epoch checkpoints in the trial's folder, and the ticket
search in between is deterministic (seeded proposals, fixed calibration batches), so a trial interrupted at any
point and run again with the same job ends with the same result. Weight inheritance happens before training and
is deterministic too (seeded fresh child, fixed calibration batches); its decision is kept in `inherit.json`, so
a trial resumed from `train.ckpt` (which restores the weights) trains the same epochs without reading its parents'
files again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from menas.config import DataConfig, InheritConfig, LotteryConfig, TrainConfig, to_dict
from menas.data.datasets import SearchData, build_loaders, preprocessing, resolve_device
from menas.errors import TrialFailed
from menas.files import write_json
from menas.nn.builder import build_model
from menas.prune.lottery import calibration_batches, search_ticket
from menas.search.inherit import InheritCounts, inherit_from_files
from menas.search.ranking import FinalMetrics
from menas.space.cost import count_cost
from menas.space.genome import Genome
from menas.space.operators import Origin
from menas.train.checkpoint import RUN_FILE, WEIGHTS_FILE, save_weights
from menas.train.loop import History, evaluate, seed_trial, train


@dataclass(frozen=True)
class TrialJob:
    """Everything a worker needs to run one trial, in plain data (it crosses process boundaries)."""

    trial_id: int
    genome: str
    data: DataConfig
    train: TrainConfig
    lottery: LotteryConfig | None  # None: no ticket search (baselines, ablation)
    finetune_epochs: int  # epochs of fine-tuning: of the ticket, or of the unpruned candidate when none was kept
    workdir: str
    seed: int = 0
    device: str = "auto"
    finetune_lr_scale: float | None = None  # fine-tuning peak lr / training peak lr; None: the lottery's, else 1
    # individual weight sharing (a bred child of an inheriting search; `inherit` None: start from scratch)
    inherit: InheritConfig | None = None  # shrink-perturb, importance and the epochs of an inheriting child
    origin: dict[str, Any] | None = None  # the child's gene origin (`Origin.to_dict()`), parent k = parents[k]
    parent_genomes: tuple[str, ...] = ()  # the parents' final genomes (the tickets when tickets replaced them)
    parent_weights: tuple[str, ...] = ()  # their trials' model.safetensors; "": no done trial with weights
    inherit_calib_batches: int = 4  # training batches to recalibrate the inherited child's BN statistics on


@dataclass
class TrialResult(FinalMetrics):
    """What a trial measured. Accuracies are search-val top-1 in percent; times are wall seconds.

    Each field means one thing: `score` is the candidate after its `train.epochs` training epochs (before any
    fine-tuning); `ticket_score_before_ft`/`ticket_score` the kept ticket right after BN recalibration and after
    fine-tuning; `finetuned_score` the unpruned candidate after its fine-tune epochs when no ticket was kept; the
    final score (`final_score`) is the ticket's, else the fine-tuned candidate's, else `score`. Images count every
    image passed through a network: training, fine-tuning, BN calibration and scoring (`compute_images`)."""

    trial_id: int
    genome: str
    status: str  # "done" | "failed"
    macs: int
    params: int
    score: float | None = None  # the candidate after its training epochs
    epoch_times: list[float] = field(default_factory=list)  # every epoch, training and fine-tuning (with scoring)
    ticket: str | None = None  # the pruned genome that replaces the candidate, None when the candidate stays
    ticket_macs: int | None = None
    ticket_params: int | None = None
    ticket_score_before_ft: float | None = None  # after inheritance and BN recalibration
    ticket_score: float | None = None  # after fine-tuning
    finetuned_score: float | None = None  # the unpruned candidate after fine-tuning (no ticket kept)
    checkpoint: str | None = None
    train_s: float = 0.0  # the candidate's training epochs (scoring included)
    lottery_s: float = 0.0  # ticket search: proposals, inheritance, calibration, scoring
    finetune_s: float = 0.0  # fine-tune epochs (scoring included)
    images: int = 0  # images trained on (training and fine-tune passes)
    epochs: int = 0  # epochs run (training and fine-tuning)
    eval_s: float = 0.0  # search-val scoring inside training and fine-tuning epochs (part of train_s, finetune_s)
    worker: str = ""  # "host:pid" of the process that ran the trial ("" when it never started)
    error: str = ""
    train_epoch_s: list[float] = field(default_factory=list)  # the candidate's training passes (no scoring)
    finetune_epoch_s: list[float] = field(default_factory=list)  # the fine-tune training passes (no scoring)
    images_per_epoch: int = 0  # training images per epoch (search-train)
    finetune_epochs: int = 0  # fine-tune epochs run (of the ticket, or of the candidate when none was kept)
    calib_images: int = 0  # images passed through for BN recalibration (ticket search, inheritance)
    eval_images: int = 0  # search-val images scored: after epochs and in the ticket search
    # what weight inheritance did (None: the trial did not try): {"counts": {copied, sliced, padded, fresh},
    # "fallback": reason it trained from scratch or None, "epochs": training epochs run, "epochs_saved":
    # train.epochs - epochs, "calib_images", "seconds"}
    inherited: dict[str, Any] | None = None

    @property
    def compute_images(self) -> int:
        """Every image passed through a network by this trial (`compute.images` counts the forward-only ones 1/3)."""
        return self.images + self.calib_images + self.eval_images


#: The ticket search's record in a trial folder: parent, every proposal (MACs, params, scores), the ticket.
LOTTERY_FILE = "lottery.json"
#: Weight inheritance's decision in a trial folder (`TrialResult.inherited`), read back when the trial resumes.
INHERIT_FILE = "inherit.json"

_DATA_CACHE: dict[str, SearchData] = {}

#: A trial's epoch checkpoints (training, fine-tuning): they let an interrupted trial resume, nothing more.
TRAIN_CHECKPOINT, FINETUNE_CHECKPOINT = "train.ckpt", "finetune.ckpt"
EPOCH_CHECKPOINTS = (TRAIN_CHECKPOINT, FINETUNE_CHECKPOINT)


def drop_epoch_checkpoints(workdir: str | Path) -> None:
    """Deletes a finished trial's epoch checkpoints (`EPOCH_CHECKPOINTS`). Kept, they were ~66 of a demo-sized trial
    folder's ~76 MB, and the evidence benchmark's 21 runs filled 45 GB of disk with them; the weights stay in
    model.safetensors."""
    for name in EPOCH_CHECKPOINTS:
        (Path(workdir) / name).unlink(missing_ok=True)


def load_data(cfg: DataConfig, device: torch.device) -> SearchData:
    """The trial's loaders, read once per process and configuration (small datasets stay on the device)."""
    key = json.dumps({"data": to_dict(cfg), "device": str(device)}, sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time: a worker runs trials of one search
        _DATA_CACHE[key] = build_loaders(cfg, device)
    return _DATA_CACHE[key]


def run_trial(job: TrialJob, on_epoch: Callable[[str, Any], None] | None = None) -> TrialResult:
    """Runs a trial to the end. A non-finite loss or out-of-memory gives a failed result, never an exception;
    anything else (a bug, a user mistake) propagates. `on_epoch(phase, stats)` is called after every training
    ("train") and fine-tuning ("finetune") epoch, for progress displays."""
    genome = Genome.from_str(job.genome)
    device = resolve_device(job.device)
    data = load_data(job.data, device)
    cost = count_cost(genome, data.input_size, data.in_chans, data.num_classes)
    result = TrialResult(job.trial_id, job.genome, "done", cost.macs, cost.params, worker=_worker())
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        _run(job, genome, data, workdir, result, on_epoch)
    except TrialFailed as exc:
        result.status, result.error = "failed", str(exc)
    return result


def _run(
    job: TrialJob,
    genome: Genome,
    data: SearchData,
    workdir: Path,
    result: TrialResult,
    on_epoch: Callable[[str, Any], None] | None,
) -> None:
    def progress(phase: str) -> Callable[[Any], None] | None:
        return None if on_epoch is None else lambda stats: on_epoch(phase, stats)

    model, train_cfg = _start(job, genome, data, workdir, result)
    owner = {"trial_id": job.trial_id}  # with the genome: a stale checkpoint of another trial is refused
    _train_candidate(model, train_cfg, job, data, workdir, result, progress("train"), owner)
    final_model, final_genome = model, genome
    if job.lottery is not None:
        tic = time.perf_counter()
        calib = calibration_batches(data.train, job.lottery.calib_batches, epoch=job.train.epochs)
        found = search_ticket(model, calib, data.val, job.lottery, random.Random(job.seed), data.input_size)
        result.lottery_s = time.perf_counter() - tic
        result.calib_images += found.calib_images
        result.eval_images += found.scored_images
        if found.chosen is not None:
            final_model, final_genome = found.ticket_model, found.ticket_genome
            ticket_cost = count_cost(final_genome, data.input_size, data.in_chans, data.num_classes)
            result.ticket = final_genome.to_str()
            result.ticket_macs, result.ticket_params = ticket_cost.macs, ticket_cost.params
            result.ticket_score_before_ft = result.ticket_score = found.ticket_score
    if job.finetune_epochs > 0:
        tic = time.perf_counter()
        scale = job.finetune_lr_scale
        if scale is None:
            scale = job.lottery.finetune_lr_scale if job.lottery is not None else 1.0
        ft_cfg = job.train.finetune(job.finetune_epochs, data.train.batch_size, scale)
        ft_history = train(final_model, data.train, data.val, ft_cfg, checkpoint_path=workdir / FINETUNE_CHECKPOINT,
                           progress=progress("finetune"), owner=owner)  # fmt: skip
        result.finetune_s = time.perf_counter() - tic
        _account(result, ft_history, data)
        result.finetune_epoch_s = [e.train_seconds for e in ft_history.epochs]
        result.finetune_epochs = len(ft_history.epochs)
        if result.ticket is not None:
            result.ticket_score = ft_history.val_top1
        else:
            result.finetuned_score = ft_history.val_top1
    if job.lottery is not None:  # every proposal's cost and score beside the candidate's (the report's Fig. 4c)
        write_json(
            workdir / LOTTERY_FILE,
            found.to_record(
                result.ticket_score if result.ticket else None, result.finetune_epochs if result.ticket else 0
            ),
        )
    path = workdir / WEIGHTS_FILE
    save_weights(final_model, final_genome, path)
    # beside the weights, as `menas train` does: the folder is a checkpoint folder, and export/evaluate know the
    # data config and the normalisation the network was trained with
    record = {"genome": final_genome.to_str(), "trial_id": job.trial_id, "data": to_dict(job.data),
              "train": to_dict(train_cfg or job.train), "preprocessing": preprocessing(data)}  # fmt: skip
    write_json(workdir / RUN_FILE, record)
    result.checkpoint = str(path)


def _start(
    job: TrialJob, genome: Genome, data: SearchData, workdir: Path, result: TrialResult
) -> tuple[torch.nn.Module, TrainConfig | None]:
    """The candidate before training (built from the genome, or inherited from the parents' weights) and its
    training recipe: `job.train`, with `inherit.epochs` epochs when it inherited (None for 0 epochs)."""
    seed_trial(job.seed)  # weight initialisation below draws from torch's default generator
    with torch.random.fork_rng(devices=[]):  # loading the parents draws too: a fallback starts as a scratch trial
        inherited = _inherit(job, genome, data, workdir)
    model = inherited.pop("model", None) if inherited is not None else None
    if model is None:
        model = build_model(genome, data.num_classes, data.in_chans)
    result.inherited = inherited
    if inherited is None:
        return model, job.train
    result.calib_images += inherited["calib_images"]
    return model, dataclasses.replace(job.train, epochs=inherited["epochs"]) if inherited["epochs"] else None


def _train_candidate(
    model: torch.nn.Module,
    train_cfg: TrainConfig | None,
    job: TrialJob,
    data: SearchData,
    workdir: Path,
    result: TrialResult,
    progress: Callable[[Any], None] | None,
    owner: dict[str, Any],
) -> None:
    """Trains the candidate (`train.ckpt` every epoch) and records its score; with no recipe (an inherited child
    with 0 epochs) only scores it as recalibrated."""
    tic = time.perf_counter()
    result.images_per_epoch = len(data.train) * data.train.batch_size
    if train_cfg is None:
        scores = evaluate(model, data.val, amp=job.train.amp, channels_last=job.train.channels_last)
        result.score, result.eval_s = scores["top1"], result.eval_s + scores["seconds"]
        result.eval_images += data.val.num_samples
        result.train_s = time.perf_counter() - tic
        return
    history = train(model, data.train, data.val, train_cfg, checkpoint_path=workdir / TRAIN_CHECKPOINT,
                    progress=progress, owner=owner)  # fmt: skip
    result.train_s = time.perf_counter() - tic
    _account(result, history, data)
    result.train_epoch_s = [e.train_seconds for e in history.epochs]
    result.score = history.val_top1


def _inherit(job: TrialJob, genome: Genome, data: SearchData, workdir: Path) -> dict[str, Any] | None:
    """The child's weights from its parents' files when the job asks for inheritance (None: it does not), as the
    `TrialResult.inherited` record plus the "model" (absent when it trains from scratch: a fallback, whose reason
    the record names, or a resumed trial whose `train.ckpt` restores the weights anyway)."""
    if job.inherit is None or job.origin is None:
        return None
    record_path = workdir / INHERIT_FILE
    if (workdir / TRAIN_CHECKPOINT).is_file() and record_path.is_file():  # resumed: it holds the weights
        return json.loads(record_path.read_text())
    tic = time.perf_counter()
    full = job.train.epochs
    epochs = full if job.inherit.epochs is None else job.inherit.epochs
    missing = [k for k, path in enumerate(job.parent_weights) if not path]
    found = None
    if missing:
        reason = f"parent {missing[0]} ({job.parent_genomes[missing[0]]}): no done trial with a weights file"
    else:
        calib = calibration_batches(data.train, job.inherit_calib_batches, epoch=0)
        found = inherit_from_files(
            genome, Origin.from_dict(job.origin), job.parent_weights,
            [Genome.from_str(g) for g in job.parent_genomes], data.num_classes, data.in_chans, job.seed,
            importance=job.inherit.importance, shrink=job.inherit.shrink, perturb=job.inherit.perturb,
            calib_batches=calib, channels_last=job.train.channels_last,
        )  # fmt: skip
        reason = found.fallback
    inherited = found is not None and found.model is not None
    record = {
        "counts": (found.counts if found is not None else InheritCounts()).to_dict(),
        "fallback": reason,
        "epochs": epochs if inherited else full,
        "epochs_saved": full - epochs if inherited else 0,
        "calib_images": sum(len(x) for x in calib) if inherited else 0,
        "seconds": time.perf_counter() - tic,
    }
    write_json(record_path, record)
    return {**record, "model": found.model} if inherited else record


def _worker() -> str:
    """This process as "host:pid", recorded with each trial it runs (pool and Ray workers differ)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _account(result: TrialResult, history: History, data: SearchData) -> None:
    result.epoch_times.extend(history.epoch_seconds)
    result.eval_s += sum(e.eval_seconds for e in history.epochs)
    result.epochs += len(history.epochs)
    result.images += len(history.epochs) * len(data.train) * data.train.batch_size
    scored = sum(e.val_top1 is not None for e in history.epochs)
    result.eval_images += scored * data.val.num_samples
