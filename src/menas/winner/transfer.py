"""Transfer learning (`menas transfer`): a trained network fine-tuned on another dataset, the paper's Table 2.

The network keeps its genome and trained weights except at the two ends: the classifier is replaced by a fresh one
for the new number of classes, and the stem convolution is adapted to the new channel count with timm's
`adapt_input_conv` (3 -> 1 channels sums the RGB filters, 1 -> 3 repeats the grey filter scaled by 1/3). It is then
fine-tuned at the new dataset's input size with the "transfer" recipe (`RetrainConfig.preset("transfer")`) by
`menas.winner.retrain.fit`, so outputs, resume and the final test-split scoring are the retrain's: `model.safetensors`
(+ the other of raw/EMA), `run.json` (kind "transfer"), `transfer.json`, `recipe.yaml`, `retrain.ckpt`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from menas.config import RetrainConfig
from menas.data.splits import SearchData, build_loaders
from menas.errors import UserError
from menas.nn.builder import MenasNet, build_model
from menas.space.cost import count_cost
from menas.train import distributed
from menas.train.checkpoint import load_weights
from menas.train.loop import EpochStats, seed_trial
from menas.winner.load import NetworkSource
from menas.winner.retrain import add_drop_path, begin, check_out, fit, make_run_record, result_record, write_outputs

TRANSFER_FILE = "transfer.json"
#: `kind` recorded in run.json: a transfer folder resumes only a transfer of the same genome.
KIND = "transfer"
CLASSIFIER = "classifier."
STEM_WEIGHT = "stem.conv.weight"


def adapt_network(trained: MenasNet, num_classes: int, in_chans: int, drop_rate: float = 0.2) -> MenasNet:
    """A new network of `trained`'s genome for `num_classes` classes and `in_chans` input channels: every weight
    copied from `trained` except the classifier (freshly initialised, from torch's generator) and the stem
    convolution (adapted by timm's `adapt_input_conv` when the channel count differs)."""
    from timm.models import adapt_input_conv

    model = build_model(trained.genome, num_classes, in_chans, drop_rate=drop_rate)
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith(CLASSIFIER)}
    base = state[STEM_WEIGHT].shape[1]
    state[STEM_WEIGHT] = adapt_input_conv(in_chans, state[STEM_WEIGHT], base_chans=base)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith(CLASSIFIER) for key in missing):  # the builder changed, not the user
        raise RuntimeError(f"adapt_network: unexpected {unexpected}, missing {missing}")
    return model


def transfer(
    source: NetworkSource,
    cfg: RetrainConfig,
    out: Path,
    *,
    device: torch.device,
    progress: Callable[[EpochStats], None] | None = None,
    on_start: Callable[[SearchData, Any, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tunes `source`'s trained network on `cfg.data` into `out` and returns the transfer.json record.

    Args:
        source: a network with weights (`menas.winner.load.find_network`).
        cfg: the resolved recipe, its data config the new dataset.
        out: the output folder; a rerun with the same arguments resumes from its epoch checkpoint.
        device: where to train.
        progress: called after each epoch.
        on_start: called with the loaders, the cost and the epochs already done (a resume) before training.

    Raises:
        UserError: a folder holding something else (another command's results, another genome's transfer, a
            checkpoint of other settings), or data that cannot be read; nothing is written then.
    """
    if source.weights is None:
        raise UserError(f"transfer: {source.label!r} has no trained weights")
    trained = load_weights(source.weights)
    run_record = make_run_record(KIND, trained.genome, cfg, source.label)
    check_out(out, trained.genome, run_record, kind=KIND)
    finished_before = (out / TRANSFER_FILE).is_file()
    try:
        data = build_loaders(
            cfg.data,
            device,
            mode="retrain",
            holdout_fraction=cfg.holdout_fraction,
            channels_last=cfg.train.channels_last,
        )
    except UserError as exc:
        raise UserError(f"--data {cfg.data.dataset}: {exc}; give its folder with --root DIR") from None
    seed_trial(cfg.train.seed)  # the new classifier's initialisation
    model = adapt_network(trained, data.num_classes, data.in_chans, cfg.dropout)
    add_drop_path(model, cfg.drop_path)
    cost = count_cost(trained.genome, data.input_size, data.in_chans, data.num_classes)
    begin(out, data, cost, run_record, on_start)
    outcome = fit(model, data, cfg.train, out, progress=progress)
    record = result_record(
        dataclasses.replace(source, genome=trained.genome), cfg, outcome, cost, device, "pretrained", None
    )
    record.update(
        {
            "dataset": cfg.data.dataset,
            "from": {"num_classes": trained.num_classes, "in_chans": trained.stem.conv.in_channels},
            "to": {"num_classes": data.num_classes, "in_chans": data.in_chans, "input_size": data.input_size},
            "rerun": finished_before,
        }
    )
    if distributed.is_main():  # under torchrun, rank 0 writes
        write_outputs(out, trained.genome, model, outcome, run_record, record, cfg, TRANSFER_FILE)
    return record
