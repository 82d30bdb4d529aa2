"""How well the lookup-table predictor (and MACs) predict measured latency: N genomes sampled in a budget, each
measured whole, their blocks measured into a (partial) lookup table, the predictor's overhead fitted on a share of
the genomes and scored on the rest (share within +-10%, RMSE, worst case, Spearman), next to MACs scaled by one
fitted factor. The issue's goal: >= 95% of 200 genomes within +-10% and Spearman >= 0.95, on a quiet machine.

Run: .venv/bin/python bench/bench_latency.py --space mobilenet3-mt --input-size 32 --n 200 [--runtime onnxruntime]
     [--threads 2] [--regression gbr] [--out results.json] [--table T.json --save-fit]
With `--table T.json --save-fit` (T a table of `menas latency-table` with the same settings: its blocks are not
measured again) the fitted overhead is stored in T, where a latency budget (`budget.latency_table`) reads it.
A tiny check that it runs: --space mobilenet3-ws --n 8 --runs 20 --warmup 2 (timings on a busy machine are noise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

from menas.latency.blocks import ChannelGrid, genome_blocks
from menas.latency.measure import Settings, check_available, measure
from menas.latency.predict import Predictor, evaluate, macs_factor
from menas.latency.table import build_table
from menas.nn.builder import build_model
from menas.space.cost import Budget, count_macs, parse_count, parse_range
from menas.space.genome import Genome
from menas.space.operators import sample
from menas.space.spaces import load_space


def sample_genomes(space: Any, n: int, budget: Budget, seed: int) -> list[Genome]:
    """`n` distinct genomes of the space within the budget (bounded tries)."""
    rng = random.Random(seed)
    found: dict[str, Genome] = {}
    for _ in range(20 * n):
        genome = sample(space, rng, budget)
        found.setdefault(genome.to_str(), genome)
        if len(found) == n:
            break
    return list(found.values())


def measure_genomes(genomes: list[Genome], args: argparse.Namespace, settings: Settings) -> list[float]:
    """Each genome's measured median latency, ms, built as `menas train` builds it."""
    shape = (args.in_chans, args.input_size, args.input_size)
    latencies = []
    for i, genome in enumerate(genomes):
        model = build_model(genome, args.num_classes, args.in_chans)
        latencies.append(measure(model, shape, settings, seed=i).median_ms)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mobilenet3-mt")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--macs", default=None, help="a MACs range MIN:MAX for the sampled genomes (default: any)")
    parser.add_argument("--params-max", default=None, help="a parameter bound for the sampled genomes (default: none)")
    parser.add_argument("--n", type=int, default=200, help="genomes to sample and measure")
    parser.add_argument("--fit-share", type=float, default=0.5, help="share of the genomes the overhead is fitted on")
    parser.add_argument("--regression", choices=("none", "gbr"), default="none")
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--min-time", type=float, default=0.0, help="seconds of timed runs at least, per genome "
                        "(`menas latency` uses 0.2)")  # fmt: skip
    parser.add_argument("--table-min-time", type=float, default=0.0, help="seconds of timed runs at least, per "
                        "table block (`menas latency-table` uses 0.02)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", default=None, help="the (partial) table file, continued when it exists")
    parser.add_argument("--out", default=None, help="write the evaluation as JSON here")
    parser.add_argument(
        "--save-fit",
        action="store_true",
        help="store the fitted overhead (regression none) in the table, where a latency budget reads it",
    )
    args = parser.parse_args()

    table_settings = Settings(
        args.batch, args.threads, args.runtime, args.device, args.warmup, args.runs, args.table_min_time
    )
    settings = dataclasses.replace(table_settings, min_time_s=args.min_time)  # the genomes'
    check_available(settings)
    space = load_space(args.space)
    macs = parse_range(args.macs, "--macs") if args.macs else (0.0, float("inf"))
    params_max = parse_count(args.params_max, "--params-max") if args.params_max else float("inf")
    budget = Budget(macs[0], macs[1], params_max, args.input_size, args.in_chans, args.num_classes)
    genomes = sample_genomes(space, args.n, budget, args.seed)
    table_path = Path(args.table or f"/tmp/menas-latency-{space.name}-{args.input_size}-{args.runtime}"
                      f"-t{args.threads}-b{args.batch}.json")  # fmt: skip

    start = time.perf_counter()
    grid, blocks = ChannelGrid(space), set()  # only the sampled genomes' blocks: a partial table
    for genome in genomes:
        blocks.update(b for _, b in genome_blocks(genome, args.input_size, args.in_chans, args.num_classes, grid))
    built = build_table(
        space, args.input_size, args.in_chans, args.num_classes, table_settings, table_path, only=blocks
    )
    table_s = time.perf_counter() - start
    start = time.perf_counter()
    measured = measure_genomes(genomes, args, settings)
    genomes_s = time.perf_counter() - start

    k = max(3, round(args.fit_share * len(genomes)))
    fit_g, test_g, fit_y, test_y = genomes[:k], genomes[k:] or genomes, measured[:k], measured[k:] or measured
    unfitted = Predictor(built.table)
    fitted = unfitted.fit(fit_g, fit_y, regression=args.regression)
    factor = macs_factor([count_macs(g, args.input_size, args.in_chans, args.num_classes) for g in fit_g], fit_y)
    test_macs = [count_macs(g, args.input_size, args.in_chans, args.num_classes) for g in test_g]
    results = {
        "table sum": evaluate([unfitted.predict(g) for g in test_g], test_y),
        f"table + overhead{' + gbr' if args.regression == 'gbr' else ''}": evaluate(
            [fitted.predict(g) for g in test_g], test_y
        ),
        "MACs x factor": evaluate([factor * m for m in test_macs], test_y),
    }
    host = built.table.host
    print(
        f"{len(genomes)} genomes of {space.name} at {args.input_size} px, {settings.runtime} "
        f"{host['runtime_version']}, {settings.threads} thread(s), batch {settings.batch} on {host['device_name']}; "
        f"{len(built.table.entries)} table blocks ({built.measured_now} measured now, {table_s:.0f} s), genomes "
        f"measured in {genomes_s:.0f} s; fitted on {len(fit_g)}, scored on {len(test_g)}"
    )
    print(f"overhead: {fitted.to_dict()}; MACs factor {factor * 1e6:.4g} ms per MMAC")
    for label, evaluation in results.items():
        print(evaluation.line(label))
    if args.save_fit:
        print(f"overhead stored in {fitted.save_fit()} (a latency budget's predictor reads it)")
    if args.out:
        record = {
            "args": vars(args),
            "host": host,
            "settings": settings.to_dict(),
            "predictor": fitted.to_dict(),
            "macs_factor_ms_per_mac": factor,
            "evaluation": {label: e.to_dict() for label, e in results.items()},
            "genomes": [{"genome": g.to_str(), "measured_ms": y} for g, y in zip(genomes, measured, strict=True)],
        }
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
