"""Latency: the lookup table enumerates every block a space can produce (checked against every genome of a small
space), the predictor is exact on a synthetic table, a table for another target is refused, a missing block is
named, blocks measured alone chain like the network, and `menas latency` / `latency-table` print one line and
refuse bad threads or a missing runtime in one line (exit 2)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from menas.cli.latency import NETWORK_MIN_TIME_S
from menas.cli.main import main
from menas.errors import UserError
from menas.latency.blocks import Block, ChannelGrid, genome_blocks, space_blocks
from menas.latency.measure import Measurement, Settings, measure, statistics
from menas.latency.predict import Predictor, evaluate, macs_factor, spearman
from menas.latency.rounds import combine, measurement_of, settings_flags
from menas.latency.table import LatencyTable, build_table, open_table
from menas.machine import cpu_cores
from menas.space.cost import count_params
from menas.space.genome import MOBILENETV3_SMALL, Genome, LayerGene, StageGene
from menas.space.operators import random_genome
from menas.space.spaces import PRESETS, SearchSpace, StageSpace

SIZE, CHANS, CLASSES = 32, 3, 10
#: A host record for synthetic tables (no torch needed to describe it).
HOST = {"cpu": "test cpu", "device_name": "test cpu", "torch": "0", "runtime_version": "0"}

TINY = SearchSpace(
    name="tiny",
    stages=(
        StageSpace(base_chs=16, depths=(1, 2), width_mults=(0.5, 1.0), strides=(1, 2), expand_ratios=(1, 2),
                   kernels=(3, 5), se=(False,), acts=("relu",)),
        StageSpace(base_chs=24, depths=(1, 2), width_mults=(0.5, 1.0), strides=(1, 2), expand_ratios=(1, 2),
                   kernels=(3,), se=(False, True), acts=("hardswish",)),
    ),
    max_downsamples=1,
    head_ratio=2.0,
    feat_chs=64,
)  # fmt: skip


# --------------------------------------------------------------------------------------------- helpers


def _stage_options(space: SearchSpace, i: int, in_chs: int, outs: tuple[int, ...]) -> Iterator[tuple]:
    """Every (out, layers) stage i can take after `in_chs` inputs; with pruning, every pruned width too."""
    choices, d = space.stages[i], space.divisor

    def mids(a: int) -> tuple[int, ...]:
        top = space.mid_choices(i, a)
        return tuple(range(d, top[-1] + 1, d)) if space.allow_pruning else top

    for out in outs:
        for depth in choices.depths:
            per_layer = []
            for j in range(depth):
                a = in_chs if j == 0 else out
                per_layer.append([LayerGene(k, m, se, act) for m in mids(a) for k in choices.kernels
                                  for se in choices.se for act in choices.acts])  # fmt: skip
            for layers in itertools.product(*per_layer):
                yield out, layers


def every_genome(space: SearchSpace) -> Iterator[Genome]:
    """Every genome of a (small) space, enumerated gene by gene; with pruning every pruned width and expansion
    (a ticket keeps its head conv's width, the unpruned last stage's)."""
    d = space.divisor

    def outs(i: int) -> tuple[int, ...]:
        top = space.stage_outs(i)
        return tuple(range(d, top[-1] + 1, d)) if space.allow_pruning else top

    for strides in space.stride_vectors:
        for first in _stage_options(space, 0, space.ds.out_chs, outs(0)):
            for second in _stage_options(space, 1, first[0], outs(1)):
                stages = tuple(StageGene(o, s, layers) for (o, layers), s in zip((first, second), strides, strict=True))
                last = second[0]
                heads = {space.head_gene(o) for o in space.stage_outs(1) if o >= last or not space.allow_pruning}
                for head in heads if space.allow_pruning else {space.head_gene(last)}:
                    yield Genome(space.stem, space.ds, stages, head)


def fake_cost(block: Block, settings: Settings | None = None) -> dict[str, float]:
    """A known per-block latency (ms) for synthetic tables: any deterministic function of the block."""
    work = block.in_chs * block.mid_chs + block.mid_chs * block.kernel**2 + block.mid_chs * block.out_chs
    return {"median_ms": 0.001 * (block.res + work / 100 + 3 * block.se + len(block.kind))}


def fake_measurement(median_ms: float, p90_ms: float | None = None, runs: int = 10) -> Measurement:
    """A measurement of `runs` runs at 32 px, batch 1, one thread, whose median is `median_ms`."""
    p90 = 1.2 * median_ms if p90_ms is None else p90_ms
    return Measurement(median_ms, p90, 0.1 * median_ms, median_ms, 0.9 * median_ms, runs, runs * median_ms / 1e3,
                       (1, 3, 32, 32), Settings(), dict(HOST))  # fmt: skip


def synthetic_table(tmp_path: Path, space: SearchSpace = TINY, **kwargs) -> LatencyTable:
    out = tmp_path / "table.json"
    return build_table(space, SIZE, CHANS, CLASSES, Settings(), out, measure=fake_cost, host=HOST, **kwargs).table


# --------------------------------------------------------------------------------------------- enumeration


def test_the_table_holds_exactly_the_blocks_of_every_genome_of_the_space() -> None:
    table_blocks = set(space_blocks(TINY, SIZE, CHANS, CLASSES))
    produced, n = set(), 0
    for genome in every_genome(TINY):
        assert TINY.contains(genome)
        produced.update(block for _, block in genome_blocks(genome, SIZE, CHANS, CLASSES))
        n += 1
    assert n > 1000  # the enumeration is real
    assert produced == table_blocks  # none missing, none the space cannot produce
    assert {b.kind for b in table_blocks} == {"stem", "ds", "ir", "head"}


def test_pruned_genomes_round_up_onto_the_space_choices_and_are_exact_on_a_step_grid() -> None:
    stages = (dataclasses.replace(TINY.stages[0], kernels=(3,)), dataclasses.replace(TINY.stages[1], se=(True,)))
    pruned = dataclasses.replace(TINY, allow_pruning=True, stages=stages)  # fewer genes, every width pruned
    choices_grid, step_grid = ChannelGrid(pruned), ChannelGrid(pruned, pruned.divisor)
    on_choices = set(space_blocks(pruned, SIZE, CHANS, CLASSES, choices_grid))
    unpruned = set(space_blocks(dataclasses.replace(pruned, allow_pruning=False), SIZE, CHANS, CLASSES))
    assert unpruned < on_choices and {b.kind for b in on_choices - unpruned} == {"head"}  # a pruned last stage
    on_steps = set(space_blocks(pruned, SIZE, CHANS, CLASSES, step_grid))
    produced = set()
    for genome in every_genome(pruned):
        exact = genome_blocks(genome, SIZE, CHANS, CLASSES)
        rounded = genome_blocks(genome, SIZE, CHANS, CLASSES, choices_grid)
        assert {b for _, b in rounded} <= on_choices  # every ticket is priced
        for (_, block), (_, up) in zip(exact, rounded, strict=True):  # by a block at least as wide: an upper bound
            assert up.in_chs >= block.in_chs and up.mid_chs >= block.mid_chs and up.out_chs >= block.out_chs
        produced.update(block for _, block in genome_blocks(genome, SIZE, CHANS, CLASSES, step_grid))
    assert produced == on_steps


def test_the_mt_table_at_32_px_has_every_block_of_sampled_genomes() -> None:
    space = PRESETS["mobilenet3-mt"]
    blocks = set(space_blocks(space, SIZE, CHANS, CLASSES))
    assert len(blocks) == 47518  # docs/latency.md states this size
    rng, grid = random.Random(0), ChannelGrid(space)
    for _ in range(200):
        assert {b for _, b in genome_blocks(random_genome(space, rng), SIZE, CHANS, CLASSES, grid)} <= blocks


def test_blocks_chain_with_the_shapes_the_network_feeds_them() -> None:
    import torch

    from menas.latency.modules import block_module
    from menas.nn.builder import build_model

    genome = Genome.from_str(MOBILENETV3_SMALL)
    model = build_model(genome, CLASSES, CHANS).eval()
    seen: list[tuple[int, ...]] = []
    parts = [model.stem, model.ds, *[layer for stage in model.stages for layer in stage], model.head_conv]
    for part in parts:
        part.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[1:])))
    with torch.no_grad():
        model(torch.zeros(1, CHANS, 36, 36))  # 36 px: odd sizes on the way exercise the rounding up
    blocks = [b for _, b in genome_blocks(genome, 36, CHANS, CLASSES)]
    assert [b.input_shape for b in blocks] == seen
    with torch.no_grad():
        for block in blocks:
            out = block_module(block)(torch.zeros(1, *block.input_shape))
            assert out.shape[1] == block.out_chs


# --------------------------------------------------------------------------------------------- table and predictor


def test_the_predictor_is_exact_on_a_synthetic_table(tmp_path: Path) -> None:
    table = synthetic_table(tmp_path)
    assert table.complete and len(table.entries) == table.total
    rng = random.Random(1)
    genomes = list({g.to_str(): g for g in (random_genome(TINY, rng) for _ in range(40))}.values())
    sums = [sum(fake_cost(b)["median_ms"] for _, b in genome_blocks(g, SIZE, CHANS, CLASSES)) for g in genomes]
    assert [Predictor(table).predict(g) for g in genomes] == pytest.approx(sums, rel=1e-9)
    mparams = [count_params(g, CHANS, CLASSES) / 1e6 for g in genomes]
    measured = [
        (1.3 + 0.2 * p) * s + 0.7 + 0.02 * (g.depth + 3) for s, p, g in zip(sums, mparams, genomes, strict=True)
    ]
    fitted = Predictor(table).fit(genomes[:10], measured[:10])
    coefficients = (fitted.scale, fitted.sum_per_mparam, fitted.overhead_ms, fitted.per_block_ms)
    assert coefficients == pytest.approx((1.3, 0.2, 0.7, 0.02), rel=1e-6)
    predicted = [fitted.predict(g) for g in genomes[10:]]
    assert predicted == pytest.approx(measured[10:], rel=1e-9)
    scores = evaluate(predicted, measured[10:])
    assert scores.within == 1.0 and scores.worst_rel_error < 1e-9 and scores.spearman == pytest.approx(1.0)


def test_evaluation_and_the_macs_baseline() -> None:
    scores = evaluate([1.0, 2.1, 2.5], [1.0, 2.0, 3.0])
    assert scores.within == pytest.approx(2 / 3) and scores.worst_rel_error == pytest.approx(1 / 6)
    assert scores.rmse_ms == pytest.approx(((0.01 + 0.25) / 3) ** 0.5) and scores.spearman == pytest.approx(1.0)
    assert macs_factor([1e6, 2e6], [1.0, 2.0]) == pytest.approx(1e-6)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(UserError, match="measured latencies"):
        evaluate([1.0], [0.0])


def test_a_missing_block_is_named(tmp_path: Path) -> None:
    rng = random.Random(2)
    first = random_genome(TINY, rng)
    only = [b for _, b in genome_blocks(first, SIZE, CHANS, CLASSES)]
    table = synthetic_table(tmp_path, only=only)
    assert not table.complete and Predictor(table).predict(first) > 0
    stage = first.stages[0]
    wide = dataclasses.replace(stage, layers=(dataclasses.replace(stage.layers[0], kernel=7), *stage.layers[1:]))
    outside = dataclasses.replace(first, stages=(wide, *first.stages[1:]))
    with pytest.raises(UserError, match=r"no entry for block ir_r16_k7_\S+ \(stages\.0\.0 of genome"):
        Predictor(table).predict(outside)


def test_a_table_for_another_target_is_refused(tmp_path: Path) -> None:
    table = synthetic_table(tmp_path)
    path = table.path
    assert open_table(path, TINY, SIZE, CHANS, CLASSES, runtime="torch").total == table.total
    with pytest.raises(UserError, match="measured for input_size 32, this asks 64"):
        open_table(path, TINY, 64, CHANS, CLASSES)
    with pytest.raises(UserError, match="measured for runtime 'torch', this asks 'onnxruntime'"):
        open_table(path, TINY, SIZE, CHANS, CLASSES, runtime="onnxruntime")
    edited = dataclasses.replace(TINY, feat_chs=128)  # same name, another definition
    with pytest.raises(UserError, match="space_hash"):
        open_table(path, edited, SIZE, CHANS, CLASSES)
    with pytest.raises(UserError, match="measured for batch 1, this asks 2"):  # no resume into another target
        build_table(TINY, SIZE, CHANS, CLASSES, Settings(batch=2), path, measure=fake_cost, host=HOST)
    with pytest.raises(UserError, match="measured with cpu 'test cpu'"):  # nor on another machine
        build_table(TINY, SIZE, CHANS, CLASSES, Settings(), path, measure=fake_cost, host={**HOST, "cpu": "other"})
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(UserError, match="not a menas latency table"):
        LatencyTable.load(path)


def test_merged_tables_take_each_blocks_median_and_refuse_another_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for k, factor in enumerate((1.0, 5.0, 2.0)):  # three "processes": the same blocks at 1x, 5x and 2x fake_cost

        def scaled(block: Block, settings: Settings | None = None, factor: float = factor) -> dict[str, float]:
            return {"median_ms": factor * fake_cost(block)["median_ms"], "p90_ms": factor, "iqr_ms": 0.0}

        only = None if k < 2 else sorted(space_blocks(TINY, SIZE, CHANS, CLASSES), key=lambda b: b.key)[:5]
        out = tmp_path / f"t{k}.json"
        build_table(TINY, SIZE, CHANS, CLASSES, Settings(), out, measure=scaled, host=HOST, only=only)
        paths.append(str(out))
    merged_path = tmp_path / "merged.json"
    assert main(["latency-table", "--merge", *paths, "--out", str(merged_path)]) == 0
    line = capsys.readouterr().out.strip()
    merged = LatencyTable.load(merged_path)
    assert merged.complete and merged.fit is None and f"{merged.total}/{merged.total} blocks" in line
    assert "the median of 3 tables (5 blocks in all of them)" in line
    for block in space_blocks(TINY, SIZE, CHANS, CLASSES):
        entry, base = merged.entries[block.key], fake_cost(block)["median_ms"]
        factor = 2.0 if entry["rounds"] == 3 else 3.0  # the third table holds 5 blocks: median(1, 5, 2), else (1, 5)
        assert entry["median_ms"] == pytest.approx(base * factor) and entry["p90_ms"] == factor
    other = tmp_path / "other.json"
    build_table(TINY, SIZE, CHANS, CLASSES, Settings(threads=1, batch=2), other, measure=fake_cost, host=HOST)
    assert main(["latency-table", "--merge", paths[0], str(other), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was measured for batch 2" in err[0] and not (tmp_path / "x.json").exists()
    assert main(["latency-table", "--merge", paths[0], "--out", str(tmp_path / "x.json")]) == 2
    assert "allowed: 2 or more tables" in capsys.readouterr().err
    assert main(["latency-table", "--merge", paths[0], paths[1], "--out", paths[0]]) == 2
    assert "is one of the --merge tables" in capsys.readouterr().err


def test_the_build_is_resumable_and_saves_as_it_goes(tmp_path: Path) -> None:
    out, calls = tmp_path / "t.json", []

    def counting(block: Block, settings: Settings) -> dict[str, float]:
        calls.append(block.key)
        if len(calls) == 7:
            raise KeyboardInterrupt  # stopped mid-build: what was measured is on disk
        return fake_cost(block)

    with pytest.raises(KeyboardInterrupt):
        build_table(TINY, SIZE, CHANS, CLASSES, Settings(), out, measure=counting, host=HOST, save_every=4)
    assert len(LatencyTable.load(out).entries) == 6
    first = build_table(TINY, SIZE, CHANS, CLASSES, Settings(), out, measure=fake_cost, host=HOST, max_new=5)
    assert (first.measured_before, first.measured_now, first.table.complete) == (6, 5, False)
    rest = build_table(TINY, SIZE, CHANS, CLASSES, Settings(), out, measure=counting, host=HOST)
    assert rest.measured_before == 11 and rest.table.complete
    assert len(set(calls)) == len(calls)  # no block measured twice


def test_measured_blocks_of_every_kind_make_a_table_that_predicts(tmp_path: Path) -> None:
    import torch

    threads = torch.get_num_threads()
    settings = Settings(warmup=1, runs=2)
    table = build_table(TINY, SIZE, CHANS, CLASSES, settings, tmp_path / "real.json").table
    assert table.complete and table.host["torch"] == torch.__version__ and torch.get_num_threads() == threads
    assert all(0 < e["median_ms"] <= e["p90_ms"] for e in table.entries.values())
    assert Predictor(table).predict(random_genome(TINY, random.Random(3))) > 0


def test_measure_records_settings_and_restores_threads() -> None:
    import torch

    from menas.latency.modules import block_module

    module = block_module(Block("ir", 8, 16, 16, 32, 3, 1, True, "hardswish"))
    result = measure(module, (16, 8, 8), Settings(warmup=1, runs=1, min_time_s=0.02))
    assert result.runs > 1 and result.timed_s > 0.01 and torch.get_num_threads() == 1
    assert result.to_dict()["settings"]["threads"] == 1 and result.host["cpu"]
    assert result.input_shape == (1, 16, 8, 8)
    stats = statistics([0.001, 0.002, 0.003, 0.004, 0.100])
    assert stats["median_ms"] == pytest.approx(3.0) and stats["iqr_ms"] == pytest.approx(2.0)
    pytest.importorskip("onnxruntime")
    onnx = measure(module, (16, 8, 8), Settings(runtime="onnxruntime", warmup=1, runs=3))
    assert onnx.runs == 3 and onnx.host["onnxruntime"] == onnx.host["runtime_version"]


def test_the_garbage_collector_is_off_while_timing_and_restored_after() -> None:
    import gc

    from menas.latency.measure import time_runs

    seen: list[bool] = []
    assert gc.isenabled()
    times = time_runs(lambda: seen.append(gc.isenabled()), lambda: None, Settings(warmup=2, runs=3))
    assert len(times) == 3 and seen == [False] * 5 and gc.isenabled()
    gc.disable()
    try:  # a caller that had it off keeps it off
        time_runs(lambda: None, lambda: None, Settings(warmup=0, runs=1))
        assert not gc.isenabled()
    finally:
        gc.enable()


# --------------------------------------------------------------------------------------------- CLI


def test_menas_latency_prints_one_line_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "latency.json"
    args = ["latency", "mobilenetv3_small_100", "--input-size", "32", "--num-classes", "10"]
    assert main([*args, "--runs", "3", "--warmup", "1", "--min-time", "0", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and " ms median (p90 " in lines[0] and "1 thread(s), torch" in lines[0]
    record = json.loads(out.read_text())
    assert record["genome"] == Genome.from_str(MOBILENETV3_SMALL).to_str() and record["runs"] == 3
    assert record["input_shape"] == [1, 3, 32, 32] and record["median_ms"] > 0 and record["host"]["cpu"]

    # by default a network is timed for at least NETWORK_MIN_TIME_S, so a fast one gets many more runs
    assert main([*args, "--runs", "3", "--warmup", "1", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["settings"]["min_time_s"] == NETWORK_MIN_TIME_S == 0.2
    assert record["timed_s"] >= 0.5 * NETWORK_MIN_TIME_S and record["runs"] > 3  # 3 runs take ~5 ms


def test_menas_latency_rounds_take_the_median_over_fresh_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "latency.json"
    args = ["latency", "mobilenetv3_small_100", "--input-size", "16", "--num-classes", "10", "--runs", "3"]
    assert main([*args, "--warmup", "1", "--min-time", "0", "--rounds", "3", "--json", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[0]
    assert " ms median of 3 processes (" in line and "spread " in line and "at 16 px" in line
    record = json.loads(out.read_text())
    medians = record["round_medians_ms"]
    assert record["rounds"] == 3 == len(medians) == len(record["round_records"])
    assert record["median_ms"] == sorted(medians)[1] and record["round_spread"] >= 0
    assert {r["settings"]["runs"] for r in record["round_records"]} == {3} and record["input_shape"] == [1, 3, 16, 16]
    assert main([*args, "--rounds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rounds: got 0, allowed: 1..20" in err[0]


def test_latency_rounds_warn_when_the_processes_disagree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    medians = iter([1.0, 1.3, 1.1])

    def fake_round(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "menas.cli", "latency"] and "--rounds" not in command
        record = {"source": "x", "input_size": 32, **fake_measurement(next(medians)).to_dict()}
        Path(command[command.index("--json") + 1]).write_text(json.dumps(record))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_round)
    assert main(["latency", "mobilenetv3_small_100", "--rounds", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("1.100 ms median of 3 processes (1.000-1.300 ms, spread 27.3%)")
    assert lines[1].startswith("warning: the rounds spread over 27%")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threads", str(cpu_cores() + 1)], f"--threads: got {cpu_cores() + 1}, allowed: 1..{cpu_cores()}"),
        (["--runtime", "onnxruntime"], "--runtime onnxruntime: the onnxruntime package is not installed"),
        (["--batch", "0"], "--batch: got 0"),
    ],
)
def test_bad_measure_flags_are_one_line_errors(
    extra: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the export extra were not installed
    assert main(["latency", "mobilenetv3_small_100", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert main(["latency-table", "--space", "mobilenet3-ws", "--out", "x.json", *extra]) == 2
    assert message in capsys.readouterr().err


def test_menas_latency_table_counts_builds_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY.to_yaml())
    args = ["latency-table", "--space", str(space), "--input-size", "32", "--num-classes", "10"]
    assert main([*args, "--count"]) == 0
    total = len(space_blocks(TINY, SIZE, CHANS, CLASSES))
    assert capsys.readouterr().out.startswith(f"{total} blocks of space tiny at 32 px (1 stem, 1 ds, ")
    out = tmp_path / "table.json"
    run = [*args, "--runs", "2", "--warmup", "0", "--out", str(out), "--max-blocks", "4"]
    assert main(run) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: 4/{total} blocks (4 measured now, 0 before), incomplete"), line
    other = ["latency-table", "--space", str(space), "--input-size", "64", "--num-classes", "10", "--runs", "2"]
    assert main([*other, "--warmup", "0", "--out", str(out)]) == 2
    assert "measured for input_size 32, this asks 64" in capsys.readouterr().err


def test_rounds_combine_into_the_median_of_their_medians() -> None:
    """Median, p90, IQR and mean are the rounds' medians, the minimum the smallest, runs and time the totals; the
    JSON form reads back to the same measurement."""
    rounds = [fake_measurement(1.0, 1.5), fake_measurement(1.3, 1.4), fake_measurement(1.1, 2.0, runs=20)]
    one = combine(rounds)
    assert (one.median_ms, one.p90_ms, one.min_ms, one.runs) == (1.1, 1.5, 0.9, 40)
    assert one.rounds == 3 and one.round_medians_ms == (1.0, 1.3, 1.1)
    assert one.round_spread == pytest.approx(0.3 / 1.1) and rounds[0].round_spread == 0
    assert measurement_of(json.loads(json.dumps(one.to_dict()))) == one
    assert measurement_of(rounds[0].to_dict()) == rounds[0] and "round_spread" not in rounds[0].to_dict()
    flags = settings_flags(Settings(batch=2, threads=1, runtime="torch", warmup=3, runs=7, min_time_s=0.5))
    assert flags == ["--batch", "2", "--threads", "1", "--runtime", "torch", "--device", "cpu", "--warmup", "3",
                     "--runs", "7", "--min-time", "0.5"]  # fmt: skip
    with pytest.raises(ValueError, match="no rounds"):
        combine([])
