"""Genomes: the architecture as data.

A `Genome` is an immutable, fully concrete description of one network of the MobileNetV3 family (stem,
first depthwise-separable block, stages of inverted residual layers, head). It stores the channel counts the
builder needs (expanded `mid_chs`, stage `out_chs`), so pruned genomes need no extra genes. Its canonical string
(`to_str`) is its identity: database key, dedup key, log line. `from_str(to_str(g)) == g` always holds.

Also the value checks and mapping helpers that `menas.space.spaces` (the search spaces, data too) shares, and
`REFERENCE_GENOMES`: timm's MobileNetV3-Large and -Small as genomes.

This module never imports torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from menas.errors import UserError, check, is_int

#: Activation names accepted in genomes and spaces, with their short codes in genome strings.
ACT_CODES: dict[str, str] = {"relu": "re", "hardswish": "hs", "silu": "sw"}
_ACT_BY_CODE = {code: name for name, code in ACT_CODES.items()}


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Rounds a channel count to the nearest multiple of `divisor`, never dropping more than 10%.

    Same rule as timm's `make_divisible` and torchvision's `_make_divisible`, so MobileNetV3 channel counts
    match the reference implementations exactly.
    """
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def se_channels(chs: int, divisor: int = 8) -> int:
    """Reduced channel count of a Squeeze-and-Excite module on `chs` channels (MobileNetV3: ratio 0.25)."""
    return make_divisible(chs * 0.25, divisor)


def _check_act(where: str, act: str) -> None:
    check(act in ACT_CODES, where, act, ", ".join(ACT_CODES))


def _check_kernel(where: str, kernel: int) -> None:
    check(isinstance(kernel, int) and kernel >= 1 and kernel % 2 == 1, where, kernel, "odd integers >= 1")


def _check_chs(where: str, chs: int) -> None:
    check(is_int(chs) and chs > 0, where, chs, "integers > 0")


def _check_stride(where: str, stride: int) -> None:
    check(stride in (1, 2), where, stride, "1 or 2")


# --------------------------------------------------------------------------------------------- genome


@dataclass(frozen=True, slots=True)
class LayerGene:
    """One inverted residual layer: 1x1 expand to `mid_chs`, depthwise kxk, optional SE, 1x1 project."""

    kernel: int
    mid_chs: int
    se: bool = False
    act: str = "relu"

    def __post_init__(self) -> None:
        _check_kernel("layer.kernel", self.kernel)
        _check_chs("layer.mid_chs", self.mid_chs)
        check(isinstance(self.se, bool), "layer.se", self.se, "true or false")
        _check_act("layer.act", self.act)


@dataclass(frozen=True, slots=True)
class StageGene:
    """A run of layers with one output width; the first layer carries the stage's stride."""

    out_chs: int
    stride: int
    layers: tuple[LayerGene, ...]

    def __post_init__(self) -> None:
        _check_chs("stage.out_chs", self.out_chs)
        _check_stride("stage.stride", self.stride)
        check(isinstance(self.layers, tuple) and len(self.layers) >= 1, "stage.layers", self.layers, ">= 1 layer")

    @property
    def depth(self) -> int:
        return len(self.layers)


@dataclass(frozen=True, slots=True)
class StemGene:
    """Stem conv 3x3 stride 2 (the first down-sample), BN, activation."""

    out_chs: int = 16
    act: str = "hardswish"

    def __post_init__(self) -> None:
        _check_chs("stem.out_chs", self.out_chs)
        _check_act("stem.act", self.act)


@dataclass(frozen=True, slots=True)
class DsGene:
    """The depthwise-separable block after the stem (depthwise kxk, optional SE, 1x1 project)."""

    kernel: int = 3
    stride: int = 1
    out_chs: int = 16
    se: bool = False
    act: str = "relu"

    def __post_init__(self) -> None:
        _check_kernel("ds.kernel", self.kernel)
        _check_stride("ds.stride", self.stride)
        _check_chs("ds.out_chs", self.out_chs)
        check(isinstance(self.se, bool), "ds.se", self.se, "true or false")
        _check_act("ds.act", self.act)


@dataclass(frozen=True, slots=True)
class HeadGene:
    """Tail: 1x1 conv to `head_chs` + BN + act, global pool, 1x1 conv (with bias) to `feat_chs` + act, classifier."""

    head_chs: int = 960
    feat_chs: int = 1280
    act: str = "hardswish"

    def __post_init__(self) -> None:
        _check_chs("head.head_chs", self.head_chs)
        _check_chs("head.feat_chs", self.feat_chs)
        _check_act("head.act", self.act)


@dataclass(frozen=True, slots=True)
class Genome:
    """A complete, immutable network description. Equal genomes have equal strings and equal hashes."""

    stem: StemGene
    ds: DsGene
    stages: tuple[StageGene, ...]
    head: HeadGene

    def __post_init__(self) -> None:
        check(isinstance(self.stages, tuple) and len(self.stages) >= 1, "genome.stages", self.stages, ">= 1 stage")

    def __str__(self) -> str:
        return self.to_str()

    @property
    def depth(self) -> int:
        """Number of inverted residual layers over all stages."""
        return sum(len(s.layers) for s in self.stages)

    def layer_in_chs(self) -> list[list[int]]:
        """Input channels of every layer, per stage."""
        result, in_chs = [], self.ds.out_chs
        for stage in self.stages:
            result.append([in_chs] + [stage.out_chs] * (len(stage.layers) - 1))
            in_chs = stage.out_chs
        return result

    # -- codecs ------------------------------------------------------------------------------------

    def to_str(self) -> str:
        """Canonical string, e.g. `stem_c16_hs-ds_k3_c16_re|ir_k3_s2_m64_c24_re-...|head_c960_f1280_hs`."""
        parts = [f"stem_c{self.stem.out_chs}_{ACT_CODES[self.stem.act]}-{_ds_token(self.ds)}"]
        for stage in self.stages:
            parts.append(
                "-".join(
                    _ir_token(layer, stage.stride if i == 0 else 1, stage.out_chs)
                    for i, layer in enumerate(stage.layers)
                )
            )
        head = self.head
        parts.append(f"head_c{head.head_chs}_f{head.feat_chs}_{ACT_CODES[head.act]}")
        return "|".join(parts)

    @classmethod
    def from_str(cls, text: str) -> Genome:
        """Parses a genome string; raises ValueError naming the offending section and token."""
        return _parse_genome(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stem": {"out_chs": self.stem.out_chs, "act": self.stem.act},
            "ds": _plain(self.ds),
            "stages": [
                {"out_chs": s.out_chs, "stride": s.stride, "layers": [_plain(layer) for layer in s.layers]}
                for s in self.stages
            ],
            "head": _plain(self.head),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Genome:
        """Builds a genome from `to_dict` output; unknown or missing keys raise ValueError naming them."""
        check(isinstance(data, dict), "genome", type(data).__name__, "a mapping")
        _only_keys("genome", data, {"stem", "ds", "stages", "head"}, required=True)
        stages_data = data["stages"]
        check(isinstance(stages_data, list), "genome.stages", type(stages_data).__name__, "a list")
        stages = []
        for i, s in enumerate(stages_data):
            check(isinstance(s, dict), f"genome.stages[{i}]", type(s).__name__, "a mapping")
            _only_keys(f"genome.stages[{i}]", s, {"out_chs", "stride", "layers"}, required=True)
            layers = tuple(_make(LayerGene, f"genome.stages[{i}].layers[{j}]", x) for j, x in enumerate(s["layers"]))
            stages.append(StageGene(out_chs=s["out_chs"], stride=s["stride"], layers=layers))
        return cls(
            stem=_make(StemGene, "genome.stem", data["stem"]),
            ds=_make(DsGene, "genome.ds", data["ds"]),
            stages=tuple(stages),
            head=_make(HeadGene, "genome.head", data["head"]),
        )

    def to_json(self) -> str:
        return json.dumps({"genome": self.to_str(), **self.to_dict()}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Genome:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"genome JSON: not valid JSON ({exc})") from None
        if isinstance(data, dict) and set(data) == {"genome"}:
            return cls.from_str(data["genome"])
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "genome"}
        return cls.from_dict(data)


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _only_keys(where: str, data: dict, allowed: set[str], required: bool = False) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}, allowed: {', '.join(sorted(allowed))}")
    missing = sorted(allowed - set(data)) if required else []
    if missing:
        raise UserError(f"{where}: missing key {missing[0]!r}")


def _make(cls: type, where: str, data: Any) -> Any:
    check(isinstance(data, dict), where, type(data).__name__, "a mapping")
    _only_keys(where, data, {f.name for f in fields(cls)})
    try:
        return cls(**data)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------------------------- string codec


def _ds_token(ds: DsGene) -> str:
    stride = "_s2" if ds.stride == 2 else ""
    se = "_se" if ds.se else ""
    return f"ds_k{ds.kernel}{stride}_c{ds.out_chs}{se}_{ACT_CODES[ds.act]}"


def _ir_token(layer: LayerGene, stride: int, out_chs: int) -> str:
    s = "_s2" if stride == 2 else ""
    se = "_se" if layer.se else ""
    return f"ir_k{layer.kernel}{s}_m{layer.mid_chs}_c{out_chs}{se}_{ACT_CODES[layer.act]}"


_NUM_TOKEN = re.compile(r"^([ksmcf])(\d+)$")


def _parse_block(token: str, where: str, kind: str) -> dict[str, Any]:
    """Splits `ir_k3_s2_m64_c24_se_re` into {'k': 3, 's': 2, 'm': 64, 'c': 24, 'se': True, 'act': 'relu'}."""
    parts = token.split("_")
    if parts[0] != kind:
        raise UserError(f"genome string, {where}: block {token!r} should start with {kind!r}")
    out: dict[str, Any] = {"se": False}
    seen: set[str] = set()
    for part in parts[1:]:
        match = _NUM_TOKEN.match(part)
        if match:
            key, value = match.group(1), int(match.group(2))
        elif part == "se":
            key, value = "se", True
        elif part in _ACT_BY_CODE:
            key, value = "act", _ACT_BY_CODE[part]
        else:
            allowed = "k<kernel>, s<stride>, m<mid>, c<out>, f<features>, se, " + ", ".join(_ACT_BY_CODE)
            raise UserError(f"genome string, {where}: unknown token {part!r} in {token!r}, allowed: {allowed}")
        if key in seen:
            raise UserError(f"genome string, {where}: token {part!r} repeated in {token!r}")
        seen.add(key)
        out[key] = value
    return out


def _need(block: dict[str, Any], keys: str, where: str, token: str) -> None:
    for key in keys.split():
        if key not in block:
            raise UserError(f"genome string, {where}: {token!r} is missing the {key!r} token")


def _no_extra(block: dict[str, Any], keys: str, where: str, token: str) -> None:
    extra = sorted(set(block) - set(keys.split()) - {"se"})
    if extra:
        raise UserError(f"genome string, {where}: token {extra[0]!r} is not allowed in {token!r}")


def _parse_genome(text: str) -> Genome:
    if not isinstance(text, str):
        raise UserError(f"genome string: got {type(text).__name__}, expected str")
    sections = text.strip().split("|")
    if len(sections) < 3:
        raise UserError(
            "genome string: expected 'stem...-ds...|stage|...|head...' with at least one stage, "
            f"got {len(sections)} section(s) in {text.strip()[:80]!r}"
        )
    try:
        return _parse_sections(sections)
    except ValueError as exc:
        message = str(exc)
        raise UserError(message if message.startswith("genome string") else f"genome string: {message}") from None


def _parse_sections(sections: list[str]) -> Genome:
    stem_part = sections[0].split("-")
    if len(stem_part) != 2:
        raise UserError(f"genome string, stem section: expected 'stem_...-ds_...', got {sections[0]!r}")
    stem_b = _parse_block(stem_part[0], "stem", "stem")
    _need(stem_b, "c act", "stem", stem_part[0])
    _no_extra(stem_b, "c act", "stem", stem_part[0])
    if stem_b["se"]:
        raise UserError(f"genome string, stem: token 'se' is not allowed in {stem_part[0]!r}")
    ds_b = _parse_block(stem_part[1], "ds", "ds")
    _need(ds_b, "k c act", "ds", stem_part[1])
    _no_extra(ds_b, "k s c act", "ds", stem_part[1])
    stem = StemGene(out_chs=stem_b["c"], act=stem_b["act"])
    ds = DsGene(kernel=ds_b["k"], stride=ds_b.get("s", 1), out_chs=ds_b["c"], se=ds_b["se"], act=ds_b["act"])

    stages = []
    for i, section in enumerate(sections[1:-1]):
        layers, stride, out_chs = [], 1, None
        for j, token in enumerate(section.split("-")):
            where = f"stage {i} layer {j}"
            b = _parse_block(token, where, "ir")
            _need(b, "k m c act", where, token)
            _no_extra(b, "k s m c act", where, token)
            if j == 0:
                stride, out_chs = b.get("s", 1), b["c"]
            elif b.get("s", 1) != 1:
                raise UserError(f"genome string, {where}: only the first layer of a stage may have a stride")
            elif b["c"] != out_chs:
                raise UserError(f"genome string, {where}: c{b['c']} differs from the stage's c{out_chs}")
            layers.append(LayerGene(kernel=b["k"], mid_chs=b["m"], se=b["se"], act=b["act"]))
        stages.append(StageGene(out_chs=out_chs, stride=stride, layers=tuple(layers)))

    head_b = _parse_block(sections[-1], "head", "head")
    _need(head_b, "c f act", "head", sections[-1])
    _no_extra(head_b, "c f act", "head", sections[-1])
    if head_b["se"]:
        raise UserError(f"genome string, head: token 'se' is not allowed in {sections[-1]!r}")
    head = HeadGene(head_chs=head_b["c"], feat_chs=head_b["f"], act=head_b["act"])
    return Genome(stem=stem, ds=ds, stages=tuple(stages), head=head)


# --------------------------------------------------------------------------------------------- references

#: MobileNetV3-Large as in timm's `mobilenetv3_large_100` (expansions 2.5 and 2.3 give mid 200 and 184).
MOBILENETV3_LARGE = (
    "stem_c16_hs-ds_k3_c16_re"
    "|ir_k3_s2_m64_c24_re-ir_k3_m72_c24_re"
    "|ir_k5_s2_m72_c40_se_re-ir_k5_m120_c40_se_re-ir_k5_m120_c40_se_re"
    "|ir_k3_s2_m240_c80_hs-ir_k3_m200_c80_hs-ir_k3_m184_c80_hs-ir_k3_m184_c80_hs"
    "|ir_k3_m480_c112_se_hs-ir_k3_m672_c112_se_hs"
    "|ir_k5_s2_m672_c160_se_hs-ir_k5_m960_c160_se_hs-ir_k5_m960_c160_se_hs"
    "|head_c960_f1280_hs"
)

#: MobileNetV3-Small as in timm's `mobilenetv3_small_100`: its four inverted residual stages (the skeleton's
#: stage count is free in a genome; the presets ask for five).
MOBILENETV3_SMALL = (
    "stem_c16_hs-ds_k3_s2_c16_se_re"
    "|ir_k3_s2_m72_c24_re-ir_k3_m88_c24_re"
    "|ir_k5_s2_m96_c40_se_hs-ir_k5_m240_c40_se_hs-ir_k5_m240_c40_se_hs"
    "|ir_k5_m120_c48_se_hs-ir_k5_m144_c48_se_hs"
    "|ir_k5_s2_m288_c96_se_hs-ir_k5_m576_c96_se_hs-ir_k5_m576_c96_se_hs"
    "|head_c576_f1024_hs"
)

REFERENCE_GENOMES: dict[str, str] = {
    "mobilenetv3_large_100": MOBILENETV3_LARGE,
    "mobilenetv3_small_100": MOBILENETV3_SMALL,
}


def parse_genome_arg(text: str) -> Genome:
    """Reads a genome from a reference name, a genome string, or a path to a .json/.txt file holding one."""
    text = text.strip()
    if text in REFERENCE_GENOMES:
        return Genome.from_str(REFERENCE_GENOMES[text])
    if "|" not in text:
        path = Path(text)
        if not path.exists():
            names = ", ".join(REFERENCE_GENOMES)
            raise UserError(f"genome: {text!r} is neither a genome string, a reference name ({names}) nor a file")
        content = path.read_text()
        return Genome.from_json(content) if content.lstrip().startswith("{") else Genome.from_str(content)
    return Genome.from_str(text)
