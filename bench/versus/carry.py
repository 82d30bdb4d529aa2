"""Evidence v2 across sessions: carries the finished work of an ``--out`` folder through git, since between sessions
only committed files survive (``runs/`` is git-ignored, the machine is fresh).

``save`` copies from ``--out`` into ``--progress`` (default ``bench/results/versus/progress``, committed) everything
finished and small, and nothing else:

* every finished job folder (references.py's references, search.py's retrains of chosen networks; finished =
  ``versus.json`` exists): ``jobs/FOLDER/versus.json`` and ``job.json``, not the weights or ``retrain.ckpt``;
* every finished search (search.py's run folders, finished = the store's run status is "finished"):
  ``runs/NAME/menas.sqlite``, a consistent snapshot taken with SQLite's backup API (the WAL merged in, journal
  mode DELETE, vacuumed: one self-contained file), and ``runs/NAME/config.yaml``; not ``trials/`` (weights,
  tickets, checkpoints) nor the lock, the log or the WAL files;
* ``results.json``, so that ``search.py --references OUT/results.json`` finds its budgets and recipe before
  references.py has re-collected it.

It only reads ``--out``, so it may run while the benchmark still runs there; a file already in ``--progress`` with
the same content is left alone (no git churn). ``restore`` copies ``--progress`` back into a fresh ``--out``,
never over a file that is there. Then references.py and search.py, run with the same arguments, read every
finished job instead of training it, skip every finished search and choose its networks from the store alone (the
choice reads only the store's trial records; the retrain builds the chosen genome from scratch, no trial weights),
and go on with the rest. Unfinished work (a job without ``versus.json``, a search not finished) is not carried: the
next session does it again from the start.

Usage, at the end of a session (then commit ``bench/results/versus/progress``) and at the start of the next:
    python bench/versus/carry.py save --out runs/versus
    python bench/versus/carry.py restore --out runs/versus
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without installing

from menas.files import write_atomically  # noqa: E402
from menas.folders import CONFIG_FILE, STORE_FILE  # noqa: E402

PROGRESS = ROOT / "bench" / "results" / "versus" / "progress"
JOB_FILES = ("versus.json", "job.json")  # references.RESULT_FILE (the job is finished) and JOB_FILE
RESULTS_FILE = "results.json"


# --------------------------------------------------------------------------------------------- what is finished


def finished_jobs(out: Path) -> list[Path]:
    """The job folders under `out/jobs` whose result file exists (references.run_job writes it last)."""
    return sorted(p.parent for p in (out / "jobs").glob(f"*/{JOB_FILES[0]}"))


def finished_runs(out: Path) -> list[Path]:
    """The run folders under `out/runs` whose store says the search finished."""
    return sorted(p.parent for p in (out / "runs").glob(f"*/{STORE_FILE}") if run_status(p.parent) == "finished")


def run_status(folder: Path) -> str:
    """The run status a search's store records ("created", "running", "finished", ...), opened read-only."""
    from menas.search.store import Store

    with Store.open(folder, readonly=True) as store:
        return store.run_info().status


# --------------------------------------------------------------------------------------------- copying


def store_snapshot(source: Path, target: Path) -> None:
    """A self-contained copy of the SQLite file `source` at `target`: SQLite's backup API reads a consistent
    snapshot (committed WAL frames included) without writing to `source`; the copy is then switched to journal
    mode DELETE (opening it creates no -wal/-shm files beside it) and vacuumed (no free pages)."""
    src = sqlite3.connect(f"file:{quote(str(source))}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
        dst.execute("VACUUM")
    finally:
        dst.close()
        src.close()


def copy_if_changed(source: Path, target: Path) -> bool:
    """Copies `source` to `target` atomically unless `target` already holds the same bytes; whether it wrote."""
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return False
    write_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
    return True


def copy_if_missing(source: Path, target: Path) -> bool:
    """Copies `source` to `target` atomically unless `target` exists (a restore never replaces a file)."""
    if target.exists():
        return False
    write_atomically(target, lambda tmp: shutil.copyfile(source, tmp))
    return True


# --------------------------------------------------------------------------------------------- save, restore


def save_job(folder: Path, progress: Path) -> int:
    """A finished job's small files into `progress/jobs/FOLDER`; how many files it wrote."""
    written = 0
    for name in JOB_FILES:
        if (folder / name).is_file():
            written += copy_if_changed(folder / name, progress / "jobs" / folder.name / name)
    return written


def save_run(folder: Path, progress: Path) -> int:
    """A finished search's store snapshot and config into `progress/runs/NAME`; how many files it wrote."""
    target = progress / "runs" / folder.name
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp) / STORE_FILE
        store_snapshot(folder / STORE_FILE, snapshot)
        written = int(copy_if_changed(snapshot, target / STORE_FILE))
    if (folder / CONFIG_FILE).is_file():
        written += copy_if_changed(folder / CONFIG_FILE, target / CONFIG_FILE)
    return written


def save(out: Path, progress: Path) -> dict[str, int]:
    """Copies every finished job and search of `out` (and its results.json) into `progress`; only reads `out`.
    Returns counts: jobs, runs, files written."""
    jobs, runs = finished_jobs(out), finished_runs(out)
    written = sum(save_job(folder, progress) for folder in jobs)
    written += sum(save_run(folder, progress) for folder in runs)
    if (out / RESULTS_FILE).is_file():
        written += copy_if_changed(out / RESULTS_FILE, progress / RESULTS_FILE)
    return {"jobs": len(jobs), "runs": len(runs), "written": written}


def restore(progress: Path, out: Path) -> dict[str, int]:
    """Copies every file under `progress` to the same place under `out`, keeping any file already there.
    Returns counts: files copied, files kept."""
    copied = kept = 0
    for source in sorted(p for p in progress.rglob("*") if p.is_file()):
        if copy_if_missing(source, out / source.relative_to(progress)):
            copied += 1
        else:
            kept += 1
    return {"copied": copied, "kept": kept}


def sizes(progress: Path) -> list[tuple[str, int]]:
    """(folder relative to `progress`, bytes of its files) of every saved job and run, and the total."""
    rows = [(str(d.relative_to(progress)), sum(f.stat().st_size for f in d.iterdir() if f.is_file()))
            for kind in ("jobs", "runs") for d in sorted((progress / kind).glob("*")) if d.is_dir()]  # fmt: skip
    total = sum(f.stat().st_size for f in progress.rglob("*") if f.is_file())
    return [*rows, ("total", total)]


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "restore"), help="save: --out -> --progress; restore: back")
    parser.add_argument("--out", required=True, help="the benchmark's --out folder (references.py, search.py)")
    parser.add_argument("--progress", default=str(PROGRESS), help=f"the committed folder (default {PROGRESS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out, progress = Path(args.out), Path(args.progress)
    if args.action == "save":
        if not out.is_dir():
            raise SystemExit(f"{out}: no such folder")
        counts = save(out, progress)
        print(f"saved {counts['jobs']} finished jobs and {counts['runs']} finished searches of {out} into "
              f"{progress} ({counts['written']} files written, the rest unchanged)")  # fmt: skip
        for name, size in sizes(progress):
            print(f"  {name}: {size / 1024:.1f} KiB")
        return 0
    if not progress.is_dir():
        raise SystemExit(f"{progress}: nothing saved there")
    counts = restore(progress, out)
    print(f"restored {progress} into {out}: {counts['copied']} files copied, {counts['kept']} already there kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
