"""Several processes, one training (`torchrun --nproc_per_node N menas retrain ...`): DistributedDataParallel
helpers that do nothing in a single process.

Under torchrun (WORLD_SIZE > 1 in the environment) `init_from_env` joins the process group (NCCL on CUDA, each rank
on its LOCAL_RANK GPU; gloo on CPU). `menas.train.loop.train` then shards the training loader (every rank the same
seed-derived order of every epoch, each its slice of every global batch), wraps the model in DDP (gradients averaged
over the ranks, so a step equals the single-process step on the global batch), averages the training loss over the
ranks, and lets only rank 0 write checkpoints; evaluation runs unsharded on every rank (the same numbers everywhere).

BatchNorm: on CUDA the model's BatchNorm layers become `SyncBatchNorm` (statistics of the global batch, as in one
process). torch 2.14's DDP refuses SyncBatchNorm on CPU ("SyncBatchNorm layers only work with GPU modules"), so on
CPU each rank normalises with its own shard's statistics, rank 0's running statistics are broadcast to the others at
every forward (DDP's `broadcast_buffers`) and averaged over the ranks after every epoch (`average_buffers`): the ranks
end identical, but a network with BatchNorm is not the single-process network to float tolerance there.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from menas.errors import UserError


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Joins torchrun's process group when WORLD_SIZE > 1 (else nothing) and returns the device this rank trains
    on: cuda:LOCAL_RANK when `device` is CUDA, else `device`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard(loader: Any) -> Any:
    """The training loader's view for this rank (see `menas.data.loaders.DeviceLoader.shard`); the loader itself in one
    process."""
    if not active():
        return loader
    if not hasattr(loader, "shard"):
        raise UserError(f"several processes: {type(loader).__name__} cannot be sharded")
    return loader.shard(rank(), world_size())


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (its BatchNorm layers SyncBatchNorm on CUDA), or `model` itself in one
    process. The wrapper shares the model's parameters: train through it, save and average `model`."""
    if not active():
        return model
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN children in place
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def average_buffers(*modules: nn.Module | None) -> None:
    """Averages the floating-point buffers (BatchNorm running statistics) of `modules` over the ranks, in place, so
    the ranks hold identical networks after an epoch: without SyncBatchNorm (CPU) each rank's last forward updated
    them from its own shard. The average of the shards' running means is the global batch's; of the variances, the
    mean within-shard variance. Nothing in one process."""
    if not active():
        return
    for module in modules:
        for buffer in module.buffers() if module is not None else ():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= world_size()


def mean(value: float, device: torch.device) -> float:
    """The mean of `value` over the ranks (itself in one process)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def barrier() -> None:
    """Waits for every rank (nothing in one process): after rank 0 wrote a file the others read."""
    if active():
        dist.barrier()
