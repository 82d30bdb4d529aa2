"""Export of a trained network for use outside menas: its genome, weights and deployable graphs.

A folder with `genome.json` (the genome as string and JSON, input shape, exact MACs/params, and where it came
from), `model.safetensors` (weights with the genome in the metadata, loadable by
`menas.train.checkpoint.load_weights`) and,
as asked, `model.torchscript.pt` (`torch.jit.trace`), `model.pt2` (`torch.export`) and `model.onnx` (the
`torch.export`-based ONNX exporter; needs the `export` extra: onnx, onnxscript, onnxruntime), plus a README.md
that shows how to load each file with and without menas and the preprocessing an input needs (also recorded in
genome.json). The default formats are those the base install can write; asking for ONNX without its packages
fails before anything is written. Every graph is loaded back and
checked against the eager model on a batch of another size than the one it was traced with (the batch dimension
is dynamic); the differences are written to `export.json`. An export whose outputs differ is an error, not a file
left behind for a user to find out about.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from menas.errors import MenasError, UserError
from menas.files import write_atomically, write_json
from menas.folders import WEIGHTS_FILE
from menas.nn.builder import MenasNet
from menas.space.cost import count_cost
from menas.train.checkpoint import save_weights

#: Every format, and those written when none is named (what the base install can do: ONNX needs the extra).
FORMATS = ("safetensors", "torchscript", "pt2", "onnx")
DEFAULT_FORMATS = ("safetensors", "torchscript", "pt2")
#: Packages a format needs beyond the base install, all from `pip install 'menas[export]'`.
REQUIRES = {"onnx": ("onnx", "onnxscript")}
FILES = {
    "safetensors": WEIGHTS_FILE,
    "torchscript": "model.torchscript.pt",
    "pt2": "model.pt2",
    "onnx": "model.onnx",
}
#: Largest allowed |exported - eager| on the check batch (float32 logits; a faithful graph differs by ~1e-6).
TOLERANCE = 1e-3


class ExportError(MenasError):
    """An exported graph computes something else than the model, or a format's packages are missing."""


@dataclass
class ExportResult:
    files: dict[str, Path]  # format (and "genome", "manifest") -> path
    max_abs_diff: dict[str, float | None]  # per graph format; None: not checked (runtime missing)
    notes: list[str]


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Formats from "onnx,pt2" (or a list); 'safetensors' is always included (the genome and weights)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise UserError(f"--format: got {','.join(names) or 'nothing'}, allowed: a comma list of {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(["safetensors", *names]))


def export_model(
    model: MenasNet,
    out: str | os.PathLike[str],
    input_size: int,
    formats: Sequence[str] = DEFAULT_FORMATS,
    info: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> ExportResult:
    """Writes `model` to `out` in `formats`, checks every graph against the eager model, and returns the paths.

    `info` (source, score, ...) is recorded in genome.json, and so is `preprocessing` (see
    `menas.data.splits.preprocessing`; None records it as unknown). The model is exported from the CPU in eval mode
    (a copy: the caller's model is left as it was). Missing packages for a format are reported before anything
    is written.
    """
    formats = parse_formats(list(formats))
    check_requirements(formats)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    model = _cpu_eval_copy(model)
    genome = model.genome
    in_chans, num_classes = model.stem.conv.in_channels, model.num_classes
    cost = count_cost(genome, input_size, in_chans, num_classes)
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, in_chans, input_size, input_size, generator=gen)
    check = torch.randn(3, in_chans, input_size, input_size, generator=gen)
    files: dict[str, Path] = {}
    diffs: dict[str, float | None] = {}
    notes: list[str] = []
    record = {
        "genome": genome.to_str(),
        "genome_json": json.loads(genome.to_json()),
        "input_size": input_size,
        "in_chans": in_chans,
        "num_classes": num_classes,
        "macs": cost.macs,
        "params": cost.params,
        "preprocessing": preprocessing or {"known": False, "reason": "not given to the export"},
        **(info or {}),
    }
    files["genome"] = write_json(folder / "genome.json", record)
    for name in formats:
        path = folder / FILES[name]
        if name == "safetensors":
            save_weights(model, genome, path)
        else:
            diffs[name] = _EXPORTERS[name](model, example, check, path, notes)
            if diffs[name] is not None and not diffs[name] <= TOLERANCE:
                raise ExportError(
                    f"{name}: the exported graph differs from the model by {diffs[name]:.3g} "
                    f"(> {TOLERANCE:g}) on a batch of 3; {path} is not usable"
                )
        files[name] = path
    manifest = {
        "files": {k: v.name for k, v in files.items()},
        "max_abs_diff": diffs,
        "tolerance": TOLERANCE,
        "check_batch": 3,
        "torch": torch.__version__,
        "notes": notes,
    }
    files["manifest"] = write_json(folder / "export.json", manifest)
    files["readme"] = write_atomically(folder / "README.md", lambda tmp: tmp.write_text(readme(record, files)))
    return ExportResult(files, diffs, notes)


def check_requirements(formats: Sequence[str]) -> None:
    """Raises UserError naming the missing packages (and the extra that brings them) of any asked format."""
    for name in formats:
        missing = [package for package in REQUIRES.get(name, ()) if not _importable(package)]
        if missing:
            raise UserError(
                f"--format {name}: needs the {' and '.join(missing)} package(s), not installed: "
                "pip install 'menas[export]' (or leave out onnx)"
            )


def _cpu_eval_copy(model: MenasNet) -> MenasNet:
    return copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()


def _max_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    if got.shape != expected.shape:
        return float("inf")
    return float((got.float() - expected.float()).abs().max())


def _torchscript(model: MenasNet, example: torch.Tensor, check: torch.Tensor, path: Path, notes: list[str]) -> float:
    with warnings.catch_warnings():
        # deprecated in recent torch (which points to torch.export, the "pt2" format) but still what many
        # serving stacks load; the graph is checked below either way
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        traced = torch.jit.trace(model, example)
        write_atomically(path, lambda tmp: torch.jit.save(traced, str(tmp)))
        loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return _max_diff(loaded(check), model(check))


def _pt2(model: MenasNet, example: torch.Tensor, check: torch.Tensor, path: Path, notes: list[str]) -> float:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    write_atomically(path, lambda tmp: torch.export.save(program, str(tmp)))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        return _max_diff(loaded(check), model(check))


def _onnx(model: MenasNet, example: torch.Tensor, check: torch.Tensor, path: Path, notes: list[str]) -> float | None:
    check_requirements(["onnx"])
    batch = torch.export.Dim("batch", min=1)

    def write(tmp: Path) -> None:
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )

    _quietly(lambda: write_atomically(path, write))
    if not _importable("onnxruntime"):
        notes.append("onnx: not checked against the model (onnxruntime is not installed)")
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": check.numpy()})
    with torch.no_grad():
        return _max_diff(torch.from_numpy(got), model(check))


_EXPORTERS = {"torchscript": _torchscript, "pt2": _pt2, "onnx": _onnx}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _quietly(action) -> None:
    """Runs `action` with the ONNX exporter's progress lines (printed to stdout) swallowed."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        action()


# ------------------------------------------------------------------------------------ README of an export folder


def readme(record: dict[str, Any], files: dict[str, Path]) -> str:
    """README.md of an export folder: what each file is, how to load it with menas and without, and the
    preprocessing an image needs first."""
    size, chans, classes = record["input_size"], record["in_chans"], record["num_classes"]
    lines = [
        f"# {classes}-class network exported by menas",
        "",
        f"Genome: `{record['genome']}`",
        "",
        f"{record['macs']:,} MACs and {record['params']:,} parameters at {size}x{size} px, {chans} input "
        f"channel(s). Input: float32 `(batch, {chans}, {size}, {size})`, any batch size; output: `(batch, "
        f"{classes})` logits.",
        "",
        "## Files",
        "",
    ]
    names = {
        "genome": "genome, shape, cost, preprocessing and provenance",
        "manifest": "how close each graph came to the model when exported",
        "safetensors": "weights, genome in the metadata",
        "torchscript": "TorchScript (`torch.jit.trace`)",
        "pt2": "`torch.export` program",
        "onnx": "ONNX (input `images`, output `logits`)",
    }
    lines += [f"- `{path.name}`: {names[key]}" for key, path in files.items() if key in names]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import menas",
        "",
        'model = menas.load("path/to/this/folder")  # an nn.Module in eval mode',
        "```",
        "",
    ]
    batch = f"x = torch.zeros(1, {chans}, {size}, {size})  # a batch of images preprocessed as below"
    snippets = {
        "torchscript": [
            "import torch",
            "",
            f'model = torch.jit.load("{FILES["torchscript"]}")',
            batch,
            "logits = model(x)",
        ],
        "pt2": [
            "import torch",
            "",
            f'model = torch.export.load("{FILES["pt2"]}").module()',
            batch,
            "logits = model(x)",
        ],
        "onnx": [
            "import numpy as np",
            "import onnxruntime",
            "",
            f'session = onnxruntime.InferenceSession("{FILES["onnx"]}")',
            f"x = np.zeros((1, {chans}, {size}, {size}), np.float32)  # preprocessed as below",
            '(logits,) = session.run(None, {"images": x})',
        ],
    }
    if any(key in files for key in snippets):
        lines += ["Without menas, from this folder:", ""]
    for key, code in snippets.items():
        if key in files:
            lines += ["```python", *code, "```", ""]
    return "\n".join([*lines, *_preprocessing_lines(record["preprocessing"])]) + "\n"


def _preprocessing_lines(pre: dict[str, Any]) -> list[str]:
    lines = ["## Preprocessing", ""]
    if "mean" not in pre:
        return [*lines, f"Unknown: {pre.get('reason', 'not recorded')}. Feed images the way the network was trained."]
    mean, std = ", ".join(f"{m:.6g}" for m in pre["mean"]), ", ".join(f"{s:.6g}" for s in pre["std"])
    return [
        *lines,
        f"1. Resize {pre['resize']}.",
        f"2. {pre['in_chans']} channel(s), {pre['layout']}.",
        f"3. Scale: {pre['scale']}, with mean = [{mean}] and std = [{std}] ({pre['statistics']} statistics).",
        "",
        "The same values are in `genome.json` under `preprocessing`.",
    ]
