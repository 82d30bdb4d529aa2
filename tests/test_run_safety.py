"""Run safety (issue 11, items 1-7 and 10): the lottery scores on the split the network was trained against,
checkpoints know their network, one process per run folder, the store's config is the run's config, a run that
stops is never left "running", a resumed run is judged by its own trials, failed trials keep their traceback, and
the search's own process never builds data loaders."""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from menas.cli.main import main
from menas.config import DataConfig, StrategyConfig, TrainConfig, to_dict
from menas.data import splits as data_module
from menas.data.datasets import dataset_shape
from menas.data.splits import build_loaders
from menas.errors import TrialFailed, UserError
from menas.files import FolderLock, FolderLocked
from menas.nn.builder import build_model
from menas.prune import pipeline as pipeline_module
from menas.search import store as store_module
from menas.search import trial as trial_module
from menas.search.engine import Search, SearchStopped, format_traceback, load_run_config
from menas.search.store import Store
from menas.search.strategies import SearchExhausted
from menas.space.genome import Genome
from menas.train.loop import train
from test_data import write_cifar, write_fashion, write_folder
from test_diagnose_cli import DATA, GENOME
from test_search import tiny_config

#: GENOME with one activation changed: the same weight shapes, another network.
OTHER = GENOME.replace("ir_k3_s2_m96_c40_hs", "ir_k3_s2_m96_c40_re")


# --------------------------------------------------------------------------------------------- 1: lottery's data seed


def test_lottery_scores_on_the_split_the_network_was_trained_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`menas train --seed 1` then a plain `menas lottery`: the recorded data seed (and so the same search-val
    split) is used, not --seed's old default 0; an explicit --seed still overrides it."""
    out = tmp_path / "trained"
    assert main(["train", GENOME, *DATA, "--epochs", "1", "--seed", "1", "--out", str(out)]) == 0
    recorded = json.loads((out / "run.json").read_text())
    seen: list[tuple[int, str]] = []

    def spy(cfg, *args, **kw):
        data = build_loaders(cfg, *args, **kw)
        seen.append((cfg.seed, data.split_digest))
        return data

    monkeypatch.setattr(data_module, "build_loaders", spy)
    lottery = ["lottery", str(out), "-P", "2", "--score-images", "64", "--threads", "1"]
    assert main(lottery) == 0
    assert [seed for seed, _ in seen] == [1]
    assert seen[0][1] == recorded["split_digest"]
    assert main([*lottery, "--seed", "2", "--proposal-seed", "5"]) == 0
    assert seen[1][0] == 2 and seen[1][1] != recorded["split_digest"]


# --------------------------------------------------------------------------------------------- 2: checkpoint identity


@pytest.fixture(scope="module")
def small_data():
    cfg = DataConfig(dataset="synthetic", input_size=16, search_train_fraction=0.05, search_val_fraction=0.02,
                     batch_size=50)  # fmt: skip
    return build_loaders(cfg, "cpu")


def _train(genome: str, data, path: Path, **kw):
    model = build_model(Genome.from_str(genome), 10, 1)
    cfg = TrainConfig(epochs=1, threads=1, optimizer="sgd", lr=0.05, warmup_epochs=0.0)
    return train(model, data.train, data.val, cfg, checkpoint_path=path, **kw)


def test_a_checkpoint_of_another_genome_or_trial_is_refused(small_data, tmp_path: Path) -> None:
    """Genomes A and B differ only in an activation, so A's weights would load into B without complaint."""
    path = tmp_path / "train.ckpt"
    _train(GENOME, small_data, path, owner={"trial_id": 1})
    before = path.read_bytes()
    with pytest.raises(UserError, match="belongs to genome .*_hs.* not to genome .*_re") as info:
        _train(OTHER, small_data, path, owner={"trial_id": 1})
    assert Genome.from_str(GENOME).to_str() in str(info.value) and Genome.from_str(OTHER).to_str() in str(info.value)
    with pytest.raises(UserError, match=r"\(trial_id 1\), not to genome .*\(trial_id 2\)"):
        _train(GENOME, small_data, path, owner={"trial_id": 2})
    assert path.read_bytes() == before
    assert _train(GENOME, small_data, path, owner={"trial_id": 1}).resumed_at == 1  # its own network resumes


def test_cli_train_over_another_networks_checkpoint_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["train", GENOME, *DATA, "--epochs", "1", "--out", str(out)]) == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["train", OTHER, *DATA, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "belongs to genome" in err and "--restart" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_search_into_a_folder_with_stale_trials_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / "trials" / "00000").mkdir(parents=True)
    (run / "trials" / "00000" / "train.ckpt").write_bytes(b"from an earlier run")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_config())))
    assert main(["search", "--config", str(config), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds trials/ from an earlier run but no menas.sqlite" in err
    assert not (run / "menas.sqlite").exists()
    assert (run / "trials" / "00000" / "train.ckpt").read_bytes() == b"from an earlier run"


# --------------------------------------------------------------------------------------------- 3: one process per run


def test_a_second_search_on_a_live_run_folder_names_the_holder(tmp_path: Path) -> None:
    """Another process holds the run's lock: resume refuses, naming its pid and command; once that process is
    killed (no clean-up), the kernel has dropped the lock and resume proceeds."""
    run = tmp_path / "run"
    Search(tiny_config(), run).close()
    code = ("import sys; from menas.files import FolderLock; lock = FolderLock(sys.argv[1], 'menas search --out x'); "
            "print('locked', flush=True); sys.stdin.read()")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"in use by pid {holder.pid} on .*\(menas search --out x, since"):
            Search(None, run, resume=True)
        with Store.open(run, readonly=True) as store:
            assert store.events("resume") == []  # refused before touching the store
    finally:
        holder.kill()
        holder.wait(timeout=30)
    Search(None, run, resume=True).close()


def test_the_lock_conflicts_inside_one_process_and_is_released(tmp_path: Path) -> None:
    search = Search(tiny_config(), tmp_path / "run")
    with pytest.raises(UserError, match=f"pid {os.getpid()}"):
        Search(None, tmp_path / "run", resume=True)
    search.close()
    with FolderLock(tmp_path / "run", "test"), pytest.raises(FolderLocked, match="in use by pid"):
        FolderLock(tmp_path / "run", "test")


def test_a_concurrent_create_fails_and_never_swaps_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process creates the store while this one builds its file: this create fails, the other's file and
    its open connection stay the store (os.replace would have put this one's file under the other's connection)."""
    target = tmp_path / "run"
    real_connect = store_module.connect
    other: list[Store] = []
    calls: list[str] = []

    def connect(path, mode):
        calls.append(mode)
        if calls == ["rwc"]:  # the first create is building its temporary file: the other one wins the race
            other.append(Store.create(target, {"who": "other"}))
        return real_connect(path, mode)

    monkeypatch.setattr(store_module, "connect", connect)
    with pytest.raises(FileExistsError, match="already exists"):
        Store.create(target, {"who": "this"})
    monkeypatch.undo()
    other[0].log_event("written_by_other")
    with Store.open(target, readonly=True) as store:
        assert store.config() == {"who": "other"} and [e.kind for e in store.events()] == ["written_by_other"]
    assert [p.name for p in target.iterdir() if "tmp" in p.name] == []
    other[0].close()


# --------------------------------------------------------------------------------------------- 4: one config


def _edit_config(run: Path, **changes: dict) -> None:
    text = yaml.safe_load((run / "config.yaml").read_text())
    for section, values in changes.items():
        text[section].update(values)
    (run / "config.yaml").write_text(yaml.safe_dump(text))


def test_resume_refuses_an_edited_config_and_names_the_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    Search(tiny_config(), run).close()
    _edit_config(run, train={"epochs": 2, "lr": 0.1})
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "config.yaml differs from the config the run started with" in err
    assert "train.epochs: 1 -> 2" in err and "train.lr: 0.05 -> 0.1" in err and "--accept-config-change" in err
    with Store.open(run, readonly=True) as store:
        assert store.run_info().status == "created" and store.config()["train"]["epochs"] == 1


def test_resume_uses_the_stored_config_or_an_accepted_change(tmp_path: Path) -> None:
    run = tmp_path / "run"
    Search(tiny_config(), run).close()
    (run / "config.yaml").unlink()
    with Search(None, run, resume=True) as search:  # no config.yaml: the store has it (and writes it back)
        assert search.cfg == tiny_config()
    assert load_run_config(run) == tiny_config()
    with Search(tiny_config(), run, resume=True) as search:
        assert search.cfg == tiny_config()
    edited = dataclasses.replace(tiny_config(), train=dataclasses.replace(tiny_config().train, epochs=2))
    with Search(edited, run, resume=True, accept_config_change=True) as search:
        assert search.cfg.train.epochs == 2
    with Store.open(run, readonly=True) as store:
        assert store.config()["train"]["epochs"] == 2
        (event,) = store.events("config_change")
        assert event.payload == {"changes": {"train.epochs": [1, 2]}}
    with Search(None, run, resume=True) as search:  # from now on the stored config is the changed one
        assert search.cfg == edited


# --------------------------------------------------------------------------------------------- 5: status on errors


def test_a_search_that_raises_is_marked_failed_with_its_traceback(tmp_path: Path) -> None:
    run = tmp_path / "run"
    search = Search(tiny_config(), run)

    def exhausted():
        raise SearchExhausted("no new genome within the budget")

    search.strategy.ask = exhausted
    with pytest.raises(SearchExhausted):
        search.run()
    with Store.open(run, readonly=True) as store:
        assert store.run_info().status == "failed"
        (event,) = store.events("search_failed")
    assert event.payload["error"] == "SearchExhausted: no new genome within the budget"
    assert "Traceback" in event.payload["traceback"] and "exhausted" in event.payload["traceback"]
    Search(None, run, resume=True).close()  # the lock went with the error


def test_ctrl_c_marks_the_run_interrupted(tmp_path: Path) -> None:
    search = Search(tiny_config(), tmp_path / "run")

    def interrupt():
        raise KeyboardInterrupt

    search.strategy.ask = interrupt
    with pytest.raises(KeyboardInterrupt):
        search.run()
    assert search.store.run_info().status == "interrupted"


# --------------------------------------------------------------------------------------------- 6: failure share


def test_a_run_stopped_by_failures_resumes_as_advised_once_the_cause_is_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """5 of 6 trials fail, the search stops and says `menas resume`; with the cause fixed, the resumed run is
    judged by its own trials (not the 5 old failures) and finishes."""

    def broken(*args, **kw):
        raise TrialFailed("loss became NaN at epoch 1 step 1")

    monkeypatch.setattr(pipeline_module, "train", broken)
    run = tmp_path / "run"
    cfg = tiny_config(strategy=StrategyConfig(population=6, generations=1, parents=2), max_failure_share=0.5)
    with pytest.raises(SearchStopped, match=rf"5 of 5 trials failed .*`menas resume( {run})?`"):
        Search(cfg, run).run()
    monkeypatch.undo()  # the cause is fixed
    assert main(["resume", str(run)]) == 0, capsys.readouterr().err
    with Store.open(run, readonly=True) as store:
        assert store.run_info().status == "finished"
        assert sorted(t.status for t in store.history()) == ["done"] + ["failed"] * 5
        assert len(store.events("search_stopped")) == 1


# --------------------------------------------------------------------------------------------- 7: tracebacks


def test_a_failed_trials_event_holds_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_layer() -> None:
        raise RuntimeError("channels do not match in broken_layer")

    def train_that_breaks(*args, **kw):
        broken_layer()

    monkeypatch.setattr(pipeline_module, "train", train_that_breaks)
    run = tmp_path / "run"
    Search(tiny_config(strategy=StrategyConfig(population=2, generations=1, parents=2)), run).run()
    with Store.open(run, readonly=True) as store:
        failed = store.trials(status="failed")
        events = store.events("trial_exception")
    assert [t.error for t in failed] == ["RuntimeError: channels do not match in broken_layer"] * 2
    assert [e.payload["trial_id"] for e in events] == [0, 1]
    text = events[0].payload["traceback"]
    assert text.startswith("Traceback") and "in broken_layer" in text and "in train_that_breaks" in text


def test_a_worker_exception_keeps_the_workers_traceback() -> None:
    """What the pool executor hands back (concurrent.futures' exception with the worker's traceback as its cause)
    is stored with the worker's frames."""
    with futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        exc = pool.submit(json.loads, "{").exception(timeout=60)
    text = format_traceback(exc)
    assert isinstance(exc, json.JSONDecodeError) and "raw_decode" in text and "_RemoteTraceback" in text


# --------------------------------------------------------------------------------------------- 10: shape, not loaders


@pytest.mark.parametrize("dataset", ["synthetic", "fashion-mnist", "imagefolder"])
def test_the_search_process_reads_the_shape_without_building_loaders(
    dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loaders(*args, **kw):
        raise AssertionError("build_loaders called in the search's own process")

    monkeypatch.setattr(data_module, "build_loaders", no_loaders)
    monkeypatch.setattr(trial_module, "build_loaders", no_loaders)
    root, expected = None, (16, 1, 10)
    if dataset == "fashion-mnist":
        write_fashion(tmp_path / "fashion")
        root = str(tmp_path / "fashion")
    elif dataset == "imagefolder":
        write_folder(tmp_path / "folder", classes=("ant", "bee", "cat", "dog"), per_class=2)
        root, expected = str(tmp_path / "folder"), (16, 3, 4)
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset, root=root))
    assert dataset_shape(cfg.data) == expected
    with Search(cfg, tmp_path / "run") as search:
        budget = search.budget
        assert (budget.input_size, budget.in_chans, budget.num_classes) == expected


def test_dataset_shape_checks_files_without_loading_them(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar", 100)
    assert dataset_shape(DataConfig(dataset="cifar100", root=str(tmp_path / "cifar"))) == (32, 3, 100)
    assert dataset_shape(DataConfig(dataset="digits", input_size=8)) == (8, 1, 10)
    write_fashion(tmp_path / "fashion", gz=False)
    (tmp_path / "fashion" / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # a cut header
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte: not a uint8 IDX file"):
        dataset_shape(DataConfig(root=str(tmp_path / "fashion")))
    with pytest.raises(UserError, match="data.root: missing .*cifar-10-batches-py"):
        dataset_shape(DataConfig(dataset="cifar10", root=str(tmp_path / "cifar")))
    write_folder(tmp_path / "folder", per_class=1)
    shutil.rmtree(tmp_path / "folder" / "val")
    with pytest.raises(UserError, match="missing split folder .*val'"):
        dataset_shape(DataConfig(dataset="imagefolder", root=str(tmp_path / "folder")))
