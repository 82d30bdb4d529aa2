"""Everything menas writes to disk about a network, and reads back: training checkpoints (resumable state of a
training run), final weights (safetensors with the genome in the metadata), and checkpoint folders (weights plus
the `run.json` record beside them, built by `run_record` for every writer: `menas train`, `menas lottery --out`,
search trials, `menas retrain` and `menas transfer`).

Export, the CLI, diagnostics and trials all load networks through here, so none of them depends on the training
stack to read a file.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from menas.config import DataConfig, TrainConfig, to_dict
from menas.errors import UserError
from menas.files import write_atomically
from menas.folders import RUN_FILE, WEIGHTS_FILE
from menas.nn.builder import MenasNet, build_model
from menas.space.genome import Genome

#: Version of the training-checkpoint payload (`menas.train.loop` writes and checks the keys).
CHECKPOINT_FORMAT = 1


# ------------------------------------------------------------------------------------ training checkpoints


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Writes a training checkpoint atomically: to a temporary file in the same folder, then `os.replace`."""
    write_atomically(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads a training checkpoint with `torch.load(weights_only=True)`: tensors and plain types only, no code.

    Raises:
        UserError: the file is missing, unreadable, or not a menas training checkpoint.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"checkpoint {str(path)!r}: cannot read ({str(exc).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"checkpoint {str(path)!r}: not a menas training checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


# ------------------------------------------------------------------------------------ final weights


def save_weights(model: torch.nn.Module, genome: Genome, path: str | Path) -> Path:
    """Writes the model's state as safetensors with its genome string in the metadata (temp file + rename)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    umask = os.umask(0)
    os.umask(umask)

    def write(tmp: Path) -> None:
        save_file(state, str(tmp), metadata={"genome": genome.to_str(), "format": "menas-weights/1"})
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only; weights are shared like any file

    return write_atomically(path, write)


def read_genome(path: str | Path) -> Genome:
    """The genome recorded in a weights file's metadata (reads no tensors)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise UserError(f"weights {str(path)!r}: not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors' SafetensorError derives from Exception only
        raise UserError(f"weights {str(path)!r}: not a safetensors file ({str(exc).splitlines()[0]})") from None
    if "genome" not in metadata:
        raise UserError(f"weights {str(path)!r}: no genome in the safetensors metadata (not written by menas)")
    return Genome.from_str(metadata["genome"])


def load_weights(path: str | Path, num_classes: int | None = None, in_chans: int | None = None) -> MenasNet:
    """Rebuilds a model from `save_weights` output (safetensors: loading runs no code). `num_classes` and
    `in_chans` are checked against the weights when given (a clear error instead of a state-dict mismatch) and
    read from them when not."""
    genome = read_genome(path)
    state = load_file(str(path))
    missing = [key for key in ("stem.conv.weight", "classifier.weight") if key not in state]
    if missing:
        raise UserError(f"weights {str(path)!r}: not a menas network (no {', '.join(missing)})")
    stored = {"in_chans": state["stem.conv.weight"].shape[1], "num_classes": state["classifier.weight"].shape[0]}
    for name, wanted in (("in_chans", in_chans), ("num_classes", num_classes)):
        if wanted is not None and stored[name] != wanted:
            raise UserError(
                f"weights {str(path)!r}: the network has {name} {stored[name]}, the data gives "
                f"{wanted} (another dataset than it was trained on?)"
            )
    model = build_model(genome, stored["num_classes"], stored["in_chans"])
    model.load_state_dict(state, strict=True)
    return model


# ------------------------------------------------------------------------------------ checkpoint folders

#: What wrote a run.json (its `kind`): `menas train`, `menas lottery --out`, a search trial, `menas retrain`,
#: `menas transfer`.
RUN_KINDS = ("train", "lottery", "trial", "retrain", "transfer")


def run_record(
    kind: str,
    genome: Genome,
    data: DataConfig,
    train: TrainConfig,
    preprocessing: dict[str, Any] | None = None,
    **provenance: Any,
) -> dict[str, Any]:
    """The run.json of a folder holding a network's weights: what wrote it (`kind`, one of `RUN_KINDS`), the
    genome, the data and training configs it was trained with, what its loaders fed it (`preprocessing`, from
    `menas.data.splits.preprocessing`; left out when None) and the writer's own provenance (`menas train`'s
    device and split digest, a ticket's `pruned_from`, a trial's `trial_id`, a retrain's `source` and `init`).

    Readers rely on `genome`, `data`, `train`, `preprocessing` and `split_digest` (`resolve_checkpoint`, `menas
    lottery`, `menas.winner.load`, export, evaluate) and on `kind` (`menas retrain`/`transfer` resume only their
    own folders)."""
    assert kind in RUN_KINDS, kind
    record: dict[str, Any] = {"kind": kind, "genome": genome.to_str(), "data": to_dict(data), "train": to_dict(train)}
    if preprocessing is not None:
        record["preprocessing"] = preprocessing
    return {**record, **provenance}


def resolve_checkpoint(path: str | Path, missing: str) -> tuple[Path, dict[str, Any]]:
    """(weights file, its run.json record or {}) of a checkpoint folder or a .safetensors file; UserError
    `missing` when there are no weights."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise UserError(missing)
    run = weights.with_name(RUN_FILE)
    if not run.is_file():
        return weights, {}
    try:
        return weights, json.loads(run.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{str(run)!r}: cannot read ({exc})") from None
