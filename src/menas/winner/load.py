"""The winner in one line: `menas.load(PATH)`, and the one place that turns a path into a network's files.

A path may be an export folder (`genome.json` + `model.safetensors`), a checkpoint folder (`menas train --out`,
`menas lottery --out`, a search trial's folder, a retrain folder: `model.safetensors`, most with a `run.json`), a
run folder (its best trial, by the store's `best()`) or a `.safetensors` file with the genome in its metadata.
`find_network` resolves all of them the same way for `menas.load`, export, evaluate, retrain, transfer and
distillation teachers (a genome string is handled by the callers that allow one).

Torch-side (imports the builder and the checkpoint reader); `import menas` reaches it lazily.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from menas.config import DataConfig, from_dict
from menas.errors import UserError
from menas.folders import RunFolder
from menas.nn.builder import MenasNet
from menas.search import fidelity
from menas.space.genome import Genome
from menas.train.checkpoint import WEIGHTS_FILE, load_weights, read_genome, resolve_checkpoint

#: The record `menas export` writes beside the weights.
GENOME_FILE = "genome.json"


@dataclass(frozen=True)
class NetworkSource:
    """Where a network's weights are and what was recorded about them.

    `record` is the run.json (or an export's genome.json) beside the weights, `data` the data config that
    trained them (None when nothing records it), `info` the provenance an export writes into genome.json, and
    `folder` the folder a command writes its results beside (the run folder for a run). `genome` is the
    network's genome; `weights` is None only for a run's trial without weights found with `need_weights=False`
    (or a bare genome a caller wraps). `run_dir`/`trial_id` name the run and trial a network came from, `label`
    says where it came from in one phrase."""

    weights: Path | None
    folder: Path
    record: dict[str, Any] = field(default_factory=dict)
    data: DataConfig | None = None
    info: dict[str, Any] = field(default_factory=dict)
    genome: Genome | None = None
    run_dir: Path | None = None
    trial_id: int | None = None
    label: str = ""

    @property
    def input_size(self) -> int | None:
        """The recorded input size: the data config's, else an export's genome.json."""
        if self.data is not None and self.data.input_size is not None:
            return self.data.input_size
        if self.data is not None:
            from menas.data.datasets import default_input_size

            return default_input_size(self.data.dataset)
        size = self.record.get("input_size")
        return int(size) if isinstance(size, int) else None

    @property
    def latency(self) -> dict[str, Any] | None:
        """The network's latency when a run recorded one (a run's trial, or an export of one: its genome.json):
        `predicted_ms` (from the run's latency table), `measured_ms` (on a machine at the table's settings, None
        when not measured, with a `note` saying so) and `measurement` (how); None otherwise."""
        latency = self.info.get("latency", self.record.get("latency"))
        return latency if isinstance(latency, dict) else None


def find_network(
    path: str | Path,
    trial: int | None = None,
    rank: int | None = None,
    front: int | None = None,
    *,
    need_weights: bool = True,
) -> NetworkSource:
    """Resolves an export folder, a checkpoint folder, a run folder (its best done trial by the store's ranking,
    trial `trial`, the `rank`-th best, 1 = best, or the `front`-th member of its Pareto front by rising first cost,
    1 = the cheapest, `Store.front`) or a .safetensors file: the one resolver of network paths for
    `menas.load`, export, evaluate, retrain, transfer and distillation teachers (a genome string is the caller's
    case, where it allows one).

    Args:
        need_weights: False lets a run's trial without weights through (`weights` None; `menas retrain` from
            scratch needs only its genome and data config).

    Raises:
        UserError: nothing usable at `path` (one line naming the path and what was expected), `trial`, `rank`
            or `front` without a run or unknown in it, a run with no finished trial or with the trial's weights
            missing, an unreadable record.
    """
    from menas.search.store import store_path

    path = Path(path)
    if path.is_dir() and store_path(path).is_file():
        return _run_source(path, trial, rank, front, need_weights)
    if trial is not None or rank is not None or front is not None:
        flags = "--front" if front is not None else "--trial/--rank"
        raise UserError(f"{flags}: only with a run folder, and {str(path)!r} holds no search (no menas.sqlite)")
    if not path.exists():
        raise UserError(
            f"{str(path)!r}: not found (give an export folder, a checkpoint folder, a run folder or a "
            ".safetensors file)"
        )
    weights, record = resolve_checkpoint(
        path, f"{str(path)!r}: no {WEIGHTS_FILE} (not an export, checkpoint or run folder)"
    )
    record = record or _read_record(weights.with_name(GENOME_FILE))
    data = _data_config(record.get("data"), weights)
    return NetworkSource(
        weights, weights.parent, record, data, {"source": str(weights)}, read_genome(weights), label=str(path)
    )


def _pick_trial(store: Any, run: Path, trial: int | None, rank: int | None, front: int | None) -> Any:
    """The run's trial record: `trial` (a done one), the `rank`-th best, the `front`-th front member or the best."""
    if sum(x is not None for x in (trial, rank, front)) > 1:
        raise UserError("--trial, --rank and --front: give one of them")
    if trial is not None:
        try:
            record = store.trial(trial)
        except KeyError:
            ids = [t.trial_id for t in store.trials()]
            known = f"{min(ids)}..{max(ids)}" if ids else "none yet"
            raise UserError(f"--trial: got {trial}, run {str(run)!r} has trials {known}") from None
        if record.status != "done":
            raise UserError(f"--trial: trial {trial} of run {str(run)!r} is {record.status}, allowed: done trials")
        return record
    if front is not None:
        return _front_member(store, run, front)
    ranked = store.ranked()
    if not ranked:
        raise UserError(f"run {str(run)!r}: no finished trial yet")
    if rank is not None and not 1 <= rank <= len(ranked):
        raise UserError(f"--rank: got {rank}, allowed: 1..{len(ranked)} (the run's done trials, 1 = best)")
    return ranked[(rank or 1) - 1]


def _front_member(store: Any, run: Path, k: int) -> Any:
    """The `k`-th member (1-based) of the run's Pareto front by rising first cost (`Store.front`)."""
    members = store.front()
    if not members:
        raise UserError(f"run {str(run)!r}: no finished trial yet")
    if not 1 <= k <= len(members):
        raise UserError(
            f"--front: got {k}, allowed: 1..{len(members)} (the run's Pareto front by rising first cost, 1 = the "
            "cheapest)"
        )
    return members[k - 1]


def _run_source(run: Path, trial: int | None, rank: int | None, front: int | None, need_weights: bool) -> NetworkSource:
    """A search's trial: its weights, the trial's run.json when it has one, and the run's data config."""
    from menas.config import SearchConfig
    from menas.search.store import Store

    with Store.open(run, readonly=True) as store:
        best = _pick_trial(store, run, trial, rank, front)
        stored = store.config()  # the run's one source of truth (config.yaml may have been edited since)
    which = "the best trial's" if trial is None and rank is None and front is None else f"trial {best.trial_id}'s"
    recorded = RunFolder(run).resolve(best.weights, best.trial_id)  # the run folder may have moved
    missing = f"run {str(run)!r}: {which} weights {best.weights!r} are missing"
    weights, record = None, {}
    if recorded is not None and (need_weights or recorded.is_file()):
        weights, record = resolve_checkpoint(recorded, missing)
    elif need_weights:
        raise UserError(missing)
    if "data" in record:
        data = _data_config(record["data"], weights)
    else:
        data = from_dict(SearchConfig, stored, "run config").data
    info = {
        "source": str(run),
        "trial_id": best.trial_id,
        "search_val_top1": best.final_score,
        "ticket": best.ticket is not None,
    }
    if isinstance(best, fidelity.Rescored):  # the mean of its trainings ranked it; these weights scored the first
        info["search_val_top1_trainings"] = list(best.scores)
    if best.ranks_by_tse:  # `fidelity.score: tse` ranked it, not search-val
        info["search_tse"] = best.fitness
    latency = _latency(best, run)
    if latency is not None:
        info["latency"] = latency
    # the weights' own genome (what loads); the store's (the ticket's, else the trial's) when there are no weights
    genome = read_genome(weights) if weights is not None else Genome.from_str(best.final_genome)
    return NetworkSource(weights, run, record, data, info, genome, run, best.trial_id, f"{run} trial {best.trial_id}")


def _latency(record: Any, run: Path) -> dict[str, Any] | None:
    """The trial's latency (`TrialRecord.latency_info`: predicted from the run's table, measured on a machine when
    it was), with a note when it was only predicted; None when the run knows no latency of it."""
    latency = record.latency_info()
    if latency is not None and latency["measured_ms"] is None:
        latency["note"] = (
            "predicted from the latency table only, not measured: `menas latency "
            f"{run} --front` measures the run's final front (its best without a Pareto objective)"
        )
    return latency


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


def _data_config(value: Any, weights: Path | None) -> DataConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UserError(f"{str(weights.parent) if weights else '?'!r}: the recorded data config is not a mapping")
    return from_dict(DataConfig, value, "data")


def load(path: str | Path, device: str | torch.device = "cpu") -> MenasNet:
    """The network at `path` (see `find_network`) as an `nn.Module` in eval mode on `device`.

    Its `latency` attribute is what the run recorded of its inference latency (`NetworkSource.latency`: predicted
    and measured ms, and how it was measured), None when nothing did. An export's genome.json must name the same
    genome as the weights' metadata (a folder mixed from two exports is an error, not a silently different
    network).
    """
    source = find_network(path)
    exported = _read_record(source.weights.with_name(GENOME_FILE)).get("genome")
    if isinstance(exported, str) and exported != read_genome(source.weights).to_str():
        raise UserError(
            f"{str(source.weights.parent)!r}: {GENOME_FILE} names another genome than "
            f"{source.weights.name} ({exported} vs {read_genome(source.weights).to_str()})"
        )
    model = load_weights(source.weights).to(device).eval()
    model.latency = source.latency
    return model


def network_preprocessing(source: NetworkSource) -> dict[str, Any]:
    """The preprocessing a user must apply outside menas: the one recorded in run.json when there is one, else
    computed from the recorded data config exactly as the loaders compute it (reads the dataset), else explicitly
    unknown."""
    recorded = source.record.get("preprocessing")
    if isinstance(recorded, dict) and "mean" in recorded:
        return recorded
    if source.data is None:
        reason = (
            f"{source.weights} records no data config: the mean/std and resize rule the network was trained "
            "with are unknown"
        )
        return {"known": False, "reason": reason}
    from menas.data.splits import build_loaders, preprocessing

    try:
        computed = preprocessing(build_loaders(source.data, "cpu"))
    except UserError as exc:
        return {
            "known": False,
            "reason": f"not recorded, and the recorded dataset cannot be read to compute it ({exc})",
        }
    return {**computed, "note": "not recorded with the weights: computed from the recorded data config"}
