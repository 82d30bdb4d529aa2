"""Where a run keeps its files: the one owner of every path in a run folder and a trial folder.

A run folder holds `config.yaml` (the resolved config), `menas.sqlite` (the store), `menas.lock` (held while a
search writes), `trials/NNNNN/` (one folder per trial), `report/` (after `menas report`) and, when the search logs
to a tracker (`track`), `tensorboard/` or `mlflow.db` and `mlartifacts/` (MLflow's store and artifacts). A trial
folder holds `model.safetensors` (the final network's weights, the genome in their metadata), `run.json` (how it
was trained), `lottery.json` (the ticket search), `inherit.json` (what weight inheritance did) and, only while the
trial runs, its epoch checkpoints `train.ckpt` and `finetune.ckpt`.

The store keeps paths relative to the run folder (`RunFolder.relative`), so a moved or copied run folder still
works; paths recorded absolute by older versions are found again by their trial folder (`RunFolder.resolve`).
No torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
STORE_FILE = "menas.sqlite"
LOCK_FILE = "menas.lock"
TRIALS_DIR = "trials"
REPORT_DIR = "report"
#: `track: tensorboard`'s event files (one folder per trial and one for the search), unless `track_uri` says where.
TENSORBOARD_DIR = "tensorboard"
#: `track: mlflow`'s tracking store (SQLite) and artifact root, unless `track_uri` names another tracking URI.
MLFLOW_DB, MLFLOW_ARTIFACTS_DIR = "mlflow.db", "mlartifacts"
#: The weights of a trained network (safetensors, with the genome string in the metadata).
WEIGHTS_FILE = "model.safetensors"
#: How a network was trained: genome, data and training configs, preprocessing, provenance.
RUN_FILE = "run.json"
#: The ticket search's record: parent, every proposal (MACs, params, scores), the ticket.
LOTTERY_FILE = "lottery.json"
#: A trained network's per-epoch history (`menas train`'s checkpoint folder).
HISTORY_FILE = "history.json"
#: Weight inheritance's decision, read back when a trial resumes.
INHERIT_FILE = "inherit.json"
#: A trial's epoch checkpoints (training, fine-tuning): they resume an interrupted trial, nothing more.
TRAIN_CHECKPOINT, FINETUNE_CHECKPOINT = "train.ckpt", "finetune.ckpt"
EPOCH_CHECKPOINTS = (TRAIN_CHECKPOINT, FINETUNE_CHECKPOINT)


@dataclass(frozen=True)
class TrialFolder:
    """The folder of one trial of a run."""

    path: Path

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def run_record(self) -> Path:
        return self.path / RUN_FILE

    @property
    def lottery(self) -> Path:
        return self.path / LOTTERY_FILE

    @property
    def inherit(self) -> Path:
        return self.path / INHERIT_FILE

    @property
    def train_checkpoint(self) -> Path:
        return self.path / TRAIN_CHECKPOINT

    @property
    def finetune_checkpoint(self) -> Path:
        return self.path / FINETUNE_CHECKPOINT

    def drop_epoch_checkpoints(self) -> None:
        """Deletes a finished trial's epoch checkpoints: kept, they were most of a trial folder's size and filled
        disks on long runs; the weights stay."""
        for name in EPOCH_CHECKPOINTS:
            (self.path / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class RunFolder:
    """The folder of one run (a search and what was made from it)."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def store(self) -> Path:
        return self.path / STORE_FILE

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def trials(self) -> Path:
        return self.path / TRIALS_DIR

    @property
    def report(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def mlflow_db(self) -> Path:
        return self.path / MLFLOW_DB

    @property
    def mlflow_artifacts(self) -> Path:
        return self.path / MLFLOW_ARTIFACTS_DIR

    def trial(self, trial_id: int) -> TrialFolder:
        return TrialFolder(self.trials / f"{trial_id:05d}")

    def relative(self, path: str | os.PathLike[str]) -> str:
        """`path` as the store keeps it: relative to the run folder when inside it (POSIX separators), else as
        given."""
        path = Path(path)
        try:
            return path.resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return str(path)

    def resolve(self, recorded: str | None, trial_id: int | None = None) -> Path | None:
        """The file a stored path names, wherever the run folder is now: relative paths are taken from the run
        folder; an absolute one that no longer exists (the folder moved) is looked for under the trial's folder by
        its file name. None when nothing was recorded."""
        if not recorded:
            return None
        path = Path(recorded)
        if not path.is_absolute():
            return self.path / path
        if not path.exists() and trial_id is not None:
            moved = self.trial(trial_id).path / path.name
            if moved.exists():
                return moved
        return path


__all__ = [
    "CONFIG_FILE",
    "EPOCH_CHECKPOINTS",
    "FINETUNE_CHECKPOINT",
    "HISTORY_FILE",
    "INHERIT_FILE",
    "LOCK_FILE",
    "LOTTERY_FILE",
    "MLFLOW_ARTIFACTS_DIR",
    "MLFLOW_DB",
    "REPORT_DIR",
    "RUN_FILE",
    "STORE_FILE",
    "TENSORBOARD_DIR",
    "TRAIN_CHECKPOINT",
    "TRIALS_DIR",
    "WEIGHTS_FILE",
    "RunFolder",
    "TrialFolder",
]
