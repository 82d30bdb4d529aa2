"""The search loop: ask the strategy, record in the store, run trials, record results, tell the strategy.

The store is the source of truth. Every spec is written before it runs and every result before the strategy
hears of it, so after a crash `resume` rebuilds the strategy by replaying the store and re-runs only the trials
that were in flight (each from its last epoch checkpoint). Finished trials are never trained again.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from menas.config import SearchConfig, from_dict, to_dict
from menas.cost import Budget, format_count, parse_count
from menas.data import SearchData
from menas.errors import MenasError, UserError
from menas.executors import WorkerLost, make_executor
from menas.files import write_atomically
from menas.operators import check_feasible
from menas.space import load_space
from menas.store import Store
from menas.strategy import TrialOutcome, TrialSpec, make_strategy
from menas.trial import TrialJob, TrialResult, load_data, run_trial

CONFIG_FILE = "config.yaml"


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

    @property
    def overhead_s(self) -> float:
        """Wall time outside training, ticket search and fine-tuning: the framework's own cost."""
        return max(0.0, self.wall_s - self.train_s - self.lottery_s)


def save_config(cfg: SearchConfig, run_dir: Path) -> Path:
    """Writes the resolved config beside the store (temp file + rename)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    return write_atomically(run_dir / CONFIG_FILE, lambda tmp: tmp.write_text(text))


def load_run_config(run_dir: Path) -> SearchConfig:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"run {str(run_dir)!r}: no {CONFIG_FILE} (not a menas run directory)")
    return from_dict(SearchConfig, yaml.safe_load(path.read_text()), "config")


def _count(value: float | str | None, field: str, default: float) -> float:
    if value is None:
        return default
    return parse_count(value, field) if isinstance(value, str) else float(value)


def make_budget(cfg: SearchConfig, data: SearchData) -> Budget:
    """The config's budget at the dataset's input shape (strings like "150M" accepted)."""
    b = cfg.budget
    return Budget(
        macs_min=_count(b.macs_min, "budget.macs_min", 0.0),
        macs_max=_count(b.macs_max, "budget.macs_max", math.inf),
        params_max=_count(b.params_max, "budget.params_max", math.inf),
        input_size=data.input_size,
        in_chans=data.in_chans,
        num_classes=data.num_classes,
    )


class Search:
    """A search in a run directory: set up (validating everything before any training), run, summarise."""

    def __init__(self, cfg: SearchConfig, run_dir: str | Path, *, resume: bool = False) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.space = load_space(cfg.space)
        from menas.data import resolve_device

        self.data = load_data(cfg.data, resolve_device(cfg.device))
        self.budget = make_budget(cfg, self.data)
        check_feasible(self.space, self.budget)
        self.strategy = make_strategy(cfg, self.space, self.budget)
        if resume:
            self.store = Store.open(self.run_dir)
            self.pending = self.strategy.replay(self.store.history())
            self.store.requeue()
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.store = Store.create(self.run_dir, to_dict(cfg), seed=cfg.seed)
            save_config(cfg, self.run_dir)
            self.pending = []
        self.started = time.perf_counter()

    def job(self, spec: TrialSpec) -> TrialJob:
        cfg = self.cfg
        return TrialJob(
            trial_id=spec.trial_id,
            genome=spec.genome,
            data=cfg.data,
            train=dataclasses.replace(cfg.train, seed=cfg.seed + spec.trial_id),
            lottery=cfg.lottery if spec.use_tickets else None,
            finetune_epochs=cfg.finetune_epochs if spec.use_tickets else 0,
            workdir=str(self.run_dir / "trials" / f"{spec.trial_id:05d}"),
            seed=cfg.seed + spec.trial_id,
            device=cfg.device,
        )

    def run(
        self,
        on_result: Callable[[TrialSpec, TrialResult], None] | None = None,
        on_epoch: Callable[[TrialSpec, str, Any], None] | None = None,
    ) -> SearchSummary:
        """Runs trials until the strategy is finished: one at a time in this process (`executor.kind: local`,
        with per-epoch `on_epoch` calls) or in a pool of workers (`pool`; `on_epoch` is not called)."""
        self.store.set_status("running")

        def run_here(spec: TrialSpec, job: TrialJob) -> TrialResult:
            epoch_cb = None if on_epoch is None else lambda phase, stats: on_epoch(spec, phase, stats)
            return run_trial(job, epoch_cb)

        executor = make_executor(self.cfg.executor, self.cfg.device, run_here)
        try:
            summary = self._loop(executor, on_result)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | WorkerLost):
                self.store.set_status("interrupted")
            executor.close(abort=True)  # running trials stay "running": resume re-runs them
            raise
        executor.close()
        return summary

    def _loop(self, executor: Any, on_result: Callable[[TrialSpec, TrialResult], None] | None) -> SearchSummary:
        queue = list(self.pending)
        self.pending = []
        limit = 2 * self.strategy.total_trials + 2
        for _ in range(limit):  # bounded: every pass submits a trial or finishes at least one, or ends the loop
            while executor.free > 0:
                if not queue:
                    queue = self.strategy.ask()  # all it can propose now; [] while it waits for results
                    self.store.add_trials(queue)
                if not queue:
                    break
                spec = queue.pop(0)
                self.store.mark_running(spec.trial_id)
                executor.submit(spec, self.job(spec))
            if executor.busy == 0:
                if self.strategy.finished:
                    break
                raise MenasError("the strategy asked for no trial but is not finished (a bug: please report)")
            for spec, result in executor.wait():
                self._record(spec, self._as_result(spec, result), on_result)
        self.store.set_status("finished")
        return self.summary()

    def _as_result(self, spec: TrialSpec, result: TrialResult | BaseException) -> TrialResult:
        """A trial's exception becomes a failed result with its reason, so one broken candidate never ends the
        search (a systematic cause trips `max_failure_share`)."""
        if isinstance(result, TrialResult):
            return result
        error = f"{type(result).__name__}: {result}"
        self.store.log_event("trial_exception", trial_id=spec.trial_id, error=error)
        return TrialResult(spec.trial_id, spec.genome, "failed", 0, 0, error=error)

    def _record(
        self, spec: TrialSpec, result: TrialResult, on_result: Callable[[TrialSpec, TrialResult], None] | None
    ) -> None:
        outcome = TrialOutcome.from_record(result)  # a TrialResult has the outcome's attribute names
        self.store.record_outcome(outcome, error=result.error, **_details(result))
        self.strategy.tell([outcome])
        if on_result is not None:
            on_result(spec, result)
        self._check_failures()

    def _check_failures(self) -> None:
        done = self.store.finished()
        failed = [t for t in done if t.status == "failed"]
        share = self.cfg.max_failure_share
        if len(done) >= 5 and len(failed) / len(done) > share:
            self.store.set_status("failed")
            raise SearchStopped(
                f"{len(failed)} of {len(done)} trials failed (more than max_failure_share={share:g}); last error: "
                f"{failed[-1].error}. Everything done so far is in {self.run_dir}; fix the cause and `menas resume`."
            )

    def summary(self) -> SearchSummary:
        return summarize(self.store, time.perf_counter() - self.started)


def _details(result: TrialResult) -> dict[str, Any]:
    details: dict[str, Any] = {
        "epoch_times": result.epoch_times,
        "checkpoint": result.checkpoint,
        "train_s": result.train_s + result.finetune_s,
        "lottery_s": result.lottery_s,
        "eval_s": result.eval_s,
        "images": result.images,
        "epochs": result.epochs,
        "worker": result.worker or None,
    }
    if result.status == "done":
        details["ticket_score_before_ft"] = result.ticket_score_before_ft
    return details


def summarize(store: Store, wall_s: float) -> SearchSummary:
    trials = store.finished()
    best = store.best()
    done = [t for t in trials if t.status == "done"]
    return SearchSummary(
        best_genome=(best.ticket or best.genome) if best else None,
        best_score=best.final_score if best else None,
        best_macs=best.final_macs if best else None,
        best_params=best.final_params if best else None,
        trials_done=len(done),
        trials_failed=len(trials) - len(done),
        epochs=sum(t.epochs or 0 for t in trials),
        images=sum(t.images or 0 for t in trials),
        wall_s=wall_s,
        train_s=sum(t.train_s or 0.0 for t in trials),
        lottery_s=sum(t.lottery_s or 0.0 for t in trials),
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
    return lines
