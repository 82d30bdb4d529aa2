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
enforced by the engine). Then each arm's winner (its best trial by `menas.search.ranking`) is retrained once with the
same
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
from menas.report.build import write_report  # noqa: E402
from menas.search.store import Store  # noqa: E402
from menas.space.cost import count_cost, format_count  # noqa: E402

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
#: Where each scale retrains the winner: "retrain" = the training set minus a held-out 2% (`menas.data.splits`);
#: the smoke setting trains on the search-train split only (a few minutes in all). Every scale scores the official
#: test split.
RETRAIN_MODE = {"default": "retrain", "smoke": "search", "paper": "retrain"}
RETRAIN_WHAT = {"retrain": "{epochs} epochs of `menas retrain`'s short recipe on the training set minus 2%",
                "search": "{epochs} epochs of the search recipe on the search-train split"}  # fmt: skip


def arm_config(arm: str, seed: int, scale: str, overrides: tuple[str, ...] = ()) -> SearchConfig:
    """base.yaml, then the scale's keys, then the arm's, then the seed, then `overrides` ("KEY=VALUE", `--set`)."""
    cfg = from_dict(SearchConfig, yaml.safe_load((HERE / "base.yaml").read_text()), "base.yaml")
    for key, value in {**SCALES[scale], **ARMS[arm], "seed": seed}.items():
        cfg = apply_override(cfg, f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}", "bench")
    for override in overrides:
        cfg = apply_override(cfg, override, "--set")
    return cfg


def run_search(cfg: SearchConfig, run_dir: Path) -> float:
    """Runs, resumes or skips (finished) the search in `run_dir`; returns the wall seconds spent here."""
    from menas.search.engine import Search

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
    """Retrains the run's best network (`menas.search.ranking`: the ticket when one replaced it) from scratch with one
    named recipe for every arm (`menas retrain --recipe short`, `epochs` epochs; issue 9) and scores it once on the
    test split (the kept weights: raw or EMA, whichever scored better on the held-out 2%); kept in
    `run_dir/winner.json`, the retrain's own files in `run_dir/retrain` (a cut retrain resumes from its epoch).
    `mode` "search" (the smoke setting) trains on the search-train split only, with the search's recipe."""
    path = run_dir / "winner.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch

    from menas.config import RetrainConfig
    from menas.data.device import resolve_device
    from menas.winner.retrain import resolve_source, retrain

    source = resolve_source(str(run_dir))
    device = resolve_device(cfg.device)
    torch.set_num_threads(max(1, cfg.train.threads or 1) * max(1, cfg.executor.workers or 1))
    if mode == "search":
        winner = _retrain_on_search_split(source, cfg, epochs, device)
    else:
        recipe = RetrainConfig.preset("short", data=cfg.data, epochs=epochs)
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=cfg.seed, threads=None))
        record = retrain(source, recipe, run_dir / "retrain", device=device)
        kept = record["kept"]
        winner = {"genome": record["genome"], "macs": record["macs"], "params": record["params"],
                  "retrain_recipe": "short", "holdout_top1": record["holdout"][kept]["top1"], "kept": kept,
                  "test_top1": record["test"][kept]["top1"], "test_top1_raw": record["test"]["raw"]["top1"],
                  "retrain_s": record["wall_seconds"]}  # fmt: skip
    winner = {"trial_id": source.trial_id, "search_val_top1": _search_score(run_dir), "retrain_epochs": epochs,
              "retrain_split": mode, **winner}  # fmt: skip
    path.write_text(json.dumps(winner, indent=1))
    return winner


def _search_score(run_dir: Path) -> float:
    with Store.open(run_dir, readonly=True) as store:
        return store.best().final_score


def _retrain_on_search_split(source: Any, cfg: SearchConfig, epochs: int, device: Any) -> dict[str, Any]:
    """The smoke setting's retrain: the search's recipe on the search-train split (a check that it runs)."""
    from menas.data.splits import build_loaders
    from menas.nn.builder import build_model
    from menas.train.loop import evaluate, seed_trial, train

    data = build_loaders(cfg.data, device, mode="search")
    seed_trial(cfg.seed)
    model = build_model(source.genome, data.num_classes, data.in_chans).to(device)
    tic = time.perf_counter()
    history = train(model, data.train, data.val, dataclasses.replace(cfg.train, epochs=epochs, seed=cfg.seed))
    cost = count_cost(source.genome, data.input_size, data.in_chans, data.num_classes)
    return {"genome": source.genome.to_str(), "macs": cost.macs, "params": cost.params, "retrain_recipe": "search",
            "holdout_top1": history.val_top1, "test_top1": evaluate(model, data.test)["top1"],
            "retrain_s": time.perf_counter() - tic}  # fmt: skip


def run_stats(run_dir: Path) -> dict[str, Any]:
    """Trials, compute and the best-so-far curve (images used, best final search-val top-1) of a run."""
    with Store.open(run_dir, readonly=True) as store:
        used = store.compute_used()
        finished = sorted(store.finished(), key=lambda t: t.finished_at or 0.0)
        phases = [{"generation": p.generation, "done": p.done, "params": _mean(p.params), "macs": _mean(p.macs),
                   "train_epoch_s": _mean(p.train_epoch_s), "ticket_params": _mean(p.ticket_params),
                   "replaced": p.replaced_share, "best": p.final_score_best}
                  for p in store.generation_phases()]  # fmt: skip
    curve, images, best = [], 0, None
    for t in finished:
        images += t.budget_images or 0  # as the budget counts: forward-only images 1/3
        if t.status == "done":
            best = t.final_score if best is None else max(best, t.final_score)
        if best is not None:
            curve.append((images, best))
    span = (max(t.finished_at for t in finished) - min(t.started_at for t in finished)) if finished else 0.0
    return {"trials": used.trials, "compute_images": used.images, "trial_s": used.trial_s, "span_s": span,
            "curve": curve, "phases": phases}  # fmt: skip


def _mean(spread: tuple[float, float] | None) -> float | None:
    return None if spread is None else spread[0]


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
    lines += generation_lines(results)
    lines += reach_lines(results)
    path = out / "table3.md"
    path.write_text("\n".join(lines) + "\n")
    return path


#: Arms whose strategy breeds in generations (the Fig. 4a/4b analogue is per generation).
GENERATIONAL = ("menas", "menas-no-tickets", "menas-tolerance", "menas-inherit", "menas-keep-largest")


def generation_lines(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The Fig. 4a/4b analogue of the generational arms: per generation, means over seeds of the candidates' mean
    params, MACs (training cost that machine load does not move) and training epoch seconds, the share replaced by
    tickets and the best final search-val top-1; then each seed's change of params, MACs and epoch time from the
    first to the last generation every seed reached."""
    keys = ("params", "macs", "train_epoch_s", "replaced", "best")
    lines = ["", "Per generation (generational arms; each cell the mean over seeds of the generation's mean):", "",
             "| arm | generation | seeds | candidate params | candidate MACs | training epoch (s) "
             "| replaced by tickets | best top-1 |", "|---" * 8 + "|"]  # fmt: skip
    for arm, rows in results.items():
        if arm not in GENERATIONAL or not rows:
            continue
        common = min(len(r["phases"]) for r in rows)
        for g in range(common):
            cells = [[r["phases"][g].get(key) for r in rows if r["phases"][g].get(key) is not None] for key in keys]
            params, macs, epoch_s, replaced, best = (statistics.fmean(c) if c else None for c in cells)
            cost = f"{_fmt(params, format_count)} | {_fmt(macs, format_count)} | {_fmt(epoch_s, '{:.2f}')}"
            picked = f"{_fmt(replaced, '{:.0%}')} | {_fmt(best, '{:.2f}')}"
            lines.append(f"| {arm} | {g} | {len(rows)} | {cost} | {picked} |")
        if common >= 2:
            changes = [", ".join(_fmt(_change(r["phases"][0], r["phases"][common - 1], key), "{:+.0%}") for r in rows)
                       for key in ("params", "macs", "train_epoch_s")]  # fmt: skip
            lines.append(f"| {arm} | 0 → {common - 1} | change per seed | {' | '.join(changes)} | | |")
    return lines


def images_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The search compute (training-image equivalents) at which a best-so-far curve first reaches `target`; None
    when it never does."""
    return next((images for images, best in curve if best >= target), None)


def reach_lines(results: dict[str, list[dict[str, Any]]], reference: str = "menas") -> list[str]:
    """Issue 12's compute goal: per seed, the compute each arm needs to reach the best search-val top-1 that
    `reference` ended with, as a share of the compute `reference` needed for it (lower: cheaper). Arms without the
    seed in `reference` are left out. An inheriting child's search-val score includes training its parents had,
    so for that arm this is the search's own measure of progress, not the architectures' quality (the retrained
    test top-1 above is)."""
    by_seed = {r["seed"]: r for r in results.get(reference, []) if r["curve"]}
    if not by_seed:
        return []
    lines = ["", f"Compute to reach the {reference} arm's final best search-val top-1, as a share of the compute it "
             "needed (per seed; -: never reached):", "", "| arm | per seed | mean |", "|---|---|---|"]  # fmt: skip
    for arm, rows in results.items():
        if arm == reference:
            continue
        shares = []
        for r in rows:
            ref = by_seed.get(r["seed"])
            if ref is None:
                continue
            target = ref["curve"][-1][1]
            mine, theirs = images_to_reach(r["curve"], target), images_to_reach(ref["curve"], target)
            shares.append(None if mine is None else mine / theirs)
        if shares:
            cells = ", ".join(_fmt(v, "{:.2f}x") for v in shares)
            reached = [v for v in shares if v is not None]
            mean = f"{statistics.fmean(reached):.2f}x ({len(reached)} of {len(shares)} reached)" if reached else "-"
            lines.append(f"| {arm} | {cells} | {mean} |")
    return lines


def _change(first: dict[str, Any], last: dict[str, Any], key: str) -> float | None:
    if first.get(key) is None or last.get(key) is None or first[key] == 0:
        return None
    return last[key] / first[key] - 1.0


def _fmt(value: float | None, how: Any) -> str:
    if value is None:
        return "-"
    return how(value) if callable(how) else how.format(value)


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
    parser.add_argument("--from-seed", type=int, default=0,
                        help="run seeds FROM..SEEDS-1 only (spread the seeds over machines; default 0)")  # fmt: skip
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key over every arm's, e.g. device=cpu, data.root=DIR (repeatable)")  # fmt: skip
    parser.add_argument("--scale", choices=sorted(SCALES), default="default")
    parser.add_argument("--smoke", action="store_true", help="same as --scale smoke, results in results/smoke")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(DEFAULT_ARMS))
    parser.add_argument("--retrain-epochs", type=int, default=None, help="default: 5 (smoke 1, paper 30)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/evidence/results[/smoke]")
    parser.add_argument("--collect-only", action="store_true",
                        help="run nothing: tabulate the finished and retrained runs in --out")  # fmt: skip
    args = parser.parse_args(argv)
    scale = "smoke" if args.smoke else args.scale
    out = args.out or (HERE / "results" / ("smoke" if scale == "smoke" else scale if scale != "default" else ""))
    epochs = args.retrain_epochs or RETRAIN_EPOCHS[scale]
    out.mkdir(parents=True, exist_ok=True)
    command = "python bench/evidence/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    for seed in range(args.from_seed, args.seeds):  # seeds outermost: an interrupted run has arms at equal seeds
        for arm in args.arms:
            cfg = arm_config(arm, seed, scale, tuple(args.overrides))
            run_dir = out / "runs" / f"{arm}-s{seed}"
            if args.collect_only:
                if (run_dir / "winner.json").exists():
                    results[arm].append({**json.loads((run_dir / "winner.json").read_text()), **run_stats(run_dir),
                                         "seed": seed})  # fmt: skip
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: search", flush=True)
            run_search(cfg, run_dir)
            write_report(run_dir)
            print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: retrain the winner {epochs} epochs", flush=True)
            winner = retrain_winner(run_dir, cfg, epochs, RETRAIN_MODE[scale])
            results[arm].append({**winner, **run_stats(run_dir), "seed": seed})
    header = (f"# Evidence benchmark ({scale})\n\n{time.strftime('%Y-%m-%d %H:%M %Z')}, {machine()}.\n"
              f"Command: `{command}`; retrain: {RETRAIN_WHAT[RETRAIN_MODE[scale]].format(epochs=epochs)}, then "
              "the test split once.")  # fmt: skip
    (out / "results.json").write_text(json.dumps({"command": command, "machine": machine(), "scale": scale,
                                                  "retrain_epochs": epochs, "results": results}, indent=1))  # fmt: skip
    table = write_table(results, out, header)
    plot = plot_curves(results, out)
    print(table.read_text())
    print(f"wrote {table}, {plot}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
