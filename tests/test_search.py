"""The search loop end to end on tiny synthetic data: results, store, resume after crashes, failures, configs."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from menas.cli.main import main
from menas.config import (
    BudgetConfig,
    DataConfig,
    LotteryConfig,
    SearchConfig,
    StrategyConfig,
    TrainConfig,
    to_dict,
)
from menas.errors import TrialFailed
from menas.prune import pipeline as pipeline_module
from menas.search import engine as search_module
from menas.search.engine import Search, SearchStopped, load_run_config
from menas.search.store import Store


def tiny_config(**changes: object) -> SearchConfig:
    """A search that finishes in seconds: 16 px synthetic data (500 train / 500 val images), 3 candidates x 2
    generations, 1 epoch each. Scores stay near chance, but the tickets' genomes depend on the trained weights
    (L1 importance), so comparing results still compares what was trained."""
    cfg = SearchConfig(
        seed=3,
        budget=BudgetConfig(macs_max="2M", params_max="800K"),
        strategy=StrategyConfig(population=3, generations=2, parents=2),
        data=DataConfig(
            dataset="synthetic", input_size=16, search_train_fraction=0.1, search_val_fraction=0.1, batch_size=64
        ),
        train=TrainConfig(epochs=1, threads=1, optimizer="sgd", schedule="cosine", lr=0.05, warmup_epochs=0.0),
        lottery=LotteryConfig(proposals=3, score_images=64, rescore_top=2, tolerance=50.0),
        finetune_epochs=1,
    )
    return dataclasses.replace(cfg, **changes)


def results(run_dir: Path) -> list[tuple]:
    with Store.open(run_dir, readonly=True) as store:
        return [(t.trial_id, t.genome, t.status, t.trained_score, t.ticket, t.ticket_finetuned_score)
                for t in store.history()]  # fmt: skip


def test_search_runs_end_to_end(reference_run: Path) -> None:
    rows = results(reference_run)
    assert len(rows) == 6 and all(r[2] == "done" for r in rows)
    assert any(r[4] is not None for r in rows), "no lottery ticket was kept (tolerance is 50 points)"
    assert load_run_config(reference_run) == tiny_config()
    with Store.open(reference_run, readonly=True) as store:
        best = store.best()
        assert best.final_score == max(t.final_score for t in store.finished())
        assert {g.generation for g in store.generation_summary()} == {0, 1}
    assert (reference_run / "trials" / "00000" / "model.safetensors").is_file()


def test_summary_accounts_time(reference_run: Path, tmp_path: Path) -> None:
    """`summarize` is what the store's finished records add up to: trials done and failed, epochs, images trained
    on, training + fine-tuning seconds, ticket-search seconds, the compute used and the best trial's final network;
    over the run's wall time the rest is overhead. A failed trial's cost counts, but it is not done nor best."""
    import shutil

    from menas.search.store import store_path
    from menas.search.strategies import TrialSpec

    cfg = tiny_config()
    with Store.open(reference_run, readonly=True) as store:
        trials, best, used = store.finished(), store.best(), store.compute_used()
        wall_s = max(t.finished_at for t in trials) - min(t.started_at for t in trials)  # one trial at a time
        summary = search_module.summarize(store, wall_s=wall_s)
        pooled = search_module.summarize(store, wall_s=summary.train_s)  # trials side by side: no overhead left
    assert len(trials) == 6 and all(t.ok for t in trials)
    assert (summary.trials_done, summary.trials_failed) == (6, 0)
    assert summary.epochs == sum(t.epochs for t in trials) == 6 * (cfg.train.epochs + cfg.finetune_epochs)
    assert summary.images == sum(t.train_images for t in trials) == sum(t.epochs * t.images_per_epoch for t in trials)
    assert summary.images < sum(t.raw_images for t in trials)  # calibration and scoring images are not trained on
    assert summary.train_s == pytest.approx(sum(t.train_s + t.finetune_s for t in trials))
    assert summary.lottery_s == pytest.approx(sum(t.lottery_s for t in trials))
    assert min(t.finetune_s for t in trials) > 0 and min(t.lottery_s for t in trials) > 0  # each sum has to count
    assert (summary.compute_images, summary.budget_used) == (used.images, False)  # no compute budget set
    assert (summary.best_genome, summary.best_score, summary.best_macs, summary.best_params) == (
        best.final_genome, best.final_score, best.final_macs, best.final_params)  # fmt: skip
    assert summary.best_score == max(t.final_score for t in trials)
    # every phase ran inside its trial's lifetime, so the phases fit into the wall time and the rest is overhead
    for t in trials:
        assert t.train_s + t.lottery_s + t.finetune_s <= t.finished_at - t.started_at
    assert summary.wall_s == wall_s
    assert summary.overhead_s == pytest.approx(wall_s - summary.train_s - summary.lottery_s)
    assert 0 < summary.overhead_s < wall_s
    assert pooled.overhead_s == 0

    copy = tmp_path / "run"
    copy.mkdir()
    for path in reference_run.glob(store_path(reference_run).name + "*"):  # the store (and its WAL files, if any)
        shutil.copy2(path, copy / path.name)
    with Store.open(copy) as store:
        store.add_trials([TrialSpec(6, trials[0].genome, 2, "sample", (), True)])
        store.mark_running(6)
        store.fail_trial(6, "boom", epochs=1, train_images=70, train_s=1.5, lottery_s=0.25, finetune_s=0.5,
                         trained_score=99.0)  # fmt: skip
        failed = search_module.summarize(store, wall_s=wall_s)
    assert (failed.trials_done, failed.trials_failed) == (6, 1)
    assert (failed.epochs, failed.images) == (summary.epochs + 1, summary.images + 70)
    assert failed.train_s == pytest.approx(summary.train_s + 2.0)
    assert failed.lottery_s == pytest.approx(summary.lottery_s + 0.25)
    assert (failed.best_genome, failed.best_score) == (summary.best_genome, summary.best_score)


class Crash(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("phase", ["train", "lottery", "finetune"])
def test_resume_after_crash_retrains_nothing_finished(phase: str, reference_run: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Crash inside trial 4 (of 6) at the given phase, resume, and get the uninterrupted run's results; the
    four finished trials are never trained again and the crashed one continues from its checkpoint."""
    run_dir = tmp_path / "run"
    real_train, real_ticket = pipeline_module.train, pipeline_module.search_ticket
    calls: list[str] = []

    def train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, **kw):
        trial = Path(checkpoint_path).parent.name
        kind = "finetune" if Path(checkpoint_path).name.startswith("finetune") else "train"
        calls.append(f"{trial}:{kind}")
        history = real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path, **kw)
        if trial == "00004" and kind == phase and not os.environ.get("RESUMED"):
            raise Crash
        return history

    monkeypatch.setattr(pipeline_module, "train", train)
    if phase == "lottery":
        counter = {"n": 0}

        def crashing_ticket(*args, **kw):
            counter["n"] += 1
            if counter["n"] == 5 and not os.environ.get("RESUMED"):  # the 5th ticket search is trial 4's
                raise Crash
            return real_ticket(*args, **kw)

        monkeypatch.setattr(pipeline_module, "search_ticket", crashing_ticket)
    with pytest.raises(Crash):
        Search(tiny_config(), run_dir).run()
    with Store.open(run_dir, readonly=True) as store:
        assert [t.status for t in store.history()][:5] == ["done"] * 4 + ["running"]
    calls.clear()
    monkeypatch.setenv("RESUMED", "1")
    Search(load_run_config(run_dir), run_dir, resume=True).run()
    assert not any(c.startswith(("00000", "00001", "00002", "00003")) for c in calls), calls
    assert results(run_dir) == results(reference_run)


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_matches(reference_run: Path, tmp_path: Path) -> None:
    """A real SIGKILL of `menas search` while a trial runs (two of six done), then `menas resume`: the kill is
    seen to land mid-run (the store says running, fewer than six done, a trial in flight) and the resumed run
    equals the uninterrupted one."""
    run_dir = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_config())))
    cmd = [sys.executable, "-m", "menas.cli"]
    proc = subprocess.Popen([*cmd, "search", "--config", str(config), "--out", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(1200):  # up to 60 s for the first two trials and the third to start
            if (run_dir / "menas.sqlite").exists() and _started_after_two_done(run_dir):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with Store.open(run_dir, readonly=True) as store:
        assert store.run_info().status == "running"
        done, running = len(store.finished()), [t.trial_id for t in store.trials(status="running")]
    assert 2 <= done < 6 and len(running) == 1, (done, running)
    assert (run_dir / "trials" / f"{running[0]:05d}").is_dir()  # the killed trial had started
    resumed = subprocess.run([*cmd, "resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert results(run_dir) == results(reference_run)


def _started_after_two_done(run_dir: Path) -> bool:
    """Whether the store shows two or more finished trials and one running whose folder exists."""
    with Store.open(run_dir, readonly=True) as store:
        done, running = len(store.finished()), store.trials(status="running")
    return done >= 2 and any((run_dir / "trials" / f"{t.trial_id:05d}").is_dir() for t in running)


def _fail_trial(monkeypatch: pytest.MonkeyPatch, trial: str, error: BaseException) -> None:
    """Makes training of one trial (by its folder name) raise `error`; every other trial trains for real."""
    real_train = pipeline_module.train

    def train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, **kw):
        if Path(checkpoint_path).parent.name == trial:
            raise error
        return real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path, **kw)

    monkeypatch.setattr(pipeline_module, "train", train)


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_trial(monkeypatch, "00001", TrialFailed("loss became NaN at epoch 1 step 3"))
    run_dir = tmp_path / "run"
    Search(tiny_config(), run_dir).run()
    with Store.open(run_dir, readonly=True) as store:
        failed = store.trials(status="failed")
        assert [t.trial_id for t in failed] == [1] and "NaN at epoch 1" in failed[0].error
        assert len(store.trials(status="done")) == 5


def test_an_exception_inside_a_trial_is_recorded_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_trial(monkeypatch, "00002", RuntimeError("out of shared memory"))
    run_dir = tmp_path / "run"
    Search(tiny_config(finetune_epochs=0), run_dir).run()
    with Store.open(run_dir, readonly=True) as store:
        (failed,) = store.trials(status="failed")
        assert failed.trial_id == 2 and failed.error == "RuntimeError: out of shared memory"
        assert len(store.trials(status="done")) == 5
        assert store.events("trial_exception")


def test_too_many_failures_stop_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def train(*args, **kw):
        raise TrialFailed("loss became NaN at epoch 1 step 1")

    monkeypatch.setattr(pipeline_module, "train", train)
    cfg = tiny_config(strategy=StrategyConfig(population=6, generations=1, parents=2), max_failure_share=0.5)
    with pytest.raises(SearchStopped, match=r"5 of 5 trials failed .*menas resume"):
        Search(cfg, tmp_path / "run").run()


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("strategy: {populaton: 4}", "unknown key 'populaton'"),
        ("train: {epochs: three}", "config.train.epochs: got 'three'"),
        ("budget: {macs_max: 1K}", "infeasible"),
        ("data: {dataset: fashion-mnist, root: /nonexistent}", "/nonexistent"),
        ("- just a list", "allowed: a mapping"),
        ("space: nope", "neither a preset"),
        ("budget: {macs_max: 12Q}", "unknown size suffix"),
    ],
)
def test_bad_configs_fail_before_training_with_one_line(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["search", "--config", _write(tmp_path, text), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "trials").exists()


def test_cli_search_status_and_existing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, yaml.safe_dump(to_dict(tiny_config(strategy=StrategyConfig(population=2,
                                                                                         generations=1)))))  # fmt: skip
    run = str(tmp_path / "run")
    assert main(["search", "--config", config, "--set", "finetune_epochs=0", "--out", run]) == 0
    out = capsys.readouterr().out
    assert "best:" in out and "overhead" in out
    flat = "".join(out.split())  # rich wraps long lines anywhere
    assert "search-valtop-1isaproxy:1trainingepochson10%ofthetrainingsplitat16px" in flat
    assert f"`menasretrain{run}--epochs5--outDIR`" in flat
    assert main(["status", run]) == 0
    assert "2 done, 0 failed" in capsys.readouterr().out
    assert main(["search", "--config", config, "--out", run]) == 2
    assert "menas resume" in capsys.readouterr().err


def test_every_trial_records_its_worker_and_evaluation_time(reference_run: Path) -> None:
    with Store.open(reference_run, readonly=True) as store:
        trials = store.finished()
    assert {t.worker for t in trials} == {f"{socket.gethostname()}:{os.getpid()}"}  # in-process: this process
    assert all(0 < t.eval_s < t.train_s for t in trials)


def test_done_trials_keep_their_weights_but_not_their_epoch_checkpoints(reference_run: Path) -> None:
    """Epoch checkpoints only resume an interrupted trial: once the store records a trial done they are deleted
    (they were most of the disk a search used); the weights and run.json stay for export, evaluate and retrain."""
    from menas.folders import EPOCH_CHECKPOINTS

    with Store.open(reference_run, readonly=True) as store:
        done = store.trials("done")
    assert done and any(t.replaced for t in done)  # the fine-tune checkpoint was written too
    for trial in done:
        folder = reference_run / "trials" / f"{trial.trial_id:05d}"
        assert (folder / "model.safetensors").is_file() and (folder / "run.json").is_file()
        assert not any((folder / name).exists() for name in EPOCH_CHECKPOINTS), folder
