"""Issue 22's evidence: at equal search compute, does a latency-bounded search find a more accurate network under a
measured latency budget than a MACs-bounded search whose MACs bound gives the same median latency?

`--table` is a complete per-block latency table of the config's space at its input shape (`menas latency-table`),
with a fitted overhead stored in it (`bench/bench_latency.py --table T --save-fit`); its target (runtime, threads,
batch) is the deployment target. Steps, each resumable (run the same command again after a stop):

1. **Calibrate** (`calibration.json`, kept: a rerun reuses it). The latency budget X is `--latency-ms`, else the
   `--quantile` of the predicted latency of `--samples` genomes sampled under the config's own budget. The latency
   arm searches under {macs_min, macs_max: `--macs-cap`, params_max, latency_ms_max: X}; the MACs arm under
   {macs_min, macs_max: M, params_max}, M found by bisection so that the median predicted latency of genomes sampled
   under it equals that of genomes sampled under the latency arm's budget.
2. **Search**: each arm and seed is the config (default `configs/demo.yaml`) with its budget and `compute.trial_s:
   null`, so both arms run the same trials (population x generations, plus the noise repeats); folder
   `--out/runs/ARM-sSEED`, searched with `python -m menas.cli search` in a subprocess (a finished run is skipped, an
   unfinished one resumed).
3. **Choose**: each run's best network on search-val (`Store.best()`), as its user would take it; test not read.
4. **Measure**: both arms' chosen networks of every seed measured whole at the table's settings (at least 0.2 s of
   timed runs), interleaved over `--rounds` rounds, the median of the rounds' medians (`measured.json`); within
   the budget means measured <= X.
5. **Retrain**: each chosen network with `bench/versus/references.py`'s job code (`--recipe`, `--epochs`, training
   seed = search seed; the training split minus a held-out 2%; the test split read once), in `--out/jobs/`.

Output: `results.json` (calibration, one row per arm and seed: trial, genome, MACs, params, search-val, predicted
and measured latency, within the budget, test top-1; the share of each run's trials predicted within X) and
`summary.md` (the printed table: per seed both arms, the paired latency - macs test top-1 difference with a 95%
t-interval, how many chosen networks meet the measured budget). `--collect-only` rebuilds both. `--save-to DIR`
then copies what is finished and small into DIR (to commit): those files, each finished run's store (a consistent
snapshot) and config.yaml, each retrain's versus.json and job.json, the search logs; no weights.

Usage:
    PYTHONPATH=src python bench/latency_search.py --table runs/latency/table.json --out runs/latency-search \\
        --seeds 0 1 2
    PYTHONPATH=src python bench/latency_search.py --table T --out runs/latency-search --seeds 0 1 2 --collect-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
sys.path.insert(0, str(HERE / "versus"))

import references as refs  # noqa: E402
import yaml  # noqa: E402

from menas.config import SearchConfig  # noqa: E402
from menas.config_io import from_dict  # noqa: E402
from menas.files import write_json  # noqa: E402
from menas.latency.predict import open_predictor  # noqa: E402
from menas.search.engine import make_budget  # noqa: E402
from menas.space.cost import Budget, parse_count  # noqa: E402
from menas.space.genome import Genome  # noqa: E402
from menas.space.operators import sample  # noqa: E402
from menas.space.spaces import load_space  # noqa: E402

ARMS = ("latency", "macs")
CHOSEN_BY = "best search-val top-1 of the run (Store.best); test not read"
BISECTION_STEPS = 30


# --------------------------------------------------------------------------------------------- calibration


def base_budget(config: SearchConfig, shape: tuple[int, int, int], **changes: Any) -> Budget:
    """The config's budget at the data's (input size, channels, classes), with `changes` (another macs_max, a
    latency bound and model)."""
    return dataclasses.replace(make_budget(config, shape), **changes)


def calibrate(config: SearchConfig, predictor: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The latency budget X, the MACs bound M of equal median predicted latency, and what they were found from."""
    space, predict, shape = load_space(config.space), predictor.latency_ms, tuple(args.shape)

    def latencies(seed: int, **changes: Any) -> list[float]:  # predicted latency of genomes sampled in a budget
        rng, budget = random.Random(seed), base_budget(config, shape, **changes)
        return [predict(sample(space, rng, budget)) for _ in range(args.samples)]

    own = latencies(0)
    x = args.latency_ms
    if x is None:
        x = statistics.quantiles(own, n=100)[round(100 * args.quantile) - 1]
    cap = parse_count(args.macs_cap, "--macs-cap")
    target = statistics.median(latencies(1, macs_max=cap, latency_ms_max=x, latency=predict))
    lo, hi = make_budget(config, shape).macs_min * 1.05, cap
    for _ in range(BISECTION_STEPS):  # the median predicted latency under macs_max = m rises with m
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if statistics.median(latencies(2, macs_max=mid)) < target else (lo, mid)
    m = round((lo + hi) / 2)
    macs_arm = latencies(3, macs_max=m)
    return {
        "latency_ms_max": x,
        "macs_max": m,
        "macs_cap": cap,
        "samples": args.samples,
        "quantile": None if args.latency_ms is not None else args.quantile,
        "config_budget_latency_median_ms": statistics.median(own),
        "latency_arm_sample_median_ms": target,
        "macs_arm_sample_median_ms": statistics.median(macs_arm),
        "macs_arm_samples_within_budget": sum(v <= x for v in macs_arm) / len(macs_arm),
    }


def arm_overrides(arm: str, seed: int, cal: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    keys: dict[str, Any] = {"seed": seed, "compute.trial_s": None, "compute.images": None}
    if arm == "latency":
        keys |= {"budget.macs_max": cal["macs_cap"], "budget.latency_ms_max": cal["latency_ms_max"],
                 "budget.latency_table": str(Path(args.table).resolve())}  # fmt: skip
    else:
        keys |= {"budget.macs_max": cal["macs_max"]}
    return keys | dict(a.split("=", 1) for a in args.search_set)


# --------------------------------------------------------------------------------------------- searching


def run_search(arm: str, seed: int, cal: dict[str, Any], args: argparse.Namespace) -> Path:
    out = Path(args.out)
    folder = out / "runs" / f"{arm}-s{seed}"
    if (folder / "menas.sqlite").is_file():
        if read_run(folder)[0] == "finished":
            return folder
        command = ["resume", str(folder)]
    else:
        command = ["search", "--config", str(args.config), "--out", str(folder)]
        for key, value in arm_overrides(arm, seed, cal, args).items():
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True)
            command += ["--set", f"{key}={text.strip().removesuffix('...').strip()}"]
    refs._log(f"{folder.name}: {command[0]}")
    tic = time.perf_counter()
    refs.run_menas_cli(command, out / "logs" / f"{folder.name}.log")
    refs._log(f"{folder.name}: done, {time.perf_counter() - tic:.0f} s")
    return folder


def read_run(folder: Path) -> tuple[str, Any, list[Any]]:
    """(status, best trial, every trial) of a run, read-only."""
    from menas.search.store import Store

    with Store.open(folder, readonly=True) as store:
        return store.run_info().status, store.best(), store.trials()


# --------------------------------------------------------------------------------------------- measuring


def measure_chosen(chosen: dict[str, Genome], table: Any, rounds: int, path: Path) -> dict[str, dict[str, Any]]:
    """Each chosen network's latency at the table's settings, median of `rounds` interleaved rounds; kept in
    `path` (what is there is not measured again)."""
    from menas.latency.front import measure_genome, table_settings

    done: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
    todo = {key: g for key, g in chosen.items() if key not in done}
    if not todo:
        return done
    settings = table_settings(table)
    medians: dict[str, list[float]] = {key: [] for key in todo}
    for _ in range(rounds):
        for key, genome in todo.items():
            medians[key].append(measure_genome(genome, table, settings).median_ms)
    for key, values in medians.items():
        done[key] = {"measured_ms": statistics.median(values), "rounds_ms": values, "settings": settings.to_dict()}
    write_json(path, done)
    return done


# --------------------------------------------------------------------------------------------- summary


def summarize(rows: list[dict[str, Any]], cal: dict[str, Any]) -> str:
    x = cal["latency_ms_max"]
    lines = [
        f"Latency budget {x:.4g} ms (measured), MACs arm bound {cal['macs_max'] / 1e6:.2f}M MACs (equal median "
        f"predicted latency of samples: {cal['latency_arm_sample_median_ms']:.4g} vs "
        f"{cal['macs_arm_sample_median_ms']:.4g} ms; {100 * cal['macs_arm_samples_within_budget']:.0f}% of the MACs "
        f"arm's samples predicted within the budget).",
        "",
        "| seed | arm | trial | MACs | params | search-val | predicted ms | measured ms | within | test top-1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["seed"], r["arm"])):
        lines.append(
            f"| {r['seed']} | {r['arm']} | {r['trial_id']} | {r['macs'] / 1e6:.2f}M | {r['params'] / 1e6:.2f}M | "
            f"{r['search_val_top1']:.2f} | {r['predicted_ms']:.4g} | {_f(r.get('measured_ms'), '.4g')} | "
            f"{'yes' if r.get('within_budget') else 'no' if r.get('measured_ms') else ''} | "
            f"{_f(r.get('test_top1'), '.2f')} |"
        )
    by = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    pairs = [(by[("latency", s)], by[("macs", s)]) for s in seeds if ("latency", s) in by and ("macs", s) in by]
    tested = [(a, b) for a, b in pairs if a.get("test_top1") is not None and b.get("test_top1") is not None]
    lines.append("")
    for arm in ARMS:
        measured = [r for r in rows if r["arm"] == arm and r.get("measured_ms") is not None]
        within = sum(bool(r["within_budget"]) for r in measured)
        shares = [r["trials_predicted_within"] for r in rows if r["arm"] == arm]
        lines.append(f"- {arm} arm: {within} of {len(measured)} chosen networks within the measured budget; "
                     f"{100 * statistics.fmean(shares):.0f}% of its trials predicted within it.")  # fmt: skip
    if tested:
        diffs = [a["test_top1"] - b["test_top1"] for a, b in tested]
        mean, half = refs.t_interval(diffs)
        ci = "" if half is None else f" [{mean - half:+.2f}, {mean + half:+.2f}]"
        lines.append(f"- test top-1, latency arm - MACs arm, paired by seed (n = {len(diffs)}): "
                     f"{', '.join(f'{d:+.2f}' for d in diffs)}; mean {mean:+.2f}{ci} (95% t).")  # fmt: skip
        both = sum(bool(a.get("within_budget") and b.get("within_budget")) for a, b in tested)
        lines.append(f"- pairs where both meet the measured budget: {both} of {len(tested)}.")
    return "\n".join(lines) + "\n"


def _f(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", required=True, help="a complete latency table with a fitted overhead (--save-fit)")
    p.add_argument("--out", required=True, help="results folder (resumes what is there)")
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="the search config of both arms")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--shape", type=int, nargs=3, default=[32, 1, 10], metavar=("SIZE", "CHANS", "CLASSES"),
                   help="the data's input size, channels and classes (default Fashion-MNIST's: 32 1 10)")  # fmt: skip
    p.add_argument("--latency-ms", type=float, default=None, help="the latency budget (default: --quantile)")
    p.add_argument("--quantile", type=float, default=0.4,
                   help="the budget: this quantile of the predicted latency in the config's budget")  # fmt: skip
    p.add_argument("--macs-cap", default="10M", help="the latency arm's MACs bound, not meant to bind (default 10M)")
    p.add_argument("--samples", type=int, default=400, help="genomes sampled per calibration estimate")
    p.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds of the chosen networks")
    p.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE", help="override for both arms")
    p.add_argument("--epochs", type=int, default=3, help="retrain epochs (default 3)")
    p.add_argument("--recipe", default="short", choices=("short", "paper"))
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--root", default=None)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="retrain recipe override")
    p.add_argument("--threads", type=int, default=1, help="torch threads per retrain (default 1)")
    p.add_argument("--workers", type=int, default=2, help="retrains side by side (default 2)")
    p.add_argument("--collect-only", action="store_true")
    p.add_argument("--save-to", default=None, metavar="DIR", help="copy the finished, small files here (to commit)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = from_dict(SearchConfig, yaml.safe_load(Path(args.config).read_text()), "config")
    predictor = open_predictor(args.table, load_space(config.space), *args.shape)
    cal_path = out / "calibration.json"
    if cal_path.is_file():
        cal = json.loads(cal_path.read_text())
    else:
        cal = calibrate(config, predictor, args)
        write_json(cal_path, cal)
    refs._log(f"calibration: {cal}")
    folders = {(arm, s): out / "runs" / f"{arm}-s{s}" for s in args.seeds for arm in ARMS}
    if not args.collect_only:
        for arm, seed in folders:
            folders[(arm, seed)] = run_search(arm, seed, cal, args)
    rows, chosen, jobs = [], {}, []
    for (arm, seed), folder in folders.items():
        if not (folder / "menas.sqlite").is_file():
            continue
        status, best, trials = read_run(folder)
        if status != "finished" or best is None:
            continue
        genome = Genome.from_str(best.final_genome)
        done = [t for t in trials if t.status == "done" and t.final_genome]
        within = sum(predictor.latency_ms(Genome.from_str(t.final_genome)) <= cal["latency_ms_max"] for t in done)
        key = f"{arm}-s{seed}"
        chosen[key] = genome
        job = refs.Job(arm, f"s{seed}-t{best.trial_id}", seed, args.epochs, "menas-genome", genome.to_str(), None,
                       CHOSEN_BY)  # fmt: skip
        jobs.append(job)
        rows.append({"arm": arm, "seed": seed, "trial_id": best.trial_id, "genome": genome.to_str(),
                     "macs": best.final_macs, "params": best.final_params, "search_val_top1": best.final_score,
                     "predicted_ms": predictor.latency_ms(genome), "trials_done": len(done),
                     "trials_predicted_within": within / max(1, len(done)), "job": job.folder})  # fmt: skip
    measured = measure_chosen(chosen, predictor.table, args.rounds, out / "measured.json") if chosen else {}
    for row in rows:
        m = measured.get(f"{row['arm']}-s{row['seed']}")
        if m:
            row["measured_ms"] = m["measured_ms"]
            row["within_budget"] = m["measured_ms"] <= cal["latency_ms_max"]
    if not args.collect_only and jobs:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(refs._run_one, jobs, [args] * len(jobs)))
    for row in rows:
        result = out / "jobs" / row["job"] / refs.RESULT_FILE
        if result.is_file():
            row["test_top1"] = json.loads(result.read_text())["test_top1"]
    command = "python bench/latency_search.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = summarize(rows, cal)
    write_json(out / "results.json", {"calibration": cal, "networks": rows, "chosen_by": CHOSEN_BY,
                                      "meta": {"command": command, "machine": refs.machine()}})  # fmt: skip
    (out / "summary.md").write_text(text)
    print(text, end="")
    if args.save_to:
        save_to(out, Path(args.save_to))
    return 0


def save_to(out: Path, dst: Path) -> None:
    """Copies the finished, small files of `out` to `dst`: what `carry.save` keeps of a benchmark folder (each
    finished run's store snapshot and config, each finished retrain's record, results.json), plus this benchmark's
    summary, calibration, measurements and logs."""
    import carry

    carry.save(out, dst)
    extras = [out / name for name in ("summary.md", "calibration.json", "measured.json")]
    for source in [p for p in extras if p.is_file()] + sorted((out / "logs").glob("*.log")):
        carry.copy_if_changed(source, dst / source.relative_to(out))
    refs._log(f"saved the finished files of {out} in {dst}")


if __name__ == "__main__":
    raise SystemExit(main())
