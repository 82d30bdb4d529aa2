"""Resumable training: what an epoch checkpoint holds (the model, optimizer, scheduler, EMA, grad scaler, RNG
states, loader shape, history and recipe), which network it belongs to (`checkpoint_identity`), and the checks
that refuse to resume another network's checkpoint or one written with another recipe or data order. The loop
(`menas.train.loop.train`) writes a payload after every epoch and restores one when it resumes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from menas.config import TrainConfig, to_dict
from menas.data.loaders import Loader
from menas.errors import UserError
from menas.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

#: Config keys that may differ between a checkpoint and the run resuming it (they do not change the result).
RESUME_TOLERATED = {"threads", "eval_every", "tune_allocator", "recipe"}


@dataclasses.dataclass
class Parts:
    """Optimizer, scheduler, EMA and grad scaler of one run (everything a checkpoint must restore)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any | None
    scaler: torch.amp.GradScaler | None
    amp: torch.dtype | None


def _rng_state() -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_identity(model: nn.Module, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    """Which network a training checkpoint belongs to: the model's genome string (when it has one) plus the
    caller's `owner` fields (a search's trial id). Stored in every checkpoint and compared on resume, so a folder
    never resumes another network's weights."""
    genome = getattr(model, "genome", None)
    return {**({"genome": genome.to_str()} if genome is not None else {}), **(owner or {})}


def _describe_identity(identity: dict[str, Any]) -> str:
    extra = ", ".join(f"{key} {value}" for key, value in sorted(identity.items()) if key != "genome")
    genome = f"genome {identity['genome']}" if "genome" in identity else "a network without a genome"
    return genome + (f" ({extra})" if extra else "")


def check_checkpoint_owner(path: str | Path, identity: dict[str, Any], payload: dict[str, Any] | None = None) -> None:
    """Refuses to resume a checkpoint that belongs to another network (nothing to check when `path` does not
    exist or predates identities: then loading the state dict still refuses other shapes).

    Raises:
        UserError: one line naming the checkpoint's network and this one.
    """
    if payload is None:
        if not Path(path).is_file():
            return
        payload = load_checkpoint(path)
    saved = payload.get("identity")
    if saved is not None and saved != identity:
        raise UserError(
            f"checkpoint {str(path)!r} belongs to {_describe_identity(saved)}, not to {_describe_identity(identity)}:"
            " start over (`--restart`, or resume=False) or use another folder"
        )


def check_resumable(path: str | Path, cfg: TrainConfig, loader: Loader) -> None:
    """Refuses, before a caller writes anything, what `train(..., resume=True)` would refuse only once it starts:
    resuming the checkpoint at `path` with another recipe (seed included) or data order. Nothing to check when
    `path` does not exist.

    Raises:
        UserError: one line naming the setting, its checkpointed value and the new one.
    """
    if Path(path).is_file():
        check_payload_resumable(load_checkpoint(path), cfg, loader, path)


def checkpoint_payload(
    model: nn.Module,
    parts: Parts,
    cfg: TrainConfig,
    loader: Loader,
    epochs_done: int,
    history: dict[str, Any],
    identity: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "identity": identity,
        "epoch": epochs_done,
        "num_updates": epochs_done * len(loader),
        "model": model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "ema": parts.ema.module.state_dict() if parts.ema is not None else None,
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng": _rng_state(),
        "loader": {"seed": getattr(loader, "seed", None), "steps_per_epoch": len(loader), "batch": loader.batch_size},
        "history": history,
        "config": to_dict(cfg),
    }


def check_payload_resumable(payload: dict[str, Any], cfg: TrainConfig, loader: Loader, path: str | Path) -> None:
    saved, now = payload["config"], to_dict(cfg)
    defaults = to_dict(TrainConfig())
    for key in sorted(set(saved) | set(now)):
        if key not in saved and now.get(key) == defaults.get(key):
            continue  # a key added after the checkpoint was written, at its default
        if key not in RESUME_TOLERATED and saved.get(key) != now.get(key):
            raise UserError(
                f"checkpoint {str(path)!r}: train.{key} was {saved.get(key)!r}, now {now.get(key)!r} "
                "(resume with the same settings, or resume=False to start over)"
            )
    expected = {"seed": getattr(loader, "seed", None), "steps_per_epoch": len(loader), "batch": loader.batch_size}
    for key, value in expected.items():
        if payload["loader"].get(key) != value:
            raise UserError(f"checkpoint {str(path)!r}: data {key} was {payload['loader'].get(key)!r}, now {value!r}")


def restore(model: nn.Module, parts: Parts, payload: dict[str, Any], path: str | Path) -> None:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:  # a checkpoint without an identity, of another network
        first = str(exc).splitlines()[0]
        raise UserError(
            f"checkpoint {str(path)!r}: its weights do not fit this network ({first}); start over "
            "(`--restart`, or resume=False)"
        ) from None
    parts.optimizer.load_state_dict(payload["optimizer"])
    parts.scheduler.load_state_dict(payload["scheduler"])
    if parts.ema is not None and payload["ema"] is not None:
        parts.ema.module.load_state_dict(payload["ema"])
    if parts.scaler is not None and payload["scaler"] is not None:
        parts.scaler.load_state_dict(payload["scaler"])
    _set_rng_state(payload["rng"])
