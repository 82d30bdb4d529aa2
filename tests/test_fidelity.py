"""Multi-fidelity selection and the noise estimate (`menas.search.fidelity`): the stages of a generation, which
network stands for a lineage, the strategies' schedules and resume, and a real search whose promotions continue
their parents' weights, resume mid-rung and count in the compute budget."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from menas.config import FidelityConfig, SearchConfig, StrategyConfig
from menas.errors import UserError
from menas.prune import pipeline as pipeline_module
from menas.search import fidelity
from menas.search.engine import Search, load_run_config
from menas.search.fidelity import ROLE_PROMOTE, ROLE_REPEAT, Fidelity, next_stage, noise_estimate, representatives
from menas.search.protocol import ROLE_FILL, ROLE_MUTATION, Recipe, TrialOutcome
from menas.search.ranking import rank_key
from menas.search.store import Store
from menas.search.strategies import MENAS, RandomSearch, RegularizedEvolution, make_strategy
from menas.space.cost import Budget
from menas.space.spaces import PRESETS
from test_search import Crash, tiny_config

MT = PRESETS["mobilenet3-mt"]
BUDGET = Budget(macs_max=300e6, params_max=4e6, input_size=224, in_chans=3, num_classes=1000)


def outcome(tid: int, score: float | None, role: str = "sample", parents: tuple[int, ...] = (), rung: int = 0,
            macs: int = 100) -> TrialOutcome:  # fmt: skip
    status = "failed" if score is None else "done"
    return TrialOutcome(tid, f"g{tid}", status, score, None if score is None else macs, None if score is None else 1,
                        role=role, parent_ids=parents, rung=rung)  # fmt: skip


def by_rank(outcomes: list[TrialOutcome]) -> list[TrialOutcome]:
    return sorted(outcomes, key=rank_key)


# ----------------------------------------------------------------------------------------- the schedule


def test_a_schedule_is_checked_and_counts_its_trials() -> None:
    schedule = Fidelity(rungs=(1, 3, 9), eta=3, repeats=2)
    assert schedule.promotions(8) == [3, 1] and schedule.planned(8) == 8 + 2 + 3 + 1
    assert schedule.extra_epochs(1) == 2 and schedule.extra_epochs(2) == 6
    assert schedule.staged and not Fidelity().staged and not Fidelity(rungs=(2,)).staged
    for bad in ({"rungs": (3, 3)}, {"rungs": (0, 2)}, {"eta": 1}, {"repeats": -1}):
        with pytest.raises(ValueError, match="fidelity"):
            Fidelity(**bad)
    for bad, message in (({"rungs": [2, 1]}, "fidelity.rungs: got \\[2, 1\\], allowed: null or a rising list"),
                         ({"eta": 1}, "fidelity.eta: got 1, allowed: >= 2"),
                         ({"lr_scale": 0}, "fidelity.lr_scale: got 0, allowed: > 0")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            FidelityConfig(**bad)
    assert SearchConfig(strategy=StrategyConfig(name="evolution"), fidelity=FidelityConfig(rungs=[1, 2]))


def test_a_generation_runs_repeats_then_each_rung() -> None:
    schedule = Fidelity(rungs=(1, 2, 4), eta=3, repeats=1)
    children = [outcome(0, 50.0), outcome(1, 70.0), outcome(2, None), outcome(3, 60.0), outcome(4, 65.0)]
    stage = next_stage(schedule, children, by_rank)
    assert [(role, o.trial_id, rung) for role, o, rung in stage] == [(ROLE_REPEAT, 1, 0)]
    with_repeat = [*children, outcome(5, 66.0, ROLE_REPEAT, (1,))]
    stage = next_stage(schedule, with_repeat, by_rank)  # ceil(5 children / 3) = 2, the failed one counted
    assert [(role, o.trial_id, rung) for role, o, rung in stage] == [(ROLE_PROMOTE, 1, 1), (ROLE_PROMOTE, 4, 1)]
    rung1 = [*with_repeat, outcome(6, 72.0, ROLE_PROMOTE, (1,), 1), outcome(7, 75.0, ROLE_PROMOTE, (4,), 1)]
    stage = next_stage(schedule, rung1, by_rank)
    assert [(role, o.trial_id, rung) for role, o, rung in stage] == [(ROLE_PROMOTE, 7, 2)]
    assert next_stage(schedule, [*rung1, outcome(8, 80.0, ROLE_PROMOTE, (7,), 2)], by_rank) == []
    assert next_stage(schedule, [outcome(0, None), outcome(1, None)], by_rank) == []  # nothing done: complete


def test_a_lineage_is_its_highest_rung_and_repeats_stand_for_nothing() -> None:
    trials = [outcome(0, 50.0), outcome(1, 70.0), outcome(2, 90.0, ROLE_REPEAT, (0,)),
              outcome(3, 60.0, ROLE_PROMOTE, (1,), 1), outcome(4, None, ROLE_PROMOTE, (0,), 1)]  # fmt: skip
    assert [t.trial_id for t in representatives(trials)] == [0, 3]  # 0's promotion failed: 0 stands at rung 0
    assert min(representatives(trials), key=rank_key).trial_id == 3  # rung 1 beats a higher score at rung 0


def test_the_noise_estimate_is_the_pairs_rms_difference_over_root_two() -> None:
    assert noise_estimate([]) is None
    estimate = noise_estimate([(60.0, 57.0), (50.0, 51.0)])
    assert estimate.pairs == 2 and estimate.sigma == pytest.approx(math.sqrt((9 + 1) / 4))
    assert "gaps under 3.16 points are ties" in estimate.describe()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=1, max_size=12), st.integers(1, 3), st.integers(2, 4))
def test_promotions_take_the_best_of_the_rung_below(scores: list[float], repeats: int, eta: int) -> None:
    schedule = Fidelity(rungs=(1, 2), eta=eta, repeats=repeats)
    children = [outcome(i, s, macs=100 + i) for i, s in enumerate(scores)]
    repeat = next_stage(schedule, children, by_rank)
    assert [o.trial_id for _, o, _ in repeat] == [o.trial_id for o in by_rank(children)[:repeats]]
    generation = children + [outcome(len(children) + k, 0.0, ROLE_REPEAT, (o.trial_id,)) for k, (_, o, _) in
                             enumerate(repeat)]  # fmt: skip
    promoted = next_stage(schedule, generation, by_rank)
    assert len(promoted) == math.ceil(len(scores) / eta)
    threshold = min(o.final_score for _, o, _ in promoted)
    assert all(c.final_score <= threshold for c in children if c.trial_id not in {o.trial_id for _, o, _ in promoted})


# ----------------------------------------------------------------------------------------- strategies


def drive(strategy, workers: int = 1, order_seed: int = 0, fail_every: int = 0, luck=None):
    """Ask/tell with `workers` trials in flight completed in a seeded random order; a trial's score is a fixed
    function of its genome plus its rung (a promotion scores higher) plus `luck(strategy, spec)` when given, and
    every `fail_every`-th trial fails."""
    rng, in_flight = random.Random(order_seed), list(strategy.pending)
    for _ in range(3 * strategy.total_trials + 3):
        if strategy.finished:
            break
        in_flight += strategy.ask(max(0, workers - len(in_flight)))
        spec = in_flight.pop(rng.randrange(len(in_flight)))
        rung = (spec.recipe or {}).get("rung", 0)
        if fail_every and spec.trial_id % fail_every == fail_every - 1:
            strategy.tell([TrialOutcome(spec.trial_id, spec.genome, "failed")])
            continue
        score = (zlib.crc32(spec.genome.encode()) % 1000) / 20 + 5 * rung + (luck(strategy, spec) if luck else 0)
        strategy.tell([TrialOutcome(spec.trial_id, spec.genome, "done", score, 1000 + len(spec.genome), 10)])
    assert strategy.finished
    return strategy


def menas(seed: int = 5, **schedule) -> MENAS:
    recipe = Recipe(epochs=2, finetune_epochs=1, fidelity=Fidelity(**schedule))
    return MENAS(MT, BUDGET, seed, population=6, generations=3, parents=3, recipe=recipe)


def test_menas_runs_each_generations_stages_before_breeding_the_next() -> None:
    strategy = drive(menas(rungs=(1, 3, 9), eta=3, repeats=1))
    history = strategy.history()
    assert len(history) == strategy.total_trials == 3 * (6 + 1 + 2 + 1)
    for g in range(3):
        roles = [s.role for s, _ in history if s.generation == g]
        assert roles[6:] == [ROLE_REPEAT, ROLE_PROMOTE, ROLE_PROMOTE, ROLE_PROMOTE], roles
    specs = {s.trial_id: s for s, _ in history}
    for spec, _ in history:
        if spec.role == ROLE_PROMOTE:
            source = specs[spec.parent_ids[0]]
            assert spec.genome == strategy.outcome(source.trial_id).final_genome and not spec.use_tickets
            rung = spec.recipe["rung"]
            assert spec.recipe == {"epochs": (2, 6)[rung - 1], "finetune_epochs": 0, "inherit": False, "rung": rung,
                                   "continues": True, "lr_scale": 1.0}  # fmt: skip
            assert source.recipe.get("rung", 0) == rung - 1
        elif spec.role == ROLE_REPEAT:
            assert spec.genome == specs[spec.parent_ids[0]].genome and spec.recipe["epochs"] == 1
        else:
            assert spec.recipe == {"epochs": 1, "finetune_epochs": 1, "inherit": False, "rung": 0}
    # the parents of generation 1 come first from rung 2, then rung 1, then rung 0
    pool = strategy.parent_pool(1)
    top = [s for s, _ in history if s.generation == 0 and s.recipe["rung"] == 2]
    assert pool[0] == top[0].genome


def test_stages_do_not_depend_on_result_order_and_replay_exactly() -> None:
    sequential = drive(menas(rungs=(1, 2), eta=2, repeats=2), workers=1)
    parallel = drive(menas(rungs=(1, 2), eta=2, repeats=2), workers=4, order_seed=3)
    assert sequential.history() == parallel.history()
    cut = menas(rungs=(1, 2), eta=2, repeats=2)
    for spec, result in sequential.history()[:17]:  # a run cut mid-generation, its 17th trial in flight
        assert cut.ask(1) == [spec]
        if spec.trial_id < 16:
            cut.tell([result])
    replayed = menas(rungs=(1, 2), eta=2, repeats=2)
    pending = replayed.replay(cut.history())
    assert [s.trial_id for s in pending] == [16]
    assert drive(replayed).history() == sequential.history()


def test_failures_shrink_a_rung_and_the_run_still_finishes() -> None:
    strategy = drive(menas(rungs=(1, 2, 3), eta=2), workers=2, fail_every=4)
    assert len(strategy.history()) <= strategy.total_trials


def test_random_search_halves_each_batch_and_evolution_refuses_stages() -> None:
    recipe = Recipe(epochs=2, fidelity=Fidelity(rungs=(1, 4), eta=4))
    strategy = drive(RandomSearch(MT, BUDGET, 2, trials=10, batch=4, recipe=recipe), workers=3)
    history = strategy.history()
    assert [(s.generation, s.role) for s, _ in history if s.role == ROLE_PROMOTE] == [(0, "promote"), (1, "promote"),
                                                                                     (2, "promote")]  # fmt: skip
    assert sum(s.role == "sample" for s, _ in history) == 10 and len(history) == strategy.total_trials == 13


def test_regularized_evolution_breeds_blocks_and_promotions_keep_their_age() -> None:
    recipe = Recipe(epochs=2, fidelity=Fidelity(rungs=(1, 2), eta=2, repeats=1))

    def evolution() -> RegularizedEvolution:
        return RegularizedEvolution(MT, BUDGET, 4, population=4, sample_size=2, cycles=6, recipe=recipe)

    strategy = drive(evolution(), workers=3, order_seed=1)
    history = strategy.history()
    assert len(history) == strategy.total_trials == (4 + 1 + 2) + (4 + 1 + 2) + (2 + 1 + 1)
    assert [s.generation for s, _ in history] == [0] * 7 + [1] * 7 + [2] * 4
    assert [s.role for s, _ in history][4:7] == [ROLE_REPEAT, ROLE_PROMOTE, ROLE_PROMOTE]
    assert all(s.role in (ROLE_MUTATION, ROLE_FILL) for s, _ in history[7:11])
    # after the last block, the population holds its 4 newest networks, promoted ones by their promotion
    members = strategy.members
    promoted = {s.parent_ids[0]: s.trial_id for s, _ in history if s.role == ROLE_PROMOTE}
    assert len(members) == 4 and not any(m.trial_id in promoted for m in members)
    assert any(m.role == ROLE_PROMOTE for m in members)
    assert drive(evolution(), workers=1).history() == history


def test_a_config_builds_the_schedule() -> None:
    cfg = SearchConfig(strategy=StrategyConfig(population=4, generations=2),
                       fidelity=FidelityConfig(rungs=[1, 2], eta=2, repeats=1, lr_scale=0.5))  # fmt: skip
    strategy = make_strategy(cfg)
    assert strategy.recipe.fidelity == Fidelity((1, 2), 2, 1, 0.5)
    assert strategy.total_trials == 2 * (4 + 1 + 2)


# ----------------------------------------------------------------------------------------- a real search


def staged_config(**changes: object) -> SearchConfig:
    """`tiny_config` with two rungs (1 and 3 epochs: a promotion trains 2 more) and one repeat per generation."""
    cfg = tiny_config(fidelity=FidelityConfig(rungs=[1, 3], eta=2, repeats=1))
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("staged") / "run"
    Search(staged_config(), run_dir).run()
    return run_dir


def test_a_staged_search_records_rungs_noise_and_compute(staged_run: Path, capsys: pytest.CaptureFixture) -> None:
    from menas.cli.main import main

    with Store.open(staged_run, readonly=True) as store:
        trials = store.trials()
        assert [t.role for t in trials if t.generation == 0][3:] == [ROLE_REPEAT, ROLE_PROMOTE, ROLE_PROMOTE]
        assert all(t.status == "done" for t in trials) and len(trials) == 2 * (3 + 1 + 2)
        for t in trials:
            if t.role == ROLE_PROMOTE:  # 2 more epochs from the parent's network, no lottery, no fine-tuning
                parent = store.trial(t.parent_ids[0])
                assert (t.genome, t.epochs, t.ticket, t.lottery_s) == (parent.final_genome, 2, None, 0.0)
        noise = store.noise()
        pairs = fidelity.repeat_pairs(trials)
        assert noise is not None and noise.pairs == len(pairs) == 2
        assert noise.sigma == pytest.approx(math.sqrt(sum((a - b) ** 2 for a, b in pairs) / 4))
        assert store.best().rung == 1 and store.best().role == ROLE_PROMOTE
        used = store.compute_used()
        assert used.images == pytest.approx(sum(t.budget_images for t in trials), abs=1)
        promoted = sum(t.budget_images for t in trials if t.role == ROLE_PROMOTE)
        assert promoted > 0 and used.images > promoted
    assert main(["status", str(staged_run)]) == 0
    out = capsys.readouterr().out
    assert "score noise ±" in out and "(rung 1)" in out
    assert main(["report", str(staged_run)]) == 0
    report = (staged_run / "report" / "report.md").read_text()
    assert "## Rungs" in report and "## Score noise" in report


def test_a_promotion_starts_from_its_parents_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights a promotion trains from equal its parent's saved weights, tensor for tensor."""
    real_train, started = pipeline_module.train, {}

    def train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, **kw):
        trial = Path(checkpoint_path).parent.name
        if Path(checkpoint_path).name.startswith("train"):
            started[trial] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path, **kw)

    monkeypatch.setattr(pipeline_module, "train", train)
    run_dir = tmp_path / "run"
    Search(staged_config(strategy=dataclasses.replace(staged_config().strategy, generations=1)), run_dir).run()
    with Store.open(run_dir, readonly=True) as store:
        promotions = [t for t in store.trials() if t.role == ROLE_PROMOTE]
        assert len(promotions) == 2
        for t in promotions:
            parent = load_file(str(run_dir / store.trial(t.parent_ids[0]).weights))
            start = started[f"{t.trial_id:05d}"]
            assert set(parent) == set(start)
            for name, tensor in parent.items():
                assert tensor.equal(start[name].contiguous()), name


def test_a_search_resumes_mid_rung(staged_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the first of a promotion's two epochs, then resume: the finished trials are not trained again,
    the promotion goes on from its epoch checkpoint, and the results equal the uninterrupted run's."""
    run_dir = tmp_path / "run"
    real_train, calls = pipeline_module.train, []

    def train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, progress=None, **kw):
        trial = Path(checkpoint_path).parent.name
        calls.append(trial)

        def crash_after_first(stats):
            if trial == "00004" and stats.epoch == 1 and not os.environ.get("RESUMED"):
                raise Crash
            if progress is not None:
                progress(stats)

        return real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path,
                          progress=crash_after_first, **kw)  # fmt: skip

    monkeypatch.setattr(pipeline_module, "train", train)
    with pytest.raises(Crash):
        Search(staged_config(), run_dir).run()
    with Store.open(run_dir, readonly=True) as store:
        assert store.trial(4).role == ROLE_PROMOTE and store.trial(4).status == "running"
    calls.clear()
    monkeypatch.setenv("RESUMED", "1")
    Search(load_run_config(run_dir), run_dir, resume=True).run()
    assert not any(c in ("00000", "00001", "00002", "00003") for c in calls), calls
    with Store.open(run_dir, readonly=True) as a, Store.open(staged_run, readonly=True) as b:
        fields = ("trial_id", "genome", "role", "parent_ids", "trained_score", "final_score", "epochs")
        assert [[getattr(t, f) for f in fields] for t in a.trials()] == [
            [getattr(t, f) for f in fields] for t in b.trials()
        ]
        assert a.trial(4).epochs == 2  # one epoch before the crash, one after: not two more


def test_common_random_numbers_every_trial_of_a_generation_sees_the_same_batches(tmp_path: Path) -> None:
    """Data order and augmentation come from the data seed, not the trial's: two trials of a generation (and a
    promotion) train on the same batches, epoch for epoch, while their initialisation seeds differ."""
    from menas.data.splits import build_loaders

    search = Search(staged_config(), tmp_path / "run")
    try:
        specs = search.strategy.ask()
        jobs = [search.job(spec) for spec in specs[:2]]
    finally:
        search.close()
    assert jobs[0].seed != jobs[1].seed and jobs[0].data == jobs[1].data
    batches = []
    for job in jobs:
        loader = build_loaders(job.data, torch.device("cpu")).train
        epochs = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            epochs.append([(images.clone(), labels.clone()) for images, labels in loader])
        batches.append(epochs)
    for (a_images, a_labels), (b_images, b_labels) in zip(*[e[1] for e in batches], strict=True):
        assert a_images.equal(b_images) and a_labels.equal(b_labels)
    first, second = batches[0][0][0][1], batches[0][1][0][1]
    assert not first.equal(second)  # the order does change from epoch to epoch


# ----------------------------------------------------------------------------------------- tickets at the top rung


def test_tickets_at_the_top_rung_move_the_lottery_and_fine_tuning_to_its_promotions() -> None:
    """`fidelity.tickets: top`: children and lower rungs train only; a promotion to the top rung searches its ticket
    and fine-tunes it. Without rungs, "top" is the one rung, as "first"."""
    strategy = drive(menas(rungs=(1, 3, 9), eta=3, repeats=1, tickets="top"))
    for spec, _ in strategy.history():
        rung = spec.recipe.get("rung", 0)
        top = rung == 2
        assert spec.use_tickets == top and spec.recipe["finetune_epochs"] == (1 if top else 0), spec
    recipe = Recipe(epochs=2, finetune_epochs=1, fidelity=Fidelity(rungs=(1, 3), tickets="top"))
    ablation = MENAS(MT, BUDGET, 5, population=6, generations=2, parents=3, use_tickets=False, recipe=recipe)
    for spec, _ in drive(ablation).history():  # the ablation fine-tunes where MENAS does, with no ticket
        assert not spec.use_tickets and spec.recipe["finetune_epochs"] == (spec.recipe["rung"] == 1)
    single = drive(menas(tickets="top")).history()
    assert single == drive(menas()).history() and all(s.use_tickets for s, _ in single)
    assert all(s.recipe["finetune_epochs"] == 1 for s, _ in single)
    with pytest.raises(UserError, match=r"fidelity.tickets: got 'last', allowed: first, top"):
        FidelityConfig(rungs=[1, 3], tickets="last")
    cfg = SearchConfig(fidelity=FidelityConfig(rungs=[1, 3], tickets="top"))
    assert make_strategy(cfg).recipe.fidelity.tickets_at_top


def test_a_search_with_tickets_at_the_top_rung_prunes_only_its_promotions(tmp_path: Path) -> None:
    """A real search under `tickets: top`: children keep their candidates and are not fine-tuned; each promotion
    continues its parent's network, searches its ticket (the lottery ran) and fine-tunes what it keeps."""
    cfg = staged_config(fidelity=FidelityConfig(rungs=[1, 3], eta=2, repeats=0, tickets="top"))
    cfg = dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, generations=1))
    run_dir = tmp_path / "run"
    Search(cfg, run_dir).run()
    with Store.open(run_dir, readonly=True) as store:
        trials = store.trials()
        children = [t for t in trials if t.role != ROLE_PROMOTE]
        promotions = [t for t in trials if t.role == ROLE_PROMOTE]
        assert children and len(promotions) == 2
        for t in children:
            assert (t.ticket, t.lottery_s, t.finetune_epochs) == (None, 0.0, 0)
        for t in promotions:
            parent = store.trial(t.parent_ids[0])
            assert t.genome == parent.genome == parent.final_genome and t.lottery_s > 0
            assert t.finetune_epochs == cfg.finetune_epochs and t.epochs == 2 + cfg.finetune_epochs
            assert (run_dir / t.weights).parent.joinpath("lottery.json").is_file()
        assert store.best().role == ROLE_PROMOTE
    from menas.cli.main import main

    assert main(["report", str(run_dir)]) == 0  # the lottery panels read the promotions' lottery.json
    assert (run_dir / "report" / "lottery.png").is_file()
