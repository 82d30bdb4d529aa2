"""Measurements that mean one thing each, the no-ticket ablation's epochs and the search's compute budget."""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from pathlib import Path

import pytest

from menas.cli.main import main
from menas.config import ComputeConfig, StrategyConfig, from_dict
from menas.errors import UserError
from menas.folders import LOTTERY_FILE
from menas.search import engine as search_module
from menas.search.engine import Search
from menas.search.record import FORWARD_IMAGES_PER_TRAINING_IMAGE, TrialRecord
from menas.search.store import Store
from menas.space.cost import parse_count
from test_search import tiny_config


def test_per_phase_fields_are_written_and_read_back(reference_run: Path) -> None:
    """Every done trial of the reference search (1 training + 1 fine-tune epoch, tickets within 50 points)
    records each phase on its own, and the sums agree with the totals."""
    cfg = tiny_config()
    with Store.open(reference_run, readonly=True) as store:
        trials = store.trials("done")
    assert trials
    for t in trials:
        assert len(t.train_epoch_s) == cfg.train.epochs and len(t.finetune_epoch_s) == cfg.finetune_epochs
        assert t.finetune_epochs == cfg.finetune_epochs and t.epochs == cfg.train.epochs + cfg.finetune_epochs
        assert t.images_per_epoch > 0 and t.train_images == t.epochs * t.images_per_epoch
        assert t.calib_images > 0 and t.eval_images > 0
        assert t.raw_images == t.train_images + t.calib_images + t.eval_images
        assert 0 < t.train_epoch_s[0] <= t.epoch_s[0] and t.finetune_s > 0 and t.train_s > 0
        assert t.trained_score is not None  # the candidate after its training epochs
        if t.ticket is not None:
            assert t.finetuned_score is None and t.final_score == t.ticket_finetuned_score
            assert t.ticket_recalibrated_score is not None
        else:
            assert t.final_score == t.finetuned_score is not None
        record = json.loads((reference_run / "trials" / f"{t.trial_id:05d}" / LOTTERY_FILE).read_text())
        assert len(record["proposals"]) == cfg.lottery.proposals
        assert (record["ticket"] is None) == (t.ticket is None)
    with Store.open(reference_run, readonly=True) as store:
        used = store.compute_used()
    forward = FORWARD_IMAGES_PER_TRAINING_IMAGE
    weighted = sum(t.train_images + (t.calib_images + t.eval_images) / forward for t in trials)
    assert used.images == round(weighted) < sum(t.raw_images for t in trials) and used.trials == len(trials)


def test_ablation_fine_tunes_as_menas_does(reference_run: Path, tmp_path: Path) -> None:
    """`menas-no-tickets` gives each unpruned candidate MENAS' E + E_ft epochs at the same fine-tune lr scale,
    so tickets are the only difference; its final score is the fine-tuned one."""
    strategy = StrategyConfig(name="menas-no-tickets", population=2, generations=1, parents=2)
    cfg = tiny_config(strategy=strategy)
    search = Search(cfg, tmp_path / "run")
    job = search.job(search.strategy.ask()[0])
    assert job.lottery is None and job.finetune_epochs == cfg.finetune_epochs
    assert job.finetune_lr_scale == cfg.lottery.finetune_lr_scale
    search.close()
    Search(cfg, tmp_path / "run2").run()
    with Store.open(tmp_path / "run2", readonly=True) as store:
        ablation = store.trials("done")
    with Store.open(reference_run, readonly=True) as store:
        menas = store.trials("done")
    assert len(ablation) == 2
    assert {t.finetune_epochs for t in ablation} == {t.finetune_epochs for t in menas} == {cfg.finetune_epochs}
    assert {t.epochs for t in ablation} == {t.epochs for t in menas}
    for t in ablation:
        assert t.ticket is None and t.calib_images is not None
        assert t.finetuned_score is not None and t.final_score == t.finetuned_score


# -- the compute budget, with trials faked (the loop, not training, is under test) -------------------------

IMAGES_PER_TRIAL = 1000


def _fake_run_trial(job, on_epoch=None) -> TrialRecord:
    """A done trial that used IMAGES_PER_TRIAL training-image equivalents (700 trained + 900 forward-only / 3),
    with a score that depends only on the genome."""
    score = 10.0 + zlib.crc32(job.genome.encode()) % 1000 / 10.0
    return TrialRecord(trial_id=job.trial_id, genome=job.genome, status="done", macs=1000, params=100,
                       trained_score=score, train_images=700, calib_images=300, eval_images=600, train_epoch_s=[0.1],
                       worker="fake:1")  # fmt: skip


STRATEGIES = {
    "menas": StrategyConfig(name="menas", population=4, generations=5, parents=2),
    "menas-no-tickets": StrategyConfig(name="menas-no-tickets", population=4, generations=5, parents=2),
    "random": StrategyConfig(name="random", trials=20, population=4),
    "evolution": StrategyConfig(name="evolution", population=4, cycles=20, sample_size=2),
}


def _done(run_dir: Path) -> int:
    with Store.open(run_dir, readonly=True) as store:
        return store.compute_used().trials


@pytest.mark.parametrize("images", [5500, 7000])
def test_compute_budget_stops_every_strategy_at_the_same_count(
    images: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each strategy starts trials until the finished ones used the budget, then stops: the same number of
    trials for all (each trial uses 1000 images here), the first whose images reach the budget."""
    monkeypatch.setattr(search_module, "run_trial", _fake_run_trial)
    counts = {}
    for name, strategy in STRATEGIES.items():
        cfg = tiny_config(strategy=strategy, compute=ComputeConfig(images=images))
        summary = Search(cfg, tmp_path / name).run()
        counts[name] = _done(tmp_path / name)
        assert summary.budget_used and summary.compute_images == counts[name] * IMAGES_PER_TRIAL
        with Store.open(tmp_path / name, readonly=True) as store:
            assert store.run_info().status == "finished" and store.events("compute_budget_used")
    expected = -(-images // IMAGES_PER_TRIAL)  # ceil: the trial that crosses the budget still counts
    assert set(counts.values()) == {expected}, counts


def test_resume_keeps_the_compute_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that used its budget runs nothing more on resume (the count comes from the store); resumed with a
    larger budget it goes on to the new one."""
    monkeypatch.setattr(search_module, "run_trial", _fake_run_trial)
    run_dir = tmp_path / "run"
    cfg = tiny_config(strategy=STRATEGIES["menas"], compute=ComputeConfig(images="3K"))
    Search(cfg, run_dir).run()
    assert _done(run_dir) == 3
    Search(None, run_dir, resume=True).run()
    assert _done(run_dir) == 3
    more = dataclasses.replace(cfg, compute=ComputeConfig(images="6K"))
    Search(more, run_dir, resume=True, accept_config_change=True).run()
    assert _done(run_dir) == 6


def test_trial_seconds_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`compute.trial_s` stops the search once the finished trials' wall seconds reach it: a 1 ms budget stops
    after the first trial (a pool of one slot: local executor)."""
    monkeypatch.setattr(search_module, "run_trial", _fake_run_trial)
    cfg = tiny_config(strategy=STRATEGIES["random"], compute=ComputeConfig(trial_s=1e-6))
    Search(cfg, tmp_path / "run").run()
    assert _done(tmp_path / "run") == 1


@pytest.mark.parametrize(("compute", "match"), [({"images": "lots"}, "compute.images"),
                                                ({"images": 0}, "compute.images"),
                                                ({"trial_s": -1}, "compute.trial_s")])  # fmt: skip
def test_bad_compute_budget_fails_before_training(compute: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=match):
        Search(from_dict(type(tiny_config()), {"compute": compute}), tmp_path / "run")


def test_status_shows_the_compute_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(search_module, "run_trial", _fake_run_trial)
    run_dir = tmp_path / "run"
    Search(tiny_config(strategy=STRATEGIES["random"], compute=ComputeConfig(images="2500")), run_dir).run()
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "compute used by 3 finished trials: 3K training-image equivalents of 2.5K (120%)" in out
    assert "budget used" in out
    # the time left names the budget that ended the run, not the 17 trials the strategy still had
    assert "left for 0 more trials" in out
    assert "the compute budget (compute.images) stops the run before all 20 trials" in out


def _evidence_module():
    """bench/evidence/run.py, loaded as a module (it is a script, not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "evidence" / "run.py"
    spec = importlib.util.spec_from_file_location("evidence_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evidence_arms_differ_only_in_how_they_search() -> None:
    """bench/evidence: every arm is base.yaml with its strategy and space (and policy), at the same compute."""
    module = _evidence_module()
    for scale in module.SCALES:
        configs = {arm: module.arm_config(arm, 1, scale) for arm in module.ARMS}
        assert len({c.compute.images for c in configs.values()}) == 1 and configs["menas"].compute.images
        base = dataclasses.asdict(configs["menas"])
        for arm, cfg in configs.items():
            other = dataclasses.asdict(cfg)
            differs = {k for k in base if base[k] != other[k]}
            differs |= {f"strategy.{k}" for k in base["strategy"] if base["strategy"][k] != other["strategy"][k]}
            differs |= {f"lottery.{k}" for k in base["lottery"] if base["lottery"][k] != other["lottery"][k]}
            differs |= {f"inherit.{k}" for k in base["inherit"] if base["inherit"][k] != other["inherit"][k]}
            allowed = {
                "strategy",
                "strategy.name",
                "strategy.keep_largest",
                "space",
                "lottery",
                "lottery.policy",
                "inherit",
                "inherit.epochs",
                "inherit.enabled",  # menas-inherit is menas with inheritance on
            }
            assert differs <= allowed, (arm, differs)
            assert cfg.seed == 1
    # --set overrides come last, over every arm (e.g. another machine's data folder and device)
    moved = module.arm_config("random-ws", 2, "default", ("device=cpu", "data.root=/elsewhere", "executor.threads=1"))
    assert (moved.device, moved.data.root, moved.executor.threads, moved.seed) == ("cpu", "/elsewhere", 1, 2)
    assert moved.space == "mobilenet3-ws"


def _table(lines: list[str]) -> list[list[str]]:
    """The body of the markdown table in `lines` (the rows after its `|---|` line), each row as its cells."""
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    header = lines[start - 1].strip("|").split("|")
    rows = [line.strip().strip("|").split("|") for line in lines[start + 1 :] if line.startswith("|")]
    assert all(len(row) == len(header) for row in rows), "a row with more or fewer cells than the header"
    return [[cell.strip() for cell in row] for row in rows]


def _number(cell: str) -> float | None:
    """A table cell's number: '1.5M' (3 significant digits), '25%', '-25%', '0.50x', '3.00'; '-' is None."""
    if cell == "-":
        return None
    if cell.endswith("%"):
        return float(cell[:-1]) / 100
    if cell.endswith("x"):
        return float(cell[:-1])
    return parse_count(cell.lstrip("-"), "cell") * (-1 if cell.startswith("-") else 1)


def _numbers(cell: str) -> list[float | None]:
    return [_number(part.strip()) for part in cell.split(",")]


def test_evidence_generation_table_reports_the_change_from_first_to_last_generation() -> None:
    """bench/evidence: the Fig. 4a/4b rows average the seeds' generation means, and the last row gives each seed's
    change of params and training epoch time from generation 0 to the last generation all seeds reached."""
    module = _evidence_module()

    def phase(g: int, params: float, epoch_s: float | None, replaced: float, best: float) -> dict:
        return {"generation": g, "params": params, "macs": 2 * params, "train_epoch_s": epoch_s, "replaced": replaced,
                "best": best}  # fmt: skip

    seeds = [{"phases": [phase(0, 2e6, 4.0, 1.0, 60.0), phase(1, 1.5e6, 3.2, 0.5, 62.0), phase(2, 1e6, 2.0, 0, 70)]},
             {"phases": [phase(0, 1e6, 2.0, 0.0, 58.0), phase(1, 1.2e6, None, 0.3, 64.0)]}]  # fmt: skip
    no_tickets = [{"phases": [phase(0, 3e6, 5.0, 0.0, 50.0)]}]
    lines = module.generation_lines({"menas": seeds, "random-mt": [{"phases": [phase(0, 1e6, 1.0, 0.0, 40.0)]}],
                                     "menas-no-tickets": no_tickets})  # fmt: skip
    rows = _table(lines)
    # arm, generation (or first and last), seeds, then params, MACs, epoch s, share replaced, best top-1: means over
    # seeds; generation 2 is left out (the second seed never reached it), random-mt too (not a generational arm)
    assert [row[0] for row in rows] == ["menas", "menas", "menas", "menas-no-tickets"]
    assert [[int(g) for g in re.findall(r"\d+", row[1])] for row in rows] == [[0], [1], [0, 1], [0]]
    assert [int(rows[i][2]) for i in (0, 1, 3)] == [2, 2, 1]
    expected = {
        0: ((2e6 + 1e6) / 2, (4e6 + 2e6) / 2, (4.0 + 2.0) / 2, (1.0 + 0.0) / 2, (60.0 + 58.0) / 2),
        1: ((1.5e6 + 1.2e6) / 2, (3e6 + 2.4e6) / 2, 3.2, (0.5 + 0.3) / 2, (62.0 + 64.0) / 2),  # one seed has a time
        3: (3e6, 6e6, 5.0, 0.0, 50.0),
    }
    for i, values in expected.items():
        counts, rest = values[:2], values[2:]  # counts keep 3 significant digits, the rest 2 decimals (of a percent)
        expect = [pytest.approx(v, rel=5e-3) for v in counts] + [pytest.approx(v, abs=5e-3) for v in rest]
        assert [_number(cell) for cell in rows[i][3:]] == expect, (i, rows[i])
    # each seed's change from generation 0 to 1: params 1.5M / 2M and 1.2M / 1M, epoch time 3.2 / 4 and none
    changes = [_numbers(cell) for cell in rows[2][3:6]]
    assert changes == [[-0.25, 0.2], [-0.25, 0.2], [-0.2, None]]
    assert rows[2][6:] == ["", ""]


def test_evidence_reach_table_compares_the_compute_to_reach_the_references_final_best() -> None:
    """bench/evidence: per seed, the images an arm needs to reach menas' final best search-val top-1 over the
    images menas needed; a seed that never reaches it shows "-" and stays out of the mean."""
    module = _evidence_module()
    assert module.images_to_reach([(10, 50.0), (20, 60.0), (40, 70.0)], 60.0) == 20
    assert module.images_to_reach([(10, 50.0)], 60.0) is None
    # menas' final bests: seed 0 70.0 (reached at 200 images), seed 1 72.0 (at 400), seed 2 50.0 (at 100)
    menas = [{"seed": 0, "curve": [(100, 60.0), (200, 70.0), (300, 70.0)]},
             {"seed": 1, "curve": [(100, 65.0), (400, 72.0)]}, {"seed": 2, "curve": [(100, 50.0)]}]  # fmt: skip
    inherit = [{"seed": 0, "curve": [(50, 66.0), (100, 71.0)]}, {"seed": 1, "curve": [(300, 71.0)]},
               {"seed": 2, "curve": [(10, 49.0), (30, 99.0)]}, {"seed": 3, "curve": [(10, 99.0)]}]  # fmt: skip
    evolution = [{"seed": 1, "curve": [(200, 71.9), (600, 72.0)]}]
    lines = module.reach_lines({"menas": menas, "menas-inherit": inherit, "random-mt": [], "evolution": evolution})
    rows = {row[0]: row[1:] for row in _table(lines)}
    assert set(rows) == {"menas-inherit", "evolution"}  # not the reference, not an arm without runs
    # menas-inherit: seed 0 100 / 200, seed 1 never, seed 2 30 / 100; seed 3 has no menas run to compare with
    per_seed, mean = rows["menas-inherit"]
    assert _numbers(per_seed) == [pytest.approx(0.5), None, pytest.approx(0.3)]
    assert _number(mean.split()[0]) == pytest.approx((0.5 + 0.3) / 2, abs=5e-3)
    assert [int(n) for n in re.findall(r"\d+", mean.split(maxsplit=1)[1])] == [2, 3]  # reached by 2 of 3 seeds
    per_seed, mean = rows["evolution"]
    assert _numbers(per_seed) == [pytest.approx(600 / 400)]
    assert module.reach_lines({"random-mt": inherit}) == []  # no reference arm: no table
