"""Search spaces as data: per-stage choices, sampling bounds and the presets `mobilenet3-mt` (the paper's) and
`mobilenet3-ws` (once-for-all's); a space can be written to and read from YAML."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from menas.errors import UserError, check
from menas.space.genome import (
    DsGene,
    Genome,
    HeadGene,
    StemGene,
    _check_act,
    _check_chs,
    _check_kernel,
    _check_stride,
    _make,
    _only_keys,
    _plain,
    make_divisible,
)

# --------------------------------------------------------------------------------------------- spaces


@dataclass(frozen=True)
class StageSpace:
    """The choices for one stage. Layer choices (expansion, kernel, SE, activation) apply to every layer."""

    base_chs: int
    depths: tuple[int, ...]
    width_mults: tuple[float, ...]
    strides: tuple[int, ...]
    expand_ratios: tuple[float, ...]
    kernels: tuple[int, ...]
    se: tuple[bool, ...]
    acts: tuple[str, ...]

    def validate(self, where: str) -> None:
        _check_chs(f"{where}.base_chs", self.base_chs)
        for name in ("depths", "width_mults", "strides", "expand_ratios", "kernels", "se", "acts"):
            values = getattr(self, name)
            check(isinstance(values, tuple) and len(values) >= 1, f"{where}.{name}", values, "a non-empty list")
            check(len(set(values)) == len(values), f"{where}.{name}", values, "distinct values")
        for d in self.depths:
            check(isinstance(d, int) and d >= 1, f"{where}.depths", d, "integers >= 1")
        for w in self.width_mults:
            check(w > 0, f"{where}.width_mults", w, "numbers > 0")
        for s in self.strides:
            _check_stride(f"{where}.strides", s)
        for e in self.expand_ratios:
            check(e > 0, f"{where}.expand_ratios", e, "numbers > 0")
        for k in self.kernels:
            _check_kernel(f"{where}.kernels", k)
        for s in self.se:
            check(isinstance(s, bool), f"{where}.se", s, "true or false")
        for a in self.acts:
            _check_act(f"{where}.acts", a)


@dataclass(frozen=True)
class SearchSpace:
    """A family of genomes: fixed stem/ds/head template, and per-stage choices.

    Output channels of stage i are `make_divisible(base_chs * width_mult, divisor)`; mid channels of a layer are
    `make_divisible(in_chs * expand_ratio, divisor)`, or, when `allow_pruning`, any multiple of `divisor` up to
    the largest expansion (what a pruned ticket has). The head's conv has `make_divisible(head_ratio * last_out)`
    channels.
    """

    name: str
    stages: tuple[StageSpace, ...]
    max_downsamples: int = 4
    stem: StemGene = field(default_factory=StemGene)
    ds: DsGene = field(default_factory=DsGene)
    head_ratio: float = 6.0
    feat_chs: int = 1280
    head_act: str = "hardswish"
    divisor: int = 8
    allow_pruning: bool = False

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "space.name", self.name, "a non-empty string")
        check(isinstance(self.stages, tuple) and len(self.stages) >= 1, "space.stages", self.stages, ">= 1 stage")
        for i, stage in enumerate(self.stages):
            stage.validate(f"space.stages[{i}]")
        check(
            isinstance(self.max_downsamples, int) and self.max_downsamples >= 0,
            "space.max_downsamples",
            self.max_downsamples,
            "integers >= 0",
        )
        forced = sum(1 for s in self.stages if s.strides == (2,))
        check(
            forced <= self.max_downsamples,
            "space.max_downsamples",
            self.max_downsamples,
            f">= {forced} (stages whose only stride is 2)",
        )
        check(self.head_ratio > 0, "space.head_ratio", self.head_ratio, "numbers > 0")
        _check_chs("space.feat_chs", self.feat_chs)
        _check_act("space.head_act", self.head_act)
        check(isinstance(self.divisor, int) and self.divisor >= 1, "space.divisor", self.divisor, "integers >= 1")

    # -- derived channel choices (cached: the space is immutable) -----------------------------------

    def stage_outs(self, i: int) -> tuple[int, ...]:
        """Distinct output widths stage i can take, ascending."""
        return self._stage_outs[i]

    @cached_property
    def _stage_outs(self) -> tuple[tuple[int, ...], ...]:
        return tuple(
            tuple(sorted({make_divisible(s.base_chs * w, self.divisor) for w in s.width_mults})) for s in self.stages
        )

    def mid_choices(self, i: int, in_chs: int) -> tuple[int, ...]:
        """Distinct expanded widths a layer of stage i with `in_chs` inputs can take, ascending."""
        key = (i, in_chs)
        if key not in self._mid_cache:
            ratios = self.stages[i].expand_ratios
            self._mid_cache[key] = tuple(sorted({make_divisible(in_chs * e, self.divisor) for e in ratios}))
        return self._mid_cache[key]

    @cached_property
    def _mid_cache(self) -> dict[tuple[int, int], tuple[int, ...]]:
        return {}

    @cached_property
    def stride_vectors(self) -> tuple[tuple[int, ...], ...]:
        """Every allowed combination of stage strides (at most `max_downsamples` of them 2)."""
        return tuple(
            v for v in itertools.product(*(s.strides for s in self.stages)) if v.count(2) <= self.max_downsamples
        )

    def head_chs(self, last_out: int) -> int:
        return make_divisible(self.head_ratio * last_out, self.divisor)

    def head_gene(self, last_out: int) -> HeadGene:
        return HeadGene(head_chs=self.head_chs(last_out), feat_chs=self.feat_chs, act=self.head_act)

    # -- membership ---------------------------------------------------------------------------------

    def check(self, genome: Genome) -> None:
        """Raises ValueError naming the first field of `genome` that this space does not allow."""
        check(genome.stem == self.stem, "genome.stem", genome.stem, f"{self.stem} (fixed in {self.name})")
        check(genome.ds == self.ds, "genome.ds", genome.ds, f"{self.ds} (fixed in {self.name})")
        check(
            len(genome.stages) == len(self.stages),
            "genome.stages",
            len(genome.stages),
            f"{len(self.stages)} stages in {self.name}",
        )
        downsamples = sum(1 for s in genome.stages if s.stride == 2)
        check(
            downsamples <= self.max_downsamples,
            "genome down-samplings",
            downsamples,
            f"at most {self.max_downsamples} stages with stride 2",
        )
        in_chs = genome.ds.out_chs
        for i, (stage, choices) in enumerate(zip(genome.stages, self.stages, strict=True)):
            where = f"genome.stages[{i}]"
            check(stage.depth in choices.depths, f"{where}.depth", stage.depth, _fmt(choices.depths))
            check(stage.stride in choices.strides, f"{where}.stride", stage.stride, _fmt(choices.strides))
            outs = self.stage_outs(i)
            if self.allow_pruning:
                check(
                    stage.out_chs % self.divisor == 0 and stage.out_chs <= outs[-1],
                    f"{where}.out_chs",
                    stage.out_chs,
                    f"multiples of {self.divisor} up to {outs[-1]}",
                )
            else:
                check(stage.out_chs in outs, f"{where}.out_chs", stage.out_chs, _fmt(outs))
            for j, layer in enumerate(stage.layers):
                lw = f"{where}.layers[{j}]"
                check(layer.kernel in choices.kernels, f"{lw}.kernel", layer.kernel, _fmt(choices.kernels))
                check(layer.se in choices.se, f"{lw}.se", layer.se, _fmt(choices.se))
                check(layer.act in choices.acts, f"{lw}.act", layer.act, _fmt(choices.acts))
                mids = self.mid_choices(i, in_chs)
                if self.allow_pruning:
                    check(
                        layer.mid_chs % self.divisor == 0 and layer.mid_chs <= mids[-1],
                        f"{lw}.mid_chs",
                        layer.mid_chs,
                        f"multiples of {self.divisor} up to {mids[-1]}",
                    )
                else:
                    check(layer.mid_chs in mids, f"{lw}.mid_chs", layer.mid_chs, f"{_fmt(mids)} for {in_chs} inputs")
                in_chs = stage.out_chs
        check(genome.head.feat_chs == self.feat_chs, "genome.head.feat_chs", genome.head.feat_chs, str(self.feat_chs))
        check(genome.head.act == self.head_act, "genome.head.act", genome.head.act, self.head_act)

    def contains(self, genome: Genome) -> bool:
        try:
            self.check(genome)
        except ValueError:
            return False
        return True

    # -- YAML / dict ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_downsamples": self.max_downsamples,
            "divisor": self.divisor,
            "allow_pruning": self.allow_pruning,
            "stem": _plain(self.stem),
            "ds": _plain(self.ds),
            "head": {"ratio": self.head_ratio, "feat_chs": self.feat_chs, "act": self.head_act},
            "stages": [{k: list(v) if isinstance(v, tuple) else v for k, v in _plain(s).items()} for s in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        """Builds a space from a mapping (as written by `to_dict`); unknown keys raise ValueError naming them."""
        check(isinstance(data, dict), "space", type(data).__name__, "a mapping")
        top = {"name", "max_downsamples", "divisor", "allow_pruning", "stem", "ds", "head", "stages"}
        _only_keys("space", data, top)
        if "stages" not in data or not isinstance(data["stages"], list):
            raise UserError("space.stages: missing or not a list of stage mappings")
        stage_keys = {f.name for f in fields(StageSpace)}
        stages = []
        for i, s in enumerate(data["stages"]):
            check(isinstance(s, dict), f"space.stages[{i}]", type(s).__name__, "a mapping")
            _only_keys(f"space.stages[{i}]", s, stage_keys, required=True)
            values = {}
            for k, v in s.items():
                values[k] = v if k == "base_chs" else tuple(v) if isinstance(v, list | tuple) else (v,)
            stages.append(StageSpace(**values))
        head = data.get("head", {})
        check(isinstance(head, dict), "space.head", head, "a mapping")
        _only_keys("space.head", head, {"ratio", "feat_chs", "act"})
        kwargs: dict[str, Any] = {"name": data.get("name", "custom"), "stages": tuple(stages)}
        for key in ("max_downsamples", "divisor", "allow_pruning"):
            if key in data:
                kwargs[key] = data[key]
        if "stem" in data:
            kwargs["stem"] = _make(StemGene, "space.stem", data["stem"])
        if "ds" in data:
            kwargs["ds"] = _make(DsGene, "space.ds", data["ds"])
        for src, dst in (("ratio", "head_ratio"), ("feat_chs", "feat_chs"), ("act", "head_act")):
            if src in head:
                kwargs[dst] = head[src]
        return cls(**kwargs)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def _fmt(values: tuple) -> str:
    return ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)


_MNV3_BASE = (24, 40, 80, 112, 160)
_MNV3_ACTS = ("relu", "relu", "hardswish", "hardswish", "hardswish")


def _mobilenet3_mt() -> SearchSpace:
    """The paper's MobileNet3-MT: depth 1-6, expansion 1-6, optional SE, kernels 3/5/7, searched widths and
    down-sampling (at most 4 over the five stages), pruned channel counts allowed."""
    stages = tuple(
        StageSpace(
            base_chs=base,
            depths=(1, 2, 3, 4, 5, 6),
            width_mults=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
            strides=(1, 2),
            expand_ratios=(1, 2, 3, 4, 5, 6),
            kernels=(3, 5, 7),
            se=(False, True),
            acts=(act,),
        )
        for base, act in zip(_MNV3_BASE, _MNV3_ACTS, strict=True)
    )
    return SearchSpace(name="mobilenet3-mt", stages=stages, max_downsamples=4, allow_pruning=True)


def _mobilenet3_ws() -> SearchSpace:
    """once-for-all's MobileNetV3 space: MobileNetV3-Large's strides, widths, SE placement and activations;
    depth 2-4, expansion 3/4/6, kernels 3/5/7."""
    se_by_stage = (False, True, False, True, True)
    stride_by_stage = (2, 2, 2, 1, 2)
    stages = tuple(
        StageSpace(
            base_chs=base,
            depths=(2, 3, 4),
            width_mults=(1.0,),
            strides=(stride,),
            expand_ratios=(3, 4, 6),
            kernels=(3, 5, 7),
            se=(se,),
            acts=(act,),
        )
        for base, act, se, stride in zip(_MNV3_BASE, _MNV3_ACTS, se_by_stage, stride_by_stage, strict=True)
    )
    return SearchSpace(name="mobilenet3-ws", stages=stages, max_downsamples=4, allow_pruning=False)


PRESETS: dict[str, SearchSpace] = {"mobilenet3-mt": _mobilenet3_mt(), "mobilenet3-ws": _mobilenet3_ws()}


def load_space(name_or_path: str) -> SearchSpace:
    """Returns a preset by name, or reads a space from a YAML file (safe loader)."""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.exists():
        raise UserError(f"space: {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"space file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return SearchSpace.from_dict(data)
