"""A per-block latency lookup table of a search space, measured once per target (`menas latency-table`).

The table holds one entry per block the space can produce on its channel grid (`latency.blocks`): the median,
90th percentile and inter-quartile range of the block measured alone (`latency.measure`), keyed by `Block.key`.
It records what it was measured for, its `Target` (space name and a hash of the space's definition, input size,
input channels, classes, device, runtime, threads, batch, channel grid), what it ran on (CPU model, device name,
torch and runtime versions) and how (warm-up and timed runs). It is built resumably: written (atomically) every
`save_every` new entries and when the build stops, and a rerun with the same target, host and settings measures
only the entries still missing. A table is used only for its own target: anything else is refused naming the
field (`LatencyTable.check_target`), and a rerun on another host or with other settings is refused too, so one
table never mixes two machines.

This module never imports torch (measuring a block imports it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from menas.errors import UserError, check, is_int
from menas.files import write_json
from menas.latency.blocks import Block, ChannelGrid, space_blocks
from menas.latency.measure import Settings
from menas.space.spaces import SearchSpace

FORMAT = "menas-latency-table"
VERSION = 1
#: The host fields a resumed build must share with the table (the others, python and cores, are recorded only).
HOST_FIELDS = ("cpu", "device_name", "torch", "runtime_version")

MeasureBlock = Callable[[Block, Settings], dict[str, float]]


def space_hash(space: SearchSpace) -> str:
    """A short hash of the space's definition (its `to_dict`), so a table of an edited space of the same name is
    told apart."""
    text = json.dumps(space.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Target:
    """What a table is measured for; a prediction from it is valid only for the same target."""

    space: str
    space_hash: str
    input_size: int
    in_chans: int
    num_classes: int
    device: str
    runtime: str
    threads: int
    batch: int
    channel_step: int | None = None

    @classmethod
    def of(
        cls,
        space: SearchSpace,
        input_size: int,
        in_chans: int,
        num_classes: int,
        settings: Settings,
        channel_step: int | None = None,
    ) -> Target:
        return cls(
            space.name,
            space_hash(space),
            input_size,
            in_chans,
            num_classes,
            settings.device,
            settings.runtime,
            settings.threads,
            settings.batch,
            channel_step,
        )

    def describe(self) -> str:
        """One phrase: "mobilenet3-mt at 32 px, 1 ch, 10 classes, cpu, torch, 1 thread(s), batch 1"."""
        grid = f", channel step {self.channel_step}" if self.channel_step else ""
        return (
            f"{self.space} at {self.input_size} px, {self.in_chans} ch, {self.num_classes} classes, {self.device}, "
            f"{self.runtime}, {self.threads} thread(s), batch {self.batch}{grid}"
        )


@dataclass
class LatencyTable:
    """Per-block latencies of one target. `entries` maps `Block.key` to its statistics (`median_ms`, `p90_ms`,
    `iqr_ms`); `total` is the number of blocks the space produces on the grid (the table is complete when it holds
    them all); `path` is the file it was read from or written to; `fit` the predictor's overhead fitted on whole
    genomes measured on the same target (`Predictor.save_fit`: scale, overhead_ms, per_block_ms, fitted_on), None
    before one is fitted (a prediction is then the plain sum)."""

    target: Target
    space: SearchSpace
    host: dict[str, Any]
    settings: dict[str, Any]
    entries: dict[str, dict[str, float]]
    total: int
    path: Path | None = None
    fit: dict[str, Any] | None = None

    @property
    def grid(self) -> ChannelGrid:
        return ChannelGrid(self.space, self.target.channel_step)

    @property
    def complete(self) -> bool:
        return len(self.entries) >= self.total

    def where(self) -> str:
        return f"latency table {str(self.path)!r}" if self.path else "latency table"

    def latency_ms(self, block: Block) -> float | None:
        """The block's median latency, None when the table has no entry for it."""
        entry = self.entries.get(block.key)
        return None if entry is None else entry["median_ms"]

    def check_target(self, **expected: Any) -> None:
        """Raises a one-line `UserError` naming the first field of the table's target that differs from
        `expected` (e.g. `input_size=32, runtime="torch"`); a field not given is not checked."""
        for name, value in expected.items():
            have = getattr(self.target, name)
            if have != value:
                raise UserError(
                    f"{self.where()}: measured for {name} {have!r}, this asks {value!r}; measure one for this "
                    f"target with `menas latency-table` (the table's target: {self.target.describe()})"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "target": asdict(self.target),
            "host": self.host,
            "settings": self.settings,
            "space": self.space.to_dict(),
            "total": self.total,
            "measured": len(self.entries),
            "complete": self.complete,
            "entries": self.entries,
            **({} if self.fit is None else {"fit": self.fit}),
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Writes the table as JSON, atomically (a crash leaves the previous file whole)."""
        self.path = Path(path) if path is not None else self.path
        assert self.path is not None, "a table read from nowhere needs a path to save"
        return write_json(self.path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Reads a table; a file that is not one (or of another format version, or whose space does not hash to
        its recorded hash) is a one-line `UserError`."""
        path = Path(path)
        where = f"latency table {str(path)!r}"
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f'{where}: not a menas latency table (no "format": "{FORMAT}")')
        if data.get("version") != VERSION:
            raise UserError(f"{where}: format version {data.get('version')!r}, allowed: {VERSION}")
        try:
            target = Target(**{f.name: data["target"][f.name] for f in fields(Target)})
            space = SearchSpace.from_dict(data["space"])
            fit = data.get("fit")
            table = cls(target, space, data["host"], data["settings"], data["entries"], data["total"], path, fit)
        except (KeyError, TypeError) as exc:
            raise UserError(f"{where}: incomplete or damaged ({type(exc).__name__}: {exc})") from None
        if space_hash(space) != target.space_hash:
            raise UserError(f"{where}: its space does not match its recorded hash (the file was edited)")
        return table


#: What must agree between tables merged into one: the measurement settings that change a block's latency.
MERGE_SETTINGS = ("batch", "threads", "runtime", "device")


def merge_tables(tables: list[LatencyTable]) -> LatencyTable:
    """One table from several measurements of the same target (each built in its own process, ideally at different
    times): every block's median, p90 and IQR become the medians over the tables that hold it, with `rounds` the
    number of measurements behind it. On a noisy machine a block's latency moves between processes more than
    within one (BENCHMARKS.md "How repeatable one measurement is"), so the merge is steadier than any one table.
    The targets and the measurement settings must agree (a one-line `UserError` names the first that does not); a
    fitted overhead is dropped (it was fitted to one table: fit again on the merged one). The host is the first
    table's."""
    import statistics

    first = tables[0]
    for other in tables[1:]:
        for name, value in asdict(first.target).items():
            if getattr(other.target, name) != value:
                raise UserError(f"--merge: {other.where()} was measured for {name} {getattr(other.target, name)!r}, "
                                f"{first.where()} for {value!r}; merge tables of one target only")  # fmt: skip
        for name in MERGE_SETTINGS:
            if other.settings.get(name) != first.settings.get(name):
                theirs, ours = other.settings.get(name), first.settings.get(name)
                raise UserError(f"--merge: {other.where()} was measured with {name} {theirs!r}, {first.where()} "
                                f"with {ours!r}; merge tables of one setting")  # fmt: skip
    keys = dict.fromkeys(key for t in tables for key in t.entries)
    entries = {}
    for key in keys:
        held = [t.entries[key] for t in tables if key in t.entries]
        entries[key] = {stat: statistics.median(e[stat] for e in held) for stat in held[0] if stat != "rounds"}
        entries[key]["rounds"] = sum(e.get("rounds", 1) for e in held)
    settings = {**first.settings, "merged_from": [str(t.path) for t in tables]}
    return LatencyTable(first.target, first.space, first.host, settings, entries, first.total)


def measure_block(block: Block, settings: Settings) -> dict[str, float]:
    """The block measured alone (a module of the block only, on a random input of its shape)."""
    from menas.latency.measure import measure
    from menas.latency.modules import block_module

    return measure(block_module(block), block.input_shape, settings).summary()


@dataclass(frozen=True)
class BuildResult:
    """A build's table and what this run did: entries measured now, entries found measured before."""

    table: LatencyTable
    measured_now: int
    measured_before: int


def _resume(path: Path, target: Target, host: dict[str, Any], settings: Settings) -> LatencyTable | None:
    """The table at `path` to continue, None when there is none; refused when it was measured for another target,
    on another host or with other settings (one table never mixes two)."""
    if not path.exists():
        return None
    table = LatencyTable.load(path)
    table.check_target(**asdict(target))
    for name in HOST_FIELDS:
        if table.host.get(name) != host.get(name):
            raise UserError(
                f"{table.where()}: measured with {name} {table.host.get(name)!r}, this machine has "
                f"{host.get(name)!r}; a table holds one machine's measurements: write another --out"
            )
    if table.settings != settings.to_dict():
        raise UserError(
            f"{table.where()}: measured with {table.settings}, this asks {settings.to_dict()}; resume with the "
            "same settings or write another --out"
        )
    return table


def plan(
    space: SearchSpace,
    input_size: int,
    in_chans: int,
    num_classes: int,
    channel_step: int | None = None,
    only: Iterable[Block] | None = None,
) -> tuple[list[Block], int]:
    """(the blocks to measure, the number the space produces on its grid): every block of the space, or the
    `only` ones (e.g. the blocks of a few genomes, a partial table), which must be blocks of the space."""
    every = space_blocks(space, input_size, in_chans, num_classes, ChannelGrid(space, channel_step))
    if only is None:
        return every, len(every)
    known = set(every)
    wanted = sorted(set(only))
    stray = [b for b in wanted if b not in known]
    if stray:
        raise UserError(f"block {stray[0].key}: not a block of space {space.name} on this table's channel grid")
    return wanted, len(every)


def build_table(
    space: SearchSpace,
    input_size: int,
    in_chans: int,
    num_classes: int,
    settings: Settings,
    out: str | Path,
    *,
    channel_step: int | None = None,
    only: Iterable[Block] | None = None,
    save_every: int = 100,
    max_new: int | None = None,
    measure: MeasureBlock = measure_block,
    host: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BuildResult:
    """Measures every block of the space on the channel grid (or the `only` ones) into the table at `out`,
    continuing a table already there (its measured entries are kept, not measured again).

    Args:
        save_every: write the table after this many new entries (and always when the build stops, also on an
            exception or Ctrl-C, so nothing measured is lost).
        max_new: stop after this many new entries (None: all); a rerun continues.
        measure: measures one block (`measure_block`; the tests pass a synthetic cost).
        host: what the machine is (`measure.host_info`, the default); recorded and compared on resume.
        progress: called with (entries done, entries wanted) after each entry.
    """
    from menas.latency.measure import check_available, host_info

    check_available(settings)
    path = Path(out)
    blocks, total = plan(space, input_size, in_chans, num_classes, channel_step, only)
    target = Target.of(space, input_size, in_chans, num_classes, settings, channel_step)
    host = host if host is not None else host_info(settings)
    table = _resume(path, target, host, settings) or LatencyTable(
        target, space, host, settings.to_dict(), {}, total, path
    )
    check(is_int(save_every) and save_every >= 1, "--save-every", save_every, "integers >= 1")
    check(max_new is None or (is_int(max_new) and max_new >= 0), "--max-blocks", max_new, "integers >= 0")
    before = len(table.entries)
    todo = [b for b in blocks if b.key not in table.entries]
    done = len(blocks) - len(todo)
    todo = todo if max_new is None else todo[:max_new]
    measured = 0
    try:
        for block in todo:
            table.entries[block.key] = {k: round(v, 6) for k, v in measure(block, settings).items()}
            measured += 1
            if measured % save_every == 0:
                table.save()
            if progress is not None:
                progress(done + measured, len(blocks))
    finally:
        table.save()
    return BuildResult(table, measured, before)


def open_table(
    path: str | Path, space: SearchSpace, input_size: int, in_chans: int, num_classes: int, **target: Any
) -> LatencyTable:
    """The table at `path`, refused (one line naming the field) unless it was measured for this space (its name
    and definition) and input shape, and for the other `Target` fields given (e.g. `runtime="onnxruntime"`)."""
    table = LatencyTable.load(path)
    table.check_target(
        space=space.name,
        space_hash=space_hash(space),
        input_size=input_size,
        in_chans=in_chans,
        num_classes=num_classes,
        **target,
    )
    return table
