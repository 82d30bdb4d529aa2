"""Genome codec, validation and search-space rules."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from menas.space.genome import (
    MOBILENETV3_LARGE,
    MOBILENETV3_SMALL,
    Genome,
    LayerGene,
    StageGene,
    make_divisible,
    parse_genome_arg,
)
from menas.space.spaces import PRESETS, SearchSpace, load_space

from genomes import MT, WS, seeded_genomes


@pytest.mark.parametrize("text", [MOBILENETV3_LARGE, MOBILENETV3_SMALL])
def test_reference_strings_are_canonical(text: str) -> None:
    genome = Genome.from_str(text)
    assert genome.to_str() == text
    assert Genome.from_json(genome.to_json()) == genome


def test_mobilenetv3_large_structure() -> None:
    g = Genome.from_str(MOBILENETV3_LARGE)
    assert [s.depth for s in g.stages] == [2, 3, 4, 2, 3]
    assert [s.out_chs for s in g.stages] == [24, 40, 80, 112, 160]
    assert [s.stride for s in g.stages] == [2, 2, 2, 1, 2]
    # non-integer expansions 2.5 and 2.3 of MobileNetV3-Large, and its ReLU early stages
    assert [layer.mid_chs for layer in g.stages[2].layers] == [240, 200, 184, 184]
    assert {layer.act for s in g.stages[:2] for layer in s.layers} == {"relu"}
    assert MT.contains(g)
    assert not WS.contains(g)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), space=st.sampled_from(["mobilenet3-mt", "mobilenet3-ws"]))
def test_string_and_json_round_trip(seed: int, space: str) -> None:
    (genome,) = seeded_genomes(space, 1, seed)
    assert Genome.from_str(genome.to_str()) == genome
    assert Genome.from_json(genome.to_json()) == genome
    assert Genome.from_dict(json.loads(json.dumps(genome.to_dict()))) == genome
    assert hash(Genome.from_str(genome.to_str())) == hash(genome)


def test_genome_is_immutable() -> None:
    genome = Genome.from_str(MOBILENETV3_LARGE)
    with pytest.raises(AttributeError):
        genome.stages = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        genome.stages[0].layers[0].kernel = 5  # type: ignore[misc]


BAD_STRINGS = [
    ("", "at least one stage"),
    ("stem_c16_hs-ds_k3_c16_re|head_c960_f1280_hs", "at least one stage"),
    (MOBILENETV3_LARGE.replace("ir_k3_s2_m64", "ir_k4_s2_m64"), "layer.kernel: got 4"),
    (MOBILENETV3_LARGE.replace("m64_c24", "m0_c24"), "layer.mid_chs: got 0"),
    (MOBILENETV3_LARGE.replace("ir_k3_s2_m64_c24_re", "ir_k3_s2_m64_c24_xx"), "unknown token 'xx'"),
    (MOBILENETV3_LARGE.replace("ir_k3_m72_c24_re", "ir_k3_m72_c32_re"), "differs from the stage's c24"),
    (MOBILENETV3_LARGE.replace("ir_k3_m72_c24_re", "ir_k3_s2_m72_c24_re"), "only the first layer"),
    (MOBILENETV3_LARGE.replace("ir_k3_m72_c24_re", "ir_k3_k5_m72_c24_re"), "repeated"),
    (MOBILENETV3_LARGE.replace("ir_k3_m72_c24_re", "ir_k3_c24_re"), "missing the 'm' token"),
    (MOBILENETV3_LARGE.replace("ir_k3_s2_m64_c24_re", "ir_k3_s3_m64_c24_re"), "stage.stride: got 3"),
    (MOBILENETV3_LARGE.replace("head_c960", "tail_c960"), "should start with 'head'"),
    (MOBILENETV3_LARGE.replace("stem_c16_hs-", "stem_c16_hs_"), "expected 'stem_...-ds_...'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_STRINGS)
def test_bad_strings_raise_value_error_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="genome string") as info:
        Genome.from_str(text)
    assert message in str(info.value)


def test_direct_construction_validates() -> None:
    with pytest.raises(ValueError, match=r"layer.act: got 'tanh', allowed: relu, hardswish, silu"):
        LayerGene(kernel=3, mid_chs=16, act="tanh")
    with pytest.raises(ValueError, match="stage.layers"):
        StageGene(out_chs=16, stride=1, layers=())
    with pytest.raises(ValueError, match="stage.out_chs: got -8"):
        StageGene(out_chs=-8, stride=1, layers=(LayerGene(3, 16),))


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    data = Genome.from_str(MOBILENETV3_LARGE).to_dict()
    data["stages"][0]["layers"][0]["colour"] = "red"
    with pytest.raises(ValueError, match=r"genome.stages\[0\].layers\[0\]: unknown key 'colour'"):
        Genome.from_dict(data)
    data = Genome.from_str(MOBILENETV3_LARGE).to_dict()
    del data["head"]
    with pytest.raises(ValueError, match="missing key 'head'"):
        Genome.from_dict(data)
    with pytest.raises(ValueError, match="not valid JSON"):
        Genome.from_json("{nope")


def test_space_rules_name_field_value_and_allowed() -> None:
    g = Genome.from_str(MOBILENETV3_LARGE)
    too_deep = MOBILENETV3_LARGE.replace("ir_k3_m72_c24_re", "-".join(["ir_k3_m72_c24_re"] * 6))
    with pytest.raises(ValueError, match=r"genome.stages\[0\].depth: got 7, allowed: 1, 2, 3, 4, 5, 6"):
        MT.check(Genome.from_str(too_deep))
    five_down = MOBILENETV3_LARGE.replace("ir_k3_m480_c112", "ir_k3_s2_m480_c112")
    with pytest.raises(ValueError, match="genome down-samplings: got 5, allowed: at most 4"):
        MT.check(Genome.from_str(five_down))
    with pytest.raises(ValueError, match=r"mid_chs: got 200, allowed: 240, 320, 480 for 80 inputs"):
        WS.check(g)
    with pytest.raises(ValueError, match="genome.stages: got 4, allowed: 5 stages"):
        MT.check(Genome.from_str(MOBILENETV3_LARGE.replace("|ir_k3_m480_c112_se_hs-ir_k3_m672_c112_se_hs", "")))
    with pytest.raises(ValueError, match=r"genome.ds: got .*stride=2.*fixed in mobilenet3-mt"):
        MT.check(Genome.from_str(MOBILENETV3_SMALL))


@pytest.mark.parametrize("name", list(PRESETS))
def test_space_yaml_round_trip(name: str, tmp_path) -> None:
    space = PRESETS[name]
    path = tmp_path / "space.yaml"
    path.write_text(space.to_yaml())
    assert load_space(str(path)) == space


def test_space_yaml_errors(tmp_path) -> None:
    data = PRESETS["mobilenet3-mt"].to_dict()
    data["stages"][1]["kernels"] = [3, 4]
    with pytest.raises(ValueError, match=r"space.stages\[1\].kernels: got 4, allowed: odd integers"):
        SearchSpace.from_dict(data)
    data = PRESETS["mobilenet3-mt"].to_dict()
    data["stages"][0]["depth"] = [1]
    with pytest.raises(ValueError, match=r"space.stages\[0\]: unknown key 'depth'"):
        SearchSpace.from_dict(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_space(str(bad))
    with pytest.raises(ValueError, match="neither a preset"):
        load_space("mobilenet9")
    assert yaml.safe_load(PRESETS["mobilenet3-ws"].to_yaml())["name"] == "mobilenet3-ws"


def test_make_divisible_matches_reference_values() -> None:
    # values used by MobileNetV3: SE on 72 channels -> 24 (not 16: never drop more than 10%)
    assert make_divisible(72 * 0.25) == 24
    assert make_divisible(80 * 2.3) == 184
    assert make_divisible(80 * 2.5) == 200
    assert make_divisible(24 * 0.5) == 16
    assert make_divisible(3) == 8


def test_parse_genome_arg_accepts_names_strings_and_files(tmp_path) -> None:
    genome = Genome.from_str(MOBILENETV3_LARGE)
    assert parse_genome_arg("mobilenetv3_large_100") == genome
    (tmp_path / "g.json").write_text(genome.to_json())
    (tmp_path / "g.txt").write_text(genome.to_str() + "\n")
    assert parse_genome_arg(str(tmp_path / "g.json")) == genome
    assert parse_genome_arg(str(tmp_path / "g.txt")) == genome
    with pytest.raises(ValueError, match="neither a genome string"):
        parse_genome_arg(str(tmp_path / "missing.json"))
