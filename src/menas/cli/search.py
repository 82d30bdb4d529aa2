"""`menas search`, `menas resume` and `menas status`: a search run from a config in a run folder, continued after
a crash, and its progress read from the store while it runs (`status` is torch-free: the store, the strategy's
trial count, the Pareto front and the report's inheritance totals)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from menas.cli.common import make_console, make_progress, num, pct
from menas.errors import UserError
from menas.folders import RunFolder
from menas.space.cost import format_count


def _search_config(args: argparse.Namespace) -> Any:
    from menas.config import SearchConfig, apply_override, load_yaml

    cfg = load_yaml(SearchConfig, args.config, "config") if args.config else SearchConfig()
    for assignment in args.set or []:
        cfg = apply_override(cfg, assignment, "config")
    return cfg


def _run_search(search: Any, console: Console) -> int:
    from menas.search.engine import describe

    strategy = search.strategy
    with make_progress() as progress:
        task = progress.add_task("trials", total=strategy.total_trials, completed=len(search.store.finished()))

        def on_result(spec: Any, result: Any) -> None:
            best = search.store.best()
            best_text = f"best {best.final_score:.2f}%" if best and best.final_score is not None else "no best yet"
            score = result.final_score
            progress.update(
                task,
                advance=1,
                description=f"generation {spec.generation}, trial {spec.trial_id}: "
                f"{'failed' if score is None else f'{score:.2f}%'}; {best_text}",
            )

        def on_epoch(spec: Any, phase: str, stats: Any) -> None:
            best = search.store.best()
            best_text = f"best {best.final_score:.2f}%" if best and best.final_score is not None else "no best yet"
            progress.update(
                task,
                description=f"generation {spec.generation}, trial {spec.trial_id}: {phase} epoch "
                f"{stats.epoch}, val {stats.val_top1 or 0:.2f}%; {best_text}",
            )

        summary = search.run(on_result=on_result, on_epoch=on_epoch)
    for line in describe(summary):
        console.print(line)
    console.print(_what_the_score_is(search))
    noise = search.store.noise()
    if noise is not None:
        console.print(noise.describe())
    if search.cfg.budget.latency_table is not None:
        skipped = search.store.events("latency_not_measured")
        final = search.store.final_networks()
        for line in measured_lines(final, search.run_dir, "finished", skipped[-1].payload if skipped else None):
            console.print(line)
    console.print(f"run folder: {search.run_dir} (config.yaml, menas.sqlite, trials/)")
    console.print(
        f"next: `menas report {search.run_dir}` (figures, tables), `menas export {search.run_dir} --out "
        f"{search.run_dir}/export` (the best network)"
    )
    if search.cfg.strategy.objective == "pareto":
        console.print(
            f"the result is a Pareto front of {len(search.store.front())} networks: `menas status {search.run_dir}` "
            f"lists them, `menas export {search.run_dir} --front K --out DIR` exports member K"
        )
    return 0


def _what_the_score_is(search: Any) -> str:
    """One line on what the search-val score is: a short proxy training's, which ranks networks but is not what
    the network reaches trained fully (`menas retrain`)."""
    cfg, shape = search.cfg, search.shape
    rungs = cfg.fidelity.rungs
    epochs = f"{rungs[0]}-{rungs[-1]}" if rungs and len(rungs) > 1 else str(rungs[0] if rungs else cfg.train.epochs)
    images = f"{cfg.data.search_train_fraction:.0%} of the training split"
    return (
        f"search-val top-1 is a proxy: {epochs} training epochs on {images} at {shape[0]} px, to rank "
        f"networks; it is not their accuracy. `menas retrain {search.run_dir} --epochs 5 --out DIR` trains the best "
        "one on the whole training split and scores it once on the test split"
    )


def cmd_search(args: argparse.Namespace) -> int:
    """Starts a search in a new run folder."""
    from menas.search.engine import Search
    from menas.search.store import store_path

    cfg = _search_config(args)
    out = Path(args.out)
    if store_path(out).exists():
        raise UserError(f"--out: {str(out)!r} already holds a search; `menas resume {out}` continues it")
    return _run_search(Search(cfg, out), make_console())


def cmd_resume(args: argparse.Namespace) -> int:
    """Continues a search after a crash or Ctrl-C: finished trials are kept, in-flight ones re-run."""
    from menas.search.engine import Search, load_run_config

    run = Path(args.run)
    cfg = load_run_config(run) if RunFolder(run).config.is_file() else None  # None: the store's config as it is
    return _run_search(Search(cfg, run, resume=True, accept_config_change=args.accept_config_change), make_console())


def cmd_status(args: argparse.Namespace) -> int:
    """Progress of a search, readable while it runs; torch-free (reads the store, counts trials with the strategy)."""
    from menas.config import SearchConfig, from_dict
    from menas.search.store import Store, store_path
    from menas.search.strategies import compute_limits, make_strategy
    from menas.search.summaries import estimate_time_left
    from menas.track.hook import tracker_errors

    run = Path(args.run)
    if not store_path(run).exists():
        raise UserError(f"run: {str(run)!r} holds no search (no menas.sqlite)")
    with Store.open(run, readonly=True) as store:
        info, trials = store.snapshot()
        summaries = store.generation_summary()
        phases = {p.generation: p for p in store.generation_phases()}
        used = store.compute_used()
        best = store.best()
        front = store.front()
        final = store.final_networks()
        not_measured = store.events("latency_not_measured")
        not_tracked = tracker_errors(store.events())
        noise = store.noise()
        cfg = from_dict(SearchConfig, store.config(), "run config")
    total = make_strategy(cfg).total_trials
    counts = {
        status: sum(1 for t in trials if t.status == status) for status in ("done", "failed", "running", "queued")
    }
    console = make_console()
    console.print(
        f"run {run}: {info.status}, space {cfg.space}, strategy {cfg.strategy.name}, "
        f"{counts['done']} done, {counts['failed']} failed, {counts['running']} running, "
        f"{counts['queued']} queued"
    )
    table = Table(title="generations")
    for column in (
        "gen",
        "trials",
        "done",
        "failed",
        "best top-1",
        "median cand. top-1",
        "mean final MACs",
        "mean train epoch s",
        "replaced",
    ):
        table.add_column(column, justify="right")
    for g in summaries:
        phase = phases.get(g.generation)
        replaced = "-" if phase is None or phase.replaced_share is None else f"{100 * phase.replaced_share:.0f}%"
        table.add_row(
            str(g.generation),
            str(g.trials),
            str(g.done),
            str(g.failed),
            pct(g.ticket_score_best),
            pct(g.score_median),
            format_count(g.ticket_macs_mean or 0),
            num(g.epoch_s_mean),
            replaced,
        )
    console.print(table)
    console.print(_compute_line(used, compute_limits(cfg)))
    if best is not None:
        rung = f" (rung {best.rung})" if best.rung else ""
        console.print(
            f"best so far: trial {best.trial_id}{rung}, {pct(best.final_score)}{_rescored_text(best)}"
            f"{_tse_text(best)}, "
            f"{format_count(best.final_macs or 0)} MACs, {format_count(best.final_params or 0)} params"
            f"{_latency_text(best, cfg.budget.latency_ms_max)}\n{best.final_genome}"
        )
    if noise is not None:
        console.print(noise.describe())
    _print_front(front, cfg.strategy.objective == "pareto", run, console, tuple(cfg.strategy.pareto[1:]))
    if cfg.budget.latency_table is not None:
        for line in measured_lines(final, run, info.status, not_measured[-1].payload if not_measured else None):
            console.print(line)
    if not_tracked:
        console.print(tracked_line(not_tracked, run))
    if trials:
        started = min(t.queued_at for t in trials)
        last = max(t.finished_at or t.started_at or t.queued_at for t in trials)
        console.print(f"elapsed: {(last - started) / 60:.1f} min from the first trial to the latest event")
    _print_retrains(run, console)
    _print_inheritance(trials, console)
    estimate = estimate_time_left(trials, total, used, compute_limits(cfg))
    if estimate is not None:
        console.print(_time_left_line(estimate, total))
    return 0


def tracked_line(errors: list[Any], run: Path) -> str:
    """What `menas status` says of a tracker that missed part of the run (`track_not_logged` events since it last
    caught up): how many trials, the latest error, and that a resume logs what the tracker lacks."""
    trials = sorted({e.payload["trial_id"] for e in errors if e.payload.get("trial_id") is not None})
    ending = any(e.payload.get("trial_id") is None for e in errors)
    parts = [f"{len(trials)} trial(s) ({', '.join(map(str, trials))})"] if trials else []
    parts += ["the search's end"] if ending else []
    last = errors[-1].payload
    return (
        f"tracker {last.get('tracker')}: {' and '.join(parts)} not logged (latest: {last.get('error')}); "
        f"`menas resume {run}` logs what it lacks"
    )


def _rescored_text(best: Any) -> str:
    """ " (mean of 2 trainings: 61.20%, 58.40%)" for a network whose score `fidelity.rescore` averaged; "" else."""
    from menas.search import fidelity

    if fidelity.evaluations(best) < 2:
        return ""
    return f" (mean of {best.evaluations} trainings: {', '.join(pct(s) for s in best.scores)})"


def _tse_text(best: Any) -> str:
    """ " (ranked by its training-speed estimate, -0.412)" for a search that ranks by it (`fidelity.score: tse`);
    "" else. The percentage before it is search-val top-1 either way."""
    if not best.ranks_by_tse or best.fitness is None:
        return ""
    return f" (ranked by its training-speed estimate, {best.fitness:.3f}: minus its mean training loss)"


def _latency_text(best: Any, bound_ms: float | None) -> str:
    """The best network's latency for a run with a latency table: predicted from the table, as ", predicted
    latency 1.23 ms (budget 1.5 ms)" (the budget under a bound), then measured on this machine when it was
    (", measured 1.31 ms"); "" without a table."""
    if best.final_latency_ms is None:
        return ""
    budget = "" if bound_ms is None else f" (budget {bound_ms:g} ms)"
    measured = "" if best.measured_latency_ms is None else f", measured {best.measured_latency_ms:.3g} ms"
    return f", predicted latency {best.final_latency_ms:.3g} ms{budget}{measured}"


def measured_lines(final: list[Any], run: Path, status: str, skipped: dict[str, Any] | None) -> list[str]:
    """What `menas status` and the end of a search say about the run's result measured on this machine at its
    latency table's settings (`menas.latency.front`): one line a network measured, where and how; or that it is
    not measured yet, why when the search said so, and how to measure it."""
    if not final:
        return []
    what = "Pareto front" if len(final) > 1 else "network"
    lines = []
    for t in (t for t in final if t.measured_latency_ms is not None):
        predicted = "" if t.final_latency_ms is None else f" (predicted {t.final_latency_ms:.3g} ms)"
        lines.append(f"  trial {t.trial_id}: {t.measured_latency_ms:.3g} ms measured{predicted}, {_how(t)}")
    missing = [t.trial_id for t in final if t.measured_latency_ms is None]
    if not missing:
        return [f"latency of the final {what}, measured on this machine at the table's settings:", *lines]
    if status in ("created", "running"):
        when = " yet (the search measures it when it finishes)"
    else:
        when = f": {skipped['error']}" if skipped else ""
    head = (
        f"latency of the final {what}: {len(missing)} of {len(final)} not measured{when}; trial(s) "
        f"{', '.join(map(str, missing))} have predicted latencies only; `menas latency {run} --front` measures them"
    )
    return [head, *lines]


def _how(t: Any) -> str:
    """How a measurement was taken, in a few words: p90, runs, settings, host (and whether it is the table's)."""
    m = t.latency_measurement or {}
    s, host = m.get("settings", {}), m.get("host", {})
    where = "the table's host" if m.get("same_host") else "not the table's host"
    rounds = m.get("rounds", 1)
    processes = f"median of {rounds} processes (spread {100 * m.get('round_spread', 0):.1f}%), " if rounds > 1 else ""
    return (
        f"{processes}p90 {m.get('p90_ms', 0):.3g} ms, {m.get('runs', '?')} runs, batch {s.get('batch', '?')}, "
        f"{s.get('threads', '?')} thread(s), {s.get('runtime', '?')} on {s.get('device', '?')} "
        f"({host.get('device_name', '?')}; {where})"
    )


def _print_front(front: list[Any], full: bool, run: Path, console: Console, costs: tuple[str, ...]) -> None:
    """The run's Pareto front of final top-1 against its costs (`Store.front`, `strategy.pareto`): a table, member K
    being what `menas export --front K` exports, when the search optimised it (`strategy.objective: pareto`); else
    one line."""
    if not front:
        return
    hint = f"`menas export {run} --front K --out DIR` exports member K"
    against = " and ".join("MACs" if c == "macs" else c for c in costs)
    if not full:
        cheap, top = front[0], front[-1]
        console.print(
            f"Pareto front (top-1 vs {against}): {len(front)} trials, from {format_count(cheap.final_macs)} MACs at "
            f"{pct(cheap.final_score)} to {format_count(top.final_macs)} MACs at {pct(top.final_score)}; {hint}"
        )
        return
    table = Table(title=f"Pareto front (final top-1 vs {against})")
    latency = any(t.final_latency_ms is not None for t in front)
    columns = ("K", "trial", "gen", "top-1", "MACs", "params", "ticket")
    for column in columns + (("predicted ms", "measured ms") if latency else ()):
        table.add_column(column, justify="right")
    for k, t in enumerate(front, 1):
        cells = [
            str(k),
            str(t.trial_id),
            str(t.generation),
            pct(t.final_score),
            format_count(t.final_macs),
            format_count(t.final_params or 0),
            "yes" if t.ticket is not None else "no",
        ]
        if latency:
            cells += [_ms(t.final_latency_ms), _ms(t.measured_latency_ms, "not measured")]
        table.add_row(*cells)
    console.print(table)
    console.print(hint)


def _ms(value: float | None, missing: str = "-") -> str:
    return missing if value is None else f"{value:.3g}"


def _print_inheritance(trials: Any, console: Any) -> None:
    """One line on individual weight sharing (`menas.report.build.inheritance`), when some trial tried to inherit."""
    from menas.report.build import inheritance

    rows = inheritance(trials)
    if rows:
        tried, ok = sum(g.tried for g in rows), sum(g.inherited for g in rows)
        tensors = sum(g.copied + g.sliced + g.padded for g in rows)
        console.print(
            f"weight inheritance: {ok} of {tried} bred children inherited ({tensors} tensors), "
            f"{tried - ok} fell back to scratch; saved {sum(g.epochs_saved for g in rows)} epochs, "
            f"{format_count(sum(g.images_saved for g in rows))} training images"
        )


def _time_left_line(estimate: Any, total: int) -> str:
    """`menas status`'s estimate (`store.TimeLeft`), saying when the `compute` budget ends the run before the
    strategy's trials are all done."""
    how = "one at a time" if estimate.parallel < 1.05 else f"{estimate.parallel:.1f} at a time so far"
    line = (
        f"{estimate.per_trial_s:.1f} s per trial on average; about {estimate.seconds / 60:.1f} min left for "
        f"{estimate.trials_left} "
    )
    if estimate.bound == "trials":
        return line + f"of {total} trials ({how})"
    budget = "compute.images" if estimate.bound == "images" else "compute.trial_s"
    return line + f"more trials ({how}): the compute budget ({budget}) stops the run before all {total} trials"


def _compute_line(used: Any, limits: tuple[float, float]) -> str:
    """The search compute used so far (`store.ComputeUsed`) against the config's `compute` budget."""
    images, trial_s = limits
    parts = [
        f"{format_count(used.images)} training-image equivalents"
        + ("" if images == float("inf") else f" of {format_count(images)} ({100 * used.images / images:.0f}%)"),
        f"{used.trial_s / 60:.1f} trial-min"
        + ("" if trial_s == float("inf") else f" of {trial_s / 60:.1f} ({100 * used.trial_s / trial_s:.0f}%)"),
    ]
    bounded = images != float("inf") or trial_s != float("inf")
    spent = bounded and (used.images >= images or used.trial_s >= trial_s)
    tail = "; budget used: no new trial starts" if spent else "" if bounded else " (no compute budget)"
    return f"compute used by {used.trials} finished trials: {', '.join(parts)}{tail}"


def _print_retrains(run: Path, console: Console) -> None:
    """The run's retrained networks (`menas retrain`), if any: test top-1 raw and EMA beside the search's score."""
    from menas.search.store import Store

    with Store.open(run, readonly=True) as store:
        retrains = store.retrains()
    if not retrains:
        return
    table = Table(title="retrained (test split)")
    for column in ("trial", "recipe", "epochs", "top-1", "EMA top-1", "kept", "MACs", "params", "min", "folder"):
        table.add_column(column, justify="left" if column in ("recipe", "kept", "folder") else "right")
    for r in retrains:
        table.add_row(
            "-" if r.trial_id is None else str(r.trial_id),
            r.recipe + (" +KD" if r.teacher else ""),
            str(r.epochs),
            pct(r.test_top1),
            pct(r.ema_top1),
            r.kept,
            format_count(r.macs or 0),
            format_count(r.params or 0),
            num((r.wall_s or 0) / 60),
            r.out,
        )
    console.print(table)


# ------------------------------------------------------------------------------------------ parsers


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run a search (config YAML + overrides) in a new run folder")
    p.add_argument("--config", default=None, help="search config YAML (default: built-in defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.epochs=2")
    p.add_argument("--out", required=True, help="run folder (config.yaml, menas.sqlite, trials/)")
    p.set_defaults(func=cmd_search)


def _add_resume(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resume", help="continue a search after a crash or Ctrl-C")
    p.add_argument("run", help="the run folder")
    p.add_argument(
        "--accept-config-change",
        action="store_true",
        help="go on with an edited config.yaml (the change is logged in the store); without it, a "
        "config.yaml that differs from the run's stored config is refused",
    )
    p.set_defaults(func=cmd_resume)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="progress of a search (works while it runs)")
    p.add_argument("run", help="the run folder")
    p.set_defaults(func=cmd_status)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"search": _add_search, "resume": _add_resume, "status": _add_status}
