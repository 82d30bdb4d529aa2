"""Where a search trial's wall time goes on a device: the evidence benchmark's trials (bench/evidence/base.yaml:
Fashion-MNIST at 32 px, 2 training epochs, 16 lottery proposals, 1 fine-tune epoch), run one after another in one
process as a pool worker runs them.

Prints, per trial: training, lottery and fine-tuning seconds and each training epoch's seconds and images/s; then,
on the first genome, the seconds of one optimizer step (synchronised, after warm-up) and the profiler's top
operations of a few steps. On a GPU this tells launch-bound steps (many small kernels: CPU time per step close to
the wall) from slow kernels or a slow data path.

With `--run RUN_DIR` it runs nothing and reads a finished search's store instead: per kind of trial (generation
0, bred and inherited, bred from scratch) the mean epochs and seconds of training, lottery, fine-tuning and the
whole trial, which is what an inherited child saves (issue 12).

Usage:
    python bench/bench_trial_phases.py --device cuda --trials 4 --root .data/fashion-mnist
    python bench/bench_trial_phases.py --device cpu --trials 2 --threads 2
    python bench/bench_trial_phases.py --run runs/evidence/runs/menas-inherit-s0
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE / "evidence"))

import torch  # noqa: E402

from menas.data.device import resolve_device  # noqa: E402
from menas.nn.builder import build_model  # noqa: E402
from menas.search.engine import make_budget  # noqa: E402
from menas.search.trial import TrialJob, load_data, run_trial  # noqa: E402
from menas.space.operators import sample  # noqa: E402
from menas.space.spaces import load_space  # noqa: E402
from menas.train.loop import _build_parts, _Criterion, _train_step  # noqa: E402


def evidence_config(root: str | None, threads: int):
    from run import arm_config  # bench/evidence/run.py

    overrides = (f"data.root={root}",) if root else ()
    cfg = arm_config("menas", 0, "default", overrides)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))


def step_seconds(genome, cfg, device, steps: int = 20) -> float:
    """Seconds of one training step (forward, backward, optimizer) on a fixed batch, after 5 warm-up steps."""
    data = load_data(cfg.data, device)
    model = build_model(genome, data.num_classes, data.in_chans).to(device, memory_format=torch.channels_last)
    parts, criterion = _build_parts(model, cfg.train, data.train), _Criterion(cfg.train, None)
    images, labels = next(iter(data.train))
    model.train()
    for _ in range(5):
        _train_step(model, parts, criterion, images, labels)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    tic = time.perf_counter()
    for _ in range(steps):
        _train_step(model, parts, criterion, images, labels)
    sync()
    per_step = (time.perf_counter() - tic) / steps
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            _train_step(model, parts, criterion, images, labels)
        sync()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=12), flush=True)
    return per_step


def trial_kinds(run_dir: str) -> None:
    """Prints a finished search's done trials grouped by kind: mean epochs, training, lottery, fine-tuning and
    wall seconds, and MACs."""
    from menas.search.store import Store

    with Store.open(run_dir, readonly=True) as store:
        trials = store.trials("done")
    kinds: dict[str, list] = {}
    for t in trials:
        inherited = t.inherited is not None and not t.inherited.get("fallback")
        kind = "generation 0" if t.generation == 0 else "inherited" if inherited else "bred, scratch"
        kinds.setdefault(kind, []).append(t)
    print(f"{len(trials)} trials done")
    for kind, group in kinds.items():

        def mean(value, group=group) -> float:
            return statistics.fmean(value(t) or 0.0 for t in group)

        print(f"{kind:14s} n={len(group):2d} epochs {mean(lambda t: t.epochs):.1f} "
              f"train {mean(lambda t: t.train_s):6.2f} s lottery {mean(lambda t: t.lottery_s):6.2f} s "
              f"fine-tune {mean(lambda t: t.finetune_s):6.2f} s "
              f"wall {mean(lambda t: t.finished_at - t.started_at):6.2f} s "
              f"MACs {mean(lambda t: t.macs) / 1e6:.2f}M")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: base.yaml's 1)")
    parser.add_argument("--root", default=None, help="the Fashion-MNIST folder (default: the config's)")
    parser.add_argument("--run", default=None, help="only summarise this finished search's trials by kind")
    args = parser.parse_args()
    if args.run:
        trial_kinds(args.run)
        return 0
    cfg = evidence_config(args.root, args.threads)
    device = resolve_device(args.device)
    space = load_space(cfg.space)
    tic = time.perf_counter()
    data = load_data(cfg.data, device)
    budget = make_budget(cfg, (data.input_size, data.in_chans, data.num_classes))
    rng = random.Random(0)
    genomes = [sample(space, rng, budget) for _ in range(args.trials)]
    print(f"device {device}, threads {cfg.train.threads}; data loaded in {time.perf_counter() - tic:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for k, genome in enumerate(genomes):
            job = TrialJob(k, genome.to_str(), cfg.data, cfg.train, cfg.lottery, cfg.finetune_epochs,
                           f"{tmp}/{k:05d}", seed=k, device=str(device))  # fmt: skip
            tic = time.perf_counter()
            r = run_trial(job)
            wall = time.perf_counter() - tic
            epochs = ", ".join(f"{s:.2f} s ({r.images_per_epoch / s:,.0f} img/s)" for s in r.train_epoch_s)
            print(f"trial {k} {r.status} MACs {r.macs / 1e6:.2f}M: wall {wall:.1f} s = train {r.train_s:.1f} + "
                  f"lottery {r.lottery_s or 0:.1f} + fine-tune {r.finetune_s or 0:.1f} (+ rest); "
                  f"training epochs {epochs}; scoring {r.eval_s:.1f} s", flush=True)  # fmt: skip
    print(f"one training step of batch {cfg.data.batch_size}: {step_seconds(genomes[0], cfg, device) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
