"""What a seeded search must keep giving across refactors: the store's content of four tiny searches (in-process,
resumed after a crash, in a pool, inheriting) less what varies between runs (times, worker names, paths).

`python tests/pinned.py` rewrites `tests/data/pinned_search.json` (only when a change is meant to change results);
`test_pinned.py` compares. Float arithmetic differs between CPU instruction sets, so the file records the torch
CPU capability it was made with and the comparison is skipped on another one.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "pinned_search.json"

#: Columns whose values differ between identical runs: clocks, durations, the worker's host:pid, absolute paths.
VOLATILE = {
    "queued_at", "started_at", "finished_at", "train_s", "lottery_s", "eval_s", "finetune_s", "epoch_s",
    "train_epoch_s", "finetune_epoch_s", "worker", "checkpoint", "weights", "attempts", "error",
}  # fmt: skip


def snapshot(run_dir: Path) -> list[dict]:
    """Every trial row of the run's store as plain data, without the volatile columns, in trial_id order."""
    conn = sqlite3.connect(f"file:{run_dir / 'menas.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM trials ORDER BY trial_id").fetchall()
    finally:
        conn.close()
    # a Row iterates its values, not its keys
    trials = [{key: row[key] for key in row.keys() if key not in VOLATILE} for row in rows]  # noqa: SIM118
    for trial in trials:
        if trial.get("inherited"):
            inherited = json.loads(trial["inherited"])
            inherited.pop("seconds", None)
            trial["inherited"] = inherited
    return trials


def cpu_capability() -> str:
    """torch's CPU kernel level and the processor's model and family: what float results depend on."""
    import platform

    import torch

    model = family = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "cpu family" and not family:
                family = value.strip()
    return f"{torch.backends.cpu.get_cpu_capability()} {model or platform.processor()} family {family}"


def run_all(root: Path) -> dict[str, list[dict]]:
    """The four pinned searches, run under `root`."""
    import os

    import menas.prune.pipeline as pipeline_module
    from menas.config import ExecutorConfig
    from menas.search.engine import Search, load_run_config
    from test_search import tiny_config
    from test_search_inherit import inherit_config

    out: dict[str, list[dict]] = {}
    Search(tiny_config(), root / "plain").run()
    out["plain"] = snapshot(root / "plain")

    real_train = pipeline_module.train

    def crashing_train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, **kw):
        history = real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path, **kw)
        if Path(checkpoint_path).parent.name == "00004" and not os.environ.get("MENAS_PINNED_RESUMED"):
            raise KeyboardInterrupt
        return history

    pipeline_module.train = crashing_train
    try:
        with contextlib.suppress(KeyboardInterrupt):
            Search(tiny_config(), root / "resumed").run()
        os.environ["MENAS_PINNED_RESUMED"] = "1"
        Search(load_run_config(root / "resumed"), root / "resumed", resume=True).run()
    finally:
        pipeline_module.train = real_train
        os.environ.pop("MENAS_PINNED_RESUMED", None)
    out["resumed"] = snapshot(root / "resumed")

    Search(tiny_config(executor=ExecutorConfig(kind="pool", workers=2, threads=1)), root / "pool").run()
    out["pool"] = snapshot(root / "pool")
    Search(inherit_config(), root / "inherit").run()
    out["inherit"] = snapshot(root / "inherit")
    return out


if __name__ == "__main__":
    import tempfile

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_all(Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"cpu_capability": cpu_capability(), "runs": runs}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{name} {len(rows)} trials" for name, rows in runs.items()))
