"""BatchNorm recalibration, EagleEye's observation: copied BN statistics are stale for a pruned (or inherited)
network, so its running statistics are recomputed exactly over a few fixed calibration batches
(`calibration_batches`, merged into larger passes by `merge_batches`) before it is scored (`recalibrate_bn`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------------------------------ BN recalibration

#: Calibration batches are merged into forward passes of up to this many images: one large pass is cheaper than
#: several small ones and gives the same statistics, up to each pass normalising with its own batch moments (see
#: BENCHMARKS.md, "Lottery tickets").
CALIB_PASS_IMAGES = 512


def calibration_batches(loader: Iterable[Batch], count: int, epoch: int) -> list[torch.Tensor]:
    """`count` fixed training batches (the loader's epoch `epoch`) for BN recalibration, reused for every
    proposal so that proposals differ only in their weights."""
    loader.set_epoch(epoch)
    batches = []
    for x, _ in loader:
        batches.append(x)
        if len(batches) == count:
            break
    return batches


def merge_batches(batches: Sequence[torch.Tensor], max_images: int = CALIB_PASS_IMAGES) -> list[torch.Tensor]:
    """The same images in fewer, larger batches of at most `max_images` (a batch larger than that stays whole),
    in the memory format of the first batch."""
    merged: list[list[torch.Tensor]] = []
    count = 0
    for x in batches:
        if merged and count + len(x) <= max_images:
            merged[-1].append(x)
            count += len(x)
        else:
            merged.append([x])
            count = len(x)
    out = [group[0] if len(group) == 1 else torch.cat(group) for group in merged]
    if batches and batches[0].dim() == 4 and batches[0].is_contiguous(memory_format=torch.channels_last):
        out = [x.contiguous(memory_format=torch.channels_last) for x in out]
    return out


@torch.inference_mode()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], bf16: bool = False) -> nn.Module:
    """Replaces every BatchNorm's running statistics by their exact average over `batches`.

    Statistics are reset and momentum set to None (PyTorch's cumulative average), only the BN layers run in
    train mode, no parameter changes; momentum and modes are restored afterwards. The model is left in eval
    mode, ready to score. With `bf16` the forward passes run under bf16 autocast (the statistics stay float32):
    cheaper, for ranking proposals. Runs in inference mode (the statistics are ordinary tensors after
    it, so the model can be fine-tuned).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        for x in batches:
            if bf16:
                with torch.autocast(x.device.type, dtype=torch.bfloat16):
                    model(x)
            else:
                model(x)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    return model
