"""bench/bench_latency.py and bench/latency_refit.py on a tiny sample: the refit, measuring nothing, reproduces the
benchmark's own fit from its saved measurements, and a remeasure prints its line (timings here are noise; only the
arithmetic is checked)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import ROOT, load_script


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=True)  # fmt: skip
    return done.stdout


def _line(output: str, label: str) -> str:
    """The evaluation line of `label`, without its label."""
    (line,) = [x for x in output.splitlines() if x.startswith(label + ":")]
    return line.split(":", 1)[1]


def test_the_refit_reproduces_the_benchmarks_fit_from_its_saved_measurements(tmp_path: Path) -> None:
    results, table = tmp_path / "r.json", tmp_path / "t.json"
    bench = _run("bench_latency.py", "--space", "mobilenet3-ws", "--n", "8", "--runs", "3", "--warmup", "1",
                 "--in-chans", "1", "--table", str(table), "--out", str(results))  # fmt: skip
    record = json.loads(results.read_text())
    assert len(record["genomes"]) == 8 and all(g["measured_ms"] > 0 for g in record["genomes"])
    # --tables with the table itself: every block's median is its own entry, so the fit is the benchmark's
    refit = _run("latency_refit.py", "--results", str(results), "--table", str(table), "--regression", "none",
                 "--remeasure", "2", "--by-params", "--save-remeasure", str(tmp_path / "p1.json"),
                 "--tables", str(table))  # fmt: skip
    assert _line(refit, "table + overhead (none)") == _line(bench, "table + overhead")
    again = json.loads((tmp_path / "p1.json").read_text())["measured_ms"]
    assert len(again) == 2 and all(ms > 0 for ms in again)
    assert _line(refit, "MACs x factor") == _line(bench, "MACs x factor")
    assert "within +-10% of 2" in _line(refit, "measured again")
    by_params = _line(refit, "measured / table sum vs params")
    assert by_params.startswith(" Spearman ") and sum(int(n) for n in re.findall(r"n=(\d+)", by_params)) == 8


def test_median_of_takes_each_genomes_median_over_the_processes_that_measured_it(tmp_path: Path) -> None:
    refit = load_script("bench/latency_refit.py", "latency_refit")
    files = []
    for k, values in enumerate(([2.0, 5.0], [4.0, 6.0, 9.0])):  # the first covers 2 genomes, the second 3
        files.append(tmp_path / f"p{k}.json")
        files[-1].write_text(json.dumps({"measured_ms": values}))
    # genome 0: median(1, 2, 4) = 2; genome 1: median(1, 5, 6) = 5; genome 2: median(1, 9) = 5; genome 3: 1 alone
    assert refit.median_of([1.0, 1.0, 1.0, 1.0], [str(f) for f in files]) == [2.0, 5.0, 5.0, 1.0]
    # another bench_latency.py --out of the same genomes counts too; of other genomes it is refused
    ours = [{"genome": "a", "measured_ms": 1.0}, {"genome": "b", "measured_ms": 1.0}]
    other = tmp_path / "r2.json"
    other.write_text(
        json.dumps({"genomes": [{"genome": "a", "measured_ms": 3.0}, {"genome": "b", "measured_ms": 0.5}]})
    )
    assert refit.median_of([1.0, 1.0], [str(other), str(files[0])], ours) == [2.0, 1.0]
    with pytest.raises(SystemExit, match="other genomes"):
        refit.median_of([1.0], [str(other)], [{"genome": "z", "measured_ms": 1.0}])
