"""Individual weight sharing (issue 12): does a child's score after a shortened inherited training rank children
as their scores after full training from scratch do? (BENCHMARKS.md "Weight sharing", goal Spearman >= 0.7.)

1. Trains a population of P parents (seeded samples of mobilenet3-mt within a small budget) for E epochs.
2. Breeds C children from them as MENAS does (crossover + repair with probability 1/2, else mutation), with
   their gene origins (`operators.*_traced`).
3. Per child, four scores on search-val:
   - `inherit+0`: the parents' weights mapped in (`inherit.inherit`), BN recalibrated, no training;
   - `inherit+e`: the same, then trained e epochs (the shortened inherited training);
   - `scratch+e`: trained e epochs from scratch (the same compute as `inherit+e`: the control);
   - `scratch+E`: trained E epochs from scratch (the reference).
4. Prints Spearman of each against `scratch+E`, the mean scores, the tensors inherited, and the training images.

Run: .venv/bin/python bench/bench_inherit.py [--parents 8] [--children 30] [--epochs 3] [--inherit-epochs 1]
     .venv/bin/python bench/bench_inherit.py --smoke   (synthetic data at 16 px: a check that it runs, not evidence)
     --ceiling trains each reference a second time with another seed: Spearman between the two is the most any
     proxy can reach against one reference (its noise ceiling); the summary also gives Spearman within each role.
     --cache DIR (default runs/bench_inherit-cache; --no-cache: none) keeps the trained parents and every
     from-scratch score, keyed by what determines them (data, recipe, genome, seed): a variant (another e, shrink,
     perturb) retrains only what it changes, and a stopped run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from menas.config import DataConfig, TrainConfig
from menas.data.splits import build_loaders
from menas.nn.builder import build_model
from menas.prune.diagnose import correlations
from menas.prune.recalibrate import calibration_batches, merge_batches
from menas.prune.tickets import top1
from menas.search.inherit import InheritCounts, inherit
from menas.space.cost import Budget
from menas.space.operators import crossover_traced, mutate_traced, repair_traced, sample
from menas.space.spaces import PRESETS
from menas.train.loop import seed_trial, train

ARMS = ("inherit+0", "inherit+e", "scratch+e", "scratch+E")
#: The reference trained again with another seed: the noise ceiling of any Spearman against it (`--ceiling`).
CEILING = "scratch+E'"


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parents", type=int, default=8)
    parser.add_argument("--children", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3, help="E: parents' and the reference's epochs")
    parser.add_argument("--inherit-epochs", type=int, default=1, help="e: the shortened training")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--macs-max", type=float, default=8e6, help="budget of the sampled parents and children")
    parser.add_argument("--train-fraction", type=float, default=0.1, help="search-train share of the training set")
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--shrink", type=float, default=1.0)
    parser.add_argument("--perturb", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ceiling", action="store_true",
                        help="train each reference twice (another seed): what a perfect proxy could reach")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="synthetic data at 16 px, 3 parents, 4 children, E=2, e=1")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_inherit-cache"))
    parser.add_argument("--no-cache", dest="cache", action="store_const", const=None)
    args = parser.parse_args()
    if args.smoke:
        args.parents, args.children, args.epochs, args.inherit_epochs = 3, 4, 2, 1
        args.dataset, args.input_size, args.macs_max = "synthetic", 16, 1e6
        args.train_fraction, args.val_fraction = 0.3, 0.1
    return args


class Cache:
    """Trained parents' weights and from-scratch scores on disk, keyed by a hash of everything that determines
    them; `root` None keeps nothing."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.scores: dict[str, float] = {}
        if root is not None:
            (root / "parents").mkdir(parents=True, exist_ok=True)
            if (root / "scores.json").is_file():
                self.scores = json.loads((root / "scores.json").read_text())

    @staticmethod
    def key(**parts: object) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def score(self, key: str, compute: Callable[[], float]) -> float:
        if key not in self.scores:
            self.scores[key] = compute()
            if self.root is not None:  # written whole after every score: a stop loses at most one
                tmp = self.root / "scores.json.tmp"
                tmp.write_text(json.dumps(self.scores, indent=0))
                tmp.replace(self.root / "scores.json")
        return self.scores[key]

    def state(self, key: str, compute: Callable[[], tuple[dict, float]]) -> tuple[dict, float]:
        """(state_dict, score) of a trained network."""
        path = None if self.root is None else self.root / "parents" / f"{key}.pt"
        if path is not None and path.is_file():
            payload = torch.load(path, map_location="cpu")
            return payload["state"], payload["score"]
        state, score = compute()
        if path is not None:
            torch.save({"state": state, "score": score}, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
        return state, score


def _breed(parents: list, n: int, budget: Budget, rng: random.Random) -> list[tuple]:
    """`n` distinct children (genome, origin, parent indices) of the parents' genomes, bred as MENAS breeds."""
    space = PRESETS["mobilenet3-mt"]
    genomes = [g for g, _ in parents]
    seen, children = set(genomes), []
    for _ in range(50 * n):
        if len(children) >= n:
            break
        if rng.random() < 0.5:
            i, j = rng.sample(range(len(genomes)), 2)
            for child, origin in crossover_traced(genomes[i], genomes[j], space, rng):
                fixed = repair_traced(child, origin, (genomes[i], genomes[j]), space, rng, budget)
                if fixed is not None and fixed[0] not in seen:
                    children.append((*fixed, (i, j)))
                    seen.add(fixed[0])
        else:
            k = rng.randrange(len(genomes))
            child, origin = mutate_traced(genomes[k], space, rng, budget=budget)
            if child not in seen:
                children.append((child, origin, (k,)))
                seen.add(child)
    return children[:n]


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    data = build_loaders(DataConfig(dataset=args.dataset, input_size=args.input_size, batch_size=128,
                                    search_train_fraction=args.train_fraction,
                                    search_val_fraction=args.val_fraction), "cpu")  # fmt: skip
    recipe = TrainConfig(threads=args.threads)  # the default (short) recipe, the same for every arm
    full = dataclasses.replace(recipe, epochs=args.epochs)
    short = dataclasses.replace(recipe, epochs=args.inherit_epochs)
    budget = Budget(macs_min=args.macs_max / 4, macs_max=args.macs_max, params_max=2e6, input_size=args.input_size,
                    in_chans=data.in_chans, num_classes=data.num_classes)  # fmt: skip
    rng = random.Random(args.seed)
    start = time.perf_counter()
    cache = Cache(args.cache)
    same_data = {k: getattr(args, k) for k in ("dataset", "input_size", "train_fraction", "val_fraction")}

    def from_scratch(genome, cfg: TrainConfig, seed: int) -> tuple[dict, float]:
        """(trained weights, search-val top-1) of the genome trained from scratch under `seed`."""
        seed_trial(seed)
        model = build_model(genome, data.num_classes, data.in_chans)
        score = train(model, data.train, data.val, cfg).val_top1
        return model.state_dict(), score  # after training: it moves the weights to new (channels_last) tensors

    def recipe_key(cfg: TrainConfig) -> dict:
        return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "threads"}

    parents = []
    for k in range(args.parents):
        genome = sample(PRESETS["mobilenet3-mt"], rng, budget)
        key = cache.key(what="parent", genome=genome.to_str(), seed=args.seed * 1000 + k, recipe=recipe_key(full),
                        **same_data)  # fmt: skip
        state, score = cache.state(key, lambda g=genome, s=args.seed * 1000 + k: from_scratch(g, full, s))
        model = build_model(genome, data.num_classes, data.in_chans)
        model.load_state_dict(state)
        again = top1(model.eval(), data.val)
        if abs(again - score) > 0.5:  # the weights kept are not the ones scored (a stale or broken cache)
            raise SystemExit(f"parent {k}: the cached weights score {again:.1f}%, trained they scored {score:.1f}%")
        parents.append((genome, model))
        print(f"parent {k}: {score:.1f}% after {args.epochs} epochs  {genome}")
    calib = merge_batches(calibration_batches(data.train, 4, epoch=args.epochs))
    children = _breed(parents, args.children, budget, rng)
    scores: dict[str, list[float]] = {arm: [] for arm in (*ARMS, CEILING)}
    roles: list[str] = []
    total = InheritCounts()
    for c, (genome, origin, picks) in enumerate(children):
        seed = args.seed * 1000 + 500 + c
        models = [parents[k][1] for k in picks]
        model, counts = inherit(genome, origin, models, seed, shrink=args.shrink, perturb=args.perturb,
                                calib_batches=calib, channels_last=True)  # fmt: skip
        for name in ("copied", "sliced", "padded", "fresh"):
            setattr(total, name, getattr(total, name) + getattr(counts, name))
        scores["inherit+0"].append(top1(model, data.val))
        scores["inherit+e"].append(train(model, data.train, data.val, short).val_top1)
        scratch_arms = [("scratch+e", short, seed), ("scratch+E", full, seed)]
        other = seed + 7919  # the ceiling: another initialisation and another training seed
        scratch_arms += [(CEILING, dataclasses.replace(full, seed=other), other)] if args.ceiling else []
        for arm, cfg, arm_seed in scratch_arms:
            key = cache.key(what="scratch", genome=genome.to_str(), seed=arm_seed, recipe=recipe_key(cfg),
                            **same_data)  # fmt: skip
            scores[arm].append(cache.score(key, lambda g=genome, c=cfg, s=arm_seed: from_scratch(g, c, s)[1]))
        roles.append("crossover" if len(picks) == 2 else "mutation")
        print(f"child {c} ({'x'.join(map(str, picks))}, {origin.new_layers} new layers, {counts.to_dict()}): "
              + "  ".join(f"{arm} {scores[arm][-1]:.1f}%" for arm in ARMS))  # fmt: skip
    _summary(args, scores, roles, total, data.train.num_samples, time.perf_counter() - start)


def _summary(args: argparse.Namespace, scores: dict, roles: list[str], total: InheritCounts, images: int,
             seconds: float) -> None:  # fmt: skip
    reference = scores["scratch+E"]
    print(f"\n{len(reference)} children, {args.parents} parents, E={args.epochs}, e={args.inherit_epochs}, "
          f"{images} search-train images, shrink {args.shrink}, perturb {args.perturb}, {seconds:.0f} s")  # fmt: skip
    for arm in ARMS:
        rho = correlations(scores[arm], reference).spearman if arm != "scratch+E" else 1.0
        within = "  ".join(f"{role} {_spearman_within(scores[arm], reference, roles, role):.3f}"
                           for role in ("mutation", "crossover"))  # fmt: skip
        print(f"  {arm:10s} mean {statistics.mean(scores[arm]):5.1f}%  Spearman vs scratch+E {rho:.3f}  "
              f"(within a role: {within})")  # fmt: skip
    if scores[CEILING]:
        ceiling = correlations(scores[CEILING], reference).spearman
        mean_ref = [(a + b) / 2 for a, b in zip(reference, scores[CEILING], strict=True)]
        print(
            f"  noise ceiling: Spearman(scratch+E, {CEILING}) {ceiling:.3f}; against the mean of both: "
            + ", ".join(f"{arm} {correlations(scores[arm], mean_ref).spearman:.3f}" for arm in ARMS[:3])
        )
    share = total.inherited / max(1, total.inherited + total.fresh)
    print(f"  tensors: {total.to_dict()} (inherited share {share:.2f})")
    print(f"  training images per child: inherit+e {args.inherit_epochs * images}, scratch+E {args.epochs * images} "
          f"({args.inherit_epochs / args.epochs:.2f}x)")  # fmt: skip


def _spearman_within(scores: list[float], reference: list[float], roles: list[str], role: str) -> float:
    picked = [(a, b) for a, b, r in zip(scores, reference, roles, strict=True) if r == role]
    if len(picked) < 3:
        return float("nan")
    return correlations([a for a, _ in picked], [b for _, b in picked]).spearman


if __name__ == "__main__":
    main()
