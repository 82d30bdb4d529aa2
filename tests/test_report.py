"""`menas report`: Pareto front, figures and tables from a store (no training: trials are recorded by hand)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.cli.main import main
from menas.folders import LOTTERY_FILE
from menas.report.build import (
    FIGURES,
    LOTTERY_FIGURE,
    PAGE,
    TABLES,
    best_point,
    lottery_records,
    pareto_front,
    points,
    write_report,
)
from menas.search import ranking
from menas.search.store import Store
from menas.search.strategies import RandomSearch, TrialOutcome, TrialSpec

from genomes import MT, seeded_genomes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_importing_report_imports_neither_torch_nor_matplotlib() -> None:
    code = "import sys, menas.report.build; assert not {'torch', 'matplotlib'} & set(sys.modules), 'imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_pareto_front_known_example() -> None:
    costs = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    scores = [60.0, 70.0, 65.0, 69.0, 80.0, 50.0]
    # (3.0, 69) is beaten by (2.0, 70); (2.0, 65) by (2.0, 70); the rest trade cost for accuracy
    assert pareto_front(costs, scores) == [5, 0, 1, 4]
    assert pareto_front([1.0, 1.0], [5.0, 5.0]) == [0]  # duplicates: the first is kept
    assert pareto_front([], []) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=40))
def test_pareto_front_properties(pairs: list[tuple[int, int]]) -> None:
    costs, scores = [float(c) for c, _ in pairs], [float(s) for _, s in pairs]
    front = pareto_front(costs, scores)

    def beats(i: int, j: int) -> bool:
        return costs[i] <= costs[j] and scores[i] >= scores[j] and (costs[i], scores[i]) != (costs[j], scores[j])

    assert all(not beats(j, i) for i in front for j in range(len(pairs)))  # nothing beats a front point
    for j in set(range(len(pairs))) - set(front):  # every other point is beaten by, or equal to, a front point
        assert any(beats(i, j) or (costs[i], scores[i]) == (costs[j], scores[j]) for i in front)
    assert [costs[i] for i in front] == sorted(costs[i] for i in front)
    assert [scores[i] for i in front] == sorted(scores[i] for i in front)


def _run_with_trials(tmp_path: Path) -> Path:
    """A run folder with 2 generations: done trials (one with a ticket), a failed one and a queued one."""
    run = tmp_path / "run"
    config = {"space": "mobilenet3-mt", "strategy": {"name": "menas"}}
    with Store.create(run, config, seed=0) as store:
        store.add_trials([TrialSpec(i, f"genome-{i}", i // 3, "sample", (), True) for i in range(6)])
        store.finish_trial(0, trained_score=70.0, macs=5_000_000, params=2_000_000, epoch_s=[4.0, 4.2])
        store.finish_trial(
            1,
            trained_score=72.0,
            macs=7_000_000,
            params=2_500_000,
            epoch_s=[5.0, 5.2],
            ticket="ticket-1",
            ticket_finetuned_score=71.5,
            ticket_macs=4_000_000,
            ticket_params=1_500_000,
            ticket_recalibrated_score=69.0,
        )
        store.fail_trial(2, "TrialFailed: non-finite loss")
        store.finish_trial(3, trained_score=68.0, macs=3_000_000, params=1_000_000, epoch_s=[3.0])
        store.finish_trial(4, trained_score=74.0, macs=8_000_000, params=3_000_000, epoch_s=[6.0])
    return run


def test_write_report_figures_and_tables(tmp_path: Path) -> None:
    run = _run_with_trials(tmp_path)
    paths = write_report(run)
    assert [p.name for p in paths] == [*FIGURES, *TABLES, PAGE] and all(p.parent == run / "report" for p in paths)
    for figure in FIGURES:
        assert (run / "report" / figure).read_bytes()[:8] == PNG_MAGIC
    rows = list(csv.DictReader((run / "report" / "trials.csv").open()))
    assert [r["trial_id"] for r in rows] == [str(i) for i in range(6)]  # every trial, failed and queued too
    assert rows[1]["final_score"] == "71.5" and rows[1]["final_macs"] == "4000000"
    assert rows[2]["status"] == "failed" and "non-finite" in rows[2]["error"]
    text = (run / "report" / "report.md").read_text()
    assert "Best: trial 4, 74.00% search-val top-1, 8M MACs" in text
    assert "strategy menas, space mobilenet3-mt" in text
    # the ticket (4M MACs, 71.5%) is on the front; the unpruned 7M candidate is not a point of its own
    front = text.split("## Pareto front")[1]
    assert "| 1 | 71.50% | 4M |" in front and "| 3 | 68.00% | 3M |" in front and "| 0 |" not in front
    assert not list((run / "report").glob(".*tmp*"))  # written through temporary names


def test_points_skip_unfinished_and_failed(tmp_path: Path) -> None:
    run = _run_with_trials(tmp_path)
    with Store.open(run, readonly=True) as store:
        pts = points(store.trials())
    assert [p.trial_id for p in pts] == [0, 1, 3, 4]
    ticket = pts[1]
    assert ticket.ticket and (ticket.macs, ticket.score) == (4_000_000, 71.5)
    assert (ticket.candidate_macs, ticket.candidate_score) == (7_000_000, 72.0) and ticket.epoch_s == 5.1


def test_report_cli_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_with_trials(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "elsewhere")]) == 0
    assert f"wrote {len(FIGURES) + len(TABLES) + 1} files" in capsys.readouterr().out
    assert (tmp_path / "elsewhere" / "pareto.png").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "holds no search" in capsys.readouterr().err
    with Store.create(tmp_path / "empty", {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(0, "genome-0", 0, "sample", (), True)])
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no finished trial yet" in err and "Traceback" not in err


def _run_with_phases(tmp_path: Path) -> Path:
    """Two generations of done trials with per-phase measurements; trials 1 and 3 kept a ticket, and trial 1's
    folder holds its ticket search record (lottery.json)."""
    run = tmp_path / "run"
    with Store.create(run, {"space": "mobilenet3-mt", "strategy": {"name": "menas"}}, seed=0) as store:
        store.add_trials([TrialSpec(i, f"genome-{i}", i // 2, "sample", (), True) for i in range(4)])
        for i, (params, macs, epoch_s) in enumerate([(2e6, 6e6, 4.0), (3e6, 8e6, 6.0), (1e6, 4e6, 2.0),
                                                     (1e6, 2e6, 3.0)]):  # fmt: skip
            ticket = {"ticket": f"ticket-{i}", "ticket_finetuned_score": 70.0 + i, "ticket_macs": int(macs / 2),
                      "ticket_params": int(params / 2), "ticket_recalibrated_score": 60.0} if i % 2 else {}  # fmt: skip
            store.finish_trial(
                i,
                trained_score=65.0 + i,
                macs=int(macs),
                params=int(params),
                epoch_s=[epoch_s + 1, 9.0],
                train_epoch_s=[epoch_s],
                finetune_epoch_s=[1.0],
                train_images=2000,
                calib_images=500,
                eval_images=1000,
                finetune_epochs=1,
                images_per_epoch=1000,
                finetune_s=1.5,
                finetuned_score=None if ticket else 66.0 + i,
                **ticket,
            )
    folder = run / "trials" / "00001"
    folder.mkdir(parents=True)
    proposals = [{"index": k, "genome": f"p{k}", "mean_mid_rate": 0.3, "macs": 3_000_000 + k * 500_000,
                  "params": 1_000_000, "subset_score": 50.0 + k, "full_score": 51.0 + k if k < 2 else None}
                 for k in range(5)]  # fmt: skip
    record = {"parent": {"genome": "genome-1", "score": 64.0, "macs": 8_000_000, "params": 3_000_000},
              "ticket": {"proposal": 1, "genome": "ticket-1", "score_before_ft": 60.0, "score_after_ft": 71.0,
                         "finetune_epochs": 1, "macs": 4_000_000, "params": 1_500_000},
              "proposals": proposals, "seconds": 1.0, "timings": {}, "policy": "always"}  # fmt: skip
    (folder / LOTTERY_FILE).write_text(json.dumps(record))
    return run


def test_generation_figures_and_tables_from_a_synthetic_store(tmp_path: Path) -> None:
    """The Fig. 4a/4b table and figure (means and spreads per generation, share replaced) and the Fig. 4c
    figure (a candidate beside its proposals and ticket) build from a store recorded by hand."""
    run = _run_with_phases(tmp_path)
    with Store.open(run, readonly=True) as store:
        phases = store.generation_phases()
        records = store.trials()
        summaries = store.generation_summary()
    assert [s.epoch_s_mean for s in summaries] == [5.0, 2.5]  # training passes, not the 9 s epochs
    assert [p.generation for p in phases] == [0, 1]
    assert phases[0].params == (2.5e6, 0.5e6) and phases[0].macs == (7e6, 1e6)
    assert phases[0].train_epoch_s == (5.0, 1.0) and phases[1].train_epoch_s == (2.5, 0.5)  # not the 9 s epochs
    assert phases[0].ticket_macs == (4e6, 0.0) and phases[0].replaced_share == 0.5
    assert phases[1].compute_images == 2 * 2500 and phases[1].final_score_best == 73.0  # 2000 + (500 + 1000) / 3
    assert [r.trial_id for r, _ in lottery_records(run, records)] == [1]
    paths = write_report(run)
    assert [p.name for p in paths] == [*FIGURES, *TABLES, LOTTERY_FIGURE, PAGE]
    for name in (*FIGURES, LOTTERY_FIGURE):
        assert (run / "report" / name).read_bytes()[:8] == PNG_MAGIC
    text = (run / "report" / "report.md").read_text()
    assert "| 0 | 2 | 2.5M ± 500K | 7M ± 1M | 5.00 ± 1.00 | 1.5M ± 0 | 4M ± 0 | 50% | 5K |" in text
    rows = list(csv.DictReader((run / "report" / "trials.csv").open()))
    assert (rows[0]["finetuned_score"], rows[0]["final_score"], rows[0]["trained_score"]) == ("66.0", "66.0", "65.0")
    assert rows[0]["train_epoch_s_mean"] == "4.0" and rows[0]["raw_images"] == "3500"


# ------------------------------------------------------------------------------------------ one "best" definition


def test_store_strategy_and_report_agree_on_the_best_with_ties(tmp_path: Path) -> None:
    """One crafted history told to a strategy, recorded in a store and reported: all three pick trial 2.

    Trial 1's ticket ties trial 2 on final score (74) but costs more MACs; trial 3 ties trial 2 on score and MACs
    but comes later; trial 4's candidate scores highest (80) but its kept ticket's final score is only 73."""
    strategy = RandomSearch(MT, None, 0, trials=6, use_tickets=True)
    specs = strategy.ask()
    tickets = [g.to_str() for g in seeded_genomes("mobilenet3-mt", 2, seed=7)]
    measured = {
        0: {"trained_score": 70.0, "macs": 5_000_000, "params": 100},
        1: {"trained_score": 72.0, "macs": 6_000_000, "params": 100, "ticket": tickets[0],
            "ticket_finetuned_score": 74.0, "ticket_macs": 4_000_000, "ticket_params": 90},
        2: {"trained_score": 74.0, "macs": 3_000_000, "params": 100},
        3: {"trained_score": 74.0, "macs": 3_000_000, "params": 100},
        4: {"trained_score": 80.0, "macs": 2_000_000, "params": 100, "ticket": tickets[1],
            "ticket_finetuned_score": 73.0, "ticket_macs": 1_000_000, "ticket_params": 90},
    }  # fmt: skip
    run = tmp_path / "run"
    with Store.create(run, {"space": "mobilenet3-mt", "strategy": {"name": "random"}}) as store:
        store.add_trials(specs)
        for trial_id, values in measured.items():
            store.finish_trial(trial_id, **values)
        store.fail_trial(5, "TrialFailed: crafted")
        records = store.trials()
        assert store.best().trial_id == 2
    outcomes = [TrialOutcome.from_record(r) for r in records]  # what the search tells the strategy
    strategy.tell(outcomes)
    told = ranking.best(o for _, o in strategy.history() if o is not None and o.ok)
    assert told.trial_id == 2 and told.macs == 3_000_000
    assert best_point(records).trial_id == 2
    assert ranking.best(r for r in records if r.status == "done").trial_id == 2
    # the same order everywhere: the strategy's outcomes and the store's records sort alike
    assert [o.trial_id for o in sorted(outcomes[:5], key=ranking.rank_key)] == [2, 3, 1, 4, 0]
    assert [r.trial_id for r in sorted(records[:5], key=ranking.rank_key)] == [2, 3, 1, 4, 0]
    write_report(run)
    assert "Best: trial 2, 74.00% search-val top-1, 3M MACs" in (run / "report" / "report.md").read_text()


def test_status_counts_trials_with_the_strategy_and_imports_no_torch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Store.create(run, {"space": "mobilenet3-mt", "strategy": {"name": "evolution", "cycles": 7}}) as store:
        store.add_trials([TrialSpec(i, f"genome-{i}", 0, "sample", (), False) for i in range(3)])
        for i in range(2):
            store.mark_running(i)
            store.finish_trial(i, trained_score=70.0 + i, macs=5_000_000, params=2_000_000)
    code = ("import sys; from menas.cli.main import main; code = main(['status', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "best so far: trial 1, 71.00%" in result.stdout
    assert "left for 65 of 67 trials" in " ".join(result.stdout.split())  # population 60 + 7 cycles


# ------------------------------------------------------------------------------------------ weight inheritance


def _inherit_cells(cell: str) -> tuple[str, str, str]:
    """(tensors inherited, fallback reason, epochs saved) from a trials.csv `inherited` cell (JSON)."""
    if not cell:
        return ("", "", "")
    got = json.loads(cell)
    counts = got["counts"]
    return (
        str(counts["copied"] + counts["sliced"] + counts["padded"]),
        got["fallback"] or "",
        str(got["epochs_saved"]),
    )


def test_inheritance_table_csv_and_status_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Generation 1 of a hand-recorded inheriting run: two children inherited (1 of 3 epochs each), one fell back
    to scratch; the report totals tensors and the training saved, the CSV has per-trial cells, status one line."""
    from menas.report.build import inheritance

    def got(copied: int, sliced: int, padded: int, fresh: int, fallback: str | None = None) -> dict:
        return {"counts": {"copied": copied, "sliced": sliced, "padded": padded, "fresh": fresh},
                "fallback": fallback, "epochs": 3 if fallback else 1, "epochs_saved": 0 if fallback else 2,
                "calib_images": 0 if fallback else 128, "seconds": 0.1}  # fmt: skip

    run = tmp_path / "run"
    records = [None, None, got(10, 2, 1, 3), got(8, 0, 4, 0), got(0, 0, 0, 0, "parent weights 'x': missing")]
    with Store.create(run, {"space": "mobilenet3-mt", "strategy": {"name": "menas-inherit"}}, seed=0) as store:
        store.add_trials([TrialSpec(i, f"genome-{i}", int(i >= 2), "sample" if i < 2 else "mutation",
                                    () if i < 2 else ("genome-0",), False) for i in range(5)])  # fmt: skip
        for i, inherited in enumerate(records):
            epochs = 3 if inherited is None or inherited["fallback"] else 1
            store.finish_trial(
                i,
                trained_score=60.0 + i,
                macs=1000,
                params=100,
                train_images=epochs * 1000,
                images_per_epoch=1000,
                inherited=inherited,
            )
        rows = inheritance(store.trials())
    summary = [(g.generation, g.done, g.tried, g.inherited, g.fallbacks) for g in rows]
    assert summary == [(0, 2, 0, 0, 0), (1, 3, 3, 2, 1)]
    g = rows[1]
    assert (g.copied, g.sliced, g.padded, g.fresh) == (18, 2, 5, 3)  # the fallback's counts are not totalled
    assert g.epochs_saved == 4 and g.images_saved == 4000 and g.saved_share == 4000 / (5000 + 4000)
    write_report(run)
    text = (run / "report" / "report.md").read_text()
    assert "| 1 | 3 | 2 (67%) | 1 | 18 | 2 | 5 | 3 | 4 | 4K (44%) |" in text
    rows_csv = list(csv.DictReader((run / "report" / "trials.csv").open()))
    cells = [_inherit_cells(r["inherited"]) for r in rows_csv]
    fallback = ("0", "parent weights 'x': missing", "0")
    assert cells == [("", "", ""), ("", "", ""), ("13", "", "2"), ("12", "", "2"), fallback]
    assert main(["status", str(run)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "weight inheritance: 2 of 3 bred children inherited (25 tensors), 1 fell back to scratch; saved 4 " \
           "epochs, 4K training images" in out  # fmt: skip


def test_a_tickets_arrow_starts_inside_the_accuracy_figure() -> None:
    """The arrow from a candidate to its ticket starts inside the axes even when the candidate is far from every
    drawn point (matplotlib scales to scatter points, not to annotations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from menas.report.figures import draw_accuracy_vs_macs
    from menas.report.points import Point

    pts = [Point(0, 0, "a", 60.0, 2_000_000, 10, None, None, False, None),
           Point(1, 0, "t", 58.0, 3_000_000, 10, 90.0, 9_000_000, True, None)]  # fmt: skip
    fig, ax = plt.subplots()
    try:
        draw_accuracy_vs_macs(ax, pts, plt.get_cmap("viridis"))
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    finally:
        plt.close(fig)
    assert x0 <= 9.0 <= x1 and y0 <= 90.0 <= y1
