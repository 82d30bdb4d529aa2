"""Atomic writes: a reader sees the old file or the whole new one; a failed write leaves no temporary behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from menas.files import write_atomically, write_json


def test_write_json_round_trips_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    assert write_json(path, {"x": 1}) == path
    write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_text("old")

    def broken(tmp: Path) -> None:
        assert tmp.suffix == ".bin" and tmp.parent == tmp_path  # same folder, same suffix (format by extension)
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.bin"]
