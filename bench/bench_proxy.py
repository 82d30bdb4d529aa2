"""How reliable is the search's proxy score? The demo's trial (configs/demo.yaml) per proxy recipe variant.

The demo's goal (issue 10: the last generation's best beats generation 0's in 4 of 5 seeds) needs a proxy whose
ranking of genomes is repeatable: last session one genome trained with 1 vs 2 threads differed by 3.3 points, as
much as two generations gain. This script measures, per variant of the proxy recipe:

* test-retest: G seeded genomes of the demo's budget, each trained as a demo trial (`menas.search.trial.run_trial`: the
  candidate's epochs, the lottery, the fine-tune) with two trial seeds; Spearman between the two replicates'
  final scores (and the candidates' scores before the lottery), and the mean |difference|;
* validity (`--reference`): Spearman between a variant's mean final score and a longer reference training of the
  same genome (`REFERENCE`: 6 epochs on twice the images, no lottery), the accuracy the search is a proxy for;
* its cost: mean trial seconds and training-image equivalents.

Every (variant, genome, seed) is one line of `--out`/results.jsonl, so the script resumes where it stopped; jobs
run in `--workers` processes of one torch thread each (the demo's numbers are per trial, not per wall second).

Usage:
    python bench/bench_proxy.py --out /tmp/proxy --genomes 24 --workers 2 --variants base lr2 ema
    python bench/bench_proxy.py --out /tmp/proxy --summary-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # run from a checkout without installing

from menas.config import SearchConfig, apply_override, from_dict  # noqa: E402

DEMO = HERE.parent / "configs" / "demo.yaml"
#: Each variant: overrides on top of configs/demo.yaml (every variant trains with one torch thread per trial).
VARIANTS: dict[str, tuple[str, ...]] = {
    "base": (),
    "lr2": ("train.lr=0.002",),
    "lr1": ("train.lr=0.001",),
    "ema": ("train.ema=true", "train.ema_warmup=true"),
    "bs64": ("data.batch_size=64", "train.lr=0.002"),
    "data2x-e1": ("data.search_train_fraction=0.1", "train.epochs=1"),
    "e3": ("train.epochs=3",),
    "sgd": ("train.optimizer=sgd", "train.lr=0.05"),  # lr 0.1 diverged on some genomes
}
#: The longer training each genome's proxy is held against (`--reference`): no lottery, no fine-tune.
REFERENCE = ("data.search_train_fraction=0.1", "train.epochs=6")


#: `--set` overrides for every variant and the reference (e.g. data.root on another machine).
EXTRA: list[str] = []


def variant_config(overrides: tuple[str, ...]) -> SearchConfig:
    cfg = from_dict(SearchConfig, yaml.safe_load(DEMO.read_text()), str(DEMO))
    for assignment in (*overrides, *EXTRA, "train.threads=1"):
        cfg = apply_override(cfg, assignment, "bench")
    return cfg


def genomes(count: int, seed: int) -> list[str]:
    """`count` distinct seeded genomes of the demo's space within its budget (as generation 0 samples them)."""
    from menas.data.datasets import dataset_shape
    from menas.search.engine import make_budget
    from menas.space.operators import sample
    from menas.space.spaces import PRESETS

    cfg = variant_config(())
    budget = make_budget(cfg, dataset_shape(cfg.data))
    rng = random.Random(seed)
    found: list[str] = []
    for _ in range(20 * count):
        if len(found) == count:
            break
        genome = str(sample(PRESETS[cfg.space], rng, budget))
        if genome not in found:
            found.append(genome)
    return found


def run_one(variant: str, index: int, genome: str, seed: int, workdir: str) -> dict[str, Any]:
    """One trial of `genome` under the variant's recipe (or the reference's) with trial seed `seed`."""
    from menas.search.trial import TrialJob, run_trial

    reference = variant == "reference"
    cfg = variant_config(REFERENCE if reference else VARIANTS[variant])
    job = TrialJob(trial_id=index, genome=genome, data=cfg.data, train=dataclasses.replace(cfg.train, seed=seed),
                   lottery=None if reference else cfg.lottery, workdir=workdir, seed=seed, device="cpu",
                   finetune_epochs=0 if reference else cfg.finetune_epochs,
                   finetune_lr_scale=cfg.lottery.finetune_lr_scale)  # fmt: skip
    tic = time.perf_counter()
    result = run_trial(job)
    return {"variant": variant, "genome": index, "seed": seed, "score": result.trained_score,
            "final": result.final_score, "ticket": result.ticket is not None,
            "images": result.raw_images, "seconds": time.perf_counter() - tic, "error": result.error}  # fmt: skip


def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spearman(a: list[float], b: list[float]) -> float:
    from menas.prune.diagnose import correlations

    return correlations(a, b).spearman


def summary(rows: list[dict[str, Any]], seeds: list[int]) -> None:
    by: dict[tuple[str, int, int], dict[str, Any]] = {(r["variant"], r["genome"], r["seed"]): r for r in rows}
    reference = {g: r["score"] for (v, g, _), r in by.items() if v == "reference"}
    columns = ("variant", "genomes", "mean final", "Spearman final rep1/rep2", "mean abs diff",
               "Spearman candidate rep1/rep2", "Spearman mean final vs reference", "tickets kept", "s per trial",
               "images per trial")  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for variant in [v for v in VARIANTS if any(r["variant"] == v for r in rows)]:
        pairs = [(by[(variant, g, seeds[0])], by[(variant, g, seeds[1])]) for g in sorted({k[1] for k in by})
                 if (variant, g, seeds[0]) in by and (variant, g, seeds[1]) in by]  # fmt: skip
        failed = sum(a["final"] is None or b["final"] is None for a, b in pairs)
        pairs = [(a, b) for a, b in pairs if a["final"] is not None and b["final"] is not None]
        if len(pairs) < 3:
            continue
        finals = [(a["final"], b["final"]) for a, b in pairs]
        with_ref = [(statistics.fmean(f), reference[a["genome"]]) for (a, _), f in zip(pairs, finals, strict=True)
                    if a["genome"] in reference]  # fmt: skip
        valid = spearman(*map(list, zip(*with_ref, strict=True))) if len(with_ref) >= 3 else float("nan")
        all_rows = [r for p in pairs for r in p]
        cells = [variant, f"{len(pairs)} ({failed} failed)", f"{statistics.fmean(x for f in finals for x in f):.2f}",
                 f"{spearman([a for a, _ in finals], [b for _, b in finals]):.2f}",
                 f"{statistics.fmean(abs(a - b) for a, b in finals):.2f}",
                 f"{spearman([a['score'] for a, _ in pairs], [b['score'] for _, b in pairs]):.2f}",
                 f"{valid:.2f} (n={len(with_ref)})", f"{sum(r['ticket'] for r in all_rows)}/{len(all_rows)}",
                 f"{statistics.fmean(r['seconds'] for r in all_rows):.1f}",
                 f"{statistics.fmean(r['images'] for r in all_rows):.0f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    if reference:
        spread = statistics.stdev(reference.values()) if len(reference) > 1 else 0.0
        print(f"reference ({' '.join(REFERENCE)}): {len(reference)} genomes, "
              f"mean {statistics.fmean(reference.values()):.2f}, stdev {spread:.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--genomes", type=int, default=24)
    parser.add_argument("--genome-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs=2, default=[1, 2], help="the two replicates' trial seeds")
    parser.add_argument("--variants", nargs="+", default=["base", "lr2", "ema"], choices=list(VARIANTS))
    parser.add_argument("--reference", action="store_true", help="also train each genome's reference")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every trial")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    EXTRA.extend(args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    if not args.summary_only:
        pool = genomes(args.genomes, args.genome_seed)
        done = {(r["variant"], r["genome"], r["seed"]) for r in load(results)}
        # genome-major, so a cut run has every variant on the same first genomes
        arms = [(v, s) for v in args.variants for s in args.seeds]
        arms = [("reference", args.seeds[0])] * args.reference + arms
        jobs = [(v, g, s) for g in range(len(pool)) for v, s in arms]
        jobs = [j for j in jobs if j not in done]
        print(f"{len(jobs)} trials to run in {args.workers} processes", flush=True)
        with ProcessPoolExecutor(args.workers, initializer=EXTRA.extend, initargs=(args.set,)) as executor:
            futures = [executor.submit(run_one, v, g, pool[g], s, str(args.out / "trials" / f"{v}-{g}-{s}"))
                       for v, g, s in jobs]  # fmt: skip
            for future in as_completed(futures):
                row = future.result()
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                outcome = row["error"] or f"final {row['final']:.2f} (candidate {row['score']:.2f})"
                print(f"{row['variant']} genome {row['genome']} seed {row['seed']}: {outcome} {row['seconds']:.0f} s",
                      flush=True)  # fmt: skip
    summary(load(results), args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
