"""Weight inheritance between parents and children: copy, slice by importance, pad, fresh, fall back."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from torch import nn

from menas.nn.builder import build_model
from menas.prune.recalibrate import recalibrate_bn
from menas.prune.surgery import apply_rates, inherit_weights
from menas.prune.tickets import top1
from menas.search.inherit import inherit, inherit_from_files
from menas.space.cost import Budget
from menas.space.genome import Genome, StageGene
from menas.space.operators import crossover_traced, identity_origin, mutate_traced, repair_traced
from menas.train.checkpoint import save_weights

from genomes import MT, seeded_genomes

SMALL = Budget(macs_max=3e6, params_max=1e6, input_size=32, in_chans=1, num_classes=4)


def _trained_like(genome: Genome, seed: int) -> nn.Module:
    """A network with non-trivial weights and BN statistics (as after training), so mapping mistakes show."""
    torch.manual_seed(seed)
    model = build_model(genome, 4, 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def _fresh(genome: Genome, seed: int) -> nn.Module:
    """What `inherit` starts from before mapping: the child built under `seed`."""
    torch.manual_seed(seed)
    return build_model(genome, 4, 1)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("seed", range(3))
def test_an_identical_child_copies_every_tensor(seed: int) -> None:
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=seed, budget=SMALL)
    parent = _trained_like(genome, seed)
    child, counts = inherit(genome, identity_origin(genome), [parent], seed=99)
    theirs = parent.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in child.state_dict().items())
    assert counts.copied == len(_tensors(parent)) and counts.sliced == counts.padded == counts.fresh == 0


def test_an_identical_child_with_zero_epochs_scores_the_parents_recalibrated_score() -> None:
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=4, budget=SMALL)
    parent = _trained_like(genome, 4)
    calib = [_images(32, k) for k in range(3)]
    x = _images(64, 10)
    y = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(11))
    child, _ = inherit(genome, identity_origin(genome), [parent], seed=1, calib_batches=calib)
    recalibrate_bn(parent, calib)
    assert not child.training
    with torch.inference_mode():
        assert torch.equal(child(x), parent(x))
    assert top1(child, [(x, y)]) == top1(parent, [(x, y)])


@pytest.mark.parametrize("seed", range(4))
def test_narrower_children_take_the_lotterys_channels(seed: int) -> None:
    """A child with fewer channels (a pruned genome, same layers) inherits exactly what the lottery's ticket
    inheritance gives: the same L1 order, coupled the same way over residual chains."""
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=seed, budget=SMALL)
    parent = _trained_like(genome, seed)
    rng = random.Random(seed)
    pruned = apply_rates(genome, [[rng.uniform(0, 0.7) for _ in s.layers] for s in genome.stages],
                         [rng.uniform(0, 0.7) for _ in genome.stages])  # fmt: skip
    assert pruned != genome
    child, counts = inherit(pruned, identity_origin(pruned), [parent], seed=3)
    ticket = inherit_weights(parent, pruned).state_dict()
    assert all(torch.equal(v, ticket[k]) for k, v in child.state_dict().items())
    assert counts.sliced > 0 and counts.padded == counts.fresh == 0


def test_wider_layers_and_larger_kernels_keep_the_parent_in_place() -> None:
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=1, budget=SMALL)
    parent = _trained_like(genome, 1)
    layer = genome.stages[0].layers[0]
    wider = replace(layer, kernel=layer.kernel + 2, mid_chs=layer.mid_chs + 16)
    stage = replace(genome.stages[0], layers=(wider, *genome.stages[0].layers[1:]))
    child_genome = replace(genome, stages=(stage, *genome.stages[1:]))
    child, counts = inherit(child_genome, identity_origin(child_genome), [parent], seed=5)
    fresh = _fresh(child_genome, 5)
    mid, k = layer.mid_chs, layer.kernel
    dw, dw_parent, dw_fresh = (m.stages[0][0].dw.conv.weight.detach() for m in (child, parent, fresh))
    assert dw.shape == (mid + 16, 1, k + 2, k + 2)
    assert torch.equal(dw[:mid, :, 1 : k + 1, 1 : k + 1], dw_parent)  # centred
    ring = torch.ones_like(dw, dtype=torch.bool)
    ring[:mid, :, 1 : k + 1, 1 : k + 1] = False
    assert torch.equal(dw[ring], dw_fresh[ring])  # the rest freshly initialised
    expand, expand_parent, expand_fresh = (m.stages[0][0].expand.conv.weight.detach() for m in (child, parent, fresh))
    assert torch.equal(expand[:mid], expand_parent) and torch.equal(expand[mid:], expand_fresh[mid:])
    assert counts.padded >= 9 and counts.fresh == 0  # expand conv+BN(4), dw conv+BN(5) ... grew


def test_a_smaller_kernel_takes_the_centre() -> None:
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=2, budget=SMALL)
    layer = genome.stages[1].layers[0]
    big = replace(genome, stages=(genome.stages[0], replace(genome.stages[1], layers=(
        replace(layer, kernel=7), *genome.stages[1].layers[1:])), *genome.stages[2:]))  # fmt: skip
    small = replace(big, stages=(big.stages[0], replace(big.stages[1], layers=(
        replace(layer, kernel=3), *big.stages[1].layers[1:])), *big.stages[2:]))  # fmt: skip
    parent = _trained_like(big, 2)
    child, counts = inherit(small, identity_origin(small), [parent], seed=0)
    assert torch.equal(child.stages[1][0].dw.conv.weight, parent.stages[1][0].dw.conv.weight[:, :, 2:5, 2:5])
    assert counts.sliced == 1 and counts.padded == counts.fresh == 0


def test_new_layers_and_new_se_start_fresh() -> None:
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=3, budget=SMALL)
    parent = _trained_like(genome, 3)
    stage = genome.stages[2]
    extra = replace(stage.layers[-1], se=True)
    deeper = replace(genome, stages=(*genome.stages[:2], StageGene(stage.out_chs, stage.stride,
                     (*stage.layers, extra)), *genome.stages[3:]))  # fmt: skip
    base = identity_origin(genome)
    origin = replace(base, stages=(*base.stages[:2], replace(base.stages[2], layers=(*base.stages[2].layers, None)),
                                   *base.stages[3:]))  # fmt: skip
    child, counts = inherit(deeper, origin, [parent], seed=7)
    fresh = _fresh(deeper, 7)
    new = f"stages.2.{stage.depth}."
    mine, built = child.state_dict(), fresh.state_dict()
    assert all(torch.equal(v, built[k]) for k, v in mine.items() if k.startswith(new))
    assert counts.fresh == sum(1 for k in _tensors(fresh) if k.startswith(new))
    assert counts.copied == len(_tensors(parent))
    assert child(_images(2, 0)).shape == (2, 4)


def _expected_fresh(model: nn.Module, child: Genome, origin, parents: list[Genome]) -> int:
    """Tensors of the child's new layers, plus those of an SE module its source layer lacks."""
    fresh = 0
    for i, record in enumerate(origin.stages):
        for j, source in enumerate(record.layers):
            names = [k for k in _tensors(model) if k.startswith(f"stages.{i}.{j}.")]
            if source is None:
                fresh += len(names)
            elif not parents[source.parent].stages[source.stage].layers[source.layer].se:
                fresh += sum(1 for k in names if ".se." in k)
    return fresh


@pytest.mark.parametrize("seed", range(4))
def test_bred_children_build_and_run(seed: int) -> None:
    rng = random.Random(seed)
    a, b = seeded_genomes("mobilenet3-mt", 2, seed=seed, budget=SMALL)
    parents = [_trained_like(a, seed), _trained_like(b, seed + 100)]
    (child0, origin0), (child1, origin1) = crossover_traced(a, b, MT, rng)
    fixed = repair_traced(child0, origin0, (a, b), MT, rng, SMALL)
    bred = [(child1, origin1, parents), (*mutate_traced(a, MT, rng, 0.3, SMALL), parents[:1])]
    bred += [(*fixed, parents)] if fixed is not None else []
    x = _images(4, seed)
    for child, origin, models in bred:
        model, counts = inherit(child, origin, models, seed=seed)
        assert model.genome == child
        assert counts.copied + counts.sliced + counts.padded + counts.fresh == len(_tensors(model))
        assert counts.fresh == _expected_fresh(model, child, origin, [m.genome for m in models])
        assert model.eval()(x).shape == (4, 4)


def test_shrink_perturb_mixes_inherited_and_fresh_weights() -> None:
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=5, budget=SMALL)
    parent = _trained_like(genome, 5)
    child, _ = inherit(genome, identity_origin(genome), [parent], seed=8, shrink=0.4, perturb=0.1)
    again, _ = inherit(genome, identity_origin(genome), [parent], seed=8, shrink=0.4, perturb=0.1)
    fresh = dict(_fresh(genome, 8).named_parameters())
    for name, value in child.named_parameters():
        expected = 0.4 * dict(parent.named_parameters())[name] + 0.1 * fresh[name]
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    assert all(torch.equal(v, w) for v, w in zip(child.parameters(), again.parameters(), strict=True))
    assert torch.equal(child.stem.bn.running_var, parent.stem.bn.running_var)  # statistics are not perturbed


def test_an_unusable_parent_file_is_a_fallback_with_a_reason(tmp_path) -> None:
    (genome,) = seeded_genomes("mobilenet3-mt", 1, seed=6, budget=SMALL)
    (other,) = seeded_genomes("mobilenet3-mt", 1, seed=7, budget=SMALL)
    good = save_weights(_trained_like(genome, 6), genome, tmp_path / "good.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:200])
    wrong = save_weights(_trained_like(other, 7), other, tmp_path / "wrong.safetensors")
    origin = identity_origin(genome)
    for path, reason in ((tmp_path / "missing.safetensors", "not found"), (corrupt, "corrupt.safetensors"),
                         (wrong, "not the parent")):  # fmt: skip
        result = inherit_from_files(genome, origin, [path], [genome], 4, 1, seed=0)
        assert result.model is None and reason in result.fallback
        assert result.to_record()["counts"]["copied"] == 0
    result = inherit_from_files(genome, origin, [good], [genome], 4, 1, seed=0, calib_batches=[_images(8, 0)])
    assert result.fallback is None and result.counts.copied == len(_tensors(result.model))
    result = inherit_from_files(genome, origin, [good], [genome], 10, 1, seed=0)
    assert result.model is None and "num_classes" in result.fallback
