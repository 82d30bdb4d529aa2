"""Gene origins: where each gene of a bred child came from (`Origin`: per stage the parent of each stage gene, per
layer the parent layer it was taken from and the genes that differ, and the backbone parent), which the traced
operators (`menas.space.operators.mutate_traced`, `crossover_traced`, `repair_traced`) record and weight
inheritance reads. Plain data with a JSON form. No torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from menas.space.genome import Genome

#: Layer genes an `Origin` compares with the source layer; `in_chs`/`out_chs` are the widths around the layer
#: (set by the stages before it and by its stage), which a crossover or a width change can alter.
LAYER_GENES = ("kernel", "mid_chs", "se", "act", "in_chs", "out_chs")


@dataclass(frozen=True)
class LayerOrigin:
    """The parent layer a child layer was taken from (`parent` index, its `stage` and `layer` position), and
    the genes of `LAYER_GENES` in which the child differs from it (re-drawn by mutation, moved by repair, or
    rescaled after a width change). Weights map tensor by tensor whatever changed (see `menas.search.inherit`)."""

    parent: int
    stage: int
    layer: int
    changed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"parent": self.parent, "stage": self.stage, "layer": self.layer, "changed": list(self.changed)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerOrigin:
        return cls(int(data["parent"]), int(data["stage"]), int(data["layer"]), tuple(data.get("changed", ())))


@dataclass(frozen=True)
class StageOrigin:
    """Per stage gene (depth, out, stride) the parent whose value the child has, None where the value is one no
    source parent had (re-drawn); per child layer its `LayerOrigin`, None for a layer drawn new."""

    depth: int | None
    out: int | None
    stride: int | None
    layers: tuple[LayerOrigin | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "out": self.out,
            "stride": self.stride,
            "layers": [None if x is None else x.to_dict() for x in self.layers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageOrigin:
        layers = tuple(None if x is None else LayerOrigin.from_dict(x) for x in data["layers"])
        return cls(data["depth"], data["out"], data["stride"], layers)


@dataclass(frozen=True)
class Origin:
    """Where each gene of a bred child came from: plain data (`to_dict` is JSON-serialisable) to be stored with
    the trial and read by weight inheritance.

    `parents` is 1 (mutation) or 2 (crossover); `backbone` the parent whose stem, ds block, head and classifier
    the child takes; `stages` one `StageOrigin` per child stage. Operators keep positions: a child's stage i is
    built from its parents' stages i, and its layer j from a layer j. A layer added by a depth move is new; a
    layer whose genes were re-drawn keeps its source and lists the changed genes (the rule for "re-drawn but
    same shape": weights still map, a changed kernel centred, a changed width by importance slicing or padding).
    """

    parents: int
    backbone: int
    stages: tuple[StageOrigin, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"parents": self.parents, "backbone": self.backbone, "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Origin:
        return cls(int(data["parents"]), int(data["backbone"]), tuple(StageOrigin.from_dict(s) for s in data["stages"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Origin:
        return cls.from_dict(json.loads(text))

    @property
    def new_layers(self) -> int:
        """Child layers with no parent layer."""
        return sum(1 for s in self.stages for x in s.layers if x is None)


def identity_origin(genome: Genome) -> Origin:
    """The origin of a child identical to its one parent: every gene maps to itself."""
    stages = tuple(
        StageOrigin(0, 0, 0, tuple(LayerOrigin(0, i, j) for j in range(stage.depth)))
        for i, stage in enumerate(genome.stages)
    )
    return Origin(1, 0, stages)


def layer_genes(genome: Genome, i: int, j: int) -> tuple:
    stage, layer = genome.stages[i], genome.stages[i].layers[j]
    in_chs = genome.layer_in_chs()[i][j]
    return layer.kernel, layer.mid_chs, layer.se, layer.act, in_chs, stage.out_chs
