"""bench/versus/run.sh's orchestration, with a stand-in for python that records each call: the references, the
searches and the retrains run side by side, the retrains pass again until the searches end, then two retrain
processes share what is left, and the last calls collect both summaries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/bash
# records its arguments; `search.py --searches-only` takes a while, as the searches do
echo "$*" >> "$CALLS"
case "$*" in
  *--searches-only*) sleep 3; echo "searches ended" >> "$CALLS" ;;
  *search.py*--retrains-only*) sleep 1; echo "retrains ended" >> "$CALLS" ;;
  *search.py*) touch "$OUT_DIR/search_summary.md" ;;
  *references.py*--collect-only*) touch "$OUT_DIR/table.md" ;;
esac
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_run_sh_retrains_beside_the_searches_until_they_end(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls, out = tmp_path / "calls.txt", tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PY": str(fake), "POLL": "1", "CALLS": str(calls), "OUT_DIR": str(out)}
    done = subprocess.run(["bash", str(ROOT / "bench/versus/run.sh"), str(out)], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    calls_made = [line for line in lines if not line.endswith(" ended")]
    script = [line.split()[0].rsplit("/", 1)[-1] + " " + _mode(line) for line in calls_made]
    assert script[:2] == ["carry.py restore", "references.py collect"]
    assert script[-4:] == [
        "search.py retrains",
        "references.py collect",
        "search.py all",
        "carry.py save",
    ]  # the trap's
    middle = script[2:-4]
    assert middle.count("references.py train") == 1 and middle.count("search.py searches") == 1
    passes = [i for i, line in enumerate(lines) if "--retrains-only" in line]
    ended = lines.index("searches ended")
    assert len(passes) >= 3 and passes[0] < ended  # retrains began while the searches ran ...
    last_two = passes[-2:]  # ... and once they ended, two passes ran side by side: both began before either ended
    assert ended < last_two[0] and "retrains ended" not in lines[last_two[0] + 1 : last_two[1]]
    assert all(" --out " + str(out) in " " + line for line in calls_made)


def _mode(line: str) -> str:
    """What a recorded call does, in a word."""
    for flag, word in (("--collect-only", "collect"), ("--searches-only", "searches"), ("--retrains-only",
                       "retrains"), ("restore", "restore"), ("save", "save")):  # fmt: skip
        if flag in line.split():
            return word
    return "train" if "references.py" in line else "all"
