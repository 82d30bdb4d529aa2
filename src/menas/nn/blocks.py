"""Small building blocks of MobileNetV3-style networks, with role-named submodules.

The names matter: weight inheritance in the lottery-ticket search addresses tensors by them
(`expand.conv`, `dw.bn`, `se.conv_reduce`, `project.conv`, ...). Blocks take explicit channel counts;
deciding those counts is the genome's job, not theirs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from menas.errors import UserError

#: Activation registry: genome names to module factories.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
}


def create_act(name: str | None) -> nn.Module:
    """An activation module by name; `None` gives the identity (linear bottleneck)."""
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise UserError(f"activation: got {name!r}, allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBnAct(nn.Module):
    """Conv kxk ('same' padding, no bias) -> BatchNorm -> activation."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str | None = None
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excite as in MobileNetV3: pool, 1x1 reduce + ReLU, 1x1 expand, hard-sigmoid gate."""

    def __init__(self, chs: int, rd_chs: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * self.gate(scale)


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk + BN + act, optional SE, 1x1 project + BN; residual when stride 1 and shapes match."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, se_chs: int, act: str) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.dw = ConvBnAct(in_chs, in_chs, kernel, stride, groups=in_chs, act=act)
        self.se = SqueezeExcite(in_chs, se_chs) if se_chs else nn.Identity()
        self.project = ConvBnAct(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(x)))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """1x1 expand + BN + act, depthwise kxk + BN + act, optional SE, 1x1 project + BN (linear bottleneck);
    residual when stride 1 and shapes match."""

    def __init__(
        self, in_chs: int, mid_chs: int, out_chs: int, kernel: int, stride: int, se_chs: int, act: str
    ) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.expand = ConvBnAct(in_chs, mid_chs, 1, act=act)
        self.dw = ConvBnAct(mid_chs, mid_chs, kernel, stride, groups=mid_chs, act=act)
        self.se = SqueezeExcite(mid_chs, se_chs) if se_chs else nn.Identity()
        self.project = ConvBnAct(mid_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return out + x if self.has_skip else out
