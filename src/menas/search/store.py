"""The run store: one SQLite file per run directory (`runs/NAME/menas.sqlite`), the source of truth of a search.

This module owns the schema and every read and write of that file:

- `run`: one row with the resolved config (JSON text), creation time, seed, menas version and run status;
- `trials`: one row per trial keyed by the strategy's trial_id, its columns the fields of
  `menas.search.record.TrialRecord` (what the strategy asked, the trial's life cycle, what it measured; tuples
  and mappings as JSON text), read and written generically from those fields; a `compute` budget counts
  training-image equivalents of its image counts (`compute_used`);
- `events`: a log of (time, kind, JSON payload); the search logs "trial_exception" (a trial raised instead of
  returning a result: its trial id and error) and "inherit_fallback" (a child that could not inherit its parents'
  weights and trained from scratch: trial id and reason);
- `retrains`: one row per `menas retrain` of a network of the run (schema version 2): genome, recipe, epochs, test
  top-1/top-5/loss of the raw and the EMA weights, which of them was kept, cost, wall time, img/s, device, folder.

Older stores are migrated when opened for writing (`menas.search.schema.MIGRATIONS`); read-only opens of an older
version read under the record's names and show no retrains.

Crash safety: the file is created under a temporary name and linked into place when complete (a second creator
fails instead of replacing it); it runs in WAL mode with `synchronous=FULL`; every write is one transaction
(`BEGIN IMMEDIATE` ... `COMMIT`), so a crash loses at most the write in progress and never leaves a half-written
trial. Readers (other connections, threads or processes, e.g. `menas status` or `menas report` during a search)
see consistent snapshots while a writer writes and wait on a busy timeout instead of failing with "database is
locked". A `Store` object is one connection: use it from one thread; open another `Store` per thread or process.
One search writes a run at a time: `menas.search.engine` holds the run folder's lock (`menas.files.FolderLock`).

Resume (see `history` and `requeue`): replay the history into a fresh strategy in trial_id order, then re-run
the trials it reports pending (`requeue` them here first). This module never imports torch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from menas import __version__
from menas.errors import UserError, check, is_int, is_real
from menas.folders import STORE_FILE
from menas.search.record import (
    FIELDS,
    FORWARD_IMAGES_PER_TRAINING_IMAGE,
    IN_FLIGHT,
    MEASURED,
    PART,
    SPEC,
    TRIAL_STATUSES,
    TrialRecord,
    from_row,
    to_row,
)
from menas.search.run_views import RunViews
from menas.search.schema import RECORD_RENAMES, SCHEMA, SCHEMA_VERSION, connect, migrate, publish
from menas.search.summaries import (
    ComputeUsed,
    GenerationPhases,
    GenerationSummary,
    generation_phases,
    generation_summary,
)

#: File name of the store inside a run directory.
FILENAME = STORE_FILE
RUN_STATUSES = ("created", "running", "finished", "failed", "interrupted")


def _opt_int(where: str, value: Any) -> int | None:
    check(value is None or (is_int(value) and value >= 0), where, value, "None or integers >= 0")
    return value


def _opt_real(where: str, value: Any, nonneg: bool = False) -> float | None:
    if value is None:
        return None
    allowed = "None or finite numbers" + (" >= 0" if nonneg else "")
    check(is_real(value) and (not nonneg or value >= 0), where, value, allowed)
    return float(value)


def store_path(path: str | os.PathLike[str]) -> Path:
    """The store file for `path`: the path itself when it ends in `.sqlite`, else `path / menas.sqlite`."""
    path = Path(path)
    return path if path.suffix == ".sqlite" else path / FILENAME


# --------------------------------------------------------------------------------------------- records


class SpecLike(Protocol):
    """What `add_trials` reads from a spec (the strategy's `TrialSpec`; the store does not import strategies): the
    spec fields of `TrialRecord`."""

    trial_id: int
    genome: str


@dataclass(frozen=True)
class Event:
    """One row of `events`."""

    id: int
    time: float
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class RetrainRecord:
    """One row of `retrains`: a network of the run retrained by `menas retrain`. Accuracies in percent on the test
    split; `ema_*` are None without EMA; `kept` says which weights the retrain folder's model.safetensors holds."""

    id: int
    time: float
    trial_id: int | None
    genome: str
    recipe: str
    config: dict[str, Any]
    epochs: int
    test_top1: float | None
    test_top5: float | None
    test_loss: float | None
    ema_top1: float | None
    ema_top5: float | None
    ema_loss: float | None
    kept: str
    macs: int | None
    params: int | None
    wall_s: float | None
    images_per_s: float | None
    device: str | None
    teacher: str | None
    out: str


@dataclass(frozen=True)
class RunInfo:
    """The `run` row without the config (see `Store.config`)."""

    created: float
    updated: float
    seed: int | None
    version: str
    status: str


# --------------------------------------------------------------------------------------------- store


class Store(RunViews):
    """A run's SQLite record. Build it with `Store.create` (new run) or `Store.open` (resume, status, report)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool, version: int = SCHEMA_VERSION) -> None:
        """Use `Store.create` or `Store.open`."""
        self._conn = conn
        self.path = path
        self.readonly = readonly
        # an older store opened read-only keeps its column names: read them under the record's names
        self._renames = RECORD_RENAMES if version < 5 else {}
        self._version = version

    # -- life cycle -----------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], config: dict[str, Any], seed: int | None = None) -> Store:
        """Creates the store of a new run and opens it for writing.

        Args:
            path: the run directory (created if missing) or the `.sqlite` file itself.
            config: the resolved run config; stored as JSON, so it must be JSON-serialisable.
            seed: the run's seed; defaults to `config["seed"]` when present.

        Raises:
            FileExistsError: the store already exists (resume it instead of overwriting a run), also when another
                process created it while this one was building its file: the first creator wins and its open
                connections keep working (the complete file is hard-linked into place, never renamed over one).
            ValueError: a config that is not a JSON-serialisable mapping, or a bad seed.
        """
        check(isinstance(config, dict), "config", type(config).__name__, "a mapping")
        try:
            config_text = json.dumps(config, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UserError(f"config: not JSON-serialisable ({exc})") from None
        if seed is None and isinstance(config.get("seed"), int):
            seed = config["seed"]
        check(seed is None or is_int(seed), "seed", seed, "None or integers")
        target = store_path(path)
        if target.exists():
            raise FileExistsError(f"{target} already exists: resume that run or choose another run name")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        conn = connect(tmp, "rwc")
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO run (id, config, created, seed, version, status, updated) VALUES (1, ?, ?, ?, ?, ?, ?)",
                (config_text, now, seed, __version__, "created", now),
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()  # the last connection checkpoints the WAL into the file and removes it
        publish(tmp, target)
        return cls.open(target)

    @classmethod
    def open(cls, path: str | os.PathLike[str], readonly: bool = False) -> Store:
        """Opens an existing store (run directory or `.sqlite` file); `readonly` for status and reports.

        Raises:
            UserError: no store at `path`.
            UserError: the file is not a menas store of this schema version.
        """
        target = store_path(path)
        if not target.is_file():
            raise UserError(f"{target}: no menas store there (start a search first)")
        try:
            conn = connect(target, "ro" if readonly else "rw")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{target}: not a menas store ({exc})") from None
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise UserError(f"{target}: not a menas store ({exc})") from None
        if not {"run", "trials", "events"} <= tables or not 1 <= version <= SCHEMA_VERSION:
            conn.close()
            raise UserError(
                f"{target}: not a menas store of schema version {SCHEMA_VERSION} (found version {version}, "
                f"tables {sorted(tables)})"
            )
        if not readonly and conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        if not readonly and version < SCHEMA_VERSION:
            migrate(conn, version)
            version = SCHEMA_VERSION
        return cls(conn, target, readonly, version)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error. Takes the write lock up front (IMMEDIATE), so
        concurrent writers wait on the busy timeout instead of failing on a lock upgrade."""
        if self.readonly:
            raise UserError(f"{self.path}: opened read-only, cannot write")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same snapshot."""
        self._conn.execute("BEGIN")
        try:
            yield self._conn
        finally:
            self._conn.execute("COMMIT")

    # -- run ------------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The run's resolved config as stored at creation."""
        return json.loads(self._conn.execute("SELECT config FROM run WHERE id = 1").fetchone()[0])

    def set_config(self, config: dict[str, Any]) -> None:
        """Replaces the stored config (`menas resume --accept-config-change`; log the change as an event)."""
        try:
            text = json.dumps(config, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UserError(f"config: not JSON-serialisable ({exc})") from None
        with self._write() as conn:
            conn.execute("UPDATE run SET config = ?, updated = ? WHERE id = 1", (text, time.time()))

    def run_info(self) -> RunInfo:
        row = self._conn.execute("SELECT created, updated, seed, version, status FROM run WHERE id = 1").fetchone()
        return RunInfo(**dict(row))

    def set_status(self, status: str) -> None:
        """Sets the run status (created, running, finished, failed, interrupted)."""
        check(status in RUN_STATUSES, "run status", status, ", ".join(RUN_STATUSES))
        with self._write() as conn:
            conn.execute("UPDATE run SET status = ?, updated = ? WHERE id = 1", (status, time.time()))

    # -- trial writes ---------------------------------------------------------------------------------

    def add_trials(self, specs: Iterable[SpecLike]) -> None:
        """Records proposed trials as queued, in one transaction (before they are submitted, so the store knows
        every trial). A spec gives the record's spec fields it has (`TrialRecord`'s defaults for the others).

        Raises:
            ValueError: a trial id already recorded, or a spec field of the wrong type.
        """
        names = [f.name for f in FIELDS if PART[f.name] == SPEC]
        now = time.time()
        rows = []
        for spec in specs:
            values = {name: getattr(spec, name) for name in names if hasattr(spec, name)}
            record = TrialRecord(**values, queued_at=now)
            rows.append(to_row(record, [*names, "status", "queued_at"]))
        if not rows:
            return
        columns = list(rows[0])
        try:
            with self._write() as conn:
                conn.executemany(
                    f"INSERT INTO trials ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                    [tuple(row.values()) for row in rows],
                )
        except sqlite3.IntegrityError:
            ids = [r["trial_id"] for r in rows]
            raise ValueError(f"add_trials: trial id(s) {ids} collide with recorded trials or repeat") from None

    def mark_running(self, trial_id: int, worker: str | None = None) -> None:
        """A queued trial starts (on `worker`, free text, when the caller knows it); counts the attempt. The trial's
        own "host:pid" replaces the label when it finishes."""
        self._update(
            trial_id,
            ("queued",),
            "mark_running",
            "status = 'running', started_at = ?, worker = ?, attempts = attempts + 1",
            (time.time(), worker),
        )

    def record_result(self, result: TrialRecord) -> None:
        """Records a queued or running trial as done or failed with what it measured (`result`, as `run_trial`
        returns it: its measured fields, status, error and worker; a worker of None keeps `mark_running`'s label),
        in one transaction.

        Raises:
            ValueError: an unknown trial, one already finished, a result that is neither done nor failed, or one
                for another genome.
        """
        check(result.status in ("done", "failed"), "record_result status", result.status, "done, failed")
        names = [f.name for f in FIELDS if PART[f.name] == MEASURED]
        values = to_row(result, names)
        values["error"] = result.error if result.status == "failed" else None
        if result.worker is not None:
            values["worker"] = result.worker
        columns = ", ".join(f"{name} = ?" for name in values)
        row = self._conn.execute("SELECT genome FROM trials WHERE trial_id = ?", (result.trial_id,)).fetchone()
        if row is not None and row[0] != result.genome:
            raise ValueError(f"record_result: trial {result.trial_id} is {row[0]}, not {result.genome}")
        self._update(
            result.trial_id,
            IN_FLIGHT,
            "record_result",
            f"status = '{result.status}', finished_at = ?, {columns}",
            (time.time(), *values.values()),
        )

    def finish_trial(self, trial_id: int, **measured: Any) -> None:
        """Records a trial as done with the measured fields of `TrialRecord` given by name (`record_result`)."""
        self.record_result(self._result(trial_id, "done", measured))

    def fail_trial(self, trial_id: int, error: str, **measured: Any) -> None:
        """Records a trial as failed with its error text and whatever was measured (`record_result`)."""
        check(isinstance(error, str), "fail_trial error", error, "strings")
        self.record_result(self._result(trial_id, "failed", {**measured, "error": error}))

    def _result(self, trial_id: int, status: str, values: dict[str, Any]) -> TrialRecord:
        allowed = [*sorted(name for name, part in PART.items() if part == MEASURED), "error", "worker"]
        unknown = sorted(set(values) - set(allowed))
        check(not unknown, f"trial {trial_id}", unknown, ", ".join(allowed))
        row = self._conn.execute("SELECT genome FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
        if row is None:
            raise ValueError(f"record_result: trial {trial_id} is not in the store (add_trials first)")
        return TrialRecord(trial_id=trial_id, genome=row[0], status=status, **values)

    def requeue(self, trial_ids: Iterable[int] | None = None) -> list[int]:
        """Puts running trials (all in flight when `trial_ids` is None) back to queued, e.g. on resume after a
        crash; returns the ids now queued."""
        with self._write() as conn:
            if trial_ids is None:
                ids = [r[0] for r in conn.execute("SELECT trial_id FROM trials WHERE status IN ('queued', 'running')")]
            else:
                ids = list(trial_ids)
            for tid in ids:
                row = conn.execute("SELECT status FROM trials WHERE trial_id = ?", (tid,)).fetchone()
                if row is None or row[0] not in IN_FLIGHT:
                    found = "unknown" if row is None else row[0]
                    raise ValueError(f"requeue: trial {tid} is {found}, allowed: queued or running trials")
                conn.execute(
                    "UPDATE trials SET status = 'queued', started_at = NULL, worker = NULL WHERE trial_id = ?", (tid,)
                )
        return sorted(ids)

    def record_latency(self, trial_id: int, measured_ms: float, measurement: dict[str, Any]) -> None:
        """Records the latency of a done trial's final network measured on this machine (`measured_latency_ms`,
        ms, and how: `latency_measurement`), in one transaction; measuring it again replaces both.

        Raises:
            ValueError: an unknown trial or one not done, a latency that is not a number > 0, a measurement that
                is not a mapping.
        """
        check(is_real(measured_ms) and measured_ms > 0, "measured_latency_ms", measured_ms, "numbers > 0 (ms)")
        check(isinstance(measurement, dict), "latency_measurement", type(measurement).__name__, "a mapping")
        try:
            text = json.dumps(measurement, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UserError(f"latency_measurement: not JSON-serialisable ({exc})") from None
        self._update(
            trial_id,
            ("done",),
            "record_latency",
            "measured_latency_ms = ?, latency_measurement = ?",
            (float(measured_ms), text),
        )

    def add_retrain(self, **fields: Any) -> int:
        """Records a finished retrain (the fields of `RetrainRecord` but `id` and `time`; `config` a mapping);
        returns its id."""
        names = [f for f in RetrainRecord.__dataclass_fields__ if f not in ("id", "time")]
        unknown = sorted(set(fields) - set(names))
        check(not unknown, "add_retrain", unknown, ", ".join(names))
        check(
            isinstance(fields.get("genome"), str) and fields["genome"] != "",
            "add_retrain genome",
            fields.get("genome"),
            "genome strings",
        )
        check(fields.get("kept") in ("raw", "ema"), "add_retrain kept", fields.get("kept"), "raw, ema")
        check(isinstance(fields.get("config"), dict), "add_retrain config", fields.get("config"), "a mapping")
        for name in (
            "test_top1",
            "test_top5",
            "test_loss",
            "ema_top1",
            "ema_top5",
            "ema_loss",
            "wall_s",
            "images_per_s",
        ):
            fields[name] = _opt_real(f"add_retrain {name}", fields.get(name))
        for name in ("trial_id", "epochs", "macs", "params"):
            _opt_int(f"add_retrain {name}", fields.get(name))
        row = {name: fields.get(name) for name in names}
        row["config"] = json.dumps(row["config"], sort_keys=True)
        with self._write() as conn:
            cursor = conn.execute(
                f"INSERT INTO retrains (time, {', '.join(names)}) VALUES (?, {', '.join('?' * len(names))})",
                (time.time(), *row.values()),
            )
            return int(cursor.lastrowid)

    def retrains(self) -> list[RetrainRecord]:
        """Every recorded retrain, oldest first (none in a store of schema version 1 opened read-only)."""
        try:
            rows = self._conn.execute("SELECT * FROM retrains ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # version 1 store opened read-only: no retrains table yet
            return []
        return [RetrainRecord(**{**dict(r), "config": json.loads(r["config"])}) for r in rows]

    def log_event(self, kind: str, **payload: Any) -> int:
        """Appends an event of any kind (see the module docstring for those the search logs); returns its id. The
        payload is stored as JSON; values JSON cannot hold (paths, ...) are stored as their `str`."""
        check(isinstance(kind, str) and kind != "", "event kind", kind, "non-empty strings")
        text = json.dumps(payload, sort_keys=True, default=str)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO events (time, kind, payload) VALUES (?, ?, ?)", (time.time(), kind, text)
            )
            return int(cursor.lastrowid)

    # -- queries --------------------------------------------------------------------------------------

    def trial(self, trial_id: int) -> TrialRecord:
        """One trial; KeyError when unknown."""
        row = self._conn.execute("SELECT * FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
        if row is None:
            raise KeyError(f"trial {trial_id} is not in {self.path}")
        return self._record(row)

    def trials(self, status: str | Iterable[str] | None = None, generation: int | None = None) -> list[TrialRecord]:
        """Trials in trial_id order, optionally of some statuses and one generation."""
        statuses = (status,) if isinstance(status, str) else tuple(status) if status is not None else TRIAL_STATUSES
        for s in statuses:
            check(s in TRIAL_STATUSES, "trial status", s, ", ".join(TRIAL_STATUSES))
        query = f"SELECT * FROM trials WHERE status IN ({', '.join('?' * len(statuses))})"
        args: list[Any] = list(statuses)
        if generation is not None:
            query += " AND generation = ?"
            args.append(generation)
        return [self._record(r) for r in self._conn.execute(query + " ORDER BY trial_id", args)]

    def _record(self, row: sqlite3.Row) -> TrialRecord:
        return from_row({self._renames.get(key, key): row[key] for key in row.keys()})  # noqa: SIM118 (a Row)

    def history(self) -> list[TrialRecord]:
        """Every trial in trial_id order (in-flight ones included): what `Strategy.replay` takes."""
        return self.trials()

    def finished(self) -> list[TrialRecord]:
        """Done and failed trials, in trial_id order."""
        return self.trials(("done", "failed"))

    def generation_summary(self) -> list[GenerationSummary]:
        """Per generation, ascending: counts by status, score and cost statistics of done trials, epoch time."""
        return generation_summary(self.trials())

    def generation_phases(self) -> list[GenerationPhases]:
        """Per generation, ascending: what the paper's Fig. 4a/4b show (`summaries.generation_phases`)."""
        return generation_phases(self.trials())

    def compute_used(self) -> ComputeUsed:
        """The compute of every finished trial so far (what `compute` budgets count; a resumed run keeps it):
        training-image equivalents (`FORWARD_IMAGES_PER_TRAINING_IMAGE`) and trial seconds."""
        query = (
            "SELECT COALESCE(SUM({}), 0), COALESCE(SUM(finished_at - started_at), 0.0), COUNT(*) "
            "FROM trials WHERE status IN ('done', 'failed')"
        )
        # weighted here from the stored raw counts (not stored weighted), so every store and resume counts alike
        trained = "images" if self._version < 5 else "train_images"
        weighted = (
            f"COALESCE({trained}, 0) + (COALESCE(calib_images, 0) + COALESCE(eval_images, 0)) / "
            f"{float(FORWARD_IMAGES_PER_TRAINING_IMAGE)}"
        )
        if self._version < 3:  # no calibration or scoring counts yet: training images only
            weighted = trained
        row = self._conn.execute(query.format(weighted)).fetchone()
        return ComputeUsed(round(row[0]), float(row[1]), int(row[2]))

    def events(self, kind: str | None = None, after: int = 0) -> list[Event]:
        """Events with id > `after` (for tailing), optionally of one kind, oldest first."""
        query, args = "SELECT * FROM events WHERE id > ?", [after]
        if kind is not None:
            query += " AND kind = ?"
            args.append(kind)
        rows = self._conn.execute(query + " ORDER BY id", args).fetchall()
        return [Event(r["id"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]

    def snapshot(self) -> tuple[RunInfo, list[TrialRecord]]:
        """Run info and every trial from one consistent snapshot (for status displays)."""
        with self._read():
            return self.run_info(), self.trials()

    # -- helpers --------------------------------------------------------------------------------------

    def _update(self, trial_id: int, allowed: tuple[str, ...], op: str, assignments: str, args: tuple) -> None:
        """Updates one trial whose status is in `allowed`, checking it in the same transaction."""
        with self._write() as conn:
            row = conn.execute("SELECT status FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
            if row is None:
                raise ValueError(f"{op}: trial {trial_id} is not in the store (add_trials first)")
            if row[0] not in allowed:
                raise ValueError(f"{op}: trial {trial_id} is {row[0]}, allowed: {' or '.join(allowed)} trials")
            conn.execute(f"UPDATE trials SET {assignments} WHERE trial_id = ?", (*args, trial_id))


__all__ = [
    "FILENAME",
    "IN_FLIGHT",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "TRIAL_STATUSES",
    "ComputeUsed",
    "Event",
    "GenerationPhases",
    "GenerationSummary",
    "RetrainRecord",
    "RunInfo",
    "Store",
    "TrialRecord",
    "store_path",
]
