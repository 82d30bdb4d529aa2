"""`menas latency` (one network's inference latency on this machine; `--front`: a run's final front, recorded in its
store) and `menas latency-table` (a space's per-block lookup table); the torch-side modules are imported inside the
commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from menas.cli.common import make_progress
from menas.errors import UserError, check, is_int
from menas.files import write_json
from menas.latency.blocks import count_by_kind
from menas.latency.measure import (
    BLOCK_MIN_TIME_S,
    DEVICES,
    NETWORK_MIN_TIME_S,
    RUNTIMES,
    Settings,
    check_available,
)
from menas.latency.rounds import MAX_ROUNDS, combine, measurement_of, run_rounds, settings_flags, spread_warning
from menas.space.cost import count_cost, format_count
from menas.space.genome import REFERENCE_GENOMES, parse_genome_arg
from menas.space.spaces import load_space

DEFAULT_INPUT_SIZE = 224
SOURCE_FORMS = (
    "a genome string, a reference name ({refs}), timm:NAME, a run folder, an export or checkpoint folder, a "
    ".safetensors file or a genome .json/.txt file"
)


def _settings(args: argparse.Namespace) -> Settings:
    """The measurement settings from the flags, checked (threads over the cores, a runtime or device this machine
    lacks: one line) before anything is loaded."""
    settings = Settings(args.batch, args.threads, args.runtime, args.device, args.warmup, args.runs, args.min_time)
    check_available(settings)
    return settings


def _is_genome(text: str) -> bool:
    path = Path(text)
    return "|" in text or text in REFERENCE_GENOMES or (path.is_file() and path.suffix in (".json", ".txt"))


def _timm_network(name: str, in_chans: int, num_classes: int) -> Any:
    """A timm model by name, freshly initialised (nothing is downloaded)."""
    import timm

    try:
        return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        raise UserError(f"SOURCE timm:{name}: not a timm model name (timm.list_models() lists them)") from None


def _network(source: str, input_size: int | None, in_chans: int | None, num_classes: int | None) -> tuple[Any, dict]:
    """(the model, what it is: source, genome or timm name, input size, channels, classes, MACs of a genome)."""
    from menas.nn.builder import build_model

    text = source.strip()
    info: dict[str, Any] = {"source": text}
    if text.startswith("timm:"):
        info.update(model=text.removeprefix("timm:"), in_chans=in_chans or 3, num_classes=num_classes or 1000)
        model = _timm_network(info["model"], info["in_chans"], info["num_classes"])
        info["input_size"] = input_size or DEFAULT_INPUT_SIZE
        return model, info
    if _is_genome(text):
        genome = parse_genome_arg(text)
        recorded: tuple[int | None, int, int] = (None, 3, 1000)
    elif Path(text).exists():
        from menas.train.checkpoint import load_weights
        from menas.winner.load import find_network

        found = find_network(Path(text))
        loaded = load_weights(found.weights)
        genome = loaded.genome
        recorded = (found.input_size, loaded.stem.conv.in_channels, loaded.num_classes)
    else:
        forms = SOURCE_FORMS.format(refs=", ".join(REFERENCE_GENOMES))
        raise UserError(f"SOURCE: {text[:80]!r} is not found, allowed: {forms}")
    size = input_size or recorded[0] or DEFAULT_INPUT_SIZE
    info.update(genome=genome.to_str(), input_size=size, in_chans=in_chans or recorded[1])
    info["num_classes"] = num_classes or recorded[2]
    info["macs"] = count_cost(genome, size, info["in_chans"], info["num_classes"]).macs
    return build_model(genome, info["num_classes"], info["in_chans"]), info


def _label(info: dict[str, Any]) -> str:
    """The network in a few words: a timm name, a reference name or path with the genome's MACs."""
    name = info.get("model") or info["source"]
    if "|" in name:
        name = "genome"
    return f"{name} ({format_count(info['macs'])} MACs)" if "macs" in info else name


def cmd_latency(args: argparse.Namespace) -> int:
    """Measures one network's inference latency and prints one line (and the whole record with --json); with
    `--front`, a run's final front into its store."""
    from menas.latency.measure import measure

    check(args.rounds is None or (is_int(args.rounds) and 1 <= args.rounds <= MAX_ROUNDS), "--rounds", args.rounds,
          f"1..{MAX_ROUNDS}")  # fmt: skip
    if args.front:
        return _measure_front(Path(args.source), args.rounds)
    settings = _settings(args)
    for flag, value, low in (("--input-size", args.input_size, 16), ("--in-chans", args.in_chans, 1),
                             ("--num-classes", args.num_classes, 2)):  # fmt: skip
        check(value is None or value >= low, flag, value, f"integers >= {low}")
    if (args.rounds or 1) > 1:
        return _measure_rounds(args, settings)
    model, info = _network(args.source, args.input_size, args.in_chans, args.num_classes)
    size = info["input_size"]
    result = measure(model, (info["in_chans"], size, size), settings)
    if args.json:
        write_json(args.json, {**info, **result.to_dict()})
    host = result.host
    print(
        f"{result.median_ms:.3f} ms median (p90 {result.p90_ms:.3f} ms, IQR {result.iqr_ms:.3f} ms, {result.runs} "
        f"runs): {_label(info)} at {size} px, batch {settings.batch}, {settings.threads} thread(s), "
        f"{settings.runtime} {host['runtime_version']} on {settings.device} ({host['device_name']})"
    )
    return 0


def _one_round_flags(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The command line of one round: SOURCE and every measurement and shape flag as given, no --rounds, --json."""
    flags = [args.source, *settings_flags(settings)]
    for flag, value in (("--input-size", args.input_size), ("--in-chans", args.in_chans),
                        ("--num-classes", args.num_classes)):  # fmt: skip
        flags += [flag, str(value)] if value is not None else []
    return flags


def _measure_rounds(args: argparse.Namespace, settings: Settings) -> int:
    """`--rounds R`: the measurement made R times, each in a fresh process one after the other (`menas latency` with
    the same flags; `menas.latency.rounds`), and the median of their medians. Prints one line, and a warning when
    the rounds spread over more than 10% (`rounds.spread_warning`)."""
    records = run_rounds(_one_round_flags(args, settings), args.rounds)
    result = combine([measurement_of(r) for r in records])
    medians = result.round_medians_ms
    info = {k: v for k, v in records[0].items() if k not in result.to_dict()}
    if args.json:
        write_json(args.json, {**info, **result.to_dict(), "round_records": records})
    host = result.host
    print(
        f"{result.median_ms:.3f} ms median of {len(medians)} processes ({min(medians):.3f}-{max(medians):.3f} ms, "
        f"spread {100 * result.round_spread:.1f}%): {_label(info)} at {info['input_size']} px, batch "
        f"{settings.batch}, {settings.threads} thread(s), {settings.runtime} {host['runtime_version']} on "
        f"{settings.device} ({host['device_name']})"
    )
    warning = spread_warning(result.round_spread, "the rounds")
    if warning is not None:
        print(f"warning: {warning}")
    return 0


def _measure_front(run: Path, rounds: int | None) -> int:
    """`menas latency RUN --front`: the run's result (its Pareto front, else its best) measured at its latency
    table's settings, in `rounds` fresh processes a network (None: the run's `budget.latency_rounds`), and recorded
    in its store, what was measured before kept; one line a network."""
    from menas.latency.front import measure_run_front
    from menas.search.store import store_path

    if not store_path(run).is_file():
        raise UserError(f"--front: {str(run)!r} holds no search (no menas.sqlite), allowed: a run folder")

    def show(trial: Any, result: Any) -> None:
        predicted = "" if trial.final_latency_ms is None else f" (predicted {trial.final_latency_ms:.3f} ms)"
        how = "" if result.rounds == 1 else f" of {result.rounds} processes (spread {100 * result.round_spread:.1f}%)"
        # (a spread over 10% is warned about by the measurement itself: `front.measure_front` logs it)
        print(f"trial {trial.trial_id}: {result.median_ms:.3f} ms median{how} measured{predicted}")

    command = " ".join(["menas latency", str(run), "--front", *([] if rounds is None else ["--rounds", str(rounds)])])
    done = measure_run_front(run, command, progress=show, rounds=rounds)
    print(
        f"run {run}: {len(done.measured)} network(s) measured now, {len(done.before)} measured before; "
        f"`menas status {run}` shows them"
    )
    return 0


def cmd_latency_table(args: argparse.Namespace) -> int:
    """Measures (or continues) a space's per-block lookup table; `--count` only says how many blocks it has."""
    from menas.latency.table import build_table, plan

    if args.merge:
        return _merge_tables(args)
    if args.space is None:
        raise UserError("--space: required (a preset or a space YAML file), unless --merge")
    space = load_space(args.space)
    if args.count:
        blocks, _ = plan(space, args.input_size, args.in_chans, args.num_classes, args.channel_step)
        kinds = ", ".join(f"{n} {kind}" for kind, n in count_by_kind(blocks).items())
        print(f"{len(blocks)} blocks of space {space.name} at {args.input_size} px ({kinds})")
        return 0
    if args.out is None:
        raise UserError("--out: required (the table's JSON file), unless --count")
    settings = _settings(args)
    with make_progress() as progress:
        tasks: list[int] = []

        def advance(done: int, total: int) -> None:
            """One progress update per 1% of the blocks (a log gets 100 lines, not one per block)."""
            if not tasks:
                tasks.append(progress.add_task(f"latency table {args.out}", total=total, completed=done))
            elif done % max(1, total // 100) == 0 or done == total:
                progress.update(tasks[0], completed=done)

        result = build_table(
            space,
            args.input_size,
            args.in_chans,
            args.num_classes,
            settings,
            args.out,
            channel_step=args.channel_step,
            save_every=args.save_every,
            max_new=args.max_blocks,
            progress=advance,
        )
    table = result.table
    state = "complete" if table.complete else "incomplete: run the same command again to continue"
    print(
        f"{args.out}: {len(table.entries)}/{table.total} blocks ({result.measured_now} measured now, "
        f"{result.measured_before} before), {state}; {table.target.describe()} on {table.host['device_name']}"
    )
    return 0


def _merge_tables(args: argparse.Namespace) -> int:
    """`menas latency-table --merge T1 T2 ... --out T`: the tables' per-block medians (`merge_tables`) into T."""
    from menas.latency.table import LatencyTable, merge_tables

    if args.out is None:
        raise UserError("--out: required (the merged table's JSON file)")
    if len(args.merge) < 2:
        raise UserError(f"--merge: got {len(args.merge)} table, allowed: 2 or more tables of one target")
    if any(Path(t).resolve() == Path(args.out).resolve() for t in args.merge):
        raise UserError(f"--out: {args.out!r} is one of the --merge tables; write the merge to a new file")
    for path in args.merge:
        if not Path(path).is_file():
            raise UserError(f"--merge: {path!r} does not exist, allowed: latency table files")
    table = merge_tables([LatencyTable.load(t) for t in args.merge])
    table.save(args.out)
    every = sum(e["rounds"] == len(args.merge) for e in table.entries.values())
    state = "complete" if table.complete else "incomplete"
    print(f"{args.out}: {len(table.entries)}/{table.total} blocks, {state}, the median of {len(args.merge)} tables "
          f"({every} blocks in all of them); no fitted overhead: fit it on the merged table "
          "(bench/bench_latency.py --table ... --save-fit)")  # fmt: skip
    return 0


def _add_measure_args(p: argparse.ArgumentParser, min_time_s: float) -> None:
    p.add_argument("--batch", type=int, default=1, help="images per run (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, at most the cores (default 1)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch", help="torch (eager) or onnxruntime (default torch)")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed runs, at least (default 100)")
    p.add_argument(
        "--min-time",
        type=float,
        default=min_time_s,
        help=f"and time for at least this many seconds (default {min_time_s:g}; at most 100 x --runs)",
    )


def _add_latency(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency", help="inference latency of a network on this machine")
    p.add_argument("source", help=SOURCE_FORMS.format(refs=", ".join(REFERENCE_GENOMES)))
    p.add_argument("--input-size", type=int, default=None, help="image side in px (default: the recorded one, or 224)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (default: the recorded ones, or 3)")
    p.add_argument("--num-classes", type=int, default=None, help="classes (default: the recorded ones, or 1000)")
    _add_measure_args(p, NETWORK_MIN_TIME_S)
    p.add_argument("--json", default=None, metavar="OUT", help="write the whole measurement as JSON to OUT")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measure in this many fresh processes one after the other and take the median of their medians; the "
        "line gives their spread, a warning over 10%% (default 1; with --front the run's budget.latency_rounds)",
    )
    p.add_argument(
        "--front",
        action="store_true",
        help="SOURCE is a run with a latency table: measure its final front (its best without a Pareto objective) "
        "at the table's settings and record it in the run's store (what was measured before is kept; the "
        "measurement flags do not apply)",
    )
    p.set_defaults(func=cmd_latency)


def _add_latency_table(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency-table", help="a search space's per-block latency lookup table on this machine")
    p.add_argument("--space", default=None, help="a preset (mobilenet3-mt, mobilenet3-ws) or a space YAML file")
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE, help="image side in px (default 224)")
    p.add_argument("--in-chans", type=int, default=3, help="input channels (default 3)")
    p.add_argument("--num-classes", type=int, default=1000, help="classes (default 1000)")
    _add_measure_args(p, BLOCK_MIN_TIME_S)
    p.add_argument(
        "--channel-step",
        type=int,
        default=None,
        help="round every channel count up to a multiple of this (default: the space's own width and expansion "
        "choices; pruned counts round up to the next choice)",
    )
    p.add_argument("--out", default=None, help="the table's JSON file (continued when it exists)")
    p.add_argument("--save-every", type=int, default=100, help="write the table after this many new blocks")
    p.add_argument("--max-blocks", type=int, default=None, help="measure at most this many new blocks, then stop")
    p.add_argument("--count", action="store_true", help="only print how many blocks the table has")
    p.add_argument("--merge", nargs="+", default=None, metavar="TABLE",
                   help="measure nothing: write into --out the per-block medians of these tables of one target "
                        "(built in separate processes, a steadier table on a noisy machine)")  # fmt: skip
    p.set_defaults(func=cmd_latency_table)


#: command name -> the function adding its parser to the `menas` subparsers (`main.build_parser` orders them)
PARSERS = {"latency": _add_latency, "latency-table": _add_latency_table}
