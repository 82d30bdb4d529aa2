"""The one trial record: every field reaches the store and trials.csv, one convention for "no ticket", and the
strategy's outcome is a projection of it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from menas.report.build import CSV_FIELDS, write_report
from menas.search.record import DERIVED, FIELDS, MEASURED, PART, SPEC, TrialRecord
from menas.search.store import Store
from menas.search.strategies import TrialOutcome, TrialSpec

#: A record with every field set to a value other than its default.
FULL = TrialRecord(
    trial_id=0, genome="g", generation=1, role="mutation", parents=("p",), parent_ids=(0,), use_tickets=True,
    origin={"parents": 1}, recipe={"epochs": 2, "finetune_epochs": 1, "inherit": True}, status="done", attempts=1,
    worker="host:1", error=None, queued_at=1.0, started_at=2.0,
    finished_at=3.0, macs=1000, params=10, latency_ms=2.5, trained_score=60.0, finetuned_score=None, ticket="t",
    ticket_macs=800, ticket_params=8, ticket_latency_ms=2.25, ticket_recalibrated_score=58.0,
    ticket_finetuned_score=61.0, measured_latency_ms=2.5,
    latency_measurement={"p90_ms": 2.75, "settings": {"threads": 1}, "same_host": True},
    weights="trials/00000/model.safetensors", train_s=1.0, lottery_s=0.5, finetune_s=0.25, eval_s=0.125,
    epoch_s=(1.0, 0.25), train_epoch_s=(0.75,), train_losses=(2.25,), finetune_epoch_s=(0.2,), epochs=2,
    finetune_epochs=1,
    images_per_epoch=100, train_images=200, calib_images=30, eval_images=60,
    inherited={"counts": {"copied": 1, "sliced": 0, "padded": 0, "fresh": 0}, "fallback": None, "epochs": 1,
               "epochs_saved": 1},
)  # fmt: skip


def test_the_full_record_sets_every_field() -> None:
    may_be_unset = ("error", "finetuned_score")  # a done trial with a ticket has neither
    unset = [f.name for f in FIELDS if getattr(FULL, f.name) == f.default and f.name not in may_be_unset]
    assert not unset, f"FULL leaves {unset} at their defaults: give them values so the tests below cover them"


def test_every_field_is_a_store_column_and_a_csv_column(tmp_path: Path) -> None:
    with Store.create(tmp_path / "run", {"space": "mobilenet3-mt"}) as store:
        columns = [row[1] for row in store._conn.execute("PRAGMA table_info(trials)")]
        assert columns == [f.name for f in FIELDS]  # a new store's columns are the record's fields, in order
        store.add_trials([TrialSpec(**FULL.values(SPEC))])
        store.mark_running(0)
        store.record_result(FULL)
        stored = store.trial(0)
    assert stored.values(SPEC) == FULL.values(SPEC) and stored.values(MEASURED) == FULL.values(MEASURED)
    assert set(CSV_FIELDS) >= {f.name for f in FIELDS} | set(DERIVED)
    write_report(tmp_path / "run")
    (row,) = csv.DictReader((tmp_path / "run" / "report" / "trials.csv").open())
    for f in FIELDS:
        if PART[f.name] != MEASURED and f.name not in ("genome", "parents", "parent_ids", "origin", "recipe"):
            continue
        value = getattr(FULL, f.name)
        text = json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)
        expected = "" if value is None else text if isinstance(value, tuple | dict) else str(value)
        assert row[f.name] == expected, f.name
    for name in DERIVED:
        assert row[name] == str(getattr(FULL, name)), name


def test_no_ticket_is_none_everywhere() -> None:
    plain = TrialRecord(trial_id=1, genome="g", status="done", macs=5, params=2, trained_score=50.0,
                        finetuned_score=55.0)  # fmt: skip
    assert (plain.ticket, plain.final_genome, plain.final_score, plain.final_macs) == (None, "g", 55.0, 5)
    assert TrialOutcome.from_record(plain) == TrialOutcome(1, "g", "done", 55.0, 5, 2, None)
    lineage = {"role": FULL.role, "parent_ids": FULL.parent_ids, "rung": FULL.rung}
    assert TrialOutcome.from_record(FULL) == TrialOutcome(0, "g", "done", 61.0, 800, 8, "t", **lineage, latency_ms=2.25)
    with pytest.raises(ValueError, match="ticket: got None, allowed: a genome string when ticket_macs"):
        TrialRecord(trial_id=1, genome="g", status="done", macs=5, params=2, trained_score=5.0, ticket_macs=3)
    with pytest.raises(ValueError, match="ticket: got None, allowed: a genome string when ticket_latency_ms"):
        TrialRecord(trial_id=1, genome="g", status="done", macs=5, params=2, trained_score=5.0, ticket_latency_ms=1.0)
    assert FULL.final_latency_ms == 2.25 and plain.final_latency_ms is None
    with pytest.raises(ValueError, match="finetuned_score: got 1.0, allowed: None with a ticket"):
        TrialRecord(trial_id=1, genome="g", status="done", macs=5, params=2, trained_score=5.0, ticket="t",
                    ticket_macs=3, ticket_params=1, ticket_finetuned_score=2.0, finetuned_score=1.0)  # fmt: skip
    with pytest.raises(ValueError, match="trained_score: got None, allowed: a value when status is done"):
        TrialRecord(trial_id=1, genome="g", status="done", macs=5, params=2)


def test_raw_and_budget_images() -> None:
    assert FULL.raw_images == 200 + 30 + 60 and FULL.budget_images == 200 + (30 + 60) / 3
    assert TrialRecord(trial_id=1, genome="g").raw_images is None
