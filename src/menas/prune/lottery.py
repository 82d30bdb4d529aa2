"""Lottery tickets: the best pruned version of a trained candidate, found without back-propagation.

Three questions, kept apart (as in Torch-Pruning): *which* channels to keep (`importance`: L1 norm of the
producing filters, or the paper's literal "first channels"), *how* to cut (`inherit_weights`: slices every
coupled tensor — expand conv and BN, depthwise conv and BN, SE reduce/expand, the projecting conv's inputs), and
*what is coupled* (a stage's residual chain shares one set of output channels; stages joined by a residual
share it too).

Then EagleEye's observation: copied BatchNorm statistics are stale for a pruned net, so each proposal's BN
running statistics are recomputed exactly over a few fixed calibration batches (`recalibrate_bn`) before it is
scored on held-out data. Scoring uses successive halving: every proposal on a subset, the best few on all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from menas.config import LotteryConfig
from menas.nn.builder import MenasNet
from menas.space.cost import count_cost
from menas.space.genome import Genome, StageGene, se_channels

Batch = tuple[torch.Tensor, torch.Tensor]


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


def residual_groups(genome: Genome) -> list[int]:
    """For each stage, the index of the first stage of its residual chain: a stage whose first layer adds its
    input (stride 1, same width as the previous stage) must keep the previous stage's output channels.
    Group -1 means the chain reaches back to the fixed ds block, so the stage's width cannot be pruned."""
    groups, prev_out, prev_group = [], genome.ds.out_chs, -1
    for i, stage in enumerate(genome.stages):
        joined = stage.stride == 1 and stage.out_chs == prev_out
        group = prev_group if joined else i
        groups.append(group)
        prev_out, prev_group = stage.out_chs, group
    return groups


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
        pruned = apply_rates(genome, _scaled(raw_mids, scale, cap), [min(cap, r * scale) for r in raw_stages],
                             cfg.divisor)  # fmt: skip
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


def select_channels(weights: Sequence[torch.Tensor], keep: int, importance: str = "l1") -> torch.Tensor | None:
    """The `keep` most important output channels of a coupled group of layers, in their original order (L1: the
    filters' L1 norms summed over the group; "first": the first `keep`), or None to keep all. The one channel
    order of menas: lottery tickets and weight inheritance between parents and children (`menas.search.inherit`)."""
    total = weights[0].shape[0]
    if keep == total:
        return None
    if importance == "first":
        return torch.arange(keep, device=weights[0].device)
    norms = sum(w.detach().abs().flatten(1).sum(1) for w in weights)
    return torch.sort(torch.topk(norms, keep, sorted=False).indices).values


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

    The child is a narrowed copy of `model`'s module tree rather than a freshly built network: building one
    took 26 ms of a 52 ms inheritance on MobileNetV3-Large (2 threads), while its layers, residuals and SE
    placement are the parent's by construction (`apply_rates` never changes them). The result equals
    `build_model(pruned)` loaded with the slices (same modules, attributes and tensors; tested). With all
    rates 0 it computes exactly what `model` computes. Pass `channels_last` when the data is: a contiguous
    model on channels_last batches ran 20x slower here (MobileNetV3-Large, 32 px, 1 channel, n=2 runs).
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
            clone._parameters[key] = nn.Parameter(_fresh(slice_channels(param.detach(), out_keep, in_keep), fmt),
                                                  requires_grad=param.requires_grad)  # fmt: skip
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


# ------------------------------------------------------------------------------------------ BN recalibration

#: Calibration batches are merged into forward passes of up to this many images: one pass over 512 images cost
#: 52 ms against 72 ms for four of 128 (MobileNetV3-Large, 32 px, bf16, 2 threads), for the same statistics up
#: to each pass normalising with its own batch moments.
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
    1.2x cheaper here, for ranking proposals. Runs in inference mode (the statistics are ordinary tensors after
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


# ------------------------------------------------------------------------------------------ scoring


def use_bf16(device: torch.device, amp: str) -> bool:
    """bf16 autocast for scoring: on CUDA, and on CPUs with native bf16 (measured 2x faster here, rankings
    unchanged); never when `amp == "off"`."""
    if amp == "off":
        return False
    if amp == "bf16" or device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@torch.inference_mode()
def _hits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Correct top-1 predictions on one batch, as a device tensor (no host sync)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        return (model(x).argmax(1) == y).sum()


def count_correct(model: nn.Module, batches: Iterable[Batch], bf16: bool = False) -> tuple[int, int]:
    """(correct top-1 predictions, images) of `model` in eval mode over `batches`; one device sync at the end."""
    model.eval()
    correct, total = 0, 0
    for x, y in batches:
        correct = correct + _hits(model, x, y, bf16)
        total += y.numel()
    return int(correct), total


def top1(model: nn.Module, batches: Iterable[Batch], bf16: bool = False) -> float:
    """Top-1 accuracy in percent of `model` in eval mode over `batches` (percent, as `train.evaluate`)."""
    correct, total = count_correct(model, batches, bf16)
    return 100.0 * correct / max(total, 1)


def take_images(batches: Iterable[Batch], limit: int) -> list[Batch]:
    """The first `limit` images of `batches` (all when limit is 0), kept as a list to be reused."""
    kept, count = [], 0
    for x, y in batches:
        if limit and count + len(y) > limit:
            x, y = x[: limit - count], y[: limit - count]
        kept.append((x, y))
        count += len(y)
        if limit and count >= limit:
            break
    return kept


def skip_images(batches: Iterable[Batch], count: int) -> Iterator[Batch]:
    """The batches after the first `count` images (the complement of `take_images(batches, count)`)."""
    seen = 0
    for x, y in batches:
        if seen >= count:
            yield x, y
        elif seen + len(y) > count:
            yield x[count - seen :], y[count - seen :]
        seen += len(y)


# ------------------------------------------------------------------------------------------ ticket search


@dataclass
class ScoredProposal:
    index: int
    proposal: Proposal
    macs: int
    params: int
    subset_score: float
    full_score: float | None = None


@dataclass
class LotteryResult:
    """What the ticket search found; `ticket_model` is None when the unpruned candidate stays."""

    parent_genome: Genome
    parent_score: float
    parent_macs: int
    parent_params: int
    scored: list[ScoredProposal]
    chosen: ScoredProposal | None
    ticket_model: MenasNet | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    calib_images: int = 0  # images passed through the networks to recalibrate BN (parent and every proposal)
    scored_images: int = 0  # search-val images scored (parent, every proposal's subset, the finalists' rest)
    policy: str = "tolerance"  # the `lottery.policy` the ticket was chosen by

    def to_record(self, finetuned: float | None = None, finetune_epochs: int = 0) -> dict[str, Any]:
        """Plain-data record of the search (lottery.json): the parent, every proposal and the chosen ticket with its
        score before and (when fine-tuned) after fine-tuning."""
        chosen = self.chosen
        parent = {"genome": self.parent_genome.to_str(), "score": self.parent_score, "macs": self.parent_macs,
                  "params": self.parent_params}  # fmt: skip
        ticket = None
        if chosen is not None:
            ticket = {"proposal": chosen.index, "genome": chosen.proposal.genome.to_str(),
                      "score_before_ft": chosen.full_score, "score_after_ft": finetuned,
                      "finetune_epochs": finetune_epochs, "macs": chosen.macs, "params": chosen.params}  # fmt: skip
        proposals = [
            {"index": s.index, "genome": s.proposal.genome.to_str(), "mean_mid_rate": s.proposal.mean_mid_rate,
             "macs": s.macs, "params": s.params, "subset_score": s.subset_score, "full_score": s.full_score}
            for s in self.scored
        ]  # fmt: skip
        return {"parent": parent, "ticket": ticket, "proposals": proposals, "seconds": self.seconds,
                "timings": self.timings, "policy": self.policy, "calib_images": self.calib_images,
                "scored_images": self.scored_images}  # fmt: skip

    @property
    def ticket_genome(self) -> Genome:
        return self.chosen.proposal.genome if self.chosen else self.parent_genome

    @property
    def ticket_score(self) -> float:
        return self.chosen.full_score if self.chosen else self.parent_score


def search_ticket(
    model: MenasNet,
    calib_batches: Sequence[torch.Tensor],
    val_batches: Iterable[Batch],
    cfg: LotteryConfig,
    rng: random.Random,
    input_size: int,
    channels_last: bool = True,
) -> LotteryResult:
    """Finds the lottery ticket of a trained candidate (the ticket step of a trial, see ARCHITECTURE.md).

    Every proposal: inherit weights, recalibrate BN on `calib_batches`, score on the first `score_images`
    images of `val_batches`. The best `rescore_top` models are kept and scored on the rest of the images, so
    their full score covers all of search-val without scoring the subset twice. The parent is recalibrated
    and scored the same way (same precision too), so the comparison is fair. The best proposal within
    `tolerance` of the parent becomes the ticket (`policy: tolerance`), or the best proposal smaller than the parent
    whatever its score (`policy: always`, the paper's reading: every candidate is replaced by its ticket); its
    model, with the statistics it was scored with, is returned. `val_batches` must be re-iterable (a loader or a
    list): it is read up to three times. The result counts the images recalibration and scoring passed through.
    """
    start = time.perf_counter()
    timings = {"parent": 0.0, "inherit": 0.0, "recalibrate": 0.0, "score": 0.0, "finalists": 0.0}
    genome, in_chans = model.genome, model.stem.conv.in_channels
    device = next(model.parameters()).device
    bf16 = use_bf16(device, cfg.amp)
    # only the first-round subset is held in memory: all of search-val (ImageNet-sized in the paper's setting)
    # is streamed from the loader for the parent and the finalists
    subset = take_images(val_batches, cfg.score_images) if cfg.score_images else val_batches
    calib_batches = merge_batches(calib_batches)
    parent = inherit_weights(model, genome, cfg.importance, channels_last)  # a copy: the caller's model is kept
    parent_correct, val_images = count_correct(recalibrate_bn(parent, calib_batches, bf16), val_batches, bf16)
    parent_score = 100.0 * parent_correct / max(val_images, 1)
    calib_pass = sum(len(x) for x in calib_batches)
    images = {"calib": calib_pass, "scored": val_images}
    parent_cost = count_cost(genome, input_size, in_chans, model.num_classes)
    timings["parent"] = time.perf_counter() - start
    scored: list[ScoredProposal] = []
    finalists: list[tuple[ScoredProposal, MenasNet, int, int]] = []  # the best so far, with their models

    def rank(item: tuple[ScoredProposal, MenasNet, int, int]) -> tuple[float, int]:
        return -item[0].subset_score, item[0].macs

    for index, proposal in enumerate(propose(genome, cfg, rng, input_size, in_chans, model.num_classes)):
        t0 = time.perf_counter()
        child = inherit_weights(model, proposal.genome, cfg.importance, channels_last)
        t1 = time.perf_counter()
        recalibrate_bn(child, calib_batches, bf16)
        t2 = time.perf_counter()
        correct, total = count_correct(child, subset, bf16)
        images["calib"] += calib_pass
        images["scored"] += total
        timings["inherit"] += t1 - t0
        timings["recalibrate"] += t2 - t1
        timings["score"] += time.perf_counter() - t2
        cost = count_cost(proposal.genome, input_size, in_chans, model.num_classes)
        entry = ScoredProposal(index, proposal, cost.macs, cost.params, 100.0 * correct / max(total, 1))
        scored.append(entry)
        finalists = sorted([*finalists, (entry, child, correct, total)], key=rank)[: cfg.rescore_top]
    t0 = time.perf_counter()
    if cfg.score_images:
        images["scored"] += len(finalists) * _score_the_rest(finalists, skip_images(val_batches, cfg.score_images),
                                                             bf16)  # fmt: skip
    else:  # every proposal was scored on all of search-val already
        for entry in scored:
            entry.full_score = entry.subset_score
    timings["finalists"] = time.perf_counter() - t0
    chosen = choose_ticket([entry for entry, *_ in finalists], parent_score, parent_cost.macs, cfg)
    models = {entry.index: child for entry, child, *_ in finalists}
    return LotteryResult(
        parent_genome=genome,
        parent_score=parent_score,
        parent_macs=parent_cost.macs,
        parent_params=parent_cost.params,
        scored=scored,
        chosen=chosen,
        ticket_model=models[chosen.index] if chosen else None,
        seconds=time.perf_counter() - start,
        timings=timings,
        calib_images=images["calib"],
        scored_images=images["scored"],
        policy=cfg.policy,
    )


def choose_ticket(finalists: Sequence[ScoredProposal], parent_score: float, parent_macs: int,
                  cfg: LotteryConfig) -> ScoredProposal | None:  # fmt: skip
    """The ticket among the fully scored finalists, by `cfg.policy`, None when the candidate stays.

    - "tolerance": the best-scoring finalist within `cfg.tolerance` points of the recalibrated parent;
    - "always": the best-scoring finalist with fewer MACs than the parent, whatever its score (a proposal that
      pruned nothing is no ticket); None only when no proposal is smaller.
    Ties go to fewer MACs.
    """
    if cfg.policy == "always":
        eligible = [entry for entry in finalists if entry.macs < parent_macs]
    else:
        eligible = [entry for entry in finalists if entry.full_score >= parent_score - cfg.tolerance]
    return max(eligible, key=lambda c: (c.full_score, -c.macs)) if eligible else None


def _score_the_rest(finalists: list[tuple[ScoredProposal, MenasNet, int, int]], rest: Iterable[Batch],
                    bf16: bool) -> int:  # fmt: skip
    """Sets each finalist's full score: its subset counts plus its counts on `rest`, which is read once for all
    (hits stay on the device until the end: one sync per finalist). Returns the images in `rest`."""
    models = [child.eval() for _, child, *_ in finalists]
    correct = [subset_correct for *_, subset_correct, _ in finalists]
    images = 0
    for x, y in rest:
        for k, child in enumerate(models):
            correct[k] = correct[k] + _hits(child, x, y, bf16)
        images += len(y)
    for (entry, _, _, subset_images), hits in zip(finalists, correct, strict=True):
        entry.full_score = 100.0 * int(hits) / max(subset_images + images, 1)
    return images
