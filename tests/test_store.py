"""The run store: round trips, status rules, resume queries, concurrent readers, a killed writer, and exact
resume of a strategy from the store."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from menas import __version__
from menas.errors import UserError
from menas.search.record import FIELDS, MEASURED, PART, TYPES
from menas.search.store import (
    FILENAME,
    SCHEMA_VERSION,
    Store,
    TrialRecord,
    store_path,
)
from menas.search.strategies import MENAS, TrialOutcome, TrialSpec
from menas.space.cost import Budget
from menas.space.genome import Genome
from old_stores import make_old_store

from genomes import MT

BUDGET = Budget(macs_min=150e6, macs_max=300e6, params_max=8e6, input_size=224)


def spec(trial_id: int, generation: int = 0) -> TrialSpec:
    return TrialSpec(trial_id, f"genome-{trial_id}", generation, "sample", (), False)


def evaluate(s: TrialSpec) -> TrialOutcome:
    """A deterministic stand-in for training: a hash score; one trial in five fails."""
    cost = BUDGET.cost(Genome.from_str(s.genome))
    if zlib.crc32(s.genome.encode()) % 5 == 0:
        return TrialOutcome(s.trial_id, s.genome, "failed")
    return TrialOutcome(s.trial_id, s.genome, "done", zlib.crc32(s.genome.encode()) / 2**32, cost.macs, cost.params)


def new_store(tmp_path: Path, **config: object) -> Store:
    return Store.create(tmp_path / "run", {"seed": 3, "search": {"population": 60}, **config})


def test_importing_store_does_not_import_torch() -> None:
    code = "import sys, menas.search.store; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_create_open_and_run_record(tmp_path: Path) -> None:
    before = time.time()
    with new_store(tmp_path, name="demo") as store:
        assert store.path == tmp_path / "run" / FILENAME
        assert store.config() == {"seed": 3, "search": {"population": 60}, "name": "demo"}
        info = store.run_info()
        assert info.seed == 3 and info.version == __version__ and info.status == "created"
        assert before <= info.created <= time.time()
        store.set_status("running")
        with pytest.raises(ValueError, match="run status: got 'paused', allowed: created, running, finished"):
            store.set_status("paused")
    assert not list((tmp_path / "run").glob("*.tmp-*"))  # created under a temporary name, renamed
    with Store.open(tmp_path / "run" / FILENAME) as again:
        assert again.run_info().status == "running"
        assert again._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert again._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with pytest.raises(FileExistsError, match="already exists: resume that run"):
        new_store(tmp_path)
    with pytest.raises(UserError, match="no menas store"):
        Store.open(tmp_path / "other")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all, just some bytes" * 40)
    with pytest.raises(ValueError, match="not a menas store"):
        Store.open(tmp_path / "junk.sqlite")
    assert store_path("runs/x") == Path("runs/x") / FILENAME and store_path("a/b.sqlite") == Path("a/b.sqlite")


def test_config_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="config: not JSON-serialisable"):
        Store.create(tmp_path, {"path": Path("x")})
    with pytest.raises(ValueError, match="config: got 'list'"):
        Store.create(tmp_path, [1])  # type: ignore[arg-type]
    assert not (tmp_path / FILENAME).exists()


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
nonneg = st.floats(min_value=0, max_value=1e9, allow_nan=False)
count = st.integers(min_value=0, max_value=2**62)


def _values(kind: type, name: str) -> st.SearchStrategy:
    """Hypothesis values of one record field, from its type."""
    if name == "parent_ids":
        return st.lists(st.integers(0, 99), max_size=3)
    if name == "parents":
        return st.lists(st.text(min_size=1, max_size=20), max_size=3)
    return {
        int: count,
        float: finite if name.endswith("score") else nonneg,
        str: st.text(min_size=1, max_size=30),
        bool: st.booleans(),
        tuple: st.lists(nonneg, max_size=6),
        dict: st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
    }[kind]


#: Every measured field of the record, drawn from its type (the ticket's fields travel with `ticket`).
_MEASURED = {name: _values(TYPES[name], name) for name, part in PART.items() if part == MEASURED}


@settings(max_examples=25, deadline=None)
@given(measured=st.fixed_dictionaries({}, optional=_MEASURED), spec_values=st.fixed_dictionaries(
    {"role": st.text(min_size=1, max_size=12), "parents": _values(tuple, "parents"), "use_tickets": st.booleans(),
     "origin": st.one_of(st.none(), _values(dict, "origin"))}))  # fmt: skip
def test_every_field_round_trips(measured: dict, spec_values: dict) -> None:
    """Whatever a trial measured comes back from the store as it was recorded, field by field (enumerated from
    `TrialRecord`, so a new field is covered without a new line here)."""
    measured.update(macs=measured.get("macs", 1), params=measured.get("params", 2), trained_score=measured.get(
        "trained_score", 0.5))  # fmt: skip
    if measured.get("ticket") is None:
        for name in [n for n in measured if n.startswith("ticket")]:  # the ticket and its fields
            measured.pop(name)
    else:
        measured.pop("finetuned_score", None)
        measured.update({n: measured.get(n, 1) for n in ("ticket_macs", "ticket_params", "ticket_finetuned_score")})
    spec_values["parent_ids"] = tuple(range(len(spec_values["parents"])))
    with tempfile.TemporaryDirectory() as tmp, Store.create(tmp, {}) as store:
        s = TrialSpec(0, "genome-0", 2, **spec_values)
        store.add_trials([s])
        store.mark_running(0, worker="gpu3")
        store.finish_trial(0, **measured)
        store.close()
        with Store.open(tmp, readonly=True) as reader:
            r = reader.trial(0)
    assert TrialSpec.from_record(r) == s
    assert (r.status, r.attempts, r.worker, r.error) == ("done", 1, "gpu3", None)
    expected = TrialRecord(trial_id=0, genome="genome-0", status="done", **measured)
    assert r.values(MEASURED) == expected.values(MEASURED)
    assert r.queued_at <= r.started_at <= r.finished_at
    outcome = TrialOutcome.from_record(r)
    assert (outcome.ticket, outcome.score, outcome.macs) == (r.ticket, r.final_score, r.final_macs)


def test_failed_trial_round_trip_and_status_rules(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        store.add_trials([spec(0), spec(1), spec(2)])
        with pytest.raises(ValueError, match=r"trial id\(s\) \[2\] collide"):
            store.add_trials([spec(2)])
        store.mark_running(1)
        store.fail_trial(1, "RuntimeError: CUDA out of memory", macs=5, params=6, epoch_s=[1.5], train_s=2.0)
        r = store.trial(1)
        assert (r.status, r.error, r.macs, r.params, r.epoch_s, r.train_s) == (
            "failed", "RuntimeError: CUDA out of memory", 5, 6, (1.5,), 2.0
        )  # fmt: skip
        assert TrialOutcome.from_record(r) == TrialOutcome(1, r.genome, "failed")
        assert TrialOutcome.from_record(store.trial(0)) is None  # queued: in flight
        with pytest.raises(ValueError, match="record_result: trial 1 is failed, allowed: queued or running"):
            store.finish_trial(1, trained_score=1.0, macs=1, params=1)
        with pytest.raises(ValueError, match="mark_running: trial 1 is failed, allowed: queued"):
            store.mark_running(1)
        with pytest.raises(ValueError, match="trial 7 is not in the store"):
            store.fail_trial(7, "x")
        with pytest.raises(ValueError, match="TrialRecord.trained_score: got nan"):
            store.finish_trial(0, trained_score=math.nan, macs=1, params=1)
        with pytest.raises(ValueError, match="TrialRecord.macs: got -3"):
            store.finish_trial(0, trained_score=1.0, macs=-3, params=1)
        with pytest.raises(ValueError, match="a genome with ticket_macs, ticket_params"):
            store.finish_trial(0, trained_score=1.0, macs=1, params=1, ticket="t", ticket_finetuned_score=1.0)
        with pytest.raises(ValueError, match=r"TrialRecord.epoch_s: got \[1, -1\]"):
            store.finish_trial(0, trained_score=1.0, macs=1, params=1, epoch_s=[1, -1])
        with pytest.raises(KeyError, match="trial 9"):
            store.trial(9)
        assert store.trial(0).status == "queued"  # rejected writes changed nothing


def test_resume_queries_after_a_crash(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.add_trials([spec(i, generation=i // 3) for i in range(6)])
    for i in (0, 1, 2, 4):
        store.mark_running(i, worker=f"w{i}")
    store.finish_trial(0, trained_score=0.5, macs=10, params=3)
    store.fail_trial(2, "diverged")
    del store  # a crash: no close, trials 1 and 4 running, 3 and 5 queued

    reopened = Store.open(tmp_path / "run")
    assert [r.trial_id for r in reopened.trials(("queued", "running"))] == [1, 3, 4, 5]
    assert [(r.trial_id, r.status) for r in reopened.finished()] == [(0, "done"), (2, "failed")]
    assert [r.trial_id for r in reopened.history()] == list(range(6))
    assert [r.status for r in reopened.history()] == ["done", "running", "failed", "queued", "running", "queued"]
    assert reopened.requeue() == [1, 3, 4, 5]
    assert {r.status for r in reopened.trials(("queued", "running"))} == {"queued"}
    assert reopened.trial(1).worker is None
    with pytest.raises(ValueError, match="requeue: trial 0 is done"):
        reopened.requeue([0])
    reopened.mark_running(1)
    assert reopened.trial(1).attempts == 2  # the second attempt is counted
    assert [r.trial_id for r in reopened.trials("queued", generation=1)] == [3, 4, 5]
    with pytest.raises(ValueError, match="trial status: got 'lost'"):
        reopened.trials("lost")
    reopened.close()


def test_best_and_generation_summary(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        store.add_trials([spec(i, generation=i // 3) for i in range(7)])
        store.finish_trial(0, trained_score=0.70, macs=300, params=30, epoch_s=[2.0, 4.0])
        store.finish_trial(1, trained_score=0.60, macs=200, params=20, epoch_s=[3.0], ticket="t1",
                           ticket_finetuned_score=0.75, ticket_macs=150, ticket_params=15)  # fmt: skip
        store.fail_trial(2, "nan loss")
        store.finish_trial(3, trained_score=0.75, macs=100, params=10, epoch_s=[1.0])  # ties with t1, fewer MACs
        store.finish_trial(4, trained_score=0.50, macs=400, params=40)
        store.mark_running(5)
        best = store.best()
        assert best is not None and best.trial_id == 3 and best.final_score == 0.75
        g0, g1, g2 = store.generation_summary()
        assert (g0.generation, g0.trials, g0.done, g0.failed, g0.in_flight) == (0, 3, 2, 1, 0)
        assert g0.score_mean == pytest.approx(0.65) and g0.score_median == pytest.approx(0.65)
        assert g0.score_best == 0.70 and g0.ticket_score_best == 0.75
        assert g0.ticket_score_mean == pytest.approx(0.725)
        assert g0.macs_mean == 250 and g0.ticket_macs_mean == 225 and g0.params_mean == 25
        assert g0.ticket_params_mean == 22.5 and g0.epoch_s_mean == 3.0
        assert (g1.done, g1.in_flight, g1.score_best, g1.epoch_s_mean) == (2, 1, 0.75, 1.0)
        assert (g2.trials, g2.done, g2.score_mean, g2.score_median, g2.epoch_s_mean) == (1, 0, None, None, None)


def test_events_and_readonly(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        first = store.log_event("generation", generation=0, parents=["a", "b"])
        store.log_event("resume", run_dir=tmp_path)
        store.log_event("generation", generation=1, parents=[])
        assert [e.payload["generation"] for e in store.events("generation")] == [0, 1]
        resumed = store.events(after=first)
        assert [e.kind for e in resumed] == ["resume", "generation"]
        assert resumed[0].payload == {"run_dir": str(tmp_path)}
        with pytest.raises(ValueError, match="event kind: got ''"):
            store.log_event("")
    with Store.open(tmp_path / "run", readonly=True) as reader:
        assert len(reader.events()) == 3
        with pytest.raises(ValueError, match="opened read-only"):
            reader.log_event("x")


def test_concurrent_reader_sees_consistent_snapshots(tmp_path: Path) -> None:
    """A reader thread (own connection) polls while the writer adds and finishes 150 trials: no locking errors,
    and every snapshot is consistent (ids 0..n-1, done rows complete, counts match)."""
    writer = new_store(tmp_path)
    errors: list[BaseException] = []
    reads = 0
    stop, started = threading.Event(), threading.Event()

    def read() -> None:
        nonlocal reads
        try:
            with Store.open(tmp_path / "run", readonly=True) as reader:
                while not stop.is_set():
                    info, trials = reader.snapshot()
                    assert info.seed == 3
                    assert [r.trial_id for r in trials] == list(range(len(trials)))
                    for r in trials:
                        if r.status == "done":
                            assert r.trained_score == r.trial_id / 1000 and r.finished_at is not None
                            assert r.epoch_s == (1.0, 2.0)
                    summary = reader.generation_summary()
                    assert sum(g.trials for g in summary) <= len(reader.history())
                    reads += 1
                    started.set()
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    assert started.wait(timeout=20), errors
    try:
        for i in range(150):
            writer.add_trials([spec(i, generation=i // 30)])
            writer.mark_running(i)
            writer.finish_trial(i, trained_score=i / 1000, macs=i, params=i, epoch_s=[1.0, 2.0])
            writer.log_event("trial", trial_id=i)
    finally:
        stop.set()
        thread.join(timeout=30)
    writer.close()
    assert not errors, errors[0]
    assert reads > 1


WRITER = textwrap.dedent(
    """
    import sys
    from menas.search.store import Store
    from menas.search.strategies import TrialSpec
    store = Store.create(sys.argv[1], {"seed": 0})
    for i in range(100000):
        store.add_trials([TrialSpec(i, f"genome-{i}", i // 10, "sample")])
        store.mark_running(i)
        store.finish_trial(i, trained_score=0.5, macs=i, params=i, epoch_s=[0.1] * 3, ticket=f"ticket-{i}",
                           ticket_finetuned_score=0.4, ticket_macs=i // 2, ticket_params=i // 2, train_s=1.0)
        store.log_event("trial", trial_id=i, payload="x" * 200)
    """
)


def test_a_killed_writer_leaves_a_consistent_store(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        done = 0
        while time.monotonic() < deadline and done < 40:
            time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            if store_path(run_dir).exists():
                with Store.open(run_dir, readonly=True) as reader:
                    done = len(reader.trials("done"))
        assert done >= 40, "the writer should have finished trials by now"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    store = Store.open(run_dir)
    assert store._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    history = store.history()
    assert len(history) >= 40 and [r.trial_id for r in history] == list(range(len(history)))
    for r in history:
        if r.status == "done":  # a done row is complete: it was written in one transaction
            assert (r.trained_score, r.ticket, r.ticket_macs, r.epoch_s, r.train_s) == (
                0.5, f"ticket-{r.trial_id}", r.trial_id // 2, (0.1, 0.1, 0.1), 1.0
            )  # fmt: skip
    assert all(r.status == "done" for r in history[:-1])  # only the last trial can be caught in flight
    assert len(store.events("trial")) in (len(history) - 1, len(history))
    nxt = len(history)
    store.add_trials([spec(nxt)])  # and the run goes on
    store.finish_trial(nxt, trained_score=1.0, macs=1, params=1)
    assert store.best() is not None and store.best().trial_id == nxt
    store.close()


def test_strategy_resumes_exactly_from_the_store(tmp_path: Path) -> None:
    """The search loop's resume protocol: record each spec before running it and each result before telling;
    after a crash, replay the store's history into a fresh strategy, requeue and re-run the pending trials."""

    def make() -> MENAS:
        return MENAS(MT, BUDGET, 4, population=8, generations=3, parents=3)

    def loop(strategy: MENAS, store: Store, in_flight: list[TrialSpec], stop_after: int | None) -> None:
        for tells in range(10 * strategy.total_trials):
            if strategy.finished or (stop_after is not None and tells >= stop_after):
                return
            new = strategy.ask(max(0, 3 - len(in_flight)))
            store.add_trials(new)
            in_flight += new
            current = in_flight.pop(len(in_flight) // 2)  # some completion order other than ask order
            store.mark_running(current.trial_id)
            outcome = evaluate(current)
            if outcome.ok:
                store.finish_trial(current.trial_id, trained_score=outcome.score, macs=outcome.macs,
                                   params=outcome.params, epoch_s=[0.5], train_s=1.0)  # fmt: skip
            else:
                store.fail_trial(current.trial_id, "failed", epoch_s=[0.5], train_s=1.0)
            strategy.tell([TrialOutcome.from_record(store.trial(current.trial_id))])

    reference = make()
    with Store.create(tmp_path / "ref", {"seed": 4}) as ref_store:
        loop(reference, ref_store, [], None)
        assert reference.finished and len(ref_store.finished()) == 24
        ref_store_best = ref_store.best()

    crashed = make()
    store = Store.create(tmp_path / "run", {"seed": 4})
    loop(crashed, store, [], 11)  # mid generation 1, three trials in flight
    del store, crashed

    store = Store.open(tmp_path / "run")
    in_flight = store.trials(("queued", "running"))
    resumed = make()
    resumed.replay(store.history())
    assert [s.trial_id for s in resumed.pending] == [r.trial_id for r in in_flight] and in_flight
    store.requeue()
    loop(resumed, store, resumed.pending, None)
    assert resumed.history() == reference.history()
    best, ref_best = store.best(), ref_store_best
    assert best is not None and (best.trial_id, best.final_score) == (ref_best.trial_id, ref_best.final_score)
    assert all(isinstance(r, TrialRecord) and not r.in_flight for r in store.history())
    store.close()


def test_concurrent_writers_wait_instead_of_failing(tmp_path: Path) -> None:
    """Two connections writing at once serialise on the busy timeout (no 'database is locked')."""
    new_store(tmp_path).close()
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            with Store.open(tmp_path / "run") as store:
                for i in range(start, start + 60):
                    store.log_event("w", i=i)
        except sqlite3.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    with Store.open(tmp_path / "run", readonly=True) as reader:
        assert sorted(e.payload["i"] for e in reader.events("w")) == [*range(60), *range(100, 160)]


def test_worker_and_eval_seconds_are_written(tmp_path: Path) -> None:
    with new_store(tmp_path) as store:
        store.add_trials([TrialSpec(i, f"g{i}", 0, "sample") for i in range(3)])
        store.mark_running(0, worker="slot-1")
        store.finish_trial(0, trained_score=1.0, macs=1, params=1, eval_s=0.25, worker="node7:4242")
        store.mark_running(1, worker="slot-2")
        store.fail_trial(1, "TrialFailed: x", eval_s=0.5)  # no worker known: the slot label stays
        store.mark_running(2)
        with pytest.raises(UserError, match="worker: got ''"):
            store.finish_trial(2, trained_score=1.0, macs=1, params=1, worker="")
        assert [(t.worker, t.eval_s) for t in store.trials()] == [("node7:4242", 0.25), ("slot-2", 0.5), (None, None)]


@pytest.mark.parametrize("version", [2, 3, 4, 5, 6, 7])
def test_an_older_store_reads_under_the_record_names_and_migrates(tmp_path: Path, version: int) -> None:
    """A store of schema 2-7 reads read-only under the record's names (defaults for columns it lacks), and opened
    for writing is migrated: the old columns renamed, the new ones added, its trials kept, new results recorded."""
    new_store(tmp_path).close()
    make_old_store(tmp_path / "run", version)
    with Store.open(tmp_path / "run", readonly=True) as store:
        old = store.trial(0)
        assert (old.trained_score, old.final_score, old.epoch_s, old.train_images) == (70.0, 70.0, (2.0,), 100)
        assert old.weights == "/gone/trials/00000/model.safetensors" and old.parent_ids == () and old.origin is None
        assert store.compute_used().images == 100
    with Store.open(tmp_path / "run") as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 8
        columns = {row[1] for row in store._conn.execute("PRAGMA table_info(trials)")}
        assert {f.name for f in FIELDS} <= columns <= {f.name for f in FIELDS} | {"compute_images"}
        store.mark_running(1)
        store.finish_trial(1, trained_score=60.0, macs=1000, params=10, finetuned_score=65.0, train_epoch_s=[1.5],
                           train_images=100, calib_images=20, eval_images=30, finetune_epochs=1,
                           train_losses=[2.5], latency_ms=1.25)  # fmt: skip
        new = store.trial(1)
        assert new.final_score == 65.0 and new.train_epoch_s == (1.5,) and new.raw_images == 150
        assert new.train_losses == (2.5,) and old.train_losses == ()
        assert new.final_latency_ms == 1.25 and old.latency_ms is None and old.final_latency_ms is None
        assert old.measured_latency_ms is None and old.latency_measurement is None
        assert store.trial(0) == old
        store.record_latency(1, 1.5, {"p90_ms": 1.75})  # schema 8's columns, written to a migrated store
        assert (store.trial(1).measured_latency_ms, store.trial(1).latency_measurement) == (1.5, {"p90_ms": 1.75})
    with pytest.raises(ValueError, match="bogus"), Store.open(tmp_path / "run") as store:
        store.add_trials([spec(2)])
        store.finish_trial(2, trained_score=1.0, macs=1, params=1, bogus=3)


def test_a_bred_childs_origin_and_inheritance_round_trip(tmp_path: Path) -> None:
    """A bred child's origin, its parents' trial ids and what its trial inherited are stored and read back."""
    origin = {"parents": 1, "backbone": 0, "stages": [{"depth": 0, "out": 0, "stride": 0, "layers": []}]}
    inherited = {"counts": {"copied": 5, "sliced": 1, "padded": 0, "fresh": 2}, "fallback": None, "epochs": 1,
                 "epochs_saved": 2}  # fmt: skip
    with new_store(tmp_path) as store:
        store.add_trials([spec(0)])
        store.finish_trial(0, trained_score=70.0, macs=1000, params=10, train_images=100)
        store.add_trials([TrialSpec(1, "g1", 1, "mutation", ("genome-0",), False, origin, (0,))])
        store.finish_trial(1, trained_score=60.0, macs=1000, params=10, train_images=50, inherited=inherited)
        new = store.trial(1)
        assert new.origin == origin and new.inherited == inherited and new.parent_ids == (0,)
        assert TrialSpec.from_record(new) == TrialSpec(1, "g1", 1, "mutation", ("genome-0",), False, origin, (0,))
        assert store.trial(0).origin is None and store.trial(0).trained_score == 70.0
        with pytest.raises(UserError, match="inherited: got 3"):
            store.add_trials([spec(2)])
            store.finish_trial(2, trained_score=1.0, macs=1, params=1, inherited=3)
