"""Evidence v2, the reference arm (issue 20 item 5): what a user gets for free, hand-designed small networks
retrained with the one recipe the searched networks get.

Every network below is trained from scratch with `menas retrain`'s "short" recipe (`RetrainConfig.preset`) for
``--epochs`` epochs on the training split minus a class-balanced held-out 2%, through menas' own code
(`menas.winner.retrain`): the raw and the EMA weights are scored on the held-out part and the better is kept; the
test split is read once per network at the end and chooses nothing.

* Built from menas genomes (`menas.space.genome.REFERENCE_GENOMES`, menas' builder, `menas.winner.retrain.retrain`
  as `menas retrain GENOME` runs it; MACs from `menas.space.cost.count_cost`): mobilenetv3_small_100,
  mobilenetv3_large_100.
* Built by timm (``timm.create_model(name, pretrained=False, num_classes, in_chans)``, trained by
  `menas.winner.retrain.fit` with the same loaders and recipe; MACs counted at the input size with
  `torch.utils.flop_counter.FlopCounterMode`, FLOPs / 2, which equals menas' count on mobilenetv3_small_100):
  mobilenetv3_small_050/075, mobilenetv3_large_075, lcnet_050/075, mnasnet_small, tinynet_e.

``--seeds`` sets the training seed (`train.seed`: initialisation, dropout); the data split and order stay at
``data.seed`` 0, as in the evidence benchmark's retrain-noise measurements. ``--plateau-check`` also trains
mobilenetv3_small_100 for round(1.5 x epochs) epochs at the same seeds and reports the paired gain of held-out top-1
(the issue asks for < 0.3 points; the check sets the recipe's epochs, so the test split decides nothing: its gain is
listed beside). A held-out part of 2% is ~1,200 images, too few to tell 0.3 points: give the check a larger one
(``--set holdout_fraction=0.1``), the same for every network. Nothing is downloaded.

Resumable: each (arm, network, seed, epochs) is a folder ``--out/jobs/ARM-NAME-sSEED-eEPOCHS``; one whose
``versus.json`` exists is read, not trained again; an interrupted one resumes from its epoch checkpoint
(``retrain.ckpt``). Run the same command again after a stop. Jobs run one after another in this process
(``--workers N``: N processes), each on ``--threads`` torch threads (default 1).
Across sessions on fresh machines (only committed files survive): ``bench/versus/carry.py save --out OUT`` keeps
each finished job's ``versus.json`` and ``job.json`` in ``bench/results/versus/progress`` (commit it),
``carry.py restore --out OUT`` puts them back, and the same command then reads those jobs instead of training them;
an unfinished job starts over.

Output in ``--out``: ``results.json`` (``{"networks": [...], "generations": [], "plateau_check": ..., "meta": ...}``;
one entry per (network, seed): arm, seed, budget_macs, name, macs, params, test_top1, chosen_by and more; entries of
other arms already there, e.g. searched arms, and "generations" are kept) and ``table.md`` (the printed table:
test top-1 per seed, mean with a 95% t-interval over seeds, seconds per training epoch). ``--collect-only`` rebuilds
both from the finished folders.

Usage:
    PYTHONPATH=src python bench/versus/references.py --out runs/versus --epochs 10 --seeds 0 1 --plateau-check
    PYTHONPATH=src python bench/versus/references.py --out runs/versus --epochs 10 --collect-only
    PYTHONPATH=src python bench/versus/references.py --out /tmp/v --epochs 1 --seeds 0 \\
        --networks mobilenetv3_small_100 lcnet_050 --data synthetic --set data.input_size=16   # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever (pretrained=False besides)

#: The hand-designed references: name -> how it is built ("menas-genome" when menas has its genome, else "timm").
REFERENCES: dict[str, str] = {
    "mobilenetv3_small_050": "timm",
    "mobilenetv3_small_075": "timm",
    "mobilenetv3_small_100": "menas-genome",
    "mobilenetv3_large_075": "timm",
    "mobilenetv3_large_100": "menas-genome",
    "lcnet_050": "timm",
    "lcnet_075": "timm",
    "mnasnet_small": "timm",
    "tinynet_e": "timm",
}
ARM = "reference"
PLATEAU_NETWORK = "mobilenetv3_small_100"
PLATEAU_LIMIT = 0.3  # points of held-out top-1 that 1.5x the epochs may add at most (issue 20)
RESULT_FILE = "versus.json"  # a job folder's result: it exists = the job is finished
JOB_FILE = "job.json"  # what a job folder trains (checked on resume)
LOCK_FILE = "job.lock"  # held while a process trains the job (menas.files.FolderLock): two never train one job
DEFAULT_EPOCHS = 10


# --------------------------------------------------------------------------------------------- jobs


@dataclasses.dataclass(frozen=True)
class Job:
    """One network trained once: `genome` (a genome string, built by menas) or a timm model `name`."""

    arm: str
    name: str
    seed: int
    epochs: int
    built_by: str  # "menas-genome" | "timm"
    genome: str | None = None
    budget_macs: int | None = None
    chosen_by: str = "hand-designed"

    @property
    def folder(self) -> str:
        return f"{self.arm}-{self.name}-s{self.seed}-e{self.epochs}"


def reference_job(name: str, seed: int, epochs: int) -> Job:
    """A reference network's job: by its menas genome when there is one, else by timm."""
    from menas.space.genome import REFERENCE_GENOMES, Genome

    if name in REFERENCE_GENOMES:
        return Job(ARM, name, seed, epochs, "menas-genome", Genome.from_str(REFERENCE_GENOMES[name]).to_str())
    return Job(ARM, name, seed, epochs, "timm")


def plan(networks: list[str], seeds: list[int], epochs: int, plateau: bool) -> list[Job]:
    """The jobs in run order: with `plateau`, the plateau pair of the first seed first (it says early whether
    `epochs` is enough), then every network seed by seed, then the other seeds' long runs."""
    jobs: list[Job] = []
    long = plateau_epochs(epochs)
    if plateau:
        jobs += [reference_job(PLATEAU_NETWORK, seeds[0], epochs), reference_job(PLATEAU_NETWORK, seeds[0], long)]
    jobs += [reference_job(name, seed, epochs) for seed in seeds for name in networks]
    if plateau:
        jobs += [reference_job(PLATEAU_NETWORK, seed, long) for seed in seeds[1:]]
    return list(dict.fromkeys(jobs))  # each once, first place kept


def plateau_epochs(epochs: int) -> int:
    """round(1.5 x epochs), at least one more than `epochs`."""
    return max(epochs + 1, round(1.5 * epochs))


# --------------------------------------------------------------------------------------------- cost


def timm_model(name: str, num_classes: int, in_chans: int, dropout: float = 0.0, drop_path: float = 0.0) -> Any:
    """A freshly initialised timm model; never pretrained weights."""
    import timm

    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=dropout, drop_path_rate=drop_path
    )


def counted_cost(model: Any, input_size: int, in_chans: int) -> tuple[int, int]:
    """(MACs, params) of any torch model: FLOPs of one eval forward of a 1 x in_chans x size x size input counted by
    `torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products), halved."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------- one job


def recipe_for(args: argparse.Namespace, seed: int, epochs: int) -> Any:
    """The one recipe of every network: the named preset (`--recipe`, default "short") on `--data`, `--set`
    overrides, then the job's epochs, training seed and threads."""
    from menas.config import DataConfig, RetrainConfig, apply_override

    cfg = RetrainConfig.preset(args.recipe, DataConfig(dataset=args.data, root=args.root), epochs)
    for assignment in args.set or []:
        cfg = apply_override(cfg, assignment, "--set")
    train = dataclasses.replace(cfg.train, epochs=epochs, seed=seed, threads=args.threads)
    return dataclasses.replace(cfg, train=train)


def run_job(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """Trains (or resumes, or reads when finished) one job in `--out/jobs/FOLDER`; returns its versus.json record.
    Raises `menas.files.FolderLocked` when another process is training the same job (its lock file, LOCK_FILE)."""
    out = Path(args.out) / "jobs" / job.folder
    result = out / RESULT_FILE
    cfg = recipe_for(args, job.seed, job.epochs)
    identity = {**dataclasses.asdict(job), "recipe": _plain(cfg)}
    if (out / JOB_FILE).is_file():  # checked for a finished job too: a result of another recipe is never read as ours
        before = json.loads((out / JOB_FILE).read_text())
        if before != identity:
            raise SystemExit(f"{out}: holds a job of other settings ({out / JOB_FILE}); use the same ones or clear it")
    if result.is_file():
        return json.loads(result.read_text())
    out.mkdir(parents=True, exist_ok=True)
    from menas.files import FolderLock

    with FolderLock(out, " ".join(sys.argv), name=LOCK_FILE):  # FolderLocked when another process trains it
        return _train_job(job, args, cfg, identity, out)


def _train_job(job: Job, args: argparse.Namespace, cfg: Any, identity: dict[str, Any], out: Path) -> dict[str, Any]:
    """run_job's training, under the job folder's lock: writes job.json, trains (or resumes), writes versus.json."""
    import torch

    from menas.files import write_json

    result = out / RESULT_FILE
    if result.is_file():  # another process finished it between run_job's check and the lock
        return json.loads(result.read_text())
    torch.set_num_threads(args.threads)
    if not (out / JOB_FILE).is_file():
        write_json(out / JOB_FILE, identity)
    resumed = (out / "retrain.ckpt").is_file()
    _log(f"{job.folder}: {'resume' if resumed else 'train'} ({job.built_by}, {job.epochs} epochs, seed {job.seed})")
    tic = time.perf_counter()
    scores = _train_genome(job, cfg, out) if job.built_by == "menas-genome" else _train_timm(job, cfg, out)
    record = {
        "arm": job.arm,
        "seed": job.seed,
        "budget_macs": job.budget_macs,
        "name": job.name,
        "macs": scores.pop("macs"),
        "params": scores.pop("params"),
        "test_top1": scores["test"][scores["kept"]]["top1"],
        "chosen_by": job.chosen_by,
        "built_by": job.built_by,
        "genome": job.genome,
        "epochs": job.epochs,
        "holdout_top1": scores["holdout"][scores["kept"]]["top1"],
        "kept": scores["kept"],
        "test_top1_raw": scores["test"]["raw"]["top1"],
        "test_top1_ema": (scores["test"].get("ema") or {}).get("top1"),
        "seconds": scores["seconds"],
        "seconds_this_process": time.perf_counter() - tic,
        "train_seconds_per_epoch": scores["train_seconds_per_epoch"],
        "resumed_at": scores["resumed_at"],
        "history": scores["history"],
        "recipe": args.recipe,
        "threads": args.threads,
        "device": scores["device"],
        "folder": str(Path("jobs") / job.folder),
    }
    write_json(result, record)
    _log(f"{job.folder}: test top-1 {record['test_top1']:.2f}% ({record['kept']} kept), {record['seconds']:.0f} s")
    return record


def _train_genome(job: Job, cfg: Any, out: Path) -> dict[str, Any]:
    """`menas retrain GENOME` in process: menas' builder and count_cost, the retrain folder's files."""
    import torch

    from menas.space.genome import Genome
    from menas.winner.retrain import genome_source, retrain

    assert job.genome is not None
    record = retrain(genome_source(Genome.from_str(job.genome)), cfg, out, device=torch.device("cpu"))
    epochs = record["history"]["epochs"]
    return {
        "macs": record["macs"],
        "params": record["params"],
        "test": record["test"],
        "holdout": record["holdout"],
        "kept": record["kept"],
        "seconds": record["wall_seconds"],
        "train_seconds_per_epoch": statistics.fmean(e["train_seconds"] for e in epochs),
        "resumed_at": record["resumed_at"],
        "history": _short_history(epochs),
        "device": record["device"],
    }


def _train_timm(job: Job, cfg: Any, out: Path) -> dict[str, Any]:
    """A timm model trained by `menas.winner.retrain.fit` with the loaders and recipe `retrain` uses."""
    import torch

    from menas.data.splits import build_loaders
    from menas.train.loop import seed_trial
    from menas.winner.retrain import device_name, fit

    device = torch.device("cpu")
    data = build_loaders(
        cfg.data, device, mode="retrain", holdout_fraction=cfg.holdout_fraction, channels_last=cfg.train.channels_last
    )
    seed_trial(cfg.train.seed)  # as retrain: the model is built right after seeding
    model = timm_model(job.name, data.num_classes, data.in_chans, cfg.dropout, cfg.drop_path)
    macs, params = counted_cost(model, data.input_size, data.in_chans)
    outcome = fit(model, data, cfg.train, out)
    scores = {
        split: {name: {key: value[key] for key in ("top1", "top5", "loss", "images")} for name, value in part.items()}
        for split, part in (("test", outcome.test), ("holdout", outcome.holdout))
    }
    epochs = outcome.history.to_dict()["epochs"]
    return {
        "macs": macs,
        "params": params,
        **scores,
        "kept": outcome.kept,
        "seconds": outcome.wall_seconds,
        "train_seconds_per_epoch": statistics.fmean(e["train_seconds"] for e in epochs),
        "resumed_at": outcome.history.resumed_at,
        "history": _short_history(epochs),
        "device": device_name(device),
    }


def _short_history(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("epoch", "train_loss", "val_top1", "train_seconds", "eval_seconds")
    return [{key: e.get(key) for key in keys} for e in epochs]


def _plain(cfg: Any) -> Any:
    from menas.config import to_dict

    return json.loads(json.dumps(to_dict(cfg)))


def run_menas_cli(command: list[str], log: Path) -> None:
    """Runs `python -m menas.cli COMMAND` from this checkout in a subprocess, its output appended to `log`; a
    failure ends the benchmark with the log's last lines."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    with log.open("a") as handle:
        handle.write(f"\n$ {sys.executable} -m menas.cli {' '.join(command)}\n")
        handle.flush()
        rc = subprocess.run([sys.executable, "-m", "menas.cli", *command], stdout=handle, stderr=subprocess.STDOUT,
                            env=env, check=False).returncode  # fmt: skip
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"{log.stem}: `menas {command[0]}` exited with {rc} (log {log}):\n{tail}")


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --------------------------------------------------------------------------------------------- statistics

#: Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the two-sided 95% t-interval); the half-width is None for fewer than 2 values."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    df = len(values) - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.960
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))


# --------------------------------------------------------------------------------------------- collecting


def finished_records(out: Path) -> list[dict[str, Any]]:
    """Every finished job's versus.json under `out/jobs`, in folder order."""
    return [json.loads(p.read_text()) for p in sorted((out / "jobs").glob(f"*/{RESULT_FILE}"))]


def network_entries(records: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """The results.json "networks" entries of the reference arm at `epochs` (the plateau's long runs left out),
    in REFERENCES order then seed; without the per-epoch history (in each job's versus.json)."""
    order = {name: i for i, name in enumerate(REFERENCES)}
    rows = [
        {k: v for k, v in r.items() if k != "history"} for r in records if r["arm"] == ARM and r["epochs"] == epochs
    ]
    return sorted(rows, key=lambda r: (order.get(r["name"], len(order)), r["name"], r["seed"]))


def plateau_summary(records: list[dict[str, Any]], epochs: int) -> dict[str, Any] | None:
    """The paired held-out top-1 gain of PLATEAU_NETWORK from `epochs` to plateau_epochs(epochs), per seed present at
    both; None when no seed has both. The check decides the recipe's epochs, so it reads the held-out part of the
    training split, never the test split; the test gain is listed beside it, deciding nothing."""
    long = plateau_epochs(epochs)
    runs = {(r["epochs"], r["seed"]): r for r in records if r["arm"] == ARM and r["name"] == PLATEAU_NETWORK}
    pairs = [
        {"seed": seed, "holdout_top1": runs[(epochs, seed)]["holdout_top1"],
         "holdout_top1_long": runs[(long, seed)]["holdout_top1"],
         "gain": runs[(long, seed)]["holdout_top1"] - runs[(epochs, seed)]["holdout_top1"],
         "test_gain": runs[(long, seed)]["test_top1"] - runs[(epochs, seed)]["test_top1"]}
        for (e, seed) in sorted(runs) if e == epochs and (long, seed) in runs
    ]  # fmt: skip
    if not pairs:
        return None
    mean, half = t_interval([p["gain"] for p in pairs])
    return {
        "network": PLATEAU_NETWORK,
        "epochs": epochs,
        "long_epochs": long,
        "decided_on": "held-out top-1",
        "pairs": pairs,
        "mean_gain": mean,
        "ci95_half_width": half,
        "mean_test_gain": statistics.fmean(p["test_gain"] for p in pairs),
        "limit": PLATEAU_LIMIT,
        "mean_gain_below_limit": mean < PLATEAU_LIMIT,
    }


def build_results(
    records: list[dict[str, Any]], epochs: int, meta: dict[str, Any], previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """results.json: the reference arm's entries from `records`, plus the other arms' entries and the
    "generations" of `previous` (the file as it was), so searched arms appended there are kept."""
    previous = previous or {}
    others = [n for n in previous.get("networks", []) if n.get("arm") != ARM]
    return {
        "networks": network_entries(records, epochs) + others,
        "generations": previous.get("generations", []),
        "plateau_check": plateau_summary(records, epochs),
        "meta": {**previous.get("meta", {}), **meta},
    }


def table(results: dict[str, Any]) -> str:
    """The markdown table: one row per (arm, network), test top-1 per seed, mean with a 95% t-interval."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for n in results["networks"]:
        groups.setdefault((n["arm"], n["name"]), []).append(n)
    lines = ["| arm | network | built by | params | MACs | test top-1 per seed | mean (95% t-interval) | s/epoch |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (arm, name), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["seed"])
        mean, half = t_interval([r["test_top1"] for r in rows])
        per_seed = " / ".join(f"{r['test_top1']:.2f} (s{r['seed']})" for r in rows)
        ci = f"{mean:.2f} ± {half:.2f}" if half is not None else f"{mean:.2f} (1 seed)"
        epoch_s = statistics.fmean(r.get("train_seconds_per_epoch") or math.nan for r in rows)
        lines.append(f"| {arm} | {name} | {rows[0].get('built_by', '-')} | {rows[0]['params'] / 1e6:.2f}M "
                     f"| {rows[0]['macs'] / 1e6:.2f}M | {per_seed} | {ci} | {epoch_s:.0f} |")  # fmt: skip
    plateau = results.get("plateau_check")
    if plateau:
        half = plateau["ci95_half_width"]
        ci = f" ± {half:.2f}" if half is not None else ""
        gains = ", ".join(f"{p['gain']:+.2f} (s{p['seed']})" for p in plateau["pairs"])
        verdict = "below" if plateau["mean_gain_below_limit"] else "NOT below"
        lines += ["", f"Plateau check: {plateau['network']} at {plateau['long_epochs']} against "
                  f"{plateau['epochs']} epochs, paired held-out top-1 gain {gains}; mean {plateau['mean_gain']:+.2f}"
                  f"{ci} points (95% t), {verdict} the {plateau['limit']} limit (test top-1 gain, deciding nothing: "
                  f"{plateau['mean_test_gain']:+.2f})."]  # fmt: skip
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """lscpu's model name, the vector-extension flags that matter, cores available, torch and timm versions."""
    model, flags = platform.processor() or "?", []
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("Flags"):
                flags = sorted({f for f in line.split()[1:] if f.startswith(("avx", "amx", "fma", "sse4", "f16c"))})
    except OSError:
        pass
    import timm
    import torch

    return {"cpu": model, "cpu_flags": " ".join(flags), "cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}  # fmt: skip


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether its tracked files differ from it (read-only git commands)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)  # fmt: skip
    except OSError:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": head.stdout.strip() or None, "git_dirty": bool(dirty.stdout.strip())}


def collect(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Writes results.json and table.md in `--out` from the finished job folders; returns the results."""
    from menas.files import write_json

    out = Path(args.out)
    path = out / "results.json"
    previous = json.loads(path.read_text()) if path.is_file() else None
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), **machine(), "command": command, **git_state(),
            "reference_epochs": args.epochs, "recipe": args.recipe, "data": args.data, "overrides": args.set or [],
            "threads": args.threads, "workers": args.workers,
            "note": "seconds are wall time on a possibly shared machine"}  # fmt: skip
    results = build_results(finished_records(out), args.epochs, meta, previous)
    write_json(path, results)
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)
    return results


# --------------------------------------------------------------------------------------------- main


def _run_one(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    return run_job(job, args)


def preload() -> None:
    """Imports every module the jobs use now, so that a run of hours uses the code it started with."""
    import timm  # noqa: F401
    import torch  # noqa: F401

    import menas.data.splits
    import menas.files
    import menas.space.genome
    import menas.train.loop
    import menas.winner.retrain  # noqa: F401


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results folder (resumes what is there)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--networks", nargs="+", default=list(REFERENCES), help="subset of the references")
    parser.add_argument("--plateau-check", action="store_true",
                        help=f"also {PLATEAU_NETWORK} at round(1.5 x epochs), same seeds: the paired gain")  # fmt: skip
    parser.add_argument("--data", default="fashion-mnist", help="dataset (default fashion-mnist)")
    parser.add_argument("--root", default=None, help="dataset folder (default: the dataset's usual)")
    parser.add_argument("--recipe", default="short", choices=("short", "paper"), help="retrain recipe (short)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override for every network")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="jobs side by side, one process each (default 1)")
    parser.add_argument("--collect-only", action="store_true", help="train nothing: tabulate the finished folders")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.threads < 1 or args.workers < 1:
        parser.error("--epochs, --threads and --workers must be >= 1")
    unknown = [n for n in args.networks if n not in REFERENCES]
    if unknown:
        parser.error(f"--networks: unknown {', '.join(unknown)}; allowed: {', '.join(REFERENCES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/versus/references.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        preload()
        jobs = plan(args.networks, args.seeds, args.epochs, args.plateau_check)
        _log(f"{len(jobs)} jobs: {', '.join(j.folder for j in jobs)}")
        if args.workers == 1:
            for job in jobs:
                run_job(job, args)
        else:
            import multiprocessing

            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                list(pool.map(_run_one, jobs, [args] * len(jobs)))
    collect(args, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
