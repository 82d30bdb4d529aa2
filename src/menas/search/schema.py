"""The store's SQLite schema and how a store file is made, opened and migrated: the tables (`trials`' columns
are `TrialRecord`'s fields), the statements that take an older store to the current version, connections with a
busy timeout, and publishing a new file atomically. No torch.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from menas.search.record import FIELDS, column_sql

#: Seconds a connection waits for a lock before "database is locked" is raised.
BUSY_TIMEOUT_S = 30.0

#: Schema version, kept in SQLite's `user_version`; `Store.open` migrates older versions and refuses others.
SCHEMA_VERSION = 8

SCHEMA = (
    """CREATE TABLE run (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        config TEXT NOT NULL,
        created REAL NOT NULL,
        seed INTEGER,
        version TEXT NOT NULL,
        status TEXT NOT NULL,
        updated REAL NOT NULL
    )""",
    f"CREATE TABLE trials ({', '.join(column_sql(f.name) for f in FIELDS)})",
    "CREATE INDEX trials_by_status ON trials (status)",
    "CREATE INDEX trials_by_generation ON trials (generation)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL
    )""",
)

_RETRAINS_TABLE = """CREATE TABLE retrains (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        trial_id INTEGER,
        genome TEXT NOT NULL,
        recipe TEXT NOT NULL,
        config TEXT NOT NULL,
        epochs INTEGER NOT NULL,
        test_top1 REAL,
        test_top5 REAL,
        test_loss REAL,
        ema_top1 REAL,
        ema_top5 REAL,
        ema_loss REAL,
        kept TEXT NOT NULL,
        macs INTEGER,
        params INTEGER,
        wall_s REAL,
        images_per_s REAL,
        device TEXT,
        teacher TEXT,
        out TEXT NOT NULL
    )"""
#: Per-phase measurements (schema version 3) and weight sharing (4), added to the trials tables of older stores.
_PHASE_ALTERS = tuple(
    f"ALTER TABLE trials ADD COLUMN {column}"
    for column in (
        "finetuned_score REAL",
        "finetune_s REAL",
        "train_epoch_s TEXT NOT NULL DEFAULT '[]'",
        "finetune_epoch_s TEXT NOT NULL DEFAULT '[]'",
        "images_per_epoch INTEGER",
        "finetune_epochs INTEGER",
        "calib_images INTEGER",
        "eval_images INTEGER",
        "compute_images INTEGER",
    )
)
_INHERIT_ALTERS = ("ALTER TABLE trials ADD COLUMN origin TEXT", "ALTER TABLE trials ADD COLUMN inherited TEXT")
#: Schema version 5, the one trial record (`menas.search.record`): the scores named for their phase, raw image
#: counts named so, the weights path (relative to the run folder from then on), the parents' trial ids. Stores
#: migrated from 3 or 4 keep their `compute_images` column, which nothing reads (it is derived).
RECORD_RENAMES = {
    "score": "trained_score",
    "ticket_score": "ticket_finetuned_score",
    "ticket_score_before_ft": "ticket_recalibrated_score",
    "checkpoint": "weights",
    "images": "train_images",
    "epoch_times": "epoch_s",
}
_RECORD_MIGRATION = (
    *(f"ALTER TABLE trials RENAME COLUMN {old} TO {new}" for old, new in RECORD_RENAMES.items()),
    f"ALTER TABLE trials ADD COLUMN {column_sql('parent_ids')}",
    f"ALTER TABLE trials ADD COLUMN {column_sql('recipe')}",
)
#: Schema version 6: the candidate's training loss per epoch (the training-speed estimate's terms).
_LOSSES_ALTERS = (f"ALTER TABLE trials ADD COLUMN {column_sql('train_losses')}",)
#: Schema version 7: the predicted latency of the candidate and of its ticket (a search with a latency budget).
_LATENCY_ALTERS = tuple(f"ALTER TABLE trials ADD COLUMN {column_sql(n)}" for n in ("latency_ms", "ticket_latency_ms"))
#: Schema version 8: the final network's latency measured on the search's machine (the final front, at the end).
_MEASURED_LATENCY_ALTERS = tuple(
    f"ALTER TABLE trials ADD COLUMN {column_sql(n)}" for n in ("measured_latency_ms", "latency_measurement")
)
SCHEMA = (*SCHEMA, _RETRAINS_TABLE)
#: Statements that take a store from version N to N + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (_RETRAINS_TABLE,),
    2: _PHASE_ALTERS,
    3: _INHERIT_ALTERS,
    4: _RECORD_MIGRATION,
    5: _LOSSES_ALTERS,
    6: _LATENCY_ALTERS,
    7: _MEASURED_LATENCY_ALTERS,
}


def publish(tmp: Path, target: Path) -> None:
    """Puts the complete new store file `tmp` at `target` unless something is there already: a hard link fails
    when `target` exists (atomically, unlike `os.replace`, which would swap the file under another creator's open
    connection). Filesystems without hard links fall back to an exists check and a rename."""
    try:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise FileExistsError(
                f"{target} already exists (created by another process just now): resume that run "
                "or choose another run name"
            ) from None
        except OSError:  # no hard links here (some network and FUSE filesystems)
            if target.exists():
                raise FileExistsError(f"{target} already exists: resume that run or choose another run name") from None
            os.rename(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def connect(path: Path, mode: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), rows by name, busy timeout set."""
    conn = sqlite3.connect(
        f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    if mode != "ro":
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Brings a store of an older schema version up to `SCHEMA_VERSION`, one version per transaction."""
    for start in range(version, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == start:  # another process may have migrated
                for statement in MIGRATIONS[start]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {start + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
