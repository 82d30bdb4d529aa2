"""The `menas` command line. Every user mistake (`UserError`) ends in one line on stderr and exit code 2, no
traceback; a bug prints one line (the traceback with `--debug`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from menas import __version__
from menas.errors import MenasError, UserError
from menas.files import write_json
from menas.space.cost import Budget, count_cost, format_count, layer_table, parse_count, parse_range
from menas.space.genome import parse_genome_arg
from menas.space.operators import reachable_costs, sample
from menas.space.spaces import PRESETS, load_space

EXIT_USAGE = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (plus the usage) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"menas: error: {message}\n")


def _console() -> Console:
    """Wide enough for the per-layer table even when stdout is a pipe (rich would assume 80 columns)."""
    return Console(highlight=False, width=max(shutil.get_terminal_size((160, 24)).columns, 140))


def _count_arg(field: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return parse_count(text, field)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _add_shape_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-size", type=int, default=224, help="input resolution in pixels (default 224)")
    parser.add_argument("--in-chans", type=int, default=3, help="input channels: 1 or 3 (default 3)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")


def _budget(args: argparse.Namespace, macs: tuple[float, float] = (0.0, float("inf"))) -> Budget:
    return Budget(
        macs_min=macs[0],
        macs_max=macs[1],
        params_max=getattr(args, "params_max", None) or float("inf"),
        input_size=args.input_size,
        in_chans=args.in_chans,
        num_classes=args.num_classes,
    )


# ------------------------------------------------------------------------------------------ commands


def cmd_inspect(args: argparse.Namespace) -> int:
    """Per-layer table of a genome with its MACs and params."""
    genome = parse_genome_arg(args.genome)
    budget = _budget(args)  # validates the shape arguments
    rows = layer_table(genome, budget.input_size, budget.in_chans, budget.num_classes)
    total = count_cost(genome, budget.input_size, budget.in_chans, budget.num_classes)
    spaces = [name for name, space in PRESETS.items() if space.contains(genome)]
    if args.json:
        print(json.dumps({"genome": genome.to_str(), "macs": total.macs, "params": total.params, "spaces": spaces,
                          "layers": [row._asdict() for row in rows]}))  # fmt: skip
        return 0
    table = Table(title=f"{genome.depth} inverted residual layers at {budget.input_size}x{budget.input_size} px")
    for column in ("block", "type", "k", "in", "mid", "out", "stride", "SE", "act", "out HxW", "MACs", "params"):
        table.add_column(column, justify="left" if column in ("block", "type", "act") else "right")
    for r in rows:
        table.add_row(r.name, r.kind, str(r.kernel), str(r.in_chs), str(r.mid_chs), str(r.out_chs), str(r.stride),
                      "yes" if r.se else "-", r.act, f"{r.out_hw[0]}x{r.out_hw[1]}", format_count(r.macs),
                      format_count(r.params))  # fmt: skip
    console = _console()
    console.print(genome.to_str())
    console.print(table)
    console.print(
        f"total: {format_count(total.macs)} MACs ({total.macs:,} multiply-accumulates), "
        f"{format_count(total.params)} params ({total.params:,}) for {budget.num_classes} classes, "
        f"{budget.in_chans} input channel(s)"
    )
    console.print(f"in preset spaces: {', '.join(spaces) if spaces else 'none'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Random genomes of a space within a budget, one a line: string, MACs, params."""
    space = load_space(args.space)
    if args.n < 1:
        raise UserError(f"-n: got {args.n}, allowed: integers >= 1")
    budget = _budget(args, parse_range(args.macs, "--macs") if args.macs else (0.0, float("inf")))
    rng = random.Random(args.seed)
    genomes = [sample(space, rng, budget) for _ in range(args.n)]
    costs = [budget.cost(g) for g in genomes]
    if args.json:
        print(
            json.dumps(
                [
                    {"genome": g.to_str(), "macs": c.macs, "params": c.params}
                    for g, c in zip(genomes, costs, strict=True)
                ]
            )
        )
        return 0
    for genome, cost in zip(genomes, costs, strict=True):
        print(f"{genome.to_str()}  {format_count(cost.macs)} MACs  {format_count(cost.params)} params")
    return 0


def cmd_space_show(args: argparse.Namespace) -> int:
    """The dimensions and choices of a search space (or its YAML)."""
    space = load_space(args.name)
    if args.yaml:
        print(space.to_yaml(), end="")
        return 0
    table = Table(title=f"search space {space.name}")
    for column in ("stage", "base ch", "depths", "out ch (width mult)", "strides", "expand", "kernels", "SE",
                   "act"):  # fmt: skip
        table.add_column(column)
    for i, s in enumerate(space.stages):
        widths = f"{_join(space.stage_outs(i))} (x{min(s.width_mults):g}..{max(s.width_mults):g})"
        table.add_row(str(i), str(s.base_chs), _join(s.depths), widths, _join(s.strides), _join(s.expand_ratios),
                      _join(s.kernels), _join(s.se), _join(s.acts))  # fmt: skip
    console = _console()
    console.print(table)
    console.print(
        f"stem: conv3x3/2 to {space.stem.out_chs} ch, {space.stem.act}; ds: k{space.ds.kernel} s{space.ds.stride} "
        f"to {space.ds.out_chs} ch{' with SE' if space.ds.se else ''}, {space.ds.act}; head: 1x1 to "
        f"{space.head_ratio:g}x the last width, pool, 1x1 to {space.feat_chs}, {space.head_act}"
    )
    console.print(
        f"at most {space.max_downsamples} stages with stride 2; channel divisor {space.divisor}; pruned widths "
        f"{'allowed' if space.allow_pruning else 'not allowed'}"
    )
    budget = Budget(input_size=args.input_size, in_chans=args.in_chans, num_classes=args.num_classes)
    low, high = reachable_costs(space, budget)
    console.print(
        f"reachable at {budget.input_size} px, {budget.num_classes} classes: MACs {format_count(low.macs)} to "
        f"{format_count(high.macs)}, params {format_count(low.params)} to {format_count(high.params)}"
    )
    return 0


def _join(values: Sequence) -> str:
    return ", ".join(str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)
                     for v in values)  # fmt: skip


def _progress(*extra: Any):
    """A rich progress bar on a terminal; one line per update when stderr is a file or a pipe (nohup, a cluster
    job's log), where a live bar would show nothing until the end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return _LogProgress(console)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra, console=console, transient=False)  # fmt: skip


class _LogProgress:
    """The part of rich's `Progress` the commands use, printing "[time] description  M/N, elapsed, ~left" once
    per change instead of redrawing a bar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> _LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {"description": description, "total": total, "completed": completed,
                               "start": time.monotonic(), "first": completed}  # fmt: skip
        return task_id

    def update(self, task_id: int, completed: float | None = None, advance: float | None = None,
               description: str | None = None) -> None:  # fmt: skip
        task = self.tasks[task_id]
        before = (task["description"], task["completed"])
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if description is not None:
            task["description"] = description
        if (task["description"], task["completed"]) != before:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {task['description']}  {self._counts(task)}",
                               markup=False, highlight=False, soft_wrap=True)  # fmt: skip

    @staticmethod
    def _counts(task: dict[str, Any]) -> str:
        elapsed = time.monotonic() - task["start"]
        done, total = task["completed"], task["total"]
        text = f"{done:g}/{total:g}, {elapsed / 60:.1f} min" if total else f"{done:g}, {elapsed / 60:.1f} min"
        if total and done > task["first"]:
            text += f", ~{elapsed / (done - task['first']) * (total - done) / 60:.1f} min left"
        return text


def _data_config(args: argparse.Namespace, base: Any = None) -> Any:
    from menas.config import DataConfig

    cfg = base or DataConfig()
    changes = {"dataset": args.data, "root": args.root, "batch_size": args.batch_size, "seed": args.seed,
               "input_size": args.input_size}  # fmt: skip
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


def _add_data_args(p: argparse.ArgumentParser, required: bool = True, recorded_seed: bool = False) -> None:
    """Dataset arguments; `recorded_seed`: --seed defaults to the data seed the checkpoint recorded (a command
    that reads a trained network must score it on the split it was trained against)."""
    p.add_argument("--data", required=required, default=None,
                   help="fashion-mnist | cifar10 | cifar100 | imagefolder | digits | synthetic")  # fmt: skip
    p.add_argument("--root", default=None, help="dataset folder (default: the dataset's usual place)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size (default 128)")
    p.add_argument("--input-size", type=int, default=None, help="image side in px (default 32; 224 for folders)")
    if recorded_seed:
        p.add_argument("--seed", type=int, default=None, help="data seed: splits and data order (default: the "
                       "checkpoint's, from run.json, so search-val holds no training image; else 0)")  # fmt: skip
    else:
        p.add_argument("--seed", type=int, default=0, help="seed for splits, data order and weights (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def cmd_train(args: argparse.Namespace) -> int:
    """Trains one genome with the search recipe; writes history, checkpoint and weights to --out."""
    from menas.config import TrainConfig, to_dict
    from menas.data.datasets import build_loaders, preprocessing, resolve_device
    from menas.nn.builder import build_model
    from menas.train.checkpoint import WEIGHTS_FILE, save_weights
    from menas.train.loop import check_checkpoint_owner, check_resumable, seed_trial, train

    genome = parse_genome_arg(args.genome)
    data_cfg = _data_config(args)
    train_cfg = TrainConfig.preset(args.recipe, epochs=args.epochs, seed=args.seed, threads=args.threads)
    if args.lr is not None:
        train_cfg = dataclasses.replace(train_cfg, lr=args.lr)
    out = Path(args.out)
    if not args.restart:  # before anything is written: --out may hold another network's checkpoint
        check_checkpoint_owner(out / "train.ckpt", {"genome": genome.to_str()})
    device = resolve_device(args.device)
    data = build_loaders(data_cfg, device)
    if not args.restart:  # nor resume it with another recipe or seed: refused before run.json is rewritten
        check_resumable(out / "train.ckpt", train_cfg, data.train)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", {"genome": genome.to_str(), "data": to_dict(data_cfg), "train": to_dict(train_cfg),
                                   "device": str(device), "split_digest": data.split_digest,
                                   "preprocessing": preprocessing(data)})  # fmt: skip
    seed_trial(args.seed)
    model = build_model(genome, data.num_classes, data.in_chans)
    cost = count_cost(genome, data.input_size, data.in_chans, data.num_classes)
    console = _console()
    console.print(f"{genome.to_str()}\n{format_count(cost.macs)} MACs, {format_count(cost.params)} params at "
                  f"{data.input_size} px; {data.train.num_samples} search-train / {data.val.num_samples} search-val "
                  f"images on {device}")  # fmt: skip
    with _progress() as progress:
        task = progress.add_task("epochs", total=args.epochs)

        def on_epoch(stats: Any) -> None:
            progress.update(task, completed=stats.epoch, description=f"epoch {stats.epoch}: loss "
                            f"{stats.train_loss:.3f}, val top-1 {stats.val_top1 or 0:.2f}%")  # fmt: skip

        history = train(model, data.train, data.val, train_cfg, checkpoint_path=out / "train.ckpt",
                        resume=not args.restart, progress=on_epoch)  # fmt: skip
    write_json(out / "history.json", history.to_dict())
    save_weights(model, genome, out / WEIGHTS_FILE)
    last = history.epochs[-1]
    console.print(f"search-val top-1 {history.val_top1:.2f}%, epoch time {last.seconds:.1f} s, "
                  f"{last.images_per_s:,.0f} img/s; wrote {out}/")  # fmt: skip
    return 0


def _load_trained(path_text: str, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(model, data, train config, data config) from a `menas train` folder or a weights file (then --data is
    required)."""
    from menas.config import DataConfig, TrainConfig, from_dict
    from menas.data.datasets import build_loaders, resolve_device
    from menas.train.checkpoint import load_weights, resolve_checkpoint

    weights, recorded = resolve_checkpoint(Path(path_text), f"checkpoint: {path_text!r} not found (give a `menas train "
                                    "--out` folder or .safetensors)")  # fmt: skip
    base = from_dict(DataConfig, recorded["data"], "data") if "data" in recorded else None
    if base is None and args.data is None:
        raise UserError(f"--data: required, {str(weights.with_name('run.json'))!r} does not record the dataset")
    data_cfg = _data_config(args, base)  # the recorded data config (and seed) unless an argument overrides it
    recorded_digest = recorded.get("split_digest")
    train_cfg = from_dict(TrainConfig, recorded["train"], "train") if "train" in recorded else TrainConfig()
    if args.threads:
        train_cfg = dataclasses.replace(train_cfg, threads=args.threads)
    data = build_loaders(data_cfg, resolve_device(args.device))
    if recorded_digest is not None and data.split_digest != recorded_digest:
        logging.getLogger(__name__).warning(
            "the search split (seed %s) is not the one %s was trained with: search-val may hold training images",
            data_cfg.seed, weights)  # fmt: skip
    model = load_weights(weights, data.num_classes, data.in_chans).to(data.train.device)
    return model, data, train_cfg, data_cfg


def cmd_lottery(args: argparse.Namespace) -> int:
    """Searches the lottery ticket of a trained network, or diagnoses whether the method works on the data."""
    import random as _random

    from menas.config import LotteryConfig
    from menas.prune.lottery import calibration_batches, search_ticket

    keep = parse_range(args.macs_keep, "--macs-keep") if args.macs_keep else None
    cfg = LotteryConfig(proposals=args.proposals, importance=args.importance, macs_keep=keep,
                        tolerance=args.tolerance, score_images=args.score_images)  # fmt: skip
    if args.finetune_epochs is not None and args.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs: got {args.finetune_epochs}, allowed: integers >= 0")
    if args.out and args.diagnose:
        raise UserError("--out: writes a ticket, so it cannot be combined with --diagnose")
    model, data, train_cfg, data_cfg = _load_trained(args.checkpoint, args)
    console = _console()
    if train_cfg.threads:
        import torch

        torch.set_num_threads(train_cfg.threads)
    if args.diagnose:
        return _print_diagnosis(model, data, cfg, train_cfg, args, console)
    calib = calibration_batches(data.train, cfg.calib_batches, epoch=0)
    result = search_ticket(model, calib, data.val, cfg, _random.Random(args.proposal_seed), data.input_size)
    table = Table(title=f"{len(result.scored)} pruning proposals (scored on {cfg.score_images or 'all'} images, "
                  f"best {cfg.rescore_top} re-scored on all {data.val.num_samples})")  # fmt: skip
    for column in ("#", "mean mid rate", "MACs", "params", "subset top-1", "full top-1"):
        table.add_column(column, justify="right")
    for s in sorted(result.scored, key=lambda s: -s.subset_score):
        full = "-" if s.full_score is None else f"{s.full_score:.2f}%"
        table.add_row(str(s.index), f"{s.proposal.mean_mid_rate:.2f}", format_count(s.macs), format_count(s.params),
                      f"{s.subset_score:.2f}%", full)  # fmt: skip
    console.print(table)
    console.print(f"unpruned (recalibrated): {result.parent_score:.2f}%, {format_count(result.parent_macs)} MACs, "
                  f"{format_count(result.parent_params)} params; search took {result.seconds:.1f} s")  # fmt: skip
    if result.chosen is None:
        console.print(f"no proposal within {cfg.tolerance:g} points of the unpruned network: it stays the ticket")
    else:
        c = result.chosen
        share = 100 * c.macs / result.parent_macs
        console.print(f"ticket: proposal {c.index}, {c.full_score:.2f}% ({format_count(c.macs)} MACs, {share:.0f}% "
                      f"of the unpruned)\n{c.proposal.genome.to_str()}")  # fmt: skip
    finetuned = _finetune_ticket(result, data, train_cfg, cfg, args.finetune_epochs or 0, console)
    if args.out:
        from menas.data.datasets import preprocessing

        _write_lottery_out(Path(args.out), result, finetuned, data_cfg, train_cfg, args, console, preprocessing(data))
    return 0


def _finetune_ticket(result: Any, data: Any, train_cfg: Any, cfg: Any, epochs: int, console: Console) -> float | None:
    """Fine-tunes the chosen ticket in place (at `lottery.finetune_lr_scale` x the training lr, as trials do)
    and returns its search-val top-1; None when nothing was fine-tuned."""
    if epochs <= 0 or result.chosen is None:
        return None
    from menas.train.loop import train

    ft_cfg = train_cfg.finetune(epochs, data.train.batch_size, cfg.finetune_lr_scale)
    history = train(result.ticket_model, data.train, data.val, ft_cfg)
    console.print(f"fine-tuned the ticket for {epochs} epoch(s): {result.ticket_score:.2f}% -> "
                  f"{history.val_top1:.2f}% search-val top-1")  # fmt: skip
    return history.val_top1


def _write_lottery_out(
    out: Path, result: Any, finetuned: float | None, data_cfg: Any, train_cfg: Any, args: argparse.Namespace,
    console: Console, preprocessing: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Writes lottery.json (every proposal and the choice) and, when a ticket won, its weights and run.json, so
    the folder is a checkpoint `menas lottery` / `menas train`-style commands load like any other; run.json
    records `preprocessing` (what the lottery's loaders fed the ticket: `menas.data.datasets.preprocessing`) like
    `menas train`'s, so export and evaluate use the recorded statistics."""
    from menas.config import to_dict
    from menas.train.checkpoint import WEIGHTS_FILE, save_weights

    out.mkdir(parents=True, exist_ok=True)
    chosen = result.chosen
    record = result.to_record(finetuned, args.finetune_epochs or 0)
    write_json(out / "lottery.json", record)
    if chosen is None:
        console.print(f"wrote {out}/lottery.json (no ticket: no weights written)")
        return
    run = {"genome": chosen.proposal.genome.to_str(), "data": to_dict(data_cfg), "train": to_dict(train_cfg),
           "pruned_from": result.parent_genome.to_str()}  # fmt: skip
    if preprocessing is not None:
        run["preprocessing"] = preprocessing
    write_json(out / "run.json", run)
    save_weights(result.ticket_model, chosen.proposal.genome, out / WEIGHTS_FILE)
    console.print(f"wrote {out}/ ({WEIGHTS_FILE}, run.json, lottery.json)")


def _print_diagnosis(
    model: Any, data: Any, cfg: Any, train_cfg: Any, args: argparse.Namespace, console: Console
) -> int:
    from menas.prune.diagnose import diagnose

    with _progress() as progress:
        task = progress.add_task("proposals fine-tuned twice", total=args.M)
        epochs = 1 if args.finetune_epochs is None else args.finetune_epochs
        result = diagnose(model, data, cfg, train_cfg, proposals=args.M, finetune_epochs=epochs,
                          seed=args.proposal_seed, progress=lambda n: progress.update(task, completed=n))  # fmt: skip
    table = Table(title=f"correlation with the fine-tuned accuracy ({args.M} proposals, {epochs} "
                  f"epoch(s) of fine-tuning scored on {result.finetune_images} images; quick scores on "
                  f"{result.subset_images})")  # fmt: skip
    for column in ("quick score", "Pearson", "Spearman", "Kendall"):
        table.add_column(column, justify="right")
    rows = (
        ("without BN recalibration", result.stale),
        ("with BN recalibration", result.recalibrated),
        (f"with BN recalibration, all {result.finetune_images} images", result.recalibrated_full),
        ("noise ceiling (2nd fine-tune)", result.noise_ceiling),
    )
    for name, corr in rows:
        table.add_row(name, f"{corr.pearson:.3f}", f"{corr.spearman:.3f}", f"{corr.kendall:.3f}")
    console.print(table)
    return 0


def _search_config(args: argparse.Namespace) -> Any:
    from menas.config import SearchConfig, apply_override, load_yaml

    cfg = load_yaml(SearchConfig, args.config, "config") if args.config else SearchConfig()
    for assignment in args.set or []:
        cfg = apply_override(cfg, assignment, "config")
    return cfg


def _run_search(search: Any, console: Console) -> int:
    from menas.search.engine import describe

    strategy = search.strategy
    with _progress() as progress:
        task = progress.add_task("trials", total=strategy.total_trials, completed=len(search.store.finished()))

        def on_result(spec: Any, result: Any) -> None:
            best = search.store.best()
            best_text = f"best {best.final_score:.2f}%" if best and best.final_score is not None else "no best yet"
            score = result.final_score
            progress.update(task, advance=1, description=f"generation {spec.generation}, trial {spec.trial_id}: "
                            f"{'failed' if score is None else f'{score:.2f}%'}; {best_text}")  # fmt: skip

        def on_epoch(spec: Any, phase: str, stats: Any) -> None:
            best = search.store.best()
            best_text = f"best {best.final_score:.2f}%" if best and best.final_score is not None else "no best yet"
            progress.update(task, description=f"generation {spec.generation}, trial {spec.trial_id}: {phase} epoch "
                            f"{stats.epoch}, val {stats.val_top1 or 0:.2f}%; {best_text}")  # fmt: skip

        summary = search.run(on_result=on_result, on_epoch=on_epoch)
    for line in describe(summary):
        console.print(line)
    console.print(f"run folder: {search.run_dir} (config.yaml, menas.sqlite, trials/)")
    console.print(f"next: `menas report {search.run_dir}` (figures, tables), `menas export {search.run_dir} --out "
                  f"{search.run_dir}/export` (the best network)")  # fmt: skip
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Starts a search in a new run folder."""
    from menas.search.engine import Search
    from menas.search.store import store_path

    cfg = _search_config(args)
    out = Path(args.out)
    if store_path(out).exists():
        raise UserError(f"--out: {str(out)!r} already holds a search; `menas resume {out}` continues it")
    return _run_search(Search(cfg, out), _console())


def cmd_resume(args: argparse.Namespace) -> int:
    """Continues a search after a crash or Ctrl-C: finished trials are kept, in-flight ones re-run."""
    from menas.search.engine import CONFIG_FILE, Search, load_run_config

    run = Path(args.run)
    cfg = load_run_config(run) if (run / CONFIG_FILE).is_file() else None  # None: the store's config as it is
    return _run_search(Search(cfg, run, resume=True, accept_config_change=args.accept_config_change), _console())


def cmd_report(args: argparse.Namespace) -> int:
    """Figures and tables of a search (works while it runs): accuracy vs MACs per generation, epoch time per
    generation, Pareto front, trials.csv and report.md."""
    from menas.report.build import write_report
    from menas.search.store import store_path

    run = Path(args.run)
    if not store_path(run).exists():
        raise UserError(f"run: {str(run)!r} holds no search (no menas.sqlite)")
    paths = write_report(run, args.out)
    console = _console()
    console.print(f"wrote {len(paths)} files to {paths[0].parent}/: " + ", ".join(p.name for p in paths))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Exports a network (a search's best, a `menas train`/`lottery --out` folder, an export folder or a weights
    file): genome.json, safetensors weights, the asked graph formats, each checked against the model, and a
    README.md on loading them and preprocessing inputs."""
    from menas.winner.export import check_requirements, export_model, parse_formats

    formats = parse_formats(args.format)
    check_requirements(formats)  # before loading anything or writing a file
    model, input_size, info, pre = _export_source(Path(args.source), args.input_size)
    result = export_model(model, args.out, input_size, formats, info, pre)
    console = _console()
    cost = count_cost(model.genome, input_size, model.stem.conv.in_channels, model.num_classes)
    console.print(f"{model.genome.to_str()}\n{format_count(cost.macs)} MACs, {format_count(cost.params)} params at "
                  f"{input_size} px")  # fmt: skip
    for name, path in result.files.items():
        checked = ""
        if name in result.max_abs_diff:  # a graph: how close it came to the model (None: no runtime to check it)
            diff = result.max_abs_diff[name]
            checked = " (not checked)" if diff is None else f" (max |diff| vs the model {diff:.2g})"
        console.print(f"  {name}: {path}{checked}")
    for note in result.notes:
        console.print(f"  note: {note}")
    if "mean" not in pre:
        console.print(f"  note: preprocessing unknown ({pre.get('reason')})")
    return 0


def _export_source(path: Path, input_size: int | None) -> tuple[Any, int, dict[str, Any], dict[str, Any]]:
    """(model, input size, provenance, preprocessing) of a run folder (its best trial), a checkpoint or export
    folder, or a weights file."""
    from menas.config import to_dict
    from menas.train.checkpoint import load_weights
    from menas.winner.load import find_network, network_preprocessing

    source = find_network(path)
    if input_size is None:
        input_size = source.input_size
    if input_size is None:
        raise UserError(f"--input-size: required, {str(path)!r} does not record the input size")
    if input_size < 1:
        raise UserError(f"--input-size: got {input_size}, allowed: integers >= 1")
    info = dict(source.info)
    if source.data is not None:
        info["data"] = to_dict(source.data)
    return load_weights(source.weights), input_size, info, network_preprocessing(source)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Top-1, top-5, loss and img/s of a network on the test split (or its search-val split), with a confusion
    matrix (JSON and figure)."""
    from menas.winner.evaluate import evaluate_network

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size: got {args.batch_size}, allowed: integers >= 1")
    result = evaluate_network(args.checkpoint, split=args.split, dataset=args.data, root=args.root,
                              input_size=args.input_size, batch_size=args.batch_size, out=args.out,
                              device=args.device, threads=args.threads)  # fmt: skip
    record = result.record
    console = _console()
    console.print(f"{record['genome']}\n{record['data']['dataset']} {result.split} split, {result.images:,} images: "
                  f"top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}%, loss {result.loss:.4f}; "
                  f"{result.images_per_s:,.0f} img/s on {record['device']} (batch {record['batch_size']})")  # fmt: skip
    console.print(f"wrote {result.files['json']} and {result.files['figure']}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Retrains a network (a run's best or chosen trial, a checkpoint folder or a genome) with a named recipe on
    the whole training split, optionally distilled; scores raw and EMA weights once on the test split."""
    from menas.winner.retrain import RETRAIN_FILE, resolve_source, retrain

    if args.epochs < 1:
        raise UserError(f"--epochs: got {args.epochs}, allowed: integers >= 1")
    if args.teacher_weights and not args.teacher:
        raise UserError("--teacher-weights: only with --teacher NAME")
    source = resolve_source(args.source, args.trial, args.rank)
    cfg = _recipe(args, _retrain_data(args, source.data))
    teacher = (args.teacher, args.teacher_weights) if args.teacher else None
    return _run_final_training(
        lambda device, **hooks: retrain(source, cfg, Path(args.out), device=device, init=args.init, teacher=teacher,
                                        **hooks),
        args, source, cfg, "test", RETRAIN_FILE,
    )  # fmt: skip


def _retrain_data(args: argparse.Namespace, recorded: Any) -> Any:
    """The data config of a retrain: the source's recorded one, or --data (--root overrides either)."""
    from menas.config import DataConfig

    data = recorded
    if args.data is not None:
        data = dataclasses.replace(data or DataConfig(), dataset=args.data, root=args.root)
    elif args.root is not None and data is not None:
        data = dataclasses.replace(data, root=args.root)
    if data is None:
        raise UserError(f"--data: required, {args.source!r} does not record its dataset")
    return data


def _recipe(args: argparse.Namespace, data: Any) -> Any:
    """The named recipe preset (--recipe) on `data` for --epochs, then --set overrides and --threads."""
    from menas.config import RetrainConfig, apply_override

    cfg = RetrainConfig.preset(args.recipe, data, args.epochs)
    for assignment in args.set or []:
        cfg = apply_override(cfg, assignment, "recipe")
    if args.threads:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=args.threads))
    return cfg


def _run_final_training(
    run: Callable[..., dict[str, Any]], args: argparse.Namespace, source: Any, cfg: Any, split_name: str,
    result_file: str,
) -> int:  # fmt: skip
    """Runs a retrain or transfer (`run(device, progress=, on_start=)`) with one progress bar (rank 0 under
    torchrun, started once the inputs are checked so that errors stay one line) and prints its test scores."""
    from rich.progress import TimeRemainingColumn

    from menas.data.datasets import resolve_device
    from menas.train import distributed

    device = distributed.init_from_env(resolve_device(args.device))  # under torchrun: join the ranks
    console = _console()
    progress = _progress(TimeRemainingColumn())
    task = progress.add_task("epochs", total=cfg.train.epochs)

    def on_start(data: Any, cost: Any, done: int) -> None:
        genome = source.genome.to_str() if source.genome else ""
        console.print(f"{genome}\n{format_count(cost.macs)} MACs, {format_count(cost.params)} params at "
                      f"{data.input_size} px; {data.num_classes} classes, {data.in_chans} channel(s); recipe "
                      f"{cfg.recipe}, {cfg.train.epochs} epochs, {data.train.num_samples} train / "
                      f"{data.val.num_samples} held-out images on {device}; from {source.label}"
                      f"{f'; resuming after epoch {done}' if done else ''}")  # fmt: skip
        progress.update(task, completed=done)
        progress.start()

    def on_epoch(stats: Any) -> None:
        progress.update(task, completed=stats.epoch, description=f"epoch {stats.epoch}: loss {stats.train_loss:.3f}, "
                        f"held-out top-1 {stats.val_top1 or 0:.2f}%, {stats.images_per_s:,.0f} img/s")  # fmt: skip

    rank0 = distributed.is_main()  # one progress bar under torchrun
    try:
        record = run(device, progress=on_epoch if rank0 else None, on_start=on_start if rank0 else None)
    finally:
        progress.stop()
    if not rank0:
        return 0
    raw, ema = record["test"]["raw"], record["test"]["ema"]
    line = f"{split_name} top-1 {raw['top1']:.2f}% (top-5 {raw['top5']:.2f}%, loss {raw['loss']:.3f})"
    if ema is not None:
        line += f", EMA {ema['top1']:.2f}% (top-5 {ema['top5']:.2f}%, loss {ema['loss']:.3f})"
    console.print(f"{line}; kept the {record['kept']} weights; {record['wall_seconds'] / 60:.1f} min, "
                  f"{record['images_per_s']:,.0f} img/s; wrote {args.out}/ ({result_file}, model.safetensors, "
                  "recipe.yaml, run.json)")  # fmt: skip
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """Fine-tunes a trained network on another dataset (new classifier, stem adapted to the channel count) and
    scores it once on that dataset's test split."""
    from menas.config import DataConfig
    from menas.winner.load import find_network
    from menas.winner.transfer import TRANSFER_FILE, transfer

    if args.epochs < 1:
        raise UserError(f"--epochs: got {args.epochs}, allowed: integers >= 1")
    source = find_network(args.checkpoint)
    cfg = _recipe(args, DataConfig(dataset=args.data, root=args.root))
    return _run_final_training(
        lambda device, **hooks: transfer(source, cfg, Path(args.out), device=device, **hooks),
        args, source, cfg, f"{args.data} test", TRANSFER_FILE,
    )  # fmt: skip


def cmd_status(args: argparse.Namespace) -> int:
    """Progress of a search, readable while it runs; torch-free (reads the store, counts trials with the strategy)."""
    from menas.config import SearchConfig, from_dict
    from menas.search.store import Store, estimate_time_left, store_path
    from menas.search.strategies import compute_limits, make_strategy

    run = Path(args.run)
    if not store_path(run).exists():
        raise UserError(f"run: {str(run)!r} holds no search (no menas.sqlite)")
    with Store.open(run, readonly=True) as store:
        info, trials = store.snapshot()
        summaries = store.generation_summary()
        phases = {p.generation: p for p in store.generation_phases()}
        used = store.compute_used()
        best = store.best()
        cfg = from_dict(SearchConfig, store.config(), "run config")
    total = make_strategy(cfg).total_trials
    counts = {
        status: sum(1 for t in trials if t.status == status) for status in ("done", "failed", "running", "queued")
    }
    console = _console()
    console.print(f"run {run}: {info.status}, space {cfg.space}, strategy {cfg.strategy.name}, "
                  f"{counts['done']} done, {counts['failed']} failed, {counts['running']} running, "
                  f"{counts['queued']} queued")  # fmt: skip
    table = Table(title="generations")
    for column in ("gen", "trials", "done", "failed", "best top-1", "median cand. top-1", "mean final MACs",
                   "mean train epoch s", "replaced"):  # fmt: skip
        table.add_column(column, justify="right")
    for g in summaries:
        phase = phases.get(g.generation)
        replaced = "-" if phase is None or phase.replaced_share is None else f"{100 * phase.replaced_share:.0f}%"
        table.add_row(str(g.generation), str(g.trials), str(g.done), str(g.failed), _pct(g.ticket_score_best),
                      _pct(g.score_median), format_count(g.ticket_macs_mean or 0), _num(g.epoch_s_mean),
                      replaced)  # fmt: skip
    console.print(table)
    console.print(_compute_line(used, compute_limits(cfg)))
    if best is not None:
        console.print(f"best so far: trial {best.trial_id}, {_pct(best.final_score)}, "
                      f"{format_count(best.final_macs or 0)} MACs, {format_count(best.final_params or 0)} params\n"
                      f"{best.ticket or best.genome}")  # fmt: skip
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


def _print_inheritance(trials: Any, console: Any) -> None:
    """One line on individual weight sharing (`menas.report.build.inheritance`), when some trial tried to inherit."""
    from menas.report.build import inheritance

    rows = inheritance(trials)
    if rows:
        tried, ok = sum(g.tried for g in rows), sum(g.inherited for g in rows)
        tensors = sum(g.copied + g.sliced + g.padded for g in rows)
        console.print(f"weight inheritance: {ok} of {tried} bred children inherited ({tensors} tensors), "
                      f"{tried - ok} fell back to scratch; saved {sum(g.epochs_saved for g in rows)} epochs, "
                      f"{format_count(sum(g.images_saved for g in rows))} training images")  # fmt: skip


def _time_left_line(estimate: Any, total: int) -> str:
    """`menas status`'s estimate (`store.TimeLeft`), saying when the `compute` budget ends the run before the
    strategy's trials are all done."""
    how = "one at a time" if estimate.parallel < 1.05 else f"{estimate.parallel:.1f} at a time so far"
    line = (f"{estimate.per_trial_s:.1f} s per trial on average; about {estimate.seconds / 60:.1f} min left for "
            f"{estimate.trials_left} ")  # fmt: skip
    if estimate.bound == "trials":
        return line + f"of {total} trials ({how})"
    budget = "compute.images" if estimate.bound == "images" else "compute.trial_s"
    return line + f"more trials ({how}): the compute budget ({budget}) stops the run before all {total} trials"


def _compute_line(used: Any, limits: tuple[float, float]) -> str:
    """The search compute used so far (`store.ComputeUsed`) against the config's `compute` budget."""
    images, trial_s = limits
    parts = [f"{format_count(used.images)} training-image equivalents" + ("" if images == float("inf") else
             f" of {format_count(images)} ({100 * used.images / images:.0f}%)"),
             f"{used.trial_s / 60:.1f} trial-min" + ("" if trial_s == float("inf") else
             f" of {trial_s / 60:.1f} ({100 * used.trial_s / trial_s:.0f}%)")]  # fmt: skip
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
        table.add_row("-" if r.trial_id is None else str(r.trial_id), r.recipe + (" +KD" if r.teacher else ""),
                      str(r.epochs), _pct(r.test_top1), _pct(r.ema_top1), r.kept, format_count(r.macs or 0),
                      format_count(r.params or 0), _num((r.wall_s or 0) / 60), r.out)  # fmt: skip
    console.print(table)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="menas", description="Multi-trial evolutionary NAS with lottery tickets.")
    parser.add_argument("--version", action="version", version=f"menas {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("inspect", help="per-layer table of a genome with MACs and params")
    p.add_argument("genome", help="a genome string, a reference name (mobilenetv3_large_100) or a .json/.txt file")
    _add_shape_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("sample", help="random genomes of a space within a compute budget")
    p.add_argument("--space", default="mobilenet3-mt", help="preset name or YAML file (default mobilenet3-mt)")
    p.add_argument("--macs", default=None, help="MACs range MIN:MAX with K/M/G suffixes, e.g. 150M:300M")
    p.add_argument("--params-max", type=_count_arg("--params-max"), default=None, help="e.g. 8M")
    _add_shape_args(p)
    p.add_argument("-n", type=int, default=5, help="how many genomes (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train", help="train one genome with the search recipe (early-stop epochs)")
    p.add_argument("genome", help="a genome string, a reference name or a .json/.txt file")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument("--recipe", default="short", choices=["short", "paper"],
                   help="training recipe: short (default; trains in 2-3 epochs) or paper (the paper's search "
                   "recipe: step decay from 0.064 x batch / 1024, for 30+ epochs)")  # fmt: skip
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's, scaled to "
                   "the batch)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (history.json, train.ckpt, model.safetensors)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="run a search (config YAML + overrides) in a new run folder")
    p.add_argument("--config", default=None, help="search config YAML (default: built-in defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.epochs=2")
    p.add_argument("--out", required=True, help="run folder (config.yaml, menas.sqlite, trials/)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("retrain", help="retrain a network with the full recipe; score it on the test split")
    p.add_argument("source", help="a run folder (its best network), a checkpoint folder / .safetensors file, or a "
                   "genome (string, reference name or file; then --data)")  # fmt: skip
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--out", required=True, help="output folder (resumes when it holds this retrain's checkpoint)")
    p.add_argument("--recipe", default="short", choices=["short", "paper"],
                   help="short (default: a few CPU epochs) or paper (the paper's final recipe)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="recipe override, e.g. --set train.lr=0.01 --set data.batch_size=256")  # fmt: skip
    p.add_argument("--init", default="scratch", choices=["scratch", "trial"],
                   help="scratch (default, as the paper) or trial (from the source's trained weights)")  # fmt: skip
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="a run's trial id instead of its best")
    which.add_argument("--rank", type=int, default=None, help="the run's K-th best trial (1 = best)")
    p.add_argument("--teacher", default=None, help="distil from a menas run/checkpoint/weights, or a timm model "
                   "name with --teacher-weights")  # fmt: skip
    p.add_argument("--teacher-weights", default=None, help="weights file (.safetensors or .pth) of a timm teacher")
    p.add_argument("--data", default=None, help="dataset (required for a genome string; overrides the recorded)")
    p.add_argument("--root", default=None, help="dataset folder (default: the recorded or the dataset's usual)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("transfer", help="fine-tune a trained network on another dataset; score it on its test split")
    p.add_argument("checkpoint", help="a retrain/checkpoint/export folder, a run folder (its best) or .safetensors")
    p.add_argument("--data", required=True, choices=["cifar10", "cifar100", "imagefolder", "fashion-mnist", "digits",
                   "synthetic"], help="the dataset to transfer to")  # fmt: skip
    p.add_argument("--root", default=None, help="dataset folder (default: the dataset's usual place)")
    p.add_argument("--epochs", type=int, required=True, help="fine-tuning epochs")
    p.add_argument("--out", required=True, help="output folder (resumes when it holds this transfer's checkpoint)")
    p.add_argument("--recipe", default="transfer", choices=["transfer", "short", "paper"],
                   help="transfer (default: the short recipe, 0.1-epoch warmup), short or paper")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="recipe override, e.g. --set train.lr=0.01 --set data.input_size=64")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("resume", help="continue a search after a crash or Ctrl-C")
    p.add_argument("run", help="the run folder")
    p.add_argument("--accept-config-change", action="store_true",
                   help="go on with an edited config.yaml (the change is logged in the store); without it, a "
                   "config.yaml that differs from the run's stored config is refused")  # fmt: skip
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", help="progress of a search (works while it runs)")
    p.add_argument("run", help="the run folder")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="genome, weights and TorchScript/torch.export/ONNX graphs of a network")
    p.add_argument("source", help="a run folder (its best network), a `menas train`/`lottery --out` folder, an "
                   "export folder or a .safetensors file")  # fmt: skip
    p.add_argument("--out", required=True, help="folder for genome.json, model.* and export.json")
    p.add_argument(
        "--format",
        default="safetensors,torchscript,pt2",
        help="comma list of safetensors, torchscript, pt2, onnx (default safetensors,torchscript,pt2; onnx needs "
        "pip install 'menas[export]')",
    )
    p.add_argument("--input-size", type=int, default=None, help="image side in px (default: the recorded one)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="top-1, top-5, loss, img/s and confusion matrix on the test split")
    p.add_argument("checkpoint", help="a run folder (its best network), a checkpoint or export folder, or a "
                   ".safetensors file")  # fmt: skip
    p.add_argument("--data", default=None, help="dataset (default: the recorded one); as for `menas train`")
    p.add_argument("--root", default=None, help="dataset folder (default: the recorded one, else the usual place)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="test: the official test split (default); val: the recorded search-val split")  # fmt: skip
    p.add_argument("--out", default=None, help="folder for evaluate-SPLIT.json and confusion-SPLIT.png (default: "
                   "beside the weights; a run's folder)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: the recorded one)")
    p.add_argument("--input-size", type=int, default=None, help="image side in px (default: the recorded one)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="plots and tables of a search (works while it runs)")
    p.add_argument("run", help="the run folder")
    p.add_argument("--out", default=None, help="folder for the report (default: RUN/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("lottery", help="lottery-ticket search (or --diagnose) on a trained network")
    p.add_argument("checkpoint", help="a `menas train --out` folder or a model.safetensors file")
    _add_data_args(p, required=False, recorded_seed=True)
    p.add_argument("--proposal-seed", type=int, default=0,
                   help="seed of the pruning proposals (and of --diagnose's fine-tuning; default 0)")  # fmt: skip
    p.add_argument("-P", "--proposals", type=int, default=50, help="pruning proposals (default 50)")
    p.add_argument("--macs-keep", default=None, help="share of MACs to keep, LOW:HIGH, e.g. 0.5:0.9")
    p.add_argument("--importance", default="l1", choices=["l1", "first"], help="which channels to keep")
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points a ticket may lose (default 1)")
    p.add_argument("--score-images", type=int, default=512, help="first-round scoring subset (default 512)")
    p.add_argument("--diagnose", action="store_true", help="correlate quick scores with fine-tuned accuracy")
    p.add_argument("-M", type=int, default=20, help="proposals for --diagnose (default 20)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="fine-tune epochs: of the chosen ticket (default 0), of each proposal with --diagnose "
                   "(default 1)")  # fmt: skip
    p.add_argument("--out", default=None, help="folder for the ticket's weights, run.json and lottery.json")
    p.set_defaults(func=cmd_lottery)

    p = sub.add_parser("space", help="search spaces")
    space_sub = p.add_subparsers(dest="space_command", required=True, parser_class=_Parser)
    p = space_sub.add_parser("show", help="a space's dimensions and choices")
    p.add_argument("name", help=f"preset ({', '.join(PRESETS)}) or YAML file")
    p.add_argument("--yaml", action="store_true", help="print the space as YAML (a starting point for your own)")
    _add_shape_args(p)
    p.set_defaults(func=cmd_space_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a command. A user mistake (`UserError`) is one line and exit 2; menas' own failure (`MenasError`) one
    line and exit 1; anything else is a bug: one line and exit 1, with the traceback under `--debug` or
    MENAS_DEBUG=1."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("MENAS_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="menas: %(levelname)s: %(message)s")
    try:
        return args.func(args)
    except UserError as exc:
        print(f"menas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file or folder the user named cannot be read or written (missing, permissions, full)
        print(f"menas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MenasError as exc:  # menas' own failures (a stopped search, an export that does not match): one line
        print(f"menas: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("menas: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so, and where to find the traceback
        if debug:
            raise
        print(f"menas: internal error: {type(exc).__name__}: {exc} (a bug: run with --debug or MENAS_DEBUG=1 for "
              "the traceback, and please report it)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
