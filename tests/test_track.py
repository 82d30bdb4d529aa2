"""Experiment trackers (`track: tensorboard | mlflow`) against the real libraries: a tiny search in which trial 1
fails and the process dies inside trial 2, a half-written log of trial 2 left behind, then a resume; what each
tracker holds is read back with the library's own reader and compared with the store: one entry per finished
trial with the store's values, nothing logged twice, the best trial and the Pareto front at the end. A tracker whose
extra is missing, or an unknown tracker name, is one line before anything is written."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from menas.cli.main import main
from menas.config import SearchConfig, StrategyConfig, apply_override, to_dict
from menas.errors import TrialFailed, UserError
from menas.folders import RunFolder
from menas.prune import pipeline as pipeline_module
from menas.search.engine import Search, load_run_config
from menas.search.record import TrialRecord
from menas.search.store import Store
from menas.track import base
from menas.track.hook import run_key
from test_search import tiny_config

TRIALS = 3  # trial 0 done, trial 1 failed, trial 2 killed once and done after the resume


class Crash(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


def _config(track: str) -> SearchConfig:
    return tiny_config(strategy=StrategyConfig(population=TRIALS, generations=1, parents=2), track=track)


def _crash_then_resume(run_dir: Path, track: str, half_log: Any) -> None:
    """Runs the search until the process "dies" inside trial 2 (trial 1 failing on the way), calls `half_log(run_dir)`
    to leave a half-written log of trial 2 as a crash while logging would, then resumes the run."""
    real_train = pipeline_module.train
    state = {"resumed": False}

    def train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, **kw):
        trial = Path(checkpoint_path).parent.name
        if trial == "00001":
            raise TrialFailed("loss became NaN at epoch 1 step 3")
        if trial == "00002" and not state["resumed"]:
            raise Crash
        return real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_module, "train", train)
        with pytest.raises(Crash):
            Search(_config(track), run_dir).run()
        half_log(run_dir)
        state["resumed"] = True
        Search(load_run_config(run_dir), run_dir, resume=True).run()


def _store(run_dir: Path) -> tuple[list[TrialRecord], TrialRecord, list[TrialRecord], str, str]:
    """(finished trials, best, front, run key, run status) of a run."""
    with Store.open(run_dir, readonly=True) as store:
        return store.finished(), store.best(), store.front(), run_key(store), store.run_info().status


def _check_values(record: TrialRecord, metrics: dict[str, float], params: dict[str, Any]) -> None:
    """A trial's logged metrics and params are the store's (TensorBoard keeps float32, hence the tolerance)."""
    assert params["genome"] == record.genome and params["status"] == record.status
    assert float(params["config.train.epochs"]) == 1 and params["config.track"] in ("tensorboard", "mlflow")
    if record.status == "failed":
        assert "score/final_score" not in metrics
        return
    expected = {
        "score/final_score": record.final_score,
        "score/trained_score": record.trained_score,
        "cost/final_macs": record.final_macs,
        "cost/params": record.params,
        "time/train_s": record.train_s,
        "images/train_images": record.train_images,
    }
    assert metrics.keys() >= expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key


# --------------------------------------------------------------------------------------------- TensorBoard


def _half_written_tensorboard_trial(run_dir: Path) -> None:
    """A folder for trial 2 with a stray event file and no completion mark, as a crash mid-write leaves it."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(RunFolder(run_dir).tensorboard / base.trial_name(2)))
    writer.close()


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("tensorboard") / "run"
    _crash_then_resume(run_dir, "tensorboard", _half_written_tensorboard_trial)
    return run_dir


def _events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _hparams(events: Any) -> dict[str, Any]:
    """The HParams session of a trial's run: param -> value."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in session.hparams.items()}


def _text(events: Any, tag: str) -> str:
    return events.Tensors(tag)[-1].tensor_proto.string_val[0].decode()


def _unfence(markdown: str) -> str:
    """The text inside a fenced code block ("```json\n...\n```")."""
    first, *body, last = markdown.splitlines()
    assert first.startswith("```") and last == "```"
    return "\n".join(body)


def test_tensorboard_holds_each_finished_trial_once_with_the_stores_values(tensorboard_run: Path) -> None:
    finished, *_ = _store(tensorboard_run)
    logdir = RunFolder(tensorboard_run).tensorboard
    assert [t.status for t in finished] == ["done", "failed", "done"]
    assert sorted(p.name for p in logdir.glob("trial-*")) == [base.trial_name(t.trial_id) for t in finished]
    for record in finished:
        folder = logdir / base.trial_name(record.trial_id)
        assert len(list(folder.glob("events.out.tfevents.*"))) == 1, "logged twice, or the stray file kept"
        events = _events(folder)
        metrics = {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}
        _check_values(record, metrics, _hparams(events))
        if record.status == "failed":
            assert _text(events, "trial/error") == record.error
            continue
        losses = [(e.step, e.value) for e in events.Scalars("epoch/train_losses")]
        assert losses == [(k, pytest.approx(v, rel=1e-6)) for k, v in enumerate(record.train_losses, 1)]
        lottery = RunFolder(tensorboard_run).trial(record.trial_id).lottery
        assert json.loads(_unfence(_text(events, "trial/lottery.json"))) == json.loads(lottery.read_text())


def test_tensorboard_search_curves_run_once_over_the_trials_and_end_with_best_and_front(
    tensorboard_run: Path,
) -> None:
    _, best, front, *_ = _store(tensorboard_run)
    search = _events(RunFolder(tensorboard_run).tensorboard / "search")
    best_so_far = search.Scalars("search/best_score")
    assert [e.step for e in best_so_far] == list(range(1, TRIALS + 1))  # no trial twice, none left out
    assert best_so_far[-1].value == pytest.approx(best.final_score, rel=1e-6)
    assert f'"final_genome": "{best.final_genome}"' in _text(search, "search/best")
    table = _text(search, "search/front")
    assert all(t.final_genome.replace("|", "\\|") in table for t in front)
    assert search.Scalars("search/front_size")[-1].value == len(front)
    assert "train:\n  amp: auto" in _text(search, "search/config")


def test_a_tensorboard_folder_of_another_run_is_refused(tmp_path: Path) -> None:
    from menas.track.tensorboard import TensorBoardTracker

    first = TensorBoardTracker(tmp_path / "tb")
    assert first.open("run-a", "a", {}) == set()
    first.close()
    again = TensorBoardTracker(tmp_path / "tb")
    assert again.open("run-a", "a", {}) == set()  # the same run, resumed
    again.close()
    with pytest.raises(UserError, match="holds other files than this run's TensorBoard logs"):
        TensorBoardTracker(tmp_path / "tb").open("run-b", "b", {})


def test_a_tracker_that_cannot_open_fails_the_search_before_any_trial(tmp_path: Path) -> None:
    """A `track_uri` folder with other files: one line naming it, the run marked failed with no trial run, so that
    `menas resume` continues it once fixed."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("not a run's logs")
    cfg = dataclasses.replace(_config("tensorboard"), track_uri=str(taken))
    with pytest.raises(UserError, match="track_uri: .*taken.* holds other files"):
        Search(cfg, tmp_path / "run").run()
    with Store.open(tmp_path / "run", readonly=True) as store:
        assert store.run_info().status == "failed" and store.history() == []


def test_a_tracker_error_is_recorded_shown_by_status_and_caught_up_by_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tracker that fails to log trial 1 once: the search goes on and ends, the warning is in the store
    (`track_not_logged`) and `menas status` names the trial; the resume logs it and status says nothing more."""
    from menas.track.tensorboard import TensorBoardTracker

    real_log = TensorBoardTracker.log_trial
    run_dir = tmp_path / "run"

    def log_trial(self, log):
        if log.trial_id == 1 and not state["resumed"]:
            raise OSError("disk full\nsecond line")
        return real_log(self, log)

    state = {"resumed": False}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TensorBoardTracker, "log_trial", log_trial)
        Search(_config("tensorboard"), run_dir).run()
        with Store.open(run_dir, readonly=True) as store:
            assert store.run_info().status == "finished" and len(store.finished()) == TRIALS
            (event,) = store.events("track_not_logged")
            assert event.payload == {"tracker": "tensorboard", "trial_id": 1, "error": "OSError: disk full"}
        capsys.readouterr()
        assert main(["status", str(run_dir)]) == 0
        out = capsys.readouterr().out
        assert "tracker tensorboard: 1 trial(s) (1) not logged (latest: OSError: disk full)" in out
        assert f"menas resume {run_dir}` logs what it lacks" in " ".join(out.split())

        state["resumed"] = True
        Search(load_run_config(run_dir), run_dir, resume=True).run()
    with Store.open(run_dir, readonly=True) as store:
        kinds = [e.kind for e in store.events() if e.kind.startswith("track_")]
        assert kinds == ["track_not_logged", "track_caught_up"]
    assert (RunFolder(run_dir).tensorboard / base.trial_name(1)).is_dir()  # the trial's log is there now
    assert main(["status", str(run_dir)]) == 0
    assert "not logged" not in capsys.readouterr().out


# --------------------------------------------------------------------------------------------- MLflow


def _client(run_dir: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{RunFolder(run_dir).mlflow_db.resolve()}")


def _half_written_mlflow_trial(run_dir: Path) -> None:
    """A nested run for trial 2 left running with a wrong metric, as a crash while logging it leaves it."""
    client = _client(run_dir)
    experiment = client.get_experiment_by_name("run").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`menas.role` = 'search'")
    assert parent.info.status == "KILLED"  # the "killed" process ended its log as interrupted
    tags = {"mlflow.parentRunId": parent.info.run_id, "menas.trial_id": "2"}
    stray = client.create_run(experiment, tags=tags, run_name=base.trial_name(2)).info.run_id
    client.log_metric(stray, "score/final_score", -1.0)


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("mlflow") / "run"
    _crash_then_resume(run_dir, "mlflow", _half_written_mlflow_trial)
    return run_dir


def _mlflow_runs(run_dir: Path) -> tuple[Any, Any, list[Any]]:
    """(client, the search's parent run, its nested trial runs by trial id)."""
    client = _client(run_dir)
    experiment = client.get_experiment_by_name("run").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("menas.role") == "search"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, sorted(trials, key=lambda r: int(r.data.tags["menas.trial_id"]))


def test_mlflow_holds_each_finished_trial_once_with_the_stores_values(mlflow_run: Path, tmp_path: Path) -> None:
    finished, _, _, key, _ = _store(mlflow_run)
    client, parent, trials = _mlflow_runs(mlflow_run)
    assert parent.data.tags["menas.run"] == key and parent.info.status == "FINISHED"
    assert [int(r.data.tags["menas.trial_id"]) for r in trials] == [t.trial_id for t in finished]  # once each
    for record, run in zip(finished, trials, strict=True):
        assert run.info.run_name == base.trial_name(record.trial_id)
        assert run.info.status == ("FINISHED" if record.status == "done" else "FAILED")
        assert run.info.start_time == round(record.started_at * 1000)
        _check_values(record, run.data.metrics, run.data.params)
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        if record.status == "failed":
            assert run.data.tags["menas.error"] == record.error and artifacts == []
            continue
        history = client.get_metric_history(run.info.run_id, "epoch/train_losses")
        assert [(m.step, m.value) for m in history] == list(enumerate(record.train_losses, 1))
        assert artifacts == ["lottery.json"]
        logged = json.loads(Path(client.download_artifacts(run.info.run_id, "lottery.json", str(tmp_path))).read_text())
        assert logged == json.loads(RunFolder(mlflow_run).trial(record.trial_id).lottery.read_text())


def test_mlflow_search_run_ends_with_best_and_front(mlflow_run: Path, tmp_path: Path) -> None:
    _, best, front, *_ = _store(mlflow_run)
    client, parent, trials = _mlflow_runs(mlflow_run)
    history = client.get_metric_history(parent.info.run_id, "search/best_score")
    assert [m.step for m in history] == list(range(1, TRIALS + 1))
    assert parent.data.params["config.strategy.population"] == str(TRIALS)
    assert parent.data.tags["menas.best_trial"] == str(best.trial_id)
    assert parent.data.tags["menas.best_genome"] == best.final_genome
    run_of = {int(r.data.tags["menas.trial_id"]): r.info.run_id for r in trials}
    assert parent.data.tags["menas.best_run_id"] == run_of[best.trial_id]
    assert parent.data.metrics["best/final_score"] == pytest.approx(best.final_score)
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "front.json", str(tmp_path))).read_text())
    assert logged["status"] == "finished"
    assert [(m["trial_id"], m["run_id"]) for m in logged["front"]] == [(t.trial_id, run_of[t.trial_id]) for t in front]


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("track", ["tensorboard", "mlflow"])
def test_a_missing_extra_is_one_line_before_anything_is_written(
    track: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, track, None)  # as if the extra were not installed
    with pytest.raises(UserError, match=rf"pip install 'menas\[{track}\]'"):
        Search(_config(track), tmp_path / "api")
    assert not (tmp_path / "api").exists()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(to_dict(_config("none"))))
    code = main(["search", "--config", str(config), "--set", f"track={track}", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"menas[{track}]" in err
    assert not (tmp_path / "cli").exists()


def test_an_unknown_tracker_names_the_allowed_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="config.track: got 'wandb', allowed: 'none', 'tensorboard', 'mlflow'"):
        apply_override(SearchConfig(), "track=wandb", "config")
    with pytest.raises(UserError, match="track: got 'wandb', allowed: none, tensorboard, mlflow"):
        SearchConfig(track="wandb")
    assert main(["search", "--set", "track=wandb", "--out", str(tmp_path / "run")]) == 2
    assert "allowed: 'none', 'tensorboard', 'mlflow'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- the mapping


def test_metrics_are_grouped_by_what_they_measure() -> None:
    record = TrialRecord(
        trial_id=7,
        genome="g",
        status="done",
        trained_score=50.0,
        macs=1000,
        params=10,
        train_s=2.5,
        train_images=64,
        epochs=2,
        train_losses=(2.0, 1.5),
        inherited={"copied": 3, "fallback": None},
        recipe={"epochs": 2, "inherit": False},
    )
    metrics = base.trial_metrics(record)
    assert metrics["score/trained_score"] == metrics["score/final_score"] == 50.0
    assert (metrics["cost/macs"], metrics["cost/final_params"], metrics["time/train_s"]) == (1000, 10, 2.5)
    assert (metrics["images/train_images"], metrics["trial/epochs"], metrics["trial/inherited.copied"]) == (64, 2, 3)
    assert base.trial_series(record) == {"epoch/train_losses": (2.0, 1.5)}
    params = base.trial_params(record)
    assert params["recipe.epochs"] == 2 and params["final_genome"] == "g" and "origin" not in params
    assert [base.param_text(v) for v in (None, True, [1, 2], "x")] == ["null", "true", "[1, 2]", "x"]
