"""Elites re-scored (`fidelity.rescore`, `menas.search.fidelity`): after each generation the best networks scored
once are trained again from scratch with another seed through the same rungs, and their score becomes the mean
of the two trainings, for parent pools, tournaments, the run's best and the noise estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.cli.search import _rescored_text
from menas.config import FidelityConfig, SearchConfig, StrategyConfig
from menas.errors import UserError
from menas.search import fidelity
from menas.search.engine import Search
from menas.search.fidelity import (
    ROLE_PROMOTE,
    ROLE_REPEAT,
    ROLE_RESCORE,
    Fidelity,
    Rescored,
    noise_estimate,
    repeat_pairs,
    representatives,
    rescore_stage,
)
from menas.search.protocol import Recipe
from menas.search.ranking import rank_key
from menas.search.store import Store
from menas.search.strategies import MENAS, RandomSearch, RegularizedEvolution, make_strategy
from test_fidelity import BUDGET, MT, by_rank, drive, outcome
from test_search import tiny_config

# ----------------------------------------------------------------------------------------- the stage


def test_the_rescore_stage_replicates_each_elite_up_to_its_rung() -> None:
    schedule = Fidelity(rungs=(1, 3), eta=2, rescore=2)
    gen = [outcome(0, 50.0), outcome(1, 70.0), outcome(2, 60.0), outcome(3, 65.0),
           outcome(4, 72.0, ROLE_PROMOTE, (1,), 1), outcome(5, 75.0, ROLE_PROMOTE, (3,), 1)]  # fmt: skip
    elites = lambda: by_rank(representatives(gen))  # noqa: E731  (5, 4 at rung 1, then 2, 0 at rung 0)
    stage = rescore_stage(schedule, gen, gen, elites)
    assert [(role, o.trial_id, rung) for role, o, rung in stage] == [(ROLE_RESCORE, 3, 0), (ROLE_RESCORE, 1, 0)]
    first = [*gen, outcome(6, 64.0, ROLE_RESCORE, (3,)), outcome(7, 55.0, ROLE_RESCORE, (1,))]
    stage = rescore_stage(schedule, first, first, elites)  # each replica continues to its elite's rung
    assert [(role, o.trial_id, rung) for role, o, rung in stage] == [(ROLE_RESCORE, 6, 1), (ROLE_RESCORE, 7, 1)]
    done = [*first, outcome(8, 71.0, ROLE_RESCORE, (6,), 1), outcome(9, None, ROLE_RESCORE, (7,), 1)]
    assert rescore_stage(schedule, done, done, elites) == []
    assert rescore_stage(Fidelity(rungs=(1, 3)), gen, gen, elites) == []  # rescore 0: no stage
    # a later generation re-scores only lineages scored once: 3 was re-scored, 1's replica failed at rung 1
    later = [outcome(10, 40.0)]
    stage = rescore_stage(schedule, later, [*done, *later], lambda: by_rank(representatives([*done, *later])))
    assert [o.trial_id for _, o, _ in stage] == [2, 0]


def test_a_rescored_lineage_scores_the_mean_of_its_trainings_at_its_rung() -> None:
    trials = [outcome(0, 50.0), outcome(1, 70.0), outcome(2, 74.0, ROLE_PROMOTE, (1,), 1),
              outcome(3, 61.0, ROLE_RESCORE, (1,)), outcome(4, 66.0, ROLE_RESCORE, (3,), 1),
              outcome(5, 49.0, ROLE_REPEAT, (0,))]  # fmt: skip
    reps = representatives(trials)
    assert [r.trial_id for r in reps] == [0, 2]
    lineage = reps[1]
    assert isinstance(lineage, Rescored) and fidelity.evaluations(lineage) == 2 and fidelity.evaluations(reps[0]) == 1
    assert lineage.final_score == 70.0 and lineage.own_score == 74.0 and lineage.scores == (74.0, 66.0)
    assert lineage.rung == 1 and lineage.final_genome == "g2" and lineage.final_macs == 100  # its trial's
    assert rank_key(lineage) == (-1, -70.0, 100, 2)
    # the noise estimate takes the repeat's pair and the re-score's pair (the latter at rung 1)
    assert sorted(repeat_pairs(trials)) == [(50.0, 49.0), (74.0, 66.0)]
    assert noise_estimate(repeat_pairs(trials)).pairs == 2
    # a replica that did not reach the lineage's rung does not count
    short = [t for t in trials if t.trial_id != 4]
    assert not isinstance(representatives(short)[1], Rescored)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=2, max_size=10), st.integers(1, 3))
def test_rescore_proposes_the_best_lineages_not_yet_rescored(scores: list[float], rescore: int) -> None:
    gen = [outcome(i, s) for i, s in enumerate(scores)]
    elites = by_rank(representatives(gen))
    stage = rescore_stage(Fidelity(rescore=rescore), gen, gen, lambda: elites)
    assert [o.trial_id for _, o, _ in stage] == [o.trial_id for o in elites[:rescore]]
    assert all(role == ROLE_RESCORE and rung == 0 for role, _, rung in stage)


# ----------------------------------------------------------------------------------------- strategies


def noisy_drive(strategy, workers: int = 1, order_seed: int = 0, lucky: int = 30):
    """`drive` (a trial scores a fixed function of its genome plus 5 per rung) where children whose trial id is
    divisible by 3 get `lucky` points of luck, which their promotions keep and their replicas do not get."""

    def luck(strategy, spec) -> float:
        if spec.role in fidelity.PROBES:
            return 0
        by_id = {s.trial_id: s for s, _ in strategy.history()}
        return lucky if fidelity.lineage_root(spec, by_id) % 3 == 0 else 0

    return drive(strategy, workers, order_seed, luck=luck)


def menas(seed: int = 5, **schedule) -> MENAS:
    recipe = Recipe(epochs=2, finetune_epochs=1, fidelity=Fidelity(**schedule))
    return MENAS(MT, BUDGET, seed, population=6, generations=3, parents=3, recipe=recipe)


def test_menas_rescores_its_parent_pool_before_breeding_and_ranks_by_the_mean() -> None:
    strategy = noisy_drive(menas(rungs=(1, 3), eta=3, rescore=1))
    history = strategy.history()
    assert len(history) == strategy.total_trials == 3 * (6 + 2 + 1 * 2)
    specs = {s.trial_id: s for s, _ in history}
    for g in range(3):
        roles = [(s.role, s.recipe["rung"]) for s, _ in history if s.generation == g]
        assert roles[6:] == [(ROLE_PROMOTE, 1), (ROLE_PROMOTE, 1), (ROLE_RESCORE, 0), (ROLE_RESCORE, 1)], roles
    replicas = [s for s, _ in history if s.role == ROLE_RESCORE]
    for spec in replicas:
        source = specs[spec.parent_ids[0]]
        if spec.recipe["rung"] == 0:  # the elite's child trained again from scratch, tickets as it had
            assert spec.genome == source.genome and spec.use_tickets == source.use_tickets
            assert spec.recipe == {"epochs": 1, "finetune_epochs": 1, "inherit": False, "rung": 0}
            assert source.role not in fidelity.PROBES and source.role != ROLE_PROMOTE
        else:  # then continued from its own weights, like a promotion
            assert source.role == ROLE_RESCORE and spec.genome == strategy.outcome(source.trial_id).final_genome
            assert spec.recipe["continues"] and spec.recipe["epochs"] == 2
    # every lineage is re-scored at most once, and a re-scored elite's lucky number is gone from its score
    roots = [s.parent_ids[0] for s in replicas if s.recipe["rung"] == 0]
    assert len(roots) == len(set(roots)) == 3
    outcomes = [o for _, o in history]
    rescored = [r for r in representatives(outcomes) if isinstance(r, Rescored)]
    assert len(rescored) == 3 and all(r.evaluations == 2 for r in rescored)
    lucky = [r for r in rescored if fidelity.lineage_root(r, {o.trial_id: o for o in outcomes}) % 3 == 0]
    assert lucky and all(r.final_score == pytest.approx(r.own_score - 15) for r in lucky)
    # generation 1's pool was chosen after generation 0's elite was re-scored, by the mean
    pool_1 = strategy.parent_pool(1)
    gen0 = [o for s, o in history if s.generation == 0]
    expected = [o.final_genome for o in by_rank(representatives(gen0))]
    assert list(pool_1) == list(dict.fromkeys(expected))[:3]


def test_rescores_do_not_depend_on_result_order_and_replay_exactly() -> None:
    sequential = noisy_drive(menas(rungs=(1, 2), eta=2, rescore=2), workers=1)
    parallel = noisy_drive(menas(rungs=(1, 2), eta=2, rescore=2), workers=4, order_seed=3)
    assert sequential.history() == parallel.history()
    cut = menas(rungs=(1, 2), eta=2, rescore=2)
    for spec, result in sequential.history()[:14]:  # cut inside generation 0's re-scores
        assert cut.ask(1) == [spec]
        if spec.trial_id < 13:
            cut.tell([result])
    assert cut.history()[12][0].role == ROLE_RESCORE
    replayed = menas(rungs=(1, 2), eta=2, rescore=2)
    assert [s.trial_id for s in replayed.replay(cut.history())] == [13]
    assert noisy_drive(replayed).history() == sequential.history()


def test_without_rungs_a_rescore_is_one_training_of_the_child_again() -> None:
    strategy = noisy_drive(menas(rescore=1))
    history = strategy.history()
    assert len(history) == strategy.total_trials == 3 * (6 + 1)
    replicas = [s for s, _ in history if s.role == ROLE_RESCORE]
    assert len(replicas) == 3 and all(s.recipe == {"epochs": 2, "finetune_epochs": 1, "inherit": False}
                                      for s in replicas)  # fmt: skip


def test_regularized_evolution_rescores_its_population_and_tournaments_read_the_mean() -> None:
    recipe = Recipe(epochs=2, fidelity=Fidelity(rescore=1))

    def evolution() -> RegularizedEvolution:
        return RegularizedEvolution(MT, BUDGET, 4, population=4, sample_size=4, cycles=8, recipe=recipe)

    strategy = noisy_drive(evolution(), workers=2, order_seed=1)
    history = strategy.history()
    assert len(history) == strategy.total_trials == 3 * (4 + 1)
    assert [s.role for s, _ in history].count(ROLE_RESCORE) == 3
    members = strategy.members
    assert len(members) == 4 and all(m.role != ROLE_RESCORE for m in members)  # replicas join nothing
    ranked = strategy.rescore_elites(1)  # the population after block 1, best first by its (re-scored) scores
    assert sorted(m.trial_id for m in ranked) == sorted(m.trial_id for m in members)
    assert [m.final_score for m in ranked] == sorted((m.final_score for m in ranked), reverse=True)
    assert any(isinstance(m, Rescored) for m in ranked)  # the tournaments' view: block 1's elite at its mean
    joined = strategy.rescore_elites(2)  # the last block not applied yet: the population it would make
    last = [s.trial_id for s, _ in history if s.generation == 2 and s.role != ROLE_RESCORE]
    assert sorted(m.trial_id for m in joined) == last
    assert noisy_drive(evolution(), workers=1).history() == history


def test_random_search_rescores_its_best_of_each_batch() -> None:
    recipe = Recipe(epochs=2, fidelity=Fidelity(rescore=1))
    strategy = noisy_drive(RandomSearch(MT, BUDGET, 2, trials=8, batch=4, recipe=recipe))
    history = strategy.history()
    assert [s.role for s, _ in history] == ["sample"] * 4 + [ROLE_RESCORE] + ["sample"] * 4 + [ROLE_RESCORE]
    assert len(history) == strategy.total_trials


def test_a_config_sets_rescore_and_refuses_a_bad_count() -> None:
    cfg = SearchConfig(strategy=StrategyConfig(population=4, generations=2), fidelity=FidelityConfig(rescore=2))
    strategy = make_strategy(cfg)
    assert strategy.recipe.fidelity == Fidelity(rescore=2) and strategy.total_trials == 2 * (4 + 2)
    with pytest.raises(UserError, match="fidelity.rescore: got -1, allowed: >= 0"):
        FidelityConfig(rescore=-1)
    with pytest.raises(ValueError, match="fidelity.rescore"):
        Fidelity(rescore=1.5)


# ----------------------------------------------------------------------------------------- a real search


def test_a_search_with_rescores_records_them_and_reports_the_mean(tmp_path: Path, capsys) -> None:
    from menas.cli.main import main

    cfg = tiny_config(fidelity=FidelityConfig(rungs=[1, 2], eta=2, rescore=1))
    run = tmp_path / "run"
    Search(cfg, run).run()
    with Store.open(run, readonly=True) as store:
        trials = store.trials()
        best, noise, lineages, ranked = store.best(), store.noise(), store.lineages(), store.ranked()
    replicas = [t for t in trials if t.role == ROLE_RESCORE]
    assert replicas and all(t.status == "done" for t in replicas)
    by_id = {t.trial_id: t for t in trials}
    for t in replicas:
        if t.rung == 1:  # continued from the replica below it, whose weights it loaded
            assert by_id[t.parent_ids[0]].role == ROLE_RESCORE and t.recipe["continues"]
    rescored = [t for t in lineages if isinstance(t, Rescored)]
    assert rescored and noise is not None and noise.pairs == len(rescored)
    assert best is not None and best.role != ROLE_RESCORE
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "score noise" in out and ("mean of 2 trainings" in out) == isinstance(best, Rescored)
    assert main(["report", str(run)]) == 0
    report = (run / "report" / "report.md").read_text()
    assert f"{len(rescored)} elite(s) re-scored" in report
    rows = report.split("## Rungs", 1)[1].split("\n\n", 3)[2].splitlines()[2:]  # the rung table's rows
    networks = {(int(r.split("|")[1]), int(r.split("|")[2])): int(r.split("|")[3]) for r in rows}
    children = [t for t in trials if t.role not in fidelity.PROBES]
    assert networks == {k: sum((t.generation, t.rung) == k for t in children) for k in networks}
    # an export of a re-scored network says which trainings its score averages (its weights scored the first)
    rank = 1 + [t.trial_id for t in ranked].index(rescored[0].trial_id)
    out = tmp_path / "export"
    assert main(["export", str(run), "--rank", str(rank), "--out", str(out), "--format", "safetensors"]) == 0
    record = json.loads((out / "genome.json").read_text())
    assert record["trial_id"] == rescored[0].trial_id
    assert record["search_val_top1"] == pytest.approx(rescored[0].final_score)
    assert record["search_val_top1_trainings"] == pytest.approx(list(rescored[0].scores))
    assert _rescored_text(rescored[0]) == (
        f" (mean of 2 trainings: {rescored[0].scores[0]:.2f}%, {rescored[0].scores[1]:.2f}%)"
    )


def test_a_pareto_search_rescores_its_first_front_and_fronts_read_the_mean() -> None:
    from menas.search import pareto

    recipe = Recipe(epochs=2, finetune_epochs=1, fidelity=Fidelity(rungs=(1, 3), eta=3, rescore=2))
    strategy = noisy_drive(
        MENAS(MT, BUDGET, 7, population=6, generations=2, parents=3, recipe=recipe, objective="pareto")
    )
    history = strategy.history()
    # generation 1's pool of 3 holds the two networks re-scored after generation 0: one replica is left to make
    assert len(history) == strategy.total_trials - 2 and strategy.total_trials == 2 * (6 + 2 + 2 * 2)
    outcomes = [o for _, o in history]
    lineages = representatives(outcomes)
    rescored = [t for t in lineages if isinstance(t, Rescored)]
    assert len(rescored) == 3 and all(t.rung == 1 for t in rescored)
    final_pool = strategy.select_parents()
    assert all(isinstance(o, Rescored) for o in final_pool if o.rung == 1)  # every elite at the top rung: twice
    # the first replicas of generation 0 went to the first two of the pool NSGA-II ordered then
    gen0 = [o for s, o in history if s.generation == 0 and s.role not in fidelity.PROBES]
    expected = [o.trial_id for o in strategy.order([o for o in representatives(gen0) if o.rung == 1])][:2]
    first = [s for s, _ in history if s.role == ROLE_RESCORE and s.generation == 0 and not s.recipe["rung"]]
    roots = [s.parent_ids[0] for s in first]
    by_id = {o.trial_id: o for o in outcomes}
    assert roots == [fidelity.lineage_root(by_id[t], by_id) for t in expected]
    front = pareto.trial_front([t for t in lineages if t.rung == 1])  # a front over means and MACs
    assert front and any(isinstance(t, Rescored) for t in lineages if t.rung == 1)
    assert all(not pareto.dominates(pareto.trial_point(o), pareto.trial_point(f), pareto.trial_senses())
               for f in front for o in lineages if o.rung == 1)  # fmt: skip
