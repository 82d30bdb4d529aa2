"""The MLflow tracker (`track: mlflow`), through `mlflow-skinny`'s `MlflowClient`: explicit run ids, none of the
fluent API's process-wide active run, which a library running inside a user's own MLflow run must not touch.

Layout: an experiment named after the run folder; in it one parent run for the search and one nested run per
trial (tag `mlflow.parentRunId`, run name `trial-00003`, tag `menas.trial_id`), so MLflow's UI shows the trials
under their search and compares them. A trial run holds the params, metrics and per-epoch series as
`menas.track.base` maps them, `lottery.json` as an artifact, the trial's start and end times and its status
(FINISHED, or FAILED with the reason in the tag `menas.error`). The parent run is found again by its tag
`menas.run` (the run's key), so a resume continues it and two runs of the same folder name stay apart; its params
are the config the search started with (each trial's params hold the config it ran under, which
`menas resume --accept-config-change` may change), its metrics the search's curves and, at the end, the best
network's (`best/final_score`, ...) and the front's size; its tags name the best trial and its run
(`menas.best_trial`, `menas.best_run_id`), its artifacts `best.json` and `front.json` hold the best network and
the Pareto front, and its status is the run's (FINISHED, FAILED, or KILLED for an interrupted run; a resume sets
it to RUNNING again).

A trial's run is terminated only once everything is logged, so a resume counts a terminated trial run as logged
and deletes an unterminated one (a crash mid-log) before logging that trial again.

Where: `track_uri` (any MLflow tracking URI, e.g. a server's `http://host:5000`), else `sqlite:///RUN/mlflow.db`
with the experiment's artifacts in `RUN/mlartifacts`. Not `file:RUN/mlruns`: MLflow 3 keeps its file store in
maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE` is set. A SQLite store needs SQLAlchemy and
Alembic besides `mlflow-skinny`; the `mlflow` extra installs all three.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from menas.track.base import SearchEnd, TrialLog, config_params, missing_extra, param_text

#: MLflow's limits per `log_batch` call (`mlflow.utils.validation`): params + tags, and metrics.
PARAMS_PER_BATCH, METRICS_PER_BATCH = 100, 1000
#: The run's status (`Store.run_info().status`) -> the parent run's.
RUN_STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
#: The tag value limit of MLflow (`MAX_TAG_VAL_LENGTH`): a longer error is cut.
TAG_CHARS = 8000


def require(uri: str) -> None:
    """Imports MLflow's client (and, for a SQLite store, SQLAlchemy and Alembic); one `UserError` naming the extra
    when one is missing."""
    try:
        import mlflow  # noqa: F401 (first: the package itself, even when its modules were imported before)
        from mlflow.tracking import MlflowClient  # noqa: F401

        if uri.startswith("sqlite:"):
            import alembic  # noqa: F401
            import sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise missing_extra("mlflow", exc) from None


class MlflowTracker:
    """An experiment with a parent run per search and a nested run per trial (a `menas.track.base.Tracker`)."""

    def __init__(self, uri: str, artifact_location: str | None = None) -> None:
        """`artifact_location`: the root of a new experiment's artifacts (None: the tracking server's default)."""
        require(uri)
        self.uri = self.where = uri
        self.artifact_location = artifact_location
        self._client: Any = None
        self._experiment = ""
        self._parent = ""
        self._trial_runs: dict[int, str] = {}  # trial id -> its run id, of the trials logged

    def open(self, run_key: str, run_name: str, config: dict[str, Any]) -> set[int]:
        """The experiment (created or restored), the search's parent run (found by `run_key`, or created with the
        config as params) set running, and the trials it holds; unterminated trial runs are deleted."""
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(self.uri)
        self._experiment = self._experiment_id(run_name)
        found = self._runs(f"tags.`menas.run` = '{run_key}'")
        if found:
            self._parent = found[0].info.run_id
            self._client.update_run(self._parent, status="RUNNING")
        else:
            tags = {"menas.run": run_key, "menas.role": "search"}
            self._parent = self._client.create_run(self._experiment, tags=tags, run_name=run_name).info.run_id
            self._log_params(self._parent, config_params(config))
        return self._logged_trials()

    def _experiment_id(self, name: str) -> str:
        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            return self._client.create_experiment(name, artifact_location=self.artifact_location)
        if experiment.lifecycle_stage == "deleted":
            self._client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _runs(self, filter_string: str) -> list[Any]:
        """Every active run of the experiment that `filter_string` selects, page by page."""
        runs, token = [], None
        for _ in range(10_000):  # bounded: pages of up to 1000 runs
            page = self._client.search_runs([self._experiment], filter_string, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    def _logged_trials(self) -> set[int]:
        """The trial ids of the parent's terminated trial runs; unterminated ones are deleted (logged again)."""
        self._trial_runs = {}
        for run in self._runs(f"tags.`mlflow.parentRunId` = '{self._parent}'"):
            trial = run.data.tags.get("menas.trial_id")
            if trial is not None and run.info.status in ("FINISHED", "FAILED"):
                self._trial_runs[int(trial)] = run.info.run_id
            else:
                self._client.delete_run(run.info.run_id)
        return set(self._trial_runs)

    def log_trial(self, trial: TrialLog) -> None:
        """The trial's nested run (params, metrics, series, lottery.json, times, status), then the parent's curves
        at the trial's step."""
        from mlflow.entities import Metric

        tags = {"mlflow.parentRunId": self._parent, "menas.trial_id": str(trial.trial_id)}
        if trial.error is not None:
            tags["menas.error"] = trial.error[:TAG_CHARS]
        start = _ms(trial.started_at or trial.finished_at or time.time())
        end = _ms(trial.finished_at or time.time())
        run_id = self._client.create_run(self._experiment, start_time=start, tags=tags, run_name=trial.name).info.run_id
        self._log_params(run_id, trial.params)
        metrics = [Metric(key, value, end, 0) for key, value in trial.metrics.items()]
        for key, values in trial.series.items():
            metrics += [Metric(key, value, end, epoch) for epoch, value in enumerate(values, 1)]
        self._log_metrics(run_id, metrics)
        for path in trial.files:
            self._client.log_artifact(run_id, str(path))
        self._client.set_terminated(run_id, "FINISHED" if trial.status == "done" else "FAILED", end_time=end)
        self._trial_runs[trial.trial_id] = run_id
        self._log_metrics(self._parent, [Metric(key, value, end, trial.step) for key, value in trial.search.items()])

    def log_end(self, end: SearchEnd) -> None:
        """The best network (metrics `best/...`, tags naming its trial and run, `best.json`) and the front (its
        size, `front.json`, each member with its run id), then the parent's status."""
        from mlflow.entities import Metric

        now = _ms(time.time())
        front = [{**member, "run_id": self._trial_runs.get(member["trial_id"])} for member in end.front]
        metrics = [Metric("search/front_size", float(len(front)), now, end.step)]
        if end.best is not None:
            best = {**end.best, "run_id": self._trial_runs.get(end.best["trial_id"])}
            numbers = {k: v for k, v in best.items() if k.startswith("final_") and isinstance(v, int | float)}
            metrics += [Metric(f"best/{key}", float(value), now, end.step) for key, value in numbers.items()]
            self._client.set_tag(self._parent, "menas.best_trial", str(best["trial_id"]))
            self._client.set_tag(self._parent, "menas.best_genome", best["final_genome"])
            if best["run_id"] is not None:
                self._client.set_tag(self._parent, "menas.best_run_id", best["run_id"])
            self._client.log_dict(self._parent, best, "best.json")
        self._log_metrics(self._parent, metrics)
        self._client.log_dict(self._parent, {"status": end.status, "front": front}, "front.json")
        self._client.set_terminated(self._parent, RUN_STATUS.get(end.status, "KILLED"))

    def close(self) -> None:
        self._client = None

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, param_text(value)) for key, value in params.items()]
        for chunk in _chunks(entries, PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=chunk)

    def _log_metrics(self, run_id: str, metrics: list[Any]) -> None:
        for chunk in _chunks(metrics, METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=chunk)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ms(seconds: float) -> int:
    """MLflow's timestamps: integer milliseconds since the Unix epoch."""
    return round(seconds * 1000)
