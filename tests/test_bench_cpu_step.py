"""bench/bench_cpu_step.py runs a variant in its own process and writes its row (timings here are noise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scripts import ROOT


def test_one_variant_writes_its_row(tmp_path: Path) -> None:
    out = tmp_path / "step.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "bench" / "bench_cpu_step.py"), "--variants", "channels_last", "--steps",
               "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=True)
    assert done.stdout.startswith("channels_last: ") and " ms/step" in done.stdout
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    assert row["variant"] == "channels_last" and row["step_ms"] > 0 and row["images_per_s"] > 0
    assert record["meta"]["command"].startswith("python bench/bench_cpu_step.py --variants channels_last")
