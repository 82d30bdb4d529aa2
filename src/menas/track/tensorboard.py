"""The TensorBoard tracker (`track: tensorboard`): event files written with the `tensorboard` package's own
event-file writer and protocol buffers, so neither TensorFlow nor torch is needed to write them (the search's
process has torch anyway; `torch.utils.tensorboard` would only wrap the same writer).

Layout, in the run's log folder (`RUN/tensorboard/`, or `track_uri`): one TensorBoard run per trial,
`trial-00003/`, and one for the search, `search/`. One folder per trial rather than one writer with
trial-indexed scalars, because that is how TensorBoard compares trials: the per-epoch curves of all trials
(`epoch/train_losses`) overlay in one chart, one colour per trial, against their own epochs; each trial is one
session of the HParams dashboard (its params beside its scores, as a sortable table and parallel coordinates);
and the run selector filters trials by name. The search's own curves (`search/best_score`, `search/final_score`)
are in `search/`, at step n for the n-th trial logged, so they run left to right whatever order trials finish in
(a pool); the config is a text there, and at the end the best trial and the Pareto front.

A trial's folder is written in one go when the trial finishes and then marked complete (`.menas-logged`, holding
the run's key); a resume drops a folder without the mark (a crash mid-write) and logs that trial again. The log
folder's `.menas-run` holds the run's key: a folder holding another run's logs, or other files, is refused, so two
runs never mix their trials. `tensorboard --logdir RUN/tensorboard` shows one run; `--logdir runs` all of them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from menas.errors import UserError
from menas.track.base import SearchEnd, TrialLog, missing_extra

#: The mark of a complete trial folder, and of the log folder's owner (both hold the run's key).
LOGGED_MARK, OWNER_MARK = ".menas-logged", ".menas-run"
SEARCH_RUN = "search"


def require() -> None:
    """Imports the writer and protos; a missing `tensorboard` package is one `UserError` naming the extra."""
    try:
        import tensorboard  # noqa: F401 (first: the package itself, even when its modules were imported before)
        from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: F401
        from tensorboard.plugins.hparams import summary_v2  # noqa: F401
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: F401
    except ImportError as exc:
        raise missing_extra("tensorboard", exc) from None


class TensorBoardTracker:
    """Event files under `logdir`, as the module docstring lays them out (a `menas.track.base.Tracker`)."""

    def __init__(self, logdir: Path) -> None:
        require()
        self.logdir = Path(logdir)
        self.where = str(self.logdir)
        self._search: Any = None  # the search run's EventFileWriter while open
        self._key = ""

    def open(self, run_key: str, run_name: str, config: dict[str, Any]) -> set[int]:
        """Claims the log folder for this run (refusing another run's), drops half-written trial folders and
        opens the search's writer; returns the trials logged in full."""
        self._key = run_key
        self._claim()
        logged = self._complete_trials()
        search_dir = self.logdir / SEARCH_RUN
        new = not any(search_dir.glob("events.out.tfevents.*"))
        self._search = _writer(search_dir)
        if new:
            self._search.add_event(_event(0, time.time(), _text("search/config", _code(yaml.safe_dump(config)))))
            self._search.flush()
        return logged

    def _claim(self) -> None:
        """Writes this run's key in the log folder, or refuses a folder that holds another run's logs or other
        files."""
        owner = self.logdir / OWNER_MARK
        if owner.is_file() and owner.read_text().strip() == self._key:
            return
        if owner.is_file() or (self.logdir.is_dir() and any(self.logdir.iterdir())):
            raise UserError(
                f"track_uri: {str(self.logdir)!r} holds other files than this run's TensorBoard logs; choose an empty "
                "or new folder (one per run; `tensorboard --logdir` on their parent shows them together)"
            )
        self.logdir.mkdir(parents=True, exist_ok=True)
        owner.write_text(self._key + "\n")

    def _complete_trials(self) -> set[int]:
        """The trial ids whose folders are marked complete; unmarked trial folders are removed (logged again)."""
        logged = set()
        for folder in sorted(self.logdir.glob("trial-*")):
            mark = folder / LOGGED_MARK
            if mark.is_file() and mark.read_text().strip() == self._key:
                logged.add(int(folder.name.removeprefix("trial-")))
            elif folder.is_dir():
                shutil.rmtree(folder)
        return logged

    def log_trial(self, trial: TrialLog) -> None:
        """The trial's folder (hparams session, scores, series, status or error, lottery.json as text), marked
        complete once closed; then the search's curves at the trial's step."""
        from tensorboard.plugins.hparams import summary_v2

        folder = self.logdir / trial.name
        wall = trial.finished_at or time.time()
        writer = _writer(folder)
        hparams = {key: _hparam(value) for key, value in trial.params.items()}
        session = summary_v2.hparams_pb(hparams, trial_id=trial.name, start_time_secs=trial.started_at or wall)
        writer.add_event(_event(0, wall, session))
        writer.add_event(_event(0, wall, _scalars(trial.metrics)))
        for key, values in trial.series.items():
            for epoch, value in enumerate(values, 1):
                writer.add_event(_event(epoch, wall, _scalars({key: value})))
        for path in trial.files:
            writer.add_event(_event(0, wall, _text(f"trial/{path.name}", _code(path.read_text(), "json"))))
        if trial.error is not None:
            writer.add_event(_event(0, wall, _text("trial/error", trial.error)))
        writer.close()
        (folder / LOGGED_MARK).write_text(self._key + "\n")
        if trial.search:  # a failed trial before any done one has neither score
            self._search.add_event(_event(trial.step, wall, _scalars(trial.search)))
            self._search.flush()

    def log_end(self, end: SearchEnd) -> None:
        """The best trial and the Pareto front as texts and the front's size, at the last trial's step."""
        now = time.time()
        status = f"search {end.status} after {end.step} trials logged"
        best = "no trial done" if end.best is None else _code(json.dumps(end.best, indent=2), "json")
        self._search.add_event(_event(end.step, now, _text("search/best", f"{status}; best:\n\n{best}")))
        self._search.add_event(_event(end.step, now, _text("search/front", _front_table(end.front))))
        self._search.add_event(_event(end.step, now, _scalars({"search/front_size": float(len(end.front))})))
        self._search.flush()

    def close(self) -> None:
        if self._search is not None:
            self._search.close()
            self._search = None


def _writer(folder: Path) -> Any:
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    return EventFileWriter(str(folder))


def _event(step: int, wall_time: float, summary: Any) -> Any:
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)


def _scalars(values: dict[str, float]) -> Any:
    """A summary of plain scalars (`simple_value`: what `EventAccumulator.Scalars` and every TensorBoard read)."""
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in values.items()])


def _text(tag: str, markdown: str) -> Any:
    """A text-plugin summary (a string tensor, as `tf.summary.text` writes it), rendered as markdown."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2
    from tensorboard.plugins.text import metadata

    tensor = tensor_pb2.TensorProto(
        dtype="DT_STRING",
        string_val=[markdown.encode()],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
    )
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata("", ""), tensor=tensor)
    return summary_pb2.Summary(value=[value])


def _code(text: str, language: str = "yaml") -> str:
    """Markdown for text shown as is (TensorBoard renders text summaries as markdown)."""
    return f"```{language}\n{text.rstrip()}\n```"


def _hparam(value: Any) -> bool | int | float | str:
    """An HParams value: bool, number or string as it is; null and lists as their JSON text."""
    return value if isinstance(value, bool | int | float | str) else json.dumps(value)


def _front_table(front: list[dict[str, Any]]) -> str:
    """The Pareto front as a markdown table, member K being what `menas export --front K` exports."""
    if not front:
        return "no Pareto front: no trial done"
    columns = ["trial_id", "final_score", "final_macs", "final_params", "ticket", "final_genome"]
    extra = sorted({key for member in front for key in member if "latency" in key})
    header = ["K", *columns[:-1], *extra, columns[-1]]
    rows = [[str(k), *(_cell(member.get(c)) for c in header[1:])] for k, member in enumerate(front, 1)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _cell(value: Any) -> str:
    """A table cell: a number to 4 significant digits, "-" for none, "|" (genome strings) escaped."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|")
