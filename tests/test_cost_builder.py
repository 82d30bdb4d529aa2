"""The builder against timm, and the cost formula against forward hooks and fvcore."""

from __future__ import annotations

import pytest
import timm
import torch

from menas.nn.builder import build_model
from menas.space.cost import (
    Budget,
    count_cost,
    count_macs,
    count_params,
    count_with_hooks,
    format_count,
    layer_table,
    parse_count,
    parse_range,
)
from menas.space.genome import MOBILENETV3_LARGE, REFERENCE_GENOMES, Genome
from menas.space.spaces import PRESETS

from genomes import seeded_genomes


@pytest.mark.parametrize("name", list(REFERENCE_GENOMES))
def test_reference_genomes_match_timm_parameter_count(name: str) -> None:
    genome = Genome.from_str(REFERENCE_GENOMES[name])
    ours = sum(p.numel() for p in build_model(genome, 1000, 3).parameters())
    theirs = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
    assert ours == theirs == count_params(genome)


def test_mobilenetv3_large_known_cost() -> None:
    # timm reports 5.48M params and 0.22 GMACs for mobilenetv3_large_100 at 224 px
    assert count_cost(Genome.from_str(MOBILENETV3_LARGE), 224, 3, 1000) == (216_589_760, 5_483_032)


SIZES = [16, 24, 32, 57, 96, 224]
SPACES = ["mobilenet3-mt", "mobilenet3-ws"]


def _hook_cases() -> list[tuple[str, Genome, int, int, int]]:
    """200 seeded (space, genome, input size, in_chans, num_classes) cases of both spaces: the pool to cover."""
    cases = []
    for k, name in enumerate(SPACES):
        for i, genome in enumerate(seeded_genomes(name, 100, seed=100 + k)):
            cases.append((name, genome, SIZES[i % len(SIZES)], (1, 3)[i % 2], (10, 100, 1000)[i % 3]))
    return cases


def _features(case: tuple[str, Genome, int, int, int]) -> set[tuple]:
    """What the cost formula must get right in one case: every block kind (space, kernel, SE, activation,
    stride, residual), input size, channels and classes, and whether a stride-2 conv sees an odd size."""
    name, genome, size, in_chans, num_classes = case
    stem, ds = genome.stem, genome.ds
    ds_skip = ds.stride == 1 and ds.out_chs == stem.out_chs
    found = {("size", size), ("in_chans", in_chans), ("classes", num_classes), ("stem", stem.act),
             ("head", genome.head.act), ("ds", name, ds.kernel, ds.se, ds.act, ds.stride, ds_skip)}  # fmt: skip
    h, in_chs = -(-size // 2 // ds.stride), ds.out_chs
    for stage in genome.stages:
        for j, layer in enumerate(stage.layers):
            stride = stage.stride if j == 0 else 1
            found.add(("ir", name, layer.kernel, layer.se, layer.act, stride, stride == 1 and in_chs == stage.out_chs))
            if stride == 2:
                found.add(("odd_size_stride_2", h % 2))
            h, in_chs = -(-h // stride), stage.out_chs
    return found


def _covering_cases() -> list[tuple[str, Genome, int, int, int]]:
    """A few of the 200 cases that together show every feature the 200 show (greedy set cover, deterministic)."""
    cases = _hook_cases()
    features = [_features(c) for c in cases]
    wanted, covered, chosen = set().union(*features), set(), []
    for _ in range(len(cases)):
        if covered == wanted:
            break
        best = max(range(len(cases)), key=lambda i: (len(features[i] - covered), -i))
        chosen.append(cases[best])
        covered |= features[best]
    return chosen


def test_hook_cases_cover_every_block_kind_of_both_spaces() -> None:
    """The chosen cases cover what the 200 cover, and that is every kernel, SE choice, activation and stride
    each space allows, with and without residuals, at every input size, channel count and class count."""
    chosen = _covering_cases()
    covered = set().union(*(_features(c) for c in chosen))
    assert covered == set().union(*(_features(c) for c in _hook_cases()))
    assert len(chosen) <= 15  # measured: 11
    for name in SPACES:
        stages = PRESETS[name].stages
        ir = [f for f in covered if f[:2] == ("ir", name)]
        assert {f[2] for f in ir} == {k for s in stages for k in s.kernels}, name
        assert {f[3] for f in ir} == {se for s in stages for se in s.se}, name
        assert {f[4] for f in ir} == {a for s in stages for a in s.acts}, name
        assert {f[5] for f in ir} == {st for s in stages for st in s.strides}, name
        assert {f[6] for f in ir} == {True, False}, name  # with and without the residual
    assert {f[1] for f in covered if f[0] == "size"} == set(SIZES)
    assert {f[1] for f in covered if f[0] in ("in_chans", "classes")} == {1, 3, 10, 100, 1000}
    assert {f[1] for f in covered if f[0] == "odd_size_stride_2"} == {0, 1}


def test_formula_equals_hook_count_on_every_block_kind() -> None:
    """Exact equality on the covering cases (every block kind of both spaces at several input sizes); models live
    on the meta device (shapes only), so this costs no weight initialisation. The full 200: the slow test below."""
    _assert_formula_equals_hooks(_covering_cases())


@pytest.mark.slow
def test_formula_equals_hook_count_on_200_genomes() -> None:
    """Exact equality for all 200 seeded cases (the covering cases above are a subset)."""
    cases = _hook_cases()
    assert len(cases) == 200
    _assert_formula_equals_hooks(cases)


def _assert_formula_equals_hooks(cases: list[tuple[str, Genome, int, int, int]]) -> None:
    for _, genome, size, in_chans, num_classes in cases:
        with torch.device("meta"):
            model = build_model(genome, num_classes, in_chans)
        assert count_with_hooks(model, size, in_chans) == count_cost(genome, size, in_chans, num_classes), (
            genome.to_str(),
            size,
        )


def test_formula_handles_rectangular_inputs() -> None:
    genome = Genome.from_str(MOBILENETV3_LARGE)
    model = build_model(genome, 10, 3)
    assert count_with_hooks(model, (48, 80), 3) == count_cost(genome, (48, 80), 3, 10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_formula_agrees_with_fvcore(seed: int) -> None:
    fvcore = pytest.importorskip("fvcore.nn")
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=seed, budget=Budget(macs_max=150e6, input_size=64))
    model = build_model(genome, 10, 3).eval()
    analysis = fvcore.FlopCountAnalysis(model, torch.zeros(1, 3, 64, 64))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    by_op = analysis.by_operator()
    # fvcore counts one "flop" per multiply-accumulate for conv and linear; BN/pooling are not MACs here
    assert by_op["conv"] + by_op["linear"] == count_macs(genome, 64, 3, 10)


def test_layer_table_adds_up_to_the_total() -> None:
    for genome in seeded_genomes("mobilenet3-mt", 20, seed=4):
        rows = layer_table(genome, 96, 3, 10)
        assert len(rows) == genome.depth + 5
        assert (sum(r.macs for r in rows), sum(r.params for r in rows)) == count_cost(genome, 96, 3, 10)


@pytest.mark.parametrize(("name", "seed"), [("mobilenet3-mt", 0), ("mobilenet3-mt", 1), ("mobilenet3-ws", 0)])
@pytest.mark.parametrize(("size", "in_chans"), [(16, 1), (32, 3), (45, 3)])
def test_forward_shapes_and_channels_last(name: str, seed: int, size: int, in_chans: int) -> None:
    (genome,) = seeded_genomes(name, 1, seed=seed, budget=Budget(macs_max=300e6, params_max=6e6, input_size=224))
    text = genome.to_str()
    model = build_model(genome, 7, in_chans).to(memory_format=torch.channels_last).eval()
    x = torch.randn(2, in_chans, size, size).to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x)
        reference = model.to(memory_format=torch.contiguous_format)(x.contiguous())
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
    assert genome.to_str() == text  # the builder never changes the genome


def test_model_trains_one_step() -> None:
    model = build_model(Genome.from_str(MOBILENETV3_LARGE), 3, 1)
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_builds_and_runs_on_cuda() -> None:
    model = build_model(Genome.from_str(MOBILENETV3_LARGE), 10, 3).cuda().to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 64, 64, device="cuda").to(memory_format=torch.channels_last))
    assert out.shape == (2, 10)


def test_builder_rejects_bad_arguments() -> None:
    genome = Genome.from_str(MOBILENETV3_LARGE)
    with pytest.raises(ValueError, match="num_classes: got 0"):
        build_model(genome, 0, 3)
    with pytest.raises(ValueError, match="in_chans"):
        build_model(genome, 10, 0)


def test_count_parsing_and_formatting() -> None:
    assert parse_count("150M", "f") == 150e6
    assert parse_count("1.5g", "f") == 1.5e9
    assert parse_count("8e6", "f") == 8e6
    assert parse_range("150M:300M", "f") == (150e6, 300e6)
    assert parse_range(":300M", "f") == (0.0, 300e6)
    assert parse_range("300M", "f") == (0.0, 300e6)
    assert parse_range("1G:", "f")[1] == float("inf")
    for bad in ("12X", "abc", "-5M", "inf"):
        with pytest.raises(ValueError, match="f:"):
            parse_count(bad, "f")
    with pytest.raises(ValueError, match="larger than maximum"):
        parse_range("300M:150M", "f")
    assert format_count(216_589_760) == "217M"
    assert format_count(5_483_032) == "5.48M"


def test_budget_validation() -> None:
    with pytest.raises(ValueError, match="budget.input_size: got 8"):
        Budget(input_size=8)
    with pytest.raises(ValueError, match="macs_min .* is larger than macs_max"):
        Budget(macs_min=2e6, macs_max=1e6)
    with pytest.raises(ValueError, match="budget.num_classes"):
        Budget(num_classes=1)
