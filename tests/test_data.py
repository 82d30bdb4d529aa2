"""Datasets, splits and loaders: every format read from a tiny fixture written by the test, no downloads."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.config import DataConfig, from_dict
from menas.data.datasets import FASHION_MNIST_ROOT, class_balanced_split, load_digits, make_synthetic, read_idx
from menas.data.loaders import DeviceLoader, epoch_seed, random_crop_flip, resize_uint8
from menas.data.splits import build_loaders

# --------------------------------------------------------------------------------------------- fixture writers


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Writes a uint8 IDX file (the MNIST format)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_fashion(folder: Path, per_class: int = 6, gz: bool = True, size: int = 28) -> dict[str, np.ndarray]:
    """Tiny Fashion-MNIST-layout IDX files; pixel (0, 0) of each image encodes its index for checks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", per_class * 10), ("t10k", 20)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        arrays[prefix] = images
        arrays[prefix + "_labels"] = labels
    return arrays


def write_cifar(root: Path, num_classes: int, per_file: int = 20) -> dict[str, np.ndarray]:
    """Tiny CIFAR python-pickle files in torchvision's layout (cifar-10-batches-py / cifar-100-python)."""
    rng = np.random.default_rng(1)
    if num_classes == 10:
        folder, files, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels"
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    else:
        folder, files, key = root / "cifar-100-python", ["train"], "fine_labels"
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    folder.mkdir(parents=True)
    written = {}
    for name in [*files, "test_batch" if num_classes == 10 else "test"]:
        data = rng.integers(0, 256, size=(per_file, 3 * 32 * 32), dtype=np.uint8)
        labels = np.arange(per_file) % 10  # classes 0..9 (CIFAR-100 keeps 100 outputs, with 90 unused)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, key: [int(v) for v in labels]}, f)
        written[name] = data
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)
    return written


def write_folder(root: Path, classes: tuple[str, ...] = ("ant", "bee", "cat"), per_class: int = 4) -> None:
    """An ImageNet-layout tree of small RGB PNGs: root/{train,val}/<class>/<i>.png."""
    from PIL import Image

    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")


# --------------------------------------------------------------------------------------------- splits


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(4, 60), min_size=1, max_size=6),
    train_fraction=st.floats(0.05, 0.6),
    val_fraction=st.floats(0.05, 0.4),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_is_class_balanced_disjoint_and_reproducible(counts, train_fraction, val_fraction, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    train, val = class_balanced_split(labels, train_fraction, val_fraction, seed)
    assert not set(train) & set(val)
    for c, n in enumerate(counts):
        assert (labels[train] == c).sum() == max(1, round(train_fraction * n))
        assert (labels[val] == c).sum() == max(1, min(round(val_fraction * n), n - max(1, round(train_fraction * n))))
    again = class_balanced_split(labels, train_fraction, val_fraction, seed)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])


def test_split_depends_on_seed_and_train_part_not_on_val_fraction():
    labels = np.repeat(np.arange(10), 100)
    a_train, a_val = class_balanced_split(labels, 0.1, 0.05, seed=0)
    b_train, _ = class_balanced_split(labels, 0.1, 0.3, seed=0)
    c_train, _ = class_balanced_split(labels, 0.1, 0.05, seed=1)
    assert np.array_equal(a_train, b_train)
    assert not np.array_equal(a_train, c_train)
    assert len(a_train) == 100 and len(a_val) == 50


@pytest.mark.parametrize("field,value", [("search_train_fraction", 0.0), ("search_val_fraction", 1.5)])
def test_fraction_outside_unit_interval_is_a_value_error(field, value):
    with pytest.raises(ValueError, match=f"data.{field}: got {value}, allowed: 0 < fraction <= 1"):
        DataConfig(**{field: value})
    fractions = {"train_fraction": 0.5, "val_fraction": 0.2}
    fractions["train_fraction" if field == "search_train_fraction" else "val_fraction"] = value
    with pytest.raises(ValueError, match=f"data.{field}: got {value}"):
        class_balanced_split(np.zeros(10, dtype=np.int64), seed=0, **fractions)


def test_overlapping_fractions_and_tiny_classes_are_rejected():
    with pytest.raises(ValueError, match=r"search_train_fraction \+ data.search_val_fraction"):
        DataConfig(search_train_fraction=0.8, search_val_fraction=0.3)
    with pytest.raises(ValueError, match="class 1 has 1 samples"):
        class_balanced_split(np.array([0, 0, 0, 0, 0, 1]), 0.4, 0.3, seed=0)


def test_epoch_seed_differs_per_epoch_and_seed():
    seeds = {epoch_seed(s, e) for s in range(3) for e in range(5)}
    assert len(seeds) == 15 and all(0 <= s < 2**63 for s in seeds)


# --------------------------------------------------------------------------------------------- config


def test_data_config_from_dict_is_strict():
    cfg = from_dict(DataConfig, {"dataset": "cifar10", "batch_size": 64, "hflip": None}, "data")
    assert cfg.dataset == "cifar10" and cfg.batch_size == 64
    with pytest.raises(ValueError, match=r"data: unknown key 'batchsize', allowed: dataset, root"):
        from_dict(DataConfig, {"batchsize": 64}, "data")
    with pytest.raises(ValueError, match=r"data.dataset: got 'mnist', allowed: 'fashion-mnist', 'cifar10'"):
        from_dict(DataConfig, {"dataset": "mnist"}, "data")
    with pytest.raises(ValueError, match=r"data.batch_size: got '64', allowed: int"):
        from_dict(DataConfig, {"batch_size": "64"}, "data")
    with pytest.raises(ValueError, match=r"data.augment: got 1, allowed: bool"):
        from_dict(DataConfig, {"augment": 1}, "data")


# --------------------------------------------------------------------------------------------- IDX / Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    write_idx(tmp_path / "x-idx3-ubyte", array, gz)
    path = tmp_path / ("x-idx3-ubyte.gz" if gz else "x-idx3-ubyte")
    assert np.array_equal(read_idx(path), array)


def test_read_idx_rejects_wrong_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match=r"bad: not a uint8 IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(ValueError, match=r"short: truncated IDX file"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_fashion_mnist_loads_from_idx_fixture(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    arrays = write_fashion(folder, per_class=6, gz=layout == "flat")
    cfg = DataConfig(root=str(tmp_path), input_size=28, search_train_fraction=0.5, search_val_fraction=0.5)
    data = build_loaders(cfg)
    assert (data.num_classes, data.in_chans, data.input_size) == (10, 1, 28)
    assert data.train.num_samples == 30 and data.val.num_samples == 30 and data.test.num_samples == 20
    # the test loader is unaugmented and in order: undoing the normalisation gives back the file's pixels
    images, labels = next(iter(data.test))
    norm = data.test.normalize
    pixels = ((images - norm.shift) / norm.scale).round().to(torch.uint8)
    assert torch.equal(pixels[:, 0], torch.from_numpy(arrays["t10k"]))
    assert torch.equal(labels, torch.from_numpy(arrays["t10k_labels"]).long())


def test_fashion_mnist_resizes_once_to_input_size(tmp_path):
    write_fashion(tmp_path)
    data = build_loaders(DataConfig(root=str(tmp_path), input_size=32, search_train_fraction=0.5))
    assert data.train.images.shape[-2:] == (32, 32) and data.train.images.dtype == torch.uint8
    images, _ = next(iter(data.train))
    assert images.shape[-2:] == (32, 32) and images.is_contiguous(memory_format=torch.channels_last)


def test_fashion_mnist_missing_root_and_files_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"data.root: '.*nowhere' is not a directory"):
        build_loaders(DataConfig(root=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match=r"data.root: no train-images-idx3-ubyte\[.gz\] in '.*'"):
        build_loaders(DataConfig(root=str(tmp_path)))
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"missing t10k-images-idx3-ubyte or t10k-labels-idx1-ubyte in"):
        build_loaders(DataConfig(root=str(tmp_path)))


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_search_split_is_10_percent_per_class():
    data = build_loaders(DataConfig())
    counts = np.bincount(data.train.labels.numpy(), minlength=10)
    assert counts.tolist() == [600] * 10  # 10% of 6,000 per class
    assert data.val.num_samples == 3000 and data.test.num_samples == 10000
    assert not set(data.split_indices["search_train"]) & set(data.split_indices["search_val"])
    assert data.split_digest == build_loaders(DataConfig()).split_digest


# --------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_loads_from_pickle_fixture(tmp_path, num_classes):
    written = write_cifar(tmp_path, num_classes)
    cfg = DataConfig(
        dataset=f"cifar{num_classes}", root=str(tmp_path), search_train_fraction=0.5, search_val_fraction=0.5
    )
    data = build_loaders(cfg)
    assert (data.num_classes, data.in_chans, data.input_size) == (num_classes, 3, 32)
    assert data.test.num_samples == 20
    train_count = 100 if num_classes == 10 else 20
    assert data.train.num_samples + data.val.num_samples <= train_count
    # CHW rows of the pickle are the tensor's channels: undo normalisation and compare pixel for pixel
    images, _ = next(iter(data.test))
    norm = data.test.normalize
    pixels = ((images - norm.shift) / norm.scale).round().to(torch.uint8)
    expected = torch.from_numpy(written["test_batch" if num_classes == 10 else "test"]).view(-1, 3, 32, 32)
    assert torch.equal(pixels, expected)


def test_cifar_missing_file_is_named(tmp_path):
    write_cifar(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"data.root: missing .*cifar-10-batches-py/data_batch_3"):
        build_loaders(DataConfig(dataset="cifar10", root=str(tmp_path)))


def test_cifar_corrupt_file_is_a_value_error(tmp_path):
    write_cifar(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"cannot read CIFAR-10 files in .*cifar-10-batches-py"):
        build_loaders(DataConfig(dataset="cifar10", root=str(tmp_path)))


# --------------------------------------------------------------------------------------------- ImageFolder


def test_imagefolder_tree_loads(tmp_path):
    write_folder(tmp_path, per_class=4)
    cfg = DataConfig(
        dataset="imagefolder",
        root=str(tmp_path),
        input_size=16,
        batch_size=4,
        eval_batch_size=4,
        workers=0,
        search_train_fraction=0.5,
        search_val_fraction=0.5,
    )
    data = build_loaders(cfg)
    assert (data.num_classes, data.in_chans, data.input_size) == (3, 3, 16)
    assert (data.train.num_samples, data.val.num_samples, data.test.num_samples) == (6, 6, 12)
    batches = list(data.test)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    images = batches[0][0]
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert len(data.train) == 1  # 6 samples, batch 4, last partial batch dropped


def test_imagefolder_workers_reproduce_an_epoch(tmp_path):
    write_folder(tmp_path, per_class=4)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), input_size=16, batch_size=6, workers=1)
    loader = build_loaders(cfg, mode="final").train
    loader.set_epoch(3)
    first = [x for x, _ in loader]
    loader.set_epoch(3)
    second = [x for x, _ in loader]
    loader.set_epoch(4)
    other = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_imagefolder_training_loader_shards_global_batches_across_ranks(tmp_path):
    write_folder(tmp_path, per_class=4)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), input_size=16, batch_size=4, workers=0)
    loader = build_loaders(cfg, mode="final").train
    views = [loader.shard(rank, 2) for rank in range(2)]
    for view in (loader, *views):
        view.set_epoch(5)
        view.generator.manual_seed(epoch_seed(cfg.seed, 5))
    whole = list(loader.batches)
    slices = [list(view.batches) for view in views]
    assert len(whole) == 3 and [len(b) for b in whole] == [4, 4, 4]  # 12 images, batch 4
    assert [a + b for a, b in zip(*slices, strict=True)] == whole  # the same global batches, one slice per rank
    views[1].set_epoch(5)
    images, _ = next(iter(views[1]))
    assert images.shape == (2, 3, 16, 16) and len(views[1]) == len(loader) == 3
    assert (loader.rank, loader.world, views[1].rank, views[1].world) == (0, 1, 1, 2)
    with pytest.raises(ValueError, match="data.batch_size: got 4, allowed: a multiple of the 3 processes"):
        loader.shard(0, 3)


def test_imagefolder_errors_name_the_folder(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"class folder '.*train/dog' has no images"):
        build_loaders(DataConfig(dataset="imagefolder", root=str(tmp_path), workers=0))
    (tmp_path / "train" / "dog").rmdir()
    for png in (tmp_path / "val").rglob("*.png"):
        png.unlink()
    with pytest.raises(ValueError, match=r"class folder '.*val/ant' has no images"):
        build_loaders(DataConfig(dataset="imagefolder", root=str(tmp_path), workers=0))
    with pytest.raises(ValueError, match=r"data.root: '.*elsewhere' is not a directory"):
        build_loaders(DataConfig(dataset="imagefolder", root=str(tmp_path / "elsewhere"), workers=0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"data.root: missing split folder '.*empty/train'"):
        build_loaders(DataConfig(dataset="imagefolder", root=str(tmp_path / "empty"), workers=0))
    with pytest.raises(ValueError, match=r"data.root: got None"):
        build_loaders(DataConfig(dataset="imagefolder"))


def test_a_bad_randaugment_spec_is_refused_before_reading_data():
    with pytest.raises(ValueError, match=r"data.randaugment: got 'auto-m9'"):
        build_loaders(DataConfig(dataset="fashion-mnist", root="/nonexistent", randaugment="auto-m9"))


def test_imagefolder_randaugment_builds(tmp_path):
    write_folder(tmp_path)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), input_size=16, workers=0, randaugment="rand-m9-mstd0.5")
    data = build_loaders(cfg, mode="final")
    images, labels = next(iter(data.train))
    assert images.shape[1:] == (3, 16, 16) and torch.isfinite(images).all() and len(labels) == len(images)


# --------------------------------------------------------------------------------------------- digits, synthetic


def test_digits_is_real_and_its_test_split_fixed():
    train, test = load_digits()
    assert train.images.shape[1:] == (1, 8, 8) and len(train.labels) + len(test.labels) == 1797
    assert set(np.unique(test.labels)) == set(range(10))
    a = build_loaders(DataConfig(dataset="digits", seed=0, search_train_fraction=0.5, search_val_fraction=0.2))
    b = build_loaders(DataConfig(dataset="digits", seed=1, search_train_fraction=0.5, search_val_fraction=0.2))
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.train.labels, b.train.labels)
    assert a.train.hflip is False  # flipping a digit changes its meaning


def test_synthetic_is_deterministic_and_class_dependent():
    (train_a, _), (train_b, _) = make_synthetic(), make_synthetic()
    assert np.array_equal(train_a.images, train_b.images)
    means = np.stack([train_a.images[train_a.labels == c].mean(0) for c in range(10)])
    spread_between = np.abs(means[:, None] - means[None]).mean()
    assert spread_between > 20  # class templates differ by far more than rounding


# --------------------------------------------------------------------------------------------- device loader


def _loader(n=40, batch=16, **kw) -> DeviceLoader:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 6, 6).contiguous()
    labels = torch.arange(n) % 10
    return DeviceLoader(images, labels, num_classes=10, batch_size=batch, mean=[0.0], std=[1 / 255], **kw)


def test_device_loader_without_augmentation_is_a_permutation_and_keeps_labels():
    loader = _loader(train=True, seed=3)
    assert len(loader) == 2  # 40 // 16: the last partial batch is dropped
    seen = []
    for images, labels in loader:
        ids = images[:, 0, 0, 0].round().long()  # std 1/255, mean 0: the value is the sample id
        assert torch.equal(labels, ids % 10)
        seen += ids.tolist()
    assert len(set(seen)) == 32 and seen != sorted(seen)


def test_device_loader_epochs_are_reproducible_and_differ():
    loader = _loader(train=True, seed=3, crop_padding=2, hflip=True)

    def run(epoch):
        loader.set_epoch(epoch)
        return [x.clone() for x, _ in loader]

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_eval_loader_keeps_order_and_every_sample():
    loader = _loader(n=40, batch=16, train=False, crop_padding=4, hflip=True)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 8]
    ids = torch.cat([x[:, 0, 0, 0] for x, _ in batches]).round().long()
    assert torch.equal(ids, torch.arange(40))


def test_random_crop_flip_shifts_with_zero_fill_and_flips():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(3, 1, 1, 1)
    shifts = torch.tensor([[0, 0], [1, 0], [0, -1]])
    out = random_crop_flip(images, shifts, None, padding=1)
    assert torch.equal(out[0], images[0])
    assert torch.equal(out[1, 0, :3], images[1, 0, 1:]) and out[1, 0, 3].sum() == 0  # moved up, zero row below
    assert torch.equal(out[2, 0, :, 1:], images[2, 0, :, :3]) and out[2, 0, :, 0].sum() == 0  # moved right
    flipped = random_crop_flip(images, None, torch.tensor([True, False, True]), padding=0)
    assert torch.equal(flipped[0], images[0].flip(-1)) and torch.equal(flipped[1], images[1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), padding=st.integers(0, 3), chans=st.integers(1, 3))
def test_random_crop_flip_equals_per_sample_crop_then_flip(seed, padding, chans):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (5, chans, 6, 7), generator=g, dtype=torch.uint8)
    shifts = torch.randint(-padding, padding + 1, (5, 2), generator=g)
    flips = torch.rand(5, generator=g) < 0.5
    out = random_crop_flip(images, shifts, flips, padding)
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    for i in range(5):
        top, left = padding + int(shifts[i, 0]), padding + int(shifts[i, 1])
        expected = padded[i, :, top : top + 6, left : left + 7]
        expected = expected.flip(-1) if flips[i] else expected
        assert torch.equal(out[i], expected)


def test_resize_uint8_keeps_constant_images_constant():
    images = torch.full((3, 1, 28, 28), 77, dtype=torch.uint8)
    out = resize_uint8(images, 32)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.uint8 and bool((out == 77).all())
    assert resize_uint8(images, 28) is images


def test_normalisation_uses_search_train_statistics(synthetic_data):
    images = torch.cat([x for x, _ in synthetic_data.test])
    assert abs(images.mean().item()) < 0.2 and 0.8 < images.std().item() < 1.2
    assert synthetic_data.train.normalize.scale.shape == (1, 1, 1, 1)


def test_final_mode_trains_on_everything_and_validates_on_test():
    data = build_loaders(DataConfig(dataset="synthetic", input_size=16), mode="final")
    assert data.train.num_samples == 5000 and data.val is data.test and data.test.num_samples == 1000
    with pytest.raises(ValueError, match="mode: got 'other'"):
        build_loaders(DataConfig(dataset="synthetic"), mode="other")  # type: ignore[arg-type]


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 1), (5, 4), (64, 4)])
def test_image_folder_workers_default_to_the_cores_less_one(
    cores: int, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data.workers: null` starts min(4, cores - 1) loader processes, leaving a core to training."""
    from menas import machine

    monkeypatch.setattr(machine, "cpu_cores", lambda: cores)
    assert DataConfig().workers is None and machine.default_workers() == workers
