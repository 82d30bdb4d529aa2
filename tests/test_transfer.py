"""`menas transfer`: a trained network's classifier swapped and its stem adapted (timm's `adapt_input_conv`),
fine-tuned on another dataset, resumable, scored once on that dataset's test split; bad inputs are one line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from menas.cli.main import main
from menas.config import DataConfig, RetrainConfig, apply_override
from menas.data.datasets import make_synthetic
from menas.nn.builder import build_model
from menas.space.genome import Genome
from menas.train.checkpoint import load_weights, save_weights
from menas.winner.load import find_network
from menas.winner.transfer import adapt_network, transfer

TINY = Genome.from_str(
    "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_re|ir_k3_s2_m32_c24_re-ir_k3_m48_c24_re|head_c64_f128_hs"
)
OTHER = Genome.from_str(
    "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_hs|ir_k3_s2_m32_c24_re-ir_k3_m48_c24_re|head_c64_f128_hs"
)
FAST = ["--set", "data.input_size=16", "--set", "data.batch_size=32", "--set", "train.lr=0.01", "--threads", "1"]


def write_learnable_cifar(root: Path) -> Path:
    """A CIFAR-10 folder (python-pickle layout) of 3-channel images whose class is a synthetic pattern: learnable in
    an epoch or two, unlike random pixels. Each channel is the pattern at another brightness."""
    train, test = make_synthetic(num_classes=10, train_per_class=60, test_per_class=20, size=32)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def rows(images: np.ndarray) -> np.ndarray:
        rgb = np.concatenate([images, (images * 0.8).astype(np.uint8), (images * 0.6).astype(np.uint8)], axis=1)
        return rgb.reshape(len(images), 3 * 32 * 32)  # CIFAR rows: R, G, B planes of 32x32

    parts = np.array_split(np.random.default_rng(0).permutation(len(train.labels)), 5)
    for i, idx in enumerate(parts, start=1):
        batch = {"data": rows(train.images[idx]), "labels": [int(v) for v in train.labels[idx]]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": rows(test.images), "labels": test.labels.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


@pytest.fixture(scope="module")
def grey_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-channel, 7-class network's weights file (as a Fashion-MNIST-like network would be)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("grey") / "model.safetensors"
    save_weights(build_model(TINY, 7, 1), TINY, path)
    return path


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_learnable_cifar(tmp_path_factory.mktemp("cifar"))


def _bad(args: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("menas: error: "), err
    assert match in err, err


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else {}


def test_adapt_network_swaps_the_classifier_and_adapts_the_stem_like_timm() -> None:
    torch.manual_seed(0)
    grey = build_model(TINY, 7, 1).eval()
    rgb = adapt_network(grey, 10, 3).eval()
    assert rgb.classifier.out_features == 10 and rgb.stem.conv.in_channels == 3
    stem = grey.stem.conv.weight
    assert torch.allclose(rgb.stem.conv.weight, stem.repeat(1, 3, 1, 1) / 3)  # 1 -> 3: repeated, scaled by 1/3
    kept = {k: v for k, v in grey.state_dict().items() if not k.startswith(("classifier.", "stem.conv.weight"))}
    assert all(torch.equal(rgb.state_dict()[k], v) for k, v in kept.items())
    x = torch.rand(2, 1, 32, 32)  # a grey image as 3 equal channels gives the same features as before
    assert torch.allclose(rgb.forward_features(x.repeat(1, 3, 1, 1)), grey.forward_features(x), atol=1e-5)
    back = adapt_network(rgb, 4, 1)
    assert back.classifier.out_features == 4
    assert torch.allclose(back.stem.conv.weight, rgb.stem.conv.weight.sum(dim=1, keepdim=True))  # 3 -> 1: summed


def test_transfer_to_3_channel_data_with_other_classes_trains_above_chance(grey_net, cifar, tmp_path) -> None:
    out = tmp_path / "t"
    assert main(["transfer", str(grey_net), "--data", "cifar10", "--root", str(cifar), "--epochs", "3",
                 "--out", str(out), *FAST]) == 0  # fmt: skip
    record = json.loads((out / "transfer.json").read_text())
    assert record["from"] == {"num_classes": 7, "in_chans": 1}
    assert record["to"] == {"num_classes": 10, "in_chans": 3, "input_size": 16}
    assert record["test"]["raw"]["images"] == 200 and record["test"]["raw"]["top1"] > 30.0  # chance: 10%; measured 46%
    model = load_weights(out / "model.safetensors")
    assert (model.num_classes, model.stem.conv.in_channels, model.genome) == (10, 3, TINY)
    assert json.loads((out / "run.json").read_text())["kind"] == "transfer"
    assert find_network(out).data.dataset == "cifar10"  # the folder is a checkpoint folder for load/export


class _Kill(Exception):
    pass


def test_resume_after_a_kill_equals_the_uninterrupted_transfer(grey_net, tmp_path) -> None:
    cfg = RetrainConfig.preset("transfer", DataConfig(dataset="synthetic", input_size=16, batch_size=64), 2)
    cfg = apply_override(apply_override(cfg, "train.threads=1"), "drop_path=0.2")
    source = find_network(grey_net)
    straight = transfer(source, cfg, tmp_path / "straight", device=torch.device("cpu"))

    def kill_after_first(stats):
        if stats.epoch == 1:
            raise _Kill

    with pytest.raises(_Kill):
        transfer(source, cfg, tmp_path / "killed", device=torch.device("cpu"), progress=kill_after_first)
    assert not (tmp_path / "killed" / "transfer.json").exists()
    torch.manual_seed(999)  # a new process starts from another generator state
    resumed = transfer(source, cfg, tmp_path / "killed", device=torch.device("cpu"))
    assert resumed["resumed_at"] == 1 and resumed["test"] == straight["test"]
    a = load_weights(tmp_path / "straight" / "model.safetensors").state_dict()
    b = load_weights(tmp_path / "killed" / "model.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_weights(tmp_path / "straight" / "model.safetensors").stem.conv.in_channels == 1  # 1 -> 1: unchanged


def test_a_missing_dataset_is_one_line_naming_the_files_and_root(grey_net, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    _bad(["transfer", str(grey_net), "--data", "cifar10", "--root", str(tmp_path / "none"), "--epochs", "1",
          "--out", str(out)], capsys, "cifar-10-batches-py/data_batch_1 (CIFAR-10 python-pickle layout); give its "
         "folder with --root DIR")  # fmt: skip
    assert not out.exists()


def test_bad_epochs_and_another_genome_in_out_are_refused_and_leave_files_alone(grey_net, tmp_path, capsys) -> None:
    _bad(["transfer", str(grey_net), "--data", "synthetic", "--epochs", "0", "--out", str(tmp_path / "o")], capsys,
         "--epochs: got 0, allowed: integers >= 1")  # fmt: skip
    assert not (tmp_path / "o").exists()
    other = tmp_path / "other.safetensors"
    save_weights(build_model(OTHER, 7, 1), OTHER, other)
    out = tmp_path / "t"
    cfg = RetrainConfig.preset("transfer", DataConfig(dataset="synthetic", input_size=16, batch_size=64), 1)
    transfer(find_network(grey_net), apply_override(cfg, "train.threads=1"), out, device=torch.device("cpu"))
    before = _files(out)
    _bad(["transfer", str(other), "--data", "synthetic", "--epochs", "1", "--out", str(out), "--set",
          "data.input_size=16"], capsys, "holds a transfer of another genome")  # fmt: skip
    assert _files(out) == before
    retrain_out = tmp_path / "r"
    retrain_out.mkdir()
    (retrain_out / "run.json").write_text(json.dumps({"kind": "retrain", "genome": TINY.to_str()}))
    _bad(["transfer", str(grey_net), "--data", "synthetic", "--epochs", "1", "--out", str(retrain_out)], capsys,
         "holds another command's results (run.json without kind 'transfer')")  # fmt: skip
