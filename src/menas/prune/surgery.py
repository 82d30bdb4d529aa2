"""Pruning proposals as genomes, and weight inheritance into a pruned network.

*How much* to cut (`propose`: seeded rates per layer and per stage, optionally scaled to a share of the parent's
MACs; `apply_rates` never changes which layers add their input) and *how* to cut (`inherit_weights`: slices every
coupled tensor — expand conv and BN, depthwise conv and BN, SE reduce/expand, the projecting conv's inputs — keeping
the channels `menas.prune.importance` selects), kept apart as in Torch-Pruning.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from menas.config import LotteryConfig
from menas.nn.builder import MenasNet
from menas.prune.importance import residual_groups, select_channels
from menas.space.cost import count_cost
from menas.space.genome import Genome, StageGene, se_channels

# ------------------------------------------------------------------------------------------ proposals


@dataclass(frozen=True)
class Proposal:
    """A pruning proposal: rates per layer (expanded channels) and per stage (output channels), and the
    pruned genome they give."""

    mid_rates: tuple[tuple[float, ...], ...]
    stage_rates: tuple[float, ...]
    genome: Genome

    @property
    def mean_mid_rate(self) -> float:
        rates = [r for stage in self.mid_rates for r in stage]
        return sum(rates) / len(rates)


def _pruned(chs: int, rate: float, divisor: int) -> int:
    """Channels left after pruning `rate` of `chs`, rounded to a multiple of `divisor`, at least one group and
    never more than before."""
    if rate <= 0.0:
        return chs
    return min(chs, max(divisor, round(chs * (1.0 - rate) / divisor) * divisor))


def apply_rates(
    genome: Genome, mid_rates: Sequence[Sequence[float]], stage_rates: Sequence[float], divisor: int = 8
) -> Genome:
    """The pruned genome. A stage joined to the previous one by a residual takes its channels; a pruned width
    that would create a residual the original lacks (equal widths at a stride-1 boundary) moves to the nearest
    other multiple of `divisor`, so a proposal never changes which layers add their input."""
    groups = residual_groups(genome)
    outs: list[int] = []
    prev_out = genome.ds.out_chs
    for i, stage in enumerate(genome.stages):
        if groups[i] < 0:
            out = stage.out_chs
        elif groups[i] != i:
            out = prev_out
        else:
            out = _pruned(stage.out_chs, stage_rates[i], divisor)
            if stage.stride == 1 and out == prev_out:
                options = [c for c in range(divisor, stage.out_chs + 1, divisor) if c != prev_out]
                out = min(options, key=lambda c: (abs(c - out), -c)) if options else stage.out_chs
        outs.append(out)
        prev_out = out
    stages = tuple(
        StageGene(
            out_chs=outs[i],
            stride=stage.stride,
            layers=tuple(
                replace(layer, mid_chs=_pruned(layer.mid_chs, mid_rates[i][j], divisor))
                for j, layer in enumerate(stage.layers)
            ),
        )
        for i, stage in enumerate(genome.stages)
    )
    return replace(genome, stages=stages)


def _scaled(raw: Sequence[Sequence[float]], scale: float, cap: float) -> list[list[float]]:
    return [[min(cap, r * scale) for r in stage] for stage in raw]


def propose(
    genome: Genome,
    cfg: LotteryConfig,
    rng: random.Random,
    input_size: int = 224,
    in_chans: int = 3,
    num_classes: int = 1000,
) -> list[Proposal]:
    """`cfg.proposals` seeded random proposals. With `macs_keep`, each proposal draws a target share of the
    parent's MACs and scales its drawn rates by bisection (40 halvings, no rejection loop) to meet it."""
    parent_macs = count_cost(genome, input_size, in_chans, num_classes).macs
    proposals = []
    for _ in range(cfg.proposals):
        mids = [[rng.uniform(*cfg.mid_rates) for _ in stage.layers] for stage in genome.stages]
        stages = [rng.uniform(*cfg.stage_rates) for _ in genome.stages]
        if cfg.macs_keep is not None:
            target = rng.uniform(*cfg.macs_keep)
            mids, stages = _fit_macs(
                genome, mids, stages, target * parent_macs, cfg, (input_size, in_chans, num_classes)
            )
        pruned = apply_rates(genome, mids, stages, cfg.divisor)
        proposals.append(Proposal(tuple(tuple(s) for s in mids), tuple(stages), pruned))
    return proposals


def _fit_macs(
    genome: Genome,
    mids: list[list[float]],
    stages: list[float],
    target: float,
    cfg: LotteryConfig,
    shape: tuple[int, int, int],
) -> tuple[list[list[float]], list[float]]:
    """Scales the drawn rates by one factor so the pruned MACs come as close to `target` as rounding allows.

    Rates are capped at 0.95 (a layer keeps at least one channel group anyway). MACs fall monotonically as
    the factor grows, so bisection converges; 40 halvings is far below channel rounding.
    """
    cap = 0.95
    raw_mids = [[max(r, 1e-3) for r in stage] for stage in mids]  # every layer can be scaled
    use_stages = cfg.stage_rates[1] > 0
    raw_stages = [max(r, 1e-3) for r in stages] if use_stages else [0.0] * len(stages)
    low, high = 0.0, cap / min(min(min(s) for s in raw_mids), min(raw_stages) if use_stages else 1.0)

    def macs(scale: float) -> int:
        pruned = apply_rates(
            genome, _scaled(raw_mids, scale, cap), [min(cap, r * scale) for r in raw_stages], cfg.divisor
        )
        return count_cost(pruned, *shape).macs

    for _ in range(40):
        mid = (low + high) / 2
        if macs(mid) > target:
            low = mid
        else:
            high = mid
    scale = high
    return _scaled(raw_mids, scale, cap), [min(cap, r * scale) for r in raw_stages]


# ------------------------------------------------------------------------------------------ weight inheritance


def keep_plan(model: MenasNet, pruned: Genome, importance: str = "l1") -> dict[str, tuple]:
    """For every conv/BN module whose shape changes: (kept output indices, kept input indices), None = all."""
    genome = model.genome
    plan: dict[str, tuple] = {}
    in_keep = None
    stage_keep: list[torch.Tensor | None] = []
    groups = residual_groups(genome)
    for i, (stage, new_stage) in enumerate(zip(genome.stages, pruned.stages, strict=True)):
        blocks = model.stages[i]
        if groups[i] < 0:
            out_keep = None  # chained to the fixed ds block by residuals
        elif groups[i] != i:
            out_keep = stage_keep[i - 1]  # same residual chain as the previous stage: same channels
        else:
            chain = [j for j, g in enumerate(groups) if g == i]
            weights = [blk.project.conv.weight for j in chain for blk in model.stages[j]]
            out_keep = select_channels(weights, new_stage.out_chs, importance)
        stage_keep.append(out_keep)
        for j, (layer, new_layer) in enumerate(zip(stage.layers, new_stage.layers, strict=True)):
            block, prefix = blocks[j], f"stages.{i}.{j}"
            mid_keep = select_channels([block.expand.conv.weight], new_layer.mid_chs, importance)
            plan[f"{prefix}.expand.conv"] = (mid_keep, in_keep)
            plan[f"{prefix}.expand.bn"] = (mid_keep, None)
            plan[f"{prefix}.dw.conv"] = (mid_keep, None)
            plan[f"{prefix}.dw.bn"] = (mid_keep, None)
            if layer.se:
                reduce = block.se.conv_reduce.weight
                rd_keep = select_channels([reduce], se_channels(new_layer.mid_chs), importance)
                plan[f"{prefix}.se.conv_reduce"] = (rd_keep, mid_keep)
                plan[f"{prefix}.se.conv_expand"] = (mid_keep, rd_keep)
            plan[f"{prefix}.project.conv"] = (out_keep, mid_keep)
            plan[f"{prefix}.project.bn"] = (out_keep, None)
            in_keep = out_keep
    plan["head_conv.conv"] = (None, in_keep)
    return plan


def slice_channels(tensor: torch.Tensor, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> torch.Tensor:
    """`tensor` restricted to the kept output (dim 0) and input (dim 1) channels; None keeps all."""
    if out_keep is not None and tensor.dim() >= 1:
        tensor = tensor.index_select(0, out_keep)
    if in_keep is not None and tensor.dim() >= 2:
        tensor = tensor.index_select(1, in_keep)
    return tensor


def inherit_weights(model: MenasNet, pruned: Genome, importance: str = "l1", channels_last: bool = False) -> MenasNet:
    """A model of the pruned genome holding the kept slices of `model`'s trained tensors (BN statistics too).

    The child is a narrowed copy of `model`'s module tree rather than a freshly built network: building one would
    be a large part of the cost of an inheritance (see BENCHMARKS.md, "Lottery tickets"), while its layers,
    residuals and SE placement are the parent's by construction (`apply_rates` never changes them). The result
    equals `build_model(pruned)` loaded with the slices (same modules, attributes and tensors; tested). With all
    rates 0 it computes exactly what `model` computes. Pass `channels_last` when the data is: a contiguous model
    on channels_last batches runs many times slower.
    """
    plan = keep_plan(model, pruned, importance)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    child = _narrowed(model, "", plan, fmt)
    child.genome = pruned
    return child


def _narrowed(module: nn.Module, name: str, plan: dict[str, tuple], fmt: torch.memory_format) -> nn.Module:
    """A copy of `module` (recursively) whose tensors are the slices `plan` keeps and whose channel attributes
    match them. Parent tensors are never shared: the child can be recalibrated and fine-tuned on its own."""
    out_keep, in_keep = plan.get(name, (None, None))
    clone = module.__class__.__new__(module.__class__)
    state = dict(module.__dict__)
    for key, value in state.items():  # hook dicts and the like: the clone gets its own containers
        if isinstance(value, dict):
            state[key] = type(value)(value)
    clone.__dict__.update(state)
    for key, param in module._parameters.items():
        if param is not None:
            clone._parameters[key] = nn.Parameter(
                _fresh(slice_channels(param.detach(), out_keep, in_keep), fmt), requires_grad=param.requires_grad
            )
    for key, buf in module._buffers.items():
        if buf is not None:
            sliced = buf if key == "num_batches_tracked" else slice_channels(buf, out_keep, in_keep)
            clone._buffers[key] = _fresh(sliced, fmt)
    for key, sub in module._modules.items():
        if sub is not None:
            clone._modules[key] = _narrowed(sub, f"{name}.{key}" if name else key, plan, fmt)
    if isinstance(clone, nn.Conv2d):
        depthwise = module.groups == module.in_channels and module.groups > 1
        clone.out_channels = clone.weight.shape[0]
        clone.groups = clone.out_channels if depthwise else module.groups
        clone.in_channels = clone.weight.shape[1] * clone.groups
    elif isinstance(clone, nn.modules.batchnorm._BatchNorm):
        clone.num_features = clone.weight.shape[0]
    return clone


def _fresh(tensor: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """A copy with the strides a freshly built model has (then `.to(memory_format=fmt)`): clone() may pick
    other strides for size-1 dims, and oneDNN then takes another kernel, so outputs would drift."""
    memory_format = fmt if tensor.dim() == 4 else torch.contiguous_format
    return torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device, memory_format=memory_format).copy_(
        tensor
    )
