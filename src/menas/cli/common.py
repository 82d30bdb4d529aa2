"""What the command modules share: the one-line-error argument parser, the exit codes, a console wide enough for
the tables, a progress display that also works in a log file, and the formats of optional numbers."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any

from rich.console import Console

EXIT_USAGE = 2
EXIT_FAILURE = 1


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (plus the usage) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"menas: error: {message}\n")


def make_console() -> Console:
    """Wide enough for the per-layer table even when stdout is a pipe (rich would assume 80 columns)."""
    return Console(highlight=False, width=max(shutil.get_terminal_size((160, 24)).columns, 140))


def make_progress(*extra: Any):
    """A rich progress bar on a terminal; one line per update when stderr is a file or a pipe (nohup, a cluster
    job's log), where a live bar would show nothing until the end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        return LogProgress(console)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *extra,
        console=console,
        transient=False,
    )


class LogProgress:
    """The part of rich's `Progress` the commands use, printing "[time] description  M/N, elapsed, ~left" once
    per change instead of redrawing a bar."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {
            "description": description,
            "total": total,
            "completed": completed,
            "start": time.monotonic(),
            "first": completed,
        }
        return task_id

    def update(
        self, task_id: int, completed: float | None = None, advance: float | None = None, description: str | None = None
    ) -> None:
        task = self.tasks[task_id]
        before = (task["description"], task["completed"])
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        if description is not None:
            task["description"] = description
        if (task["description"], task["completed"]) != before:
            self.console.print(
                f"[{time.strftime('%H:%M:%S')}] {task['description']}  {self._counts(task)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    @staticmethod
    def _counts(task: dict[str, Any]) -> str:
        elapsed = time.monotonic() - task["start"]
        done, total = task["completed"], task["total"]
        text = f"{done:g}/{total:g}, {elapsed / 60:.1f} min" if total else f"{done:g}, {elapsed / 60:.1f} min"
        if total and done > task["first"]:
            text += f", ~{elapsed / (done - task['first']) * (total - done) / 60:.1f} min left"
        return text


def pct(value: float | None) -> str:
    """A score in percent, "-" when there is none."""
    return "-" if value is None else f"{value:.2f}%"


def num(value: float | None) -> str:
    """A number with one decimal, "-" when there is none."""
    return "-" if value is None else f"{value:.1f}"
