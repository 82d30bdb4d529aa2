"""Seeded genomes shared by the tests (a plain module, so tests import it explicitly)."""

from __future__ import annotations

import random

from menas.space.cost import Budget
from menas.space.genome import Genome
from menas.space.operators import sample
from menas.space.spaces import PRESETS

MT = PRESETS["mobilenet3-mt"]
WS = PRESETS["mobilenet3-ws"]


def seeded_genomes(space_name: str, n: int, seed: int = 0, budget: Budget | None = None) -> list[Genome]:
    """`n` genomes of a preset space drawn with `random.Random(seed)`, optionally within a budget."""
    rng = random.Random(seed)
    return [sample(PRESETS[space_name], rng, budget) for _ in range(n)]
