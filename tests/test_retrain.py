"""`menas retrain`, knowledge distillation, the held-out split, batched RandAugment and random erasing, the
retrains table, and the defaults that train (issue 11 item 15)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from menas.cli.main import main
from menas.config import DataConfig, RetrainConfig, SearchConfig, TrainConfig, apply_override, from_dict
from menas.data.augment import BatchRandAugment, RandAugmentSpec, random_erasing
from menas.data.datasets import FASHION_MNIST_ROOT
from menas.data.splits import build_loaders
from menas.errors import TrialFailed, UserError
from menas.nn.builder import build_model
from menas.search.store import SCHEMA_VERSION, Store
from menas.search.strategies import TrialSpec
from menas.space.genome import Genome
from menas.train.checkpoint import load_weights, save_weights
from menas.train.loop import EpochStats, History, check_explosion, evaluate, kd_loss, seed_trial, train
from menas.winner.retrain import resolve_source, retrain
from old_stores import make_old_store

TINY = Genome.from_str(
    "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_re|ir_k3_s2_m32_c24_re-ir_k3_m48_c24_re|head_c64_f128_hs"
)
SMALL = Genome.from_str(
    "stem_c16_hs-ds_k3_c16_re|ir_k3_s2_m48_c24_re|ir_k3_s2_m72_c40_re-ir_k3_m120_c40_re|head_c160_f256_hs"
)
OTHER = Genome.from_str(
    "stem_c8_hs-ds_k3_c8_re|ir_k3_s2_m16_c16_hs|ir_k3_s2_m32_c24_re-ir_k3_m48_c24_re|head_c64_f128_hs"
)
SYNTH = DataConfig(dataset="synthetic", input_size=16, batch_size=128)
SYNTH_ARGS = ["--data", "synthetic", "--set", "data.input_size=16", "--threads", "1"]


def _cfg(epochs: int = 2) -> RetrainConfig:
    return apply_override(RetrainConfig.preset("short", SYNTH, epochs), "train.threads=1")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file's bytes (SQLite's -wal/-shm side files, which a read-only open may create, left out)."""
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()
            and not p.name.endswith(("-wal", "-shm"))}  # fmt: skip


# --------------------------------------------------------------------------------------------- recipes (item 15)


def test_short_recipe_is_the_default_and_paper_is_one_preset_away():
    assert (TrainConfig().recipe, TrainConfig().schedule, TrainConfig().peak_lr(128)) == ("short", "cosine", 0.004)
    paper = TrainConfig.preset("paper")
    assert (paper.schedule, paper.peak_lr(1024), paper.warmup_epochs) == ("step", 0.064, 1.0)
    # a search config key: the recipe, then the section's other keys on top
    cfg = from_dict(SearchConfig, {"train": {"recipe": "paper", "epochs": 2}})
    assert (cfg.train.schedule, cfg.train.lr_base, cfg.train.epochs) == ("step", 0.064, 2)
    # switching the recipe by override keeps the keys set on top of the old one
    switched = apply_override(apply_override(SearchConfig(), "train.lr=0.01"), "train.recipe=paper")
    assert (switched.train.schedule, switched.train.lr) == ("step", 0.01)
    assert apply_override(switched, "train.recipe=short").train == TrainConfig(lr=0.01)
    with pytest.raises(UserError, match=r"train.recipe: got 'fast', allowed: 'short', 'paper'"):
        from_dict(TrainConfig, {"recipe": "fast"}, "train")


def test_retrain_presets_resolve_and_round_trip():
    paper = RetrainConfig.preset("paper", SYNTH, 7)
    assert (paper.train.recipe, paper.train.ema, paper.train.ema_decay, paper.train.epochs) == (
        "paper",
        True,
        0.9999,
        7,
    )
    assert (paper.data.randaugment, paper.data.random_erasing, paper.dropout) == ("rand-m9-mstd0.5", 0.2, 0.2)
    assert paper.data.dataset == "synthetic"  # the searched dataset is kept
    from menas.config import dump_yaml

    assert from_dict(RetrainConfig, yaml.safe_load(dump_yaml(paper))) == paper
    with pytest.raises(UserError, match=r"--recipe: got 'long', allowed: short, paper, transfer"):
        RetrainConfig.preset("long", SYNTH)


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="dataset-fashion-mnist not installed")
def test_default_recipe_trains_a_small_network_well_above_chance_in_two_epochs():
    data = build_loaders(DataConfig(input_size=16, search_train_fraction=0.1, search_val_fraction=0.02))
    seed_trial(0)
    model = build_model(SMALL, data.num_classes, data.in_chans)
    history = train(model, data.train, data.val, TrainConfig(epochs=2))
    assert history.val_top1 > 55.0  # chance is 10%; measured 66.6%


def test_check_explosion_fails_a_loss_100x_its_reference():
    def history(*val_losses: float) -> History:
        return History([EpochStats(i + 1, 0.1, 2.0, 1.0, 0.1, 100.0, 50.0, 90.0, v) for i, v in enumerate(val_losses)])

    check_explosion(history(2.0, 150.0), 10)  # 75x: not yet
    with pytest.raises(TrialFailed, match=r"val loss exploded at epoch 2: 250, over 100x its reference 2\.3"):
        check_explosion(history(2.4, 250.0), 10)  # the reference is ln(10) when the first value is higher
    with pytest.raises(TrialFailed, match=r"val loss exploded at epoch 1: 5165"):
        check_explosion(history(5165.0), 10)  # absurd from the first epoch on


class _ExplodeInEval(nn.Module):
    """Scales its logits by 10^4 at evaluation from the second evaluation on: the val loss explodes, training
    does not go NaN."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.evals = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if not self.training:
            self.evals += 1
            if self.evals > 3:  # the first evaluation's batches (synthetic search-val: 2 batches of 512)
                out = out * 1e4
        return out


def test_an_exploding_val_loss_fails_the_run_clearly(synthetic_data, tiny_cnn):
    seed_trial(0)
    with pytest.raises(TrialFailed, match=r"val loss exploded at epoch 2: .* lower the learning rate"):
        train(_ExplodeInEval(tiny_cnn()), synthetic_data.train, synthetic_data.val, TrainConfig(epochs=2))


# --------------------------------------------------------------------------------------------- distillation


def test_kd_loss_equals_the_formula_on_fixed_logits():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    teacher = torch.tensor([[1.0, 1.5, -0.5], [0.0, -1.0, 2.0]])
    labels = torch.tensor([0, 2])
    alpha, t = 0.7, 3.0
    ce = -(torch.log_softmax(student, 1)[[0, 1], labels]).mean()
    p_t, p_s = torch.softmax(teacher / t, 1), torch.softmax(student / t, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    expected = (1 - alpha) * ce + alpha * t * t * kl
    assert kd_loss(student, teacher, labels, alpha, t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_loss(student, student, labels, 1.0, t).item() == pytest.approx(0.0, abs=1e-7)


def test_training_with_a_teacher_uses_it_and_leaves_it_untouched(synthetic_data, tiny_cnn):
    seed_trial(0)
    teacher = tiny_cnn()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = TrainConfig(epochs=1, kd_alpha=1.0, label_smoothing=0.0)
    seed_trial(1)
    plain = train(tiny_cnn(), synthetic_data.train, None, cfg)
    seed_trial(1)
    distilled = train(tiny_cnn(), synthetic_data.train, None, cfg, teacher=teacher)
    assert distilled.epochs[0].train_loss != plain.epochs[0].train_loss  # alpha 1: the loss is the KL term only
    assert distilled.epochs[0].train_loss < 0.5  # soft targets of an untrained teacher are near uniform
    assert not teacher.training and all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


# --------------------------------------------------------------------------------------------- retrain


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """One 2-epoch retrain of the tiny genome on synthetic data through the CLI."""
    out = tmp_path_factory.mktemp("retrain") / "out"
    torch.set_num_threads(1)
    assert main(["retrain", TINY.to_str(), "--epochs", "2", "--out", str(out), *SYNTH_ARGS]) == 0
    return out


def test_retrain_beats_the_untrained_network_and_writes_its_folder(retrained):
    record = json.loads((retrained / "retrain.json").read_text())
    data = build_loaders(SYNTH, mode="retrain")
    seed_trial(0)
    untrained = evaluate(build_model(TINY, 10, 1), data.test)["top1"]
    assert record["test"]["raw"]["top1"] > untrained + 20
    assert record["test"]["raw"]["images"] == 1000 and record["holdout"]["raw"]["images"] == 100
    assert record["genome"] == TINY.to_str() and record["epochs"] == 2 and record["recipe"] == "short"
    assert record["config"]["train"]["ema"] is True and record["images_per_s"] > 0 and record["device"]
    run = json.loads((retrained / "run.json").read_text())
    assert (run["kind"], run["genome"], run["kept"]) == ("retrain", TINY.to_str(), record["kept"])
    assert set(run) == {"kind", "genome", "data", "train", "source", "init", "kept", "test_top1"}  # run_record's
    recipe = yaml.safe_load((retrained / "recipe.yaml").read_text())
    assert from_dict(RetrainConfig, recipe) == from_dict(RetrainConfig, record["config"])


def test_ema_and_raw_weights_differ_and_both_are_scored(retrained):
    record = json.loads((retrained / "retrain.json").read_text())
    kept, other = record["kept"], "raw" if record["kept"] == "ema" else "ema"
    a, b = load_weights(retrained / "model.safetensors"), load_weights(retrained / f"model_{other}.safetensors")
    assert any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    for split in ("test", "holdout"):
        assert record[split]["raw"]["top1"] != record[split]["ema"]["top1"] or record[split]["raw"]["loss"] != \
            record[split]["ema"]["loss"]  # fmt: skip
    holdout = record["holdout"]
    assert holdout[kept]["top1"] >= holdout[other]["top1"]  # the kept weights scored better on the held-out part
    data = build_loaders(SYNTH, mode="retrain")
    assert evaluate(a, data.test)["top1"] == pytest.approx(record["test"][kept]["top1"])


def test_a_retrain_folder_is_a_checkpoint_folder_for_lottery_and_export(retrained, tmp_path, capsys):
    source = resolve_source(str(retrained))
    assert source.genome == TINY and source.data.dataset == "synthetic" and source.weights.name == "model.safetensors"
    assert source.data.randaugment is None  # run.json: the data config without the retrain-only augmentation
    assert main(["lottery", str(retrained), "-P", "3", "--score-images", "64", "--threads", "1"]) == 0
    assert "pruning proposals" in capsys.readouterr().out
    assert main(["export", str(retrained), "--out", str(tmp_path / "export"), "--format", "safetensors"]) == 0
    exported = load_weights(tmp_path / "export" / "model.safetensors").state_dict()
    kept = load_weights(retrained / "model.safetensors").state_dict()
    assert all(torch.equal(exported[k], kept[k]) for k in kept)


def test_retrain_distils_from_a_menas_teacher(retrained, tmp_path):
    out = tmp_path / "student"
    assert main(["retrain", SMALL.to_str(), "--epochs", "1", "--out", str(out), "--teacher", str(retrained),
                 "--set", "train.kd_alpha=0.9", *SYNTH_ARGS]) == 0  # fmt: skip
    alone = tmp_path / "alone"
    assert main(["retrain", SMALL.to_str(), "--epochs", "1", "--out", str(alone), "--set", "train.kd_alpha=0.9",
                 *SYNTH_ARGS]) == 0  # fmt: skip
    record, plain = (json.loads((folder / "retrain.json").read_text()) for folder in (out, alone))
    assert record["teacher"] == str(retrained) and plain["teacher"] is None
    assert record["config"] == plain["config"] and record["config"]["train"]["kd_alpha"] == 0.9
    # the same run but for the teacher: the distillation term changes the loss and so the weights
    assert record["history"]["epochs"][0]["train_loss"] != plain["history"]["epochs"][0]["train_loss"]
    assert record["test"]["raw"] != plain["test"]["raw"]


def test_train_takes_a_recipe(tmp_path):
    from menas.cli.main import build_parser

    assert build_parser().parse_args(["train", "g", "--data", "digits", "--out", "o"]).recipe == "short"
    out = tmp_path / "paper"
    assert main(["train", TINY.to_str(), "--data", "synthetic", "--input-size", "16", "--epochs", "1", "--recipe",
                 "paper", "--threads", "1", "--out", str(out)]) == 0  # fmt: skip
    recorded = json.loads((out / "run.json").read_text())["train"]
    assert (recorded["recipe"], recorded["schedule"], recorded["lr_base"]) == ("paper", "step", 0.064)


class _Kill(Exception):
    pass


def test_resume_after_a_kill_equals_the_uninterrupted_retrain(tmp_path):
    cfg = apply_override(_cfg(2), "drop_path=0.2")  # drop-path and dropout draw from torch's generator
    source = resolve_source(TINY.to_str())
    retrain(source, cfg, tmp_path / "straight", device=torch.device("cpu"))

    def kill_after_first(stats):
        if stats.epoch == 1:
            raise _Kill

    with pytest.raises(_Kill):
        retrain(source, cfg, tmp_path / "killed", device=torch.device("cpu"), progress=kill_after_first)
    assert not (tmp_path / "killed" / "retrain.json").exists()
    torch.manual_seed(999)  # a new process starts from another generator state
    record = retrain(source, cfg, tmp_path / "killed", device=torch.device("cpu"))
    assert record["resumed_at"] == 1
    for name in ("model.safetensors", "model_raw.safetensors", "model_ema.safetensors"):
        if (tmp_path / "straight" / name).exists():
            a = load_weights(tmp_path / "straight" / name).state_dict()
            b = load_weights(tmp_path / "killed" / name).state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a), name
    straight = json.loads((tmp_path / "straight" / "retrain.json").read_text())
    assert record["test"] == straight["test"]


def test_batched_randaugment_and_erasing_in_a_retrain_are_reproducible(tmp_path):
    cfg = apply_override(apply_override(_cfg(1), "data.randaugment=rand-m9-mstd0.5"), "data.random_erasing=0.5")
    source = resolve_source(TINY.to_str())
    a = retrain(source, cfg, tmp_path / "a", device=torch.device("cpu"))
    b = retrain(source, cfg, tmp_path / "b", device=torch.device("cpu"))
    plain = retrain(source, _cfg(1), tmp_path / "plain", device=torch.device("cpu"))
    assert a["history"]["epochs"][0]["train_loss"] == b["history"]["epochs"][0]["train_loss"]
    assert a["history"]["epochs"][0]["train_loss"] != plain["history"]["epochs"][0]["train_loss"]


# --------------------------------------------------------------------------------------------- runs and the store


def _run(tmp_path: Path, done: bool = True) -> Path:
    run = tmp_path / "run"
    weights = tmp_path / "trial1.safetensors"
    seed_trial(3)
    save_weights(build_model(TINY, 10, 1), TINY, weights)
    with Store.create(run, {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(i, TINY.to_str(), 0, "sample", (), False) for i in range(3)])
        if done:
            store.finish_trial(0, trained_score=60.0, macs=1, params=1, weights=str(weights))
            store.finish_trial(1, trained_score=70.0, macs=1, params=1, weights=str(weights))
        store.fail_trial(2, "boom")
    (run / "config.yaml").write_text("data:\n  dataset: synthetic\n  input_size: 16\n")
    return run


@pytest.mark.slow  # ~14 s: two retrains
def test_retrain_of_a_run_is_recorded_in_its_store_status_and_report(tmp_path, capsys):
    run = _run(tmp_path)
    out = tmp_path / "out"
    assert main(["retrain", str(run), "--rank", "2", "--epochs", "1", "--out", str(out), "--init", "trial",
                 "--threads", "1"]) == 0  # fmt: skip
    record = json.loads((out / "retrain.json").read_text())
    assert record["trial_id"] == 0 and record["init"] == "trial"  # rank 2 = the second best (60%)
    with Store.open(run, readonly=True) as store:
        (row,) = store.retrains()
    assert (row.trial_id, row.epochs, row.kept, row.out) == (0, 1, record["kept"], str(out))
    assert row.test_top1 == pytest.approx(record["test"]["raw"]["top1"])
    assert row.ema_top1 == pytest.approx(record["test"]["ema"]["top1"])
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    assert "retrained (test split)" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0
    report = (run / "report" / "report.md").read_text()
    assert "## Retrained (test split)" in report and f"{row.test_top1:.2f}%" in report
    # the same command again: the finished retrain is rescored, not recorded twice
    assert main(["retrain", str(run), "--rank", "2", "--epochs", "1", "--out", str(out), "--init", "trial",
                 "--threads", "1"]) == 0  # fmt: skip
    with Store.open(run, readonly=True) as store:
        assert len(store.retrains()) == 1


def test_a_version_1_store_opens_and_migrates(tmp_path):
    run = _run(tmp_path)
    make_old_store(run, 1)
    with Store.open(run, readonly=True) as store:
        assert store.retrains() == [] and store.best().trial_id == 0
    with Store.open(run) as store:
        store.add_retrain(genome=TINY.to_str(), recipe="short", config={}, epochs=1, kept="raw", out="x")
        assert len(store.retrains()) == 1
    conn = sqlite3.connect(run / "menas.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


# --------------------------------------------------------------------------------------------- bad input


def _bad(args: list[str], capsys, match: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("menas: error: "), err
    assert match in err, err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--trial", "7"], "--trial: got 7, run"),
        (["--trial", "2"], "trial 2 of run"),
        (["--rank", "3"], "--rank: got 3, allowed: 1..2"),
        (["--epochs", "0"], "--epochs: got 0, allowed: integers >= 1"),
    ],
)
def test_bad_trial_rank_or_epochs_is_one_line_and_writes_nothing(tmp_path, capsys, extra, match):
    run = _run(tmp_path)
    before = _files(run)
    args = ["retrain", str(run), "--epochs", "1", "--out", str(tmp_path / "out"), *extra]
    _bad(args, capsys, match)
    assert not (tmp_path / "out").exists() and _files(run) == before


def test_a_run_without_a_finished_trial_is_refused(tmp_path, capsys):
    run = _run(tmp_path, done=False)
    _bad(["retrain", str(run), "--epochs", "1", "--out", str(tmp_path / "out")], capsys, "no finished trial yet")


def test_a_teacher_with_other_classes_or_channels_is_refused(tmp_path, capsys):
    for name, classes, chans in (("classes", 7, 1), ("channels", 10, 3)):
        folder = tmp_path / name
        save_weights(build_model(TINY, classes, chans), TINY, folder / "model.safetensors")
        what = "7 classes, the data has 10" if name == "classes" else "3 input channels, the data has 1"
        out = tmp_path / f"out-{name}"
        _bad(["retrain", TINY.to_str(), "--epochs", "1", "--out", str(out), "--teacher", str(folder), *SYNTH_ARGS],
             capsys, what)  # fmt: skip
        assert not out.exists()
    weights = tmp_path / "resnet.safetensors"
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet10t", num_classes=5, in_chans=1).state_dict(), str(weights))
    _bad(["retrain", TINY.to_str(), "--epochs", "1", "--out", str(tmp_path / "o"), "--teacher", "resnet10t",
          "--teacher-weights", str(weights), *SYNTH_ARGS], capsys, "fc.weight has shape (5, 512)")  # fmt: skip


def test_a_folder_with_another_genome_is_refused_and_left_alone(retrained, capsys):
    before = _files(retrained)
    _bad(["retrain", OTHER.to_str(), "--epochs", "2", "--out", str(retrained), *SYNTH_ARGS], capsys,
         "holds a retrain of another genome")  # fmt: skip
    assert _files(retrained) == before


def test_resuming_with_other_settings_is_refused_and_left_alone(retrained, capsys):
    before = _files(retrained)
    _bad(["retrain", TINY.to_str(), "--epochs", "3", "--out", str(retrained), *SYNTH_ARGS], capsys,
         "holds a retrain with train.epochs 2, now 3")  # fmt: skip
    _bad(["retrain", TINY.to_str(), "--epochs", "2", "--out", str(retrained), "--set", "data.seed=1", *SYNTH_ARGS],
         capsys, "holds a retrain with data.seed 0, now 1")  # fmt: skip
    assert _files(retrained) == before


def test_a_genome_string_needs_data(tmp_path, capsys):
    _bad(["retrain", TINY.to_str(), "--epochs", "1", "--out", str(tmp_path / "o")], capsys, "--data: required")


def test_a_genome_string_longer_than_a_file_name_is_read_as_a_genome():
    body, head = TINY.to_str().rsplit("|", 1)
    long = Genome.from_str(body + "-ir_k3_m48_c24_re" * 20 + "|" + head)  # 20 more layers in the last stage
    assert len(long.to_str()) > 255  # longer than a file name may be: no path lookup may see it
    assert resolve_source(long.to_str()).genome == long


# --------------------------------------------------------------------------------------------- data


def test_retrain_mode_holds_out_a_class_balanced_part_and_keeps_test_apart():
    data = build_loaders(SYNTH, mode="retrain", holdout_fraction=0.1)
    train_idx, holdout = data.split_indices["train"], data.split_indices["holdout"]
    assert len(set(train_idx) & set(holdout)) == 0 and len(train_idx) + len(holdout) == 5000
    labels = data.val.labels.bincount(minlength=10)
    assert labels.tolist() == [50] * 10  # 10% of each class's 500
    assert data.test.num_samples == 1000 and data.val is not data.test


def test_randaugment_spec_parsing():
    assert RandAugmentSpec.parse("rand-m9-mstd0.5") == RandAugmentSpec(9.0, 2, 0.5)
    assert RandAugmentSpec.parse("rand-m5-n3") == RandAugmentSpec(5.0, 3, 0.0)
    for bad in ("auto-m9", "rand-m9-inc1", "rand-m11"):
        with pytest.raises(UserError, match="data.randaugment"):
            RandAugmentSpec.parse(bad)


def test_batch_randaugment_is_seeded_and_draws_per_group():
    images = (torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    ra = BatchRandAugment("rand-m9-mstd0.5", group=16)
    a = ra(images, torch.Generator().manual_seed(1))
    b = ra(images, torch.Generator().manual_seed(1))
    c = ra(images, torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the same image in every slot: groups that drew different operations give different results
    same = images[:1].expand(64, -1, -1, -1).contiguous()
    out = ra(same, torch.Generator().manual_seed(3))
    groups = {out[i * 16].numpy().tobytes() for i in range(4)}
    assert len(groups) > 1


def test_random_erasing_erases_about_its_share_of_images():
    batch = torch.zeros(2000, 1, 16, 16)
    random_erasing(batch, 0.25, torch.Generator().manual_seed(0))
    erased = (batch != 0).flatten(1).any(1).float().mean().item()
    assert math.isclose(erased, 0.25, abs_tol=0.04)
    boxes = (batch != 0).flatten(1).float().mean(1)
    assert boxes[boxes > 0].max() <= 1 / 3 + 0.05 and boxes[boxes > 0].min() >= 0.01
