"""`menas export`: a network (a run's best, one of its trials by id, rank or place on its Pareto front, a
checkpoint or export folder, a weights file) written as genome, weights and checked graphs; the torch-side modules
are imported inside the command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from menas.cli.common import make_console
from menas.errors import UserError
from menas.space.cost import count_cost, format_count


def cmd_export(args: argparse.Namespace) -> int:
    """Exports a network (a search's best, a `menas train`/`lottery --out` folder, an export folder or a weights
    file): genome.json, safetensors weights, the asked graph formats, each checked against the model, and a
    README.md on loading them and preprocessing inputs."""
    from menas.winner.export import check_requirements, export_model, parse_formats

    formats = parse_formats(args.format)
    check_requirements(formats)  # before loading anything or writing a file
    model, input_size, info, pre = _export_source(Path(args.source), args.input_size, args.trial, args.rank, args.front)
    result = export_model(model, args.out, input_size, formats, info, pre)
    console = make_console()
    cost = count_cost(model.genome, input_size, model.stem.conv.in_channels, model.num_classes)
    console.print(
        f"{model.genome.to_str()}\n{format_count(cost.macs)} MACs, {format_count(cost.params)} params at "
        f"{input_size} px"
    )
    for name, path in result.files.items():
        checked = ""
        if name in result.max_abs_diff:  # a graph: how close it came to the model (None: no runtime to check it)
            diff = result.max_abs_diff[name]
            checked = " (not checked)" if diff is None else f" (max |diff| vs the model {diff:.2g})"
        console.print(f"  {name}: {path}{checked}")
    if "latency" in info:
        console.print(_latency_line(info["latency"]))
    for note in result.notes:
        console.print(f"  note: {note}")
    if "mean" not in pre:
        console.print(f"  note: preprocessing unknown ({pre.get('reason')})")
    return 0


def _latency_line(latency: dict[str, Any]) -> str:
    """The exported network's latency as genome.json records it: predicted, measured (and how), or a note that it
    was only predicted."""
    predicted = latency.get("predicted_ms")
    line = "latency: " + ("" if predicted is None else f"predicted {predicted:.3g} ms")
    measured = latency.get("measured_ms")
    if measured is None:
        return f"{line}; {latency.get('note', 'not measured')}"
    settings = (latency.get("measurement") or {}).get("settings", {})
    batch, threads, runtime = (settings.get(k, "?") for k in ("batch", "threads", "runtime"))
    how = f"batch {batch}, {threads} thread(s), {runtime}"
    return f"{line}{'; ' if predicted is not None else ''}measured {measured:.3g} ms ({how})"


def _export_source(
    path: Path, input_size: int | None, trial: int | None = None, rank: int | None = None, front: int | None = None
) -> tuple[Any, int, dict[str, Any], dict[str, Any]]:
    """(model, input size, provenance, preprocessing) of a run folder (its best trial, or the one `trial`, `rank`
    or `front` picks: `menas.winner.load.find_network`), a checkpoint or export folder, or a weights file."""
    from menas.config import to_dict
    from menas.train.checkpoint import load_weights
    from menas.winner.load import find_network, network_preprocessing

    source = find_network(path, trial, rank, front)
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


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="genome, weights and TorchScript/torch.export/ONNX graphs of a network")
    p.add_argument(
        "source",
        help="a run folder (its best network, or the one --trial, --rank or --front picks), a `menas train`/"
        "`lottery --out` folder, an export folder or a .safetensors file",
    )
    p.add_argument("--out", required=True, help="folder for genome.json, model.* and export.json")
    p.add_argument(
        "--format",
        default="safetensors,torchscript,pt2",
        help="comma list of safetensors, torchscript, pt2, onnx (default safetensors,torchscript,pt2; onnx needs "
        "pip install 'menas[export]')",
    )
    p.add_argument("--input-size", type=int, default=None, help="image side in px (default: the recorded one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="a run's trial id instead of its best")
    which.add_argument("--rank", type=int, default=None, help="the run's K-th best trial (1 = best)")
    which.add_argument(
        "--front",
        type=int,
        default=None,
        metavar="K",
        help="the K-th member of the run's Pareto front (search-val top-1 vs its strategy.pareto costs, MACs by "
        "default), by rising first cost (1 = cheapest)",
    )
    p.set_defaults(func=cmd_export)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"export": _add_export}
