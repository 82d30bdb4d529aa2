"""The evidence benchmark of issue 10: the paper's Table 3 and Fig. 4 on Fashion-MNIST at equal search compute.

Arms (each `--seeds` seeds, each seed a run folder under `--out`/runs/ARM-sSEED):

* `menas`: MENAS in the MT space, every candidate replaced by its ticket (lottery.policy: always);
* `menas-no-tickets`: the same without tickets (the same E + E_ft epochs on the unpruned candidate);
* `evolution`: regularized evolution in the MT space;
* `random-mt`, `random-ws`: random search in the MT space and in once-for-all's WS space;
* `menas-tolerance` (optional, `--arms`): MENAS with the tolerance gate instead (which policy should be the default).
* `menas-inherit` (optional, `--arms`): MENAS with individual weight sharing (issue 12): bred children start from
  their parents' trained weights and train 1 epoch instead of `train.epochs`.
* `menas-keep-largest` (optional, `--arms`): MENAS with a quarter of the parent pool taken as the largest models
  (`strategy.keep_largest: 0.25`; the default is 0), to set that default by measurement.

Every arm is `base.yaml` with its strategy and space, and stops at the same search compute (`compute.images`,
enforced by the engine). Then each arm's winner (its best trial by `menas.ranking`) is retrained once with the same
fixed schedule for every arm (`retrain_winner`: the training set minus a held-out 2%, `--retrain-epochs` epochs of
the search's recipe) and scored once on the untouched test split. Results: `results.json`, `table3.md` (arm,
space, trials, winner params and MACs, search-val top-1, test top-1 mean ± std over seeds, search compute, trial
time) and `best_vs_compute.png` (best search-val top-1 so far against the images used, mean over seeds) in `--out`,
plus `menas report` of every run (the Fig. 4a/4b/4c analogues) in its folder.

Resumable at every step: a finished run is skipped, an unfinished one resumed (`menas resume` semantics: the
stored config, finished trials kept), a retrain whose `winner.json` exists is skipped. Stop it any time and run
the same command again.

Usage:
    python bench/evidence/run.py --seeds 3                 # the benchmark (hours: see BENCHMARKS.md)
    python bench/evidence/run.py --smoke                   # every step on a tiny setting, a few minutes
    python bench/evidence/run.py --scale paper --seeds 3   # the paper's population, generations, epochs (GPUs)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))  # run from a checkout without installing

from menas.config import SearchConfig, apply_override, from_dict  # noqa: E402
from menas.cost import count_cost, format_count  # noqa: E402
from menas.report import write_report  # noqa: E402
from menas.store import Store  # noqa: E402

#: Each arm: the config keys it sets on top of base.yaml.
ARMS: dict[str, dict[str, Any]] = {
    "menas": {"strategy.name": "menas", "space": "mobilenet3-mt"},
    "menas-no-tickets": {"strategy.name": "menas-no-tickets", "space": "mobilenet3-mt"},
    "evolution": {"strategy.name": "evolution", "space": "mobilenet3-mt"},
    "random-mt": {"strategy.name": "random", "space": "mobilenet3-mt"},
    "random-ws": {"strategy.name": "random", "space": "mobilenet3-ws"},
    "menas-tolerance": {"strategy.name": "menas", "space": "mobilenet3-mt", "lottery.policy": "tolerance"},
    # children start from their parents' weights and train 1 epoch instead of train.epochs (issue 12)
    "menas-inherit": {"strategy.name": "menas-inherit", "space": "mobilenet3-mt", "inherit.epochs": 1},
    # a quarter of the parent pool taken as the largest models (the later paper's guard against collapse; issue 12)
    "menas-keep-largest": {"strategy.name": "menas", "space": "mobilenet3-mt", "strategy.keep_largest": 0.25},
}
DEFAULT_ARMS = ("menas", "menas-no-tickets", "evolution", "random-mt", "random-ws")

#: Config keys each scale sets on top of base.yaml (before the arm's).
SCALES: dict[str, dict[str, Any]] = {
    "default": {},
    # every step in a few minutes on 2 CPU cores: 1% of Fashion-MNIST, one epoch, a handful of trials per arm
    "smoke": {
        "data.search_train_fraction": 0.02,
        "data.search_val_fraction": 0.01,
        "train.epochs": 1,
        "lottery.proposals": 4,
        "lottery.score_images": 128,
        "lottery.rescore_top": 2,
        "compute.images": "12K",
        "executor.kind": "local",
        "train.threads": 2,
    },
    # the paper's population, generations and epochs (section 3): GPUs
    "paper": {
        "strategy.population": 60,
        "strategy.generations": 4,
        "strategy.parents": 10,
        "train.epochs": 5,
        "finetune_epochs": 3,
        "lottery.proposals": 50,
        "data.search_train_fraction": 0.5,
        "data.search_val_fraction": 0.1,
        "compute.images": "200M",
        "executor.workers": None,
        "device": "auto",
    },
}
RETRAIN_EPOCHS = {"default": 5, "smoke": 1, "paper": 30}
#: Where each scale retrains the winner: "retrain" = the training set minus a held-out 2% (`menas.data`); the smoke
#: setting trains on the search-train split only (a few minutes in all). Every scale scores the official test split.
RETRAIN_MODE = {"default": "retrain", "smoke": "search", "paper": "retrain"}


def arm_config(arm: str, seed: int, scale: str) -> SearchConfig:
    """base.yaml, then the scale's keys, then the arm's, then the seed."""
    cfg = from_dict(SearchConfig, yaml.safe_load((HERE / "base.yaml").read_text()), "base.yaml")
    for key, value in {**SCALES[scale], **ARMS[arm], "seed": seed}.items():
        cfg = apply_override(cfg, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}", "bench")
    return cfg


def run_search(cfg: SearchConfig, run_dir: Path) -> float:
    """Runs, resumes or skips (finished) the search in `run_dir`; returns the wall seconds spent here."""
    from menas.search import Search

    tic = time.perf_counter()
    if (run_dir / "menas.sqlite").exists():
        with Store.open(run_dir, readonly=True) as store:
            if store.run_info().status == "finished":
                return 0.0
        Search(None, run_dir, resume=True).run()
    else:
        Search(cfg, run_dir).run()
    return time.perf_counter() - tic


def retrain_winner(run_dir: Path, cfg: SearchConfig, epochs: int, mode: str = "retrain") -> dict[str, Any]:
    """Retrains the run's best network with one fixed schedule (the search's recipe for `epochs` epochs on the
    training set minus a held-out 2%) and scores it once on the test split; kept in `run_dir/winner.json`.

    The hook for `menas retrain` (issue 9): replace the body below `best = ...` by a call of
    `menas.retrain` with one named recipe for every arm, and keep the returned keys."""
    path = run_dir / "winner.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch

    from menas.builder import build_model
    from menas.data import build_loaders, resolve_device
    from menas.space import Genome
    from menas.train import evaluate, seed_trial, train

    with Store.open(run_dir, readonly=True) as store:
        best = store.best()
    genome = Genome.from_str(best.ticket or best.genome)
    device = resolve_device(cfg.device)
    data = build_loaders(cfg.data, device, mode=mode)
    seed_trial(cfg.seed)
    model = build_model(genome, data.num_classes, data.in_chans).to(device)
    recipe = dataclasses.replace(cfg.train, epochs=epochs, seed=cfg.seed)
    torch.set_num_threads(max(1, cfg.train.threads or 1) * max(1, cfg.executor.workers or 1))
    tic = time.perf_counter()
    history = train(model, data.train, data.val, recipe, checkpoint_path=run_dir / "winner.ckpt")
    test = evaluate(model, data.test)
    cost = count_cost(genome, data.input_size, data.in_chans, data.num_classes)
    record = {"trial_id": best.trial_id, "genome": genome.to_str(), "search_val_top1": best.final_score,
              "macs": cost.macs, "params": cost.params, "retrain_epochs": epochs, "holdout_top1": history.val_top1,
              "test_top1": test["top1"], "retrain_s": time.perf_counter() - tic, "retrain_split": mode}  # fmt: skip
    path.write_text(json.dumps(record, indent=1))
    return record


def run_stats(run_dir: Path) -> dict[str, Any]:
    """Trials, compute and the best-so-far curve (images used, best final search-val top-1) of a run."""
    with Store.open(run_dir, readonly=True) as store:
        used = store.compute_used()
        finished = sorted(store.finished(), key=lambda t: t.finished_at or 0.0)
    curve, images, best = [], 0, None
    for t in finished:
        images += t.compute_images or 0
        if t.status == "done":
            best = t.final_score if best is None else max(best, t.final_score)
        if best is not None:
            curve.append((images, best))
    span = (max(t.finished_at for t in finished) - min(t.started_at for t in finished)) if finished else 0.0
    return {"trials": used.trials, "compute_images": used.images, "trial_s": used.trial_s, "span_s": span,
            "curve": curve}  # fmt: skip


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def write_table(results: dict[str, list[dict[str, Any]]], out: Path, header: str) -> Path:
    """The Table 3 analogue, one row per arm (means over seeds; test top-1 mean ± std)."""
    lines = [header, "", "| arm | space | seeds | trials | winner params | winner MACs | search-val top-1 | "
             "test top-1 | search compute (images) | trial time (min) |", "|---" * 10 + "|"]  # fmt: skip
    for arm, rows in results.items():
        if not rows:
            continue

        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.fmean(r[key] for r in rows)

        space = ARMS[arm]["space"].replace("mobilenet3-", "").upper()
        lines.append(f"| {arm} | {space} | {len(rows)} | {mean('trials'):.1f} | {format_count(mean('params'))} | "
                     f"{format_count(mean('macs'))} | {_mean_std([r['search_val_top1'] for r in rows])} | "
                     f"{_mean_std([r['test_top1'] for r in rows])} | {format_count(mean('compute_images'))} | "
                     f"{mean('trial_s') / 60:.1f} |")  # fmt: skip
    path = out / "table3.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_curves(results: dict[str, list[dict[str, Any]]], out: Path) -> Path:
    """Best search-val top-1 so far against search compute, per arm (each seed thin, no averaging across
    different compute points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (arm, rows) in enumerate(results.items()):
        color = f"C{k}"
        for i, r in enumerate(rows):
            xs, ys = zip(*r["curve"], strict=True) if r["curve"] else ((), ())
            ax.step([x / 1e6 for x in xs], ys, where="post", color=color, alpha=0.8,
                    label=arm if i == 0 else None)  # fmt: skip
    ax.set_xlabel("search compute (million images)")
    ax.set_ylabel("best search-val top-1 so far (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "best_vs_compute.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def machine() -> str:
    """CPU model and its vector extensions (the benchmark's numbers depend on them)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    flags = next((line for line in lscpu.splitlines() if line.startswith("Flags")), "")
    ext = sorted({f for f in flags.split() if f.startswith(("avx512f", "amx", "avx2"))})
    return f"{model} ({', '.join(ext) or 'no avx2'}), {len(__import__('os').sched_getaffinity(0))} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--smoke", action="store_true", help="same as --scale smoke, results in results/smoke")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(DEFAULT_ARMS))
    parser.add_argument("--retrain-epochs", type=int, default=None, help="default: 5 (smoke 1, paper 30)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/evidence/results[/smoke]")
    args = parser.parse_args(argv)
    scale = "smoke" if args.smoke else args.scale
    out = args.out or (HERE / "results" / ("smoke" if scale == "smoke" else scale if scale != "default" else ""))
    epochs = args.retrain_epochs or RETRAIN_EPOCHS[scale]
    out.mkdir(parents=True, exist_ok=True)
    command = "python bench/evidence/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    for seed in range(args.seeds):  # seeds outermost: an interrupted benchmark has every arm at equal seeds
        for arm in args.arms:
            cfg = arm_config(arm, seed, scale)
            run_dir = out / "runs" / f"{arm}-s{seed}"
            print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: search", flush=True)
            run_search(cfg, run_dir)
            write_report(run_dir)
            print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: retrain the winner {epochs} epochs", flush=True)
            winner = retrain_winner(run_dir, cfg, epochs, RETRAIN_MODE[scale])
            results[arm].append({**winner, **run_stats(run_dir), "seed": seed})
    header = (f"# Evidence benchmark ({scale})\n\n{time.strftime('%Y-%m-%d %H:%M %Z')}, {machine()}.\n"
              f"Command: `{command}`; retrain: {epochs} epochs of the search recipe, then the test split "
              "once.")  # fmt: skip
    (out / "results.json").write_text(json.dumps({"command": command, "machine": machine(), "scale": scale,
                                                  "retrain_epochs": epochs, "results": results}, indent=1))  # fmt: skip
    table = write_table(results, out, header)
    plot = plot_curves(results, out)
    print(table.read_text())
    print(f"wrote {table}, {plot}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
