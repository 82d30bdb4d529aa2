"""How repeatable one latency measurement is on this machine, per runtime: the bound on what any predictor can be
checked against. A predictor cannot be shown closer to "the" latency than two measurements of one network are to
each other.

The first `--n` genomes of a bench_latency.py results file are built once per process (the same seeded weights),
and each is measured `--repeats` times, one after the other (`menas.latency.measure.measure`, the tools'
defaults: 10 warm-up runs, >= 100 timed runs and >= 0.2 s, the median), in `--processes` fresh processes started
one after the other (a process = a new interpreter, allocator and memory layout, as a table's block, a genome's
measurement and a search's final front each get). `measure` turns Python's garbage collector off while timing (as
`timeit` does); `--gc on` keeps it on (what `measure` did before), `--gc both` alternates the two by process.

Printed and written (`--out`, with every median): per runtime, the spread of one network's medians within a process
(max - min over the repeats, relative to their median; the median over networks and processes), between processes
(the same over the processes' first measurements), and the share of pairs of measurements from different processes
within +-10% of each other (the issue's tolerance) and within +-5%; then how well medians over 1, 2 and 3 processes
agree with the next 1, 2 and 3 (`menas latency --rounds K`). `--summarize FILE` prints this from a saved `--out`.

Run when nothing else runs:
    .venv/bin/python bench/latency_repeat.py --results bench/results/latency/2026-12-05/mt-32-torch-t1.json \\
        --runtimes torch onnxruntime --n 10 --processes 4 --repeats 3 --out repeat.json
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One process's measurements: {runtime: [[median ms per repeat] per genome]}."""
    import torch

    import menas.latency.measure as measure_module
    from menas.latency.measure import Settings, measure
    from menas.nn.builder import build_model
    from menas.space.genome import Genome

    record = json.loads(Path(args.results).read_text())
    run = record["args"]
    genomes = [Genome.from_str(g["genome"]) for g in record["genomes"][: args.n]]
    shape = (run["in_chans"], run["input_size"], run["input_size"])
    torch.manual_seed(0)
    models = [build_model(g, run["num_classes"], run["in_chans"]).eval() for g in genomes]
    if not args.gc_off:  # keep the collector on while timing: measure's own gc.disable() made a no-op
        measure_module.gc = types.SimpleNamespace(isenabled=gc.isenabled, disable=lambda: None, enable=gc.enable)
    out: dict[str, Any] = {}
    for runtime in args.runtimes:
        settings = Settings(threads=args.threads, runtime=runtime, runs=args.runs, min_time_s=args.min_time)
        out[runtime] = [[measure(_copy(m) if args.rebuild else m, shape, settings, seed=i).median_ms
                         for _ in range(args.repeats)] for i, m in enumerate(models)]  # fmt: skip
    return out


def _copy(model: Any) -> Any:
    """A fresh copy of the network: the same weights in new tensors and new Python objects (new addresses)."""
    import copy

    return copy.deepcopy(model)


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def summarize(processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (runtime, gc) the spreads and pair agreement described in the module docstring."""
    rows = []
    keys = sorted({(rt, p["gc"]) for p in processes for rt in p["medians"]})
    for runtime, gc_mode in keys:
        runs = [p["medians"][runtime] for p in processes if p["gc"] == gc_mode and runtime in p["medians"]]
        variant = next(p.get("variant", "") for p in processes if p["gc"] == gc_mode)
        n = len(runs[0])
        within = [_spread(r[i]) for r in runs for i in range(n)]
        between = [_spread([r[i][0] for r in runs]) for i in range(n)] if len(runs) > 1 else []
        pairs = [abs(a[i][0] / b[i][0] - 1) for a, b in itertools.combinations(runs, 2) for i in range(n)]
        rows.append({
            "runtime": runtime, "gc": gc_mode, "variant": variant, "processes": len(runs), "networks": n,
            "median_ms": statistics.median(r[i][0] for r in runs for i in range(n)),
            "within_process_spread": statistics.median(within),
            "between_process_spread": statistics.median(between) if between else None,
            "pairs": len(pairs),
            "pairs_within_10pct": sum(d <= 0.10 for d in pairs) / len(pairs) if pairs else None,
            "pairs_within_5pct": sum(d <= 0.05 for d in pairs) / len(pairs) if pairs else None,
        })  # fmt: skip
    return rows


def rounds_agreement(processes: list[dict[str, Any]], runtime: str, k: int) -> dict[str, Any] | None:
    """How well two medians over `k` processes each agree (what `menas latency --rounds k` gives): per network, the
    processes' first measurements in time order (every gc mode), and for each window of 2k consecutive processes
    the median of its first k against the median of its last k. Windows overlap, so the pairs are not independent;
    None when there are fewer than 2k processes."""
    runs = [p["medians"][runtime] for p in processes if runtime in p["medians"]]
    if len(runs) < 2 * k:
        return None
    diffs = [abs(statistics.median(v[s : s + k]) / statistics.median(v[s + k : s + 2 * k]) - 1)
             for v in ([r[i][0] for r in runs] for i in range(len(runs[0])))
             for s in range(len(runs) - 2 * k + 1)]  # fmt: skip
    share = {f"within_{p}pct": sum(d <= p / 100 for d in diffs) / len(diffs) for p in (10, 5)}
    return {"runtime": runtime, "k": k, "pairs": len(diffs), **share, "median_diff": statistics.median(diffs)}


def print_summary(processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prints the table (and the agreement of medians over 1-3 processes); returns the table's rows."""
    rows = summarize(processes)
    print("| runtime | gc | variant | processes x networks | median ms | spread within a process | between processes "
          "| pairs within ±10% | within ±5% |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runtime']} | {r['gc']} | {r.get('variant') or '-'} | {r['processes']} x {r['networks']} | "
              f"{r['median_ms']:.3f} | "
              f"{_pct(r['within_process_spread'])} | {_pct(r['between_process_spread'])} | "
              f"{_pct(r['pairs_within_10pct'])} | {_pct(r['pairs_within_5pct'])} |")  # fmt: skip
    for runtime in sorted({rt for p in processes for rt in p["medians"]}):
        for k in (1, 2, 3):
            a = rounds_agreement(processes, runtime, k)
            if a:
                print(f"{runtime}: medians over {k} process(es) against the next {k}: {_pct(a['within_10pct'])} of "
                      f"{a['pairs']} within ±10%, {_pct(a['within_5pct'])} within ±5%, median difference "
                      f"{_pct(a['median_diff'])}")  # fmt: skip
    return rows


def _variant(args: argparse.Namespace) -> str:
    """The run's variant in a few words: a fresh copy per repeat, a fixed hash seed ("" for neither)."""
    parts = (["rebuild"] if args.rebuild else []) + ([f"hashseed={args.hashseed}"] if args.hashseed is not None else [])
    return " ".join(parts)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="a bench_latency.py --out JSON (its genomes and shape)")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--n", type=int, default=10, help="genomes (the file's first n)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per network in each process")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--min-time", type=float, default=0.2)
    parser.add_argument("--gc", choices=("on", "off", "both"), default="on", help="the garbage collector while timing")
    parser.add_argument("--rebuild", action="store_true",
                        help="measure a fresh copy of the network each repeat (new tensors and objects: does the "
                        "memory layout explain the spread between processes?)")  # fmt: skip
    parser.add_argument(
        "--hashseed", default=None, help="PYTHONHASHSEED of every process (default: Python's, a random one each)"
    )
    parser.add_argument("--out", default=None, help="write every median and the summary here (JSON)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gc-off", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--summarize", default=None, metavar="FILE", help="measure nothing: summarize a saved --out")
    args = parser.parse_args(argv)
    if args.summarize:
        print_summary(json.loads(Path(args.summarize).read_text())["processes"])
        return 0
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    modes = {"on": ["on"], "off": ["off"], "both": ["on", "off"]}[args.gc]
    processes = []
    tic = time.perf_counter()
    for k in range(args.processes * len(modes)):
        mode = modes[k % len(modes)]
        command = [sys.executable, __file__, "--worker", "--results", args.results, "--n", str(args.n),
                   "--repeats", str(args.repeats), "--threads", str(args.threads), "--runs", str(args.runs),
                   "--min-time", str(args.min_time), "--runtimes", *args.runtimes]  # fmt: skip
        if mode == "off":
            command.append("--gc-off")
        if args.rebuild:
            command.append("--rebuild")
        env = None if args.hashseed is None else {**os.environ, "PYTHONHASHSEED": args.hashseed}
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        processes.append(
            {"gc": mode, "variant": _variant(args), "medians": json.loads(done.stdout.strip().splitlines()[-1])}
        )
        print(f"process {k + 1}/{args.processes * len(modes)} (gc {mode}) done, {time.perf_counter() - tic:.0f} s")
    rows = print_summary(processes)
    if args.out:
        from menas.latency.measure import cpu_model

        meta = {"command": "python bench/latency_repeat.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "cpu": cpu_model(), "seconds": round(time.perf_counter() - tic, 1)}  # fmt: skip
        Path(args.out).write_text(json.dumps({"meta": meta, "summary": rows, "processes": processes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
