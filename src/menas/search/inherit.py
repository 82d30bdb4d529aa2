"""Individual weight sharing: a bred child starts from its parents' trained weights.

The child's `Origin` (`menas.space.operators`) says which parent layer each child layer came from; this module maps
the parents' tensors onto a freshly built child, tensor by tensor:

- same shape: copied;
- fewer channels: the parent's most important channels, in the lottery's L1 order (`importance.select_channels`,
  the code tickets use), coupled as in the lottery: a layer's expanded channels by its expand filters, a
  stage's output channels by the project filters of the parent's whole residual chain, so every tensor that
  reads a channel set reads the same one;
- more channels or a larger kernel: the parent's weights in place (kernel centred, channels first) and the
  rest as `build_model` initialises it; a smaller kernel takes the parent kernel's centre;
- a new layer (added by a depth move) or a new SE module: as `build_model` initialises it (a new residual layer
  then starts as the identity, `zero_init_last`);
- stem, ds block, head and classifier from the origin's `backbone` parent.

Optional shrink-perturb (Ash & Adams 2020, as PBT-NAS uses it): every inherited parameter becomes
`shrink * inherited + perturb * fresh`, `fresh` being the freshly initialised value of that element. The fresh
child is built under `seed` in a forked RNG, so inheritance is reproducible and leaves torch's global RNG alone.
BatchNorm statistics are then recalibrated on calibration batches (`recalibrate.recalibrate_bn`), as for tickets.

`inherit_from_files` is the call a trial makes: it reads the parents' weights files and never raises for a
missing, corrupt or mismatched file; it returns a fallback reason instead, so the trial starts from scratch and
the search logs an event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from menas.nn.builder import MenasNet, build_model
from menas.prune.importance import residual_groups, select_channels
from menas.prune.recalibrate import recalibrate_bn
from menas.prune.surgery import slice_channels
from menas.space.genome import Genome, se_channels
from menas.space.operators import Origin
from menas.train.checkpoint import load_weights

Keep = torch.Tensor | None  # parent channel indices to take, in order; None: all of them
Plan = dict[str, tuple[int, str, Keep, Keep]]  # child module -> (parent, parent module, out keep, in keep)


@dataclass
class InheritCounts:
    """Tensors (parameters and BN statistics) of the child by how they were filled, for the report."""

    copied: int = 0
    sliced: int = 0
    padded: int = 0
    fresh: int = 0

    @property
    def inherited(self) -> int:
        return self.copied + self.sliced + self.padded

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Inheritance:
    """What `inherit_from_files` did: `model` is None, with the `fallback` reason, when the child must start
    from scratch."""

    model: MenasNet | None
    counts: InheritCounts = field(default_factory=InheritCounts)
    fallback: str | None = None

    def to_record(self) -> dict[str, Any]:
        """Plain data for the store: counts and the fallback reason."""
        return {"counts": self.counts.to_dict(), "fallback": self.fallback}


# ------------------------------------------------------------------------------------------ channel choice


class _Channels:
    """The parents' channel orders, computed once per (parent, stage, width)."""

    def __init__(self, parents: Sequence[MenasNet], importance: str) -> None:
        self.parents, self.importance = parents, importance
        self.groups = [residual_groups(p.genome) for p in parents]
        self.cache: dict[tuple[int, int, int], Keep] = {}

    def stage_out(self, p: int, stage: int, width: int) -> Keep:
        """The channels of parent `p`'s stage output (`stage` -1: the ds block's) that a child width takes."""
        if stage < 0:
            return self.pick([self.parents[p].ds.project.conv.weight], width)
        key = (p, stage, width)
        if key not in self.cache:
            groups, model = self.groups[p], self.parents[p]
            chain = [k for k, g in enumerate(groups) if g == groups[stage]]
            weights = [block.project.conv.weight for k in chain for block in model.stages[k]]
            if groups[stage] < 0:  # the chain adds the ds block's output
                weights.append(model.ds.project.conv.weight)
            self.cache[key] = self.pick(weights, width)
        return self.cache[key]

    def pick(self, weights: Sequence[torch.Tensor], width: int) -> Keep:
        """The most important `width` output channels of `weights`, or None when the child has room for all."""
        return select_channels(weights, min(width, weights[0].shape[0]), self.importance)


def inherit_plan(child: Genome, origin: Origin, parents: Sequence[MenasNet], importance: str = "l1") -> Plan:
    """For every child conv/BN module that inherits: (parent index, parent module name, kept output channels,
    kept input channels). Child modules absent from the plan stay freshly initialised."""
    channels = _Channels(parents, importance)
    back = origin.backbone
    fixed = (
        "stem.conv",
        "stem.bn",
        "ds.dw.conv",
        "ds.dw.bn",
        "ds.se.conv_reduce",
        "ds.se.conv_expand",
        "ds.project.conv",
        "ds.project.bn",
    )
    plan: Plan = {name: (back, name, None, None) for name in fixed}
    in_chs = child.layer_in_chs()
    for i, (stage, record) in enumerate(zip(child.stages, origin.stages, strict=True)):
        for j, (layer, source) in enumerate(zip(stage.layers, record.layers, strict=True)):
            if source is None:
                continue
            p, si, lj = source.parent, source.stage, source.layer
            block, theirs = parents[p].stages[si][lj], parents[p].genome.stages[si].layers[lj]
            mine, src = f"stages.{i}.{j}", f"stages.{si}.{lj}"
            in_keep = channels.stage_out(p, si - 1 if lj == 0 else si, in_chs[i][j])
            mid_keep = channels.pick([block.expand.conv.weight], layer.mid_chs)
            out_keep = channels.stage_out(p, si, stage.out_chs)
            plan[f"{mine}.expand.conv"] = (p, f"{src}.expand.conv", mid_keep, in_keep)
            for name in ("expand.bn", "dw.conv", "dw.bn"):
                plan[f"{mine}.{name}"] = (p, f"{src}.{name}", mid_keep, None)
            if layer.se and theirs.se:
                rd_keep = channels.pick([block.se.conv_reduce.weight], se_channels(layer.mid_chs))
                plan[f"{mine}.se.conv_reduce"] = (p, f"{src}.se.conv_reduce", rd_keep, mid_keep)
                plan[f"{mine}.se.conv_expand"] = (p, f"{src}.se.conv_expand", mid_keep, rd_keep)
            plan[f"{mine}.project.conv"] = (p, f"{src}.project.conv", out_keep, mid_keep)
            plan[f"{mine}.project.bn"] = (p, f"{src}.project.bn", out_keep, None)
    head = parents[back]
    last = len(head.genome.stages) - 1
    head_keep = channels.pick([head.head_conv.conv.weight], child.head.head_chs)
    last_keep = channels.stage_out(back, last, child.stages[-1].out_chs)
    plan["head_conv.conv"] = (back, "head_conv.conv", head_keep, last_keep)
    plan["head_conv.bn"] = (back, "head_conv.bn", head_keep, None)
    plan["conv_head"] = (back, "conv_head", None, head_keep)
    plan["classifier"] = (back, "classifier", None, None)
    return plan


# ------------------------------------------------------------------------------------------ tensor mapping


def _regions(dst: torch.Tensor, src: torch.Tensor) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where `src` goes in `dst` and which part of `src` goes there: channel dims (0, 1) from the start, kernel
    dims (2, 3 of a conv weight) centred, each dim cut to the smaller of the two."""
    to, take = [], []
    for d, (n_dst, n_src) in enumerate(zip(dst.shape, src.shape, strict=True)):
        n = min(n_dst, n_src)
        centred = d >= 2
        to.append(slice((n_dst - n) // 2 if centred else 0, ((n_dst - n) // 2 if centred else 0) + n))
        take.append(slice((n_src - n) // 2 if centred else 0, ((n_src - n) // 2 if centred else 0) + n))
    return tuple(to), tuple(take)


def _kind(dst: torch.Tensor, parent: torch.Tensor) -> str:
    """How a tensor was filled, from its shape against the parent's: padded when any dim grew, else sliced when
    any shrank, else copied."""
    if any(a > b for a, b in zip(dst.shape, parent.shape, strict=True)):
        return "padded"
    return "sliced" if dst.shape != parent.shape else "copied"


@torch.no_grad()
def _fill(model: nn.Module, plan: Plan, parents: Sequence[MenasNet], shrink: float, perturb: float) -> InheritCounts:
    counts = InheritCounts()
    sources = [dict(p.named_modules()) for p in parents]
    for name, module in model.named_modules():
        own = list(module._parameters.items()) + list(module._buffers.items())
        tensors = [(key, t, key in module._parameters) for key, t in own if t is not None]
        src_module = sources[plan[name][0]].get(plan[name][1]) if name in plan else None
        if src_module is None:
            counts.fresh += sum(1 for key, *_ in tensors if key != "num_batches_tracked")
            continue
        _, _, out_keep, in_keep = plan[name]
        for key, dst, is_param in tensors:
            parent = getattr(src_module, key)
            if key == "num_batches_tracked":
                dst.copy_(parent)
                continue
            src = slice_channels(parent.detach(), out_keep, in_keep).to(dst)
            to, take = _regions(dst, src)
            value = src[take]
            if is_param and (shrink != 1.0 or perturb != 0.0):
                value = shrink * value + perturb * dst[to]
            dst[to] = value
            kind = _kind(dst, parent)
            setattr(counts, kind, getattr(counts, kind) + 1)
    return counts


def inherit(
    child: Genome,
    origin: Origin,
    parents: Sequence[MenasNet],
    seed: int,
    importance: str = "l1",
    shrink: float = 1.0,
    perturb: float = 0.0,
    calib_batches: Sequence[torch.Tensor] | None = None,
    channels_last: bool = False,
) -> tuple[MenasNet, InheritCounts]:
    """The child network with its parents' weights mapped in (see the module docstring), on the parents'
    device (channels_last when asked: pass it when the data is); BN recalibrated on `calib_batches` when given
    (the model is then in eval mode).

    `parents[k]` is the trained network of the origin's parent k (the ticket's when the parent kept one)."""
    if len(parents) != origin.parents:
        raise ValueError(f"origin: {origin.parents} parent(s), got {len(parents)} network(s)")
    head = parents[origin.backbone]
    in_chans, num_classes = head.stem.conv.in_channels, head.num_classes
    device = next(head.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(child, num_classes, in_chans).to(device)
    counts = _fill(model, inherit_plan(child, origin, parents, importance), parents, shrink, perturb)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if calib_batches is not None:
        recalibrate_bn(model, calib_batches)
    return model, counts


def load_parents(
    paths: Sequence[str | Path], genomes: Sequence[Genome], num_classes: int, in_chans: int
) -> tuple[list[MenasNet] | None, str | None]:
    """The parents' networks from their weights files, or (None, reason) when one is missing, unreadable or
    holds another network than the genome bred from (the caller starts the child from scratch)."""
    models = []
    for path, genome in zip(paths, genomes, strict=True):
        try:
            model = load_weights(path, num_classes, in_chans)
        except Exception as exc:  # any unusable file (safetensors errors derive from Exception) is a fallback
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return None, f"parent weights {str(path)!r}: {first}"
        if model.genome != genome:
            return None, f"parent weights {str(path)!r}: hold {model.genome}, not the parent {genome}"
        models.append(model.eval())
    return models, None


def inherit_from_files(
    child: Genome,
    origin: Origin,
    paths: Sequence[str | Path],
    parent_genomes: Sequence[Genome],
    num_classes: int,
    in_chans: int,
    seed: int,
    **options: Any,
) -> Inheritance:
    """`inherit` from the parents' weights files (`paths[k]` for parent k); an `Inheritance` with no model and
    the reason when a file cannot be used. `options` are `inherit`'s keywords (importance, shrink, perturb,
    calib_batches, channels_last); the parents move to the calibration batches' device."""
    parents, reason = load_parents(paths, parent_genomes, num_classes, in_chans)
    if parents is None:
        return Inheritance(None, InheritCounts(), reason)
    calib_batches = options.get("calib_batches")
    if calib_batches:
        parents = [p.to(calib_batches[0].device) for p in parents]
    model, counts = inherit(child, origin, parents, seed, **options)
    return Inheritance(model, counts)


__all__ = ["InheritCounts", "Inheritance", "inherit", "inherit_from_files", "inherit_plan", "load_parents"]
