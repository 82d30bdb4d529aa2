"""The blocks a network is made of, as a latency lookup table keys them, and every block a space can produce.

A `Block` is one unit the builder (`menas.nn.builder`) stacks: the stem conv, the depthwise-separable block, an
inverted residual layer, or the head (1x1 conv, pool, 1x1 conv with bias, classifier), with everything its
latency depends on: input resolution, channel counts, kernel, stride, SE and activation. Its `key` is its name in
a table (`ir_r16_k5_s2_i24_m72_o40_se_re`: an inverted residual at 16 px input, kernel 5, stride 2, 24 -> 72 ->
40 channels, with SE, ReLU).

`ChannelGrid` is the bucketing of channel counts a table is measured on:

- without a step (the default), the space's own choices: stage widths from its width multipliers, expanded widths
  from its expansion ratios. Every genome that sampling, mutation, crossover and repair produce is on it exactly.
  A pruned channel count (a lottery ticket of a space with `allow_pruning`) is rounded up to the next choice
  (the input and output widths to the next stage width, the expanded width to the next expansion of the rounded
  input), so a ticket is priced as the smallest unpruned block that contains it: an upper bound.
- with a step S (a multiple of the space's divisor), every channel count rounded up to a multiple of S. With
  S = divisor every pruned count is its own entry (exact, and for a large space far too many blocks to measure);
  a larger S makes fewer, coarser entries.

`space_blocks` enumerates every distinct block a space can produce at an input size on a grid (not sampled):
the stem and ds (fixed by the space), each stage's first layer at every input resolution the allowed stride
vectors give it with both strides the stage allows, its later layers at the resolution after, and the head at
every final resolution. `genome_blocks` lists a genome's blocks on the same grid, so a table built from the
first covers the second (`tests/test_latency.py` checks it by enumerating every genome of a small space).

This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from menas.errors import UserError, check, is_int
from menas.space.genome import ACT_CODES, Genome
from menas.space.spaces import SearchSpace

KINDS = ("stem", "ds", "ir", "head")


def _down(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with an odd kernel (as `space.cost`): ceil(size / stride)."""
    return -(-size // stride)


@dataclass(frozen=True, order=True)
class Block:
    """One block with all its latency depends on. `res` is its input's side in px; `mid_chs` is the expanded
    width of an inverted residual and the head's conv width; the head's `out_chs` is the classifier's classes and
    `feat_chs` the pooled conv's width."""

    kind: str
    res: int
    in_chs: int
    out_chs: int
    mid_chs: int = 0
    kernel: int = 1
    stride: int = 1
    se: bool = False
    act: str = "relu"
    feat_chs: int = 0

    @property
    def key(self) -> str:
        """The block's name in a lookup table; equal blocks have equal keys."""
        act, se = ACT_CODES[self.act], "_se" if self.se else ""
        if self.kind == "stem":
            return f"stem_r{self.res}_i{self.in_chs}_o{self.out_chs}_{act}"
        if self.kind == "ds":
            return f"ds_r{self.res}_k{self.kernel}_s{self.stride}_i{self.in_chs}_o{self.out_chs}{se}_{act}"
        if self.kind == "ir":
            return (
                f"ir_r{self.res}_k{self.kernel}_s{self.stride}_i{self.in_chs}_m{self.mid_chs}_o{self.out_chs}{se}_{act}"
            )
        return f"head_r{self.res}_i{self.in_chs}_m{self.mid_chs}_f{self.feat_chs}_o{self.out_chs}_{act}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one input image of the block."""
        return self.in_chs, self.res, self.res


class ChannelGrid:
    """The channel counts a table is measured at and how a block's counts round up to them (module docstring)."""

    def __init__(self, space: SearchSpace, step: int | None = None) -> None:
        if step is not None:
            check(
                is_int(step) and step >= space.divisor and step % space.divisor == 0,
                "--channel-step",
                step,
                f"multiples of the space's divisor {space.divisor}",
            )
        self.space = space
        self.step = step
        self._last = len(space.stages) - 1
        self._head_choices = tuple(sorted({space.head_chs(o) for o in space.stage_outs(self._last)}))

    # -- rounding a genome's counts onto the grid ----------------------------------------------------------

    def _up(self, choices: tuple[int, ...], chs: int) -> int:
        """The smallest grid value >= `chs`; `chs` itself when it is above the grid (its block is then not in the
        table, and the predictor names it)."""
        if self.step is not None:
            return _down(chs, self.step) * self.step
        return next((c for c in choices if c >= chs), chs)

    def stage_in(self, i: int, first: bool, chs: int) -> int:
        """A layer's input width on the grid: the first layer of stage i takes the widths of stage i - 1 (the ds
        block's for stage 0), a later layer its own stage's."""
        if first:
            choices = (self.space.ds.out_chs,) if i == 0 else self.space.stage_outs(i - 1)
        else:
            choices = self.space.stage_outs(i)
        return self._up(choices, chs)

    def stage_mid(self, i: int, in_chs: int, chs: int) -> int:
        """An expanded width on the grid, for a layer whose input width (on the grid) is `in_chs`."""
        return self._up(self.space.mid_choices(i, in_chs), chs)

    def stage_out(self, i: int, chs: int) -> int:
        return self._up(self.space.stage_outs(i), chs)

    def head_in(self, chs: int) -> int:
        return self._up(self.space.stage_outs(self._last), chs)

    def head_chs(self, chs: int) -> int:
        return self._up(self._head_choices, chs)

    # -- the raw counts a space allows (pruned ones only where the grid tells them apart) ------------------

    def _pruned(self) -> bool:
        """Whether pruned counts must be enumerated: only on a step grid (without a step a pruned count rounds up
        onto a choice, so it adds no entry)."""
        return self.step is not None and self.space.allow_pruning

    def _raw_outs(self, i: int) -> tuple[int, ...]:
        outs = self.space.stage_outs(i)
        d = self.space.divisor
        return tuple(range(d, outs[-1] + 1, d)) if self._pruned() else outs

    def _raw_ins(self, i: int, first: bool) -> tuple[int, ...]:
        if first:
            return (self.space.ds.out_chs,) if i == 0 else self._raw_outs(i - 1)
        return self._raw_outs(i)

    def _raw_mids(self, i: int, in_chs: int) -> tuple[int, ...]:
        mids = self.space.mid_choices(i, in_chs)
        d = self.space.divisor
        return tuple(range(d, mids[-1] + 1, d)) if self._pruned() else mids

    # -- the grid's channel combinations ---------------------------------------------------------------

    def first_layer_channels(self, i: int) -> set[tuple[int, int, int]]:
        """(in, mid, out) on the grid of every first layer of stage i the space allows."""
        pairs = set()
        for a in self._raw_ins(i, True):
            a_grid = self.stage_in(i, True, a)
            pairs.update((a_grid, self.stage_mid(i, a_grid, m)) for m in self._raw_mids(i, a))
        outs = {self.stage_out(i, o) for o in self._raw_outs(i)}
        return {(a, m, o) for a, m in pairs for o in outs}

    def later_layer_channels(self, i: int) -> set[tuple[int, int, int]]:
        """(in, mid, out) on the grid of every later layer of stage i (input width = the stage's width)."""
        found = set()
        for o in self._raw_outs(i):
            o_grid = self.stage_in(i, False, o)
            found.update((o_grid, self.stage_mid(i, o_grid, m), self.stage_out(i, o)) for m in self._raw_mids(i, o))
        return found

    def head_channels(self) -> set[tuple[int, int]]:
        """(in, head conv width) on the grid of every head: the head conv's width follows the last stage's
        unpruned width (`space.head_chs`), and a ticket that prunes the last stage keeps it, so with pruning any
        last width up to that one feeds it."""
        found = set()
        d = self.space.divisor
        outs = self.space.stage_outs(self._last)
        for o in outs:
            head = self.head_chs(self.space.head_chs(o))
            if not self.space.allow_pruning:
                ins: tuple[int, ...] = (o,)
            elif self.step is not None:
                ins = tuple(range(d, o + 1, d))
            else:
                ins = tuple(x for x in outs if x <= o)
            found.update((self.head_in(a), head) for a in ins)
        return found


def _fixed_blocks(space_or_genome: SearchSpace | Genome, input_size: int, in_chans: int) -> tuple[list[Block], int]:
    """The stem and ds blocks (fixed by a space, read from a genome) and the resolution after them."""
    stem, ds = space_or_genome.stem, space_or_genome.ds
    blocks = [Block("stem", input_size, in_chans, stem.out_chs, kernel=3, stride=2, act=stem.act)]
    res = _down(input_size, 2)
    blocks.append(Block("ds", res, stem.out_chs, ds.out_chs, 0, ds.kernel, ds.stride, ds.se, ds.act))
    return blocks, _down(res, ds.stride)


def check_shape(input_size: int, in_chans: int, num_classes: int) -> None:
    """The input shape a table or a prediction is for (the same bounds as `space.cost.Budget`)."""
    check(is_int(input_size) and input_size >= 16, "--input-size", input_size, "integers >= 16")
    check(is_int(in_chans) and in_chans >= 1, "--in-chans", in_chans, "integers >= 1")
    check(is_int(num_classes) and num_classes >= 2, "--num-classes", num_classes, "integers >= 2")


def genome_blocks(
    genome: Genome, input_size: int, in_chans: int, num_classes: int, grid: ChannelGrid | None = None
) -> list[tuple[str, Block]]:
    """A genome's blocks in network order, each with its place ("stem", "ds", "stages.I.J", "head"); with a grid,
    channel counts rounded up onto it (what a table measured on that grid holds)."""
    check_shape(input_size, in_chans, num_classes)
    if grid is not None and len(genome.stages) != len(grid.space.stages):
        raise UserError(
            f"genome: {len(genome.stages)} stages, allowed: {len(grid.space.stages)} (the stages of space "
            f"{grid.space.name}, the latency table's)"
        )
    (stem, ds), res = _fixed_blocks(genome, input_size, in_chans)
    placed = [("stem", stem), ("ds", ds)]
    in_chs = genome.ds.out_chs
    for i, stage in enumerate(genome.stages):
        for j, layer in enumerate(stage.layers):
            stride = stage.stride if j == 0 else 1
            a, m, o = in_chs, layer.mid_chs, stage.out_chs
            if grid is not None:
                a = grid.stage_in(i, j == 0, a)
                m, o = grid.stage_mid(i, a, m), grid.stage_out(i, o)
            placed.append((f"stages.{i}.{j}", Block("ir", res, a, o, m, layer.kernel, stride, layer.se, layer.act)))
            res, in_chs = _down(res, stride), stage.out_chs
    head = genome.head
    a, h = (grid.head_in(in_chs), grid.head_chs(head.head_chs)) if grid is not None else (in_chs, head.head_chs)
    placed.append(("head", Block("head", res, a, num_classes, h, act=head.act, feat_chs=head.feat_chs)))
    return placed


def _resolutions(space: SearchSpace, res: int) -> tuple[list[set[tuple[int, int]]], set[int]]:
    """Per stage, every (input resolution, stride) its first layer can have under the allowed stride vectors;
    and every resolution the head can see."""
    per_stage: list[set[tuple[int, int]]] = [set() for _ in space.stages]
    finals = set()
    for vector in space.stride_vectors:
        r = res
        for i, stride in enumerate(vector):
            per_stage[i].add((r, stride))
            r = _down(r, stride)
        finals.add(r)
    return per_stage, finals


def space_blocks(
    space: SearchSpace, input_size: int, in_chans: int, num_classes: int, grid: ChannelGrid | None = None
) -> list[Block]:
    """Every distinct block `space` can produce at this input shape, on `grid` (default: the space's choices),
    sorted; enumerated from the space's choices, not sampled."""
    check_shape(input_size, in_chans, num_classes)
    grid = grid or ChannelGrid(space)
    blocks, res = _fixed_blocks(space, input_size, in_chans)
    found = set(blocks)
    per_stage, finals = _resolutions(space, res)
    for i, choices in enumerate(space.stages):
        layer_choices = [(k, se, act) for k in choices.kernels for se in choices.se for act in choices.acts]
        firsts = grid.first_layer_channels(i)
        laters = grid.later_layer_channels(i) if max(choices.depths) > 1 else set()
        for r, stride in per_stage[i]:
            for k, se, act in layer_choices:
                found.update(Block("ir", r, a, o, m, k, stride, se, act) for a, m, o in firsts)
                found.update(Block("ir", _down(r, stride), a, o, m, k, 1, se, act) for a, m, o in laters)
    for r in finals:
        found.update(
            Block("head", r, a, num_classes, h, act=space.head_act, feat_chs=space.feat_chs)
            for a, h in grid.head_channels()
        )
    return sorted(found)


def count_by_kind(blocks: list[Block]) -> dict[str, int]:
    """How many blocks of each kind (stem, ds, ir, head)."""
    return {kind: sum(1 for b in blocks if b.kind == kind) for kind in KINDS}
