"""Evidence v2, the searched arms (issue 20 item 5): MENAS and random search in the MobileNet3-MT space, each
network chosen on search-val only, retrained with the references' recipe and set against the hand-designed networks
(bench/versus/references.py) at three MACs budgets.

Arms `menas` and `random-mt` are `bench/versus/base.yaml` with their strategy (`ARMS`): the same space, data,
fidelity rungs and repeats, objective and search compute (`compute.images`). Each (arm, budget, seed) is one
search under that budget (MACs window [WINDOW x budget, budget], objective accuracy: as a user deploying at that
budget would search; `--wide`: one search per arm and seed over base.yaml's window with the Pareto objective
(`WIDE`), whose front covers the three budgets), run folder ``--out/runs/ARM-bBUDGET-sSEED``
searched by ``python -m menas.cli search`` in a subprocess (its output in ``--out/logs``): a finished run is
skipped, an unfinished one resumed with ``menas resume``.

For each (arm, seed, budget) the network is chosen on search-val only (`choose`): among the run's networks
(`Store.lineages()`: each at its highest rung reached), those whose final MACs (the ticket's when one was kept) are
<= the budget, the best by `menas.search.ranking.rank_key` (higher rung, then higher search-val top-1, then fewer
MACs). It is retrained by references.py's own job code (`references.run_job`: the recipe ``--recipe``, ``--epochs``,
``--data``, ``--set``; the training set minus a held-out 2%; the raw or EMA weights kept on the held-out part; the
test split read once at the end), at training seed = the search seed, in ``--out/jobs/ARM-sSEED-tTRIAL-sSEED-eEPOCHS``
(resumable; a finished one is read). A genome chosen for two budgets is retrained once and reported in both rows.
With ``--references PATH`` (a references.py results.json) the budgets are its mobilenetv3_small_075, small_100 and
large_075 MACs, and the recipe must be the one its meta names (taken from it when not given); without it the
recipe is read from ``--out``'s results.json when references.py wrote one there.

Output in ``--out``: ``results.json``, merged with what references.py writes there (rows of other arms kept, rows
of these arms replaced): a "networks" row per (arm, seed, budget) with a network (arm, seed, budget_macs, name,
macs, params, test_top1, chosen_by, and trial_id, rung, search_val_top1, search_macs, genome, ...), a
"generations" row per (arm, seed, generation) (best: the generation's best search-val top-1 at the run's top rung,
the highest rung any of its trials reached, as bench/bench_fidelity.py; plus rung 0's best, the generation's noise
estimate, compute), meta["search"] (settings, choices without a network); and ``search_summary.md``, the printed
summary: per budget the best reference at <= budget and each arm (mean test top-1 over seeds with a 95%
t-interval), the paired menas - random-mt difference against twice the pooled retrain noise (the std of a
reference's test top-1 between its seeds, pooled over the references), the top-rung climb per seed, each arm's
selection differential, response and heritability slope (bench_heritability.py: why it climbs or not), and the
issue's three goals, each "met" or "not met" with its numbers. ``--collect-only`` rebuilds both from the folders;
``--searches-only`` runs the searches and retrains nothing (a later run without it retrains their choices);
``--retrains-only`` retrains the choices of the searches that have finished and runs no search, so one process can
retrain beside another that searches (bench/versus/run.sh; a job another process is training is skipped: its
folder's lock, references.LOCK_FILE).

Across sessions on fresh machines (only committed files survive): ``bench/versus/carry.py save --out OUT`` keeps
each finished search's store (``menas.sqlite``, one self-contained snapshot) and ``config.yaml`` and each finished
retrain's ``versus.json`` and ``job.json`` in ``bench/results/versus/progress`` (commit it), never trial weights;
``carry.py restore --out OUT`` puts them back. The same command then skips each finished search and chooses and
retrains its networks from the store alone (`read_run`: trial records and genomes; no file of ``trials/`` is read),
reading each finished retrain instead of training it; an unfinished search or retrain starts over.

Usage:
    PYTHONPATH=src python bench/versus/search.py --out runs/versus --references runs/versus/results.json
    PYTHONPATH=src python bench/versus/search.py --out runs/versus --references runs/versus/results.json \\
        --collect-only
    PYTHONPATH=src python bench/versus/search.py --smoke    # every step on synthetic data, a few minutes on CPU
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # bench/: bench_heritability

import references as refs  # noqa: E402

import bench_heritability as heritability  # noqa: E402
from menas.files import FolderLocked  # noqa: E402
from menas.search import fidelity, ranking  # noqa: E402

BASE = HERE / "base.yaml"
#: Each arm: the config keys it sets on top of base.yaml.
ARMS: dict[str, dict[str, Any]] = {
    "menas": {"strategy.name": "menas"},
    "random-mt": {"strategy.name": "random"},
}
#: The networks whose MACs are the budgets, smallest first, and their MACs at 32 px, 1 channel, 10 classes.
BUDGET_NETWORKS = ("mobilenetv3_small_075", "mobilenetv3_small_100", "mobilenetv3_large_075")
DEFAULT_BUDGETS = (1_507_248, 2_096_064, 4_855_152)
CHOSEN_BY = "search-val top-1, highest rung reached, final MACs <= budget (rank_key); test not read"
PAIR = ("menas", "random-mt")  # the paired difference: first - second
SEARCHED_GAIN = 0.5  # points the searched network should beat the best reference at <= budget by (issue 20)
SHARE = 0.8  # "4 of 5 seeds"
MIN_SEEDS = 5
RUN_NAME = re.compile(r"^(?P<arm>.+?)(?:-b(?P<budget>\d+))?-s(?P<seed>\d+)$")
#: Each budget's own search: MACs window [WINDOW x budget, budget] (a user searches under the budget they deploy at;
#: one wide window leaves the small budgets empty: 0 of 200 samples of 0.8-5M were <= 2.1M, they cluster near the top)
WINDOW = 0.5
#: --wide: the keys a search over base.yaml's whole window sets. Its network per budget comes from one front, so it
#: optimises (score, MACs) with NSGA-II; a search under one budget optimises the score (base.yaml's `accuracy`): a
#: user who deploys at one budget wants the best network under it, and Pareto ranking would spend promotions and
#: parents on the window's small networks for their MACs alone, where that budget's choice is the best score <= budget.
WIDE = {"strategy.objective": "pareto"}

#: --smoke: every step on synthetic 16 px data (1,000 search-train images), one generation of 4, rungs [1, 2].
SMOKE_SEARCH: dict[str, Any] = {
    "data.dataset": "synthetic",
    "data.input_size": 16,
    "data.search_train_fraction": 0.2,
    "data.search_val_fraction": 0.1,
    "budget.macs_min": "0.3M",
    "budget.macs_max": "2M",
    "strategy.population": 4,
    "strategy.generations": 1,
    "strategy.parents": 2,
    "strategy.trials": 4,
    "fidelity.rungs": [1, 2],
    "fidelity.eta": 2,
    "lottery.proposals": 4,
    "lottery.score_images": 128,
    "lottery.rescore_top": 2,
    "compute.images": "100K",
    "executor.kind": "local",
}
SMOKE_RETRAIN = {"epochs": 1, "data": "synthetic", "set": ["data.input_size=16"]}
SMOKE_BUDGETS = (1_500_000, 1_800_000, 2_000_000)  # at 16 px
SMOKE_REFERENCES = ["mobilenetv3_small_100", "lcnet_050"]


# --------------------------------------------------------------------------------------------- choosing


def choose(trials: Iterable[Any], budget: float) -> Any | None:
    """The network a run offers at `budget`, chosen on search-val only: of the run's networks
    (`fidelity.representatives`: each done lineage at its highest rung reached, no noise repeats; what
    `Store.lineages()` returns), those with final MACs <= `budget`, the best by `ranking.rank_key` (higher rung,
    then higher final search-val top-1, then fewer MACs, then the earlier trial). None when none fits."""
    fitting = [t for t in fidelity.representatives(list(trials)) if t.final_macs is not None and t.final_macs <= budget]
    return ranking.best(fitting)


def searched_job(arm: str, seed: int, trial: Any, epochs: int, budget: int | None = None) -> refs.Job:
    """The retrain job of a chosen network: references.py's genome path, training seed = the search seed. Its
    identity names the search (the budget it searched under, if any) and the trial, not the budget it is chosen
    for, so a network a wide search offers at two budgets is one job."""
    from menas.space.genome import Genome

    genome = Genome.from_str(trial.final_genome).to_str()
    run = f"s{seed}" if budget is None else f"b{budget}-s{seed}"
    return refs.Job(arm, f"{run}-t{trial.trial_id}", seed, epochs, "menas-genome", genome, None, CHOSEN_BY)


# --------------------------------------------------------------------------------------------- generations


def generation_rows(arm: str, seed: int, trials: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per generation of a run: `best` the best final search-val top-1 of its done networks (repeats left
    out) at the run's top rung (the highest rung any done trial reached; bench/bench_fidelity.py's measure), rung
    0's best, its trials, the noise its repeats measure, and its compute (training-image equivalents, as
    `compute.images` counts) alone and with the generations before it."""
    top = max((t.rung for t in trials if t.ok), default=0)
    rows, total = [], 0.0
    for gen in sorted({t.generation for t in trials}):
        mine = [t for t in trials if t.generation == gen]
        done = [t for t in mine if t.ok and t.role not in fidelity.PROBES]
        noise = fidelity.noise_estimate(fidelity.repeat_pairs(mine))
        images = sum(t.budget_images or 0.0 for t in mine if t.status in ("done", "failed"))
        total += images
        rows.append({"arm": arm, "seed": seed, "generation": gen,
                     "best": max((t.final_score for t in done if t.rung == top), default=None),
                     "top_rung": top, "best_rung0": max((t.final_score for t in done if t.rung == 0), default=None),
                     "trials": len(mine), "done": sum(t.ok for t in mine),
                     "noise_sigma": None if noise is None else noise.sigma,
                     "noise_pairs": 0 if noise is None else noise.pairs,
                     "compute_images": round(images), "compute_images_so_far": round(total)})  # fmt: skip
    return rows


def climb(rows: Sequence[dict[str, Any]]) -> float | None:
    """The top-rung best of the last generation that has one minus the first's (a generation cut by the compute
    budget before its promotions has none); None with fewer than two such generations."""
    scored = [r["best"] for r in sorted(rows, key=lambda r: r["generation"]) if r["best"] is not None]
    return scored[-1] - scored[0] if len(scored) >= 2 else None


# --------------------------------------------------------------------------------------------- statistics


def t975(df: float) -> float:
    """The two-sided 95% Student t quantile at `df` degrees of freedom (a fractional df rounds down: wider)."""
    k = max(1, math.floor(df + 1e-9))
    return refs._T975[k - 1] if k <= len(refs._T975) else 1.960


def welch_interval(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float | None, float | None]:
    """mean(xs) - mean(ys), the half-width of its 95% Welch t-interval and its Welch-Satterthwaite df (None, None
    when either side has fewer than 2 values)."""
    diff = statistics.fmean(xs) - statistics.fmean(ys)
    if len(xs) < 2 or len(ys) < 2:
        return diff, None, None
    a, b = statistics.variance(xs) / len(xs), statistics.variance(ys) / len(ys)
    if a + b == 0:
        return diff, 0.0, float(len(xs) + len(ys) - 2)
    df = (a + b) ** 2 / (a * a / (len(xs) - 1) + b * b / (len(ys) - 1))
    return diff, t975(df) * math.sqrt(a + b), df


def pooled_retrain_noise(reference_rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The retrain noise: the std of one network's test top-1 between training seeds, pooled over the reference
    networks with >= 2 seeds (sqrt of the summed squared deviations over the summed degrees of freedom; with two
    seeds each, the root mean of (a - b)^2 / 2). None when no reference has two seeds."""
    by_name: dict[str, dict[int, float]] = {}
    for r in reference_rows:
        by_name.setdefault(r["name"], {})[r["seed"]] = r["test_top1"]
    squares, df, names = 0.0, 0, []
    for name, per_seed in by_name.items():
        values = list(per_seed.values())
        if len(values) >= 2:
            mean = statistics.fmean(values)
            squares += sum((v - mean) ** 2 for v in values)
            df += len(values) - 1
            names.append(name)
    return {"sigma": math.sqrt(squares / df), "df": df, "networks": names} if df else None


def enough(count: int, n: int) -> tuple[int, bool]:
    """(seeds needed, met) for "in >= 4 of 5 seeds": at least MIN_SEEDS seeds, SHARE of them."""
    need = math.ceil(SHARE * max(n, MIN_SEEDS) - 1e-9)
    return need, n >= MIN_SEEDS and count >= need


def _spread(values: dict[int, float]) -> dict[str, Any]:
    mean, half = refs.t_interval(list(values.values()))
    return {"n": len(values), "values": dict(sorted(values.items())), "mean": mean, "half": half}


def best_reference(reference_rows: Sequence[dict[str, Any]], budget: float) -> dict[str, Any] | None:
    """The reference network of MACs <= `budget` with the highest mean test top-1 over its seeds, with its values
    per seed and 95% t-interval; None when none fits."""
    by_name: dict[str, dict[int, float]] = {}
    macs: dict[str, int] = {}
    for r in reference_rows:
        if r["macs"] <= budget:
            by_name.setdefault(r["name"], {})[r["seed"]] = r["test_top1"]
            macs[r["name"]] = r["macs"]
    if not by_name:
        return None
    name = max(by_name, key=lambda n: (statistics.fmean(by_name[n].values()), -macs[n]))
    return {"name": name, "macs": macs[name], **_spread(by_name[name])}


def _run_key(seed: int, budget: int | None) -> str:
    """A search's name in the climb table: its seed, and its budget when it searched under one."""
    return f"s{seed}" if budget is None else f"s{seed} b{budget}"


def summarize(
    networks: Sequence[dict[str, Any]],
    generations: Sequence[dict[str, Any]],
    budgets: Sequence[float],
    reference_rows: Sequence[dict[str, Any]],
    arms: Sequence[str] = tuple(ARMS),
) -> dict[str, Any]:
    """Every figure the summary prints (see the module docstring) and the three goals' verdicts."""
    noise = pooled_retrain_noise(reference_rows)
    threshold = None if noise is None else 2 * noise["sigma"]
    out: dict[str, Any] = {"retrain_noise": noise, "threshold": threshold, "budgets": [], "climb": {}}
    for budget in budgets:
        ref = best_reference(reference_rows, budget)
        entry: dict[str, Any] = {"budget_macs": budget, "reference": ref, "arms": {}, "paired": None}
        per_arm = {arm: {r["seed"]: r["test_top1"] for r in networks
                         if r["arm"] == arm and r["budget_macs"] == budget} for arm in arms}  # fmt: skip
        for arm, values in per_arm.items():
            if not values:
                entry["arms"][arm] = None
                continue
            stats = _spread(values)
            if ref is not None:
                diff, half, df = welch_interval(list(values.values()), list(ref["values"].values()))
                met = half is not None and diff >= SEARCHED_GAIN and diff - half > 0
                stats["vs_reference"] = {"diff": diff, "half": half, "df": df, "met": met}
            entry["arms"][arm] = stats
        a, b = PAIR
        if a in per_arm and b in per_arm:
            seeds = sorted(set(per_arm[a]) & set(per_arm[b]))
            diffs = {s: per_arm[a][s] - per_arm[b][s] for s in seeds}
            if diffs:
                mean, half = refs.t_interval(list(diffs.values()))
                exceed = None if threshold is None else sum(d > threshold for d in diffs.values())
                need, met = enough(exceed or 0, len(diffs))
                entry["paired"] = {"n": len(diffs), "diffs": diffs, "mean": mean, "half": half, "exceed": exceed,
                                   "need": need, "met": met and threshold is not None}  # fmt: skip
        out["budgets"].append(entry)
    for arm in arms:
        rows = [g for g in generations if g["arm"] == arm]
        searches = sorted({(g["seed"], g.get("budget_macs")) for g in rows}, key=lambda k: (k[1] or 0, k[0]))
        climbs = {  # one search per seed (and budget): "s0", or "s0 b2096064"
            _run_key(seed, budget): climb([g for g in rows if (g["seed"], g.get("budget_macs")) == (seed, budget)])
            for seed, budget in searches
        }
        measured = {s: c for s, c in climbs.items() if c is not None}
        rose = sum(c > 0 for c in measured.values())
        need, met = enough(rose, len(measured))
        out["climb"][arm] = {"per_seed": climbs, "n": len(measured), "rose": rose, "need": need, "met": met}
    return out


def selection(lineage: dict[str, dict[str, list[dict[str, Any]]]], boot: int = 1000) -> dict[str, Any]:
    """Per arm with children (bench_heritability.py over its finished searches): the selection differential S, the
    response R and the heritability slope h², pooled over its searches, with bootstrap intervals over searches."""
    out = {}
    for arm, runs_pairs in lineage.items():
        if any(runs_pairs.values()):
            result = heritability.analyse(runs_pairs, boot=boot)
            out[arm] = {"children": result["children"], "selection": result["selection"]}
    return out


# --------------------------------------------------------------------------------------------- the summary text


def _m(macs: float) -> str:
    return f"{macs / 1e6:.2f}M"


def _ci(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    half = stats["half"]
    return f"{stats['mean']:.2f} ± {half:.2f} (n {stats['n']})" if half is not None else f"{stats['mean']:.2f} (n 1)"


def _seeds(values: dict[int, float], signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return " / ".join(f"{fmt.format(v)} (s{s})" for s, v in sorted(values.items())) or "-"


def _signed_ci(value: float | None, ci: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def summary_text(summary: dict[str, Any], arms: Sequence[str] = tuple(ARMS), notes: Sequence[str] = ()) -> str:
    """The markdown the script prints and writes to search_summary.md."""
    lines = ["## Searched arms against the hand-designed references", "",
             "Test top-1 (%) after the references' retrain recipe; mean over seeds with its 95% t-interval.", "",
             "| budget (MACs) | network | MACs | test top-1 per seed | mean ± 95% t |",
             "|---|---|---|---|---|"]  # fmt: skip
    for entry in summary["budgets"]:
        budget, ref = entry["budget_macs"], entry["reference"]
        if ref:
            lines.append(f"| <= {_m(budget)} | best reference: {ref['name']} | {_m(ref['macs'])} | "
                         f"{_seeds(ref['values'])} | {_ci(ref)} |")  # fmt: skip
        else:
            lines.append(f"| <= {_m(budget)} | best reference: none at <= budget | | | |")
        for arm in arms:
            stats = entry["arms"].get(arm)
            lines.append(f"| <= {_m(budget)} | {arm} | | {_seeds(stats['values']) if stats else '-'} | {_ci(stats)} |")
    noise, threshold = summary["retrain_noise"], summary["threshold"]
    lines += ["", "Retrain noise (std of a reference's test top-1 between its seeds, pooled): "
              + (f"{noise['sigma']:.2f} points ({noise['df']} df, {len(noise['networks'])} networks); 2x = "
                 f"{threshold:.2f}" if noise else "not measured (no reference with two seeds)")]  # fmt: skip
    lines += ["", "Top-rung best search-val top-1 per generation (first → last generation with one):"]
    for arm in arms:
        c = summary["climb"].get(arm)
        if c:
            per_seed = ", ".join(f"{'-' if v is None else f'{v:+.2f}'} ({k})" for k, v in c["per_seed"].items())
            lines.append(f"- {arm}: last - first {per_seed or '-'}; rose in {c['rose']} of {c['n']} searches")
    for arm, sel in summary.get("selection", {}).items():
        h, sr = sel["children"], sel["selection"]
        if sr.get("runs"):
            lines.append(f"- {arm}, selection (bench_heritability.py, {sr['runs']} searches, {h['pairs']} children): "
                         f"parents {_signed_ci(sr['differential'], sr['differential_ci'])} above the pool they were "
                         f"chosen from, children {_signed_ci(sr['response'], sr['response_ci'])}; child on parents' "
                         f"slope {_signed_ci(h['slope'], h['slope_ci'])}")  # fmt: skip
    a, b = PAIR
    lines += ["", "Goals (issue 20 item 5):", "",
              f"1. Searched beats the best hand-designed network at <= budget by >= {SEARCHED_GAIN} points (met: "
              "mean difference >= 0.5 and its 95% Welch t-interval above 0):"]  # fmt: skip
    for entry in summary["budgets"]:
        ref = entry["reference"]
        for arm in arms:
            stats = entry["arms"].get(arm)
            head = f"   - <= {_m(entry['budget_macs'])}, {arm}"
            if ref is None or stats is None:
                lines.append(f"{head}: {'no reference' if ref is None else 'no network'} at <= budget: "
                             f"{_verdict(False)}")  # fmt: skip
                continue
            v = stats["vs_reference"]
            ci = f" ± {v['half']:.2f} (df {v['df']:.1f})" if v["half"] is not None else " (no interval: < 2 seeds)"
            lines.append(f"{head} - {ref['name']}: {v['diff']:+.2f}{ci}: {_verdict(v['met'])}")
    lines.append(f"2. {a} beats {b} by > 2x the pooled retrain noise in >= 4 of 5 seeds (paired by seed):")
    for entry in summary["budgets"]:
        p = entry["paired"]
        head = f"   - <= {_m(entry['budget_macs'])}"
        if p is None:
            lines.append(f"{head}: no seed with both arms: {_verdict(False)}")
            continue
        ci = f" ± {p['half']:.2f}" if p["half"] is not None else " (no interval: 1 seed)"
        exceed = "-" if p["exceed"] is None else p["exceed"]
        lines.append(f"{head}: per seed {_seeds(p['diffs'], signed=True)}; mean {p['mean']:+.2f}{ci} (95% t, "
                     f"n {p['n']}); > {'-' if threshold is None else f'{threshold:.2f}'} in {exceed} of {p['n']} "
                     f"seeds (need {p['need']} of >= {MIN_SEEDS}): {_verdict(p['met'])}")  # fmt: skip
    lines.append("3. The top-rung best rises from the first to the last generation in >= 4 of 5 seeds:")
    for arm in arms:
        c = summary["climb"].get(arm)
        if c:
            lines.append(f"   - {arm}: {c['rose']} of {c['n']} seeds (need {c['need']} of >= {MIN_SEEDS}): "
                         f"{_verdict(c['met'])}")  # fmt: skip
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- results.json


def merge_results(
    previous: dict[str, Any] | None,
    networks: list[dict[str, Any]],
    generations: list[dict[str, Any]],
    meta: dict[str, Any],
    arms: Sequence[str] = tuple(ARMS),
) -> dict[str, Any]:
    """results.json with these arms' rows replaced by `networks` and `generations` and every other arm's kept (as
    references.py keeps these), other keys kept, `meta` stored as meta["search"]."""
    previous = previous or {}
    return {
        **previous,
        "networks": [n for n in previous.get("networks", []) if n.get("arm") not in arms] + networks,
        "generations": [g for g in previous.get("generations", []) if g.get("arm") not in arms] + generations,
        "meta": {**previous.get("meta", {}), "search": meta},
    }


def network_row(record: dict[str, Any], trial: Any, budget: float, run: str) -> dict[str, Any]:
    """A results.json "networks" row: the retrain's record (references.py's fields, without the per-epoch
    history) at this budget, and how the network was chosen."""
    row = {k: v for k, v in record.items() if k != "history"}
    return {**row, "budget_macs": budget, "chosen_by": CHOSEN_BY, "trial_id": trial.trial_id, "rung": trial.rung,
            "generation": trial.generation, "search_val_top1": trial.final_score, "search_macs": trial.final_macs,
            "search_params": trial.final_params, "run": run}  # fmt: skip


def runs(out: Path, arms: Sequence[str] = tuple(ARMS)) -> list[tuple[str, int, int | None, Path]]:
    """(arm, seed, budget, folder) of every run folder under `out/runs` of the given arms, by arm, budget, seed;
    budget None for a run over the whole MACs window (`--wide`)."""
    found = []
    for path in sorted((out / "runs").glob("*-s*")):
        match = RUN_NAME.match(path.name)
        if match and match["arm"] in arms and (path / "menas.sqlite").is_file():
            budget = None if match["budget"] is None else int(match["budget"])
            found.append((match["arm"], int(match["seed"]), budget, path))
    order = {arm: i for i, arm in enumerate(arms)}
    return sorted(found, key=lambda x: (order[x[0]], x[2] or 0, x[1]))


def read_run(folder: Path) -> tuple[str, list[Any], dict[str, Any]]:
    """A run's status, trials and totals (compute used, trial seconds, noise estimate) from its store."""
    from menas.search.store import Store

    with Store.open(folder, readonly=True) as store:
        status, trials, used, noise = store.run_info().status, store.trials(), store.compute_used(), store.noise()
    return status, trials, {"trials": used.trials, "compute_images": used.images, "trial_s": used.trial_s,
                            "noise_sigma": None if noise is None else noise.sigma,
                            "noise_pairs": 0 if noise is None else noise.pairs}  # fmt: skip


def collect(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Rebuilds results.json and search_summary.md in `--out` from every arm's finished runs and retrains there;
    prints the summary."""
    from menas.files import write_json

    out = Path(args.out)
    networks: list[dict[str, Any]] = []
    generations: list[dict[str, Any]] = []
    missing, notes, totals = [], [], []
    lineage: dict[str, dict[str, list[dict[str, Any]]]] = {arm: {} for arm in ARMS}  # parent-child pairs per run
    for arm, seed, run_budget, folder in runs(out):  # every arm's runs there, whatever --arms ran this time
        status, trials, total = read_run(folder)
        if status != "finished":
            notes.append(f"{folder.name}: search {status}, left out")
            continue
        generations += [{**row, "budget_macs": run_budget} for row in generation_rows(arm, seed, trials)]
        lineage[arm][folder.name] = heritability.run_pairs(heritability.rows_from_trials(trials))
        totals.append({"arm": arm, "seed": seed, "budget_macs": run_budget, **total})
        for budget in args.budgets if run_budget is None else [run_budget]:
            trial = choose(trials, budget)
            if trial is None:
                missing.append({"arm": arm, "seed": seed, "budget_macs": budget, "why": "no network <= budget"})
                notes.append(f"{folder.name}: no network at <= {_m(budget)} MACs")
                continue
            result = out / "jobs" / searched_job(arm, seed, trial, args.epochs, run_budget).folder / refs.RESULT_FILE
            if not result.is_file():
                missing.append({"arm": arm, "seed": seed, "budget_macs": budget, "why": "not retrained"})
                notes.append(f"{folder.name}: trial {trial.trial_id} (<= {_m(budget)}) not retrained yet")
                continue
            record = json.loads(result.read_text())
            networks.append(network_row(record, trial, budget, str(Path("runs") / folder.name)))
    path = out / "results.json"
    previous = json.loads(path.read_text()) if path.is_file() else None
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": command, **refs.git_state(),
            "base": str(BASE.relative_to(ROOT)), "arms": ARMS,
            "smoke": args.smoke, "search_set": args.search_set,
            "budgets": list(args.budgets), "budgets_from": args.budgets_from, "retrain_epochs": args.epochs,
            "recipe": args.recipe, "data": args.data, "retrain_overrides": args.set, "threads": args.threads,
            "chosen_by": CHOSEN_BY, "runs": totals, "without_network": missing,
            "note": "seconds are wall time on a possibly shared machine"}  # fmt: skip
    results = merge_results(previous, networks, generations, meta, tuple(ARMS))
    reference_rows = [n for n in reference_results(args, results)["networks"] if n.get("arm") == refs.ARM]
    summary = summarize(networks, generations, args.budgets, reference_rows)
    summary["selection"] = selection(lineage)
    results["meta"]["search"]["summary"] = summary
    write_json(path, results)
    text = summary_text(summary, notes=notes)
    (out / "search_summary.md").write_text(text + "\n")
    print(text)
    return results


def reference_results(args: argparse.Namespace, merged: dict[str, Any] | None = None) -> dict[str, Any]:
    """The references' results.json: `--references` when given, else `merged` (or `--out`'s results.json)."""
    if args.references:
        return json.loads(Path(args.references).read_text())
    if merged is not None:
        return merged
    path = Path(args.out) / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {"networks": []}


# --------------------------------------------------------------------------------------------- running


def search_overrides(arm: str, seed: int, args: argparse.Namespace, budget: int | None = None) -> list[str]:
    """The `--set` assignments of one run on top of base.yaml: the arm's keys, the seed, the smoke setting's,
    the budget's MACs window (or `WIDE` for a wide run), the torch threads, then `--search-set`."""
    window = WIDE if budget is None else {"budget.macs_min": round(WINDOW * budget), "budget.macs_max": budget}
    keys = {**ARMS.get(arm, {"strategy.name": arm}), "seed": seed, **(SMOKE_SEARCH if args.smoke else {}),
            **window, "train.threads": args.threads}  # fmt: skip
    return [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in keys.items()] + list(args.search_set)  # fmt: skip


def run_folder(arm: str, seed: int, args: argparse.Namespace, budget: int | None = None) -> Path:
    """The search's run folder: `--out/runs/ARM-bBUDGET-sSEED` (`ARM-sSEED` for a wide run)."""
    return Path(args.out) / "runs" / (f"{arm}-s{seed}" if budget is None else f"{arm}-b{budget}-s{seed}")


def finished_search(arm: str, seed: int, args: argparse.Namespace, budget: int | None = None) -> Path | None:
    """--retrains-only: the search's run folder when that search has finished, else None (it is left alone: another
    process may be running it)."""
    folder = run_folder(arm, seed, args, budget)
    status = read_run(folder)[0] if (folder / "menas.sqlite").is_file() else "not started"
    if status == "finished":
        return folder
    refs._log(f"{folder.name}: search {status}; its retrain waits")
    return None


def run_search(arm: str, seed: int, args: argparse.Namespace, budget: int | None = None) -> Path:
    """Searches (or resumes, or skips when finished) `run_folder` with `python -m menas.cli` in a subprocess, its
    output appended to `--out/logs/FOLDER.log`."""
    out = Path(args.out)
    folder = run_folder(arm, seed, args, budget)
    if (folder / "menas.sqlite").is_file():
        status = read_run(folder)[0]
        if status == "finished":
            return folder
        command = ["resume", str(folder)]
        refs._log(f"{folder.name}: resume the search (status {status})")
    else:
        command = ["search", "--config", str(BASE), "--out", str(folder)]
        for assignment in search_overrides(arm, seed, args, budget):
            command += ["--set", assignment]
        refs._log(f"{folder.name}: search")
    tic = time.perf_counter()
    refs.run_menas_cli(command, out / "logs" / f"{folder.name}.log")
    refs._log(f"{folder.name}: search done, {time.perf_counter() - tic:.0f} s")
    return folder


def retrain_choices(
    arm: str, seed: int, folder: Path, args: argparse.Namespace, budgets: Sequence[float] | None = None
) -> None:
    """Retrains the network chosen at each budget (each distinct one once) with references.py's job code."""
    _, trials, _ = read_run(folder)
    chosen: dict[int, tuple[Any, list[float]]] = {}
    for budget in args.budgets if budgets is None else budgets:
        trial = choose(trials, budget)
        if trial is None:
            refs._log(f"{folder.name}: no network at <= {_m(budget)} MACs")
            continue
        chosen.setdefault(trial.trial_id, (trial, []))[1].append(budget)
    for trial, budgets in chosen.values():
        job = searched_job(arm, seed, trial, args.epochs, None if budgets is None else budgets[0])
        refs._log(f"{folder.name}: trial {trial.trial_id} (rung {trial.rung}, search-val {trial.final_score:.2f}, "
                  f"{_m(trial.final_macs)} MACs) for <= {', '.join(_m(b) for b in budgets)}")  # fmt: skip
        try:
            refs.run_job(job, args)
        except FolderLocked as error:  # another process (a --retrains-only beside the searches) is training it
            refs._log(f"{folder.name}: trial {trial.trial_id} skipped: {error}")


def run_smoke_references(args: argparse.Namespace) -> None:
    """--smoke: two references at two seeds with the smoke recipe (references.py), unless already there."""
    argv = ["--out", args.out, "--epochs", str(args.epochs), "--seeds", "0", "1", "--networks", *SMOKE_REFERENCES,
            "--data", args.data, "--threads", str(args.threads)]  # fmt: skip
    for assignment in args.set:
        argv += ["--set", assignment]
    refs._log("smoke: the references, " + " ".join(argv))
    refs.main(argv)


# --------------------------------------------------------------------------------------------- arguments


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fills the recipe (--epochs, --recipe, --data, --set) from the smoke setting, then the references' meta, then
    the defaults; refuses a recipe that differs from the references'. Sets the budgets and where they came from."""
    if args.smoke:
        args.out = args.out or tempfile.mkdtemp(prefix="versus-search-smoke-")
        args.seeds = args.seeds or [0]
        for key, value in SMOKE_RETRAIN.items():
            setattr(args, key, getattr(args, key) if getattr(args, key) is not None else value)
    if not args.out:
        parser.error("--out is required (except with --smoke)")
    args.seeds = args.seeds if args.seeds is not None else [0, 1, 2, 3, 4]
    meta: dict[str, Any] = {}
    source = Path(args.references) if args.references else Path(args.out) / "results.json"
    if source.is_file():
        meta = json.loads(source.read_text()).get("meta", {})
    elif args.references:
        parser.error(f"--references: {source} does not exist")
    given = {"epochs": meta.get("reference_epochs"), "recipe": meta.get("recipe"), "data": meta.get("data"),
             "set": meta.get("overrides")}  # fmt: skip
    defaults = {"epochs": refs.DEFAULT_EPOCHS, "recipe": "short", "data": "fashion-mnist", "set": []}
    for key, default in defaults.items():
        mine, theirs = getattr(args, key), given[key]
        if mine is not None and theirs is not None and mine != theirs:
            parser.error(f"--{key}: {mine!r}, but the references in {source} were retrained with {theirs!r}; "
                         "the searched networks get the same recipe")  # fmt: skip
        setattr(args, key, mine if mine is not None else theirs if theirs is not None else default)
    if args.budgets:
        args.budgets_from = "--budgets"
    elif args.smoke:
        args.budgets, args.budgets_from = list(SMOKE_BUDGETS), "smoke"
    else:
        args.budgets, args.budgets_from = list(DEFAULT_BUDGETS), "defaults (32 px, 1 channel, 10 classes)"
        if args.references:
            rows = json.loads(Path(args.references).read_text()).get("networks", [])
            macs = {r["name"]: r["macs"] for r in rows if r.get("arm") == refs.ARM}
            if all(name in macs for name in BUDGET_NETWORKS):
                args.budgets = [macs[name] for name in BUDGET_NETWORKS]
                args.budgets_from = f"{args.references}: {', '.join(BUDGET_NETWORKS)}"
            else:
                print(f"--references: not all of {', '.join(BUDGET_NETWORKS)} there; default budgets", flush=True)
    args.budgets = [round(b) for b in args.budgets]
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def _count(text: str) -> int:
    from menas.space.cost import parse_count

    return round(parse_count(text, "--budgets"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="results folder, shared with references.py (resumes it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="search seeds (default 0 1 2 3 4)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--references", default=None,
                        help="references.py's results.json: the budgets and the recipe come from it")  # fmt: skip
    parser.add_argument("--budgets", type=_count, nargs="+", default=None,
                        help="MACs budgets, e.g. 1.5M 2.1M 4.86M (default: the references')")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None, help="retrain epochs (default: the references')")
    parser.add_argument("--recipe", default=None, choices=("short", "paper"), help="retrain recipe (the references')")
    parser.add_argument("--data", default=None, help="retrain dataset (default: the references')")
    parser.add_argument("--root", default=None, help="dataset folder (default: the dataset's usual)")
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                        help="retrain override, as references.py's --set (default: the references')")  # fmt: skip
    parser.add_argument("--search-set", action="append", default=[], metavar="KEY=VALUE",
                        help="search config override for every run, e.g. executor.workers=1")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial and retrain (default 1)")
    parser.add_argument("--wide", action="store_true",
                        help="per arm and seed one search over base.yaml's MACs window")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="every step on a tiny setting into a temp --out")
    parser.add_argument("--collect-only", action="store_true", help="run nothing: rebuild results and summary")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--searches-only", action="store_true",
                      help="run the searches, retrain nothing (the recipe may be decided later)")  # fmt: skip
    only.add_argument("--retrains-only", action="store_true",
                      help="retrain the choices of the finished searches, start or resume no search (run it "
                           "beside a --searches-only process, as run.sh does)")  # fmt: skip
    return resolve(parser.parse_args(argv), parser)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/versus/search.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    refs._log(f"out {args.out}; budgets {', '.join(_m(b) for b in args.budgets)} ({args.budgets_from}); retrain "
              f"{args.recipe} {args.epochs} epochs on {args.data} {args.set}")  # fmt: skip
    if not args.collect_only:
        refs.preload()
        if args.smoke:
            run_smoke_references(args)
        for seed in args.seeds:  # seeds outermost: a cut benchmark has both arms at the same seeds
            for budget in [None] if args.wide else args.budgets:
                for arm in args.arms:
                    if args.retrains_only:
                        folder = finished_search(arm, seed, args, budget)
                    else:
                        folder = run_search(arm, seed, args, budget)
                    if folder is not None and not args.searches_only:
                        retrain_choices(arm, seed, folder, args, None if budget is None else [budget])
    collect(args, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
