"""The final training of a chosen network (`menas retrain`): from scratch or from its trial's weights, on the
whole training split minus a small held-out part (the per-epoch curve), with a named recipe (`RetrainConfig`),
optionally distilled from a teacher, resumable from epoch checkpoints; then the raw and the EMA weights are scored
once on the test split.

`fit` is the reusable part (a given model, given loaders, a recipe, an output folder: train resumably, then
score): transfer learning calls it with its own model and data. `retrain` adds what is specific to a search's
winner: where the network comes from (a run, a checkpoint folder or a genome string), the output files and the
run's store.

Output folder: `model.safetensors` (the kept weights: raw or EMA, whichever scored better on the held-out part)
and `model_raw.safetensors` / `model_ema.safetensors` (the other one), `run.json` (so `menas lottery` and
`menas export` read the folder like a `menas train` folder), `retrain.json` (results), `recipe.yaml` (the resolved
recipe) and `retrain.ckpt` (the epoch checkpoint a rerun of the same command resumes from).
"""

from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from menas.config import RetrainConfig, TrainConfig, dump_yaml, to_dict
from menas.data.splits import SearchData, build_loaders
from menas.errors import UserError
from menas.files import write_atomically, write_json
from menas.nn.builder import MenasNet, build_model
from menas.space.cost import count_cost
from menas.space.genome import Genome, parse_genome_arg
from menas.train import distributed
from menas.train.checkpoint import (
    RUN_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_weights,
    run_record,
    save_weights,
)
from menas.train.loop import EpochStats, History, evaluate, seed_trial, train
from menas.train.resume import RESUME_TOLERATED
from menas.winner.load import NetworkSource, find_network

RETRAIN_FILE = "retrain.json"
RECIPE_FILE = "recipe.yaml"
CHECKPOINT_FILE = "retrain.ckpt"
#: `kind` recorded in run.json, so a retrain folder is told apart from a `menas train` or `lottery --out` one.
KIND = "retrain"


# --------------------------------------------------------------------------------------------- sources


#: A network to retrain: `menas.winner.load.NetworkSource` (its genome, data config, weights, run and trial).
Source = NetworkSource


def resolve_source(text: str, trial: int | None = None, rank: int | None = None) -> NetworkSource:
    """A genome string / reference name / genome file, or anything `menas.winner.load.find_network` resolves (a run
    folder: its best done trial, `trial` or the `rank`-th; a checkpoint or export folder; a .safetensors file).
    A run's trial without weights is allowed (a retrain from scratch needs only its genome).

    Raises:
        UserError: an unknown trial or rank, a run without a finished trial, --trial/--rank without a run, or
            text that is none of the above.
    """
    from menas.search.store import store_path

    path = Path(text)
    if "|" in text:  # a genome string (stages are separated by '|'), which may be too long for a file name
        if trial is not None or rank is not None:
            raise UserError("--trial/--rank: only with a run folder, not with a genome string")
        return genome_source(parse_genome_arg(text))
    if (
        store_path(path).is_file()
        or trial is not None
        or rank is not None
        or path.is_dir()
        or path.suffix == ".safetensors"
    ):
        return find_network(path, trial, rank, need_weights=False)
    return genome_source(parse_genome_arg(text))


def genome_source(genome: Genome) -> NetworkSource:
    """A bare genome: no weights, no recorded data config."""
    return NetworkSource(None, Path("."), genome=genome, label="genome")


# --------------------------------------------------------------------------------------------- teachers


def load_teacher(text: str, weights: str | None, num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    """A teacher network in eval mode: a menas run (its best trial), checkpoint folder or weights file, or a timm
    model name with `weights` (a .safetensors or torch state-dict file; nothing is downloaded).

    Raises:
        UserError: the teacher's classes or input channels differ from the data's (names which), its weights do
            not fit the named timm model, or `text` is neither a menas network nor (with `weights`) a timm name.
    """
    path = Path(text)
    if weights is None and "|" not in text and (path.exists() or path.suffix == ".safetensors"):
        model: nn.Module = load_weights(find_network(path).weights)
        classes, chans = model.num_classes, model.stem.conv.in_channels
    elif weights is not None:
        model, classes, chans = _timm_teacher(text, weights, num_classes, in_chans), num_classes, in_chans
    else:
        raise UserError(
            f"--teacher: {text!r} is not a menas run, checkpoint folder or weights file (a timm model "
            "name needs --teacher-weights FILE)"
        )
    for what, got, wanted in (("classes", classes, num_classes), ("input channels", chans, in_chans)):
        if got != wanted:
            raise UserError(f"--teacher: {text!r} has {got} {what}, the data has {wanted}")
    model.eval()
    with torch.inference_mode():  # the input shape must go through, e.g. no stride that a small input cannot take
        try:
            logits = model(torch.zeros(1, in_chans, input_size, input_size))
        except RuntimeError as exc:
            raise UserError(
                f"--teacher: {text!r} cannot take {input_size}x{input_size} inputs ({str(exc).splitlines()[0]})"
            ) from None
    if tuple(logits.shape) != (1, num_classes):
        raise UserError(f"--teacher: {text!r} outputs shape {tuple(logits.shape)}, expected (1, {num_classes})")
    return model


def _timm_teacher(name: str, weights: str, num_classes: int, in_chans: int) -> nn.Module:
    import timm

    if not Path(weights).is_file():
        raise UserError(f"--teacher-weights: {weights!r} not found")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise UserError(f"--teacher: {name!r} is not a menas network or a timm model ({exc})") from None
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    for key, value in own.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise UserError(
                f"--teacher-weights: {key} has shape {tuple(state[key].shape)} in {weights!r}, the "
                f"timm model {name!r} for {num_classes} classes and {in_chans} input channels needs "
                f"{tuple(value.shape)}"
            )
    missing = sorted(set(own) - set(state))
    if missing:
        raise UserError(f"--teacher-weights: {weights!r} lacks {missing[0]} (and {len(missing) - 1} more) of {name}")
    model.load_state_dict(state, strict=False)
    return model


# --------------------------------------------------------------------------------------------- training


@dataclasses.dataclass
class Outcome:
    """What `fit` measured: the history (held-out curve), raw and EMA scores on the held-out part and the test
    split (EMA ones None without EMA), which weights were kept, and the raw and EMA states."""

    history: History
    holdout: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]]
    kept: str
    states: dict[str, dict[str, torch.Tensor]]
    eval_seconds: float

    @property
    def images_per_s(self) -> float:
        """Training images per second over every epoch (resumes included)."""
        seconds = sum(e.train_seconds for e in self.history.epochs)
        images = sum(e.images_per_s * e.train_seconds for e in self.history.epochs)
        return images / seconds if seconds > 0 else 0.0

    @property
    def wall_seconds(self) -> float:
        """Training and held-out scoring of every epoch plus the final evaluation."""
        return self.history.total_seconds + self.eval_seconds


def add_drop_path(model: MenasNet, rate: float) -> None:
    """Stochastic depth on the residual inverted-residual blocks, as forward hooks (the model's code and
    state dict are unchanged): the i-th of n blocks drops its branch with probability rate * i / n in training."""
    if rate <= 0:
        return
    from timm.layers import drop_path

    blocks = [m for m in model.modules() if getattr(m, "has_skip", False)]
    for i, block in enumerate(blocks, start=1):
        p = rate * i / len(blocks)

        def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor, p: float = p) -> torch.Tensor:
            shortcut = inputs[0]
            return shortcut + drop_path(output - shortcut, p, module.training)

        block.register_forward_hook(hook)


def fit(
    model: nn.Module,
    data: SearchData,
    cfg: TrainConfig,
    out: Path,
    *,
    teacher: nn.Module | None = None,
    progress: Callable[[EpochStats], None] | None = None,
) -> Outcome:
    """Trains `model` on `data.train` with `cfg`, scoring `data.val` (the held-out part) every epoch, resumably
    from `out/retrain.ckpt`; then scores the raw and (with `cfg.ema`) the EMA weights on `data.val` and, once,
    on `data.test`. `model` ends with the kept weights: EMA unless the raw ones scored higher on `data.val`."""
    checkpoint = out / CHECKPOINT_FILE
    history = train(model, data.train, data.val, cfg, checkpoint_path=checkpoint, progress=progress, teacher=teacher)
    payload = load_checkpoint(checkpoint)
    states = {"raw": payload["model"]}
    if payload["ema"] is not None:
        states["ema"] = payload["ema"]
    holdout, test, seconds = {}, {}, 0.0
    for name, state in states.items():
        model.load_state_dict(state)
        holdout[name] = evaluate(model, data.val, amp=cfg.amp, channels_last=cfg.channels_last)
        test[name] = evaluate(model, data.test, amp=cfg.amp, channels_last=cfg.channels_last)
        seconds += holdout[name]["seconds"] + test[name]["seconds"]
    kept = "ema" if "ema" in states and holdout["ema"]["top1"] >= holdout["raw"]["top1"] else "raw"
    model.load_state_dict(states[kept])
    return Outcome(history, holdout, test, kept, states, seconds)


def make_run_record(kind: str, genome: Genome, cfg: RetrainConfig, label: str, **extra: Any) -> dict[str, Any]:
    """The run.json of a retrain or transfer folder (`menas.train.checkpoint.run_record` with the source's label
    and `extra`; `write_outputs` adds the kept weights and their test top-1). Its data config is what
    `menas lottery`/`export` rebuild loaders from: without the retrain-only augmentation (RandAugment would also
    reach the lottery's BN-recalibration batches); recipe.yaml keeps the whole recipe."""
    plain_data = dataclasses.replace(cfg.data, randaugment=None, random_erasing=0.0)
    return run_record(kind, genome, plain_data, cfg.train, source=label, **extra)


def begin(
    out: Path,
    data: SearchData,
    cost: Any,
    run_record: dict[str, Any],
    on_start: Callable[[SearchData, Any, int], None] | None,
) -> None:
    """Tells `on_start` the loaders, the cost and the epochs already done (a resume), and writes run.json once
    (rank 0 under torchrun), right before training."""
    if on_start is not None:
        done = load_checkpoint(out / CHECKPOINT_FILE)["epoch"] if (out / CHECKPOINT_FILE).is_file() else 0
        on_start(data, cost, done)
    if not (out / RUN_FILE).is_file() and distributed.is_main():
        write_json(out / RUN_FILE, run_record)


# --------------------------------------------------------------------------------------------- the command


def check_out(out: Path, genome: Genome, run_record: dict[str, Any] | None = None, kind: str = KIND) -> None:
    """Refuses an output folder that holds another command's results, a `kind` run (retrain or transfer) of
    another genome, or (with `run_record`, the run.json this run would write) an epoch checkpoint of other
    settings; before anything is written there."""
    run = out / RUN_FILE
    if run.is_file():
        try:
            recorded = json.loads(run.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"--out: cannot read {str(run)!r} ({exc})") from None
        if recorded.get("kind") != kind:
            raise UserError(
                f"--out: {str(out)!r} holds another command's results ({RUN_FILE} without kind "
                f"{kind!r}); choose another folder"
            )
        if recorded.get("genome") != genome.to_str():
            raise UserError(
                f"--out: {str(out)!r} holds a {kind} of another genome ({recorded.get('genome')}); "
                "choose another folder"
            )
        if run_record is not None and (out / CHECKPOINT_FILE).is_file():
            _check_same_settings(out, recorded, run_record)
    elif (out / CHECKPOINT_FILE).exists():
        raise UserError(
            f"--out: {str(out / CHECKPOINT_FILE)!r} exists without {RUN_FILE}: not a {kind} this "
            "command can resume; choose another folder"
        )


def _check_same_settings(out: Path, recorded: dict[str, Any], now: dict[str, Any]) -> None:
    """A resume must use the settings of the checkpoint it continues (the tolerated ones aside)."""
    for section in ("train", "data"):
        before, after = recorded.get(section) or {}, now[section]
        for key in sorted(set(before) | set(after)):
            if key not in RESUME_TOLERATED and before.get(key) != after.get(key):
                raise UserError(
                    f"--out: {str(out)!r} holds a {now['kind']} with {section}.{key} "
                    f"{before.get(key)!r}, now {after.get(key)!r}: resume it with the same settings, "
                    "or choose another folder"
                )


def device_name(device: torch.device) -> str:
    """The device and its hardware name, e.g. "cuda:0 (NVIDIA A100-SXM4-80GB)" or "cpu (AMD EPYC 7B13, 2 threads)"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device} ({model}, {torch.get_num_threads()} threads)"


def retrain(
    source: Source,
    cfg: RetrainConfig,
    out: Path,
    *,
    device: torch.device,
    init: str = "scratch",
    teacher: tuple[str, str | None] | None = None,
    progress: Callable[[EpochStats], None] | None = None,
    on_start: Callable[[SearchData, Any, int], None] | None = None,
) -> dict[str, Any]:
    """Retrains `source`'s network with `cfg` into `out` and returns the retrain.json record.

    Args:
        source: see `resolve_source`; its data config must be in `cfg.data` already.
        cfg: the resolved recipe (`RetrainConfig.preset` plus overrides).
        out: the output folder; a rerun with the same arguments resumes from its epoch checkpoint.
        device: where to train.
        init: "scratch" (the paper) or "trial" (start from the source's trained weights).
        teacher: (SOURCE, WEIGHTS or None) to distil from (see `load_teacher`).
        progress: called after each epoch.
        on_start: called with the loaders, the cost and the epochs already done (a resume) before training.

    Raises:
        UserError: a bad folder, init or teacher (nothing is written then).
    """
    if init not in ("scratch", "trial"):
        raise UserError(f"--init: got {init!r}, allowed: scratch, trial")
    if init == "trial" and source.weights is None:
        raise UserError("--init trial: the source has no trained weights (a genome string); use --init scratch")
    run_record = make_run_record(KIND, source.genome, cfg, source.label, init=init)
    check_out(out, source.genome, run_record)
    finished_before = (out / RETRAIN_FILE).is_file()  # a rerun of a finished retrain: not recorded twice
    data = build_loaders(
        cfg.data, device, mode="retrain", holdout_fraction=cfg.holdout_fraction, channels_last=cfg.train.channels_last
    )
    teacher_model = None
    if teacher is not None:
        teacher_model = load_teacher(teacher[0], teacher[1], data.num_classes, data.in_chans, data.input_size)
        teacher_model.to(
            device=device, memory_format=torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        )
    seed_trial(cfg.train.seed)
    model = build_model(source.genome, data.num_classes, data.in_chans, drop_rate=cfg.dropout)
    if init == "trial":
        model.load_state_dict(load_weights(source.weights, data.num_classes, data.in_chans).state_dict())
    add_drop_path(model, cfg.drop_path)
    cost = count_cost(source.genome, data.input_size, data.in_chans, data.num_classes)
    begin(out, data, cost, run_record, on_start)
    outcome = fit(model, data, cfg.train, out, teacher=teacher_model, progress=progress)
    record = result_record(source, cfg, outcome, cost, device, init, teacher)
    if distributed.is_main():  # under torchrun, rank 0 writes
        write_outputs(out, source.genome, model, outcome, run_record, record, cfg)
        if source.run_dir is not None and not finished_before:
            _store_record(source, record, out)
    return record


def result_record(
    source: Source,
    cfg: RetrainConfig,
    outcome: Outcome,
    cost: Any,
    device: torch.device,
    init: str,
    teacher: tuple[str, str | None] | None,
) -> dict[str, Any]:
    """The retrain.json (or transfer.json) record: what was trained, how, and its scores."""

    def scores(split: dict[str, dict[str, float]], name: str) -> dict[str, float] | None:
        if name not in split:
            return None
        return {key: split[name][key] for key in ("top1", "top5", "loss", "images")}

    return {
        "genome": source.genome.to_str(),
        "source": source.label,
        "trial_id": source.trial_id,
        "init": init,
        "teacher": None if teacher is None else teacher[0],
        "recipe": cfg.recipe,
        "config": to_dict(cfg),
        "epochs": len(outcome.history.epochs),
        "test": {"raw": scores(outcome.test, "raw"), "ema": scores(outcome.test, "ema")},
        "holdout": {"raw": scores(outcome.holdout, "raw"), "ema": scores(outcome.holdout, "ema")},
        "kept": outcome.kept,
        "kept_by": "held-out top-1 (EMA on a tie)",
        "macs": cost.macs,
        "params": cost.params,
        "wall_seconds": outcome.wall_seconds,
        "images_per_s": outcome.images_per_s,
        "device": device_name(device) + (f" x {distributed.world_size()} processes" if distributed.active() else ""),
        "resumed_at": outcome.history.resumed_at,
        "history": outcome.history.to_dict(),
    }


def write_outputs(
    out: Path,
    genome: Genome,
    model: nn.Module,
    outcome: Outcome,
    run_record: dict[str, Any],
    record: dict[str, Any],
    cfg: RetrainConfig,
    result_file: str = RETRAIN_FILE,
) -> None:
    """The kept and the other weights, run.json with the kept test top-1, recipe.yaml and `result_file`."""
    save_weights(model, genome, out / WEIGHTS_FILE)  # the kept weights
    other = "raw" if outcome.kept == "ema" else "ema"
    if other in outcome.states:
        model.load_state_dict(outcome.states[other])
        save_weights(model, genome, out / f"model_{other}.safetensors")
        model.load_state_dict(outcome.states[outcome.kept])
    kept_test = outcome.test[outcome.kept]
    write_json(out / RUN_FILE, {**run_record, "kept": outcome.kept, "test_top1": kept_test["top1"]})
    header = f"# menas {run_record['kind']}: the resolved recipe (preset {cfg.recipe!r} plus overrides)\n"
    write_atomically(out / RECIPE_FILE, lambda tmp: tmp.write_text(header + dump_yaml(cfg)))
    write_json(out / result_file, record)


def _store_record(source: Source, record: dict[str, Any], out: Path) -> None:
    from menas.search.store import Store

    raw, ema = record["test"]["raw"], record["test"]["ema"] or {}
    with Store.open(source.run_dir) as store:
        store.add_retrain(
            trial_id=source.trial_id,
            genome=record["genome"],
            recipe=record["recipe"],
            config=record["config"],
            epochs=record["epochs"],
            test_top1=raw["top1"],
            test_top5=raw["top5"],
            test_loss=raw["loss"],
            ema_top1=ema.get("top1"),
            ema_top5=ema.get("top5"),
            ema_loss=ema.get("loss"),
            kept=record["kept"],
            macs=record["macs"],
            params=record["params"],
            wall_s=record["wall_seconds"],
            images_per_s=record["images_per_s"],
            device=record["device"],
            teacher=record["teacher"],
            out=str(out),
        )
