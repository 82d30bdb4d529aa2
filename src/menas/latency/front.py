"""The final front measured for real: what a search with a latency table ends with.

A search with a latency table (`budget.latency_table`: a latency bound, or the `latency` objective of
`strategy.pareto`) searches on *predicted* latency. When it ends, each network of its result
(`Store.final_networks`: its Pareto front under `strategy.objective: pareto`, else its best) is built and its
inference latency measured whole on this machine with `latency.measure`, at the table's settings (batch, threads,
runtime, device, warm-up and timed runs) and input shape, and recorded in the store (`Store.record_latency`:
`measured_latency_ms` and how it was measured, with the host and whether it is the table's). A network already
measured is not measured again, so a resumed finished search, or `menas latency RUN --front` after it, measures
only what is missing. Latency does not depend on the weights' values, so a network is built from its genome (a
trial whose weights file is gone is measured the same). With `rounds` over 1 (`budget.latency_rounds`, `menas
latency RUN --front --rounds R`) each network is measured in that many fresh processes and the median over them
recorded (`menas.latency.rounds`: on a noisy machine one process's median is not repeatable to 10%), with each
process's median and their spread; a spread over 10% is warned about.

The store is written only under the run folder's lock: the search holds it while it ends; `measure_run_front`
(`menas latency RUN --front`) takes it. Torch is imported only to measure.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from menas.errors import UserError, check, is_int
from menas.files import FolderLock, FolderLocked
from menas.folders import LOCK_FILE
from menas.latency.measure import NETWORK_MIN_TIME_S, Measurement, Settings, check_available
from menas.latency.rounds import MAX_ROUNDS, combine, genome_flags, measurement_of, run_rounds, spread_warning
from menas.latency.table import HOST_FIELDS, LatencyTable, space_hash
from menas.search.store import Store, TrialRecord
from menas.space.genome import Genome
from menas.space.spaces import load_space

logger = logging.getLogger(__name__)

#: Measures one genome's network: (genome, table, settings) -> Measurement (`measure_genome`; tests pass a fake).
MeasureGenome = Callable[[Genome, LatencyTable, Settings], Measurement]


@dataclass(frozen=True)
class FrontMeasured:
    """What one pass did: the trials measured now (trial id -> median ms) and those found measured before."""

    measured: dict[int, float] = field(default_factory=dict)
    before: tuple[int, ...] = ()


def table_settings(table: LatencyTable) -> Settings:
    """The measurement settings the table was built with (batch, threads, runtime, device, warm-up, timed runs),
    a whole network timed for at least `NETWORK_MIN_TIME_S` (or the table's minimum time when longer), checked on
    this machine: a thread count over its cores or a runtime or device it lacks is a one-line `UserError` naming the
    table."""
    known = set(Settings.__dataclass_fields__)
    try:
        settings = Settings(**{k: v for k, v in table.settings.items() if k in known})
        settings = replace(settings, min_time_s=max(settings.min_time_s, NETWORK_MIN_TIME_S))
        check_available(settings)
    except UserError as exc:
        raise UserError(f"{table.where()}: its settings cannot be used on this machine ({exc})") from None
    return settings


def measure_genome(genome: Genome, table: LatencyTable, settings: Settings) -> Measurement:
    """The genome's network, freshly built for the table's input channels and classes, measured whole at the
    table's input size."""
    from menas.latency.measure import measure
    from menas.nn.builder import build_model

    t = table.target
    model = build_model(genome, t.num_classes, t.in_chans)
    return measure(model, (t.in_chans, t.input_size, t.input_size), settings)


def measure_genome_in_rounds(rounds: int) -> MeasureGenome:
    """`measure_genome`, made `rounds` times in fresh processes (`menas latency GENOME ...`), combined into one
    measurement: the median of the rounds' medians (`rounds.combine`)."""

    def measure(genome: Genome, table: LatencyTable, settings: Settings) -> Measurement:
        t = table.target
        flags = genome_flags(genome.to_str(), (t.in_chans, t.input_size, t.input_size), t.num_classes, settings)
        return combine([measurement_of(r) for r in run_rounds(flags, rounds)])

    return measure


def measurement_record(result: Measurement, table: LatencyTable) -> dict[str, Any]:
    """What the store keeps of a measurement (`TrialRecord.latency_measurement`): its statistics, input shape,
    settings and host, whether the host is the one the table was measured on (`same_host`: only then are
    measured and predicted latencies of the same machine), the table's path and when."""
    record = result.to_dict()
    record["same_host"] = all(table.host.get(k) == result.host.get(k) for k in HOST_FIELDS)
    record["table"] = None if table.path is None else str(table.path)
    record["measured_at"] = time.time()
    return record


def measure_front(
    store: Store,
    table: LatencyTable,
    measure: MeasureGenome | None = None,
    progress: Callable[[TrialRecord, Measurement], None] | None = None,
    rounds: int = 1,
) -> FrontMeasured:
    """Measures the run's result (`Store.final_networks`) not measured yet at the table's settings and records
    each in `store` (opened for writing, under the run's lock) as soon as it is measured, so an interrupted pass
    keeps what it measured. `measure` defaults to `measure_genome` in this process (`rounds` 1) or to
    `measure_genome_in_rounds(rounds)`. `progress(trial, measurement)` is called after each."""
    check(is_int(rounds) and 1 <= rounds <= MAX_ROUNDS, "budget.latency_rounds", rounds, f"1..{MAX_ROUNDS}")
    if measure is None:
        measure = measure_genome if rounds == 1 else measure_genome_in_rounds(rounds)
    members = store.final_networks()
    todo = [t for t in members if t.measured_latency_ms is None]
    before = tuple(t.trial_id for t in members if t.measured_latency_ms is not None)
    if not todo:
        return FrontMeasured({}, before)
    settings = table_settings(table)
    measured: dict[int, float] = {}
    for trial in todo:
        result = measure(Genome.from_str(trial.final_genome), table, settings)
        store.record_latency(trial.trial_id, result.median_ms, measurement_record(result, table))
        measured[trial.trial_id] = result.median_ms
        logger.info("trial %d measured: %.3f ms median", trial.trial_id, result.median_ms)
        warning = spread_warning(result.round_spread, f"trial {trial.trial_id}'s rounds")
        if warning is not None:
            logger.warning(warning)
        if progress is not None:
            progress(trial, result)
    return FrontMeasured(measured, before)


def run_table(config: dict[str, Any], where: str = "budget.latency_table") -> LatencyTable | None:
    """The run's latency table (its stored config's `budget.latency_table`, relative to the working directory as
    the search read it), checked against the run's space; None when the run has none. A missing file or a table
    of another space is a one-line `UserError` naming `where`."""
    path = (config.get("budget") or {}).get("latency_table")
    if path is None:
        return None
    if not Path(path).is_file():
        raise UserError(f"{where}: got {path!r}, allowed: the run's lookup table file (none there now)")
    table = LatencyTable.load(path)
    space = load_space(config.get("space", "mobilenet3-mt"))
    try:
        table.check_target(space=space.name, space_hash=space_hash(space))
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return table


def measure_run_front(
    run_dir: str | os.PathLike[str],
    command: str = "menas latency --front",
    measure: MeasureGenome | None = None,
    progress: Callable[[TrialRecord, Measurement], None] | None = None,
    rounds: int | None = None,
) -> FrontMeasured:
    """Measures a run's result not measured yet (`measure_front`), holding the run folder's lock (a search or
    resume in the folder is refused, and refuses this, in one line naming the holder), in `rounds` processes a
    network (None: the run's `budget.latency_rounds`). A run without a latency table is a one-line `UserError`:
    it has no settings to measure at."""
    run = Path(run_dir)
    try:
        lock = FolderLock(run, command, LOCK_FILE)
    except FolderLocked as exc:
        raise UserError(f"run {exc}") from None
    with lock, Store.open(run) as store:
        config = store.config()
        table = run_table(config)
        if table is None:
            raise UserError(
                f"--front: run {str(run)!r} has no budget.latency_table (nothing says at which settings to measure); "
                f"`menas latency {run}` measures its best network at the flags' settings"
            )
        if rounds is None:
            rounds = (config.get("budget") or {}).get("latency_rounds") or 1
        return measure_front(store, table, measure, progress, rounds)


__all__ = [
    "FrontMeasured",
    "MeasureGenome",
    "measure_front",
    "measure_genome",
    "measure_genome_in_rounds",
    "measure_run_front",
    "measurement_record",
    "run_table",
    "table_settings",
]
