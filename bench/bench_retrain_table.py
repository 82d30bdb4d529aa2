"""The searched network against hand-designed ones under one recipe (issue 9, BENCHMARKS.md "Retrain").

Retrains, from scratch with the same recipe, epochs, batch and input size, on the whole training split:

* ``winner``: the demo search's best network (a run folder, a genome string or a file holding one);
* ``mobilenetv3_small_100`` and ``mobilenetv3_large_100``: timm's hand-designed networks, built from their genomes
  (`menas.space.genome.REFERENCE_GENOMES`, the same builder as every searched network);
* ``winner-kd``: the winner again, distilled from the better of the two hand-designed networks on held-out data
  (`pick_teacher`: the held-out top-1 of each retrain's kept weights; the test split decides nothing).

Every arm is one `menas retrain` command in its own folder under ``--out``: an arm whose ``retrain.json`` exists is
read, not run again, and an interrupted arm resumes from its epoch checkpoint (run the same command again). The
hand-designed arms may run side by side (``--parallel``) on one GPU, whose small-network training is bound by
kernel launches, not by the GPU; each arm's wall time is then measured while sharing it (the table says so).

Prints the table (markdown) and writes ``table.md`` and ``results.json`` (without the per-epoch histories, which
stay in each arm's ``retrain.json``; with the held-out scores the teacher was chosen by) to ``--out``.

Usage:
    python bench/bench_retrain_table.py --winner runs/demo --epochs 30 --out runs/retrain-table
    python bench/bench_retrain_table.py --winner runs/demo --epochs 1 --data digits --out /tmp/rt   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from menas.space.genome import REFERENCE_GENOMES, Genome, parse_genome_arg

REFERENCES = ("mobilenetv3_small_100", "mobilenetv3_large_100")
RETRAIN_FILE = "retrain.json"


def winner_genome(spec: str) -> str:
    """The winner's genome string from a run folder (its best trial, the store's ranking), a genome string or a
    file holding one."""
    path = Path(spec)
    if path.is_dir():
        from menas.winner.load import find_network

        return find_network(path, need_weights=False).genome.to_str()
    return parse_genome_arg(spec).to_str()


def retrain_command(args: argparse.Namespace, genome: str, out: Path, teacher: Path | None) -> list[str]:
    """The `menas retrain` command line of one arm: the recipe and its overrides are the same for every arm."""
    cmd = [sys.executable, "-m", "menas.cli", "retrain", genome, "--data", args.data, "--epochs", str(args.epochs),
           "--out", str(out), "--recipe", args.recipe, "--device", args.device,
           "--set", f"data.batch_size={args.batch}"]  # fmt: skip
    for item in args.set or []:
        cmd += ["--set", item]
    if args.root:
        cmd += ["--root", args.root]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if teacher is not None:
        cmd += ["--teacher", str(teacher)]
    return cmd


def run_arm(args: argparse.Namespace, name: str, genome: str, teacher: Path | None = None) -> dict[str, Any]:
    """Runs (or resumes) one arm unless its result exists, and returns its retrain.json record."""
    out = Path(args.out) / name
    result = out / RETRAIN_FILE
    if not result.is_file():
        out.mkdir(parents=True, exist_ok=True)
        cmd = retrain_command(args, genome, out, teacher)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd[2:])}", flush=True)
        with open(out.parent / f"{name}.log", "a") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
        if code != 0 or not result.is_file():
            raise SystemExit(f"{name}: menas retrain exited with {code}; see {out.parent / (name + '.log')}")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: done", flush=True)
    return json.loads(result.read_text())


def held_out_top1(name: str, record: Mapping[str, Any]) -> float:
    """The held-out top-1 of the weights a retrain kept (the weights a teacher loads from its folder): the
    ``holdout`` part of its retrain.json, scored on the share of the training split that the retrain held out.
    Never a test score. A record without one is an error: there is no fallback to another split."""
    kept = record.get("kept")
    score = (record.get("holdout") or {}).get(kept) or {}
    if score.get("top1") is None:
        raise ValueError(f"{name}: its retrain.json has no held-out top-1 of its kept ({kept}) weights; "
                         "the teacher is chosen on held-out data only")  # fmt: skip
    return float(score["top1"])


def pick_teacher(records: Mapping[str, Mapping[str, Any]]) -> str:
    """The distillation teacher among the trained candidates (name -> retrain.json record): the one whose kept
    weights score the highest held-out top-1 (`held_out_top1`); a tie goes to the candidate listed first. Test
    scores are not read: the test split decides nothing, not a teacher."""
    if not records:
        raise ValueError("no candidate teachers")
    return max(records, key=lambda name: held_out_top1(name, records[name]))


def summary(name: str, record: dict[str, Any], shared: int) -> dict[str, Any]:
    """One table row from a retrain.json record."""
    test = record["test"]
    return {
        "arm": name,
        "genome": record["genome"],
        "params": record["params"],
        "macs": record["macs"],
        "epochs": record["epochs"],
        "test_top1_raw": test["raw"]["top1"],
        "test_top1_ema": test["ema"]["top1"] if test.get("ema") else None,
        "test_top5_raw": test["raw"]["top5"],
        "kept": record["kept"],
        "wall_seconds": record["wall_seconds"],
        "images_per_s": record["images_per_s"],
        "device": record["device"],
        "teacher": record.get("teacher"),
        "arms_sharing_device": shared,
        "resumed_at": record.get("resumed_at"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of BENCHMARKS.md."""
    lines = ["| network | params | MACs | test top-1 raw | test top-1 EMA | test top-5 raw | wall (s) | img/s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        ema = "-" if r["test_top1_ema"] is None else f"{r['test_top1_ema']:.2f}%"
        shared = f" ({r['arms_sharing_device']} arms sharing the device)" if r["arms_sharing_device"] > 1 else ""
        lines.append(f"| {r['arm']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.2f}M | {r['test_top1_raw']:.2f}% "
                     f"| {ema} | {r['test_top5_raw']:.2f}% | {r['wall_seconds']:.0f}{shared} "
                     f"| {r['images_per_s']:,.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--winner", required=True, help="run folder, genome string or file: the searched network")
    parser.add_argument("--epochs", type=int, required=True, help="epochs of every arm")
    parser.add_argument("--out", required=True, help="results folder (resumes what is there)")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--root", default=None, help="dataset folder (default: the dataset's usual)")
    parser.add_argument("--recipe", default="paper", choices=("paper", "short"))
    parser.add_argument("--batch", type=int, default=256, help="training batch of every arm (lr scales with it)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override for every arm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=1, help="arms run side by side before the distilled one")
    parser.add_argument("--no-kd", action="store_true", help="skip the distilled winner")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    arms = {"winner": winner_genome(args.winner)}
    arms.update({name: Genome.from_str(REFERENCE_GENOMES[name]).to_str() for name in REFERENCES})
    shared = min(args.parallel, len(arms))
    with ThreadPoolExecutor(max_workers=shared) as pool:
        records = dict(zip(arms, pool.map(lambda item: run_arm(args, *item), arms.items()), strict=True))
    rows = [summary(name, record, shared) for name, record in records.items()]
    teacher_choice = None
    if not args.no_kd:
        candidates = {name: records[name] for name in REFERENCES}
        best = pick_teacher(candidates)
        teacher_choice = {"rule": "highest held-out top-1 of the kept weights (never the test split)",
                          "held_out_top1": {name: held_out_top1(name, r) for name, r in candidates.items()},
                          "teacher": best}  # fmt: skip
        record = run_arm(args, "winner-kd", arms["winner"], teacher=Path(args.out) / best)
        rows.append(summary(f"winner-kd (teacher: {best})", record, 1))
    text = table(rows)
    print(text)
    Path(args.out, "table.md").write_text(text + "\n")
    results = {"command": " ".join(sys.argv), "epochs": args.epochs, "recipe": args.recipe, "batch": args.batch,
               "overrides": args.set or [], "teacher_choice": teacher_choice, "rows": rows}  # fmt: skip
    Path(args.out, "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
