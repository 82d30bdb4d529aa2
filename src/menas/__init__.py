"""menas: multi-trial evolutionary neural architecture search with lottery tickets.

`menas.load(PATH)` gives the trained network at PATH (an export, checkpoint or run folder, or a .safetensors
file) as an nn.Module in eval mode; `menas.Genome`, `menas.build_model` and `menas.count_cost` are the
architecture-as-data API. They are imported on first use (PEP 562), so `import menas` stays cheap and does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Top-level name -> the module that defines it (imported on first access).
_LAZY = {
    "load": "menas.winner.load",
    "Genome": "menas.space.genome",
    "build_model": "menas.nn.builder",
    "count_cost": "menas.space.cost",
}

__all__ = ["Genome", "__version__", "build_model", "count_cost", "load"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'menas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
