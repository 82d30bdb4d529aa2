"""Lottery-ticket search cost and quality on Fashion-MNIST (the issue's targets).

1. Trains N candidates (MobileNetV3-Large and seeded MT samples) for E epochs on the 6,000-image search split.
2. Cost: one proposal (inherit + recalibrate + score the subset) and a whole P-proposal search with successive
   halving, as a ratio to one training epoch of the same candidate. Target: <= 2 epochs for P = 50.
3. Agreement: the ticket chosen with successive halving vs. exhaustive full scoring of the same proposals.
   Target: the same choice in >= 90% of candidates.
4. The diagnostic (M proposals scored with/without BN recalibration, fine-tuned twice): Spearman with the
   fine-tuned accuracy. Target: >= 0.6 with recalibration.

Run: .venv/bin/python bench/bench_lottery.py [--candidates 6] [--epochs 3] [--proposals 50] [--diagnose 4 -M 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time

import torch

from menas.config import DataConfig, LotteryConfig, TrainConfig
from menas.data.splits import build_loaders
from menas.nn.builder import build_model
from menas.prune.diagnose import diagnose
from menas.prune.recalibrate import calibration_batches, merge_batches, recalibrate_bn
from menas.prune.surgery import inherit_weights, propose
from menas.prune.tickets import search_ticket, take_images, top1, use_bf16
from menas.space.cost import Budget
from menas.space.genome import MOBILENETV3_LARGE, Genome
from menas.space.operators import sample
from menas.space.spaces import PRESETS
from menas.train.loop import seed_trial, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--proposals", type=int, default=50)
    parser.add_argument("--diagnose", type=int, default=4, help="candidates to run the diagnostic on")
    parser.add_argument("-M", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = build_loaders(DataConfig(dataset="fashion-mnist", batch_size=128), "cpu")
    train_cfg = TrainConfig(epochs=args.epochs, optimizer="sgd", schedule="cosine", lr=0.1, warmup_epochs=0.0,
                            threads=args.threads)  # fmt: skip
    budget = Budget(macs_min=4e6, macs_max=12e6, params_max=4e6, input_size=32, in_chans=1, num_classes=10)
    rng = random.Random(0)
    genomes = [Genome.from_str(MOBILENETV3_LARGE)]
    genomes += [sample(PRESETS["mobilenet3-mt"], rng, budget) for _ in range(args.candidates - 1)]
    print(f"{len(genomes)} candidates, {args.epochs} epochs each on {data.train.num_samples} images, "
          f"val {data.val.num_samples} images, {args.threads} threads")  # fmt: skip
    lottery = LotteryConfig(proposals=args.proposals)
    exhaustive = dataclasses.replace(lottery, score_images=0)
    agree, ratios, one_ratios = 0, [], []
    for i, genome in enumerate(genomes):
        seed_trial(i)
        model = build_model(genome, data.num_classes, data.in_chans)
        history = train(model, data.train, data.val, train_cfg)
        epoch_s = statistics.median(e.train_seconds for e in history.epochs)
        calib = calibration_batches(data.train, lottery.calib_batches, epoch=args.epochs)
        subset = take_images(data.val, lottery.score_images)
        (proposal,) = propose(genome, dataclasses.replace(lottery, proposals=1), random.Random(99), 32, 1, 10)
        tic = time.perf_counter()
        bf16 = use_bf16(torch.device("cpu"), lottery.amp)
        child = recalibrate_bn(inherit_weights(model, proposal.genome, channels_last=True), merge_batches(calib), bf16)
        top1(child, subset, bf16)
        one_s = time.perf_counter() - tic
        fast = search_ticket(model, calib, data.val, lottery, random.Random(i), 32)
        slow = search_ticket(model, calib, data.val, exhaustive, random.Random(i), 32)
        same = (fast.chosen and fast.chosen.index) == (slow.chosen and slow.chosen.index)
        agree += same
        ratios.append(fast.seconds / epoch_s)
        one_ratios.append(one_s / epoch_s)
        print(f"candidate {i}: val {history.val_top1:.2f}%, epoch {epoch_s:.2f} s; one proposal {one_s:.3f} s "
              f"({one_s / epoch_s:.3f} epochs); {args.proposals} proposals {fast.seconds:.2f} s "
              f"({fast.seconds / epoch_s:.2f} epochs; exhaustive {slow.seconds:.2f} s = {slow.seconds / epoch_s:.2f}"
              f" epochs); ticket {'same' if same else 'DIFFERENT'} "
              f"(halving: {fast.chosen.index if fast.chosen else None} {fast.ticket_score:.2f}%, "
              f"exhaustive: {slow.chosen.index if slow.chosen else None} {slow.ticket_score:.2f}%)")  # fmt: skip
        print("  where the time went (s): " + ", ".join(f"{k} {v:.2f}" for k, v in fast.timings.items()))
        if i < args.diagnose:
            tic = time.perf_counter()
            result = diagnose(model, data, lottery, train_cfg, proposals=args.M, finetune_epochs=1, seed=i)
            print(f"  diagnostic (M={args.M}, 1 fine-tune epoch, {time.perf_counter() - tic:.0f} s): Spearman "
                  f"with recalibration {result.recalibrated.spearman:.3f} (all search-val "
                  f"{result.recalibrated_full.spearman:.3f}), without {result.stale.spearman:.3f}, "
                  f"noise ceiling {result.noise_ceiling.spearman:.3f}; Kendall {result.recalibrated.kendall:.3f} "
                  f"/ {result.stale.kendall:.3f}; Pearson {result.recalibrated.pearson:.3f} / "
                  f"{result.stale.pearson:.3f}")  # fmt: skip
    print(f"summary: P={args.proposals} costs {statistics.median(ratios):.2f} epochs (median; range "
          f"{min(ratios):.2f}-{max(ratios):.2f}); one proposal {statistics.median(one_ratios):.3f} epochs; "
          f"same ticket as exhaustive scoring in {agree}/{len(genomes)} candidates")  # fmt: skip


if __name__ == "__main__":
    main()
