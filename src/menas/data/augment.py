"""Batch augmentation for retraining, on the device and from explicit generators: RandAugment on uint8 batches
(`BatchRandAugment`: groups of images with their own seeded draws, from a timm spec read by `RandAugmentSpec`) and
random erasing (`random_erasing`) on normalised batches. Both draw the same amount of randomness for every batch of
a size, so an epoch's augmentation is identical after a resume.

Imports `menas.errors` from menas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from menas.errors import UserError

# --------------------------------------------------------------------------------------------- batch augmentation


@dataclass(frozen=True)
class RandAugmentSpec:
    """A timm RandAugment spec such as "rand-m9-mstd0.5": `ops` operations per image at `magnitude` (timm's 0-10
    scale), jittered per operation by a normal draw of std `magnitude_std` and clipped to 0-10."""

    magnitude: float = 9.0
    ops: int = 2
    magnitude_std: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> RandAugmentSpec:
        """Reads "rand-m9-n2-mstd0.5" (keys m, n, mstd; timm's `inc`, `p` and `w` are not supported)."""
        parts = spec.split("-")
        if parts[0] != "rand":
            raise UserError(f"data.randaugment: got {spec!r}, allowed: a timm spec like 'rand-m9-mstd0.5'")
        values: dict[str, float] = {}
        for part in parts[1:]:
            key = "mstd" if part.startswith("mstd") else part[:1]
            try:
                values[key] = float(part[len(key) :])
            except ValueError:
                key = "?"
            if key not in ("m", "n", "mstd"):
                raise UserError(f"data.randaugment: {part!r} in {spec!r}, allowed: m<magnitude>, n<ops>, mstd<std>")
        parsed = cls(values.get("m", 9.0), int(values.get("n", 2)), values.get("mstd", 0.0))
        if not (0 <= parsed.magnitude <= 10 and parsed.ops >= 1 and parsed.magnitude_std >= 0):
            raise UserError(f"data.randaugment: got {spec!r}, allowed: 0 <= m <= 10, n >= 1, mstd >= 0")
        return parsed


class BatchRandAugment:
    """RandAugment on uint8 image batches on their device, with torchvision's v2 operations.

    torchvision applies one drawn operation to a whole batch; here each batch is cut into groups of `group`
    images and every group draws its own operations, magnitudes and signs from an explicit generator, so an
    epoch's augmentation is reproducible (and identical after a resume). The operations and their ranges are
    torchvision's RandAugment space (timm's `rand` set without SolarizeAdd and Invert), on timm's 0-10 magnitude
    scale: level m uses m/10 of each range.
    """

    def __init__(self, spec: str, group: int = 16) -> None:
        from torchvision.transforms import v2

        self.spec, self.group = RandAugmentSpec.parse(spec), group
        self._ops = v2.RandAugment(interpolation=v2.InterpolationMode.NEAREST)
        self._names = list(self._ops._AUGMENTATION_SPACE)

    def _magnitude(self, name: str, level: float, negative: bool, size: tuple[int, int]) -> float:
        magnitudes_fn, signed = self._ops._AUGMENTATION_SPACE[name]
        bins = magnitudes_fn(11, *size)  # 11 bins: bin i is level i of timm's 0-10 scale
        if bins is None:
            return 0.0
        value = float(bins[0]) + float(bins[10] - bins[0]) * level / 10.0
        if name == "Posterize":
            return float(round(value))
        return -value if signed and negative else value

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augments uint8 images (B, C, H, W) into a new tensor; every batch of a size draws the same amount of
        randomness from `generator`."""
        groups, n = math.ceil(images.shape[0] / self.group), self.spec.ops
        choice = torch.randint(len(self._names), (groups, n), generator=generator).tolist()
        jitter = torch.randn((groups, n), generator=generator) * self.spec.magnitude_std
        levels = (jitter + self.spec.magnitude).clamp_(0.0, 10.0).tolist()
        negative = (torch.rand((groups, n), generator=generator) < 0.5).tolist()
        size = (images.shape[-2], images.shape[-1])
        out = torch.empty_like(images, memory_format=torch.contiguous_format)
        for i in range(groups):
            part = images[i * self.group : (i + 1) * self.group]
            for k in range(n):
                name = self._names[choice[i][k]]
                magnitude = self._magnitude(name, levels[i][k], negative[i][k], size)
                part = self._ops._apply_image_or_video_transform(
                    part, name, magnitude, interpolation=self._ops.interpolation, fill=self._ops._fill
                )
            out[i * self.group : (i + 1) * self.group] = part
        return out


def random_erasing(images: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """timm's RandomErasing (mode "pixel") on a normalised batch, in place, drawn from an explicit generator.

    Each image, with `probability`, gets one box of 2-33% of its area and aspect ratio 0.3-3.3 (the first of 10
    drawn shapes that fits) filled with standard-normal noise. Vectorised: one mask for the batch, no Python loop
    over images; the same amount of randomness is drawn for every batch of a size.
    """
    b, c, h, w = images.shape
    chosen = torch.rand(b, generator=generator) < probability
    area = torch.empty((b, 10)).uniform_(0.02, 1 / 3, generator=generator) * (h * w)
    ratio = torch.empty((b, 10)).uniform_(math.log(0.3), math.log(1 / 0.3), generator=generator).exp_()
    eh, ew = (area * ratio).sqrt().round().long(), (area / ratio).sqrt().round().long()
    fits = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
    first = fits.float().argmax(dim=1, keepdim=True)
    erase = chosen & fits.any(dim=1)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    top = (torch.rand(b, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=generator) * (w - ew + 1)).long()
    noise = torch.randn((b, c, h, w), generator=generator)
    if not bool(erase.any()):
        return images
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
    inside = inside & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1))
    mask = (inside & erase.view(-1, 1, 1)).unsqueeze(1).to(images.device, non_blocking=True)
    images.copy_(torch.where(mask, noise.to(images.device, non_blocking=True), images))
    return images
