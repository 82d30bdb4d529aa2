"""Does multi-fidelity selection make the demo's search climb? The demo search (configs/demo.yaml) with and without
`fidelity` rungs, per seed (issue 20 item 3).

Variants (`--set` overrides on top of configs/demo.yaml; every run also gets `--set` from the command line):

* `demo`: the demo as it is (2 training epochs + 1 fine-tune epoch per child, 8 children x 3 generations);
* `rungs`: every child trains 1 epoch (+ its lottery and 1 fine-tune epoch), the best 3 of 8 continue 2 more
  epochs from their weights (rung 1 = 3 training epochs), and one child per generation is repeated with another
  seed (the run's noise estimate): about the demo's compute (BENCHMARKS.md says what each used);
* `rungs-e2`: as `rungs` with children trained 2 epochs and continued to 5;
* `rungs-top`: as `rungs` with `fidelity.tickets: top`: children train 1 epoch only (no lottery, no fine-tuning);
  the best 3 of 8 continue their candidates 2 more epochs, then search their tickets and fine-tune them 1 epoch;
* `rungs-top-e2`: as `rungs-top` with children trained 2 epochs and continued to 4 (about `rungs`' compute);
* `rungs-rescore`: as `rungs` with `fidelity.rescore: 1` instead of the repeat: after each generation the best
  network of the parent pool scored once is trained again (1 epoch, ticket, fine-tune, 2 more epochs) with another
  seed, and selection reads the mean of its two trainings; the pairs give the noise estimate;
* `rungs-tse`: as `rungs` with `fidelity.score: tse`: promotions, parents and the run's best ranked by the
  training-speed estimate (minus the mean training loss of a trial's own epochs) instead of search-val.

Each (variant, seed) is one run folder `--out`/VARIANT-sSEED, searched by `bench_policy.search` (a finished folder is
skipped, an unfinished one resumed). Per run and generation it prints the best search-val top-1 at the run's top
rung and at rung 0, the median at rung 0 and the trials; per run the top-rung best of the last generation minus
generation 0's (the demo goal: > 0 in at least 4 of 5 seeds), the run's noise estimate (repeats), the compute used
(training-image equivalents) and the trial seconds. `results.json` in `--out` holds every figure printed.

Usage:
    python bench/bench_fidelity.py --out runs/fidelity --seeds 0 1 2 3 4 --variants demo rungs \
        --set compute.trial_s=null --set train.threads=1
    python bench/bench_fidelity.py --out runs/fidelity --collect-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))  # run from a checkout without installing

sys.path.insert(0, str(HERE / "versus"))
from references import t_interval  # noqa: E402

import bench_policy  # noqa: E402
from menas.search import fidelity  # noqa: E402
from menas.search.store import Store, TrialRecord  # noqa: E402

VARIANTS: dict[str, tuple[str, ...]] = {
    "demo": (),
    "rungs": ("fidelity.rungs=[1, 3]", "fidelity.eta=3", "fidelity.repeats=1"),
    "rungs-e2": ("fidelity.rungs=[2, 5]", "fidelity.eta=3", "fidelity.repeats=1"),
    "rungs-top": ("fidelity.rungs=[1, 3]", "fidelity.eta=3", "fidelity.repeats=1", "fidelity.tickets=top"),
    "rungs-top-e2": ("fidelity.rungs=[2, 4]", "fidelity.eta=3", "fidelity.repeats=1", "fidelity.tickets=top"),
    "rungs-rescore": ("fidelity.rungs=[1, 3]", "fidelity.eta=3", "fidelity.repeats=0", "fidelity.rescore=1"),
    "rungs-tse": ("fidelity.rungs=[1, 3]", "fidelity.eta=3", "fidelity.repeats=1", "fidelity.score=tse"),
}


def generation_rows(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """Per generation: the best final score at the run's top rung and at rung 0, rung 0's median, trial count."""
    top = max((r.rung for r in records if r.status == "done"), default=0)
    rows = []
    for gen in sorted({r.generation for r in records}):
        done = [r for r in records if r.generation == gen and r.ok and r.role not in fidelity.PROBES]
        at_top = [r.final_score for r in done if r.rung == top]
        at_zero = [r.final_score for r in done if r.rung == 0]
        rows.append({"generation": gen, "trials": sum(r.generation == gen for r in records),
                     "best_top_rung": max(at_top, default=None), "best_rung0": max(at_zero, default=None),
                     "median_rung0": statistics.median(at_zero) if at_zero else None})  # fmt: skip
    return rows


def collect(folder: Path) -> dict[str, Any]:
    """A run's rows and summary from its store."""
    with Store.open(folder, readonly=True) as store:
        records, used, noise, best = store.trials(), store.compute_used(), store.noise(), store.best()
        finished = store.run_info().status == "finished"
        lineages = store.lineages()
    rows = generation_rows(records)
    first, last = rows[0]["best_top_rung"], rows[-1]["best_top_rung"]
    return {
        "run": folder.name,
        "finished": finished,
        "rows": rows,
        "climb": None if first is None or last is None else last - first,
        "noise_sigma": None if noise is None else noise.sigma,
        "noise_pairs": 0 if noise is None else noise.pairs,
        "compute_images": used.images,
        "rescored": rescored_pairs(lineages),
        "trial_s": used.trial_s,
        "trials": used.trials,
        "best": None
        if best is None
        else {
            "trial": best.trial_id,
            "rung": best.rung,
            "score": best.final_score,
            "macs": best.final_macs,
            "genome": best.final_genome,
        },
    }


def rescored_pairs(lineages: list[Any]) -> list[list[float]]:
    """[first score, second score] of every re-scored lineage (`fidelity.rescore`), in trial_id order: how far a
    score chosen for being high falls when the network is trained again."""
    return [list(t.scores[:2]) for t in lineages if isinstance(t, fidelity.Rescored)]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_tables(results: list[dict[str, Any]]) -> None:
    print("| run | best at top rung per generation | best at rung 0 | median at rung 0 | last - first (top rung) "
          "| noise σ (pairs) | compute (images) | trial s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for res in results:
        rows = res["rows"]
        cells = [" / ".join(_fmt(r[key]) for r in rows) for key in ("best_top_rung", "best_rung0", "median_rung0")]
        noise = "-" if res["noise_sigma"] is None else f"{res['noise_sigma']:.2f} ({res['noise_pairs']})"
        name = res["run"] if res.get("finished", True) else f"{res['run']} (unfinished)"
        print(f"| {name} | {' | '.join(cells)} | {_fmt(res['climb'])} | {noise} | "
              f"{res['compute_images'] / 1e6:.3f}M | {res['trial_s']:.0f} |")  # fmt: skip
    results = [res for res in results if res.get("finished", True)]  # an unfinished run is shown, not counted
    by_variant: dict[str, list[float]] = {}
    for res in results:
        if res["climb"] is not None:
            by_variant.setdefault(res["run"].rsplit("-s", 1)[0], []).append(res["climb"])
    for variant, climbs in by_variant.items():
        print(f"{variant}: top-rung best rose in {sum(c > 0 for c in climbs)} of {len(climbs)} runs "
              f"(last - first: {', '.join(f'{c:+.2f}' for c in climbs)})")  # fmt: skip
    shifts: dict[str, list[float]] = {}
    for res in results:
        for first, second in res.get("rescored", []):
            shifts.setdefault(res["run"].rsplit("-s", 1)[0], []).append(second - first)
    for variant, diffs in shifts.items():
        mean, half = t_interval(diffs)
        ci = "" if half is None else f" [{mean - half:+.2f}, {mean + half:+.2f}]"
        print(f"{variant}: re-scored elites, second training minus first: mean {mean:+.2f}{ci} over {len(diffs)} "
              f"lineages, {sum(d < 0 for d in diffs)} fell")  # fmt: skip
    variants = sorted({res["run"].rsplit("-s", 1)[0] for res in results})
    for a, b in ((a, b) for i, a in enumerate(variants) for b in variants[i + 1 :]):
        for row in paired(results, a, b):
            print(row)


def paired(results: list[dict[str, Any]], a: str, b: str) -> list[str]:
    """Lines comparing variant `b` with `a` on the seeds both ran: per seed and as a mean with its 95% t-interval,
    the climb, the best top-rung score of the last generation and the compute used."""
    runs = {res["run"]: res for res in results}
    seeds = sorted(int(name.rsplit("-s", 1)[1]) for name in runs if name.rsplit("-s", 1)[0] == a
                   and f"{b}-s{name.rsplit('-s', 1)[1]}" in runs)  # fmt: skip
    if not seeds:
        return []
    pairs = [(runs[f"{a}-s{s}"], runs[f"{b}-s{s}"]) for s in seeds]
    measures = {
        "climb": lambda r: r["climb"],
        "last generation's top-rung best": lambda r: r["rows"][-1]["best_top_rung"],
        "compute (M images)": lambda r: r["compute_images"] / 1e6,
    }
    lines = []
    for name, measure in measures.items():
        diffs = [measure(y) - measure(x) for x, y in pairs if measure(x) is not None and measure(y) is not None]
        if not diffs:
            continue
        mean, half = t_interval(diffs)
        ci = "" if half is None else f", 95% CI [{mean - half:+.2f}, {mean + half:+.2f}]"
        lines.append(f"{b} - {a}, {name}, seeds {seeds}: {', '.join(f'{d:+.2f}' for d in diffs)}; "
                     f"mean {mean:+.2f}{ci}")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["demo", "rungs"], choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every run")
    parser.add_argument("--collect-only", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        bench_policy.VARIANTS.update(VARIANTS)
        for seed in args.seeds:  # seed-major: a cut run has every variant on the same first seeds
            for variant in args.variants:
                folder = bench_policy.run_dir(args.out, variant, seed)
                bench_policy.search(folder, variant, seed, False, tuple(args.set))
    folders = sorted(p for p in args.out.iterdir() if (p / "menas.sqlite").exists())
    results = [collect(folder) for folder in folders]
    print_tables(results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
