"""The device a command runs on: `"auto"` is the first CUDA device if there is one, else the CPU.

Imports `menas.errors` from menas.
"""

from __future__ import annotations

import torch

from menas.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """`"auto"`: the first CUDA device if there is one, else the CPU; otherwise `torch.device(name)`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device: got {name!r}, allowed: auto, cpu, cuda, cuda:N") from None
