"""Cost-model throughput: genomes per second counted by formula on one core, and the hook count for contrast.

Run: .venv/bin/python bench/bench_cost.py [--genomes 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import random
import time

from menas.space.cost import count_cost, count_with_hooks
from menas.space.operators import sample
from menas.space.spaces import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--genomes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    for name, space in PRESETS.items():
        rng = random.Random(0)
        genomes = [sample(space, rng) for _ in range(args.genomes)]
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            for genome in genomes:
                count_cost(genome, args.input_size, 3, 1000)
            best = min(best, time.perf_counter() - start)
        depth = sum(g.depth for g in genomes) / len(genomes)
        print(f"{name}: formula {len(genomes) / best:,.0f} genomes/s on one core "
              f"(best of {args.repeat}, {len(genomes)} genomes, mean depth {depth:.1f})")  # fmt: skip
        import torch

        from menas.nn.builder import build_model

        torch.set_num_threads(1)
        start = time.perf_counter()
        for genome in genomes[:20]:
            with torch.device("meta"):
                model = build_model(genome, 1000, 3)
            count_with_hooks(model, args.input_size, 3)
        print(f"{name}: hook count on the meta device {20 / (time.perf_counter() - start):,.1f} genomes/s")


if __name__ == "__main__":
    main()
