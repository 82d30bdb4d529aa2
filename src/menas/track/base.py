"""What a search logs to an experiment tracker, whichever it is: the `Tracker` protocol the backends implement
(`menas.track.tensorboard`, `menas.track.mlflow`) and the one mapping of a trial to what they log, so that both
log the same names.

- params: the trial's spec (genome, generation, role, parents and their trial ids, tickets or not, `recipe.*`; the
  gene origin stays in the store), its final genome and status, and the config it ran under, flattened
  (`config.train.epochs`);
- metrics: every number the trial measured and its derived final values, keyed `GROUP/FIELD` (the `TrialRecord`
  field's name) so that a tracker's charts group them: `score/` (search-val top-1 of each phase;
  `score/final_score` is the one the search ranks by), `cost/` (MACs, params, latency), `time/` (seconds),
  `images/` (image counts) and `trial/` (the rest: epochs, attempts, weight inheritance's counts);
- series: the per-epoch values (`epoch/train_losses`, `epoch/epoch_s`, ...), epoch k at step k;
- files: the trial's `lottery.json`, when it searched for a ticket;
- the search's own curves, at step n for the n-th trial logged: `search/final_score` (that trial's) and
  `search/best_score` (the best network so far, `Store.best`); at the end the best trial and the Pareto front
  (`Store.front`).

No torch and no tracker library: a backend imports its library when a search opens it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from menas.errors import UserError
from menas.search.record import DERIVED, FIELDS, MEASURED, SPEC, TrialRecord

#: Tracker name (`track`) -> the extra that installs its library (`pip install menas[EXTRA]`).
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
#: Spec fields left out of the params: a bred child's gene origin is a large nested map (the store keeps it).
_UNLOGGED_SPEC = ("origin",)


@dataclass(frozen=True)
class TrialLog:
    """One finished trial as a tracker logs it (`trial_log`)."""

    trial_id: int
    name: str  # the tracker's run name, "trial-00003"
    status: str  # done | failed
    params: dict[str, Any]  # spec, final genome, status, then `config.*`: str, int, float, bool, None or a list
    metrics: dict[str, float]  # `GROUP/FIELD` -> value (None values left out)
    series: dict[str, tuple[float, ...]]  # `epoch/FIELD` -> the value of epoch 1, 2, ...
    files: tuple[Path, ...]  # artifacts: lottery.json when there is one
    started_at: float | None  # Unix seconds
    finished_at: float | None
    error: str | None  # a failed trial's reason
    step: int  # the search's x axis: trials logged so far, this one included
    search: dict[str, float]  # the search's values at `step`: search/final_score, search/best_score


@dataclass(frozen=True)
class SearchEnd:
    """What a search logs when it ends (or stops): its status, the best trial and the Pareto front."""

    status: str  # the run's status: finished, failed, interrupted
    step: int  # trials logged so far
    best: dict[str, Any] | None  # `network_summary` of `Store.best()`; None before any trial is done
    front: list[dict[str, Any]]  # `network_summary` of each member of `Store.front()`, by rising cost


class Tracker(Protocol):
    """A tracker backend. A search opens it once per process (a resume opens it again), logs each finished trial
    and then the end; a tracker never fails a trial or the search after `open` (see `menas.track.hook`)."""

    where: str  # where it writes (a folder, a tracking URI), for messages

    def open(self, run_key: str, run_name: str, config: dict[str, Any]) -> set[int]:
        """Creates the search's log, or finds it again by `run_key` (a resume), with the search's flattened config;
        returns the trial ids it already holds in full (a trial half-logged by a crash is dropped, to be logged
        again)."""
        ...

    def log_trial(self, trial: TrialLog) -> None:
        """Logs one finished trial (done or failed) and the search's values at its step."""
        ...

    def log_end(self, end: SearchEnd) -> None:
        """Logs the best trial and the front, and ends the search's log with the run's status."""
        ...

    def close(self) -> None:
        """Releases files and connections (idempotent)."""
        ...


def missing_extra(name: str, exc: ImportError) -> UserError:
    """The one-line error of a tracker whose library is not installed, naming the extra that installs it."""
    extra = EXTRAS[name]
    return UserError(
        f"track: got {name!r}, but its library is not installed ({exc}); install it with "
        f"`pip install 'menas[{extra}]'`, or set track to none"
    )


def trial_name(trial_id: int) -> str:
    """A trial's run name in a tracker: "trial-00003", as its folder `trials/00003/`."""
    return f"trial-{trial_id:05d}"


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (`{"train": {"lr": 1}}` -> `{"train.lr": 1}`)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def config_params(config: dict[str, Any]) -> dict[str, Any]:
    """A search config (`config.to_dict`) as params: `config.` and the dotted key (`config.train.epochs`)."""
    return flatten(config, "config.")


def param_text(value: Any) -> str:
    """A param value as text (MLflow params are strings): strings as they are, the rest as JSON (null, true, 3,
    [1, 2])."""
    return value if isinstance(value, str) else json.dumps(value)


def trial_params(record: TrialRecord) -> dict[str, Any]:
    """The trial's spec (mappings flattened, `recipe.epochs`; not its gene origin), final genome and status."""
    spec = {name: value for name, value in record.values(SPEC).items() if name not in _UNLOGGED_SPEC}
    return {**flatten(spec), "final_genome": record.final_genome, "status": record.status}


def metric_key(name: str) -> str:
    """`GROUP/NAME` for a measured value, the group read from the field's name (see the module docstring)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf.endswith("_score"):
        group = "score"
    elif leaf.endswith(("macs", "params")) or "latency" in name:
        group = "cost"
    elif leaf.endswith("_s"):
        group = "time"
    elif "images" in leaf:
        group = "images"
    else:
        group = "trial"
    return f"{group}/{name}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def trial_metrics(record: TrialRecord) -> dict[str, float]:
    """Every number the trial measured (numeric leaves of its mappings too, `inherited.copied`), its derived final
    values (`final_score`, `final_macs`, ...), its attempts and wall seconds, as `metric_key`s; None left out."""
    values: dict[str, Any] = {}
    for name, value in record.values(MEASURED).items():
        if isinstance(value, dict):
            values.update(flatten(value, f"{name}."))
        elif not isinstance(value, tuple):
            values[name] = value
    values.update({name: getattr(record, name) for name in DERIVED})
    values["attempts"] = record.attempts
    if record.started_at is not None and record.finished_at is not None:
        values["wall_s"] = record.finished_at - record.started_at
    return {metric_key(name): float(value) for name, value in values.items() if _is_number(value)}


def trial_series(record: TrialRecord) -> dict[str, tuple[float, ...]]:
    """The trial's per-epoch values (its measured tuples of numbers: losses, epoch seconds) as `epoch/FIELD`."""
    series = {}
    for f in FIELDS:
        value = getattr(record, f.name)
        if f.metadata["part"] == MEASURED and isinstance(value, tuple) and value and all(map(_is_number, value)):
            series[f"epoch/{f.name}"] = tuple(float(v) for v in value)
    return series


def trial_log(
    record: TrialRecord, config: dict[str, Any], step: int, best: TrialRecord | None, files: Iterable[Path]
) -> TrialLog:
    """What a tracker logs of a finished `record`: params (with the flattened `config` it ran under), metrics,
    series and the existing `files`, at the search's `step` with the best network so far."""
    search = {"search/final_score": record.final_score, "search/best_score": best.final_score if best else None}
    return TrialLog(
        trial_id=record.trial_id,
        name=trial_name(record.trial_id),
        status=record.status,
        params={**trial_params(record), **config_params(config)},
        metrics=trial_metrics(record),
        series=trial_series(record),
        files=tuple(path for path in files if path.is_file()),
        started_at=record.started_at,
        finished_at=record.finished_at,
        error=record.error,
        step=step,
        search={key: float(value) for key, value in search.items() if value is not None},
    )


def network_summary(record: TrialRecord) -> dict[str, Any]:
    """A result network as the end of a search logs it: its trial, generation, rung, final genome, whether it is a
    ticket, its final score, MACs, params and predicted latency (`record.DERIVED`) and what the search measured of
    it at its end (the `measured_*` fields: the front's latency on this machine)."""
    numbers = {name: getattr(record, name) for name in DERIVED}
    numbers.update({name: value for name, value in record.values(MEASURED).items() if name.startswith("measured_")})
    return {
        "trial_id": record.trial_id,
        "name": trial_name(record.trial_id),
        "generation": record.generation,
        "rung": record.rung,
        "final_genome": record.final_genome,
        "ticket": record.ticket is not None,
        **{name: value for name, value in numbers.items() if _is_number(value)},
    }
