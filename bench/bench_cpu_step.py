"""Which CPU settings make a training step faster: mobilenetv3_small_100 (menas' genome, 1 channel, 10 classes, 32 px,
batch 128, RMSprop) on one torch thread, one training step timed per variant, each variant in a fresh process:

- `contiguous`: the network and batch in the default memory format;
- `channels_last`: both channels-last (menas' default for training);
- `channels_last-bf16`: plus bf16 autocast;
- `channels_last-compile`: plus `torch.compile` of the network (its first step, which compiles, timed apart).

The step is timed after 3 warm-up steps over `--steps` steps. Prints one line per variant and writes JSON (`--out`).

Run when nothing else runs: .venv/bin/python bench/bench_cpu_step.py --out step.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("contiguous", "channels_last", "channels_last-bf16", "channels_last-compile")


def time_variant(variant: str, steps: int) -> dict[str, float | str]:
    """One variant's first step and mean warm step, in this process."""
    import torch

    from menas.nn.builder import build_model
    from menas.space.genome import REFERENCE_GENOMES, Genome

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(Genome.from_str(REFERENCE_GENOMES["mobilenetv3_small_100"]), num_classes=10, in_chans=1)
    x, y = torch.randn(128, 1, 32, 32), torch.randint(0, 10, (128,))
    if variant.startswith("channels_last"):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, foreach=True)
    forward = torch.compile(model) if variant.endswith("compile") else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.endswith("bf16")):
            loss = torch.nn.functional.cross_entropy(forward(x).float(), y)
        loss.backward()
        optimizer.step()

    tic = time.perf_counter()
    step()
    first = time.perf_counter() - tic
    for _ in range(3):
        step()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    warm = (time.perf_counter() - tic) / steps
    return {"variant": variant, "first_step_s": first, "step_ms": 1e3 * warm, "images_per_s": 128 / warm}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=15, help="timed warm steps per variant (default 15)")
    parser.add_argument("--repeats", type=int, default=1, help="processes per variant, in turn (default 1)")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(time_variant(args.worker, args.steps)))
        return 0
    rows = []
    for variant in [v for _ in range(args.repeats) for v in args.variants]:
        done = subprocess.run([sys.executable, __file__, "--worker", variant, "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{variant}: {r['step_ms']:.1f} ms/step, {r['images_per_s']:.0f} img/s, first {r['first_step_s']:.1f} s")
    if args.out:
        from menas.latency.measure import cpu_model

        meta = {"command": "python bench/bench_cpu_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "cpu": cpu_model()}  # fmt: skip
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
