"""bench/versus/search.py: the network chosen per budget (MACs filter, rung first, search-val only), the summary's
statistics and goal verdicts on hand-made rows, and results.json merged without losing other arms' rows."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from scripts import load_script


def _bench() -> ModuleType:
    """bench/versus/search.py, loaded as a module."""
    return load_script("bench/versus/search.py", "versus_search")


@dataclass
class Trial:
    """What `choose` reads of a `TrialRecord`, plus a test score that must never decide."""

    trial_id: int
    final_score: float | None
    final_macs: int | None
    rung: int = 0
    role: str = "sample"
    parent_ids: tuple[int, ...] = ()
    status: str = "done"
    generation: int = 0
    test_top1: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def fitness(self) -> float | None:  # what rank_key reads: search-val under the default `fidelity.score: val`
        return self.final_score


def test_choice_per_budget_filters_macs_ranks_rung_first_and_reads_search_val_only() -> None:
    bench = _bench()
    trials = [
        Trial(1, 80.0, 1_400_000, test_top1=95.0),  # small, best search-val at rung 0, continued below
        Trial(2, 70.0, 1_450_000, test_top1=99.0),  # best test score: must not decide
        Trial(3, 75.0, 2_000_000),
        Trial(4, 90.0, 4_000_000),  # best score overall, but only at rung 0
        Trial(5, 78.0, 1_400_000, rung=1, role="promote", parent_ids=(1,)),  # trial 1 continued: it stands for it
        Trial(6, 76.0, 2_000_000, rung=1, role="promote", parent_ids=(3,)),
        Trial(7, 99.0, 1_300_000, role="repeat", parent_ids=(1,)),  # a noise probe stands for nothing
        Trial(8, 98.0, 1_000_000, status="failed"),
        Trial(9, 60.0, 900_000, test_top1=100.0),
    ]
    choose = bench.choose
    # <= 1.5M: trials 5 (rung 1, 78) and 2, 9 (rung 0): rung first, even over trial 2's higher test score
    assert choose(trials, 1_500_000).trial_id == 5
    # <= 2.1M: trial 6 (rung 1, 76) loses to trial 5 (rung 1, 78); trial 4 (90 at rung 0) is over budget
    assert choose(trials, 2_100_000).trial_id == 5
    # <= 5M: trial 4's 90 at rung 0 still ranks below any rung-1 network
    assert choose(trials, 5_000_000).trial_id == 5
    # <= 1M: only trial 9 (the failed trial 8 and the repeat are not networks)
    assert choose(trials, 1_000_000).trial_id == 9
    assert choose(trials, 800_000) is None
    # without promotions, the best search-val score decides, never the test score
    flat = [Trial(1, 70.0, 1_000_000, test_top1=99.0), Trial(2, 71.0, 1_200_000, test_top1=50.0),
            Trial(3, 71.0, 1_100_000, test_top1=10.0)]  # fmt: skip
    assert choose(flat, 2_000_000).trial_id == 3  # a tie on score: the fewer MACs
    assert choose(flat, 1_050_000).trial_id == 1


def test_generation_rows_measure_the_top_rung_and_the_climb() -> None:
    bench = _bench()
    trials = [Trial(1, 60.0, 1, generation=0), Trial(2, 65.0, 1, generation=0),
              Trial(3, 66.0, 1, rung=1, role="promote", parent_ids=(2,), generation=0),
              Trial(4, 64.0, 1, role="repeat", parent_ids=(2,), generation=0),
              Trial(5, 70.0, 1, generation=1), Trial(6, 68.0, 1, rung=1, role="promote", parent_ids=(5,), generation=1),
              Trial(7, 80.0, 1, generation=2)]  # fmt: skip
    # generation 2 was cut by the compute budget before its promotions
    for t in trials:
        t.budget_images = 100.0  # type: ignore[attr-defined]
    rows = bench.generation_rows("menas", 0, trials)
    assert [(r["generation"], r["best"], r["best_rung0"]) for r in rows] == [(0, 66.0, 65.0), (1, 68.0, 70.0),
                                                                             (2, None, 80.0)]  # fmt: skip
    assert rows[0]["noise_pairs"] == 1 and rows[0]["noise_sigma"] == pytest.approx(1 / math.sqrt(2))
    assert [r["compute_images_so_far"] for r in rows] == [400, 600, 700] and rows[0]["top_rung"] == 1
    assert bench.climb(rows) == pytest.approx(2.0)  # 68 - 66: the last generation with a top-rung score
    assert bench.climb(rows[:1]) is None


def _ref(name: str, seed: int, top1: float, macs: int) -> dict[str, Any]:
    return {"arm": "reference", "seed": seed, "budget_macs": None, "name": name, "macs": macs, "params": 1,
            "test_top1": top1, "chosen_by": "hand-designed"}  # fmt: skip


def _net(arm: str, seed: int, budget: int, top1: float) -> dict[str, Any]:
    return {"arm": arm, "seed": seed, "budget_macs": budget, "name": f"s{seed}-t1", "macs": budget - 1, "params": 1,
            "test_top1": top1, "chosen_by": "search-val"}  # fmt: skip


def test_summary_statistics_and_goal_verdicts_on_hand_made_rows() -> None:
    bench = _bench()
    small, large = 1_500_000, 5_000_000
    references = [_ref("a", 0, 88.0, 1_400_000), _ref("a", 1, 88.4, 1_400_000),  # std between seeds: 0.2 sqrt 2
                  _ref("b", 0, 89.0, 1_500_000), _ref("b", 1, 89.6, 1_500_000),
                  _ref("c", 0, 92.0, 4_800_000), _ref("c", 1, 91.0, 4_800_000)]  # fmt: skip
    noise = bench.pooled_retrain_noise(references)
    # (0.4^2 + 0.6^2 + 1.0^2) / 2 / 3 df
    assert noise["df"] == 3 and noise["sigma"] == pytest.approx(math.sqrt((0.16 + 0.36 + 1.0) / 2 / 3))
    threshold = 2 * noise["sigma"]  # 1.0066
    menas = [90.5, 90.6, 90.4, 90.5, 89.0]
    random = [89.0, 89.5, 89.1, 88.0, 88.9]  # menas - random: 1.5, 1.1, 1.3, 2.5, 0.1: 4 of 5 above 2 sigma
    networks = [_net("menas", s, small, v) for s, v in enumerate(menas)]
    networks += [_net("random-mt", s, small, v) for s, v in enumerate(random)]
    networks += [_net("menas", s, large, 91.6) for s in range(3)]  # 3 seeds only at the large budget
    networks += [_net("random-mt", s, large, 91.5) for s in range(3)]
    generations = [{"arm": "menas", "seed": s, "generation": g, "best": best}
                   for s, bests in enumerate([(70, 71), (70, 72), (70, 70), (71, 73), (69, 70)])
                   for g, best in enumerate(bests)]  # fmt: skip
    # menas' top-rung best rose in 4 of 5 seeds
    generations += [{"arm": "random-mt", "seed": s, "generation": 0, "best": 70} for s in range(5)]
    summary = bench.summarize(networks, generations, [small, large], references)
    assert summary["threshold"] == pytest.approx(threshold)
    first, second = summary["budgets"]
    # the best reference at <= 1.5M is b (89.3 mean), chosen by its mean; c is over budget
    assert first["reference"]["name"] == "b" and first["reference"]["mean"] == pytest.approx(89.3)
    assert first["reference"]["half"] == pytest.approx(12.706 * 0.3)  # s = 0.3 sqrt 2, n = 2
    m = first["arms"]["menas"]
    assert m["n"] == 5 and m["mean"] == pytest.approx(90.2)
    assert m["half"] == pytest.approx(2.776 * bench.statistics.stdev(menas) / math.sqrt(5))
    # menas - b: Welch
    a, b = bench.statistics.variance(menas) / 5, 0.18 / 2
    df = (a + b) ** 2 / (a * a / 4 + b * b / 1)
    v = m["vs_reference"]
    assert v["diff"] == pytest.approx(0.9) and v["df"] == pytest.approx(df)
    assert v["half"] == pytest.approx(bench.t975(df) * math.sqrt(a + b))
    assert v["met"] == (0.9 - v["half"] > 0)  # the reference's two seeds make the interval wide: not met here
    assert not v["met"]
    paired = first["paired"]
    diffs = [x - y for x, y in zip(menas, random, strict=True)]
    assert paired["diffs"] == pytest.approx(dict(enumerate(diffs)))
    assert paired["mean"] == pytest.approx(statistics_mean(diffs))
    assert paired["half"] == pytest.approx(2.776 * bench.statistics.stdev(diffs) / math.sqrt(5))
    assert (paired["exceed"], paired["need"], paired["met"]) == (4, 4, True)
    # at the large budget: 3 seeds, no seed above 2 sigma; the reference c (91.5) is at <= 5M
    assert second["reference"]["name"] == "c" and second["paired"]["n"] == 3 and not second["paired"]["met"]
    assert second["arms"]["menas"]["half"] == pytest.approx(0.0) and not second["arms"]["menas"]["vs_reference"]["met"]
    assert summary["climb"]["menas"]["rose"] == 4 and summary["climb"]["menas"]["met"]
    unmeasured = dict.fromkeys(f"s{s}" for s in range(5))
    assert summary["climb"]["random-mt"] == {"per_seed": unmeasured, "n": 0, "rose": 0, "need": 4, "met": False}
    text = bench.summary_text(summary)
    assert "| <= 1.50M | best reference: b | 1.50M | 89.00 (s0) / 89.60 (s1) | 89.30 ± 3.81 (n 2) |" in text
    assert f"> {threshold:.2f} in 4 of 5 seeds (need 4 of >= 5): **met**" in text
    assert "   - menas: 4 of 5 seeds (need 4 of >= 5): **met**" in text
    assert "**not met**" in text


def statistics_mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_goal_verdicts_need_five_seeds_and_a_clear_margin() -> None:
    bench = _bench()
    assert bench.enough(4, 5) == (4, True)
    assert bench.enough(3, 5) == (4, False)
    assert bench.enough(4, 4) == (4, False)  # fewer than 5 seeds never meet "4 of 5"
    assert bench.enough(8, 10) == (8, True) and bench.enough(5, 6) == (5, True)
    # searched beats the reference by >= 0.5 with an interval above 0
    references = [_ref("a", 0, 88.0, 1), _ref("a", 1, 88.1, 1), _ref("a", 2, 88.05, 1)]
    networks = [_net("menas", s, 10, 89.0 + 0.05 * s) for s in range(5)]
    summary = bench.summarize(networks, [], [10], references)
    v = summary["budgets"][0]["arms"]["menas"]["vs_reference"]
    assert v["diff"] == pytest.approx(1.05) and v["met"]
    assert summary["budgets"][0]["arms"]["random-mt"] is None and summary["budgets"][0]["paired"] is None
    assert bench.pooled_retrain_noise([_ref("a", 0, 88.0, 1)]) is None


def test_results_merge_keeps_other_arms_and_replaces_its_own() -> None:
    bench = _bench()
    reference = _ref("a", 0, 88.0, 1)
    previous = {"networks": [reference, _net("menas", 0, 10, 1.0), {"arm": "other", "name": "x"}],
                "generations": [{"arm": "menas", "seed": 0, "generation": 0, "best": 1.0},
                                {"arm": "other", "seed": 0, "generation": 0, "best": 2.0}],
                "plateau_check": {"x": 1}, "meta": {"date": "references", "reference_epochs": 10}}  # fmt: skip
    mine = [_net("menas", 0, 10, 90.0), _net("random-mt", 0, 10, 89.0)]
    gens = [{"arm": "random-mt", "seed": 0, "generation": 0, "best": 70.0}]
    merged = bench.merge_results(previous, mine, gens, {"date": "now"})
    assert merged["networks"] == [reference, {"arm": "other", "name": "x"}, *mine]
    assert merged["generations"] == [previous["generations"][1], *gens]
    assert merged["plateau_check"] == {"x": 1}
    assert merged["meta"] == {"date": "references", "reference_epochs": 10, "search": {"date": "now"}}
    assert bench.merge_results(None, mine, [], {})["networks"] == mine
    # references.py's own re-collect keeps these rows in turn
    refs = sys.modules["references"]
    kept = refs.build_results([], 10, {"date": "later"}, merged)
    assert [n for n in kept["networks"] if n["arm"] != "reference"] == [{"arm": "other", "name": "x"}, *mine]
    assert kept["generations"] == merged["generations"] and kept["meta"]["search"] == {"date": "now"}


def test_searched_job_is_one_per_genome_and_uses_the_references_folders() -> None:
    from menas.space.genome import REFERENCE_GENOMES

    bench = _bench()
    trial = Trial(37, 80.0, 2_000_000)
    trial.final_genome = REFERENCE_GENOMES["mobilenetv3_small_100"]  # type: ignore[attr-defined]
    job = bench.searched_job("menas", 3, trial, 10)
    assert job.folder == "menas-s3-t37-s3-e10" and job.built_by == "menas-genome" and job.seed == 3
    assert job.budget_macs is None  # the same job at every budget it is chosen at


def test_budgets_and_recipe_come_from_the_references(tmp_path: Path) -> None:
    import json

    bench = _bench()
    budgets = {"mobilenetv3_small_075": 1_500_001, "mobilenetv3_small_100": 2_000_002, "mobilenetv3_large_075": 5}
    rows = [_ref(name, 0, 88.0, macs) for name, macs in budgets.items()]
    path = tmp_path / "results.json"
    meta = {"reference_epochs": 7, "recipe": "short", "data": "fashion-mnist", "overrides": []}
    path.write_text(json.dumps({"networks": rows, "generations": [], "meta": meta}))
    args = bench.parse_args(["--out", str(tmp_path / "out"), "--references", str(path)])
    assert args.budgets == [1_500_001, 2_000_002, 5] and args.epochs == 7 and args.set == []
    assert args.seeds == [0, 1, 2, 3, 4]
    with pytest.raises(SystemExit):  # the searched networks get the references' recipe, or nothing
        bench.parse_args(["--out", str(tmp_path / "out"), "--references", str(path), "--epochs", "5"])
    args = bench.parse_args(["--out", str(tmp_path / "out"), "--budgets", "1.5M", "2M"])
    assert args.budgets == [1_500_000, 2_000_000] and args.epochs == bench.refs.DEFAULT_EPOCHS
    assert bench.parse_args(["--out", str(tmp_path / "out")]).budgets == list(bench.DEFAULT_BUDGETS)


def test_searches_only_runs_every_search_seed_major_and_retrains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench()
    searched, retrained = [], []
    monkeypatch.setattr(bench.refs, "preload", lambda: None)
    monkeypatch.setattr(
        bench, "run_search", lambda arm, seed, args, budget: searched.append((seed, budget, arm)) or tmp_path
    )
    monkeypatch.setattr(bench, "retrain_choices", lambda *a: retrained.append(a))
    monkeypatch.setattr(bench, "collect", lambda args, command: None)
    argv = ["--out", str(tmp_path), "--budgets", "1M", "2M", "--seeds", "0", "1", "--searches-only"]
    assert bench.main(argv) == 0
    assert searched == [(s, b, a) for s in (0, 1) for b in (1_000_000, 2_000_000) for a in bench.ARMS]
    assert retrained == []
    bench.main(argv[:-1])  # without it, each search's choices are retrained
    assert len(retrained) == len(searched) // 2


def test_retrains_only_retrains_the_finished_searches_and_runs_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--retrains-only beside a process that searches: a finished search's choices are retrained; a search that is
    running or not started yet is neither started, resumed nor retrained."""
    bench = _bench()

    def no_search(*args: Any) -> None:
        raise AssertionError("--retrains-only ran a search")

    statuses = {"menas-b1000000-s0": "finished", "random-mt-b1000000-s0": "running", "menas-b2000000-s0": "failed"}
    for name in statuses:
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "menas.sqlite").write_bytes(b"")  # read_run below stands for the store
    retrained = []
    monkeypatch.setattr(bench.refs, "preload", lambda: None)
    monkeypatch.setattr(bench, "run_search", no_search)
    monkeypatch.setattr(bench, "read_run", lambda folder: (statuses[folder.name], [], {}))
    monkeypatch.setattr(bench, "retrain_choices", lambda arm, seed, folder, args, budgets: retrained.append(folder))
    monkeypatch.setattr(bench, "collect", lambda args, command: None)
    argv = ["--out", str(tmp_path), "--budgets", "1M", "2M", "--seeds", "0"]
    assert bench.main([*argv, "--retrains-only"]) == 0
    assert retrained == [tmp_path / "runs" / "menas-b1000000-s0"]
    with pytest.raises(SystemExit):  # searching nothing and retraining nothing at once is refused
        bench.parse_args([*argv, "--retrains-only", "--searches-only"])


def test_a_choice_another_process_is_retraining_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """retrain_choices goes on past a job whose folder another process holds (references.run_job's FolderLocked)."""
    from menas.files import FolderLocked

    bench = _bench()
    trials = [Trial(1, 80.0, 900_000), Trial(2, 85.0, 1_900_000)]
    monkeypatch.setattr(bench, "read_run", lambda folder: ("finished", trials, {}))
    monkeypatch.setattr(bench, "searched_job", lambda arm, seed, trial, epochs, budget: trial.trial_id)
    trained = []

    def run_job(job: int, args: Any) -> None:
        if job == 1:
            raise FolderLocked("in use by pid 1")
        trained.append(job)

    monkeypatch.setattr(bench.refs, "run_job", run_job)
    args = bench.parse_args(["--out", str(tmp_path), "--budgets", "1M", "2M"])
    bench.retrain_choices("menas", 0, tmp_path / "runs" / "menas-s0", args)
    assert trained == [2]


def test_a_search_under_one_budget_optimises_the_score_and_a_wide_one_the_front(tmp_path: Path) -> None:
    """Per budget: base.yaml's `accuracy` objective inside [WINDOW x budget, budget]; --wide: base.yaml's window
    with the Pareto objective (one front for every budget)."""
    from menas.config import SearchConfig
    from menas.config_io import apply_override, load_yaml
    from menas.space.cost import parse_count

    bench = _bench()
    args = bench.parse_args(["--out", str(tmp_path), "--budgets", "2M"])

    def config(budget: int | None) -> Any:
        cfg = load_yaml(SearchConfig, bench.BASE)
        for assignment in bench.search_overrides("menas", 3, args, budget):
            cfg = apply_override(cfg, assignment)
        return cfg

    one, wide = config(2_000_000), config(None)
    window = [parse_count(str(one.budget.macs_min), "min"), parse_count(str(one.budget.macs_max), "max")]
    assert one.strategy.objective == "accuracy" and window == [1_000_000, 2_000_000]
    assert wide.strategy.objective == "pareto" and parse_count(str(wide.budget.macs_max), "max") == 5_000_000
    assert one.seed == wide.seed == 3 and one.strategy.name == wide.strategy.name == "menas"


def test_the_summary_reads_selection_off_the_searches_children() -> None:
    """search_summary.md's selection line per arm with children (bench_heritability.py): parents S above their pool,
    children R above it, the slope; an arm without children (random search) has none."""
    bench = _bench()

    def pairs(shift: float) -> list[dict[str, Any]]:
        return [{"child": 50 + shift + 0.5 * d, "parents": 55 + d, "pool": 50.0, "role": "mutation", "distance": 3,
                 "strides_moved": False} for d in (-2.0, 0.0, 1.0, 3.0)]  # fmt: skip

    selection = bench.selection({"menas": {"a": pairs(0.0), "b": pairs(1.0)}, "random-mt": {"c": []}}, boot=50)
    assert list(selection) == ["menas"]
    assert selection["menas"]["children"]["slope"] == pytest.approx(0.5)
    assert selection["menas"]["selection"]["differential"] == pytest.approx(5.5)  # 55 + mean(d) 0.5 - 50
    summary = bench.summarize([], [], [1_000_000], [])
    summary["selection"] = selection
    text = bench.summary_text(summary)
    assert "- menas, selection (bench_heritability.py, 2 searches, 8 children): parents +5.50" in text
    assert "random-mt, selection" not in text
