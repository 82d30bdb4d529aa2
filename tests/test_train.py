"""The trainer: it learns, it stops on NaN, its schedule is the paper's, and it resumes bit-identically."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch
from torch import nn

from menas.config import DataConfig, TrainConfig, apply_override, dump_yaml, from_dict, to_dict
from menas.data.datasets import FASHION_MNIST_ROOT
from menas.data.splits import build_loaders
from menas.errors import TrialFailed
from menas.train.checkpoint import load_checkpoint, save_checkpoint
from menas.train.loop import (
    _build_optimizer,
    _build_scheduler,
    amp_dtype,
    evaluate,
    seed_trial,
    train,
)

FAST = {"warmup_epochs": 0.2, "threads": None}


# --------------------------------------------------------------------------------------------- config


def test_train_config_round_trips_and_is_strict():
    cfg = TrainConfig(epochs=5, optimizer="sgd", lr=0.1, schedule="cosine")
    import yaml

    assert from_dict(TrainConfig, yaml.safe_load(dump_yaml(cfg)), "train") == cfg
    assert from_dict(TrainConfig, {"lr": 1}, "train").lr == 1.0  # ints are fine where floats are expected
    with pytest.raises(ValueError, match=r"train.optimizer: got 'adam', allowed: 'rmsproptf', 'sgd'"):
        from_dict(TrainConfig, {"optimizer": "adam"}, "train")
    with pytest.raises(ValueError, match=r"train.lr: got 'fast', allowed: float or null"):
        from_dict(TrainConfig, {"lr": "fast"}, "train")
    with pytest.raises(ValueError, match=r"train: unknown key 'epoch', allowed: recipe, epochs, optimizer"):
        from_dict(TrainConfig, {"epoch": 3}, "train")
    with pytest.raises(ValueError, match=r"train.epochs: got 0, allowed: >= 1"):
        from_dict(TrainConfig, {"epochs": 0}, "train")


def test_apply_override_parses_yaml_values_and_checks_types():
    cfg = apply_override(TrainConfig(), "epochs=7")
    assert cfg.epochs == 7 and TrainConfig().epochs == 3
    assert apply_override(cfg, "lr=null").lr is None
    assert to_dict(apply_override(DataConfig(), "hflip=false"))["hflip"] is False
    with pytest.raises(ValueError, match=r"config.epochs: got 'many', allowed: int"):
        apply_override(cfg, "epochs=many")
    with pytest.raises(ValueError, match=r"expected key=value"):
        apply_override(cfg, "epochs")
    with pytest.raises(ValueError, match=r"config.epochs: got sub-key 'x'"):
        apply_override(cfg, "epochs.x=1")


def test_lr_and_ema_decay_scale_with_batch_size():
    cfg = TrainConfig.preset("paper")
    assert cfg.peak_lr(1024) == pytest.approx(0.064) and cfg.peak_lr(128) == pytest.approx(0.008)
    assert TrainConfig(lr=0.5).peak_lr(128) == 0.5
    assert cfg.ema_decay_for(1024) == pytest.approx(0.9999)
    assert cfg.ema_decay_for(128) ** 8 == pytest.approx(0.9999)  # same decay per image


def test_cpu_allocator_tuning_sets_glibcs_thresholds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tune_cpu_allocator` calls glibc's mallopt with a 64 MiB mmap threshold and a 256 MiB trim threshold (M_*
    numbers from malloc.h), once per process: later calls report True without calling it again. A refused
    mallopt or a C library without it reports False and leaves the next call free to try again."""
    from menas.train import loop

    calls: list[tuple[int, int]] = []

    class Libc:
        accept = 1

        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return self.accept

    libc = Libc()
    monkeypatch.setattr(loop, "_ALLOCATOR_TUNED", False)
    monkeypatch.setattr(loop.ctypes, "CDLL", lambda name: libc if name == "libc.so.6" else None)
    libc.accept = 0  # glibc refused the value
    assert loop.tune_cpu_allocator() is False and calls == [(-3, 64 << 20)]
    libc.accept, calls[:] = 1, []
    assert loop.tune_cpu_allocator() is True
    assert calls == [(-3, 64 << 20), (-1, 256 << 20)]  # M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1
    assert loop.tune_cpu_allocator() is True and len(calls) == 2  # the second call changes nothing
    monkeypatch.setattr(loop, "_ALLOCATOR_TUNED", False)

    def no_libc(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(loop.ctypes, "CDLL", no_libc)
    assert loop.tune_cpu_allocator() is False  # musl, macOS, Windows: a no-op


# In a fresh process (thresholds are process-wide and other tests tune them): whether a 48 MiB block is served by
# its own mmap, else whether the heap grew for three of them and was trimmed when they were freed (a 144 MiB free
# top: above glibc's default trim thresholds, below the tuned 256 MiB), from glibc's mallinfo2 (glibc >= 2.33).
# 48 MiB is above the largest mmap threshold glibc's dynamic adjustment reaches on 64-bit (32 MiB), below the tuned
# 64 MiB.
_ALLOCATOR_PROBE = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                                               "keepcost".split()]
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
SIZE, BLOCKS = 48 << 20, 3
def probe():
    before = libc.mallinfo2()
    blocks = [libc.malloc(SIZE) for _ in range(BLOCKS)]
    during = libc.mallinfo2()
    for block in blocks:
        libc.free(block)
    after = libc.mallinfo2()
    mmapped = during.hblkhd - before.hblkhd >= BLOCKS * SIZE
    return mmapped, during.arena - before.arena > (BLOCKS - 1) * SIZE, after.arena < during.arena  # grew, trimmed
print("untuned", *probe())
from menas.train.loop import tune_cpu_allocator
print("calls", tune_cpu_allocator(), tune_cpu_allocator())
print("tuned", *probe())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_cpu_allocator_tuning_keeps_large_blocks_in_the_heap() -> None:
    """The effect, measured: untuned, a freed 48 MiB block was its own mmap (handed back to the OS at once); after
    `tune_cpu_allocator` the same block comes from the heap and stays there after free (no trim)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc reads its tunables there
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.split("\n")
    assert lines[:3] == ["untuned True False False", "calls True True", "tuned False True False"], out.stdout


def test_amp_is_off_on_cpu_by_default():
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("off", torch.device("cuda")) is None
    assert amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16


# --------------------------------------------------------------------------------------------- schedule


def test_step_schedule_warms_up_then_decays_097_every_2_4_epochs():
    steps_per_epoch = 10
    cfg = TrainConfig.preset("paper", epochs=10, warmup_epochs=1.0)
    opt = _build_optimizer(nn.Linear(2, 2), cfg, lr=0.064)
    sched = _build_scheduler(opt, cfg, steps_per_epoch)

    def lr_at(t: int) -> float:
        sched.step_update(t)
        return opt.param_groups[0]["lr"]

    assert lr_at(1) == pytest.approx(0.0064)  # warmup from 0: update 1 of 10
    assert lr_at(10) == pytest.approx(0.064)  # the peak at the end of warmup
    assert lr_at(10 + 23) == pytest.approx(0.064)
    assert lr_at(10 + 24) == pytest.approx(0.064 * 0.97)  # 2.4 epochs = 24 updates after warmup
    assert lr_at(10 + 48) == pytest.approx(0.064 * 0.97**2)


def test_cosine_schedule_ends_near_zero():
    cfg = TrainConfig(epochs=4, optimizer="sgd", schedule="cosine", warmup_epochs=0.0)
    opt = _build_optimizer(nn.Linear(2, 2), cfg, lr=0.1)
    sched = _build_scheduler(opt, cfg, 10)
    sched.step_update(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1, rel=0.01)
    sched.step_update(40)
    assert opt.param_groups[0]["lr"] < 0.001


def test_rmsproptf_is_timm_tf_style_with_paper_momentum():
    from timm.optim import RMSpropTF

    opt = _build_optimizer(nn.Conv2d(1, 2, 3), TrainConfig(), lr=0.01)
    assert isinstance(opt, RMSpropTF)
    group = next(g for g in opt.param_groups if g["weight_decay"] > 0)
    assert (group["momentum"], group["eps"], group["alpha"], group["weight_decay"]) == (0.9, 1e-3, 0.9, 1e-5)
    no_decay = [g for g in opt.param_groups if g["weight_decay"] == 0]
    assert no_decay and all(p.ndim <= 1 for g in no_decay for p in g["params"])  # biases: no weight decay


# --------------------------------------------------------------------------------------------- evaluate


class _Fixed(nn.Module):
    """Returns given logits regardless of input (to check the metrics exactly)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_evaluate_counts_top1_top5_and_restores_mode():
    logits = torch.eye(6)[[0, 1, 2, 3]] * 10  # predicts class i for sample i, class 0 second-best (tie break)
    labels = torch.tensor([0, 1, 5, 3])
    loader = [(torch.zeros(4, 1, 2, 2), labels)]
    model = _Fixed(logits).train()
    scores = evaluate(model, loader)
    assert scores["top1"] == pytest.approx(75.0)  # sample 2 is wrong
    assert scores["images"] == 4 and scores["seconds"] >= 0 and scores["loss"] > 0
    assert scores["top5"] >= scores["top1"]
    assert model.training


def test_evaluate_leaves_a_fresh_model_trainable(synthetic_data, tiny_cnn):
    model = tiny_cnn()  # NCHW parameters: evaluate converts them to channels_last, outside inference mode
    before = evaluate(model, synthetic_data.val)
    with torch.no_grad():
        hits = sum((model.eval()(x).argmax(1) == y).sum().item() for x, y in synthetic_data.val)
    assert before["top1"] == pytest.approx(100.0 * hits / synthetic_data.val.num_samples)
    assert before["images"] == synthetic_data.val.num_samples
    history = train(model, synthetic_data.train, None, TrainConfig(epochs=1, **FAST))
    assert len(history.epochs) == 1 and history.epochs[0].val_top1 is None


# --------------------------------------------------------------------------------------------- training


def test_two_epochs_on_synthetic_is_far_above_chance(synthetic_data, tiny_cnn):
    seed_trial(0)
    model = tiny_cnn()
    epochs = []
    history = train(
        model, synthetic_data.train, synthetic_data.val, TrainConfig(epochs=2, **FAST), progress=epochs.append
    )
    assert [e.epoch for e in history.epochs] == [1, 2] and epochs == history.epochs
    assert history.val_top1 > 60.0  # chance is 10%
    assert history.epochs[1].train_loss < history.epochs[0].train_loss
    assert all(e.images_per_s > 0 and e.train_seconds > 0 for e in history.epochs)
    assert history.total_seconds == pytest.approx(sum(e.seconds for e in history.epochs))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_sgd_cosine_with_ema_learns(synthetic_data, tiny_cnn):
    seed_trial(1)
    model = tiny_cnn()
    cfg = TrainConfig(epochs=2, optimizer="sgd", lr=0.05, schedule="cosine", ema=True, ema_decay=0.9, **FAST)
    history = train(model, synthetic_data.train, synthetic_data.val, cfg)
    assert history.val_top1 > 60.0
    # with EMA the returned model holds the averaged weights, which are what was scored
    assert evaluate(model, synthetic_data.val)["top1"] == pytest.approx(history.val_top1)


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed")
def test_two_epochs_on_a_fashion_mnist_subset_learn(tiny_cnn):
    data = build_loaders(DataConfig(input_size=16, search_train_fraction=0.03, search_val_fraction=0.01, batch_size=64))
    seed_trial(0)
    history = train(tiny_cnn(), data.train, data.val, TrainConfig(epochs=2, optimizer="sgd", lr=0.05, **FAST))
    assert data.train.num_samples == 1800
    assert history.val_top1 > 50.0  # chance is 10%


def test_a_menas_mobilenetv3_large_trains_one_epoch():
    from menas.nn.builder import build_model
    from menas.space.genome import MOBILENETV3_LARGE, Genome

    data = build_loaders(
        DataConfig(dataset="synthetic", input_size=32, search_train_fraction=0.02, search_val_fraction=0.02)
    )
    seed_trial(0)
    model = build_model(Genome.from_str(MOBILENETV3_LARGE), data.num_classes, data.in_chans)
    history = train(model, data.train, data.val, TrainConfig(epochs=1, **FAST))
    assert len(history.epochs) == 1 and history.epochs[0].val_top1 == pytest.approx(evaluate(model, data.val)["top1"])
    assert torch.isfinite(torch.tensor(history.epochs[0].train_loss))


# --------------------------------------------------------------------------------------------- NaN guard


class _NanAfter(nn.Module):
    """Wraps a model and turns its output into NaN from the `after`-th training forward on."""

    def __init__(self, inner: nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                out = out * float("nan")
        return out


def test_nan_loss_raises_trial_failed_naming_epoch_and_step(synthetic_data, tiny_cnn):
    steps = len(synthetic_data.train)
    model = _NanAfter(tiny_cnn(), after=steps + 3)  # third step of the second epoch
    with pytest.raises(TrialFailed, match=r"loss became NaN at epoch 2 step 3$"):
        train(model, synthetic_data.train, synthetic_data.val, TrainConfig(epochs=3, **FAST))


def test_exploding_lr_is_caught(synthetic_data, tiny_cnn):
    seed_trial(0)
    cfg = TrainConfig(epochs=1, optimizer="sgd", lr=1e12, warmup_epochs=0.0, label_smoothing=0.0)
    with pytest.raises(TrialFailed, match=r"loss became (NaN|infinite) at epoch 1 step \d+"):
        train(tiny_cnn(), synthetic_data.train, None, cfg)


# --------------------------------------------------------------------------------------------- checkpoints


class _Stop(Exception):
    pass


def _stop_after(epoch: int):
    def progress(stats):
        if stats.epoch == epoch:
            raise _Stop

    return progress


@pytest.mark.parametrize("ema", [False, True])
def test_resume_continues_bit_identically(synthetic_data, tiny_cnn, tmp_path, ema):
    cfg = TrainConfig(epochs=3, ema=ema, ema_decay=0.99, **FAST)
    seed_trial(0)
    straight = tiny_cnn(dropout=0.3)  # dropout draws from torch's generator: its state must be restored too
    full = train(straight, synthetic_data.train, synthetic_data.val, cfg, checkpoint_path=tmp_path / "a.pt")

    seed_trial(0)
    interrupted = tiny_cnn(dropout=0.3)
    with pytest.raises(_Stop):
        train(
            interrupted,
            synthetic_data.train,
            synthetic_data.val,
            cfg,
            checkpoint_path=tmp_path / "b.pt",
            progress=_stop_after(2),
        )
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 2
    torch.manual_seed(12345)  # a fresh process would have a different generator state and weights
    resumed = tiny_cnn(dropout=0.3)
    history = train(resumed, synthetic_data.train, synthetic_data.val, cfg, checkpoint_path=tmp_path / "b.pt")

    assert history.resumed_at == 2 and len(history.epochs) == 3
    assert [e.train_loss for e in history.epochs] == [e.train_loss for e in full.epochs]
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for key in ("model", "ema"):
        if ca[key] is not None:
            assert all(torch.equal(ca[key][k], cb[key][k]) for k in ca[key])


def test_finished_checkpoint_returns_its_history_without_training(synthetic_data, tiny_cnn, tmp_path):
    cfg = TrainConfig(epochs=1, **FAST)
    seed_trial(0)
    first = train(tiny_cnn(), synthetic_data.train, synthetic_data.val, cfg, checkpoint_path=tmp_path / "c.pt")
    model = tiny_cnn()
    calls = []
    again = train(
        model, synthetic_data.train, synthetic_data.val, cfg, checkpoint_path=tmp_path / "c.pt", progress=calls.append
    )
    assert calls == [] and again.epochs == first.epochs
    assert torch.equal(model.state_dict()["0.weight"], load_checkpoint(tmp_path / "c.pt")["model"]["0.weight"])
    fresh = train(tiny_cnn(), synthetic_data.train, None, cfg, checkpoint_path=tmp_path / "c.pt", resume=False)
    assert fresh.resumed_at is None and len(fresh.epochs) == 1


def test_resume_refuses_a_different_config(synthetic_data, tiny_cnn, tmp_path):
    cfg = TrainConfig(epochs=1, **FAST)
    train(tiny_cnn(), synthetic_data.train, None, cfg, checkpoint_path=tmp_path / "d.pt")
    with pytest.raises(ValueError, match=r"train.label_smoothing was 0.1, now 0.2"):
        train(
            tiny_cnn(),
            synthetic_data.train,
            None,
            TrainConfig(epochs=1, label_smoothing=0.2, **FAST),
            checkpoint_path=tmp_path / "d.pt",
        )


def test_checkpoints_are_written_atomically_and_loaded_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"format": 1, "x": torch.ones(2)})

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"format": 1, "x": torch.zeros(2)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))  # the old checkpoint survived intact
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind

    torch.save({"format": 1, "evil": _Stop()}, tmp_path / "evil.pt")  # an arbitrary object needs unpickling
    with pytest.raises(ValueError, match=r"checkpoint '.*evil.pt': cannot read"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a menas training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
