"""`menas export`: genome.json, weights and graphs, each checked against the model; errors are one line."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

import menas.winner.export as export_module
from menas.cli.main import main
from menas.nn.builder import build_model
from menas.search.store import Store
from menas.search.strategies import TrialSpec
from menas.space.genome import Genome
from menas.train.checkpoint import load_weights, save_weights
from menas.winner.export import ExportError, export_model, parse_formats

GENOME = Genome.from_str(
    "stem_c16_hs-ds_k3_c16_re|ir_k3_s2_m32_c16_re|ir_k3_s2_m48_c24_re-ir_k5_m72_c24_se_re|ir_k3_s2_m96_c40_hs"
    "|ir_k3_m120_c40_hs|ir_k3_s2_m160_c48_se_hs-ir_k3_m144_c48_hs|head_c288_f256_hs"
)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(GENOME, 7, 1)
    for m in model.modules():  # non-trivial BN statistics, so an export that ignored them would differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


@pytest.mark.slow  # ~8 s: the ONNX and torch.export graphs
def test_export_all_formats_match_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    result = export_model(model, tmp_path / "out", 32, ("torchscript", "pt2", "onnx"), {"source": "test"})
    assert set(result.files) == {"genome", "safetensors", "torchscript", "pt2", "onnx", "manifest", "readme"}
    assert all(0.0 <= d <= 1e-4 for d in result.max_abs_diff.values()), result.max_abs_diff
    record = json.loads((tmp_path / "out" / "genome.json").read_text())
    assert Genome.from_str(record["genome"]) == GENOME == Genome.from_json(json.dumps(record["genome_json"]))
    assert (record["input_size"], record["in_chans"], record["num_classes"], record["source"]) == (32, 1, 7, "test")
    x = torch.randn(5, 1, 32, 32)
    reloaded = load_weights(tmp_path / "out" / "model.safetensors").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated in recent torch; the file is still checked
        scripted = torch.jit.load(str(tmp_path / "out" / "model.torchscript.pt"))
    with torch.no_grad():
        expected = model.eval()(x)
        assert torch.equal(reloaded(x), expected)
        torch.testing.assert_close(scripted(x), expected)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert 'onnxruntime.InferenceSession("model.onnx")' in readme and "`model.onnx`: ONNX" in readme
    assert _run_readme_snippets(tmp_path / "out", monkeypatch) == ["menas.load", "jit", "export", "onnxruntime"]
    manifest = json.loads((tmp_path / "out" / "export.json").read_text())
    assert manifest["max_abs_diff"] == result.max_abs_diff and manifest["tolerance"] == export_module.TOLERANCE
    umask = os.umask(0)
    os.umask(umask)  # safetensors writes owner-only files; the export follows the umask like any other file
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list((tmp_path / "out").glob(".*tmp*"))


def _run_readme_snippets(folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Runs every Python block of an export's README.md in the folder; returns the loaders each used."""
    text = (folder / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]
    monkeypatch.chdir(folder)
    used = []
    for code in blocks:
        scope: dict[str, object] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load is deprecated in recent torch
            exec(code.replace("path/to/this/folder", str(folder)), scope)  # the README's own code, unchanged
        if "logits" in scope:
            assert tuple(scope["logits"].shape) == (1, json.loads((folder / "genome.json").read_text())["num_classes"])
        used.append(next(name for name in ("menas.load", "jit", "export", "onnxruntime") if name in code))
    return used


def test_parse_formats() -> None:
    assert parse_formats("onnx, pt2") == ("safetensors", "onnx", "pt2")
    assert parse_formats(["safetensors"]) == ("safetensors",)
    with pytest.raises(ValueError, match="--format: got tflite, allowed: a comma list of safetensors, torchscript"):
        parse_formats("tflite")


def test_an_export_that_differs_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # every difference, even 0, is "too large"
    with pytest.raises(ExportError, match="torchscript: the exported graph differs"):
        export_model(_model(), tmp_path, 32, ("torchscript",))


def test_onnx_without_its_packages_fails_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "_importable", lambda name: name not in ("onnx", "onnxscript"))
    with pytest.raises(ValueError, match=r"needs the onnx and onnxscript package\(s\), not installed: pip install "
                       r"'menas\[export\]'"):  # fmt: skip
        export_model(_model(), tmp_path / "out", 32, ("torchscript", "onnx"))
    assert not (tmp_path / "out").exists()  # checked before the folder or any file is written


def test_export_cli_defaults_to_what_the_base_install_can_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 12 of issue 11: without the `export` extra the default export works, and asking for ONNX fails with
    one line naming the extra before anything is written."""
    monkeypatch.setattr(export_module, "_importable", lambda name: not name.startswith("onnx"))
    weights = tmp_path / "w" / "model.safetensors"
    save_weights(_model(), GENOME, weights)
    out = tmp_path / "default"
    assert main(["export", str(weights), "--out", str(out), "--input-size", "32"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {
        "genome.json",
        "model.safetensors",
        "model.torchscript.pt",
        "model.pt2",
        "export.json",
        "README.md",
    }
    capsys.readouterr()
    assert main(["export", str(weights), "--out", str(tmp_path / "onnx"), "--input-size", "32", "--format",
                 "pt2,onnx"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "pip install 'menas[export]'" in err and err.count("\n") == 1
    assert not (tmp_path / "onnx").exists()


def test_export_readme_and_preprocessing_of_a_trained_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained = tmp_path / "trained"
    data = ["--data", "synthetic", "--input-size", "16", "--batch-size", "64", "--threads", "1"]
    assert main(["train", str(GENOME), *data, "--epochs", "1", "--out", str(trained)]) == 0
    out = tmp_path / "export"
    assert main(["export", str(trained), "--out", str(out)]) == 0
    recorded = json.loads((trained / "run.json").read_text())["preprocessing"]
    record = json.loads((out / "genome.json").read_text())
    assert record["preprocessing"] == recorded and record["data"]["dataset"] == "synthetic"
    assert record["input_size"] == recorded["input_size"] == 16 and recorded["in_chans"] == 1
    readme = (out / "README.md").read_text()
    for text in ("menas.load(", "torch.jit.load(\"model.torchscript.pt\")", "torch.export.load(\"model.pt2\")",
                 "model.safetensors", "genome.json", "export.json",
                 "(1, 1, 16, 16)", f"mean = [{recorded['mean'][0]:.6g}]", f"std = [{recorded['std'][0]:.6g}]",
                 "16x16 px"):  # fmt: skip
        assert text in readme, text
    # without the record in run.json (an older folder), the values are computed from the recorded data config
    older = tmp_path / "older"
    older.mkdir()
    (older / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes())
    run = json.loads((trained / "run.json").read_text())
    del run["preprocessing"]
    (older / "run.json").write_text(json.dumps(run))
    assert main(["export", str(older), "--out", str(tmp_path / "older-export"), "--format", "safetensors"]) == 0
    computed = json.loads((tmp_path / "older-export" / "genome.json").read_text())["preprocessing"]
    assert (computed["mean"], computed["std"]) == (recorded["mean"], recorded["std"]) and "computed" in computed["note"]
    # a bare weights file: the preprocessing is unknown, and both files say so
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes((trained / "model.safetensors").read_bytes())
    assert main(["export", str(bare), "--out", str(tmp_path / "bare"), "--format", "safetensors", "--input-size",
                 "16"]) == 0  # fmt: skip
    unknown = json.loads((tmp_path / "bare" / "genome.json").read_text())["preprocessing"]
    assert unknown["known"] is False and "records no data config" in unknown["reason"]
    assert "Unknown: " in (tmp_path / "bare" / "README.md").read_text()
    assert "preprocessing unknown" in capsys.readouterr().out


def test_export_cli_sources_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "w" / "model.safetensors"
    weights.parent.mkdir()
    save_weights(_model(), GENOME, weights)
    # a bare weights file needs the input size
    assert main(["export", str(weights), "--out", str(tmp_path / "a"), "--format", "safetensors"]) == 2
    assert "--input-size: required" in capsys.readouterr().err
    assert main(["export", str(weights), "--out", str(tmp_path / "a"), "--format", "pt2", "--input-size", "64"]) == 0
    assert "pt2:" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "genome.json").read_text())["input_size"] == 64
    # a run folder: its best trial, with the input size from the run's config
    run = tmp_path / "run"
    with Store.create(run, {"space": "mobilenet3-mt"}) as store:
        store.add_trials([TrialSpec(i, f"g{i}", 0, "sample", (), True) for i in range(2)])
        store.finish_trial(0, trained_score=60.0, macs=1, params=1, weights=str(tmp_path / "missing.safetensors"))
        store.finish_trial(1, trained_score=70.0, macs=1, params=1, weights=str(weights))
    (run / "config.yaml").write_text("data:\n  dataset: digits\n  input_size: 32\n")
    assert main(["export", str(run), "--out", str(tmp_path / "b"), "--format", "safetensors"]) == 0
    record = json.loads((tmp_path / "b" / "genome.json").read_text())
    assert (record["trial_id"], record["search_val_top1"], record["input_size"]) == (1, 70.0, 32)
    # one-line errors: a mismatch (exit 1), a missing source and an unknown format (exit 2)
    with monkeypatch.context() as patch:
        patch.setattr(export_module, "TOLERANCE", -1.0)
        assert main(["export", str(run), "--out", str(tmp_path / "c"), "--format", "pt2"]) == 1
        assert "differs from the model" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")]) == 2
    assert main(["export", str(weights), "--out", str(tmp_path / "d"), "--format", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "nothing': not found" in err and "allowed: a comma list" in err and "Traceback" not in err


def test_export_a_member_of_a_runs_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--front K` exports the K-th member of the run's Pareto front by rising MACs (`Store.front`), `--rank N`
    the N-th best; a K outside the front, two picks at once or `--front` without a run is a one-line error, exit 2."""
    weights = tmp_path / "w" / "model.safetensors"
    weights.parent.mkdir()
    save_weights(_model(), GENOME, weights)
    run = tmp_path / "run"
    with Store.create(run, {"space": "mobilenet3-mt", "strategy": {"objective": "pareto"}}) as store:
        store.add_trials([TrialSpec(i, f"g{i}", 0, "sample", (), False) for i in range(4)])
        for i, (score, macs) in enumerate([(60.0, 1_000_000), (70.0, 2_000_000), (65.0, 3_000_000)]):
            store.finish_trial(i, trained_score=score, macs=macs, params=1, weights=str(weights))
        store.fail_trial(3, "TrialFailed: non-finite loss")

    def export(*flags: str) -> int | None:
        out = tmp_path / "out" / "".join(flags)
        code = main(["export", str(run), "--out", str(out), "--format", "safetensors", *flags])
        return json.loads((out / "genome.json").read_text())["trial_id"] if code == 0 else code

    # trial 2 (65%, 3M MACs) is beaten by trial 1 (70%, 2M): the front is trial 0, then trial 1
    assert (export("--front", "1"), export("--front", "2"), export("--rank", "2"), export("--trial", "2")) == (
        0,
        1,
        2,
        2,
    )
    capsys.readouterr()
    for k in ("3", "0"):
        assert export("--front", k) == 2
        err = capsys.readouterr().err
        assert f"--front: got {k}, allowed: 1..2 (the run's Pareto front by rising" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        export("--front", "1", "--rank", "1")
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    bare = ["export", str(weights), "--out", str(tmp_path / "bare"), "--front", "1", "--input-size", "32"]
    assert main(bare) == 2
    assert "--front: only with a run folder" in capsys.readouterr().err
