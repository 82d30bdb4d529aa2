"""A block of a lookup table (`latency.blocks.Block`) as a network of its own, built from the same modules the
builder stacks (`menas.nn.blocks`), so that a block measured alone runs the code it runs inside a network."""

from __future__ import annotations

import torch
from torch import nn

from menas.latency.blocks import Block
from menas.nn.blocks import ConvBnAct, DepthwiseSeparable, InvertedResidual, create_act
from menas.space.genome import se_channels


class Head(nn.Module):
    """`MenasNet`'s tail alone: 1x1 conv + BN + act, global pool, 1x1 conv with bias + act, dropout, classifier
    (the same submodules and order as `MenasNet.forward_features`' last step and `forward_head`)."""

    def __init__(self, in_chs: int, head_chs: int, feat_chs: int, num_classes: int, act: str) -> None:
        super().__init__()
        self.head_conv = ConvBnAct(in_chs, head_chs, 1, act=act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(head_chs, feat_chs, 1, bias=True)
        self.head_act = create_act(act)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(feat_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_act(self.conv_head(self.pool(self.head_conv(x))))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


def block_module(block: Block) -> nn.Module:
    """The block as a module in eval mode, freshly initialised (latency does not depend on the weights' values)."""
    if block.kind == "stem":
        module: nn.Module = ConvBnAct(block.in_chs, block.out_chs, 3, 2, act=block.act)
    elif block.kind == "ds":
        se = se_channels(block.in_chs) if block.se else 0
        module = DepthwiseSeparable(block.in_chs, block.out_chs, block.kernel, block.stride, se, block.act)
    elif block.kind == "ir":
        se = se_channels(block.mid_chs) if block.se else 0
        module = InvertedResidual(block.in_chs, block.mid_chs, block.out_chs, block.kernel, block.stride, se, block.act)
    else:
        module = Head(block.in_chs, block.mid_chs, block.feat_chs, block.out_chs, block.act)
    return module.eval()
