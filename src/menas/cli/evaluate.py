"""`menas evaluate`: a network's scores and confusion matrix on the test (or search-val) split; the torch-side
module is imported inside the command."""

from __future__ import annotations

import argparse

from menas.cli.common import make_console
from menas.errors import UserError


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Top-1, top-5, loss and img/s of a network on the test split (or its search-val split), with a confusion
    matrix (JSON and figure)."""
    from menas.winner.evaluate import evaluate_network

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size: got {args.batch_size}, allowed: integers >= 1")
    result = evaluate_network(
        args.checkpoint,
        split=args.split,
        dataset=args.data,
        root=args.root,
        input_size=args.input_size,
        batch_size=args.batch_size,
        out=args.out,
        device=args.device,
        threads=args.threads,
    )
    record = result.record
    console = make_console()
    console.print(
        f"{record['genome']}\n{record['data']['dataset']} {result.split} split, {result.images:,} images: "
        f"top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}%, loss {result.loss:.4f}; "
        f"{result.images_per_s:,.0f} img/s on {record['device']} (batch {record['batch_size']})"
    )
    console.print(f"wrote {result.files['json']} and {result.files['figure']}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="top-1, top-5, loss, img/s and confusion matrix on the test split")
    p.add_argument(
        "checkpoint", help="a run folder (its best network), a checkpoint or export folder, or a .safetensors file"
    )
    p.add_argument("--data", default=None, help="dataset (default: the recorded one); as for `menas train`")
    p.add_argument("--root", default=None, help="dataset folder (default: the recorded one, else the usual place)")
    p.add_argument(
        "--split",
        default="test",
        choices=["test", "val"],
        help="test: the official test split (default); val: the recorded search-val split",
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder for evaluate-SPLIT.json and confusion-SPLIT.png (default: beside the weights; a run's folder)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: the recorded one)")
    p.add_argument("--input-size", type=int, default=None, help="image side in px (default: the recorded one)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_evaluate)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"evaluate": _add_evaluate}
