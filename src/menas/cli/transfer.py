"""`menas transfer`: a trained network fine-tuned on another dataset with a transfer recipe, scored once on that
dataset's test split (run and printed as a retrain is, by `cli.retrain`); torch-side modules imported lazily."""

from __future__ import annotations

import argparse
from pathlib import Path

from menas.cli.retrain import recipe, run_final_training
from menas.errors import UserError


def cmd_transfer(args: argparse.Namespace) -> int:
    """Fine-tunes a trained network on another dataset (new classifier, stem adapted to the channel count) and
    scores it once on that dataset's test split."""
    from menas.config import DataConfig
    from menas.winner.load import find_network
    from menas.winner.transfer import TRANSFER_FILE, transfer

    if args.epochs < 1:
        raise UserError(f"--epochs: got {args.epochs}, allowed: integers >= 1")
    source = find_network(args.checkpoint)
    cfg = recipe(args, DataConfig(dataset=args.data, root=args.root))
    return run_final_training(
        lambda device, **hooks: transfer(source, cfg, Path(args.out), device=device, **hooks),
        args,
        source,
        cfg,
        f"{args.data} test",
        TRANSFER_FILE,
    )


def _add_transfer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transfer", help="fine-tune a trained network on another dataset; score it on its test split")
    p.add_argument("checkpoint", help="a retrain/checkpoint/export folder, a run folder (its best) or .safetensors")
    p.add_argument(
        "--data",
        required=True,
        choices=["cifar10", "cifar100", "imagefolder", "fashion-mnist", "digits", "synthetic"],
        help="the dataset to transfer to",
    )
    p.add_argument("--root", default=None, help="dataset folder (default: the dataset's usual place)")
    p.add_argument("--epochs", type=int, required=True, help="fine-tuning epochs")
    p.add_argument("--out", required=True, help="output folder (resumes when it holds this transfer's checkpoint)")
    p.add_argument(
        "--recipe",
        default="transfer",
        choices=["transfer", "short", "paper"],
        help="transfer (default: the short recipe, 0.1-epoch warmup), short or paper",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="recipe override, e.g. --set train.lr=0.01 --set data.input_size=64",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_transfer)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"transfer": _add_transfer}
