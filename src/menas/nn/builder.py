"""Builds a torch model from a genome. The genome is read, never changed."""

from __future__ import annotations

import math

import torch
from torch import nn

from menas.errors import UserError
from menas.nn.blocks import ConvBnAct, DepthwiseSeparable, InvertedResidual, create_act
from menas.space.genome import Genome, se_channels


class MenasNet(nn.Module):
    """A MobileNetV3-family network: stem, depthwise-separable block, stages of inverted residuals, head.

    Layout (and parameter count for MobileNetV3-Large) follows timm's `mobilenetv3_large_100`: the head's
    1x1 conv after global pooling has a bias and no BN.
    """

    def __init__(
        self,
        genome: Genome,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes: got {num_classes!r}, allowed: integers >= 1")
        if not isinstance(in_chans, int) or in_chans < 1:
            raise UserError(f"in_chans: got {in_chans!r}, allowed: integers >= 1")
        if not 0.0 <= drop_rate < 1.0:
            raise UserError(f"drop_rate: got {drop_rate!r}, allowed: 0 <= drop_rate < 1")
        self.genome = genome
        self.num_classes = num_classes
        stem, ds, head = genome.stem, genome.ds, genome.head
        self.stem = ConvBnAct(in_chans, stem.out_chs, 3, 2, act=stem.act)
        ds_se = se_channels(stem.out_chs) if ds.se else 0
        self.ds = DepthwiseSeparable(stem.out_chs, ds.out_chs, ds.kernel, ds.stride, ds_se, ds.act)
        stages, in_chs = [], ds.out_chs
        for stage in genome.stages:
            layers = []
            for j, layer in enumerate(stage.layers):
                se_chs = se_channels(layer.mid_chs) if layer.se else 0
                stride = stage.stride if j == 0 else 1
                layers.append(
                    InvertedResidual(in_chs, layer.mid_chs, stage.out_chs, layer.kernel, stride, se_chs, layer.act)
                )
                in_chs = stage.out_chs
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head_conv = ConvBnAct(in_chs, head.head_chs, 1, act=head.act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(head.head_chs, head.feat_chs, 1, bias=True)
        self.head_act = create_act(head.act)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head.feat_chs, num_classes)
        self.apply(_init_weights)
        if zero_init_last:
            self.zero_init_residuals()

    def zero_init_residuals(self) -> None:
        """Zeroes the last BN scale of every residual block, so each starts as the identity (as timm's
        `zero_init_last`): the network then learns faster in its first epochs, all the training a search trial
        gets."""
        for module in self.modules():
            if isinstance(module, DepthwiseSeparable | InvertedResidual) and module.has_skip:
                nn.init.zeros_(module.project.bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_conv(self.stages(self.ds(self.stem(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_act(self.conv_head(self.pool(x)))
        return self.classifier(self.dropout(torch.flatten(x, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    """EfficientNet/MobileNetV3 initialisation (as in the TF reference): fan-out normal for convs."""
    if isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.weight.size(0))
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)


def build_model(
    genome: Genome, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2, zero_init_last: bool = True
) -> MenasNet:
    """The network a genome describes, freshly initialised (call `.to(memory_format=torch.channels_last)`
    and `.to(device)` as needed; the model works in either memory format, on CPU or CUDA)."""
    return MenasNet(genome, num_classes, in_chans, drop_rate, zero_init_last)
