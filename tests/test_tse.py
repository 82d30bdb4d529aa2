"""Selection by the training-speed estimate (`fidelity.score: tse`): a trial's fitness is minus the mean of its own
training losses (`TrialRecord.tse`), every trial's recipe says so, and parent pools, promotions, the run's best and
its front rank by it, while status, report and export still show search-val top-1."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.config import FidelityConfig, InheritConfig, SearchConfig, StrategyConfig
from menas.errors import UserError
from menas.search import fidelity, ranking
from menas.search.engine import Search
from menas.search.fidelity import ROLE_PROMOTE, ROLE_RESCORE, Fidelity
from menas.search.protocol import Recipe, TrialOutcome
from menas.search.record import TrialRecord
from menas.search.store import Store
from menas.search.strategies import MENAS, make_strategy
from test_fidelity import BUDGET, MT
from test_search import tiny_config


def record(tid: int, val: float, losses: tuple[float, ...], score: str = "tse", rung: int = 0, **kw) -> TrialRecord:
    recipe = {"epochs": len(losses), "finetune_epochs": 0, "inherit": False, "rung": rung}
    if score == "tse":
        recipe["score"] = "tse"
    return TrialRecord(trial_id=tid, genome=f"g{tid}", status="done", macs=1000, params=100, trained_score=val,
                       train_losses=losses, recipe=recipe, **kw)  # fmt: skip


# ----------------------------------------------------------------------------------------- the score


def test_tse_is_minus_the_mean_training_loss_and_the_recipe_picks_the_fitness() -> None:
    tse = record(0, 60.0, (0.9, 0.5))
    assert tse.tse == pytest.approx(-0.7) and tse.fitness == pytest.approx(-0.7) and tse.final_score == 60.0
    val = record(1, 60.0, (0.9, 0.5), score="val")
    assert val.tse == pytest.approx(-0.7) and val.fitness == 60.0
    assert record(2, 60.0, ()).tse is None and record(2, 60.0, ()).fitness is None
    outcome = TrialOutcome.from_record(tse)  # what a strategy reads: the fitness
    assert outcome is not None and outcome.score == pytest.approx(-0.7) and outcome.fitness == outcome.score


def test_every_recipe_names_the_score_only_under_tse() -> None:
    tse, val = Recipe(fidelity=Fidelity(rungs=(1, 3), score="tse")), Recipe(fidelity=Fidelity(rungs=(1, 3)))
    assert tse.for_trial(bred=False, finetunes=True)["score"] == "tse"
    assert tse.for_promotion(1)["score"] == "tse"
    assert "score" not in val.for_trial(bred=False, finetunes=True) and "score" not in val.for_promotion(1)


def test_the_config_checks_the_score() -> None:
    cfg = SearchConfig(strategy=StrategyConfig(population=4, generations=2), fidelity=FidelityConfig(score="tse"))
    assert make_strategy(cfg).recipe.fidelity.score == "tse"
    with pytest.raises(UserError, match="fidelity.score: got 'loss', allowed: val, tse"):
        FidelityConfig(score="loss")
    with pytest.raises(UserError, match="fidelity.score: got 'tse' with inherit.enabled, allowed: val"):
        SearchConfig(fidelity=FidelityConfig(score="tse"), inherit=InheritConfig(enabled=True))
    with pytest.raises(ValueError, match="fidelity.score"):
        Fidelity(score="loss")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.lists(st.floats(0.01, 3.0), min_size=1, max_size=3), st.integers(0, 1)),
        min_size=1,
        max_size=8,
    )
)
def test_the_best_is_the_top_rungs_lowest_mean_loss_whatever_its_search_val(rows) -> None:
    records = [record(k, val, tuple(losses), rung=rung) for k, (val, losses, rung) in enumerate(rows)]
    best = ranking.best(fidelity.representatives(records))
    top = max(r.rung for r in records)
    at_top = [r for r in records if r.rung == top]
    assert best.rung == top and best.tse == max(r.tse for r in at_top)


def test_a_rescored_lineage_averages_its_fitness_and_its_search_val_apart() -> None:
    first, replica = record(0, 60.0, (0.8,)), record(1, 50.0, (0.6,), role=ROLE_RESCORE, parent_ids=(0,))
    (rep,) = fidelity.representatives([first, replica])
    assert isinstance(rep, fidelity.Rescored)
    assert rep.final_score == pytest.approx(55.0) and rep.fitness == pytest.approx(-0.7)
    assert ranking.rank_key(rep)[1] == pytest.approx(0.7)


# ----------------------------------------------------------------------------------------- a strategy


def test_menas_promotes_and_breeds_from_the_best_tse_not_the_best_search_val() -> None:
    """Trials whose search-val and training loss rank them in opposite orders, told as the engine tells them
    (`TrialOutcome.from_record`): promotions and parents follow the training loss."""
    recipe = Recipe(epochs=2, finetune_epochs=1, fidelity=Fidelity(rungs=(1, 3), eta=3, score="tse"))
    strategy = MENAS(MT, BUDGET, 5, population=6, generations=2, parents=3, recipe=recipe)
    records = {}
    for _ in range(3 * strategy.total_trials):
        if strategy.finished:
            break
        (spec,) = strategy.ask(1)
        quality = zlib.crc32(spec.genome.encode()) % 1000 / 1000  # the lower, the better it learns
        rung = spec.recipe.get("rung", 0)
        records[spec.trial_id] = rec = TrialRecord(
            trial_id=spec.trial_id, genome=spec.genome, status="done", macs=1000, params=10, role=spec.role,
            parent_ids=spec.parent_ids, recipe=spec.recipe, trained_score=50 + 40 * quality + 5 * rung,
            train_losses=(2.0 * quality + 1.0 - 0.5 * rung,),
        )  # fmt: skip
        strategy.tell([TrialOutcome.from_record(rec)])
    assert strategy.finished
    history = strategy.history()
    first = [records[s.trial_id] for s, _ in history if s.generation == 0 and s.role != ROLE_PROMOTE]
    promotions = [records[s.trial_id] for s, _ in history if s.generation == 0 and s.role == ROLE_PROMOTE]
    promoted = {r.parent_ids[0] for r in promotions}

    def top(key, n):
        return {r.trial_id for r in sorted(first, key=key)[:n]}

    by_tse, by_val = top(lambda r: -r.tse, len(promoted)), top(lambda r: -r.final_score, len(promoted))
    assert promoted == by_tse != by_val
    # the parent pool: the promotions (a higher rung), then the best child left by its training loss
    rest = [r for r in first if r.trial_id not in promoted]
    pool = {r.trial_id for r in promotions} | {max(rest, key=lambda r: r.tse).trial_id}
    parents = {i for s, _ in history if s.generation == 1 for i in s.parent_ids if s.role != ROLE_PROMOTE}
    assert parents == pool and max(rest, key=lambda r: r.final_score).trial_id not in parents


# ----------------------------------------------------------------------------------------- the engine


def _opposite_run_trial(job, on_epoch=None) -> TrialRecord:
    """A done trial whose search-val and training loss rank genomes in opposite orders (no training)."""
    quality = zlib.crc32(job.genome.encode()) % 1000 / 1000  # the lower, the better it learns
    return TrialRecord(trial_id=job.trial_id, genome=job.genome, status="done", macs=1000, params=100,
                       trained_score=50 + 40 * quality, train_losses=(1.0 + 2.0 * quality,), train_images=100,
                       train_epoch_s=(0.1,), worker="fake:1")  # fmt: skip


def test_the_engine_tells_the_strategy_the_fitness_live_as_on_resume(tmp_path: Path, monkeypatch) -> None:
    """The worker's result carries no recipe; the strategy is told the stored record (result and spec), so a
    live search promotes by TSE as its replay does."""
    from menas.search import engine as search_module

    monkeypatch.setattr(search_module, "run_trial", _opposite_run_trial)
    strategy = StrategyConfig(population=6, generations=2, parents=2)
    cfg = tiny_config(strategy=strategy, fidelity=FidelityConfig(rungs=[1, 2], eta=3, score="tse"))
    run = tmp_path / "run"
    Search(cfg, run).run()
    with Store.open(run, readonly=True) as store:
        trials = store.trials()
    differ = 0
    for generation in (0, 1):
        children = [t for t in trials if t.generation == generation and t.rung == 0]
        promoted = {t.parent_ids[0] for t in trials if t.generation == generation and t.role == ROLE_PROMOTE}
        by_tse = {t.trial_id for t in sorted(children, key=lambda t: -t.tse)[: len(promoted)]}
        by_val = {t.trial_id for t in sorted(children, key=lambda t: -t.final_score)[: len(promoted)]}
        assert promoted == by_tse
        differ += by_tse != by_val
    assert differ  # the two orders disagree, so the check above can fail
    Search(cfg, run, resume=True).run()  # the replay of the stored records proposes no other trial
    with Store.open(run, readonly=True) as store:
        assert [(t.trial_id, t.genome, t.parent_ids) for t in store.trials()] == [
            (t.trial_id, t.genome, t.parent_ids) for t in trials
        ]


# ----------------------------------------------------------------------------------------- a real search


def test_a_real_search_ranked_by_tse_records_it_and_shows_search_val(tmp_path: Path, capsys) -> None:
    """The wiring end to end: recipes, the best, status, report and export. (At this size's near-chance scores
    search-val and TSE happen to promote alike; the engine test above is the one that tells them apart.)"""
    from menas.cli.main import main

    cfg = tiny_config(fidelity=FidelityConfig(rungs=[1, 2], eta=2, score="tse"))
    run = tmp_path / "run"
    Search(cfg, run).run()
    with Store.open(run, readonly=True) as store:
        trials, best = store.trials(), store.best()
    assert all(t.recipe["score"] == "tse" and t.tse is not None for t in trials if t.status == "done")
    for generation in {t.generation for t in trials}:
        children = [t for t in trials if t.generation == generation and t.rung == 0 and t.status == "done"]
        promoted = {t.parent_ids[0] for t in trials if t.generation == generation and t.role == ROLE_PROMOTE}
        by_tse = sorted(children, key=lambda t: (-t.tse, t.final_macs, t.trial_id))
        assert promoted == {t.trial_id for t in by_tse[: len(promoted)]} and promoted
    top = max(t.rung for t in trials)
    assert best is not None and best.rung == top
    assert best.tse == max(t.tse for t in trials if t.rung == top and t.status == "done")
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{best.final_score:.2f}%" in out and f"training-speed estimate, {best.tse:.3f}" in out
    assert main(["report", str(run)]) == 0
    assert "`fidelity.score: tse`" in (run / "report" / "report.md").read_text()
    export = tmp_path / "export"
    assert main(["export", str(run), "--out", str(export), "--format", "safetensors"]) == 0
    genome = json.loads((export / "genome.json").read_text())
    assert genome["trial_id"] == best.trial_id and genome["search_val_top1"] == pytest.approx(best.final_score)
    assert genome["search_tse"] == pytest.approx(best.tse)
