"""`menas.load` from every kind of source, `menas evaluate`, and the preprocessing record export relies on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import menas
from menas.cli.main import main
from menas.config import DataConfig, TrainConfig, from_dict, to_dict
from menas.data.loaders import channel_stats
from menas.data.splits import build_loaders
from menas.errors import UserError
from menas.nn.builder import build_model
from menas.search.store import Store
from menas.search.strategies import TrialSpec
from menas.search.trial import TrialJob, run_trial
from menas.space.genome import Genome
from menas.train.checkpoint import load_checkpoint, load_weights, run_record, save_weights
from menas.train.loop import evaluate
from menas.winner.evaluate import evaluate_network

GENOME = (
    "stem_c16_hs-ds_k3_c16_re|ir_k3_s2_m32_c16_re|ir_k3_s2_m48_c24_re-ir_k5_m72_c24_se_re|ir_k3_s2_m96_c40_hs"
    "|ir_k3_m120_c40_hs|ir_k3_s2_m160_c48_se_hs-ir_k3_m144_c48_hs|head_c288_f256_hs"
)
# seed 1: `val` must be the recorded seed's split, not the default seed 0's
DATA = ["--data", "synthetic", "--input-size", "16", "--batch-size", "64", "--threads", "1", "--seed", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("load") / "trained"
    assert main(["train", GENOME, *DATA, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _checkpoint_model(trained: Path) -> torch.nn.Module:
    """The network as training left it, from the training checkpoint (not through the safetensors file)."""
    model = build_model(Genome.from_str(GENOME), 10, 1)
    model.load_state_dict(load_checkpoint(trained / "train.ckpt")["model"])
    return model.eval()


def _source(kind: str, trained: Path, tmp_path: Path) -> Path:
    if kind == "checkpoint folder":
        return trained
    if kind == "safetensors file":
        return trained / "model.safetensors"
    if kind == "export folder":
        assert main(["export", str(trained), "--out", str(tmp_path / "export"), "--format", "safetensors"]) == 0
        return tmp_path / "export"
    run = tmp_path / "run"  # a run folder whose best trial is the trained network
    with Store.create(run, {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(i, GENOME, 0, "sample", (), True) for i in range(2)])
        store.finish_trial(0, trained_score=10.0, macs=1, params=1, weights=str(tmp_path / "missing.safetensors"))
        store.finish_trial(1, trained_score=50.0, macs=1, params=1, weights=str(trained / "model.safetensors"))
    (run / "config.yaml").write_text("data:\n  dataset: synthetic\n  input_size: 16\n  seed: 1\n")
    return run


@pytest.mark.parametrize("kind", ["checkpoint folder", "safetensors file", "export folder", "run folder"])
def test_load_equals_the_checkpoints_model(kind: str, trained: Path, tmp_path: Path) -> None:
    model = menas.load(_source(kind, trained, tmp_path))
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.genome == Genome.from_str(GENOME)
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), _checkpoint_model(trained)(x))


def test_import_menas_is_lazy() -> None:
    code = (
        "import sys, menas\n"
        "assert 'torch' not in sys.modules, 'import menas imported torch'\n"
        "g = menas.Genome.from_str(menas.Genome.from_str('" + GENOME + "').to_str())\n"
        "menas.count_cost(g, 32, 1, 10)\n"
        "assert 'torch' not in sys.modules, 'Genome/count_cost imported torch'\n"
        "assert callable(menas.load) and callable(menas.build_model) and 'torch' in sys.modules\n"
        "try:\n    menas.nothing\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "no attribute 'nothing'" in done.stdout


def test_load_bad_paths_are_one_line(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.safetensors").write_text("not weights")
    run = tmp_path / "run"
    with Store.create(run, {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(0, GENOME, 0, "sample", (), True)])
    lost = tmp_path / "lost"
    with Store.create(lost, {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(0, GENOME, 0, "sample", (), True)])
        store.finish_trial(
            0, trained_score=50.0, macs=1, params=1, weights=str(tmp_path / "gone" / "model.safetensors")
        )
    cases = {
        tmp_path / "nothing": "not found",
        tmp_path / "empty": "no model.safetensors",
        tmp_path / "junk.safetensors": "not a safetensors file",
        run: "no finished trial",
        lost: "the best trial's weights .*gone.* are missing",
    }
    for path, message in cases.items():
        with pytest.raises(UserError, match=message) as info:
            menas.load(path)
        assert "\n" not in str(info.value)
    # an export folder whose genome.json names another network than its weights
    mixed = tmp_path / "mixed"
    shutil.copytree(trained, mixed)
    other = build_model(Genome.from_str(GENOME.replace("ir_k3_m120_c40_hs", "ir_k5_m120_c40_hs")), 10, 1)
    (mixed / "genome.json").write_text(json.dumps({"genome": other.genome.to_str()}))
    with pytest.raises(UserError, match="genome.json names another genome"):
        menas.load(mixed)


def test_recorded_preprocessing_is_what_the_loader_used(trained: Path) -> None:
    record = json.loads((trained / "run.json").read_text())
    pre = record["preprocessing"]
    assert (pre["input_size"], pre["in_chans"], pre["statistics"]) == (16, 1, "search-train split")
    data = build_loaders(from_dict(DataConfig, record["data"], "data"), "cpu")
    mean, std = channel_stats(data.train.images)  # independent of the loader's normalisation
    assert pre["mean"] == pytest.approx(mean.tolist(), abs=1e-6) and pre["std"] == pytest.approx(std.tolist(), abs=1e-6)
    # a validation batch is exactly (uint8 / 255 - mean) / std with the recorded values
    images, _ = next(iter(data.val))
    raw = data.val.images[: len(images)].float() / 255.0
    expected = (raw - torch.tensor(pre["mean"]).view(1, -1, 1, 1)) / torch.tensor(pre["std"]).view(1, -1, 1, 1)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=1e-5)


def test_a_trial_folder_records_its_data_and_preprocessing(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="synthetic", input_size=16, search_train_fraction=0.2, search_val_fraction=0.1, seed=3)
    job = TrialJob(7, GENOME, cfg, TrainConfig(epochs=1, threads=1), None, 0, str(tmp_path / "t"), device="cpu")
    result = run_trial(job)
    assert result.status == "done"
    record = json.loads((tmp_path / "t" / "run.json").read_text())
    assert (record["trial_id"], record["genome"], record["data"]["seed"]) == (7, Genome.from_str(GENOME).to_str(), 3)
    assert record["kind"] == "trial" and set(record) == {"kind", "genome", "data", "train", "preprocessing", "trial_id"}
    data = build_loaders(cfg, "cpu")
    mean, std = channel_stats(data.train.images)
    assert record["preprocessing"]["mean"] == pytest.approx(mean.tolist(), abs=1e-6)
    assert record["preprocessing"]["std"] == pytest.approx(std.tolist(), abs=1e-6)
    assert torch.equal(menas.load(tmp_path / "t").classifier.weight, load_weights(result.weights).classifier.weight)
    # `evaluate --split val` reproduces the score the search recorded for the trial
    assert main(["evaluate", str(tmp_path / "t"), "--split", "val", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "t" / "evaluate-val.json").read_text())["top1"] == result.final_score


def test_run_record_holds_the_common_keys_then_the_writers_provenance() -> None:
    """Every run.json is `run_record`'s: kind, genome, the data and training configs as plain data, the
    preprocessing when known (left out when None), and the writer's own keys."""
    genome, data, train = Genome.from_str(GENOME), DataConfig(dataset="synthetic", seed=2), TrainConfig(epochs=3)
    common = {"genome": genome.to_str(), "data": to_dict(data), "train": to_dict(train)}
    assert run_record("lottery", genome, data, train, None, pruned_from="x") == {
        "kind": "lottery",
        **common,
        "pruned_from": "x",
    }
    pre = {"mean": [0.5], "std": [0.2]}
    assert run_record("trial", genome, data, train, pre, trial_id=4) == {
        "kind": "trial",
        **common,
        "preprocessing": pre,
        "trial_id": 4,
    }
    assert from_dict(DataConfig, run_record("train", genome, data, train)["data"], "data") == data  # read back


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluate_scores_the_split_and_writes_matrix_and_figure(
    split: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(trained), "--split", split, "--out", str(tmp_path), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / f"evaluate-{split}.json").read_text())
    assert (tmp_path / f"confusion-{split}.png").stat().st_size > 1000
    assert f"synthetic {split} split" in out and "img/s" in out
    # the same numbers as scoring the recorded config's split directly (seed 1, not the default 0)
    data = build_loaders(from_dict(DataConfig, json.loads((trained / "run.json").read_text())["data"], "data"), "cpu")
    assert record["data"]["seed"] == 1
    loader = data.test if split == "test" else data.val
    expected = evaluate(load_weights(trained / "model.safetensors"), loader)
    assert record["images"] == loader.num_samples == (1000 if split == "test" else 250)
    assert (record["top1"], record["top5"]) == (expected["top1"], expected["top5"])
    assert record["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    matrix = torch.tensor(record["confusion"])
    assert matrix.shape == (10, 10) and int(matrix.sum()) == record["images"]
    assert 100.0 * int(matrix.diag().sum()) / record["images"] == pytest.approx(record["top1"])
    assert matrix.sum(dim=1).tolist() == torch.bincount(loader.labels, minlength=10).tolist()
    assert record["images_per_s"] > 0 and record["top5"] >= record["top1"]


def test_evaluate_defaults_to_beside_the_weights(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(trained, folder)
    assert main(["evaluate", str(folder / "model.safetensors"), "--threads", "1", "--batch-size", "100"]) == 0
    record = json.loads((folder / "evaluate-test.json").read_text())
    assert record["batch_size"] == 100 and (folder / "confusion-test.png").is_file()


def test_evaluate_bad_inputs_are_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    genome = Genome.from_str(GENOME)
    for name, classes, chans in (("rgb", 10, 3), ("seven", 7, 1)):
        save_weights(build_model(genome, classes, chans), genome, tmp_path / name / "model.safetensors")
    cases = [
        (["evaluate", str(tmp_path / "nothing")], "not found"),
        (["evaluate", str(tmp_path / "rgb")], "--data: required"),
        (["evaluate", str(tmp_path / "rgb"), "--data", "synthetic"], "the network has in_chans 3, the data gives 1"),
        (["evaluate", str(tmp_path / "seven"), "--data", "synthetic", "--input-size", "16"],
         "the network has num_classes 7, the data gives 10"),
        (["evaluate", str(tmp_path / "seven"), "--data", "synthetic", "--split", "val"], "--split val: "),
        (["evaluate", str(trained), "--data", "digits", "--split", "val"], "does not record a search-val split"),
        (["evaluate", str(trained), "--batch-size", "0"], "--batch-size: got 0"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_evaluate_normalises_with_the_recorded_statistics(trained: Path, tmp_path: Path) -> None:
    """A network trained on other statistics than its data config's search-train split (a retrain on the whole
    training set) is scored with the mean/std recorded beside it, not with recomputed ones."""
    folder = tmp_path / "retrained"
    shutil.copytree(trained, folder)
    run = json.loads((folder / "run.json").read_text())
    run["preprocessing"] = {**run["preprocessing"], "mean": [0.8], "std": [0.1], "statistics": "whole training set"}
    (folder / "run.json").write_text(json.dumps(run))
    assert main(["evaluate", str(trained), "--out", str(tmp_path / "a"), "--threads", "1"]) == 0
    assert main(["evaluate", str(folder), "--out", str(tmp_path / "b"), "--threads", "1"]) == 0
    plain, shifted = (json.loads((tmp_path / d / "evaluate-test.json").read_text()) for d in ("a", "b"))
    data = build_loaders(from_dict(DataConfig, run["data"], "data"), "cpu")
    x = data.test.images.float() / 255.0
    model = load_weights(trained / "model.safetensors").eval()
    with torch.no_grad():
        logits = torch.cat([model((part - 0.8) / 0.1) for part in x.split(500)])
    expected = 100.0 * int((logits.argmax(1) == data.test.labels).sum()) / len(logits)
    assert shifted["top1"] == pytest.approx(expected, abs=1e-9) and shifted["preprocessing"]["mean"] == [0.8]
    assert shifted["loss"] != pytest.approx(plain["loss"], rel=1e-3)
    # trained on the whole training set: its search-val split is no held-out data
    with pytest.raises(UserError, match="trained on the whole training set, search-val included; use --split test"):
        evaluate_network(folder, split="val")


def test_image_folder_networks_record_imagenet_statistics_and_the_crop(tmp_path: Path) -> None:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from menas.config import to_dict
    from test_data import write_folder

    write_folder(tmp_path / "images", per_class=4)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path / "images"), input_size=32, workers=0,
                     search_train_fraction=0.5, search_val_fraction=0.5)  # fmt: skip
    genome = Genome.from_str(GENOME)
    save_weights(build_model(genome, 3, 3), genome, tmp_path / "net" / "model.safetensors")
    (tmp_path / "net" / "run.json").write_text(json.dumps({"genome": GENOME, "data": to_dict(cfg)}))
    assert main(["evaluate", str(tmp_path / "net"), "--threads", "1"]) == 0
    record = json.loads((tmp_path / "net" / "evaluate-test.json").read_text())
    assert record["images"] == 12 and int(torch.tensor(record["confusion"]).sum()) == 12
    pre = record["preprocessing"]
    assert pre["mean"] == pytest.approx(IMAGENET_DEFAULT_MEAN) and pre["std"] == pytest.approx(IMAGENET_DEFAULT_STD)
    assert "shorter side to 36 px" in pre["resize"] and "centre crop of 32x32" in pre["resize"]
    assert main(["export", str(tmp_path / "net"), "--out", str(tmp_path / "export"), "--format", "safetensors"]) == 0
    assert "centre crop of 32x32" in (tmp_path / "export" / "README.md").read_text()


def test_lottery_out_records_the_preprocessing_like_train(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "ticket"
    assert main(["lottery", str(trained), "-P", "2", "--score-images", "64", "--threads", "1", "--tolerance", "100",
                 "--out", str(out)]) == 0  # fmt: skip
    pre = json.loads((out / "run.json").read_text())["preprocessing"]
    assert pre == json.loads((trained / "run.json").read_text())["preprocessing"]  # same data, same split statistics
    assert (pre["input_size"], pre["in_chans"], pre["statistics"]) == (16, 1, "search-train split")


def test_find_network_picks_a_runs_trial_or_rank(trained: Path, tmp_path: Path) -> None:
    from menas.winner.load import find_network

    run = _source("run folder", trained, tmp_path)  # trial 1 (50%) has the weights, trial 0 (10%) lost them
    best = find_network(run)
    assert (best.trial_id, best.weights, best.run_dir) == (1, trained / "model.safetensors", run)
    assert find_network(run, trial=1).weights == find_network(run, rank=1).weights == best.weights
    with pytest.raises(UserError, match="trial 0's weights .*missing.safetensors.* are missing"):
        find_network(run, rank=2)
    bare = find_network(run, rank=2, need_weights=False)  # a retrain from scratch needs only genome and data
    assert (bare.weights, bare.genome.to_str()) == (None, Genome.from_str(GENOME).to_str())
    assert (best.data.seed, bare.data.seed) == (1, 0)  # the trial's run.json, else the run's stored config
    for kwargs, message in (({"trial": 5}, "--trial: got 5, run .* has trials 0..1"),
                            ({"rank": 3}, "--rank: got 3, allowed: 1..2")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            find_network(run, **kwargs)
    with pytest.raises(UserError, match="--trial/--rank: only with a run folder"):
        find_network(trained, rank=1)
