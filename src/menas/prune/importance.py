"""Which channels a pruned network keeps: channel importance (`select_channels`: the L1 norm of the producing
filters, or the paper's literal "first channels"; the one channel order of menas, for lottery tickets and for weight
inheritance between parents and children) and coupling (`residual_groups`: a stage's residual chain shares one set
of output channels, and stages joined by a residual share it too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from menas.space.genome import Genome


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
