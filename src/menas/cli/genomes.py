"""`menas inspect`, `menas sample` and `menas space show`: genomes and spaces on paper (MACs and params by formula),
nothing trained, no torch."""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Sequence

from rich.table import Table

from menas.cli.common import Parser, make_console
from menas.errors import UserError
from menas.space.cost import Budget, count_cost, format_count, layer_table, parse_count, parse_range
from menas.space.genome import parse_genome_arg
from menas.space.operators import reachable_costs, sample
from menas.space.spaces import PRESETS, load_space


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


def cmd_inspect(args: argparse.Namespace) -> int:
    """Per-layer table of a genome with its MACs and params."""
    genome = parse_genome_arg(args.genome)
    budget = _budget(args)  # validates the shape arguments
    rows = layer_table(genome, budget.input_size, budget.in_chans, budget.num_classes)
    total = count_cost(genome, budget.input_size, budget.in_chans, budget.num_classes)
    spaces = [name for name, space in PRESETS.items() if space.contains(genome)]
    if args.json:
        print(
            json.dumps(
                {
                    "genome": genome.to_str(),
                    "macs": total.macs,
                    "params": total.params,
                    "spaces": spaces,
                    "layers": [row._asdict() for row in rows],
                }
            )
        )
        return 0
    table = Table(title=f"{genome.depth} inverted residual layers at {budget.input_size}x{budget.input_size} px")
    for column in ("block", "type", "k", "in", "mid", "out", "stride", "SE", "act", "out HxW", "MACs", "params"):
        table.add_column(column, justify="left" if column in ("block", "type", "act") else "right")
    for r in rows:
        table.add_row(
            r.name,
            r.kind,
            str(r.kernel),
            str(r.in_chs),
            str(r.mid_chs),
            str(r.out_chs),
            str(r.stride),
            "yes" if r.se else "-",
            r.act,
            f"{r.out_hw[0]}x{r.out_hw[1]}",
            format_count(r.macs),
            format_count(r.params),
        )
    console = make_console()
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
    for column in ("stage", "base ch", "depths", "out ch (width mult)", "strides", "expand", "kernels", "SE", "act"):
        table.add_column(column)
    for i, s in enumerate(space.stages):
        widths = f"{_join(space.stage_outs(i))} (x{min(s.width_mults):g}..{max(s.width_mults):g})"
        table.add_row(
            str(i),
            str(s.base_chs),
            _join(s.depths),
            widths,
            _join(s.strides),
            _join(s.expand_ratios),
            _join(s.kernels),
            _join(s.se),
            _join(s.acts),
        )
    console = make_console()
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
    return ", ".join(
        str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v) for v in values
    )


# ------------------------------------------------------------------------------------------ parsers


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="per-layer table of a genome with MACs and params")
    p.add_argument("genome", help="a genome string, a reference name (mobilenetv3_large_100) or a .json/.txt file")
    _add_shape_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="random genomes of a space within a compute budget")
    p.add_argument("--space", default="mobilenet3-mt", help="preset name or YAML file (default mobilenet3-mt)")
    p.add_argument("--macs", default=None, help="MACs range MIN:MAX with K/M/G suffixes, e.g. 150M:300M")
    p.add_argument("--params-max", type=_count_arg("--params-max"), default=None, help="e.g. 8M")
    _add_shape_args(p)
    p.add_argument("-n", type=int, default=5, help="how many genomes (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sample)


def _add_space(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="search spaces")
    space_sub = p.add_subparsers(dest="space_command", required=True, parser_class=Parser)
    p = space_sub.add_parser("show", help="a space's dimensions and choices")
    p.add_argument("name", help=f"preset ({', '.join(PRESETS)}) or YAML file")
    p.add_argument("--yaml", action="store_true", help="print the space as YAML (a starting point for your own)")
    _add_shape_args(p)
    p.set_defaults(func=cmd_space_show)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"inspect": _add_inspect, "sample": _add_sample, "space": _add_space}
