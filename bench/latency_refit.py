"""Refits bench_latency.py's predictor on its saved measurements, measuring nothing: the genomes' measured latencies
(`--results`, bench_latency's --out) and their table (`--table`) give the same split (the first `fit_share`
fitted, the rest scored) under another regression, e.g. `--regression gbr`, next to MACs x one factor. With
`--remeasure N` the first N genomes are measured again at the same settings: how far two measurements of one network
are apart bounds what any predictor can reach. `--by-params` prints how the measured / table-sum ratio of all the
genomes moves with their parameter count (what the fit's parameter term is for).

Run: .venv/bin/python bench/latency_refit.py --results R.json --table T.json --regression gbr
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from menas.latency.measure import Settings, measure
from menas.latency.predict import Predictor, evaluate, macs_factor, spearman
from menas.latency.table import LatencyTable, merge_tables
from menas.nn.builder import build_model
from menas.space.cost import count_macs
from menas.space.genome import Genome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="bench_latency.py's --out JSON")
    parser.add_argument("--table", required=True, help="the table it measured (--table)")
    parser.add_argument("--regression", choices=("none", "gbr"), default="gbr")
    parser.add_argument("--remeasure", type=int, default=0, help="genomes to measure again (default 0)")
    parser.add_argument("--by-params", action="store_true", help="the measured / table-sum ratio by parameter count")
    parser.add_argument("--save-remeasure", default=None, metavar="OUT",
                        help="write the --remeasure latencies here (JSON), for --median-of in a later run")  # fmt: skip
    parser.add_argument("--median-of", nargs="+", default=[], metavar="FILE",
                        help="--save-remeasure files of other processes: each genome's latency becomes the "
                             "median of its measurement in --results and in these (those covering it)")  # fmt: skip
    parser.add_argument("--tables", nargs="+", default=[], metavar="TABLE",
                        help="tables of one target measured in other processes: each block's latency becomes the "
                             "median of its entry in --table and in these, as latency-table --merge does")  # fmt: skip
    args = parser.parse_args()
    record = json.loads(Path(args.results).read_text())
    run = record["args"]
    genomes = [Genome.from_str(g["genome"]) for g in record["genomes"]]
    measured = median_of([g["measured_ms"] for g in record["genomes"]], args.median_of, record["genomes"])
    k = max(3, round(run["fit_share"] * len(genomes)))
    tables = [LatencyTable.load(t) for t in [args.table, *args.tables]]
    table = merge_tables(tables) if args.tables else tables[0]  # each block's median over the tables
    fitted = Predictor(table).fit(genomes[:k], measured[:k], regression=args.regression)
    shape = (run["input_size"], run["in_chans"], run["num_classes"])
    factor = macs_factor([count_macs(g, *shape) for g in genomes[:k]], measured[:k])
    label = f"table + overhead ({args.regression})"
    print(evaluate([fitted.predict(g) for g in genomes[k:]], measured[k:]).line(label))
    print(evaluate([factor * count_macs(g, *shape) for g in genomes[k:]], measured[k:]).line("MACs x factor"))
    if args.by_params:
        print(ratio_by_params(Predictor(fitted.table), genomes, measured))
    if args.remeasure:
        again = remeasure(genomes[: args.remeasure], record["settings"], run)
        print(evaluate(again, measured[: args.remeasure]).line("measured again"))
        if args.save_remeasure:
            Path(args.save_remeasure).write_text(json.dumps({"results": args.results, "measured_ms": again}))


def median_of(measured: list[float], files: list[str], genomes: list[dict] | None = None) -> list[float]:
    """Each genome's median over its measurement and those of `files`: measurements from other processes, whose
    median is steadier than one process's. A file is a --save-remeasure output (covering the first genomes) or
    another bench_latency.py --out of the same genomes (same seed and budget; checked against `genomes`)."""
    rounds = []
    for f in files:
        data = json.loads(Path(f).read_text())
        if "genomes" in data:
            if genomes is not None and [g["genome"] for g in data["genomes"]] != [g["genome"] for g in genomes]:
                raise SystemExit(f"--median-of {f}: other genomes than --results")
            rounds.append([g["measured_ms"] for g in data["genomes"]])
        else:
            rounds.append(data["measured_ms"])
    return [statistics.median([m] + [r[i] for r in rounds if i < len(r)]) for i, m in enumerate(measured)]


def ratio_by_params(plain: Predictor, genomes: list[Genome], measured: list[float]) -> str:
    """Spearman of the measured / table-sum ratio with the parameter count, and its median per parameter bucket."""
    ratios = [y / plain.table_sum(g) for g, y in zip(genomes, measured, strict=True)]
    mparams = [plain.mparams(g) for g in genomes]
    parts = [f"measured / table sum vs params: Spearman {spearman(ratios, mparams):.3f}"]
    for lo, hi in ((0, 1), (1, 2), (2, 3), (3, 5), (5, math.inf)):
        inside = [r for r, m in zip(ratios, mparams, strict=True) if lo <= m < hi]
        if inside:
            parts.append(f"{lo}-{hi}M params: n={len(inside)}, median {statistics.median(inside):.2f}")
    return "; ".join(parts)


def remeasure(genomes: list[Genome], settings: dict, run: dict) -> list[float]:
    """The genomes' median latency measured again as bench_latency.py measured them (same settings and seeds)."""
    again = Settings(**settings)
    shape = (run["in_chans"], run["input_size"], run["input_size"])
    models = (build_model(g, run["num_classes"], run["in_chans"]) for g in genomes)
    return [measure(model, shape, again, seed=i).median_ms for i, model in enumerate(models)]


if __name__ == "__main__":
    main()
