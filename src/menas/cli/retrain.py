"""`menas retrain`: the final training of a chosen network with a named recipe, scored once on the test split;
`recipe` and `run_final_training` serve `menas transfer` too. The torch-side modules are imported inside the
functions."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from menas.cli.common import make_console, make_progress
from menas.errors import UserError
from menas.space.cost import format_count


def cmd_retrain(args: argparse.Namespace) -> int:
    """Retrains a network (a run's best or chosen trial, a checkpoint folder or a genome) with a named recipe on
    the whole training split, optionally distilled; scores raw and EMA weights once on the test split."""
    from menas.winner.retrain import RETRAIN_FILE, resolve_source, retrain

    if args.epochs < 1:
        raise UserError(f"--epochs: got {args.epochs}, allowed: integers >= 1")
    if args.teacher_weights and not args.teacher:
        raise UserError("--teacher-weights: only with --teacher NAME")
    source = resolve_source(args.source, args.trial, args.rank)
    cfg = recipe(args, _retrain_data(args, source.data))
    teacher = (args.teacher, args.teacher_weights) if args.teacher else None
    return run_final_training(
        lambda device, **hooks: retrain(
            source, cfg, Path(args.out), device=device, init=args.init, teacher=teacher, **hooks
        ),
        args,
        source,
        cfg,
        "test",
        RETRAIN_FILE,
    )


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


def recipe(args: argparse.Namespace, data: Any) -> Any:
    """The named recipe preset (--recipe) on `data` for --epochs, then --set overrides and --threads."""
    from menas.config import RetrainConfig, apply_override

    cfg = RetrainConfig.preset(args.recipe, data, args.epochs)
    for assignment in args.set or []:
        cfg = apply_override(cfg, assignment, "recipe")
    if args.threads:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=args.threads))
    return cfg


def run_final_training(
    run: Callable[..., dict[str, Any]],
    args: argparse.Namespace,
    source: Any,
    cfg: Any,
    split_name: str,
    result_file: str,
) -> int:
    """Runs a retrain or transfer (`run(device, progress=, on_start=)`) with one progress bar (rank 0 under
    torchrun, started once the inputs are checked so that errors stay one line) and prints its test scores."""
    from rich.progress import TimeRemainingColumn

    from menas.data.device import resolve_device
    from menas.train import distributed

    device = distributed.init_from_env(resolve_device(args.device))  # under torchrun: join the ranks
    console = make_console()
    progress = make_progress(TimeRemainingColumn())
    task = progress.add_task("epochs", total=cfg.train.epochs)

    def on_start(data: Any, cost: Any, done: int) -> None:
        genome = source.genome.to_str() if source.genome else ""
        console.print(
            f"{genome}\n{format_count(cost.macs)} MACs, {format_count(cost.params)} params at "
            f"{data.input_size} px; {data.num_classes} classes, {data.in_chans} channel(s); recipe "
            f"{cfg.recipe}, {cfg.train.epochs} epochs, {data.train.num_samples} train / "
            f"{data.val.num_samples} held-out images on {device}; from {source.label}"
            f"{f'; resuming after epoch {done}' if done else ''}"
        )
        progress.update(task, completed=done)
        progress.start()

    def on_epoch(stats: Any) -> None:
        progress.update(
            task,
            completed=stats.epoch,
            description=f"epoch {stats.epoch}: loss {stats.train_loss:.3f}, "
            f"held-out top-1 {stats.val_top1 or 0:.2f}%, {stats.images_per_s:,.0f} img/s",
        )

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
    console.print(
        f"{line}; kept the {record['kept']} weights; {record['wall_seconds'] / 60:.1f} min, "
        f"{record['images_per_s']:,.0f} img/s; wrote {args.out}/ ({result_file}, model.safetensors, "
        "recipe.yaml, run.json)"
    )
    return 0


def _add_retrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="retrain a network with the full recipe; score it on the test split")
    p.add_argument(
        "source",
        help="a run folder (its best network), a checkpoint folder / .safetensors file, or a "
        "genome (string, reference name or file; then --data)",
    )
    p.add_argument("--epochs", type=int, required=True, help="training epochs")
    p.add_argument("--out", required=True, help="output folder (resumes when it holds this retrain's checkpoint)")
    p.add_argument(
        "--recipe",
        default="short",
        choices=["short", "paper"],
        help="short (default: a few CPU epochs) or paper (the paper's final recipe)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="recipe override, e.g. --set train.lr=0.01 --set data.batch_size=256",
    )
    p.add_argument(
        "--init",
        default="scratch",
        choices=["scratch", "trial"],
        help="scratch (default, as the paper) or trial (from the source's trained weights)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="a run's trial id instead of its best")
    which.add_argument("--rank", type=int, default=None, help="the run's K-th best trial (1 = best)")
    p.add_argument(
        "--teacher",
        default=None,
        help="distil from a menas run/checkpoint/weights, or a timm model name with --teacher-weights",
    )
    p.add_argument("--teacher-weights", default=None, help="weights file (.safetensors or .pth) of a timm teacher")
    p.add_argument("--data", default=None, help="dataset (required for a genome string; overrides the recorded)")
    p.add_argument("--root", default=None, help="dataset folder (default: the recorded or the dataset's usual)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_retrain)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"retrain": _add_retrain}
