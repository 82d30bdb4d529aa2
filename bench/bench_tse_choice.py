"""Does choosing a search's result by the training-speed estimate give a better network than choosing it by
search-val? (issue 20 item 2: `fidelity.score: tse`.)

For each finished search (a `bench_fidelity.py` run's `RUN.trials.csv`, given as globs), among the networks at the
top rung (each lineage at its highest rung; noise repeats and re-score replicas left out) it takes the best by
search-val top-1 (what `fidelity.score: val` returns) and the best by TSE (minus the mean training loss of the
trial's own training epochs: what `fidelity.score: tse` returns), both tie-broken by fewer MACs. Where the two
differ, it retrains both final genomes from scratch with `menas retrain` (the short recipe, `--epochs`, one seed,
a held-out part of the training split) and compares them paired by search: the held-out top-1 decides, the test
top-1 is printed beside it and decides nothing. The same choice over the same candidates, so only the rule
differs (not the search path: selection inside the searches was by search-val).

`--across BASE=OTHER` compares whole searches instead: for each seed, search BASE-sN's result chosen by search-val
(how it was searched) against search OTHER-sN's result chosen by TSE (searched with `fidelity.score: tse`, so its
promotions and parents were ranked by TSE too), both retrained the same way, paired by seed. The searches are
matched by variant and seed among the given csv files (FOLDER may differ).

Each retrain is a folder `--out`/FOLDER/RUN-CHOICE, FOLDER the csv's folder name (resumed when unfinished, skipped
when `retrain.json` exists: a network already retrained for one comparison is reused by the other). `--collect-only`
prints the table from what is there; `results.json` in `--out` holds every figure printed.

Usage:
    python bench/bench_tse_choice.py 'bench/results/fidelity/2026-12-05-rescore/rungs-s*.trials.csv' \
        --out runs/tse-choice --epochs 5 --threads 1 --workers 2
    python bench/bench_tse_choice.py 'bench/results/fidelity/2026-12-05-rescore/rungs-s*.trials.csv' \
        'bench/results/fidelity/2026-12-06-tse/rungs-tse-s*.trials.csv' --across rungs=rungs-tse \
        --out runs/tse-choice --epochs 5 --threads 1 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "versus"))
from references import t_interval  # noqa: E402

PROBES = ("repeat", "rescore")
RESULT = "retrain.json"


def top_rung(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The done networks at the run's top rung (one per lineage: a promoted trial stands for the one it continued;
    probes stand for nothing), each with its rung, final score, MACs and TSE parsed."""
    done = [r for r in rows if r["status"] == "done" and r["role"] not in PROBES]
    continued = {json.loads(r["parent_ids"])[0] for r in done if r["role"] == "promote"}
    nets = []
    for r in done:
        if int(r["trial_id"]) in continued:
            continue
        losses = json.loads(r["train_losses"] or "[]")
        nets.append({
            "trial_id": int(r["trial_id"]), "rung": json.loads(r["recipe"] or "{}").get("rung", 0),
            "val": float(r["final_score"]), "macs": int(r["final_macs"]), "genome": r["final_genome"],
            "tse": -sum(losses) / len(losses) if losses else None,
        })  # fmt: skip
    top = max(n["rung"] for n in nets)
    return [n for n in nets if n["rung"] == top]


def choices(nets: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """The best network by search-val and by TSE (ties: fewer MACs, then the earlier trial); by TSE None when no
    network recorded training losses."""
    with_tse = [n for n in nets if n["tse"] is not None]
    return {
        "val": min(nets, key=lambda n: (-n["val"], n["macs"], n["trial_id"])),
        "tse": min(with_tse, key=lambda n: (-n["tse"], n["macs"], n["trial_id"])) if with_tse else None,
    }


def variant_and_seed(run: str) -> tuple[str, int]:
    """("rungs-tse", 5) for "FOLDER/rungs-tse-s5"."""
    variant, _, seed = run.split("/")[-1].rpartition("-s")
    if not variant or not seed.isdigit():
        raise SystemExit(f"runs: {run!r} is not named VARIANT-sSEED (bench_fidelity.py's run names)")
    return variant, int(seed)


def pairs_within(picked: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each search's two choices (searches without training losses left out, named)."""
    pairs, skipped = [], []
    for run, by in picked.items():
        if by["tse"] is None:  # recorded before training losses were
            skipped.append(run)
            continue
        same = by["val"]["trial_id"] == by["tse"]["trial_id"]
        pairs.append({"run": run, "val": (run, by["val"]), "tse": (run, by["tse"]), "same": same})
    return pairs, skipped


def pairs_across(picked: dict[str, dict[str, Any]], across: str) -> tuple[list[dict[str, Any]], list[str]]:
    """For every seed searched by both variants of `across` ("BASE=OTHER"): BASE's result by search-val against
    OTHER's by TSE (seeds only one variant has, named as left out)."""
    base, _, other = across.partition("=")
    if not base or not other or base == other:
        raise SystemExit(f"--across: got {across!r}, allowed: BASE=OTHER, two different variant names")
    found: dict[tuple[str, int], str] = {}
    for run in picked:
        key = variant_and_seed(run)
        if key in found:
            raise SystemExit(f"runs: {key[0]} seed {key[1]} is given twice ({found[key]}, {run})")
        found[key] = run
    seeds = sorted({seed for variant, seed in found if variant in (base, other)})
    pairs, skipped = [], []
    for seed in seeds:
        a, b = found.get((base, seed)), found.get((other, seed))
        if a is None or b is None or picked[b]["tse"] is None:
            skipped.append(b or a)
            continue
        v, t = picked[a]["val"], picked[b]["tse"]
        pairs.append({"run": f"s{seed}: {a} / {b}", "val": (a, v), "tse": (b, t), "same": v["genome"] == t["genome"]})
    return pairs, skipped


def retrain(genome: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`menas retrain` of `genome` into `out` (resumed when unfinished); its retrain.json."""
    if not (out / RESULT).is_file():
        cmd = [sys.executable, "-m", "menas.cli", "retrain", genome, "--data", args.data, "--epochs",
               str(args.epochs), "--out", str(out), "--threads", str(args.threads), "--device", "cpu",
               "--set", f"holdout_fraction={args.holdout}", "--set", f"train.seed={args.seed}",
               "--set", f"data.seed={args.seed}"]  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.log", "a") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads((out / RESULT).read_text())


def kept(record: dict[str, Any], split: str) -> float:
    return record[split][record["kept"]]["top1"]


def paired(summary: dict[str, dict[str, Any]], name: str, values: list[float]) -> str:
    """Store `values`' mean and 95% t-interval as `summary[name]`; "+0.50 [-12.21, +13.21]" (no interval for one)."""
    mean, half = t_interval(values)
    summary[name] = {"n": len(values), "mean": mean, "half_width": half, "diffs": values}
    return f"{mean:+.2f}" + ("" if half is None else f" [{mean - half:+.2f}, {mean + half:+.2f}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="globs of RUN.trials.csv files (bench_fidelity.py's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument(
        "--across",
        metavar="BASE=OTHER",
        help="pair BASE's search-val choice with OTHER's TSE "
        "choice, seed by seed (whole searches by each score); default: both choices in each search",
    )
    parser.add_argument("--collect-only", action="store_true")
    args = parser.parse_args(argv)

    runs = sorted({Path(p) for pattern in args.runs for p in glob.glob(pattern)})
    if not runs or any(not p.name.endswith(".trials.csv") for p in runs):
        raise SystemExit(f"runs: got {args.runs}, allowed: globs that match RUN.trials.csv files only")
    picked = {}
    for path in runs:
        with path.open() as f:
            picked[f"{path.parent.name}/{path.name.removesuffix('.trials.csv')}"] = choices(
                top_rung(list(csv.DictReader(f)))
            )
    pairs, skipped = pairs_across(picked, args.across) if args.across else pairs_within(picked)
    jobs = sorted({(pair[c][0], c) for pair in pairs if not pair["same"] for c in ("val", "tse")})
    genomes = {(pair[c][0], c): pair[c][1]["genome"] for pair in pairs for c in ("val", "tse")}
    records: dict[tuple[str, str], dict[str, Any]] = {}
    if args.collect_only:
        for run, c in jobs:
            path = args.out / f"{run}-{c}" / RESULT
            if path.is_file():
                records[run, c] = json.loads(path.read_text())
    else:
        with ThreadPoolExecutor(args.workers) as pool:
            futures = {(run, c): pool.submit(retrain, genomes[run, c], args.out / f"{run}-{c}", args)
                       for run, c in jobs}  # fmt: skip
            records = {key: f.result() for key, f in futures.items()}

    rows = []
    lines = [f"left out ({'no pair or no training losses' if args.across else 'no training losses recorded'}): "
             f"{', '.join(skipped)}"] if skipped else []  # fmt: skip
    differ = [pair["run"] for pair in pairs if not pair["same"]]
    unit = "seeds paired" if args.across else "searches"
    lines.append(f"{len(pairs)} {unit}; the choices differ in {len(differ)}: " + ", ".join(differ))
    lines.append("| search | by val: trial, search-val, TSE, MACs | by TSE: trial, search-val, TSE, MACs | "
                 "held-out val / TSE | test val / TSE |")  # fmt: skip
    lines.append("|---|---|---|---|---|")
    diffs: dict[str, list[float]] = {"holdout": [], "test": []}
    for pair in pairs:
        (run_v, v), (run_t, t) = pair["val"], pair["tse"]
        row = {"run": pair["run"], "by_val": v, "by_tse": t, "same": pair["same"]}
        if args.across:
            row.update({"val_from": run_v, "tse_from": run_t})
        held = test = "same network"
        if not pair["same"] and (run_v, "val") in records and (run_t, "tse") in records:
            rv, rt = records[run_v, "val"], records[run_t, "tse"]
            row.update(
                {f"{split}_{c}": kept(r, split) for split in ("holdout", "test") for c, r in (("val", rv), ("tse", rt))}
            )
            for split in diffs:
                diffs[split].append(kept(rt, split) - kept(rv, split))
            held = f"{kept(rv, 'holdout'):.2f} / {kept(rt, 'holdout'):.2f}"
            test = f"{kept(rv, 'test'):.2f} / {kept(rt, 'test'):.2f}"
        elif not pair["same"]:
            held = test = "not retrained yet"
        rows.append(row)
        v_tse = "-" if v["tse"] is None else f"{v['tse']:.3f}"
        lines.append(
            f"| {pair['run']} | {v['trial_id']}, {v['val']:.2f}, {v_tse}, {v['macs'] / 1e6:.2f}M | {t['trial_id']}, "
            f"{t['val']:.2f}, {t['tse']:.3f}, {t['macs'] / 1e6:.2f}M | {held} | {test} |"
        )
    summary: dict[str, dict[str, Any]] = {}
    for split, values in diffs.items():
        if values:
            text = paired(summary, split, values)
            lines.append(f"{split} top-1, by TSE - by val, paired by search (n = {len(values)}): {text}; "
                         f"TSE's ahead in {sum(d > 0 for d in values)} of {len(values)}")  # fmt: skip
    same = sum(pair["same"] for pair in pairs)
    if args.across and same and diffs["holdout"] and len(diffs["holdout"]) + same == len(pairs):
        # a whole search's worth: a seed whose two searches ended on the same network gains nothing (0)
        values = diffs["holdout"] + [0.0] * same
        text = paired(summary, "holdout_all_seeds", values)
        lines.append(f"holdout top-1 over all {len(values)} seeds (the {same} ending on the same network count 0): "
                     f"{text}")  # fmt: skip
    macs = [r["by_tse"]["macs"] / 1e6 - r["by_val"]["macs"] / 1e6 for r in rows if "holdout_tse" in r]
    if macs:
        text = paired(summary, "macs_m", macs)
        lines.append(f"final MACs (M), by TSE - by val, the same pairs: {text}; larger in "
                     f"{sum(d > 0 for d in macs)} of {len(macs)}")  # fmt: skip
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        "runs": rows,
        "paired": summary,
        "epochs": args.epochs,
        "seed": args.seed,
        "holdout": args.holdout,
        "across": args.across,
    }
    (args.out / "results.json").write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
