"""`menas train` and `menas lottery`: one network outside a search, trained with the search recipe, then its
lottery ticket searched (and fine-tuned, kept with --out) or the ticket method diagnosed on the data (--diagnose).
The steps are `menas.prune.pipeline`'s, the ones a search trial runs. The torch-side modules are imported inside
the commands."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from menas.cli.common import make_console, make_progress
from menas.errors import UserError
from menas.files import write_json
from menas.folders import HISTORY_FILE, LOTTERY_FILE, RUN_FILE, TRAIN_CHECKPOINT, WEIGHTS_FILE
from menas.space.cost import count_cost, format_count, parse_range
from menas.space.genome import parse_genome_arg

#: `menas train`'s per-epoch history, beside the checkpoint folder's weights and run.json.


def _data_config(args: argparse.Namespace, base: Any = None) -> Any:
    from menas.config import DataConfig

    cfg = base or DataConfig()
    changes = {
        "dataset": args.data,
        "root": args.root,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "input_size": args.input_size,
    }
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


def _add_data_args(p: argparse.ArgumentParser, required: bool = True, recorded_seed: bool = False) -> None:
    """Dataset arguments; `recorded_seed`: --seed defaults to the data seed the checkpoint recorded (a command
    that reads a trained network must score it on the split it was trained against)."""
    p.add_argument(
        "--data",
        required=required,
        default=None,
        help="fashion-mnist | cifar10 | cifar100 | imagefolder | digits | synthetic",
    )
    p.add_argument("--root", default=None, help="dataset folder (default: the dataset's usual place)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size (default 128)")
    p.add_argument("--input-size", type=int, default=None, help="image side in px (default 32; 224 for folders)")
    if recorded_seed:
        p.add_argument(
            "--seed",
            type=int,
            default=None,
            help="data seed: splits and data order (default: the "
            "checkpoint's, from run.json, so search-val holds no training image; else 0)",
        )
    else:
        p.add_argument("--seed", type=int, default=0, help="seed for splits, data order and weights (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def cmd_train(args: argparse.Namespace) -> int:
    """Trains one genome with the search recipe; writes history, checkpoint and weights to --out."""
    from menas.config import TrainConfig
    from menas.data.device import resolve_device
    from menas.data.splits import build_loaders, preprocessing
    from menas.prune.pipeline import build_candidate, save_network, train_candidate
    from menas.train.checkpoint import run_record
    from menas.train.resume import check_checkpoint_owner, check_resumable

    genome = parse_genome_arg(args.genome)
    data_cfg = _data_config(args)
    train_cfg = TrainConfig.preset(args.recipe, epochs=args.epochs, seed=args.seed, threads=args.threads)
    if args.lr is not None:
        train_cfg = dataclasses.replace(train_cfg, lr=args.lr)
    out = Path(args.out)
    if not args.restart:  # before anything is written: --out may hold another network's checkpoint
        check_checkpoint_owner(out / TRAIN_CHECKPOINT, {"genome": genome.to_str()})
    device = resolve_device(args.device)
    data = build_loaders(data_cfg, device)
    if not args.restart:  # nor resume it with another recipe or seed: refused before run.json is rewritten
        check_resumable(out / TRAIN_CHECKPOINT, train_cfg, data.train)
    out.mkdir(parents=True, exist_ok=True)
    record = run_record(
        "train", genome, data_cfg, train_cfg, preprocessing(data), device=str(device), split_digest=data.split_digest
    )
    write_json(out / RUN_FILE, record)  # before training: an interrupted folder says what it was training
    model = build_candidate(genome, data, args.seed)
    cost = count_cost(genome, data.input_size, data.in_chans, data.num_classes)
    console = make_console()
    console.print(
        f"{genome.to_str()}\n{format_count(cost.macs)} MACs, {format_count(cost.params)} params at "
        f"{data.input_size} px; {data.train.num_samples} search-train / {data.val.num_samples} search-val "
        f"images on {device}"
    )
    with make_progress() as progress:
        task = progress.add_task("epochs", total=args.epochs)

        def on_epoch(stats: Any) -> None:
            progress.update(
                task,
                completed=stats.epoch,
                description=f"epoch {stats.epoch}: loss {stats.train_loss:.3f}, val top-1 {stats.val_top1 or 0:.2f}%",
            )

        history = train_candidate(
            model, data, train_cfg, out / TRAIN_CHECKPOINT, resume=not args.restart, progress=on_epoch
        )
    write_json(out / HISTORY_FILE, history.to_dict())
    save_network(out, model, genome)  # run.json was written before training
    last = history.epochs[-1]
    console.print(
        f"search-val top-1 {history.val_top1:.2f}%, epoch time {last.seconds:.1f} s, "
        f"{last.images_per_s:,.0f} img/s; wrote {out}/"
    )
    return 0


def _load_trained(path_text: str, args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(model, data, train config, data config) from a `menas train` folder or a weights file (then --data is
    required)."""
    from menas.config import DataConfig, TrainConfig, from_dict
    from menas.data.device import resolve_device
    from menas.data.splits import build_loaders
    from menas.train.checkpoint import load_weights, resolve_checkpoint

    weights, recorded = resolve_checkpoint(
        Path(path_text), f"checkpoint: {path_text!r} not found (give a `menas train --out` folder or .safetensors)"
    )
    base = from_dict(DataConfig, recorded["data"], "data") if "data" in recorded else None
    if base is None and args.data is None:
        raise UserError(f"--data: required, {str(weights.with_name(RUN_FILE))!r} does not record the dataset")
    data_cfg = _data_config(args, base)  # the recorded data config (and seed) unless an argument overrides it
    recorded_digest = recorded.get("split_digest")
    train_cfg = from_dict(TrainConfig, recorded["train"], "train") if "train" in recorded else TrainConfig()
    if args.threads:
        train_cfg = dataclasses.replace(train_cfg, threads=args.threads)
    data = build_loaders(data_cfg, resolve_device(args.device))
    if recorded_digest is not None and data.split_digest != recorded_digest:
        logging.getLogger(__name__).warning(
            "the search split (seed %s) is not the one %s was trained with: search-val may hold training images",
            data_cfg.seed,
            weights,
        )
    model = load_weights(weights, data.num_classes, data.in_chans).to(data.train.device)
    return model, data, train_cfg, data_cfg


def cmd_lottery(args: argparse.Namespace) -> int:
    """Searches the lottery ticket of a trained network, or diagnoses whether the method works on the data."""
    from menas.config import LotteryConfig
    from menas.prune.pipeline import search_and_choose_ticket

    keep = parse_range(args.macs_keep, "--macs-keep") if args.macs_keep else None
    cfg = LotteryConfig(
        proposals=args.proposals,
        importance=args.importance,
        macs_keep=keep,
        tolerance=args.tolerance,
        score_images=args.score_images,
    )
    if args.finetune_epochs is not None and args.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs: got {args.finetune_epochs}, allowed: integers >= 0")
    if args.out and args.diagnose:
        raise UserError("--out: writes a ticket, so it cannot be combined with --diagnose")
    model, data, train_cfg, data_cfg = _load_trained(args.checkpoint, args)
    console = make_console()
    if train_cfg.threads:
        import torch

        torch.set_num_threads(train_cfg.threads)
    if args.diagnose:
        return _print_diagnosis(model, data, cfg, train_cfg, args, console)
    # BN calibrated on epoch 0's batches: the network is read from a folder, its training epochs unknown here
    result = search_and_choose_ticket(model, data, cfg, random.Random(args.proposal_seed), calib_epoch=0)
    table = Table(
        title=f"{len(result.scored)} pruning proposals (scored on {cfg.score_images or 'all'} images, "
        f"best {cfg.rescore_top} re-scored on all {data.val.num_samples})"
    )
    for column in ("#", "mean mid rate", "MACs", "params", "subset top-1", "full top-1"):
        table.add_column(column, justify="right")
    for s in sorted(result.scored, key=lambda s: -s.subset_score):
        full = "-" if s.full_score is None else f"{s.full_score:.2f}%"
        table.add_row(
            str(s.index),
            f"{s.proposal.mean_mid_rate:.2f}",
            format_count(s.macs),
            format_count(s.params),
            f"{s.subset_score:.2f}%",
            full,
        )
    console.print(table)
    console.print(
        f"unpruned (recalibrated): {result.parent_score:.2f}%, {format_count(result.parent_macs)} MACs, "
        f"{format_count(result.parent_params)} params; search took {result.seconds:.1f} s"
    )
    if result.chosen is None:
        console.print(f"no proposal within {cfg.tolerance:g} points of the unpruned network: it stays the ticket")
    else:
        c = result.chosen
        share = 100 * c.macs / result.parent_macs
        console.print(
            f"ticket: proposal {c.index}, {c.full_score:.2f}% ({format_count(c.macs)} MACs, {share:.0f}% "
            f"of the unpruned)\n{c.proposal.genome.to_str()}"
        )
    finetuned = _finetune_ticket(result, data, train_cfg, cfg, args.finetune_epochs or 0, console)
    if args.out:
        from menas.data.splits import preprocessing

        _write_lottery_out(Path(args.out), result, finetuned, data_cfg, train_cfg, args, console, preprocessing(data))
    return 0


def _finetune_ticket(result: Any, data: Any, train_cfg: Any, cfg: Any, epochs: int, console: Console) -> float | None:
    """Fine-tunes the chosen ticket in place (at `lottery.finetune_lr_scale` x the training lr, as trials do; no
    checkpoint) and returns its search-val top-1; None when nothing was fine-tuned (no ticket: the unpruned
    network stays as it was trained)."""
    if epochs <= 0 or result.chosen is None:
        return None
    from menas.prune.pipeline import finetune, finetune_lr_scale

    history = finetune(result.ticket_model, data, train_cfg, epochs, finetune_lr_scale(None, cfg))
    console.print(
        f"fine-tuned the ticket for {epochs} epoch(s): {result.ticket_score:.2f}% -> "
        f"{history.val_top1:.2f}% search-val top-1"
    )
    return history.val_top1


def _write_lottery_out(
    out: Path,
    result: Any,
    finetuned: float | None,
    data_cfg: Any,
    train_cfg: Any,
    args: argparse.Namespace,
    console: Console,
    preprocessing: dict[str, Any] | None = None,
) -> None:
    """Writes lottery.json (every proposal and the choice) and, when a ticket won, its weights and run.json, so
    the folder is a checkpoint `menas lottery` / `menas train`-style commands load like any other; run.json
    records `preprocessing` (what the lottery's loaders fed the ticket: `menas.data.splits.preprocessing`) like
    `menas train`'s, so export and evaluate use the recorded statistics."""
    from menas.prune.pipeline import save_network, write_lottery
    from menas.train.checkpoint import run_record

    out.mkdir(parents=True, exist_ok=True)
    chosen = result.chosen
    write_lottery(out, result, finetuned, args.finetune_epochs or 0)
    if chosen is None:
        console.print(f"wrote {out}/{LOTTERY_FILE} (no ticket: no weights written)")
        return
    genome = chosen.proposal.genome
    record = run_record(
        "lottery", genome, data_cfg, train_cfg, preprocessing, pruned_from=result.parent_genome.to_str()
    )
    save_network(out, result.ticket_model, genome, record)
    console.print(f"wrote {out}/ ({WEIGHTS_FILE}, {RUN_FILE}, {LOTTERY_FILE})")


def _print_diagnosis(
    model: Any, data: Any, cfg: Any, train_cfg: Any, args: argparse.Namespace, console: Console
) -> int:
    from menas.prune.diagnose import diagnose

    with make_progress() as progress:
        task = progress.add_task("proposals fine-tuned twice", total=args.M)
        epochs = 1 if args.finetune_epochs is None else args.finetune_epochs
        result = diagnose(
            model,
            data,
            cfg,
            train_cfg,
            proposals=args.M,
            finetune_epochs=epochs,
            seed=args.proposal_seed,
            progress=lambda n: progress.update(task, completed=n),
        )
    table = Table(
        title=f"correlation with the fine-tuned accuracy ({args.M} proposals, {epochs} "
        f"epoch(s) of fine-tuning scored on {result.finetune_images} images; quick scores on "
        f"{result.subset_images})"
    )
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


# ------------------------------------------------------------------------------------------ parsers


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one genome with the search recipe (early-stop epochs)")
    p.add_argument("genome", help="a genome string, a reference name or a .json/.txt file")
    _add_data_args(p)
    p.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    p.add_argument(
        "--recipe",
        default="short",
        choices=["short", "paper"],
        help="training recipe: short (default; trains in 2-3 epochs) or paper (the paper's search "
        "recipe: step decay from 0.064 x batch / 1024, for 30+ epochs)",
    )
    p.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default: the recipe's, scaled to the batch)"
    )
    p.add_argument("--out", required=True, help="output folder (history.json, train.ckpt, model.safetensors)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.set_defaults(func=cmd_train)


def _add_lottery(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lottery", help="lottery-ticket search (or --diagnose) on a trained network")
    p.add_argument("checkpoint", help="a `menas train --out` folder or a model.safetensors file")
    _add_data_args(p, required=False, recorded_seed=True)
    p.add_argument(
        "--proposal-seed",
        type=int,
        default=0,
        help="seed of the pruning proposals (and of --diagnose's fine-tuning; default 0)",
    )
    p.add_argument("-P", "--proposals", type=int, default=50, help="pruning proposals (default 50)")
    p.add_argument("--macs-keep", default=None, help="share of MACs to keep, LOW:HIGH, e.g. 0.5:0.9")
    p.add_argument("--importance", default="l1", choices=["l1", "first"], help="which channels to keep")
    p.add_argument("--tolerance", type=float, default=1.0, help="accuracy points a ticket may lose (default 1)")
    p.add_argument("--score-images", type=int, default=512, help="first-round scoring subset (default 512)")
    p.add_argument("--diagnose", action="store_true", help="correlate quick scores with fine-tuned accuracy")
    p.add_argument("-M", type=int, default=20, help="proposals for --diagnose (default 20)")
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=None,
        help="fine-tune epochs: of the chosen ticket (default 0), of each proposal with --diagnose (default 1)",
    )
    p.add_argument("--out", default=None, help="folder for the ticket's weights, run.json and lottery.json")
    p.set_defaults(func=cmd_lottery)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"train": _add_train, "lottery": _add_lottery}
