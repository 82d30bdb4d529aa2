"""A run folder owns its paths: the store keeps them relative, so a moved run still works for every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import menas
from menas.cli.main import main
from menas.folders import RunFolder
from menas.search.engine import Search
from menas.search.store import Store
from menas.train.checkpoint import load_weights


def test_relative_and_resolve(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    weights = folder.trial(3).weights
    assert folder.relative(weights) == "trials/00003/model.safetensors"
    assert folder.relative(tmp_path / "elsewhere.safetensors") == str(tmp_path / "elsewhere.safetensors")
    assert folder.resolve("trials/00003/model.safetensors") == weights
    assert folder.resolve(None) is None and folder.resolve("") is None
    # an absolute path recorded before the run moved is found again in the trial's folder by its file name
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    assert folder.resolve("/old/place/trials/00003/model.safetensors", 3) == weights
    gone = "/old/place/trials/00003/model.safetensors"
    assert folder.resolve(gone) == Path(gone)  # no trial id: nothing to look for


@pytest.fixture
def moved_run(reference_run: Path, tmp_path: Path) -> Path:
    """The reference search, copied and then moved to another folder (the original place is gone)."""
    first = tmp_path / "first"
    shutil.copytree(reference_run, first)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(first, moved)
    assert not first.exists()
    return moved


def test_the_store_keeps_weights_relative_to_the_run(reference_run: Path) -> None:
    with Store.open(reference_run, readonly=True) as store:
        done = store.trials("done")
    assert done and all(t.weights == f"trials/{t.trial_id:05d}/model.safetensors" for t in done)


def test_a_moved_run_works_for_status_report_export_load_retrain_and_resume(
    moved_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(moved_run, readonly=True) as store:
        best = store.best()
    assert main(["status", str(moved_run)]) == 0
    assert best.final_genome in " ".join(capsys.readouterr().out.split())
    assert main(["report", str(moved_run)]) == 0
    assert (moved_run / "report" / "trials.csv").is_file()
    export = tmp_path / "export"
    assert main(["export", str(moved_run), "--out", str(export), "--format", "torchscript"]) == 0
    assert json.loads((export / "genome.json").read_text())["genome"] == best.final_genome
    model = menas.load(moved_run)
    expected = load_weights(RunFolder(moved_run).trial(best.trial_id).weights)
    assert torch.equal(model.classifier.weight, expected.classifier.weight)
    out = tmp_path / "retrained"
    assert main(["retrain", str(moved_run), "--epochs", "1", "--out", str(out), "--init", "trial",
                 "--threads", "1"]) == 0  # fmt: skip
    assert json.loads((out / "retrain.json").read_text())["trial_id"] == best.trial_id
    with Search(None, moved_run, resume=True) as search:
        assert search.pending == [] and search.strategy.finished  # nothing to train again
