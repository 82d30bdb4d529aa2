"""`menas train`, `menas lottery` (and --diagnose) on tiny synthetic data, and the diagnostic's statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from menas.cli.main import main
from menas.prune.diagnose import correlations
from menas.space.genome import Genome

GENOME = (
    "stem_c16_hs-ds_k3_c16_re|ir_k3_s2_m32_c16_re|ir_k3_s2_m48_c24_re-ir_k5_m72_c24_se_re|ir_k3_s2_m96_c40_hs"
    "|ir_k3_m120_c40_hs|ir_k3_s2_m160_c48_se_hs-ir_k3_m144_c48_hs|head_c288_f256_hs"
)
DATA = ["--data", "synthetic", "--input-size", "16", "--batch-size", "64", "--threads", "1"]


def test_correlations_known_values() -> None:
    up = correlations([1, 2, 3, 4], [10, 20, 30, 45])
    assert up.spearman == pytest.approx(1.0) and up.kendall == pytest.approx(1.0) and up.pearson > 0.98
    down = correlations([1, 2, 3, 4], [4, 3, 2, 1])
    assert down.spearman == pytest.approx(-1.0)
    assert math.isnan(correlations([1, 1, 1], [1, 2, 3]).spearman)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    assert main(["train", GENOME, *DATA, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_train_writes_history_weights_and_checkpoint(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = json.loads((trained / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    first, last = history["epochs"]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_top1"] == _search_val_top1(trained)  # the saved weights are the ones scored last
    assert {"model.safetensors", "train.ckpt", "run.json"} <= {p.name for p in trained.iterdir()}
    run = json.loads((trained / "run.json").read_text())
    assert Genome.from_str(run["genome"]) == Genome.from_str(GENOME)
    assert run["kind"] == "train"  # `run_record`'s keys plus menas train's provenance
    assert set(run) == {"kind", "genome", "data", "train", "preprocessing", "device", "split_digest"}


def test_lottery_prints_proposals_and_ticket(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The printed choice follows the rule on the recorded scores: the best finalist within --tolerance points of
    the recalibrated parent is the ticket, else the parent stays."""
    args = ["lottery", str(trained), "-P", "4", "--score-images", "64", "--threads", "1", "--tolerance", "1"]
    assert main([*args, "--out", str(tmp_path / "lottery")]) == 0
    out = capsys.readouterr().out
    assert "4 pruning proposals" in out and "unpruned (recalibrated)" in out
    record = json.loads((tmp_path / "lottery" / "lottery.json").read_text())
    parent = record["parent"]["score"]
    assert f"unpruned (recalibrated): {parent:.2f}%" in out
    eligible = [p for p in record["proposals"] if p["full_score"] is not None and p["full_score"] >= parent - 1.0]
    if eligible:
        best = max(eligible, key=lambda p: (p["full_score"], -p["macs"]))
        assert record["ticket"]["proposal"] == best["index"] and "stays the ticket" not in out
        assert f"ticket: proposal {best['index']}, {best['full_score']:.2f}%" in out
    else:
        assert record["ticket"] is None and "ticket: proposal" not in out
        assert "no proposal within 1 points of the unpruned network: it stays the ticket" in out


def test_lottery_out_writes_a_loadable_ticket(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out keeps what the search found: every proposal in lottery.json and, with a ticket, its (fine-tuned)
    weights in a folder that loads as a checkpoint again."""
    out = tmp_path / "ticket"
    args = ["lottery", str(trained), "-P", "4", "--score-images", "64", "--threads", "1", "--tolerance", "100"]
    assert main([*args, "--finetune-epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    record = json.loads((out / "lottery.json").read_text())
    assert len(record["proposals"]) == 4 and record["parent"]["genome"] == Genome.from_str(GENOME).to_str()
    ticket = record["ticket"]  # a tolerance of 100 points: the best proposal always wins
    assert ticket is not None and ticket["macs"] < record["parent"]["macs"]
    assert ticket["finetune_epochs"] == 1 and ticket["score_after_ft"] == _search_val_top1(out)  # what was kept
    assert f"fine-tuned the ticket for 1 epoch(s): {ticket['score_before_ft']:.2f}% -> " in text
    run = json.loads((out / "run.json").read_text())
    assert run["genome"] == ticket["genome"] and run["pruned_from"] == record["parent"]["genome"]
    assert run["kind"] == "lottery" and set(run) == {"kind", "genome", "data", "train", "preprocessing", "pruned_from"}
    from menas.train.checkpoint import load_weights

    model = load_weights(out / "model.safetensors", num_classes=10, in_chans=1)
    assert model.genome.to_str() == ticket["genome"]
    with pytest.raises(ValueError, match="the network has in_chans 1, the data gives 3"):
        load_weights(out / "model.safetensors", num_classes=10, in_chans=3)
    # the folder is a checkpoint: a second lottery runs on the ticket without --data
    assert main(["lottery", str(out), "-P", "2", "--score-images", "64", "--threads", "1"]) == 0


def test_lottery_finetunes_by_the_pipeline_at_the_lotterys_scale_without_a_checkpoint(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`menas lottery` fine-tunes the ticket with `prune.pipeline.finetune`, the step a trial runs, but with the
    differences the pipeline takes as parameters: the lottery's lr scale, no epoch checkpoint and no owner (a trial
    keeps `finetune.ckpt` under its trial id)."""
    import menas.prune.pipeline as pipeline
    from menas.config import LotteryConfig, TrainConfig, from_dict

    real_train, seen = pipeline.train, []

    def train(model, train_loader, val_loader, cfg, *, checkpoint_path=None, **kw):
        seen.append((cfg, checkpoint_path, kw.get("owner")))
        return real_train(model, train_loader, val_loader, cfg, checkpoint_path=checkpoint_path, **kw)

    monkeypatch.setattr(pipeline, "train", train)
    args = ["lottery", str(trained), "-P", "2", "--score-images", "64", "--threads", "1", "--tolerance", "100"]
    assert main([*args, "--finetune-epochs", "1"]) == 0
    ((cfg, checkpoint, owner),) = seen
    recorded = from_dict(TrainConfig, json.loads((trained / "run.json").read_text())["train"], "train")
    assert checkpoint is None and owner is None and (cfg.epochs, cfg.warmup_epochs) == (1, 0.0)
    assert cfg.lr == pytest.approx(recorded.peak_lr(64) * LotteryConfig().finetune_lr_scale)


def test_the_finetune_lr_scale_is_the_jobs_else_the_lotterys_else_one() -> None:
    from menas.config import LotteryConfig
    from menas.prune.pipeline import finetune_lr_scale

    lottery = LotteryConfig(finetune_lr_scale=0.5)
    assert (finetune_lr_scale(0.2, lottery), finetune_lr_scale(None, lottery)) == (0.2, 0.5)
    assert (finetune_lr_scale(0.2, None), finetune_lr_scale(None, None)) == (0.2, 1.0)


def _search_val_top1(folder: Path) -> float:
    """Search-val top-1 of the weights in a checkpoint folder, recomputed on the data its run.json records."""
    from menas.config import DataConfig, from_dict
    from menas.data.splits import build_loaders
    from menas.train.checkpoint import load_weights
    from menas.train.loop import evaluate

    data = build_loaders(from_dict(DataConfig, json.loads((folder / "run.json").read_text())["data"]), "cpu")
    model = load_weights(folder / "model.safetensors", data.num_classes, data.in_chans)
    return evaluate(model, data.val)["top1"]


def test_lottery_diagnose_prints_correlations(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["lottery", str(trained), "--diagnose", "-M", "4", "--finetune-epochs", "1", "--score-images", "64",
                 "--threads", "1"])  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())  # rich wraps the title
    assert code == 0
    for row in ("without BN recalibration", "with BN recalibration", "noise ceiling"):
        assert row in out
    assert "quick scores on 64" in out


def test_lottery_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lottery", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    assert main(["lottery", str(tmp_path / "missing"), "--finetune-epochs", "-1"]) == 2
    assert "--finetune-epochs: got -1, allowed: integers >= 0" in capsys.readouterr().err
    assert main(["lottery", str(tmp_path / "missing"), "--diagnose", "--out", str(tmp_path / "x")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["train", GENOME, "--data", "fashion-mnist", "--root", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "data.root" in capsys.readouterr().err
