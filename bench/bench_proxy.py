"""Which proxy fitness ranks architectures best? The demo's trial (configs/demo.yaml) per recipe and score.

The search ranks genomes by a proxy: a short training (the demo: 2 epochs on 3,000 Fashion-MNIST images, the
lottery, 1 fine-tune epoch). Issues 10 and 20: one genome's proxy score moves ~3 points between training seeds
while ordinary genomes' reference accuracies span ~7 points. This script measures, per fitness candidate:

* validity: Spearman between the fitness and a longer reference training of the same genomes (`REFERENCE`: 4x the
  images and 4x the epochs of the proxy, no lottery; the reference of a genome is the mean over its seeds), as
  the mean over the replicates of Spearman(replicate, reference), with a bootstrap 95% interval over genomes and
  the paired bootstrap difference to the demo's score (`base final`);
* reliability: Spearman between replicate 1 and replicate 2 (trial seeds), with its bootstrap interval, and the
  mean |difference| between the replicates;
* cost: seconds and raw images (trained, calibrated, scored) per fitness value.

Fitness candidates: every compute variant (`VARIANTS`: config overrides, plus a loader seed, `loader_seed`)
gives `final` (the search's score), `candidate` (the trained candidate before the lottery), `tse` (minus the
summed mean training losses of the training epochs, Ru et al. 2021), `tse-last` (minus the last training epoch's
mean loss) and `final x2` (the mean of two trials' final scores, at twice the compute); `params` and `macs` alone
(larger = better) are the controls, at no training cost.

Common random numbers: a trial's data order and augmentation draws come from its train loader's seed, which is
`data.seed` (every trial of a search shares it, across seeds too). `data.seed` also draws the search-train/val
split, so the CRN variants keep `data.seed` and set only the loader's seed (`set_loader_seed`): `crn-seed` shares
one loader seed per replicate (every genome of replicate s has the same batches; s=1 and s=2 differ), `nocrn`
gives every (genome, seed) its own. Compare `crn-seed` with `nocrn` (both draw new batches per replicate);
`base`'s replicates share their batches, so its seed-to-seed figure holds only the initialisation's noise.

Every (variant, genome, seed) is one line of `--out`/results.jsonl, in genome-major order (a cut run has every
variant on the same first genomes), so the script resumes where it stopped; a trial cut halfway restarts from
scratch (its per-epoch losses are all recorded). Jobs run in `--workers` processes of one torch thread each.

Usage:
    python bench/bench_proxy.py --out /tmp/proxy --genomes 32 --workers 1 --reference \
        --variants base ema val2x data2x-e1 crn-seed nocrn
    python bench/bench_proxy.py --out /tmp/proxy --summary-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
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
    "val2x": ("data.search_val_fraction=0.1",),  # search-train is unchanged (its draw ignores the val fraction)
    "crn-seed": (),  # the loader seed of replicate s for every genome (`loader_seed`)
    "nocrn": (),  # a loader seed of its own per (genome, seed)
}
#: The longer training each genome's proxy is held against (`--reference`): no lottery, no fine-tune; 4x the
#: images and 4x the epochs of the demo's proxy, on the loader seed of its replicate (`loader_seed`).
REFERENCE = ("data.search_train_fraction=0.2", "train.epochs=8")

#: `--set` overrides for every variant and the reference (e.g. data.root on another machine).
EXTRA: list[str] = []


# --------------------------------------------------------------------------------------------- running trials


def variant_config(overrides: Sequence[str]) -> SearchConfig:
    """configs/demo.yaml with `overrides`, `--set` and one torch thread."""
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


def loader_seed(variant: str, genome: int, seed: int, data_seed: int) -> int:
    """The seed of a trial's data order and augmentation draws: `data_seed` (every trial alike, the search's
    status quo), one per replicate (`crn-seed`, the reference) or one per (genome, seed) (`nocrn`)."""
    if variant == "nocrn":
        return 1_000_000 + 1_000 * seed + genome
    if variant in ("crn-seed", "reference"):
        return 100 + seed
    return data_seed


def set_loader_seed(cfg: SearchConfig, seed: int) -> None:
    """Sets the seed of the train loader `run_trial` will use (this process's cached loaders of `cfg.data`),
    leaving the split, which `data.seed` draws, as it is."""
    from menas.data.device import resolve_device
    from menas.search.trial import load_data

    load_data(cfg.data, resolve_device("cpu")).train.seed = seed


def run_one(variant: str, index: int, genome: str, seed: int, workdir: str) -> dict[str, Any]:
    """One trial of `genome` under the variant's recipe (or the reference's) with trial seed `seed`, as a
    results.jsonl row; its folder is removed before (a cut trial restarts) and after (only the row is kept)."""
    from menas.search.trial import TrialJob, run_trial

    reference = variant == "reference"
    cfg = variant_config(REFERENCE if reference else VARIANTS[variant])
    job = TrialJob(trial_id=index, genome=genome, data=cfg.data, train=dataclasses.replace(cfg.train, seed=seed),
                   lottery=None if reference else cfg.lottery, workdir=workdir, seed=seed, device="cpu",
                   finetune_epochs=0 if reference else cfg.finetune_epochs,
                   finetune_lr_scale=cfg.lottery.finetune_lr_scale)  # fmt: skip
    data_order = loader_seed(variant, index, seed, cfg.data.seed)
    set_loader_seed(cfg, data_order)
    epochs: dict[str, list[Any]] = {"train": [], "finetune": []}
    shutil.rmtree(workdir, ignore_errors=True)
    tic = time.perf_counter()
    result = run_trial(job, lambda phase, stats: epochs[phase].append(stats))
    seconds = time.perf_counter() - tic
    shutil.rmtree(workdir, ignore_errors=True)
    return {"variant": variant, "genome": index, "seed": seed, "loader_seed": data_order,
            "score": result.trained_score, "final": result.final_score, "ticket": result.ticket is not None,
            "macs": result.macs, "params": result.params,
            "train_losses": [e.train_loss for e in epochs["train"]],
            "train_top1": [e.val_top1 for e in epochs["train"]],
            "finetune_losses": [e.train_loss for e in epochs["finetune"]],
            "images": result.raw_images, "seconds": seconds, "error": result.error}  # fmt: skip


def load(path: Path) -> list[dict[str, Any]]:
    """The rows of a results.jsonl (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plan(
    genome_count: int, variants: Sequence[str], seeds: Sequence[int], reference: bool, done: set[tuple[str, int, int]]
) -> list[tuple[str, int, int]]:
    """The (variant, genome, seed) jobs still to run, genome-major (a cut run has every variant on the same first
    genomes), each genome's references first; `done` ones are skipped."""
    arms = [("reference", s) for s in seeds] * reference + [(v, s) for v in variants for s in seeds]
    return [(v, g, s) for g in range(genome_count) for v, s in arms if (v, g, s) not in done]


def set_extra(assignments: list[str]) -> None:
    """A worker's `--set` overrides (the same as the parent's, however the worker was started)."""
    EXTRA[:] = assignments


def run_all(out: Path, pool: list[str], jobs: list[tuple[str, int, int]], workers: int) -> None:
    """Runs `jobs` in `workers` processes, appending each row to `out`/results.jsonl as it finishes."""
    results = out / "results.jsonl"
    print(f"{len(jobs)} trials to run in {workers} processes", flush=True)
    with ProcessPoolExecutor(workers, initializer=set_extra, initargs=(list(EXTRA),)) as executor:
        futures = [executor.submit(run_one, v, g, pool[g], s, str(out / "trials" / f"{v}-{g}-{s}"))
                   for v, g, s in jobs]  # fmt: skip
        for future in as_completed(futures):
            row = future.result()
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(describe(row), flush=True)


def describe(row: dict[str, Any]) -> str:
    """One progress line for a finished trial."""
    head = f"{row['variant']} genome {row['genome']} seed {row['seed']}:"
    if row["error"]:
        return f"{head} {row['error']} {row['seconds']:.0f} s"
    losses = " ".join(f"{x:.3f}" for x in row["train_losses"])
    return (f"{head} final {row['final']:.2f} (candidate {row['score']:.2f}) losses {losses} "
            f"{row['seconds']:.1f} s")  # fmt: skip


# --------------------------------------------------------------------------------------------- statistics


def spearman(a: Any, b: Any) -> Any:
    """Spearman's rank correlation along the last axis (average ranks for ties): a float for 1-D sides, one value
    per row for (draws, n) sides; NaN where a side is constant or shorter than 3."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[-1] < 3:
        r = np.full(a.shape[:-1], math.nan)
    else:
        ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
        ra -= ra.mean(axis=-1, keepdims=True)
        rb -= rb.mean(axis=-1, keepdims=True)
        scale = np.sqrt((ra**2).sum(axis=-1) * (rb**2).sum(axis=-1))
        r = np.where(scale > 0, (ra * rb).sum(axis=-1) / np.where(scale > 0, scale, 1.0), math.nan)
    return float(r) if r.ndim == 0 else r


def bootstrap(statistic: Callable[[np.ndarray], Any], n: int, draws: int, seed: int) -> tuple[float, float]:
    """The 95% percentile interval of `statistic` (of a (draws, n) array of positions, one value per row) over
    `draws` resamples with replacement of n items; the same `seed` and n give the same resamples (so two
    statistics' intervals are paired). NaN resamples (a constant side) are left out."""
    if n < 3:
        return math.nan, math.nan
    values = np.asarray(statistic(np.random.default_rng(seed).integers(0, n, (draws, n))))
    values = values[~np.isnan(values)]
    if not values.size:
        return math.nan, math.nan
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def estimate(
    statistic: Callable[[np.ndarray], Any], n: int, draws: int, seed: int
) -> tuple[float, tuple[float, float]]:
    """`statistic` on all n items (NaN under 3) and its bootstrap interval."""
    value = float(statistic(np.arange(n))) if n >= 3 else math.nan
    return value, bootstrap(statistic, n, draws, seed)


def tse(row: dict[str, Any]) -> float | None:
    """Minus the sum of the training epochs' mean losses (training speed estimate: larger = better)."""
    losses = row.get("train_losses")
    if not losses or not all(math.isfinite(x) for x in losses):
        return None
    return -sum(losses)


def tse_last(row: dict[str, Any]) -> float | None:
    """Minus the last training epoch's mean loss (larger = better)."""
    losses = row.get("train_losses")
    return -losses[-1] if losses and math.isfinite(losses[-1]) else None


#: Scores of one trial: name -> (function of its row, None when missing or failed; what it is).
SCORES: dict[str, tuple[Callable[[dict[str, Any]], float | None], str]] = {
    "final": (lambda r: r.get("final"), "top-1 after the lottery and fine-tune (the search's score)"),
    "candidate": (lambda r: r.get("score"), "top-1 of the trained candidate, before the lottery"),
    "tse": (tse, "minus the summed mean training loss of the training epochs"),
    "tse-last": (tse_last, "minus the last training epoch's mean loss"),
}
#: The controls, from any variant's rows (the candidate's cost does not depend on the recipe); larger = better.
CONTROLS: dict[str, tuple[Callable[[dict[str, Any]], float | None], str]] = {
    "params": (lambda r: r.get("params"), "the candidate's parameter count alone (more = better)"),
    "macs": (lambda r: r.get("macs"), "the candidate's MACs alone (more = better)"),
}


@dataclasses.dataclass(frozen=True)
class Fitness:
    """A fitness candidate: a score of one variant's rows, averaged over `pool` trials (seeds) per value."""

    name: str
    variant: str
    score: Callable[[dict[str, Any]], float | None]
    what: str
    pool: int = 1  # trials per fitness value (2: the mean of two seeds)
    trains: bool = True  # False for the controls (no training needed)


def fitness_candidates(variants: Sequence[str]) -> list[Fitness]:
    """The controls, then every variant's scores and its two-trial mean of `final`."""
    found: list[Fitness] = []
    if variants:
        found += [Fitness(n, variants[0], f, w, trains=False) for n, (f, w) in CONTROLS.items()]
    for v in variants:
        found += [Fitness(f"{v} {n}", v, f, w) for n, (f, w) in SCORES.items()]
        found.append(Fitness(f"{v} final x2", v, SCORES["final"][0], "the mean of two trials' final", pool=2))
    return found


Table = dict[int, list[float]]  # genome -> a value per replicate


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Rows by (variant, genome, seed); a later row of the same trial wins."""
    return {(r["variant"], r["genome"], r["seed"]): r for r in rows}


def replicates(
    rows: dict[tuple[str, int, int], dict[str, Any]],
    variant: str,
    score: Callable[[dict[str, Any]], float | None],
    seeds: Sequence[int],
    pool: int = 1,
) -> Table:
    """genome -> its values of `score`, one per replicate: the seeds taken `pool` at a time and averaged. Only
    genomes with a value for every seed."""
    table: Table = {}
    for g in sorted({k[1] for k in rows if k[0] == variant}):
        values = [score(rows[(variant, g, s)]) if (variant, g, s) in rows else None for s in seeds]
        if any(v is None for v in values):
            continue
        usable = len(values) - len(values) % pool
        table[g] = [statistics.fmean(values[i : i + pool]) for i in range(0, usable, pool)]
    return table


def matrix(table: Table, genomes: Sequence[int]) -> np.ndarray:
    """The (genomes, replicates) array of `table`'s values."""
    return np.array([table[g] for g in genomes], dtype=float).reshape(len(genomes), -1)


def reliability(values: np.ndarray) -> Any:
    """Spearman between replicate 1 and replicate 2 of (..., genomes, replicates) `values` (NaN with fewer than
    2 replicates)."""
    if values.shape[-1] < 2:
        return np.full(values.shape[:-2], math.nan) if values.ndim > 2 else math.nan
    return spearman(values[..., 0], values[..., 1])


def validity(values: np.ndarray, reference: np.ndarray) -> Any:
    """The mean over replicates of Spearman(replicate, reference), `values` (..., genomes, replicates) and
    `reference` (..., genomes)."""
    return np.mean([spearman(values[..., k], reference) for k in range(values.shape[-1])], axis=0)


# --------------------------------------------------------------------------------------------- the summary


@dataclasses.dataclass
class Figures:
    """One fitness candidate's line of the summary."""

    fitness: Fitness
    genomes: int
    mean: float
    validity: float
    validity_ci: tuple[float, float]
    delta: float  # validity minus the reference fitness's, paired over their common genomes
    delta_ci: tuple[float, float]
    reliability: float
    reliability_ci: tuple[float, float]
    mean_abs_diff: float
    seconds: float  # per fitness value
    images: float


def cost(
    rows: dict[tuple[str, int, int], dict[str, Any]], fitness: Fitness, genomes: Sequence[int]
) -> tuple[float, float]:
    """Mean (seconds, raw images) per fitness value over `genomes` (0 for the controls)."""
    if not fitness.trains:
        return 0.0, 0.0
    chosen = set(genomes)
    trials = [r for (v, g, _), r in rows.items() if v == fitness.variant and g in chosen]
    if not trials:
        return math.nan, math.nan
    return (fitness.pool * statistics.fmean(r["seconds"] for r in trials),
            fitness.pool * statistics.fmean(r["images"] or 0 for r in trials))  # fmt: skip


def figures(
    rows: dict[tuple[str, int, int], dict[str, Any]],
    fitness: Fitness,
    seeds: Sequence[int],
    reference: dict[int, float],
    baseline: Table,
    draws: int,
    seed: int,
) -> Figures | None:
    """The summary line of `fitness` (None with fewer than 3 genomes); `baseline` is the table the validity
    difference is taken against, over the genomes both have."""
    table = replicates(rows, fitness.variant, fitness.score, seeds, fitness.pool)
    genomes = sorted(table)
    if len(genomes) < 3:
        return None
    values = matrix(table, genomes)
    with_ref = [g for g in genomes if g in reference]
    own, ref = matrix(table, with_ref), np.array([reference[g] for g in with_ref])
    paired = [g for g in with_ref if g in baseline]
    mine, base, ref_p = matrix(table, paired), matrix(baseline, paired), np.array([reference[g] for g in paired])
    valid = estimate(lambda i: validity(own[i], ref[i]), len(with_ref), draws, seed)
    delta = estimate(lambda i: validity(mine[i], ref_p[i]) - validity(base[i], ref_p[i]), len(paired), draws, seed)
    reliable = estimate(lambda i: reliability(values[i]), len(genomes), draws, seed)
    diff = float(np.mean(np.abs(values[:, 0] - values[:, 1]))) if values.shape[1] >= 2 else math.nan
    return Figures(fitness, len(genomes), float(values.mean()), *valid, *delta, *reliable, diff,
                   *cost(rows, fitness, genomes))  # fmt: skip


def interval(value: float, ci: tuple[float, float]) -> str:
    """`value [low, high]` to 2 decimals, or "-" for NaN."""
    if math.isnan(value):
        return "-"
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def fitness_table(lines: list[Figures]) -> list[str]:
    """The markdown table of the fitness candidates."""
    out = ["| fitness | what | genomes | mean | Spearman vs reference [95%] | minus base final's [95%] | "
           "Spearman rep1 vs rep2 [95%] | mean abs diff | s per value | images per value |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in lines:
        cells = [f.fitness.name, f.fitness.what, str(f.genomes), f"{f.mean:.4g}", interval(f.validity, f.validity_ci),
                 interval(f.delta, f.delta_ci), interval(f.reliability, f.reliability_ci),
                 "-" if math.isnan(f.mean_abs_diff) else f"{f.mean_abs_diff:.4g}", f"{f.seconds:.1f}",
                 f"{f.images:.0f}"]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return out


def reference_lines(
    rows: dict[tuple[str, int, int], dict[str, Any]], seeds: Sequence[int], draws: int, seed: int
) -> list[str]:
    """The reference's spread and its own seed-to-seed reliability (which bounds every validity figure)."""
    table = replicates(rows, "reference", SCORES["final"][0], seeds)
    genomes = sorted(table)
    if len(genomes) < 3:
        return [f"reference: {len(genomes)} genomes with every seed, too few for figures"]
    means = [statistics.fmean(table[g]) for g in genomes]
    values = matrix(table, genomes)
    r, (low, high) = estimate(lambda i: reliability(values[i]), len(genomes), draws, seed)
    trials = [rows[("reference", g, s)] for g in genomes for s in seeds]
    diff = statistics.fmean(abs(table[g][0] - table[g][1]) for g in genomes)
    return [f"Reference ({' '.join(REFERENCE)}, no lottery, loader seed per replicate; score = mean over seeds "
            f"{', '.join(map(str, seeds))}): {len(genomes)} genomes, mean {statistics.fmean(means):.2f}, "
            f"stdev {statistics.stdev(means):.2f}, range {min(means):.2f}-{max(means):.2f}; seed-to-seed "
            f"Spearman {r:.2f} [{low:.2f}, {high:.2f}], mean abs diff {diff:.2f}; reliability of the "
            f"{len(seeds)}-seed mean (Spearman-Brown) {len(seeds) * r / (1 + (len(seeds) - 1) * r):.2f}; "
            f"{statistics.fmean(t['seconds'] for t in trials):.1f} s and "
            f"{statistics.fmean(t['images'] for t in trials):.0f} images per trial."]  # fmt: skip


def same_training(rows: dict[tuple[str, int, int], dict[str, Any]], variant: str, other: str) -> tuple[int, int]:
    """(trials of `variant` whose training losses equal `other`'s same trial, trials compared)."""
    keys = [k for k in rows if k[0] == variant and (other, *k[1:]) in rows]
    same = sum(rows[k].get("train_losses") == rows[(other, *k[1:])].get("train_losses") for k in keys)
    return same, len(keys)


def notes(rows: dict[tuple[str, int, int], dict[str, Any]]) -> list[str]:
    """What a reader needs to read the table."""
    lines = ["Validity: the mean over replicates of Spearman(one replicate's values, reference); `x2` values are "
             "two trials' mean, so x2 has one replicate and no seed-to-seed figure. Intervals: bootstrap over "
             "genomes (percentile, seeded; `minus base final's` is paired over their common genomes). The "
             "controls' sign: more parameters/MACs = better; they do not depend on the seed. `mean abs diff` "
             "is in the score's unit (top-1 points; loss for tse). Cost: seconds and raw images (trained, "
             "calibrated, scored) per fitness value, one torch thread.",
             "Loader seeds: base, ema, val2x, data2x-e1 use data.seed for every trial (the search's common "
             "random numbers, shared across replicates too); crn-seed one per replicate; nocrn one per "
             "(genome, seed). data.seed's split is the same for all."]  # fmt: skip
    same, compared = same_training(rows, "val2x", "base")
    if compared:
        lines.append(f"val2x trains as base (same split, batches and initialisation): {same}/{compared} trials "
                     "have base's training losses exactly.")  # fmt: skip
    failed = {v: sum(r["final"] is None for (w, _, _), r in rows.items() if w == v) for v, _, _ in rows}
    if any(failed.values()):
        lines.append("Failed trials: " + ", ".join(f"{v} {n}" for v, n in failed.items() if n))
    return lines


def summary(rows: list[dict[str, Any]], seeds: Sequence[int], draws: int = 2000, seed: int = 0) -> str:
    """The markdown summary of the rows: the reference, the fitness candidates' table, the notes."""
    keyed = by_key(rows)
    variants = [v for v in VARIANTS if any(k[0] == v for k in keyed)]
    reference = {g: statistics.fmean(v) for g, v in replicates(keyed, "reference", SCORES["final"][0], seeds).items()}
    baseline = replicates(keyed, "base", SCORES["final"][0], seeds)
    lines = [figures(keyed, f, seeds, reference, baseline, draws, seed) for f in fitness_candidates(variants)]
    parts = ["# Proxy fitness candidates vs a longer-trained reference", "",
             *reference_lines(keyed, seeds, draws, seed), "",
             *fitness_table([x for x in lines if x is not None]), "", *notes(keyed)]  # fmt: skip
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--genomes", type=int, default=32)
    parser.add_argument("--genome-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="the replicates' trial seeds (>= 2)")
    parser.add_argument("--variants", nargs="+", default=["base", "ema", "val2x", "data2x-e1", "crn-seed", "nocrn"],
                        choices=list(VARIANTS))  # fmt: skip
    parser.add_argument("--reference", action="store_true", help="also train each genome's reference")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every trial")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples per interval")
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("--seeds: at least 2 (the replicates)")
    EXTRA.extend(args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    if not args.summary_only:
        pool = genomes(args.genomes, args.genome_seed)
        done = set(by_key(load(results)))
        run_all(args.out, pool, plan(len(pool), args.variants, args.seeds, args.reference, done), args.workers)
    text = summary(load(results), args.seeds, args.bootstrap, args.bootstrap_seed)
    (args.out / "summary.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
