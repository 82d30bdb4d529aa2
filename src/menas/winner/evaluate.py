"""`menas evaluate`: a trained network's top-1, top-5, loss and speed on the test split (or its search-val split),
with a confusion matrix as JSON and as a figure.

The data config is the one recorded with the network (run.json, the run's config, an export's genome.json), so
`val` is exactly the search-val split the network was scored on during the search (same seed and fractions) and
the images are normalised with the statistics it was trained with. `test` is the dataset's official test split,
which no search or training in menas reads. Scoring is `menas.train.loop.evaluate`, the loop trials use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from menas.config import DataConfig, to_dict
from menas.data.device import resolve_device
from menas.data.loaders import renormalize
from menas.data.splits import build_loaders, preprocessing
from menas.errors import UserError
from menas.files import write_atomically, write_json
from menas.train.checkpoint import load_weights
from menas.train.loop import amp_dtype, evaluate
from menas.winner.load import NetworkSource, find_network

Split = Literal["test", "val"]


@dataclass
class Evaluation:
    """What `evaluate_network` measured and wrote. Accuracies in percent; `confusion[true][predicted]` counts."""

    split: str
    top1: float
    top5: float
    loss: float
    images: int
    images_per_s: float
    confusion: list[list[int]]
    record: dict[str, Any]
    files: dict[str, Path]


def evaluate_network(
    path: str | Path,
    *,
    split: Split = "test",
    dataset: str | None = None,
    root: str | None = None,
    input_size: int | None = None,
    batch_size: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    threads: int | None = None,
) -> Evaluation:
    """Scores the network at `path` (see `menas.winner.load.find_network`) on a split and writes
    `evaluate-SPLIT.json` and `confusion-SPLIT.png` to `out` (default: beside the weights; a run's folder).

    Raises:
        UserError: a bad path, no dataset recorded or given, `val` without the recorded split, or a network whose
            input channels or classes differ from the data's (names which).
    """
    if split not in ("test", "val"):
        raise UserError(f"--split: got {split!r}, allowed: test, val")
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads: got {threads}, allowed: integers >= 1")
        torch.set_num_threads(threads)
    source = find_network(path)
    cfg = _data_config(source, split, dataset, root, input_size, batch_size)
    data = build_loaders(cfg, resolve_device(device))
    model = load_weights(source.weights, data.num_classes, data.in_chans).to(data.train.device)
    loader = data.test if split == "test" else data.val
    trained = source.record.get("preprocessing")
    if isinstance(trained, dict) and "mean" in trained:  # normalise as the network was trained (e.g. a retrain)
        renormalize(loader, trained["mean"], trained["std"])
    scores = evaluate(model, loader, confusion=True)
    record = {
        "split": split,
        "source": str(path),
        "weights": str(source.weights),
        "genome": model.genome.to_str(),
        "top1": scores["top1"],
        "top5": scores["top5"],
        "loss": scores["loss"],
        "images": scores["images"],
        "images_per_s": scores["images"] / scores["seconds"],
        "batch_size": cfg.eval_batch_size,
        "device": str(data.train.device),
        "threads": torch.get_num_threads(),
        "amp": str(amp_dtype("auto", data.train.device) or "off"),
        "data": to_dict(cfg),
        "preprocessing": trained if isinstance(trained, dict) and "mean" in trained else preprocessing(data),
        "confusion": scores["confusion"],
    }
    folder = Path(out) if out is not None else source.folder
    files = {"json": write_json(folder / f"evaluate-{split}.json", record)}
    files["figure"] = plot_confusion(scores["confusion"], folder / f"confusion-{split}.png", _title(record, cfg))
    return Evaluation(
        split,
        scores["top1"],
        scores["top5"],
        scores["loss"],
        scores["images"],
        record["images_per_s"],
        scores["confusion"],
        record,
        files,
    )


def _data_config(
    source: NetworkSource,
    split: str,
    dataset: str | None,
    root: str | None,
    input_size: int | None,
    batch_size: int | None,
) -> DataConfig:
    """The recorded data config with the given overrides. Another dataset than the recorded one starts from the
    defaults; `val` needs the recorded config (its seed and fractions define the split)."""
    recorded = source.data
    if dataset is None and recorded is None:
        raise UserError(f"--data: required, {str(source.weights.parent)!r} does not record the dataset")
    same = recorded is not None and dataset in (None, recorded.dataset)
    if split == "val" and not same:
        raise UserError(
            f"--split val: {str(source.weights.parent)!r} does not record a search-val split of "
            f"{dataset!r} (the split is defined by the recorded data seed); use --split test"
        )
    statistics = (source.record.get("preprocessing") or {}).get("statistics")
    if split == "val" and statistics == "whole training set":
        raise UserError(
            f"--split val: {str(source.weights.parent)!r} was trained on the whole training set, "
            "search-val included; use --split test"
        )
    cfg = recorded if same and recorded is not None else DataConfig(dataset=dataset)  # type: ignore[arg-type]
    if cfg.input_size is None and source.input_size is not None and not same:
        cfg = dataclasses.replace(cfg, input_size=source.input_size)  # an export folder records its input size
    changes = {"root": root, "input_size": input_size, "eval_batch_size": batch_size}
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


def _title(record: dict[str, Any], cfg: DataConfig) -> str:
    return (
        f"{cfg.dataset} {record['split']}: top-1 {record['top1']:.2f}%, top-5 {record['top5']:.2f}% "
        f"({record['images']:,} images)"
    )


def plot_confusion(matrix: list[list[int]], path: Path, title: str) -> Path:
    """The confusion matrix as a PNG: rows (true classes) normalised to 1, counts written in the cells when
    there are at most 20 classes."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    counts = torch.tensor(matrix, dtype=torch.float64)
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    classes = len(matrix)
    side = min(12.0, 3.0 + 0.45 * classes)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class")
    if classes <= 20:
        ax.set_xticks(range(classes))
        ax.set_yticks(range(classes))
        for i in range(classes):
            for j in range(classes):
                if matrix[i][j]:
                    color = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    try:
        return write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)
