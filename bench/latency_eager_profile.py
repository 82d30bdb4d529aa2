"""Where torch eager's batch-1 inference time goes, for the networks of a bench_latency.py results file: why it runs
~20x slower than onnxruntime at 32 px on one thread and varies more between processes.

For each of the file's first `--n` genomes (built as bench_latency.py builds them): the median per-inference time in
eager mode (`torch.inference_mode`, as `menas.latency.measure` times it) and after `torch.jit.trace` +
`torch.jit.freeze` (batch norm folded into the convolutions; TorchScript is deprecated in torch 2.x, so this is a
probe, not a runtime menas offers); then, for the first genome, torch.profiler's operators by self CPU time over
`--profile-runs` eager inferences, with calls per inference.

Usage (a direction only while other work shares the cores):
    PYTHONPATH=src python bench/latency_eager_profile.py \\
        --results bench/results/latency/2026-12-05/mt-32-torch-t1.json --n 3 --out profile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


def median_ms(run: Callable[[], object], warmup: int, runs: int) -> float:
    """The median time of `runs` calls after `warmup` untimed ones, in ms."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def profile_ops(model: Any, example: Any, runs: int, top: int) -> list[dict[str, Any]]:
    """torch.profiler's `top` operators by self CPU time over `runs` eager inferences: name, calls per inference,
    self CPU microseconds per call and share of the total self CPU time."""
    import torch
    from torch.profiler import profile

    with torch.inference_mode(), profile() as prof:
        for _ in range(runs):
            model(example)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [{"op": e.key, "calls_per_inference": e.count / runs, "self_us_per_call": e.self_cpu_time_total / e.count,
             "self_share": e.self_cpu_time_total / total} for e in ranked]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="a bench_latency.py --out JSON (its genomes and shape)")
    parser.add_argument("--n", type=int, default=3, help="genomes (the file's first n)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300, help="timed inferences per network and mode")
    parser.add_argument("--profile-runs", type=int, default=50)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", default=None, help="write the figures here (JSON)")
    args = parser.parse_args(argv)

    import torch

    from menas.nn.builder import build_model
    from menas.space.genome import Genome

    record = json.loads(Path(args.results).read_text())
    shape = record["args"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    example = torch.randn(1, shape["in_chans"], shape["input_size"], shape["input_size"])
    rows = []
    for i, entry in enumerate(record["genomes"][: args.n]):
        model = build_model(Genome.from_str(entry["genome"]), shape["num_classes"], shape["in_chans"]).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation warnings
            frozen = torch.jit.freeze(torch.jit.trace(model, example).eval())
        with torch.inference_mode():
            eager = median_ms(lambda m=model: m(example), 20, args.runs)
            folded = median_ms(lambda m=frozen: m(example), 20, args.runs)
        rows.append({"genome": i, "eager_ms": eager, "frozen_ms": folded, "eager_over_frozen": eager / folded})
        print(f"genome {i}: eager {eager:.3f} ms, traced and frozen {folded:.3f} ms ({eager / folded:.2f}x)")
    first = build_model(Genome.from_str(record["genomes"][0]["genome"]), shape["num_classes"], shape["in_chans"])
    ops = profile_ops(first.eval(), example, args.profile_runs, args.top)
    print("| operator | calls per inference | self us per call | share of self CPU time |\n|---|---|---|---|")
    for op in ops:
        print(f"| {op['op']} | {op['calls_per_inference']:g} | {op['self_us_per_call']:.1f} | "
              f"{100 * op['self_share']:.1f}% |")  # fmt: skip
    if args.out:
        from menas.latency.measure import cpu_model

        meta = {"command": "python bench/latency_eager_profile.py " + " ".join(argv or sys.argv[1:]),
                "cpu": cpu_model(), "torch": torch.__version__, "threads": args.threads}  # fmt: skip
        Path(args.out).write_text(json.dumps({"meta": meta, "networks": rows, "profile": ops}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
