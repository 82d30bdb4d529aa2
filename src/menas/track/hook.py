"""How a search drives its experiment tracker (`track`; docs/tracking.md).

`make_tracking(cfg, run_dir)` builds the tracker the config names when the search is set up: the tracker's library
is imported there, so a missing extra is one `UserError` before the search writes anything. `SearchTracking.start`
opens the tracker when the search runs, logs the finished trials of the store that the tracker lacks (a resumed
run's, or those a tracker outage missed, or all of them when tracking was turned on for a resume) and wraps the
engine's `on_result`, so that each trial is logged as it finishes, from the store's record of it.
`SearchTracking.close` logs the best trial and the Pareto front and ends the tracker's log with the run's status,
however the search ended. The same hooks run for `menas search`, `menas resume` and the `Search` class.

A trial is logged once: the tracker says which trials it holds in full when it opens (`Tracker.open`), and only the
others are logged. Failures: a tracker that cannot open (a log folder of another run, a server that does not
answer) fails the search before any trial runs (the run is marked failed; `menas resume` continues it once fixed);
once open, a tracker's error never ends the search: it is a warning, the trial stays in the store, and the next
`menas resume` logs what the tracker lacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from menas.config import SearchConfig, to_dict
from menas.errors import UserError
from menas.folders import RunFolder
from menas.search import fidelity, ranking
from menas.track.base import SearchEnd, Tracker, network_summary, trial_log

logger = logging.getLogger(__name__)

OnResult = Callable[[Any, Any], None] | None


def make_tracking(cfg: SearchConfig, run_dir: str | Path) -> SearchTracking:
    """The search's tracking as `cfg.track` says (none: hooks that do nothing), writing where `cfg.track_uri` says
    or in the run folder; imports the tracker's library (a missing extra: `UserError`), creates nothing yet."""
    folder = RunFolder(run_dir)
    if cfg.track == "none":
        return SearchTracking(None, {}, folder)
    return SearchTracking(_tracker(cfg.track, cfg.track_uri, folder), to_dict(cfg), folder)


def _tracker(name: str, uri: str | None, folder: RunFolder) -> Tracker:
    """The named tracker's backend, its library imported (the backend modules are imported only here)."""
    if name == "tensorboard":
        from menas.track.tensorboard import TensorBoardTracker

        return TensorBoardTracker(Path(uri).resolve() if uri else folder.tensorboard.resolve())
    from menas.track.mlflow import MlflowTracker

    if uri:
        return MlflowTracker(uri)
    return MlflowTracker(f"sqlite:///{folder.mlflow_db.resolve()}", folder.mlflow_artifacts.resolve().as_uri())


def best_so_far(store: Any, trial_ids: set[int]) -> Any:
    """The best network among the trials `trial_ids` (those logged so far), as `Store.best` ranks the run's: when a
    resume logs the trials a tracker lacks, a later trial's score never shows as an earlier step's best."""
    return ranking.best(fidelity.representatives(t for t in store.trials("done") if t.trial_id in trial_ids))


def run_key(store: Any) -> str:
    """What identifies a run in a tracker, across resumes and moves: its store's creation time."""
    return f"{store.run_info().created:.6f}"


class SearchTracking:
    """A search's hooks into its tracker (none: every hook does nothing)."""

    def __init__(self, tracker: Tracker | None, config: dict[str, Any], folder: RunFolder) -> None:
        self.tracker = tracker
        self.config = config  # the config the trials run under, logged with each
        self.folder = folder
        self.logged: set[int] = set()  # trial ids the tracker holds
        self._open = False

    def start(self, store: Any, on_result: OnResult) -> OnResult:
        """Opens the tracker, logs the store's finished trials it lacks (in trial order) and returns `on_result`
        wrapped to log each trial as it finishes first."""
        if self.tracker is None:
            return on_result
        try:
            self.logged = self.tracker.open(run_key(store), self.folder.path.resolve().name, self.config)
        except UserError:
            raise
        except Exception as exc:  # a server that does not answer, a URI MLflow refuses: the user's to fix
            reason = (str(exc).splitlines() or [""])[0]
            raise UserError(
                f"track: {self._name} cannot open its log at {self.tracker.where!r} ({type(exc).__name__}: {reason}); "
                "the run is kept: `menas resume` it once the tracker answers, or with another track or track_uri in "
                "its config.yaml and --accept-config-change"
            ) from exc
        self._open = True
        for record in store.finished():
            if record.trial_id not in self.logged:
                self.log(store, record.trial_id)

        def log_then_report(spec: Any, result: Any) -> None:
            self.log(store, result.trial_id)
            if on_result is not None:
                on_result(spec, result)

        return log_then_report

    def log(self, store: Any, trial_id: int) -> None:
        """Logs the store's record of a finished trial (with its lottery.json, if any) at the next step, with the
        best network so far; a tracker's error is a warning (the next resume logs the trial)."""
        try:
            record = store.trial(trial_id)
            files = [self.folder.trial(trial_id).lottery]
            best = best_so_far(store, self.logged | {trial_id})
            self.tracker.log_trial(trial_log(record, self.config, len(self.logged) + 1, best, files))
        except Exception as exc:
            logger.warning("trial %d is not logged to %s (`menas resume` logs it): %s", trial_id, self._name, exc)
            self._event(store, "track_not_logged", trial_id=trial_id, error=_one_line(exc))
            return
        self.logged.add(trial_id)

    def _event(self, store: Any, kind: str, **payload: Any) -> None:
        """Records a tracker's event in the store (`menas status` reads them), so a warning is not lost with the
        terminal; a store that cannot take it (read-only, closed) leaves the warning alone."""
        try:
            store.log_event(kind, tracker=self._name, **payload)
        except Exception as exc:
            logger.warning("the %s event is not recorded in the store: %s", kind, exc)

    def close(self, store: Any) -> None:
        """Logs the end (best trial, Pareto front, the run's status) when the tracker opened, and closes it."""
        if self.tracker is None:
            return
        try:
            if self._open:
                best = store.best()
                end = SearchEnd(
                    status=store.run_info().status,
                    step=len(self.logged),
                    best=None if best is None else network_summary(best),
                    front=[network_summary(t) for t in store.front()],
                )
                self.tracker.log_end(end)
                everything = all(r.trial_id in self.logged for r in store.finished())
                if everything and tracker_errors(store.events()):  # what an outage left out is logged now
                    self._event(store, "track_caught_up")
        except Exception as exc:
            logger.warning("the search's end is not logged to %s: %s", self._name, exc)
            self._event(store, "track_not_logged", trial_id=None, error=_one_line(exc))
        finally:
            self._open = False
            self.tracker.close()

    @property
    def _name(self) -> str:
        return str(self.config.get("track", "the tracker"))


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def tracker_errors(events: list[Any]) -> list[Any]:
    """The `track_not_logged` events since the tracker last caught up (`track_caught_up`): what the tracker may
    still lack, until a `menas resume` logs it."""
    last = max((i for i, e in enumerate(events) if e.kind == "track_caught_up"), default=-1)
    return [e for e in events[last + 1 :] if e.kind == "track_not_logged"]
