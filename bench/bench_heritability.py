"""Why the search barely climbs: how much of a parent's search score does its child inherit? (issue 20 item 6)

An evolutionary search gains per generation about R = h² x S (the breeder's equation): the selection differential S
(how far above the pool they were chosen from its parents score) times the heritability h², the slope of a
child's score on its parents' mean score.
Both are measured here from finished searches (trials csv files as `menas.report.tables.write_csv` writes them,
e.g. bench_fidelity.py's `RUN.trials.csv`, given as globs; or run folders holding a `menas.sqlite`):

- **children**: the done crossover and mutation trials; each is set against the mean search-val score of its
  parents' lineages at rung 0 (a promoted or repeated parent is followed back to its rung-0 trial, so parent and
  child were trained alike). Scores are centred per run (a child's score on its run's children's mean, its
  parents' on the run's mean over all children's parents), then pooled: the Spearman rank correlation and the
  least-squares slope of child on parents (the heritability estimate);
- S and R themselves: per child its parents' mean and its own score minus the mean rung-0 score of the run's
  earlier generations (`pool`), averaged per run, then over runs;
- by role (crossover, mutation), by how many genes the child differs from its nearest parent's final genome
  (`gene_distance`: stage depth, width and stride, each layer's kernel, expansion, SE and activation, and the
  stem, ds and head genes), and by whether a stride moved (the resolution of everything after it changes).

A child cannot inherit more than its parents' scores carry about their architecture: the score's own
repeatability (one genome trained again with another seed; bench_proxy.py's seed-to-seed Spearman) is the ceiling.
The runs' noise repeats are no measure of it here: they repeat each generation's best child only.

`--score tse` measures the training-speed estimate instead (minus the mean training loss of the trial's own
epochs, what `fidelity.score: tse` ranks by), from the same trials: is it inherited better than search-val?

95% intervals: percentile bootstrap over runs (runs resampled whole, `--boot` draws, seeded). The test split is
not read: every score here is search-val.

Usage:
    python bench/bench_heritability.py 'bench/results/fidelity/2026-1*/*.trials.csv' --out FILE.json
    python bench/bench_heritability.py runs/versus2/runs/menas-b1507248-s0     # a run folder
"""

from __future__ import annotations

import argparse
import csv
import functools
import glob
import json
import shlex
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from menas.space.genome import Genome  # noqa: E402

CHILD_ROLES = ("crossover", "mutation")
FOLLOW_BACK = ("promote", "repeat", "rescore")  # roles that continue or repeat the trial in parent_ids[0]
DISTANCE_BINS = ((0, 2), (3, 5), (6, 10), (11, None))
SCORES = ("val", "tse")


# --------------------------------------------------------------------------------------------- genomes


@functools.lru_cache(maxsize=4096)
def _genome(text: str) -> Genome:
    """A genome string parsed once: a run's genomes are compared with many children."""
    return Genome.from_str(text)


def _layer_genes(layer: Any) -> tuple:
    return (layer.kernel, layer.mid_chs, layer.se, layer.act)


def gene_distance(a: str, b: str) -> int:
    """Genes that differ between genomes `a` and `b`: per stage its depth, width and stride, and per layer position
    its kernel, expansion, SE and activation (a layer only one genome has counts all four); the stem, ds and head
    genes. Genomes of different stage counts are refused (one search space)."""
    ga, gb = _genome(a), _genome(b)
    if len(ga.stages) != len(gb.stages):
        raise ValueError(f"genomes of {len(ga.stages)} and {len(gb.stages)} stages: not one search space")
    fixed = [(ga.stem.out_chs, gb.stem.out_chs), (ga.stem.act, gb.stem.act), (ga.head.head_chs, gb.head.head_chs),
             (ga.head.feat_chs, gb.head.feat_chs), (ga.head.act, gb.head.act), (ga.ds.kernel, gb.ds.kernel),
             (ga.ds.stride, gb.ds.stride), (ga.ds.out_chs, gb.ds.out_chs), (ga.ds.se, gb.ds.se),
             (ga.ds.act, gb.ds.act)]  # fmt: skip
    distance = sum(x != y for x, y in fixed)
    for sa, sb in zip(ga.stages, gb.stages, strict=True):
        distance += (sa.depth != sb.depth) + (sa.out_chs != sb.out_chs) + (sa.stride != sb.stride)
        for j in range(max(sa.depth, sb.depth)):
            if j >= sa.depth or j >= sb.depth:
                distance += 4
            else:
                distance += sum(
                    x != y for x, y in zip(_layer_genes(sa.layers[j]), _layer_genes(sb.layers[j]), strict=True)
                )
    return distance


def strides_moved(a: str, b: str) -> bool:
    """Whether any stage's stride (or the ds block's) differs between genomes `a` and `b`."""
    ga, gb = _genome(a), _genome(b)
    return ga.ds.stride != gb.ds.stride or any(x.stride != y.stride for x, y in zip(ga.stages, gb.stages, strict=True))


# --------------------------------------------------------------------------------------------- reading runs


def read_rows(source: Path) -> list[dict[str, Any]]:
    """A run's trials as dicts of the csv's fields (role, status, trial_id, parent_ids, genome, final_genome,
    final_score): from a trials csv, or from a run folder's store."""
    if source.is_dir():
        from menas.search.store import Store

        with Store.open(source, readonly=True) as store:
            return rows_from_trials(store.trials())
    with source.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{"trial_id": int(r["trial_id"]), "role": r["role"], "status": r["status"],
             "parent_ids": json.loads(r["parent_ids"] or "[]"), "genome": r["genome"],
             "final_genome": r["final_genome"] or None,
             "final_score": float(r["final_score"]) if r["final_score"] else None,
             "generation": int(r["generation"]), "tse": _tse(r.get("train_losses"))} for r in rows]  # fmt: skip


def rows_from_trials(trials: Iterable[Any]) -> list[dict[str, Any]]:
    """`read_rows`' dicts from a store's `TrialRecord`s."""
    return [
        {"trial_id": t.trial_id, "role": t.role, "status": t.status, "parent_ids": list(t.parent_ids),
         "genome": t.genome, "final_genome": t.final_genome, "final_score": t.final_score,
         "generation": t.generation, "tse": t.tse}
        for t in trials
    ]  # fmt: skip


def _tse(losses: str | None) -> float | None:
    """Minus the mean of a csv row's per-epoch training losses (`TrialRecord.tse`); None when none were recorded."""
    values = json.loads(losses or "[]")
    return -sum(values) / len(values) if values else None


def with_score(rows: Sequence[dict[str, Any]], score: str) -> list[dict[str, Any]]:
    """The rows with `final_score` replaced by the measure asked for: "val" (search-val top-1, as recorded) or
    "tse" (minus the mean training loss of the trial's own training epochs)."""
    if score == "val":
        return list(rows)
    return [{**r, "final_score": r["tse"]} for r in rows]


def _rung0(by_id: dict[int, dict[str, Any]], trial_id: int) -> dict[str, Any] | None:
    """The rung-0 trial of `trial_id`'s lineage (promotions, repeats and re-scores followed back), if done."""
    row = by_id.get(trial_id)
    for _ in range(len(by_id)):  # bounded: a lineage is at most as long as the run
        if row is None or row["role"] not in FOLLOW_BACK:
            break
        row = by_id.get(row["parent_ids"][0])
    return row if row is not None and row["status"] == "done" and row["final_score"] is not None else None


def run_pairs(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's parent-child pairs: the child's score, its parents' mean rung-0 score, its role, its gene distance
    to the nearest parent's final genome (what it was bred from), whether a stride moved, and `pool`: the mean
    rung-0 score of the run's networks of earlier generations (what its parents were selected from)."""
    by_id = {r["trial_id"]: r for r in rows}
    scored = [t for t in rows if _is_rung0(t)]
    pools = {g: [t["final_score"] for t in scored if t["generation"] < g] for g in {r["generation"] for r in rows}}
    children = []
    for r in rows:
        if r["role"] not in CHILD_ROLES or r["status"] != "done" or r["final_score"] is None:
            continue
        parents = [p for p in (_rung0(by_id, pid) for pid in r["parent_ids"]) if p is not None]
        if not parents:
            continue
        bred_from = [p["final_genome"] or p["genome"] for p in parents]
        distances = [gene_distance(g, r["genome"]) for g in bred_from]
        nearest = bred_from[int(np.argmin(distances))]
        earlier = pools[r["generation"]]
        children.append({"child": r["final_score"], "parents": float(np.mean([p["final_score"] for p in parents])),
                         "role": r["role"], "distance": min(distances),
                         "strides_moved": strides_moved(nearest, r["genome"]),
                         "pool": float(np.mean(earlier)) if earlier else None})  # fmt: skip
    return children


def _is_rung0(row: dict[str, Any]) -> bool:
    """A done network trained at rung 0 (a sample or a child), scored."""
    return row["role"] not in FOLLOW_BACK and row["status"] == "done" and row["final_score"] is not None


# --------------------------------------------------------------------------------------------- statistics


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (None under 3 pairs or a constant side)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares slope of y on x (None under 3 pairs or a constant x)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def centre(runs: Iterable[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Each run's pairs with `child` and `parents` centred on that run's means over all its children (a run's
    scores move with its data and settings; what is inherited is a deviation from the run's own mean). Runs of
    fewer than 2 children are dropped."""
    out = []
    for pairs in runs:
        if len(pairs) < 2:
            continue
        mc, mp = np.mean([p["child"] for p in pairs]), np.mean([p["parents"] for p in pairs])
        out.append([{**p, "child": p["child"] - mc, "parents": p["parents"] - mp} for p in pairs])
    return out


def _pooled(runs: Sequence[list[dict[str, Any]]]) -> tuple[list[float], list[float]]:
    return [p["parents"] for r in runs for p in r], [p["child"] for r in runs for p in r]


def estimate(runs: Sequence[list[dict[str, Any]]], boot: int, seed: int) -> dict[str, Any]:
    """Spearman and slope of the child's score on its parents' mean over the (centred) pairs of `runs`, pooled,
    with percentile bootstrap intervals over runs (each draw resamples whole runs)."""
    kept = [r for r in runs if r]
    xs, ys = _pooled(kept)
    result: dict[str, Any] = {"pairs": len(xs), "runs": len(kept), "spearman": spearman(xs, ys),
                              "slope": slope(xs, ys)}  # fmt: skip
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"spearman": [], "slope": []}
    for _ in range(boot if len(kept) >= 2 else 0):
        bx, by = _pooled([kept[i] for i in rng.integers(0, len(kept), len(kept))])
        for name, fn in (("spearman", spearman), ("slope", slope)):
            value = fn(bx, by)
            if value is not None:
                draws[name].append(value)
    for name, values in draws.items():
        result[f"{name}_ci"] = [float(np.percentile(values, q)) for q in (2.5, 97.5)] if values else None
    return result


def selection(runs: Sequence[list[dict[str, Any]]], boot: int, seed: int) -> dict[str, Any]:
    """The breeder's equation read off the runs (uncentred pairs): per run the mean selection differential S
    (parents' mean minus the pool they were chosen from) and the mean response R (child minus that pool), then
    their means over runs with percentile bootstrap intervals over runs."""
    per_run = []
    for pairs in runs:
        usable = [p for p in pairs if p["pool"] is not None]
        if usable:
            per_run.append((np.mean([p["parents"] - p["pool"] for p in usable]),
                            np.mean([p["child"] - p["pool"] for p in usable])))  # fmt: skip
    if not per_run:
        return {"runs": 0}
    values = np.array(per_run)
    rng = np.random.default_rng(seed)
    draws = boot if len(values) >= 2 else 0  # one run: no interval
    means = np.array([values[rng.integers(0, len(values), len(values))].mean(axis=0) for _ in range(draws)])
    result: dict[str, Any] = {"runs": len(values)}
    for k, name in enumerate(("differential", "response")):
        result[name] = float(values[:, k].mean())
        result[f"{name}_ci"] = [float(np.percentile(means[:, k], q)) for q in (2.5, 97.5)] if len(means) else None
    return result


def _quartiles(values: Sequence[float]) -> list[float] | None:
    return [float(q) for q in np.percentile(values, [25, 50, 75])] if len(values) else None


def analyse(runs: dict[str, list[dict[str, Any]]], boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Every estimate the script prints, from `run_pairs` of each run (keyed by run name)."""
    children = centre(runs.values())

    def subset(keep: Any) -> dict[str, Any]:
        return estimate([[p for p in pairs if keep(p)] for pairs in children], boot, seed)

    distances = [p["distance"] for pairs in children for p in pairs]
    bins = {f"{lo}-{hi}" if hi is not None else f">={lo}": (lo, hi) for lo, hi in DISTANCE_BINS}
    return {
        "children": estimate(children, boot, seed),
        "selection": selection(list(runs.values()), boot, seed),
        "by_role": {role: subset(lambda p, r=role: p["role"] == r) for role in CHILD_ROLES},
        "by_distance": {
            name: subset(lambda p, lo=lo, hi=hi: lo <= p["distance"] and (hi is None or p["distance"] <= hi))
            for name, (lo, hi) in bins.items()
        },
        "by_strides": {moved: subset(lambda p, m=moved: p["strides_moved"] is (m == "yes")) for moved in ("no", "yes")},
        "distance_quartiles": _quartiles(distances),
        "distance_quartiles_by_role": {
            role: _quartiles([p["distance"] for pairs in children for p in pairs if p["role"] == role])
            for role in CHILD_ROLES
        },
        "runs": sorted(runs),
    }


# --------------------------------------------------------------------------------------------- output


def _fmt(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def table(result: dict[str, Any]) -> str:
    """The estimates as a Markdown table."""
    lines = ["| pairs | runs | n | Spearman [95%] | slope [95%] |", "|---|---|---|---|---|"]

    def row(name: str, e: dict[str, Any]) -> None:
        lines.append(f"| {name} | {e['runs']} | {e['pairs']} | {_fmt(e['spearman'], e['spearman_ci'])} | "
                     f"{_fmt(e['slope'], e['slope_ci'])} |")  # fmt: skip

    row("child on parents' mean, all children", result["children"])
    for role, e in result["by_role"].items():
        row(f"... {role} children", e)
    for name, e in result["by_distance"].items():
        row(f"... {name} genes from the nearest parent", e)
    for moved, e in result["by_strides"].items():
        row(f"... a stride moved: {moved}", e)
    sel = result["selection"]
    if sel["runs"]:
        lines.append(f"\nSelection differential S (parents' mean minus the pool they were chosen from), mean over "
                     f"{sel['runs']} runs: {_fmt(sel['differential'], sel['differential_ci'])}; response R "
                     f"(child minus that pool): {_fmt(sel['response'], sel['response_ci'])}; R / S = "
                     f"{sel['response'] / sel['differential']:.2f}.")  # fmt: skip
    q = result["distance_quartiles"]
    if q:
        by_role = "; ".join(f"{role} children {r[0]:g} / {r[1]:g} / {r[2]:g}"
                            for role, r in result["distance_quartiles_by_role"].items() if r)  # fmt: skip
        lines.append(f"\nGenes from the nearest parent: quartiles {q[0]:g} / {q[1]:g} / {q[2]:g} ({by_role}).")
    return "\n".join(lines)


def sources(patterns: Sequence[str]) -> list[Path]:
    """Every csv file or run folder the patterns name, sorted, each once."""
    found: set[Path] = set()
    for pattern in patterns:
        matches = glob.glob(pattern) or ([pattern] if Path(pattern).exists() else [])
        found.update(Path(m) for m in matches)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="trials csv files or run folders (globs)")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap draws over runs (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--out", default=None, help="write every figure to this json file")
    parser.add_argument("--score", choices=SCORES, default="val",
                        help="the measure: val (search-val top-1) or tse (minus the mean training loss)")  # fmt: skip
    args = parser.parse_args(argv)
    paths = sources(args.runs)
    if not paths:
        parser.error(f"no trials csv or run folder matches {args.runs}")
    runs = {str(p): run_pairs(with_score(read_rows(p), args.score)) for p in paths}
    result = analyse(runs, args.boot, args.seed)
    print(table(result))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        command = "python bench/bench_heritability.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        out.write_text(json.dumps({"command": command,
                                   **result}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
