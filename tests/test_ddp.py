"""Several processes (`torchrun ... menas retrain`): 2 CPU ranks on gloo, spawned with torch.multiprocessing. What must
hold and is checked: the ranks hold identical weights (BatchNorm buffers included) after training; rank 0 alone
writes the retrain's files; and a network without BatchNorm trained on 2 ranks equals the single-process run on the
same global batch within float tolerance, from in-memory data and from an image folder (no augmentation). What does
not hold on CPU and is not claimed: torch 2.14's DDP refuses SyncBatchNorm on CPU, so a BatchNorm network normalises
each rank's half-batch with its own statistics and differs from the single-process run (see `menas.train.distributed`).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from menas.config import DataConfig, RetrainConfig, TrainConfig, apply_override
from menas.data.splits import build_loaders
from menas.nn.builder import build_model
from menas.space.genome import Genome
from menas.train import distributed
from menas.train.loop import train
from menas.winner.retrain import genome_source, retrain

TINY = Genome.from_str(
    "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_re|ir_k3_s2_m32_c24_re-ir_k3_m48_c24_re|head_c64_f128_hs"
)
SYNTH = DataConfig(dataset="synthetic", input_size=16, batch_size=64)
CFG = TrainConfig.preset("short", epochs=2, threads=1, ema=True, ema_decay=0.99, ema_base_batch=64)
NO_BN_CFG = TrainConfig.preset("short", epochs=2, threads=1, lr=0.02)  # the raw weights, moved well away from init


def _no_bn_net(in_chans: int = 1) -> nn.Module:
    """A small CNN without BatchNorm or dropout: its DDP step must equal the single-process step."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))  # fmt: skip


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out = Path(folder)
        data = build_loaders(SYNTH, "cpu")
        model = _no_bn_net()
        train(model, data.train, None, NO_BN_CFG)
        torch.save(model.state_dict(), out / f"no_bn_{rank}.pt")
        model = _no_bn_net(3)  # image files: each rank reads only its slice of every global batch
        train(model, build_loaders(_folder_cfg(out), "cpu", mode="final").train, None, NO_BN_CFG)
        torch.save(model.state_dict(), out / f"folder_{rank}.pt")
        torch.manual_seed(0)
        net = build_model(TINY, 10, 1, drop_rate=0.0)
        train(net, data.train, None, CFG, checkpoint_path=out / "tiny.ckpt")
        torch.save(net.state_dict(), out / f"tiny_{rank}.pt")
        cfg = apply_override(RetrainConfig.preset("short", SYNTH, 1), "train.threads=1")
        record = retrain(genome_source(TINY), cfg, out / "retrain", device=torch.device("cpu"))
        (out / f"record_{rank}.json").write_text(json.dumps(record["test"]))
        assert distributed.world_size() == world and distributed.is_main() == (rank == 0)
    finally:
        dist.destroy_process_group()


def _folder_cfg(out: Path) -> DataConfig:
    """An image folder of 24 files without augmentation (the files, not random crops, are compared)."""
    return DataConfig(dataset="imagefolder", root=str(out / "images"), input_size=16, batch_size=8, workers=0,
                      augment=False)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_train_identically_and_match_one_process(tmp_path: Path) -> None:
    from test_data import write_folder

    write_folder(tmp_path / "images", per_class=8)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for name in ("no_bn", "tiny", "folder"):  # the ranks hold the same weights and buffers, bit for bit
        a, b = (torch.load(tmp_path / f"{name}_{r}.pt") for r in (0, 1))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    # one process, the same global batch of 64: the same network within float tolerance (no BatchNorm)
    single = _no_bn_net()
    train(single, build_loaders(SYNTH, "cpu").train, None, NO_BN_CFG)
    ddp = torch.load(tmp_path / "no_bn_0.pt")
    moved = max(float((single.state_dict()[k] - _no_bn_net().state_dict()[k]).abs().max()) for k in ddp)
    assert moved > 0.01  # it trained (measured 0.044), far beyond the tolerance below
    for key, value in single.state_dict().items():
        assert torch.allclose(ddp[key], value, rtol=1e-4, atol=1e-5), key
    single = _no_bn_net(3)  # the same for an image folder read by a DataLoader
    train(single, build_loaders(_folder_cfg(tmp_path), "cpu", mode="final").train, None, NO_BN_CFG)
    ddp = torch.load(tmp_path / "folder_0.pt")
    assert max(float((single.state_dict()[k] - _no_bn_net(3).state_dict()[k]).abs().max()) for k in ddp) > 0.01
    for key, value in single.state_dict().items():
        assert torch.allclose(ddp[key], value, rtol=1e-4, atol=1e-5), key
    # the retrain: rank 0 wrote its folder, both ranks scored the same weights
    written = {p.name for p in (tmp_path / "retrain").iterdir()}
    assert {"run.json", "retrain.json", "model.safetensors", "retrain.ckpt"} <= written
    assert json.loads((tmp_path / "record_0.json").read_text()) == json.loads((tmp_path / "record_1.json").read_text())
    assert "x 2 processes" in json.loads((tmp_path / "retrain" / "retrain.json").read_text())["device"]


def test_a_loader_shard_takes_its_slice_of_every_global_batch() -> None:
    loader = build_loaders(SYNTH, "cpu").train
    loader.set_epoch(3)
    whole = [labels for _, labels in loader]
    parts = [loader.shard(r, 2) for r in (0, 1)]
    for part in parts:
        part.set_epoch(3)
    halves = [[labels for _, labels in part] for part in parts]
    assert len(halves[0]) == len(whole) and parts[0].batch_size == 64  # the global batch, for lr and EMA scaling
    for i, labels in enumerate(whole):
        assert torch.equal(torch.cat([halves[0][i], halves[1][i]]), labels)
    with pytest.raises(ValueError, match="data.batch_size: got 64, allowed: a multiple of the 3 processes"):
        loader.shard(0, 3)
