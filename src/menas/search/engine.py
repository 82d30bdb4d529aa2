"""The search loop: ask the strategy, record in the store, run trials, record results, tell the strategy.

The store is the source of truth. Every spec is written before it runs and every result before the strategy
hears of it, so after a crash `resume` rebuilds the strategy by replaying the store and re-runs only the trials
that were in flight (each from its last epoch checkpoint). Finished trials are never trained again. The store also
holds the config the run started with: `resume` uses it, and refuses a config.yaml that differs unless told to
accept the change (which is then logged in the store).

One process searches a run folder at a time: `Search` holds an exclusive lock on `RUN/menas.lock` from set-up to
the end of `run` (the kernel drops it if the process dies), and a second search or resume says who holds it.
A run that stops on an error is marked "failed" (Ctrl-C or a lost worker: "interrupted") with the error and its
traceback in an event, never left "running".

Events the search logs in the store: `resume` (requeued trial ids), `config_change` (key: [old, new]),
`trial_exception` (trial id, one-line error, traceback), `inherit_fallback` (trial id and why a bred child could
not inherit its parents' weights and trained from scratch), `search_stopped` (the failure share tripped),
`search_failed` (error, traceback) and `search_interrupted` (error); with a latency table, `latency_measured`
(trial id: measured median ms of the final front's members measured at the end) or `latency_not_measured`
(why).

Individual weight sharing (`SearchConfig.inherits`): a bred child's job carries its gene origin and the weights
files of its parents' trials (the spec's `parent_ids`: the trials whose final networks the strategy bred from).
MENAS breeds generation g only once every trial of g - 1 is told, and a result is recorded (its weights written by
the trial) before the strategy is told, so a child never starts before its parents' weights are on disk, whatever
the executor.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from menas.config import SearchConfig, from_dict, to_dict
from menas.data.datasets import dataset_shape
from menas.data.device import resolve_device
from menas.errors import MenasError, UserError
from menas.files import FolderLock, FolderLocked, write_atomically
from menas.folders import CONFIG_FILE, LOCK_FILE, RunFolder
from menas.latency.front import measure_front
from menas.latency.predict import open_predictor
from menas.latency.table import open_table
from menas.search.executors import WorkerLost, make_executor
from menas.search.record import TrialRecord
from menas.search.store import FILENAME, Store, store_path
from menas.search.strategies import TrialOutcome, TrialSpec, compute_budget_used, compute_limits, make_strategy
from menas.search.trial import TrialJob, run_trial
from menas.space.cost import Budget, format_count, parse_count
from menas.space.genome import Genome
from menas.space.operators import check_feasible
from menas.space.spaces import SearchSpace, load_space
from menas.track.hook import make_tracking

logger = logging.getLogger(__name__)


class SearchStopped(MenasError):
    """The search stopped before its end (too many failed trials); the store keeps everything done so far."""


@dataclass
class SearchSummary:
    """The outcome of a search, as printed at its end and by `menas status`."""

    best_genome: str | None
    best_score: float | None
    best_macs: int | None
    best_params: int | None
    trials_done: int
    trials_failed: int
    epochs: int
    images: int
    wall_s: float
    train_s: float
    lottery_s: float  # ticket search (fine-tuning is counted in train_s)
    compute_images: int = 0  # what `compute.images` counts: training-image equivalents (`Store.compute_used`)
    budget_used: bool = False  # the search stopped at its `compute` budget

    @property
    def overhead_s(self) -> float:
        """Wall time outside training, ticket search and fine-tuning: the framework's own cost."""
        return max(0.0, self.wall_s - self.train_s - self.lottery_s)


def save_config(cfg: SearchConfig, run_dir: Path) -> Path:
    """Writes the resolved config beside the store (temp file + rename)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    return write_atomically(RunFolder(run_dir).config, lambda tmp: tmp.write_text(text))


def load_run_config(run_dir: Path) -> SearchConfig:
    path = RunFolder(run_dir).config
    if not path.is_file():
        raise UserError(f"run {str(run_dir)!r}: no {CONFIG_FILE} (not a menas run directory)")
    return from_dict(SearchConfig, yaml.safe_load(path.read_text()), "config")


def _count(value: float | str | None, field: str, default: float) -> float:
    if value is None:
        return default
    return parse_count(value, field) if isinstance(value, str) else float(value)


def make_budget(cfg: SearchConfig, shape: tuple[int, int, int], space: SearchSpace | None = None) -> Budget:
    """The config's budget at the dataset's (input size, input channels, classes) (strings like "150M" accepted).
    With a latency table (a bound, or the `latency` objective of `strategy.pareto`), the table is opened here
    (`latency.predict.open_predictor`: refused in one line when measured for another space or input shape, or
    incomplete); under a bound it predicts each genome's latency for the budget, torch-free."""
    b = cfg.budget
    b.check_latency("latency" in cfg.strategy.pareto)
    input_size, in_chans, num_classes = shape
    latency = None
    if b.latency_table is not None:
        latency = _latency_model(b.latency_table, space or load_space(cfg.space), shape)
    if b.latency_ms_max is None:  # the table predicts the trials' latency (the objective), it bounds nothing
        latency = None
    return Budget(
        macs_min=_count(b.macs_min, "budget.macs_min", 0.0),
        macs_max=_count(b.macs_max, "budget.macs_max", math.inf),
        params_max=_count(b.params_max, "budget.params_max", math.inf),
        input_size=input_size,
        in_chans=in_chans,
        num_classes=num_classes,
        latency_ms_max=math.inf if b.latency_ms_max is None else float(b.latency_ms_max),
        latency=latency,
    )


def _latency_model(path: str, space: SearchSpace, shape: tuple[int, int, int]) -> Callable[[Genome], float]:
    """The latency budget's predictor (`Predictor.latency_ms`); a missing, mismatched or incomplete table is one
    line naming `budget.latency_table`."""
    if not Path(path).is_file():
        raise UserError(
            f"budget.latency_table: got {path!r}, allowed: a lookup table file of `menas latency-table` (none there)"
        )
    try:
        return open_predictor(path, space, *shape).latency_ms
    except UserError as exc:
        raise UserError(f"budget.latency_table: {exc}") from None


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} of every leaf that differs between two config dicts."""
    changes: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes.update(config_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            changes[f"{prefix}{key}"] = (a, b)
    return changes


class Search:
    """A search in a run directory: set up (validating everything before any training), run, summarise.

    A new run (`resume=False`) starts from `cfg`. A resumed run continues from the config stored when it started;
    `cfg` (config.yaml, or None) must equal it unless `accept_config_change`, which switches to `cfg` and logs the
    change. Set-up takes the run folder's lock; `run` releases it when it ends (or call `close`).
    """

    def __init__(
        self,
        cfg: SearchConfig | None,
        run_dir: str | Path,
        *,
        resume: bool = False,
        accept_config_change: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(run_dir)
        self.store: Store | None = None
        self._lock: FolderLock | None = None
        self._finished_here: list[TrialRecord] = []  # trials finished by this process: the failure share's base
        self.resumed = resume
        try:
            if resume:
                self.store = Store.open(self.run_dir)
                self._lock = self._take_lock()
                self._setup(self._resume_config(cfg, accept_config_change))
                if not self.folder.config.is_file():  # status, report and export read it
                    save_config(self.cfg, self.run_dir)
                self.pending = self.strategy.replay(self.store.history())
                requeued = self.store.requeue()
                self.store.log_event("resume", requeued=requeued, pid=os.getpid())
                logger.info("resuming %s: %d trials to run again", self.run_dir, len(requeued))
            else:
                if cfg is None:
                    raise UserError("config: got None, allowed: a SearchConfig (only a resumed run has a stored one)")
                self._setup(cfg)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._lock = self._take_lock()
                self._refuse_stale_trials()
                self.store = Store.create(self.run_dir, to_dict(cfg), seed=cfg.seed)
                save_config(cfg, self.run_dir)
                self.pending = []
        except BaseException:
            self.close()
            raise
        self.started = time.perf_counter()

    def _setup(self, cfg: SearchConfig) -> None:
        """Validates the config and builds the strategy. Reads only the dataset's shape: loaders are built where
        trials run (in this process only with `executor.kind: local`, at the first trial)."""
        self.cfg = cfg
        self.space = load_space(cfg.space)
        if cfg.device != "auto":  # a bad device name fails here, before any training ("auto" would query CUDA)
            resolve_device(cfg.device)
        self.shape = dataset_shape(cfg.data)
        self.budget = make_budget(cfg, self.shape, self.space)
        check_feasible(self.space, self.budget)
        compute_limits(cfg)  # a bad compute budget fails here, before any training
        self.strategy = make_strategy(cfg, self.space, self.budget)
        self.tracking = make_tracking(cfg, self.run_dir)  # a tracker's missing extra fails here, before any write

    def _take_lock(self) -> FolderLock:
        program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
        command = " ".join(["menas" if program in ("menas", "cli.py") else program, *sys.argv[1:]])
        try:
            return FolderLock(self.run_dir, command, LOCK_FILE)
        except FolderLocked as exc:
            raise UserError(f"run {exc}") from None

    def _refuse_stale_trials(self) -> None:
        """A new run never starts in a folder with trial files but no store: its checkpoints would be taken for
        this run's trials (the checkpoint identity check would refuse most, not a trial with the same genome)."""
        trials = self.folder.trials
        if not store_path(self.run_dir).exists() and trials.is_dir() and any(trials.iterdir()):
            raise UserError(
                f"run {str(self.run_dir)!r}: holds trials/ from an earlier run but no {FILENAME}; choose a new "
                f"folder, or delete {str(trials)!r} first"
            )

    def _resume_config(self, cfg: SearchConfig | None, accept: bool) -> SearchConfig:
        """The stored config, or `cfg` when it differs and `accept` (the change is logged and stored)."""
        assert self.store is not None
        stored = from_dict(SearchConfig, self.store.config(), f"{FILENAME} config")
        if cfg is None:
            return stored
        changes = config_changes(to_dict(stored), to_dict(cfg))
        if not changes:
            return stored
        listing = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
        if not accept:
            raise UserError(
                f"run {str(self.run_dir)!r}: {CONFIG_FILE} differs from the config the run started with (kept in "
                f"{FILENAME}): {listing}. Undo the edit, or `menas resume {self.run_dir} --accept-config-change` to "
                "go on with it"
            )
        logger.warning("resuming %s with a changed config: %s", self.run_dir, listing)
        self.store.log_event("config_change", changes={key: list(pair) for key, pair in changes.items()})
        self.store.set_config(to_dict(cfg))
        return cfg

    def close(self) -> None:
        """Releases the run folder's lock and closes the store (idempotent)."""
        self.release_lock()
        if self.store is not None:
            self.store.close()
            self.store = None

    def release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def job(self, spec: TrialSpec) -> TrialJob:
        """The trial's job, as its spec's recipe says (the strategy decided fine-tuning and inheritance)."""
        cfg, recipe = self.cfg, spec.recipe
        assert recipe is not None, f"trial {spec.trial_id}: a spec without its recipe"
        seed = cfg.seed + spec.trial_id
        # a child trains the recipe's epochs (an inheriting one: the full first training, `inherit.epochs` applied
        # by the trial); a promotion continues its parent's network: a warm restart at `lr_scale` x the peak lr
        epochs = self.strategy.recipe.first_epochs if recipe["inherit"] else recipe["epochs"]
        train = dataclasses.replace(cfg.train, seed=seed, epochs=epochs)
        if recipe.get("continues"):
            train = train.finetune(recipe["epochs"], cfg.data.batch_size, recipe["lr_scale"])
        return TrialJob(
            trial_id=spec.trial_id,
            genome=spec.genome,
            data=cfg.data,
            train=train,
            lottery=cfg.lottery if spec.use_tickets else None,
            finetune_epochs=recipe["finetune_epochs"],
            workdir=str(self.folder.trial(spec.trial_id).path),
            seed=seed,
            device=cfg.device,
            finetune_lr_scale=cfg.lottery.finetune_lr_scale if self.strategy.finetunes else None,
            init_weights=self.parent_weights(spec.parent_ids[0]) if recipe.get("continues") else None,
            latency_table=self._latency_table(),
            latency_ms_max=cfg.budget.latency_ms_max,
            **self._inheritance(spec),
        )

    def _latency_table(self) -> str | None:
        """The latency budget's table as an absolute path (a worker may run elsewhere than the config's folder);
        None without a latency budget."""
        table = self.cfg.budget.latency_table
        return None if table is None else str(Path(table).resolve())

    def _inheritance(self, spec: TrialSpec) -> dict[str, Any]:
        """The `TrialJob` fields of weight inheritance for a child whose recipe inherits (else none)."""
        if not spec.recipe["inherit"]:
            return {}
        return {
            "inherit": self.cfg.inherit,
            "origin": spec.origin,
            "parent_genomes": spec.parents,
            "parent_weights": tuple(self.parent_weights(parent) for parent in spec.parent_ids),
            "inherit_calib_batches": self.cfg.lottery.calib_batches,
        }

    def parent_weights(self, trial_id: int) -> str:
        """The weights file of a parent's trial (the strategy breeds only from told outcomes, and each is recorded
        before it is told); "" when it has none (the child then trains from scratch, with an `inherit_fallback`
        event)."""
        record = self.store.trial(trial_id)
        path = self.folder.resolve(record.weights, trial_id)
        return str(path) if path is not None and path.is_file() else ""

    def run(
        self,
        on_result: Callable[[TrialSpec, TrialRecord], None] | None = None,
        on_epoch: Callable[[TrialSpec, str, Any], None] | None = None,
    ) -> SearchSummary:
        """Runs trials until the strategy is finished: one at a time in this process (`executor.kind: local`,
        with per-epoch `on_epoch` calls) or in a pool of workers (`pool`; `on_epoch` is not called). However it
        ends, the run's status says so and the run folder's lock is released."""
        if self.store is None:
            raise MenasError("Search.run: the search was closed (a Search runs once)")
        self.store.set_status("running")

        def run_here(spec: TrialSpec, job: TrialJob) -> TrialRecord:
            epoch_cb = None if on_epoch is None else lambda phase, stats: on_epoch(spec, phase, stats)
            return run_trial(job, epoch_cb)

        try:
            on_result = self.tracking.start(self.store, on_result)  # logs the finished trials it lacks
            executor = make_executor(self.cfg.executor, self.cfg.device, run_here, self.cfg.train.threads)
            try:
                summary = self._loop(executor, on_result)
            except BaseException:
                executor.close(abort=True)  # running trials stay "running": resume re-runs them
                raise
            executor.close()
            self.measure_front()
            return summary
        except BaseException as exc:
            self._mark_stopped(exc)
            raise
        finally:
            self.tracking.close(self.store)  # the best trial, the front and the run's status
            self.release_lock()

    def measure_front(self) -> None:
        """With a latency table, the run's result (its front, else its best) measured on this machine at the
        table's settings and recorded (`menas.latency.front`), what was measured before skipped, under the run's
        lock. Settings this machine cannot use (more threads than its cores, a runtime it lacks) end nothing: a
        warning and a `latency_not_measured` event say why (`menas latency RUN --front` measures it later)."""
        if self.cfg.budget.latency_table is None:
            return
        try:
            table = open_table(self.cfg.budget.latency_table, self.space, *self.shape)
            done = measure_front(self.store, table, rounds=self.cfg.budget.latency_rounds)
        except (UserError, OSError) as exc:  # a table gone since the start, settings this machine cannot use
            logger.warning("the final front's latency is not measured: %s", exc)
            self.store.log_event("latency_not_measured", error=str(exc))
            return
        if done.measured:
            self.store.log_event("latency_measured", trials={str(k): v for k, v in done.measured.items()})

    def _mark_stopped(self, exc: BaseException) -> None:
        """Records why the run ended early: "interrupted" for Ctrl-C, a lost worker or a kill-like exit,
        "failed" (with the traceback in a `search_failed` event) for any error; never leaves it "running"."""
        if isinstance(exc, SearchStopped):
            return  # `_check_failures` recorded it
        interrupted = isinstance(exc, WorkerLost) or not isinstance(exc, Exception)
        status = "interrupted" if interrupted else "failed"
        try:
            self.store.set_status(status)
            self.store.log_event(
                f"search_{status}",
                error=f"{type(exc).__name__}: {exc}",
                traceback=None if interrupted else format_traceback(exc),
            )
        except Exception:  # the store itself may be what failed: never hide the original error
            logger.exception("could not record that the run %s %s", self.run_dir, status)

    def budget_used(self) -> bool:
        """Whether the finished trials used the config's `compute` budget (images or trial seconds), from the
        store, so a resumed run keeps its count."""
        return compute_budget_used(self.cfg, self.store.compute_used())

    def _loop(self, executor: Any, on_result: Callable[[TrialSpec, TrialRecord], None] | None) -> SearchSummary:
        queue = list(self.pending)
        self.pending = []
        limit = 2 * self.strategy.total_trials + 2
        stopped = False
        for _ in range(limit):  # bounded: every pass submits a trial or finishes at least one, or ends the loop
            while executor.free > 0 and not stopped:
                if self.budget_used():  # no new trial starts; those running finish and count
                    stopped = True
                    used = self.store.compute_used()
                    self.store.log_event(
                        "compute_budget_used", images=used.images, trial_s=used.trial_s, trials=used.trials
                    )
                    break
                if not queue:
                    queue = self.strategy.ask()  # all it can propose now; [] while it waits for results
                    self.store.add_trials(queue)
                if not queue:
                    break
                spec = queue.pop(0)
                self.store.mark_running(spec.trial_id)
                executor.submit(spec, self.job(spec))
            if executor.busy == 0:
                if self.strategy.finished or stopped:
                    break
                raise MenasError("the strategy asked for no trial but is not finished (a bug: please report)")
            for spec, result in executor.wait():
                self._record(spec, self._as_result(spec, result), on_result)
        self.store.set_status("finished")
        return self.summary()

    def _as_result(self, spec: TrialSpec, result: TrialRecord | BaseException) -> TrialRecord:
        """A trial's exception becomes a failed result with its reason (one line in the trial's row, the full
        traceback in a `trial_exception` event), so one broken candidate never ends the search (a systematic cause,
        such as data files a trial cannot read, trips `max_failure_share` with the last error in its message)."""
        if isinstance(result, TrialRecord):
            return result
        error = f"{type(result).__name__}: {result}"
        logger.warning("trial %d raised %s", spec.trial_id, error)
        self.store.log_event("trial_exception", trial_id=spec.trial_id, error=error, traceback=format_traceback(result))
        return TrialRecord(trial_id=spec.trial_id, genome=spec.genome, status="failed", error=error)

    def _record(
        self, spec: TrialSpec, result: TrialRecord, on_result: Callable[[TrialSpec, TrialRecord], None] | None
    ) -> None:
        if result.weights is not None:  # the store keeps it relative to the run folder, which may move
            result = dataclasses.replace(result, weights=self.folder.relative(result.weights))
        self.store.record_result(result)
        if result.status == "done":  # recorded: an interrupted search no longer resumes this trial
            self.folder.trial(spec.trial_id).drop_epoch_checkpoints()
        if result.inherited is not None and result.inherited.get("fallback"):
            logger.warning("trial %d trained from scratch: %s", spec.trial_id, result.inherited["fallback"])
            self.store.log_event("inherit_fallback", trial_id=spec.trial_id, reason=result.inherited["fallback"])
        # the stored record: the result joined with its spec (the recipe says what selection ranks by), as a resumed
        # search replays it
        self.strategy.tell([TrialOutcome.from_record(self.store.trial(spec.trial_id))])
        self._finished_here.append(result)
        if on_result is not None:
            on_result(spec, result)
        self._check_failures()

    def _check_failures(self) -> None:
        """Stops the search when more than `max_failure_share` of (at least 5) trials failed. Only trials finished
        by this process count, so a run resumed after the cause was fixed is judged by its new trials."""
        done = self._finished_here
        failed = [t for t in done if t.status == "failed"]
        share = self.cfg.max_failure_share
        if len(done) >= 5 and len(failed) / len(done) > share:
            since = "since the resume" if self.resumed else "so far"
            self.store.set_status("failed")
            self.store.log_event("search_stopped", finished=len(done), failed=len(failed), last_error=failed[-1].error)
            raise SearchStopped(
                f"{len(failed)} of {len(done)} trials failed {since} (more than max_failure_share={share:g}); last "
                f"error: {failed[-1].error}. Everything done so far is in {self.run_dir}; fix the cause and "
                f"`menas resume {self.run_dir}` (failed trials stay failed; failures are counted anew from there)."
            )

    def summary(self) -> SearchSummary:
        return summarize(self.store, time.perf_counter() - self.started)


def format_traceback(exc: BaseException) -> str:
    """The full traceback of an exception, chained causes included (a worker's exception carries the worker's
    traceback as its cause)."""
    return "".join(traceback.format_exception(exc))


def summarize(store: Store, wall_s: float) -> SearchSummary:
    trials = store.finished()
    best = store.best()
    done = [t for t in trials if t.status == "done"]
    used = store.compute_used()
    return SearchSummary(
        best_genome=best.final_genome if best else None,
        best_score=best.final_score if best else None,
        best_macs=best.final_macs if best else None,
        best_params=best.final_params if best else None,
        trials_done=len(done),
        trials_failed=len(trials) - len(done),
        epochs=sum(t.epochs or 0 for t in trials),
        images=sum(t.train_images or 0 for t in trials),
        wall_s=wall_s,
        train_s=sum((t.train_s or 0.0) + (t.finetune_s or 0.0) for t in trials),
        lottery_s=sum(t.lottery_s or 0.0 for t in trials),
        compute_images=used.images,
        budget_used=compute_budget_used(from_dict(SearchConfig, store.config(), "run config"), used),
    )


def describe(summary: SearchSummary) -> list[str]:
    """Human-readable lines with units."""
    lines = []
    if summary.best_genome:
        lines += [
            f"best: {summary.best_genome}",
            f"      search-val top-1 {summary.best_score:.2f}%, {format_count(summary.best_macs)} MACs, "
            f"{format_count(summary.best_params)} params",
        ]
    trial_s = summary.train_s + summary.lottery_s
    if summary.wall_s > 0 and trial_s > summary.wall_s:  # trials ran side by side (a pool)
        where = f"{trial_s / summary.wall_s:.2f} trials at a time on average"
    else:
        share = 100.0 * summary.overhead_s / summary.wall_s if summary.wall_s > 0 else 0.0
        where = f"overhead {summary.overhead_s:.1f} s = {share:.1f}%"
    lines.append(
        f"trials: {summary.trials_done} done, {summary.trials_failed} failed; cost {summary.epochs} epochs, "
        f"{format_count(summary.images)} images, {summary.wall_s:.1f} s wall (training {summary.train_s:.1f} s, "
        f"lottery {summary.lottery_s:.1f} s; {where})"
    )
    if summary.budget_used:
        lines.append(
            f"stopped at the compute budget: {format_count(summary.compute_images)} training-image equivalents used"
        )
    return lines
