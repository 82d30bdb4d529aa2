"""Individual weight sharing in a search (issue 12): bred children start from their parents' weights, train fewer
epochs, fall back to scratch on an unusable parent file, and resume and run in a pool exactly as uninterrupted."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest

from menas.config import ExecutorConfig, InheritConfig, SearchConfig, StrategyConfig, TrainConfig, from_dict
from menas.errors import UserError
from menas.prune import pipeline as pipeline_module
from menas.search import trial as trial_module
from menas.search.engine import Search, load_run_config
from menas.search.store import Store
from test_search import Crash, results, tiny_config

FULL_EPOCHS = 2  # training epochs of a trial from scratch; an inheriting child trains INHERIT_EPOCHS
INHERIT_EPOCHS = 1


def inherit_config(name: str = "menas-inherit", **changes: object) -> SearchConfig:
    """`tiny_config` (3 candidates x 2 generations, 1 fine-tune epoch) training 2 epochs from scratch and 1 when
    inheriting."""
    cfg = tiny_config(**changes)
    return dataclasses.replace(
        cfg,
        strategy=dataclasses.replace(cfg.strategy, name=name),
        train=dataclasses.replace(cfg.train, epochs=FULL_EPOCHS),
        inherit=InheritConfig(epochs=INHERIT_EPOCHS),
    )


@pytest.fixture(scope="module")
def inherit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted in-process menas-inherit search, run once: what the other tests compare with."""
    run_dir = tmp_path_factory.mktemp("inherit") / "run"
    Search(inherit_config(), run_dir).run()
    return run_dir


# --------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"inherit": {"epochs": 3}}, r"inherit.epochs: got 3, allowed: null or 0..train.epochs \(2\)"),
        ({"inherit": {"epochs": -1}}, r"inherit.epochs: got -1, allowed: >= 0"),
        ({"inherit": {"shrink": 0.0}}, r"inherit.shrink: got 0.0, allowed: 0 < shrink <= 1"),
        ({"inherit": {"perturb": 1.5}}, r"inherit.perturb: got 1.5, allowed: 0 <= value <= 1"),
        ({"inherit": {"importance": "l2"}}, r"inherit.importance: got 'l2', allowed: l1, first"),
        ({"inherit": {"enabled": True}, "strategy": {"name": "random"}}, r"inherit.enabled: got True with strategy"),
        ({"inherit": {"bogus": 1}}, r"inherit: unknown key 'bogus'"),
    ],
)
def test_inherit_config_is_checked_at_the_edge(mapping: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        from_dict(SearchConfig, {"train": {"epochs": 2}, **mapping})


def test_inheritance_is_on_with_menas_inherit_or_enabled() -> None:
    assert not SearchConfig().inherits and SearchConfig().inherit == InheritConfig()
    assert SearchConfig(strategy=StrategyConfig(name="menas-inherit")).inherits
    assert SearchConfig(inherit=InheritConfig(enabled=True)).inherits
    cfg = from_dict(SearchConfig, {"train": {"epochs": 2}, "inherit": {"epochs": 0, "shrink": 0.5, "perturb": 0.1}})
    assert cfg.inherit == InheritConfig(epochs=0, shrink=0.5, perturb=0.1) and cfg.train == TrainConfig(epochs=2)


# --------------------------------------------------------------------------------------------- search


def test_bred_children_inherit_and_train_fewer_epochs(inherit_run: Path) -> None:
    with Store.open(inherit_run, readonly=True) as store:
        trials = store.history()
        assert store.events("inherit_fallback") == []
    assert [t.status for t in trials] == ["done"] * 6
    first, bred = trials[:3], trials[3:]
    assert all(t.origin is None and t.inherited is None for t in first)
    assert all(t.epochs == FULL_EPOCHS + 1 for t in first)  # training + 1 fine-tune epoch
    bred_roles = [t for t in bred if t.role in ("crossover", "mutation")]
    assert bred_roles, "generation 1 bred no child"
    for t in bred_roles:
        record = t.inherited
        assert t.origin is not None and t.origin["parents"] == len(t.parents)
        assert record["fallback"] is None and record["epochs"] == INHERIT_EPOCHS
        assert record["epochs_saved"] == FULL_EPOCHS - INHERIT_EPOCHS
        counts = record["counts"]
        assert counts["copied"] + counts["sliced"] + counts["padded"] > 0
        assert t.epochs == INHERIT_EPOCHS + 1 and len(t.train_epoch_s) == INHERIT_EPOCHS
        assert t.calib_images >= record["calib_images"] > 0  # the inheritance's BN recalibration counts


def test_a_job_gets_the_weights_of_the_trials_whose_final_genomes_are_its_parents(
    inherit_run: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(inherit_run, run_dir)
    with Store.open(run_dir, readonly=True) as store:
        trials = store.history()
    finals = {t.final_genome: t.trial_id for t in trials}
    search = Search(None, run_dir, resume=True)  # a finished run (a copy): only to build jobs
    try:
        for t in trials[3:]:
            job = search.job(next(s for s in search.strategy.history() if s[0].trial_id == t.trial_id)[0])
            if t.role not in ("crossover", "mutation"):
                assert job.inherit is None and job.parent_weights == ()
                continue
            assert job.inherit == InheritConfig(enabled=True, epochs=INHERIT_EPOCHS) and job.origin == t.origin
            assert job.parent_genomes == t.parents and t.parent_ids == tuple(finals[p] for p in t.parents)
            expected = tuple(str(run_dir / "trials" / f"{finals[p]:05d}" / "model.safetensors") for p in t.parents)
            assert job.parent_weights == expected and all(Path(p).is_file() for p in expected)
    finally:
        search.close()


def test_menas_with_inherit_enabled_runs_as_menas_inherit(inherit_run: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(inherit_config("menas"), inherit=InheritConfig(enabled=True, epochs=INHERIT_EPOCHS))
    Search(cfg, tmp_path / "run").run()
    assert results(tmp_path / "run") == results(inherit_run)


def test_an_unusable_parent_file_falls_back_to_scratch_with_an_event(tmp_path: Path) -> None:
    """After generation 0, one parent file is deleted and the others corrupted: every bred child is done, trained
    from scratch for the full epochs (as `menas` trains it, score for score), and an event names why."""

    def spoil(spec, result) -> None:
        if spec.trial_id == 2:  # the last of generation 0: before generation 1 is bred
            for k, folder in enumerate(sorted((tmp_path / "run" / "trials").iterdir())):
                weights = folder / "model.safetensors"
                weights.unlink() if k == 0 else weights.write_bytes(b"not safetensors")

    Search(inherit_config(), tmp_path / "run").run(on_result=spoil)
    Search(inherit_config("menas"), tmp_path / "scratch").run()
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials, events = store.history(), store.events("inherit_fallback")
    bred = [t for t in trials if t.role in ("crossover", "mutation")]
    assert bred and all(t.status == "done" for t in trials)
    assert sorted(e.payload["trial_id"] for e in events) == [t.trial_id for t in bred]
    for t, event in zip(bred, events, strict=True):
        assert t.inherited["fallback"] == event.payload["reason"]
        assert re.search(r"no done trial with a weights file|parent weights '.*safetensors'", event.payload["reason"])
        assert t.inherited["epochs"] == FULL_EPOCHS and t.inherited["epochs_saved"] == 0
        assert t.epochs == FULL_EPOCHS + 1
    assert results(tmp_path / "run") == results(tmp_path / "scratch")  # a fallback trains exactly as from scratch


def test_an_interrupted_inheriting_search_resumes_to_the_same_rows(
    inherit_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash inside the training of generation 1's first child (after its epoch checkpoint), resume: the child is
    not inherited again (its train.ckpt restores the weights), and the rows equal the uninterrupted search's."""
    run_dir = tmp_path / "run"
    real_train, real_inherit = pipeline_module.train, trial_module.inherit_from_files
    inherited: list[int] = []

    def train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, **kw):
        history = real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path, **kw)
        if Path(checkpoint_path).parent.name == "00003" and not os.environ.get("RESUMED"):
            raise Crash
        return history

    def inherit_from_files(child, origin, paths, *args, **kw):
        inherited.append(int(Path(paths[0]).parent.name))
        return real_inherit(child, origin, paths, *args, **kw)

    monkeypatch.setattr(pipeline_module, "train", train)
    monkeypatch.setattr(trial_module, "inherit_from_files", inherit_from_files)
    with pytest.raises(Crash):
        Search(inherit_config(), run_dir).run()
    with Store.open(run_dir, readonly=True) as store:
        assert [t.status for t in store.history()][:4] == ["done"] * 3 + ["running"]
    assert (run_dir / "trials" / "00003" / "train.ckpt").is_file()
    calls = len(inherited)
    monkeypatch.setenv("RESUMED", "1")
    Search(load_run_config(run_dir), run_dir, resume=True).run()
    assert len(inherited) == calls + 2  # trials 4 and 5 inherit; trial 3 resumes from its checkpoint
    assert results(run_dir) == results(inherit_run)
    with Store.open(run_dir, readonly=True) as store, Store.open(inherit_run, readonly=True) as reference:
        strip = [{k: v for k, v in (t.inherited or {}).items() if k != "seconds"} for t in store.history()]
        assert strip == [{k: v for k, v in (t.inherited or {}).items() if k != "seconds"} for t in reference.history()]


@pytest.mark.slow  # ~7 s: a pool of 2 processes
def test_pool_inheriting_search_equals_the_in_process_one(inherit_run: Path, tmp_path: Path) -> None:
    """Two workers: a child starts only after every trial of the generation before it finished (its parents'
    weights were on disk), inherits, and the rows equal the in-process search's."""
    cfg = inherit_config(executor=ExecutorConfig(kind="pool", workers=2, threads=1))
    Search(cfg, tmp_path / "run").run()
    assert results(tmp_path / "run") == results(inherit_run)
    with Store.open(tmp_path / "run", readonly=True) as store:
        trials = store.history()
    parents_done = max(t.finished_at for t in trials if t.generation == 0)
    assert all(t.started_at >= parents_done for t in trials if t.generation == 1)
    assert all(t.inherited["fallback"] is None for t in trials if t.role in ("crossover", "mutation"))


@pytest.mark.slow
def test_pool_interrupted_in_generation_1_then_resumed_equals_the_uninterrupted_search(
    inherit_run: Path, tmp_path: Path
) -> None:
    """Ctrl-C when generation 1's first child finished, with another one mid-trial in the pool: resume re-runs it
    (inheriting again from the parents' files), and the rows equal the in-process search's."""
    cfg = inherit_config(executor=ExecutorConfig(kind="pool", workers=2, threads=1))

    def interrupt(spec, result) -> None:
        if spec.generation == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Search(cfg, tmp_path / "run").run(on_result=interrupt)
    with Store.open(tmp_path / "run", readonly=True) as store:
        statuses = [t.status for t in store.history()]
    assert statuses[:3] == ["done"] * 3 and statuses.count("done") == 4 and "running" in statuses
    Search(cfg, tmp_path / "run", resume=True).run()
    assert results(tmp_path / "run") == results(inherit_run)


# --------------------------------------------------------------------------------------------- one trial


def test_an_identical_child_with_zero_epochs_is_its_parent_recalibrated(inherit_run: Path, tmp_path: Path) -> None:
    """A trial whose genome and origin are its parent's, inheriting with `inherit.epochs: 0`: it trains no epoch,
    and its network and score are the parent's after BN recalibration on the same training batches."""
    import torch

    from menas.prune.recalibrate import calibration_batches, recalibrate_bn
    from menas.search.trial import TrialJob, load_data, run_trial
    from menas.space.genome import Genome
    from menas.space.operators import identity_origin
    from menas.train.checkpoint import load_weights
    from menas.train.loop import evaluate

    cfg = inherit_config()
    with Store.open(inherit_run, readonly=True) as store:
        parent = store.trial(0)
    final = parent.ticket or parent.genome
    weights = str(inherit_run / "trials" / "00000" / "model.safetensors")
    job = TrialJob(trial_id=9, genome=final, data=cfg.data, train=dataclasses.replace(cfg.train, seed=12),
                   lottery=None, finetune_epochs=0, workdir=str(tmp_path / "child"), seed=12, device="cpu",
                   inherit=InheritConfig(epochs=0), origin=identity_origin(Genome.from_str(final)).to_dict(),
                   parent_genomes=(final,), parent_weights=(weights,), inherit_calib_batches=3)  # fmt: skip
    result = run_trial(job)
    data = load_data(cfg.data, torch.device("cpu"))
    model = load_weights(weights, data.num_classes, data.in_chans)
    recalibrate_bn(model, calibration_batches(data.train, 3, epoch=0))
    assert result.status == "done" and result.epochs == 0 and result.train_epoch_s == ()
    assert result.trained_score == evaluate(model, data.val, channels_last=cfg.train.channels_last)["top1"]
    counts = result.inherited["counts"]
    assert counts["copied"] > 0 and counts["sliced"] == counts["padded"] == counts["fresh"] == 0
    assert result.inherited["epochs"] == 0 and result.inherited["epochs_saved"] == FULL_EPOCHS
    child = load_weights(result.weights, data.num_classes, data.in_chans).state_dict()
    assert all(torch.equal(child[k], v) for k, v in model.state_dict().items())
    assert result.calib_images == 3 * data.train.batch_size
