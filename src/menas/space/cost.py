"""Exact compute cost of a genome: multiply-accumulates (MACs) and parameters, by formula.

MACs count the multiply-accumulates of every convolution and linear layer (the convention of the NAS
literature; the paper's "FLOPs" are these MACs). Batch norm, activations, pooling and the SE gate's
element-wise product are not counted. Parameters count every trainable tensor (convs, BN affine, biases).

The formula is checked against a forward-hook count on the built model (`count_with_hooks`, torch imported
lazily) in the tests. `Budget` is the constraint a search samples under: MACs, params and, optionally, a
predicted latency (a callable from genome to milliseconds, `menas.latency.predict.Predictor.latency_ms`, handed
in by whoever built the budget, so this module never imports the latency package).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from menas.errors import UserError
from menas.space.genome import Genome, HeadGene, se_channels


class Cost(NamedTuple):
    macs: int
    params: int


def _out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with an odd kernel: ceil(size / stride)."""
    return -(-size // stride)


def _hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return input_size, input_size
    return int(input_size[0]), int(input_size[1])


def _se_cost(chs: int) -> tuple[int, int]:
    """(MACs, params) of an SE module on `chs` channels: 1x1 reduce and expand convs with biases."""
    rd = se_channels(chs)
    return 2 * chs * rd, 2 * chs * rd + rd + chs


def _stem_cost(h: int, w: int, in_chans: int, out_chs: int) -> tuple[int, int]:
    """Conv 3x3 (no bias) + BN at output resolution h x w."""
    return h * w * out_chs * in_chans * 9, out_chs * in_chans * 9 + 2 * out_chs


def _ds_cost(h: int, w: int, in_chs: int, out_chs: int, kernel: int, se: bool) -> tuple[int, int]:
    """Depthwise kxk + BN, optional SE, 1x1 project + BN, at output resolution h x w."""
    k2 = kernel * kernel
    macs = h * w * in_chs * (k2 + out_chs)
    params = in_chs * (k2 + 2 + out_chs) + 2 * out_chs
    if se:
        se_macs, se_params = _se_cost(in_chs)
        macs, params = macs + se_macs, params + se_params
    return macs, params


def _ir_cost(
    h_in: int, w_in: int, h: int, w: int, in_chs: int, mid: int, out_chs: int, kernel: int, se: bool
) -> tuple[int, int]:
    """Expand 1x1 + BN at input resolution, depthwise kxk + BN and project 1x1 + BN at output resolution."""
    macs = h_in * w_in * in_chs * mid + h * w * mid * (kernel * kernel + out_chs)
    params = mid * (in_chs + kernel * kernel + out_chs + 4) + 2 * out_chs
    if se:
        se_macs, se_params = _se_cost(mid)
        macs, params = macs + se_macs, params + se_params
    return macs, params


def _head_costs(h: int, w: int, in_chs: int, head: HeadGene, num_classes: int) -> tuple[tuple[int, int], ...]:
    """(MACs, params) of the head conv 1x1 + BN, the pooled conv_head 1x1 with bias, and the classifier."""
    return (
        (h * w * in_chs * head.head_chs, in_chs * head.head_chs + 2 * head.head_chs),
        (head.head_chs * head.feat_chs, head.head_chs * head.feat_chs + head.feat_chs),
        (head.feat_chs * num_classes, head.feat_chs * num_classes + num_classes),
    )


class LayerRow(NamedTuple):
    """One row of `menas inspect`: a block of the network with its shapes and cost."""

    name: str
    kind: str
    kernel: int
    in_chs: int
    mid_chs: int
    out_chs: int
    stride: int
    se: bool
    act: str
    out_hw: tuple[int, int]
    macs: int
    params: int


def layer_table(
    genome: Genome, input_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000
) -> list[LayerRow]:
    """Per-block MACs and params; they add up to `count_cost` (the tests check it)."""
    h, w = _hw(input_size)
    h, w = _out(h, 2), _out(w, 2)
    stem, ds = genome.stem, genome.ds
    rows = [LayerRow("stem", "conv", 3, in_chans, stem.out_chs, stem.out_chs, 2, False, stem.act, (h, w),
                     *_stem_cost(h, w, in_chans, stem.out_chs))]  # fmt: skip
    h, w = _out(h, ds.stride), _out(w, ds.stride)
    rows.append(LayerRow("ds", "ds", ds.kernel, stem.out_chs, stem.out_chs, ds.out_chs, ds.stride, ds.se, ds.act,
                         (h, w), *_ds_cost(h, w, stem.out_chs, ds.out_chs, ds.kernel, ds.se)))  # fmt: skip
    in_chs = ds.out_chs
    for i, stage in enumerate(genome.stages):
        for j, layer in enumerate(stage.layers):
            stride = stage.stride if j == 0 else 1
            h_in, w_in = h, w
            h, w = _out(h, stride), _out(w, stride)
            cost = _ir_cost(h_in, w_in, h, w, in_chs, layer.mid_chs, stage.out_chs, layer.kernel, layer.se)
            rows.append(LayerRow(f"stages.{i}.{j}", "ir", layer.kernel, in_chs, layer.mid_chs, stage.out_chs, stride,
                                 layer.se, layer.act, (h, w), *cost))  # fmt: skip
            in_chs = stage.out_chs
    head = genome.head
    conv, conv_head, classifier = _head_costs(h, w, in_chs, head, num_classes)
    rows.append(LayerRow("head.conv", "conv", 1, in_chs, head.head_chs, head.head_chs, 1, False, head.act, (h, w),
                         *conv))  # fmt: skip
    rows.append(LayerRow("head.conv_head", "conv", 1, head.head_chs, head.feat_chs, head.feat_chs, 1, False,
                         head.act, (1, 1), *conv_head))  # fmt: skip
    rows.append(LayerRow("classifier", "linear", 1, head.feat_chs, head.feat_chs, num_classes, 1, False, "-",
                         (1, 1), *classifier))  # fmt: skip
    return rows


def count_cost(
    genome: Genome, input_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000
) -> Cost:
    """MACs and parameters of `build_model(genome, num_classes, in_chans)` at `input_size` (int or (h, w)).

    The hot path of sampling and repair: a straight loop over the blocks, no model, no table.
    """
    h, w = _hw(input_size)
    h, w = _out(h, 2), _out(w, 2)
    stem, ds = genome.stem, genome.ds
    macs, params = _stem_cost(h, w, in_chans, stem.out_chs)
    h, w = _out(h, ds.stride), _out(w, ds.stride)
    m, p = _ds_cost(h, w, stem.out_chs, ds.out_chs, ds.kernel, ds.se)
    macs, params = macs + m, params + p
    in_chs = ds.out_chs
    for stage in genome.stages:
        out_chs = stage.out_chs
        h_in, w_in = h, w
        h, w = _out(h, stage.stride), _out(w, stage.stride)
        for layer in stage.layers:
            m, p = _ir_cost(h_in, w_in, h, w, in_chs, layer.mid_chs, out_chs, layer.kernel, layer.se)
            macs, params = macs + m, params + p
            in_chs, h_in, w_in = out_chs, h, w
    for m, p in _head_costs(h, w, in_chs, genome.head, num_classes):
        macs, params = macs + m, params + p
    return Cost(macs, params)


def count_macs(
    genome: Genome, input_size: int | tuple[int, int] = 224, in_chans: int = 3, num_classes: int = 1000
) -> int:
    return count_cost(genome, input_size, in_chans, num_classes).macs


def count_params(genome: Genome, in_chans: int = 3, num_classes: int = 1000) -> int:
    """Parameters do not depend on the input size."""
    return count_cost(genome, 32, in_chans, num_classes).params


@dataclass(frozen=True)
class Budget:
    """A compute constraint: MACs in [macs_min, macs_max], params <= params_max and, with a latency model,
    predicted latency <= latency_ms_max (ms), at a given input shape.

    `latency` maps a genome to its predicted latency in ms (a lookup-table predictor); it is not part of the
    budget's equality or hash. Every operator that respects the budget (`contains`) respects the latency bound
    with it: sampling, mutation, crossover repair and the strategies need no change.
    """

    macs_min: float = 0
    macs_max: float = math.inf
    params_max: float = math.inf
    input_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    latency_ms_max: float = math.inf
    latency: Callable[[Genome], float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("macs_min", "macs_max", "params_max"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise UserError(f"budget.{name}: got {value!r}, allowed: numbers >= 0")
        if self.macs_min > self.macs_max:
            raise UserError(f"budget: macs_min {self.macs_min:g} is larger than macs_max {self.macs_max:g}")
        if not isinstance(self.input_size, int) or self.input_size < 16:
            raise UserError(f"budget.input_size: got {self.input_size!r}, allowed: integers >= 16")
        if not isinstance(self.in_chans, int) or self.in_chans < 1:
            raise UserError(f"budget.in_chans: got {self.in_chans!r}, allowed: integers >= 1")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise UserError(f"budget.num_classes: got {self.num_classes!r}, allowed: integers >= 2")
        self._check_latency()

    def _check_latency(self) -> None:
        """A latency bound is a number > 0 and needs a latency model to compare with (and a model needs a bound)."""
        bound = self.latency_ms_max
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0:
            raise UserError(f"budget.latency_ms_max: got {bound!r}, allowed: numbers > 0")
        if math.isfinite(bound) != (self.latency is not None):
            raise UserError(
                f"budget.latency_table: got {'none' if self.latency is None else 'one'} with latency_ms_max "
                f"{bound!r}, allowed: a latency table (its predictor) exactly when latency_ms_max is finite"
            )

    @property
    def bounds_latency(self) -> bool:
        return self.latency is not None

    def cost(self, genome: Genome) -> Cost:
        return count_cost(genome, self.input_size, self.in_chans, self.num_classes)

    def admits(self, cost: Cost) -> bool:
        """Whether MACs and params are within the budget (the latency bound is `fast_enough`'s)."""
        return self.macs_min <= cost.macs <= self.macs_max and cost.params <= self.params_max

    def latency_ms(self, genome: Genome) -> float | None:
        """The genome's predicted latency in ms; None without a latency model."""
        return None if self.latency is None else self.latency(genome)

    def fast_enough(self, genome: Genome) -> bool:
        """Whether the genome's predicted latency is within the bound (always, without a latency model)."""
        return self.latency is None or self.latency(genome) <= self.latency_ms_max

    def contains(self, genome: Genome) -> bool:
        return self.admits(self.cost(genome)) and self.fast_enough(genome)

    def describe(self) -> str:
        parts = [f"MACs {format_count(self.macs_min)}..{format_count(self.macs_max)}"]
        if math.isfinite(self.params_max):
            parts.append(f"params <= {format_count(self.params_max)}")
        if self.latency is not None:
            parts.append(f"predicted latency <= {self.latency_ms_max:g} ms")
        parts.append(f"at {self.input_size} px, {self.in_chans} channel(s), {self.num_classes} classes")
        return ", ".join(parts)


_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_count(text: str, field: str) -> float:
    """Parses '150M', '1.5G', '8e6' or '300000' into a number; raises ValueError naming `field`."""
    raw = text.strip()
    suffix = raw[-1:].upper() if raw[-1:].isalpha() else ""
    if suffix not in _SUFFIXES:
        raise UserError(f"{field}: unknown size suffix in {text!r}, allowed: K, M, G, T (e.g. 150M)")
    number = raw[:-1] if suffix else raw
    try:
        value = float(number) * _SUFFIXES[suffix]
    except ValueError:
        raise UserError(f"{field}: {text!r} is not a number with an optional K/M/G/T suffix (e.g. 150M)") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{field}: {text!r} must be a finite number >= 0")
    return value


def parse_range(text: str, field: str) -> tuple[float, float]:
    """Parses 'MIN:MAX', ':MAX', 'MIN:' or 'MAX' (meaning 0:MAX) into a (min, max) pair."""
    if ":" in text:
        lo_text, hi_text = text.split(":", 1)
        lo = parse_count(lo_text, field) if lo_text.strip() else 0.0
        hi = parse_count(hi_text, field) if hi_text.strip() else math.inf
    else:
        lo, hi = 0.0, parse_count(text, field)
    if lo > hi:
        raise UserError(f"{field}: minimum {text.split(':')[0]} is larger than maximum in {text!r}")
    return lo, hi


def format_count(value: float) -> str:
    """1234567 -> '1.23M'; keeps three significant digits."""
    if not math.isfinite(value):
        return "inf"
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def count_with_hooks(model: Any, input_size: int | tuple[int, int], in_chans: int) -> Cost:
    """Independent count on a built model: forward hooks on every Conv2d and Linear, one image at `input_size`.

    Used to cross-check `count_cost`; imports torch lazily so this module stays importable without it.
    """
    import torch
    from torch import nn

    h, w = _hw(input_size)
    macs = 0

    def conv_hook(module: nn.Conv2d, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = module.kernel_size
        macs += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        macs += module.in_features * module.out_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device  # works on the meta device too: only shapes matter
            model(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return Cost(macs, params)


__all__ = [
    "Budget",
    "Cost",
    "LayerRow",
    "count_cost",
    "count_macs",
    "count_params",
    "count_with_hooks",
    "format_count",
    "layer_table",
    "parse_count",
    "parse_range",
]
