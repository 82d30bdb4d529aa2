"""The winner in one line: `menas.load(PATH)`, and the one place that turns a path into a network's files.

A path may be an export folder (`genome.json` + `model.safetensors`), a checkpoint folder (`menas train --out`,
`menas lottery --out`, a search trial's folder, a retrain folder: `model.safetensors`, most with a `run.json`), a
run folder (its best trial, by the store's `best()`) or a `.safetensors` file with the genome in its metadata.
`find_network` resolves all of them the same way for `menas.load`, `menas export` and `menas evaluate`.

Torch-side (imports the builder and the checkpoint reader); `import menas` reaches it lazily.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from menas.builder import MenasNet
from menas.checkpoint import WEIGHTS_FILE, load_weights, read_genome, resolve_checkpoint
from menas.config import DataConfig, from_dict
from menas.errors import UserError

#: The record `menas export` writes beside the weights.
GENOME_FILE = "genome.json"


@dataclass(frozen=True)
class NetworkSource:
    """Where a network's weights are and what was recorded about them.

    `record` is the run.json (or an export's genome.json) beside the weights, `data` the data config that
    trained them (None when nothing records it), `info` the provenance an export writes into genome.json, and
    `folder` the folder a command writes its results beside (the run folder for a run)."""

    weights: Path
    folder: Path
    record: dict[str, Any] = field(default_factory=dict)
    data: DataConfig | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> int | None:
        """The recorded input size: the data config's, else an export's genome.json."""
        if self.data is not None and self.data.input_size is not None:
            return self.data.input_size
        if self.data is not None:
            from menas.data import default_input_size

            return default_input_size(self.data.dataset)
        size = self.record.get("input_size")
        return int(size) if isinstance(size, int) else None


def find_network(path: str | Path) -> NetworkSource:
    """Resolves an export folder, a checkpoint folder, a run folder or a .safetensors file.

    Raises:
        UserError: nothing usable at `path` (one line naming the path and what was expected), a run with no
            finished trial or with its best trial's weights missing, an unreadable record.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{str(path)!r}: not found (give an export folder, a checkpoint folder, a run folder or a "
                        ".safetensors file)")  # fmt: skip
    from menas.store import store_path

    if path.is_dir() and store_path(path).is_file():
        return _run_source(path)
    weights, record = resolve_checkpoint(path, f"{str(path)!r}: no {WEIGHTS_FILE} (not an export, checkpoint or "
                                         "run folder)")  # fmt: skip
    record = record or _read_record(weights.with_name(GENOME_FILE))
    data = _data_config(record.get("data"), weights)
    return NetworkSource(weights, weights.parent, record, data, {"source": str(weights)})


def _run_source(run: Path) -> NetworkSource:
    """A search's best trial: its weights, the trial's run.json when it has one, and the run's data config."""
    from menas.config import SearchConfig
    from menas.store import Store

    with Store.open(run, readonly=True) as store:
        best = store.best()
        stored = store.config()  # the run's one source of truth (config.yaml may have been edited since)
    if best is None:
        raise UserError(f"run {str(run)!r}: no finished trial yet")
    missing = f"run {str(run)!r}: the best trial's weights {best.checkpoint!r} are missing"
    if not best.checkpoint:
        raise UserError(missing)
    weights, record = resolve_checkpoint(best.checkpoint, missing)
    if "data" in record:
        data = _data_config(record["data"], weights)
    else:
        data = from_dict(SearchConfig, stored, "run config").data
    info = {"source": str(run), "trial_id": best.trial_id, "search_val_top1": best.final_score,
            "ticket": best.ticket is not None}  # fmt: skip
    return NetworkSource(weights, run, record, data, info)


def _read_record(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{str(path)!r}: cannot read ({exc})") from None
    if not isinstance(record, dict):
        raise UserError(f"{str(path)!r}: not a menas record (a JSON object expected)")
    return record


def _data_config(value: Any, weights: Path) -> DataConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(f"{str(weights.parent)!r}: the recorded data config is not a mapping")
    return from_dict(DataConfig, value, "data")


def load(path: str | Path, device: str | torch.device = "cpu") -> MenasNet:
    """The network at `path` (see `find_network`) as an `nn.Module` in eval mode on `device`.

    An export's genome.json must name the same genome as the weights' metadata (a folder mixed from two
    exports is an error, not a silently different network).
    """
    source = find_network(path)
    exported = _read_record(source.weights.with_name(GENOME_FILE)).get("genome")
    if isinstance(exported, str) and exported != read_genome(source.weights).to_str():
        raise UserError(f"{str(source.weights.parent)!r}: {GENOME_FILE} names another genome than "
                        f"{source.weights.name} ({exported} vs {read_genome(source.weights).to_str()})")  # fmt: skip
    return load_weights(source.weights).to(device).eval()


def network_preprocessing(source: NetworkSource) -> dict[str, Any]:
    """The preprocessing a user must apply outside menas: recorded in run.json when the network was trained by
    menas since it records it, else computed from the recorded data config exactly as the loaders compute it
    (reads the dataset), else explicitly unknown."""
    recorded = source.record.get("preprocessing")
    if isinstance(recorded, dict) and "mean" in recorded:
        return recorded
    if source.data is None:
        reason = (f"{source.weights} records no data config: the mean/std and resize rule the network was trained "
                  "with are unknown")  # fmt: skip
        return {"known": False, "reason": reason}
    from menas.data import build_loaders, preprocessing

    try:
        computed = preprocessing(build_loaders(source.data, "cpu"))
    except UserError as exc:
        return {"known": False, "reason": f"not recorded, and the recorded dataset cannot be read to compute it "
                f"({exc})"}  # fmt: skip
    return {**computed, "note": "not recorded with the weights: computed from the recorded data config"}
