"""Behaviour pinned across refactors: four tiny seeded searches must give the store contents recorded in
`tests/data/pinned_search.json` (see `pinned.py`), on the kind of CPU that recorded them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinned import GOLDEN, cpu_capability, run_all


@pytest.mark.slow
def test_seeded_searches_give_the_pinned_store_contents(tmp_path: Path) -> None:
    golden = json.loads(GOLDEN.read_text())
    if golden["cpu_capability"] != cpu_capability():
        pytest.skip(f"pinned on {golden['cpu_capability']!r}, this CPU is {cpu_capability()!r}")
    runs = run_all(tmp_path)
    assert runs.keys() == golden["runs"].keys()
    for name, rows in runs.items():
        assert json.loads(json.dumps(rows)) == golden["runs"][name], name
