"""Lottery tickets: the best pruned version of a trained candidate, found without back-propagation.

Every proposal (`menas.prune.surgery`) inherits the candidate's weights, has its BN statistics recalibrated
(`menas.prune.recalibrate`) and is scored on held-out data, by successive halving: every proposal on a subset, the
best few on all (`search_ticket`). The ticket is the best one within `tolerance` of the recalibrated parent, or the
best smaller one (`choose_ticket`, by `lottery.policy`). The scoring helpers (`top1`, `count_correct`,
`take_images`, `skip_images`, `use_bf16`) are shared with the diagnosis.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from menas.config import LotteryConfig
from menas.nn.builder import MenasNet
from menas.prune.recalibrate import Batch, merge_batches, recalibrate_bn
from menas.prune.surgery import Proposal, inherit_weights, propose
from menas.space.cost import count_cost
from menas.space.genome import Genome

# ------------------------------------------------------------------------------------------ scoring


def use_bf16(device: torch.device, amp: str) -> bool:
    """bf16 autocast for scoring: on CUDA, and on CPUs with native bf16 (faster, and it ranks proposals as float32
    does: see BENCHMARKS.md, "Lottery tickets"); never when `amp == "off"`."""
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
        parent = {
            "genome": self.parent_genome.to_str(),
            "score": self.parent_score,
            "macs": self.parent_macs,
            "params": self.parent_params,
        }
        ticket = None
        if chosen is not None:
            ticket = {
                "proposal": chosen.index,
                "genome": chosen.proposal.genome.to_str(),
                "score_before_ft": chosen.full_score,
                "score_after_ft": finetuned,
                "finetune_epochs": finetune_epochs,
                "macs": chosen.macs,
                "params": chosen.params,
            }
        proposals = [
            {
                "index": s.index,
                "genome": s.proposal.genome.to_str(),
                "mean_mid_rate": s.proposal.mean_mid_rate,
                "macs": s.macs,
                "params": s.params,
                "subset_score": s.subset_score,
                "full_score": s.full_score,
            }
            for s in self.scored
        ]
        return {
            "parent": parent,
            "ticket": ticket,
            "proposals": proposals,
            "seconds": self.seconds,
            "timings": self.timings,
            "policy": self.policy,
            "calib_images": self.calib_images,
            "scored_images": self.scored_images,
        }

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
    admits: Callable[[Genome], bool] | None = None,
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
    `admits` (a search's latency bound) refuses proposals: one it refuses is neither scored nor listed, and never
    the ticket (the proposals are drawn all the same, so the others are those drawn without it).
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
        if admits is not None and not admits(proposal.genome):
            continue
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
        images["scored"] += len(finalists) * _score_the_rest(
            finalists, skip_images(val_batches, cfg.score_images), bf16
        )
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


def choose_ticket(
    finalists: Sequence[ScoredProposal], parent_score: float, parent_macs: int, cfg: LotteryConfig
) -> ScoredProposal | None:
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


def _score_the_rest(
    finalists: list[tuple[ScoredProposal, MenasNet, int, int]], rest: Iterable[Batch], bf16: bool
) -> int:
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
