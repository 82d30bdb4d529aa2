"""Stores as older menas versions wrote them, for the migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: The `trials` table as schema version 1 created it, and the columns versions 3 and 4 added (menas 0.1 before the
#: one trial record): old stores are built from these, as they are on users' disks.
_V1_TRIALS = """CREATE TABLE trials (
    trial_id INTEGER PRIMARY KEY, genome TEXT NOT NULL, generation INTEGER NOT NULL, role TEXT NOT NULL,
    parents TEXT NOT NULL, use_tickets INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, macs INTEGER, params INTEGER, score REAL,
    epoch_times TEXT NOT NULL DEFAULT '[]', ticket TEXT, ticket_score REAL, ticket_macs INTEGER,
    ticket_params INTEGER, ticket_score_before_ft REAL, checkpoint TEXT, error TEXT, queued_at REAL NOT NULL,
    started_at REAL, finished_at REAL, train_s REAL, lottery_s REAL, eval_s REAL, images INTEGER, epochs INTEGER)"""
_V3_COLUMNS = ("finetuned_score REAL", "finetune_s REAL", "train_epoch_s TEXT NOT NULL DEFAULT '[]'",
               "finetune_epoch_s TEXT NOT NULL DEFAULT '[]'", "images_per_epoch INTEGER", "finetune_epochs INTEGER",
               "calib_images INTEGER", "eval_images INTEGER", "compute_images INTEGER")  # fmt: skip
_V4_COLUMNS = ("origin TEXT", "inherited TEXT")


def make_old_store(run_dir: Path, version: int) -> None:
    """Replaces the trials table of a new store with one of schema `version` (1 to 7) holding two trials: 0 done
    (score 70, 100 images, weights at an absolute path), 1 queued; version 1 has no retrains table either."""
    if version in (5, 6, 7):
        _make_record_store(run_dir, version)
        return
    conn = sqlite3.connect(run_dir / "menas.sqlite")
    conn.execute("DROP TABLE trials")
    if version == 1:
        conn.execute("DROP TABLE retrains")
    conn.execute(_V1_TRIALS)
    for column in (_V3_COLUMNS if version >= 3 else ()) + (_V4_COLUMNS if version >= 4 else ()):
        conn.execute(f"ALTER TABLE trials ADD COLUMN {column}")
    conn.execute("INSERT INTO trials (trial_id, genome, generation, role, parents, use_tickets, status, queued_at, "
                 "macs, params, score, epoch_times, checkpoint, images) VALUES (0, 'genome-0', 0, 'sample', '[]', 0, "
                 "'done', 1.0, 1000, 10, 70.0, '[2.0]', '/gone/trials/00000/model.safetensors', 100)")  # fmt: skip
    conn.execute("INSERT INTO trials (trial_id, genome, generation, role, parents, use_tickets, status, queued_at) "
                 "VALUES (1, 'genome-1', 0, 'sample', '[]', 0, 'queued', 1.0)")  # fmt: skip
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


#: The columns each schema version of the one trial record added, dropped from a new store to make an old one.
_ADDED_SINCE = {
    6: ("train_losses",),
    7: ("latency_ms", "ticket_latency_ms"),
    8: ("measured_latency_ms", "latency_measurement"),
}


def _make_record_store(run_dir: Path, version: int) -> None:
    """A store of schema 5 (the one trial record, before the per-epoch training losses), 6 (before the predicted
    latencies) or 7 (before the measured latency): the new store's table without the columns added since, holding
    the same two trials under the record's names."""
    conn = sqlite3.connect(run_dir / "menas.sqlite")
    for later, columns in _ADDED_SINCE.items():
        for column in columns if later > version else ():
            conn.execute(f"ALTER TABLE trials DROP COLUMN {column}")
    conn.execute("INSERT INTO trials (trial_id, genome, generation, role, parents, use_tickets, status, queued_at, "
                 "macs, params, trained_score, epoch_s, weights, train_images) VALUES (0, 'genome-0', 0, "
                 "'sample', '[]', 0, 'done', 1.0, 1000, 10, 70.0, '[2.0]', '/gone/trials/00000/model.safetensors', "
                 "100)")  # fmt: skip
    conn.execute("INSERT INTO trials (trial_id, genome, generation, role, parents, use_tickets, status, queued_at) "
                 "VALUES (1, 'genome-1', 0, 'sample', '[]', 0, 'queued', 1.0)")  # fmt: skip
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
