"""Shared pytest configuration: tests import helpers from this folder, torch stays on few threads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Runs each test on one intra-op thread, restoring the setting after.

    Measured: with another process busy on one of the 2 cores, two threads made the tiny-CNN training tests
    8x slower (27.8 s vs 3.4 s) because every small op waits for the descheduled second thread.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------- data / train fixtures


def _tiny_cnn(num_classes: int = 10, in_chans: int = 1, dropout: float = 0.0):
    """A 2-conv CNN (about 10k parameters) that learns the synthetic data in a couple of epochs."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_chans, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(32 * 16, num_classes),
    )


@pytest.fixture
def tiny_cnn():
    """Factory for a small CNN: `tiny_cnn(num_classes=10, in_chans=1, dropout=0.0)`."""
    return _tiny_cnn


@pytest.fixture(scope="session")
def synthetic_data():
    """Search loaders over the synthetic dataset at 16 px on the CPU (2,500 train / 1,000 val images)."""
    from menas.config import DataConfig
    from menas.data.splits import build_loaders

    cfg = DataConfig(
        dataset="synthetic", input_size=16, search_train_fraction=0.5, search_val_fraction=0.2, batch_size=64
    )
    return build_loaders(cfg, "cpu")


# --------------------------------------------------------------------------------------------- search fixtures


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted in-process search of `test_search.tiny_config()`, run once per session: what resumed,
    pooled and Ray searches are compared with. Read it, never write to it."""
    from menas.search.engine import Search
    from test_search import tiny_config

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    Search(tiny_config(), run_dir).run()
    return run_dir
