"""Which lottery policy should `menas` use by default? The demo search (configs/demo.yaml) per policy and seed.

Each variant is the demo config with a few `--set` overrides (below); each (variant, seed) is one run folder
`--out`/VARIANT-sSEED, searched with `python -m menas.cli search` (a finished folder is skipped, an unfinished one
continued with `menas resume`, so the script can be stopped and started again). Then, from each store, per
generation: mean final (ticket, else candidate) MACs and params, mean candidate training epoch seconds, the share of
candidates a ticket replaced, the best and median final search-val top-1; and per run the last generation's best
against generation 0's best, the trial seconds used and the wall time.

`--avx2` runs the searches as a 2-core AVX2-only CPU would (`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`:
torch's AVX2 kernels on an AVX-512 machine), the CPU the demo is sized for.

After the tables, per run and breeding role: how well children inherit their parents' scores (`heritability`);
then per run why its networks grow or shrink over generations (`size_drift`: tickets, selection, breeding). Any
folder of run folders works with `--collect-only`, e.g. the evidence benchmark's `runs/evidence/runs`.

`--noise RUN` measures the proxy's noise instead: generation 0's best and median genomes of the run folder RUN,
trained again as trials of that run (same data split, training, lottery and fine-tuning) with the trial seeds
`--seeds`, so the spread of one genome's final score can be set beside the differences the search selects on.

Usage:
    python bench/bench_policy.py --out /tmp/L --seeds 0 1 2 --variants tolerance always --avx2
    python bench/bench_policy.py --out /tmp/L --collect-only       # the tables of every run folder in --out
    python bench/bench_policy.py --out /tmp/L --noise /tmp/L/tolerance-s0 --seeds 100 101 102
    python bench/bench_policy.py --out /tmp/L --pair /tmp/L/tolerance-s0 /tmp/L/always-s0   # same candidates
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from menas.search.store import Store, TrialRecord  # noqa: E402

DEMO = ROOT / "configs" / "demo.yaml"
#: Each variant: `--set` overrides on top of configs/demo.yaml.
VARIANTS: dict[str, tuple[str, ...]] = {
    "tolerance": ("lottery.policy=tolerance",),
    "always": ("lottery.policy=always", "lottery.macs_keep=[0.5, 0.9]"),
    "always-hi": ("lottery.policy=always", "lottery.macs_keep=[0.7, 0.95]"),
}
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
#: Wall seconds spent searching a folder, summed over this script's calls (a resumed run adds up).
WALL_FILE = "bench_wall.json"


def run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / f"{variant}-s{seed}"


def run_status(folder: Path) -> str | None:
    """The stored run status ("finished", "interrupted", ...), None when the folder holds no search yet."""
    if not (folder / "menas.sqlite").exists():
        return None
    with Store.open(folder, readonly=True) as store:
        return store.run_info().status


def search(folder: Path, variant: str, seed: int, avx2: bool, extra: tuple[str, ...]) -> None:
    """Runs the demo search for (variant, seed) into `folder`, resumes it when unfinished, skips it when finished;
    adds the wall seconds to `folder/bench_wall.json`."""
    status = run_status(folder)
    if status == "finished":
        return
    cli = [sys.executable, "-m", "menas.cli"]
    if status is None:
        sets = [arg for s in (*VARIANTS[variant], *extra, f"seed={seed}") for arg in ("--set", s)]
        cmd = [*cli, "search", "--config", str(DEMO), "--out", str(folder), *sets]
    else:
        cmd = [*cli, "resume", str(folder)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(AVX2_ENV if avx2 else {})}
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd[1:])}", flush=True)
    tic = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - tic
    path = folder / WALL_FILE
    before = json.loads(path.read_text())["wall_s"] if path.exists() else 0.0
    path.write_text(json.dumps({"wall_s": before + wall, "avx2": avx2}))


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def generation_rows(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """Per generation, over done trials: the measurements the policy comparison needs."""
    rows = []
    for gen in sorted({r.generation for r in records}):
        done = [r for r in records if r.generation == gen and r.status == "done"]
        finals = [r.final_score for r in done]
        rows.append({
            "generation": gen, "done": len(done),
            "macs": _mean([r.final_macs for r in done]), "params": _mean([r.final_params for r in done]),
            "epoch_s": _mean([statistics.fmean(r.train_epoch_s) for r in done if r.train_epoch_s]),
            "replaced": sum(r.replaced for r in done) / len(done) if done else None,
            "best": max(finals, default=None), "median": statistics.median(finals) if finals else None,
        })  # fmt: skip
    return rows


def collect(folder: Path) -> dict[str, Any]:
    """The run's per-generation rows and summary, read from its store."""
    with Store.open(folder, readonly=True) as store:
        records = store.trials()
        used = store.compute_used()
        status = store.run_info().status
        best = store.best()
    rows = generation_rows(records)
    wall = json.loads((folder / WALL_FILE).read_text())["wall_s"] if (folder / WALL_FILE).exists() else None
    timed = [r for r in records if r.started_at and r.finished_at]
    if wall is None and timed:  # searched outside this script: the first trial's start to the last one's end
        wall = max(r.finished_at for r in timed) - min(r.started_at for r in timed)
    first, last = rows[0]["best"], rows[-1]["best"]
    gain = None if first is None or last is None else last - first
    return {"run": folder.name, "status": status, "rows": rows, "gain": gain, "trial_s": used.trial_s,
            "trials": used.trials, "wall_s": wall, "best": best.final_score if best else None}  # fmt: skip


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _millions(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.2f}M"


def print_tables(results: list[dict[str, Any]]) -> None:
    """One markdown table per run (per generation), then one summary row per run."""
    for res in results:
        print(f"\n{res['run']} ({res['status']}, {res['trials']} trials, trial s {res['trial_s']:.0f}, "
              f"wall {_fmt(res['wall_s'], '.0f')} s)")  # fmt: skip
        print("| gen | done | mean MACs | mean params | mean epoch (s) | replaced | best | median |")
        print("|---|---|---|---|---|---|---|---|")
        for row in res["rows"]:
            cells = [str(row["generation"]), str(row["done"]), _millions(row["macs"]), _millions(row["params"])]
            cells += [_fmt(row[key], ".2f") for key in ("epoch_s", "replaced", "best", "median")]
            print("| " + " | ".join(cells) + " |")
    print("\n| run | gen 0 best | last gen best | last - gen 0 | best | trials | trial s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for res in results:
        rows = res["rows"]
        print(f"| {res['run']} | {_fmt(rows[0]['best'], '.2f')} | {_fmt(rows[-1]['best'], '.2f')} "
              f"| {_fmt(res['gain'], '+.2f')} | {_fmt(res['best'], '.2f')} | {res['trials']} | {res['trial_s']:.0f} "
              f"| {_fmt(res['wall_s'], '.0f')} |")  # fmt: skip


def heritability(records: list[TrialRecord]) -> dict[str, tuple[int, float, float, float]]:
    """Per breeding role: (children, mean parent final score, mean child final score, Spearman between the two),
    over bred children whose parents are done trials of the run (a parent is matched by its final genome: the
    ticket when one replaced it). A search can only climb when children inherit their parents' scores."""
    from menas.prune.diagnose import correlations

    final = {r.final_genome: r.final_score for r in records if r.status == "done"}
    out = {}
    for role in ("mutation", "crossover"):
        bred = [r for r in records if r.role == role and r.status == "done" and r.parents]
        pairs = [(statistics.fmean(final[p] for p in r.parents), r.final_score) for r in bred
                 if all(p in final for p in r.parents)]  # fmt: skip
        if len(pairs) >= 3:
            parents, children = [a for a, _ in pairs], [b for _, b in pairs]
            rho = correlations(parents, children).spearman
            out[role] = (len(pairs), statistics.fmean(parents), statistics.fmean(children), rho)
    return out


def print_heritability(folders: list[Path]) -> None:
    print("\n| run | role | children | mean parent final | mean child final | Spearman parent vs child |")
    print("|---|---|---|---|---|---|")
    for folder in folders:
        with Store.open(folder, readonly=True) as store:
            records = store.trials()
        for role, (n, parent, child, rho) in heritability(records).items():
            print(f"| {folder.name} | {role} | {n} | {parent:.2f} | {child:.2f} | {rho:.2f} |")


def size_drift(records: list[TrialRecord]) -> dict[str, float] | None:
    """Why the candidates' MACs fall or not from one generation to the next, as the three factors whose product is
    that change: `tickets` (a trial's final MACs / its candidate's), `selection` (the final MACs of the parents a
    child was bred from / the mean final MACs of every done trial of the earlier generations, the pool they were
    chosen from) and `breeding` (a child's candidate MACs / its parents' mean final MACs); each a mean ratio. Plus
    `size_rank`: Spearman between final MACs and final score over the done trials (selection by score picks larger
    networks when it is positive). None without bred children whose parents are done trials."""
    from menas.prune.diagnose import correlations

    done = [r for r in records if r.status == "done"]
    final_macs = {r.final_genome: r.final_macs for r in done}
    children = [r for r in done if r.parents and all(p in final_macs for p in r.parents)]
    pool_mean = {g: statistics.fmean(r.final_macs for r in done if r.generation < g)
                 for g in {c.generation for c in children}}  # fmt: skip
    selection, breeding = [], []
    for child in children:
        parents = statistics.fmean(final_macs[p] for p in child.parents)
        selection.append(parents / pool_mean[child.generation])
        breeding.append(child.macs / parents)
    if not breeding:
        return None
    rho = correlations([r.final_macs for r in done], [r.final_score for r in done]).spearman
    return {"tickets": statistics.fmean(r.final_macs / r.macs for r in done), "selection": statistics.fmean(selection),
            "breeding": statistics.fmean(breeding), "size_rank": rho, "children": len(breeding)}  # fmt: skip


def print_size_drift(folders: list[Path]) -> None:
    print("\n| run | final / candidate MACs (tickets) | parents / pool MACs (selection) | child / parents MACs "
          "(breeding) | children | Spearman final MACs vs score |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for folder in folders:
        with Store.open(folder, readonly=True) as store:
            drift = size_drift(store.trials())
        if drift is not None:
            print(f"| {folder.name} | {drift['tickets']:.2f} | {drift['selection']:.2f} | {drift['breeding']:.2f} "
                  f"| {drift['children']} | {drift['size_rank']:.2f} |")  # fmt: skip


def paired_candidates(first: Path, second: Path) -> list[tuple[int, float, float]]:
    """(trial id, score in `first`, score in `second`) of the candidates both runs trained with the same genome and
    trial id (so the same trial seed and data): generation 0 of two runs with one seed. The candidate's score after
    its training epochs comes before any lottery policy acts, so what differs is only how the runs computed (threads,
    kernels): a measure of how far the proxy moves on rounding alone."""
    runs = []
    for folder in (first, second):
        with Store.open(folder, readonly=True) as store:
            runs.append({(r.trial_id, r.genome): r.trained_score for r in store.trials("done")})
    return [(key[0], runs[0][key], runs[1][key]) for key in sorted(runs[0].keys() & runs[1].keys())]


def print_pairs(first: Path, second: Path) -> None:
    diffs = [b - a for _, a, b in paired_candidates(first, second)]
    print(f"{first.name} vs {second.name}: {len(diffs)} candidates in both; score differences {_listed(diffs)}")
    if len(diffs) > 1:
        print(f"mean |difference| {statistics.fmean(abs(d) for d in diffs):.2f}, stdev {statistics.stdev(diffs):.2f}")


def _listed(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def noise(folder: Path, seeds: list[int], out: Path) -> None:
    """Trains generation 0's best and median genomes of the run in `folder` again with each trial seed in `seeds`
    (as the search runs a trial: `menas.search.trial.run_trial`) and prints each final score beside the recorded one."""
    import dataclasses

    from menas.config import SearchConfig, from_dict
    from menas.search.trial import TrialJob, run_trial

    with Store.open(folder, readonly=True) as store:
        cfg = from_dict(SearchConfig, store.config(), "run config")
        gen0 = sorted(store.trials("done", generation=0), key=lambda r: -r.final_score)
    picks = {"best": gen0[0], "median": gen0[len(gen0) // 2]}
    print(f"\n{folder.name}: generation 0's best and median genome, trained again with trial seeds {seeds}")
    print("| genome | recorded final | final per seed | mean | stdev | candidate (2 ep) per seed |")
    print("|---|---|---|---|---|---|")
    for name, record in picks.items():
        finals, candidates = [], []
        for seed in seeds:
            job = TrialJob(trial_id=record.trial_id, genome=record.genome, data=cfg.data,
                           train=dataclasses.replace(cfg.train, seed=seed), lottery=cfg.lottery,
                           finetune_epochs=cfg.finetune_epochs, workdir=str(out / f"{folder.name}-{name}-{seed}"),
                           seed=seed, device=cfg.device)  # fmt: skip
            result = run_trial(job)
            finals.append(result.final_score)
            candidates.append(result.trained_score)
        cells = [f"{name} (trial {record.trial_id})", f"{record.final_score:.2f}", _listed(finals),
                 f"{statistics.fmean(finals):.2f}", f"{statistics.stdev(finals):.2f}", _listed(candidates)]  # fmt: skip
        print("| " + " | ".join(cells) + " |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the run folders (VARIANT-sSEED)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra override for every new run (name the variant apart with --tag)")  # fmt: skip
    parser.add_argument("--tag", default="", help="suffix of the run folders' variant name, e.g. -ft2")
    parser.add_argument("--avx2", action="store_true", help="torch's AVX2 kernels (a 2-core AVX2-only CPU)")
    parser.add_argument("--collect-only", action="store_true", help="only print the tables of the run folders")
    parser.add_argument("--pair", type=Path, nargs=2, default=None, metavar=("RUN", "RUN"),
                        help="the same candidates' scores in two runs (`paired_candidates`)")  # fmt: skip
    parser.add_argument("--noise", type=Path, default=None, metavar="RUN", help="measure the proxy's noise (above)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.pair is not None:
        print_pairs(*args.pair)
        return 0
    if args.noise is not None:
        noise(args.noise, args.seeds, args.out)
        return 0
    if not args.collect_only:
        for seed in args.seeds:
            for variant in args.variants:
                search(run_dir(args.out, variant + args.tag, seed), variant, seed, args.avx2, tuple(args.set))
    folders = sorted(p for p in args.out.iterdir() if (p / "menas.sqlite").exists())
    print_tables([collect(folder) for folder in folders])
    print_heritability(folders)
    print_size_drift(folders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
