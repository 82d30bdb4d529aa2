"""One trial of a search: build a candidate from its genome (or inherit it from its parents' weights), train it
briefly, find its lottery ticket, fine-tune the ticket, and measure everything the search records. The steps are
`menas.prune.pipeline`'s, shared with `menas train` / `menas lottery`; the trial adds inheritance, its checkpoints'
owner, the measurements and the `TrialRecord`. Under a latency budget (`TrialJob.latency_table`) it records the
predicted latency of the candidate and of its ticket, and a ticket proposal predicted over the bound is not kept.

A trial is resumable: training and fine-tuning write epoch checkpoints in the trial's folder, and the ticket
search in between is deterministic (seeded proposals, fixed calibration batches), so a trial interrupted at any
point and run again with the same job ends with the same result. Weight inheritance happens before training and
is deterministic too (seeded fresh child, fixed calibration batches); its decision is kept in `inherit.json`, so
a trial resumed from `train.ckpt` (which restores the weights) trains the same epochs without reading its parents'
files again.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from menas.config import DataConfig, InheritConfig, LotteryConfig, TrainConfig, to_dict
from menas.data.device import resolve_device
from menas.data.splits import SearchData, build_loaders, preprocessing
from menas.errors import TrialFailed, UserError
from menas.files import write_json
from menas.folders import FINETUNE_CHECKPOINT, INHERIT_FILE, TRAIN_CHECKPOINT
from menas.latency.predict import Predictor
from menas.latency.table import LatencyTable
from menas.prune.pipeline import (
    build_candidate,
    finetune,
    finetune_lr_scale,
    save_network,
    search_and_choose_ticket,
    train_candidate,
    write_lottery,
)
from menas.prune.recalibrate import calibration_batches
from menas.prune.tickets import LotteryResult
from menas.search.inherit import InheritCounts, inherit_from_files
from menas.search.record import TrialRecord
from menas.space.cost import count_cost
from menas.space.genome import Genome
from menas.space.operators import Origin
from menas.train.checkpoint import read_genome, run_record
from menas.train.loop import History, evaluate, seed_trial


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
    # a promotion to the next rung (`menas.search.fidelity`): the weights file of the network it continues ("": the
    # parent has none, a failed trial); None: the trial starts from a fresh network
    init_weights: str | None = None
    # a latency table (an absolute path: a latency budget's, or the latency objective's) and the bound, ms (None:
    # no bound); the trial records its networks' predicted latency, and a ticket proposal predicted over the bound
    # is not scored nor kept. No table: no latency
    latency_table: str | None = None
    latency_ms_max: float | None = None


_DATA_CACHE: dict[str, SearchData] = {}
_PREDICTORS: dict[str, Predictor] = {}


def load_data(cfg: DataConfig, device: torch.device) -> SearchData:
    """The trial's loaders, read once per process and configuration (small datasets stay on the device)."""
    key = json.dumps({"data": to_dict(cfg), "device": str(device)}, sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time: a worker runs trials of one search
        _DATA_CACHE[key] = build_loaders(cfg, device)
    return _DATA_CACHE[key]


def run_trial(job: TrialJob, on_epoch: Callable[[str, Any], None] | None = None) -> TrialRecord:
    """Runs a trial to the end and returns its record (the spec's fields left at their defaults but trial_id and
    genome; `weights` is the absolute path of the final weights). A non-finite loss or running out of CUDA memory in
    any phase gives a failed record, never an exception, and frees the memory the trial held for the other trials
    on its GPU; anything else (a bug, a user mistake) propagates. `on_epoch(phase, stats)` is called after every
    training ("train") and fine-tuning ("finetune") epoch, for progress displays."""
    genome = Genome.from_str(job.genome)
    device = resolve_device(job.device)
    data = load_data(job.data, device)
    cost = count_cost(genome, data.input_size, data.in_chans, data.num_classes)
    measured: dict[str, Any] = {"macs": cost.macs, "params": cost.params, **_COUNTED}
    predictor = latency_predictor(job, data)
    if predictor is not None:
        measured["latency_ms"] = predictor.latency_ms(genome)
    workdir = Path(job.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    status, error = "done", None
    try:
        _run(job, genome, data, workdir, measured, on_epoch)
    except TrialFailed as exc:
        status, error = "failed", str(exc)
    except torch.cuda.OutOfMemoryError as exc:  # outside a training step (ticket scoring, calibration, evaluation)
        status, error = "failed", f"out of memory: {(str(exc) or 'CUDA').splitlines()[0]}"
    if status == "failed":
        release_device_memory()
    return TrialRecord(
        trial_id=job.trial_id, genome=job.genome, status=status, error=error, worker=_worker(), **measured
    )


def release_device_memory() -> None:
    """Hands the CUDA caching allocator's unused blocks back to the driver after a failed trial: a trial that ran
    out of memory leaves its peak cached in this process, where the other trials on the same GPU
    (`executor.trials_per_gpu` > 1) could not use it. A no-op where CUDA was never used."""
    gc.collect()  # the failed trial's tensors, held in reference cycles through its traceback's frames
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _run(
    job: TrialJob,
    genome: Genome,
    data: SearchData,
    workdir: Path,
    measured: dict[str, Any],
    on_epoch: Callable[[str, Any], None] | None,
) -> None:
    """Train, ticket, fine-tune, save: the trial's phases, each adding what it measured to `measured` (the
    `TrialRecord` fields by name)."""

    def progress(phase: str) -> Callable[[Any], None] | None:
        return None if on_epoch is None else lambda stats: on_epoch(phase, stats)

    model, train_cfg = _start(job, genome, data, workdir, measured)
    owner = {"trial_id": job.trial_id}  # with the genome: a stale checkpoint of another trial is refused
    _train_candidate(model, train_cfg, job, data, workdir, measured, progress("train"), owner)
    final_model, final_genome = model, genome
    found = None if job.lottery is None else _ticket(model, job, data, measured)
    if found is not None and found.chosen is not None:
        final_model, final_genome = found.ticket_model, found.ticket_genome
    if job.finetune_epochs > 0:  # the ticket, or the unpruned candidate when none was kept
        _finetune(final_model, job, data, workdir, measured, progress("finetune"), owner)
    if found is not None:  # every proposal's cost and score beside the candidate's (the report's Fig. 4c)
        kept = found.chosen is not None
        finetuned = measured["ticket_finetuned_score"] if kept else None  # the ticket's score when not fine-tuned
        write_lottery(workdir, found, finetuned, measured["finetune_epochs"] if kept else 0)
    # run.json beside the weights, as `menas train` writes: the folder is a checkpoint folder, and export/evaluate
    # know the data config and the normalisation the network was trained with
    record = run_record(
        "trial", final_genome, job.data, train_cfg or job.train, preprocessing(data), trial_id=job.trial_id
    )
    measured["weights"] = str(save_network(workdir, final_model, final_genome, record))


def _ticket(model: torch.nn.Module, job: TrialJob, data: SearchData, measured: dict[str, Any]) -> LotteryResult:
    """Searches the trained candidate's ticket (BN calibrated on the batches of the epoch after training) and
    records what it cost and, when one was kept, the ticket."""
    assert job.lottery is not None
    tic = time.perf_counter()
    predictor = latency_predictor(job, data)
    # without a bound (a latency objective), a proposal the table cannot price is still refused: a kept ticket is
    # always priced
    bound = math.inf if job.latency_ms_max is None else job.latency_ms_max
    admits = None if predictor is None else _within(predictor, bound)
    found = search_and_choose_ticket(model, data, job.lottery, random.Random(job.seed), job.train.epochs, admits=admits)
    measured["lottery_s"] = time.perf_counter() - tic
    _add(measured, "calib_images", found.calib_images)
    _add(measured, "eval_images", found.scored_images)
    if found.chosen is not None:
        ticket_cost = count_cost(found.ticket_genome, data.input_size, data.in_chans, data.num_classes)
        measured.update(
            ticket=found.ticket_genome.to_str(),
            ticket_macs=ticket_cost.macs,
            ticket_params=ticket_cost.params,
            ticket_recalibrated_score=found.ticket_score,
            ticket_finetuned_score=found.ticket_score,
        )
        if predictor is not None:
            measured["ticket_latency_ms"] = predictor.latency_ms(found.ticket_genome)
    return found


def latency_predictor(job: TrialJob, data: SearchData) -> Predictor | None:
    """The latency budget's predictor (None without one), read once per process and table. The search checked the
    table against its space and input shape before any training; a trial checks the shape it trains at."""
    path = job.latency_table
    if path is None:
        return None
    if path not in _PREDICTORS:
        table = LatencyTable.load(path)
        table.check_target(input_size=data.input_size, in_chans=data.in_chans, num_classes=data.num_classes)
        _PREDICTORS.clear()  # one table at a time: a worker runs trials of one search
        _PREDICTORS[path] = Predictor.from_table(table)
    return _PREDICTORS[path]


def _within(predictor: Predictor, bound_ms: float) -> Callable[[Genome], bool]:
    """Whether a ticket proposal's predicted latency is within the bound. A pruned width rounds up to the next
    width the table holds (`latency.blocks.ChannelGrid`), so a proposal is priced at an upper bound; one with a
    block the table cannot price is not shown to be within, and refused."""

    def admits(genome: Genome) -> bool:
        try:
            return predictor.latency_ms(genome) <= bound_ms
        except UserError:
            return False

    return admits


def _finetune(
    model: torch.nn.Module,
    job: TrialJob,
    data: SearchData,
    workdir: Path,
    measured: dict[str, Any],
    progress: Callable[[Any], None] | None,
    owner: dict[str, Any],
) -> None:
    """Fine-tunes the final network (`finetune.ckpt` every epoch) and records its score: the ticket's, or the
    unpruned candidate's when no ticket was kept."""
    tic = time.perf_counter()
    history = finetune(
        model,
        data,
        job.train,
        job.finetune_epochs,
        finetune_lr_scale(job.finetune_lr_scale, job.lottery),
        checkpoint_path=workdir / FINETUNE_CHECKPOINT,
        owner=owner,
        progress=progress,
    )
    measured["finetune_s"] = time.perf_counter() - tic
    _account(measured, history, data)
    measured["finetune_epoch_s"] = [e.train_seconds for e in history.epochs]
    measured["finetune_epochs"] = len(history.epochs)
    score = "ticket_finetuned_score" if measured.get("ticket") is not None else "finetuned_score"
    measured[score] = history.val_top1


def _start(
    job: TrialJob, genome: Genome, data: SearchData, workdir: Path, measured: dict[str, Any]
) -> tuple[torch.nn.Module, TrainConfig | None]:
    """The candidate before training (built from the genome, or inherited from the parents' weights) and its
    training recipe: `job.train`, with `inherit.epochs` epochs when it inherited (None for 0 epochs)."""
    seed_trial(job.seed)  # every start seeds torch's generators, an inherited child's too
    with torch.random.fork_rng(devices=[]):  # loading the parents draws too: a fallback starts as a scratch trial
        inherited = _inherit(job, genome, data, workdir)
    model = inherited.pop("model", None) if inherited is not None else None
    if model is None:  # seeds again, to the same state: the fork left torch's generator as seeded above
        model = build_candidate(genome, data, job.seed)
    if job.init_weights is not None:  # a promotion: its parent's network, as it ended (train.ckpt may resume it)
        _continue_from(model, genome, job.init_weights)
    measured["inherited"] = inherited
    if inherited is None:
        return model, job.train
    _add(measured, "calib_images", inherited["calib_images"])
    return model, dataclasses.replace(job.train, epochs=inherited["epochs"]) if inherited["epochs"] else None


def _continue_from(model: torch.nn.Module, genome: Genome, path: str) -> None:
    """Loads the weights of the network a promotion continues into `model` (built from the same genome)."""
    if not path or not Path(path).is_file():
        raise TrialFailed(f"the network this promotion continues has no weights file ({path or 'none recorded'})")
    stored = read_genome(path)
    if stored.to_str() != genome.to_str():
        raise TrialFailed(f"{path} holds {stored.to_str()!r}, not the promoted network {genome.to_str()!r}")
    model.load_state_dict(load_file(path))


def _train_candidate(
    model: torch.nn.Module,
    train_cfg: TrainConfig | None,
    job: TrialJob,
    data: SearchData,
    workdir: Path,
    measured: dict[str, Any],
    progress: Callable[[Any], None] | None,
    owner: dict[str, Any],
) -> None:
    """Trains the candidate (`train.ckpt` every epoch) and records its score; with no recipe (an inherited child
    with 0 epochs) only scores it as recalibrated."""
    tic = time.perf_counter()
    measured["images_per_epoch"] = len(data.train) * data.train.batch_size
    if train_cfg is None:
        scores = evaluate(model, data.val, amp=job.train.amp, channels_last=job.train.channels_last)
        measured["trained_score"] = scores["top1"]
        _add(measured, "eval_s", scores["seconds"])
        _add(measured, "eval_images", data.val.num_samples)
        measured["train_s"] = time.perf_counter() - tic
        return
    history = train_candidate(model, data, train_cfg, workdir / TRAIN_CHECKPOINT, owner=owner, progress=progress)
    measured["train_s"] = time.perf_counter() - tic
    _account(measured, history, data)
    measured["train_epoch_s"] = [e.train_seconds for e in history.epochs]
    measured["train_losses"] = [e.train_loss for e in history.epochs]
    measured["trained_score"] = history.val_top1


def _inherit(job: TrialJob, genome: Genome, data: SearchData, workdir: Path) -> dict[str, Any] | None:
    """The child's weights from its parents' files when the job asks for inheritance (None: it does not), as the
    `TrialRecord.inherited` record plus the "model" (absent when it trains from scratch: a fallback, whose reason
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
            genome,
            Origin.from_dict(job.origin),
            job.parent_weights,
            [Genome.from_str(g) for g in job.parent_genomes],
            data.num_classes,
            data.in_chans,
            job.seed,
            importance=job.inherit.importance,
            shrink=job.inherit.shrink,
            perturb=job.inherit.perturb,
            calib_batches=calib,
            channels_last=job.train.channels_last,
        )
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


#: What every trial counts from zero up (a phase it skips counts 0, never unknown).
_COUNTED = dict.fromkeys(("train_s", "lottery_s", "finetune_s", "eval_s"), 0.0) | dict.fromkeys(
    ("epochs", "finetune_epochs", "train_images", "calib_images", "eval_images"), 0
)


def _add(measured: dict[str, Any], name: str, value: float) -> None:
    """Adds `value` to a count or duration of `measured` (0 when absent)."""
    measured[name] = measured.get(name, 0) + value


def _account(measured: dict[str, Any], history: History, data: SearchData) -> None:
    """Adds what a training run (training or fine-tuning epochs) passed and spent."""
    measured["epoch_s"] = [*measured.get("epoch_s", ()), *history.epoch_seconds]
    _add(measured, "eval_s", sum(e.eval_seconds for e in history.epochs))
    _add(measured, "epochs", len(history.epochs))
    _add(measured, "train_images", len(history.epochs) * len(data.train) * data.train.batch_size)
    scored = sum(e.val_top1 is not None for e in history.epochs)
    _add(measured, "eval_images", scored * data.val.num_samples)
