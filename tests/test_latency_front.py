"""The final front measured for real (`menas.latency.front`) and latency as a Pareto objective: a tiny search with
`pareto: [accuracy, latency]` on a synthetic lookup table (fake per-block costs; the table asks for 1 warm-up and
3 timed runs, so measuring is quick) records every trial's predicted latency and, at its end, each front member's
latency measured whole on this machine; status, export, `menas.load` and the report show it; a resumed finished
run and `menas latency RUN --front` measure only what is missing; without a table the objective is refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

import menas
from menas.cli.main import main
from menas.config import BudgetConfig, SearchConfig, StrategyConfig, dump_yaml, to_dict
from menas.errors import UserError
from menas.files import FolderLock
from menas.latency.front import (
    measure_front,
    measure_genome_in_rounds,
    measure_run_front,
    measurement_record,
    table_settings,
)
from menas.latency.measure import NETWORK_MIN_TIME_S, Settings
from menas.latency.table import LatencyTable, build_table
from menas.machine import cpu_cores
from menas.report.build import write_report
from menas.search import pareto
from menas.search.engine import Search, load_run_config
from menas.search.store import Store
from menas.space.genome import MOBILENETV3_SMALL, Genome
from menas.space.spaces import PRESETS
from test_latency import HOST, fake_cost, fake_measurement
from test_search import tiny_config

#: Few timed runs: the front's networks are measured for real at the table's settings.
QUICK = Settings(warmup=1, runs=3)
SHAPE = (16, 1, 10)  # the tiny search's input: 16 px, 1 channel, 10 classes


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory: pytest.TempPathFactory) -> LatencyTable:
    """mobilenet3-mt at the tiny search's input shape, fake per-block costs, measured "with" `QUICK`."""
    out = tmp_path_factory.mktemp("table") / "mt16-quick.json"
    build = build_table(PRESETS["mobilenet3-mt"], *SHAPE, QUICK, out, measure=fake_cost, host=HOST, save_every=10**9)
    return build.table


def _config(table: Path | None) -> SearchConfig:
    """The tiny search under `strategy.objective: pareto` over accuracy and predicted latency (no bound); seed 1
    gives a front of three networks on this project's CPU."""
    cfg = tiny_config(seed=1)
    strategy = dataclasses.replace(cfg.strategy, objective="pareto", pareto=["accuracy", "latency"])
    budget = dataclasses.replace(cfg.budget, latency_table=None if table is None else str(table))
    return dataclasses.replace(cfg, strategy=strategy, budget=budget)


@pytest.fixture(scope="module")
def front_run(quick_table: LatencyTable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("front") / "run"
    Search(_config(quick_table.path), run).run()
    return run


def _copy(run: Path, tmp_path: Path, clear: bool = False) -> Path:
    """A copy of the run to write to; `clear` forgets every measured latency (as a run of schema 7 would have)."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    if clear:
        with sqlite3.connect(copy / "menas.sqlite") as conn:
            conn.execute("UPDATE trials SET measured_latency_ms = NULL, latency_measurement = NULL")
    return copy


def test_latency_as_an_objective_needs_a_table() -> None:
    with pytest.raises(UserError, match=r"budget.latency_table: got null with latency in strategy.pareto"):
        Search(_config(None), "unused")
    assert StrategyConfig(pareto=["accuracy", "macs", "latency"]).pareto == ["accuracy", "macs", "latency"]


def test_the_search_predicts_latency_and_measures_its_front(front_run: Path, quick_table: LatencyTable) -> None:
    """Every trial has a predicted latency; the front is on (top-1, predicted latency), and each member, and only
    those, has its latency measured at the table's settings, with the host and the table recorded."""
    with Store.open(front_run, readonly=True) as store:
        trials, front, final = store.trials("done"), store.front(), store.final_networks()
        measured_events = store.events("latency_measured")
    assert len(trials) == 6 and all(t.final_latency_ms is not None for t in trials)
    assert [t.trial_id for t in final] == [t.trial_id for t in front]
    assert front == pareto.trial_front(trials, ("accuracy", "latency"))  # no rungs: every done trial a network
    assert {t.trial_id for t in trials if t.measured_latency_ms is not None} == {t.trial_id for t in front}
    for t in front:
        m = t.latency_measurement
        assert t.measured_latency_ms == m["median_ms"] > 0 and m["runs"] >= QUICK.runs
        # the table's settings, a whole network timed for at least NETWORK_MIN_TIME_S (the blocks were quicker)
        assert m["settings"] == {**QUICK.to_dict(), "min_time_s": NETWORK_MIN_TIME_S}
        assert m["input_shape"] == [1, 1, 16, 16]
        assert m["same_host"] is False and m["table"] == str(quick_table.path)  # the table's host is a fake one
    assert [e.payload["trials"] for e in measured_events] == [{str(t.trial_id): t.measured_latency_ms for t in front}]


def test_status_export_and_load_show_the_measured_latency(
    front_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(front_run, readonly=True) as store:
        front, best = store.front(), store.best()
    assert main(["status", str(front_run)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "measured on this machine at the table's settings" in out
    for t in front:
        measured = f"{t.measured_latency_ms:.3g} ms measured (predicted {t.final_latency_ms:.3g} ms)"
        assert f"trial {t.trial_id}: {measured}" in out
    assert "measured ms" in out and "not measured" not in out
    assert (
        main(["export", str(front_run), "--front", "1", "--out", str(tmp_path / "x"), "--format", "safetensors"]) == 0
    )
    assert f"measured {front[0].measured_latency_ms:.3g} ms" in capsys.readouterr().out
    latency = json.loads((tmp_path / "x" / "genome.json").read_text())["latency"]
    assert latency["measured_ms"] == front[0].measured_latency_ms
    assert latency["predicted_ms"] == front[0].final_latency_ms and latency["measurement"]["runs"] >= 3
    assert menas.load(tmp_path / "x").latency == latency
    loaded = menas.load(front_run).latency  # the run's best: measured when it is on the front, else a note says so
    assert loaded["predicted_ms"] == best.final_latency_ms and loaded["measured_ms"] == best.measured_latency_ms
    assert (loaded["measured_ms"] is None) == ("note" in loaded)


def test_a_run_whose_front_is_not_measured_says_so(
    front_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(front_run, tmp_path, clear=True)
    assert main(["status", str(run)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "not measured" in out and f"`menas latency {run} --front` measures them" in out
    assert main(["export", str(run), "--front", "1", "--out", str(tmp_path / "x"), "--format", "safetensors"]) == 0
    assert "predicted from the latency table only, not measured" in capsys.readouterr().out
    assert json.loads((tmp_path / "x" / "genome.json").read_text())["latency"]["measured_ms"] is None
    report = Path(write_report(run, tmp_path / "report")[1].parent)
    assert "Not measured: trial(s)" in (report / "report.md").read_text()


def test_resume_and_the_command_measure_only_what_is_missing(
    front_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resumed finished search measures the one member whose measurement is gone, not the others; `menas
    latency RUN --front` then finds them all measured; it is refused while the run's lock is held, and for a run
    without a latency table."""
    run = _copy(front_run, tmp_path)
    with Store.open(run, readonly=True) as store:
        before = {t.trial_id: t.latency_measurement["measured_at"] for t in store.front()}
    gone = min(before)
    with sqlite3.connect(run / "menas.sqlite") as conn:
        conn.execute("UPDATE trials SET measured_latency_ms = NULL, latency_measurement = NULL WHERE trial_id = ?",
                     (gone,))  # fmt: skip
    Search(load_run_config(run), run, resume=True).run()
    with Store.open(run, readonly=True) as store:
        after = {t.trial_id: t.latency_measurement["measured_at"] for t in store.front()}
        events = store.events("latency_measured")
    assert [set(e.payload["trials"]) for e in events] == [{str(t) for t in before}, {str(gone)}]
    assert after[gone] > before[gone] and all(after[t] == before[t] for t in before if t != gone)
    assert main(["latency", str(run), "--front"]) == 0
    assert f"0 network(s) measured now, {len(before)} measured before" in capsys.readouterr().out
    with FolderLock(run, "a test holding the run"):
        assert main(["latency", str(run), "--front"]) == 2
        assert "is in use by" in capsys.readouterr().err


def test_the_command_measures_a_cleared_front(front_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _copy(front_run, tmp_path, clear=True)
    assert main(["latency", str(run), "--front"]) == 0
    out = capsys.readouterr().out
    with Store.open(run, readonly=True) as store:
        front = store.front()
    assert all(t.measured_latency_ms is not None for t in front)
    assert f"{len(front)} network(s) measured now, 0 measured before" in out
    assert out.count("ms median measured") == len(front)


def test_a_run_without_a_table_is_refused(reference_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["latency", str(reference_run), "--front"]) == 2
    assert "has no budget.latency_table" in capsys.readouterr().err


def test_settings_this_machine_cannot_use_are_named(quick_table: LatencyTable, front_run: Path) -> None:
    """A table measured with more threads than this machine lets menas use: one line naming the table (the search
    logs it as `latency_not_measured` and ends normally)."""
    many = dataclasses.replace(quick_table, settings={**QUICK.to_dict(), "threads": cpu_cores() + 1})
    with pytest.raises(UserError, match=r"latency table .*: its settings cannot be used on this machine \(--threads"):
        table_settings(many)
    with Store.open(front_run, readonly=True) as store:  # everything measured already: nothing to refuse
        assert measure_front(store, many).measured == {}


def test_only_a_done_trials_latency_is_recorded(tmp_path: Path) -> None:
    from menas.search.strategies import TrialSpec

    with Store.create(tmp_path / "run", {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(0, "g0", 0, "sample"), TrialSpec(1, "g1", 0, "sample")])
        store.finish_trial(0, trained_score=50.0, macs=10, params=1, latency_ms=1.0)
        with pytest.raises(ValueError, match="record_latency: trial 1 is queued, allowed: done"):
            store.record_latency(1, 1.0, {})
        with pytest.raises(ValueError, match=r"measured_latency_ms: got 0, allowed: numbers > 0 \(ms\)"):
            store.record_latency(0, 0, {})
        store.record_latency(0, 1.25, {"runs": 3})
        assert store.trial(0).latency_info() == {"predicted_ms": 1.0, "measured_ms": 1.25, "measurement": {"runs": 3}}


def test_a_measurement_record_says_whether_it_ran_on_the_tables_host(quick_table: LatencyTable) -> None:
    from menas.latency.measure import Measurement

    result = Measurement(1.0, 1.5, 0.25, 1.1, 0.9, 3, 0.003, (1, 1, 16, 16), QUICK, dict(HOST))
    assert measurement_record(result, quick_table)["same_host"] is True
    other = dataclasses.replace(result, host={**HOST, "cpu": "another cpu"})
    assert measurement_record(other, quick_table)["same_host"] is False


def test_the_report_plots_accuracy_against_latency(front_run: Path, tmp_path: Path) -> None:
    paths = write_report(front_run, tmp_path / "report")
    names = [p.name for p in paths]
    assert "accuracy_vs_latency.png" in names and (tmp_path / "report" / "accuracy_vs_latency.png").stat().st_size
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Latency (the final networks" in markdown and "predicted ms | measured ms" in markdown
    assert "predicted latency" in markdown.splitlines()[2]  # the best network's line
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'id="fig-latency"' in page and "<th>measured (ms)</th>" in page
    figure = json.loads(page.split('id="figures">')[1].split("</script>")[0])["latency"]
    names = [trace["name"] for trace in figure["data"]]
    assert "Pareto front" in names and "measured on the search's machine" in names
    front = next(trace for trace in figure["data"] if trace["name"] == "Pareto front")
    assert front["line"]["shape"] == "hv"  # latency is the only cost: a staircase


def _fake_rounds(medians: list[float], seen: list[list[str]]):
    """A `subprocess.run` standing in for `menas latency` rounds: each writes a measurement whose median is the
    next of `medians`, and its command line is kept in `seen`."""
    queue = iter(medians)

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        record = {"source": command[4], "input_size": 16, **fake_measurement(next(queue)).to_dict()}
        Path(command[command.index("--json") + 1]).write_text(json.dumps(record))
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_the_front_measured_in_rounds_records_the_median_of_fresh_processes(
    front_run: Path,
    quick_table: LatencyTable,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`menas latency RUN --front --rounds 3`: each member measured by 3 `menas latency GENOME` processes at the
    table's input shape and settings; the median of their medians is recorded with each process's median, and a
    spread over 10% is warned about."""
    run = _copy(front_run, tmp_path, clear=True)
    with Store.open(run, readonly=True) as store:
        front = store.final_networks()
    medians = [1.0, 1.3, 1.1] + [2.0, 2.02, 2.01] * (len(front) - 1)
    seen: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", _fake_rounds(medians, seen))
    assert main(["latency", str(run), "--front", "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    assert len(seen) == 3 * len(front)
    first = seen[0]
    assert first[1:4] == ["-m", "menas.cli", "latency"] and first[4] == front[0].final_genome
    flags = dict(zip(first[5:-2:2], first[6:-2:2], strict=True))
    assert flags["--input-size"] == "16" and flags["--in-chans"] == "1" and flags["--num-classes"] == "10"
    assert (flags["--runs"], flags["--warmup"], flags["--threads"]) == ("3", "1", "1")
    assert float(flags["--min-time"]) == NETWORK_MIN_TIME_S
    with Store.open(run, readonly=True) as store:
        measured = {t.trial_id: t for t in store.final_networks()}
    one = measured[front[0].trial_id]
    assert one.measured_latency_ms == 1.1 and one.latency_measurement["rounds"] == 3
    assert one.latency_measurement["round_medians_ms"] == [1.0, 1.3, 1.1]
    assert one.latency_measurement["round_spread"] == pytest.approx(0.3 / 1.1)
    assert f"trial {front[0].trial_id}: 1.100 ms median of 3 processes (spread 27.3%) measured" in out
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]  # once, by the measurement
    assert "warning" not in out and len(warned) == 1 and warned[0].startswith(f"trial {front[0].trial_id}'s rounds "
                                                                               "spread over 27%")  # fmt: skip
    assert all(measured[t.trial_id].measured_latency_ms == 2.01 for t in front[1:])
    assert main(["status", str(run)]) == 0
    assert "median of 3 processes (spread 27.3%)" in " ".join(capsys.readouterr().out.split())
    report = Path(write_report(run, tmp_path / "report")[1].parent)
    assert "| processes (spread) |" in (report / "report.md").read_text()
    assert "| 3 (27.3%) |" in (report / "report.md").read_text()


def test_the_front_is_measured_in_the_runs_configured_rounds(
    front_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --rounds, `menas latency RUN --front` (and the search's end) measures in `budget.latency_rounds`
    processes; a count out of 1..20 is refused in one line."""
    run = _copy(front_run, tmp_path, clear=True)
    cfg = load_run_config(run)
    cfg = dataclasses.replace(cfg, budget=dataclasses.replace(cfg.budget, latency_rounds=2))
    (run / "config.yaml").write_text(dump_yaml(cfg))
    with Store.open(run) as store:
        store.set_config(to_dict(cfg))
        members = len(store.final_networks())
    seen: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", _fake_rounds([1.0] * (4 * members), seen))
    done = measure_run_front(run)
    assert len(done.measured) == members and len(seen) == 2 * members
    with sqlite3.connect(run / "menas.sqlite") as conn:  # the search's own end measures in the same rounds
        conn.execute("UPDATE trials SET measured_latency_ms = NULL, latency_measurement = NULL")
    Search(load_run_config(run), run, resume=True).run()
    assert len(seen) == 4 * members
    with Store.open(run, readonly=True) as store:
        assert {t.latency_measurement["rounds"] for t in store.final_networks()} == {2}
    with pytest.raises(UserError, match=r"budget.latency_rounds: got 0, allowed: integers 1..20"):
        BudgetConfig(latency_rounds=0)
    assert main(["latency", str(run), "--front", "--rounds", "21"]) == 2


def test_a_genome_measured_in_real_rounds_keeps_the_tables_input_shape(quick_table: LatencyTable) -> None:
    """Two real `menas latency` processes for one genome: the table's input shape, two medians, their median."""
    genome = Genome.from_str(MOBILENETV3_SMALL)
    result = measure_genome_in_rounds(2)(genome, quick_table, table_settings(quick_table))
    assert result.rounds == 2 and len(result.round_medians_ms) == 2 and result.input_shape == (1, 1, 16, 16)
    assert result.median_ms == pytest.approx(sum(result.round_medians_ms) / 2)
    assert result.settings == table_settings(quick_table) and result.runs >= 2 * QUICK.runs
