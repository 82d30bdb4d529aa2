"""Latency measured in several fresh processes, one after the other, and the median over them.

On a shared or noisy machine one network's median moves more between processes minutes apart than within one
process (torch eager on a 2-core VM: 9% against 1-2%; BENCHMARKS.md "How repeatable one measurement is"), so one
process's number cannot be trusted to 10%. The median over R processes is steadier, and the spread of their medians
says how far to trust it. Each round is `python -m menas.cli latency SOURCE ... --json OUT` (the same command a user
runs), so it loads nothing of this process; `menas latency --rounds R` and a search's final front
(`budget.latency_rounds`, `menas latency RUN --front --rounds R`) both measure this way.

Torch is never imported here: the rounds run in subprocesses.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from menas.config import MAX_LATENCY_ROUNDS
from menas.errors import UserError
from menas.latency.measure import Measurement, Settings

#: At most this many processes per measurement (`--rounds`, `budget.latency_rounds`).
MAX_ROUNDS = MAX_LATENCY_ROUNDS
#: A spread of the rounds' medians over this share of their median is warned about.
ROUND_SPREAD_WARN = 0.10

#: Runs one command line and returns its completed process (`subprocess.run`; tests pass a fake).
Runner = Callable[..., subprocess.CompletedProcess[str]]


def settings_flags(settings: Settings) -> list[str]:
    """The `menas latency` flags that reproduce `settings`."""
    return [
        "--batch", str(settings.batch), "--threads", str(settings.threads), "--runtime", settings.runtime,
        "--device", settings.device, "--warmup", str(settings.warmup), "--runs", str(settings.runs),
        "--min-time", repr(float(settings.min_time_s)),
    ]  # fmt: skip


def run_rounds(flags: Sequence[str], rounds: int, run: Runner | None = None) -> list[dict[str, Any]]:
    """`menas latency *flags --json OUT` run `rounds` times, each in a fresh Python process, one after the other
    (by `run`, default `subprocess.run`); their JSON records in order. A failed round is a one-line `UserError`
    with the round's last line of output."""
    run = run or subprocess.run
    records = []
    with tempfile.TemporaryDirectory(prefix="menas-latency-rounds-") as folder:
        for k in range(rounds):
            out = Path(folder) / f"round{k}.json"
            command = [sys.executable, "-m", "menas.cli", "latency", *flags, "--json", str(out)]
            done = run(command, capture_output=True, text=True)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout or "").strip().splitlines() or ["no output"]
                raise UserError(f"--rounds: round {k + 1} of {rounds} failed: {lines[-1]}")
            records.append(json.loads(out.read_text()))
    return records


def measurement_of(record: dict[str, Any]) -> Measurement:
    """A `Measurement` back from its JSON form (`Measurement.to_dict`, or a `menas latency --json` record)."""
    known = set(Measurement.__dataclass_fields__)
    data = {k: v for k, v in record.items() if k in known}
    data["settings"] = Settings(**record["settings"])
    data["input_shape"] = tuple(record["input_shape"])
    data["round_medians_ms"] = tuple(record.get("round_medians_ms", ()))
    return Measurement(**data)


def combine(rounds: Sequence[Measurement]) -> Measurement:
    """One measurement of R rounds: median, p90, IQR and mean are the medians of the rounds' own; the minimum the
    smallest; runs and timed seconds the totals; settings, shape and host the first round's; `rounds` and
    `round_medians_ms` say what it is made of."""
    if not rounds:
        raise ValueError("combine: no rounds")
    first = rounds[0]

    def median_of(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in rounds))

    return replace(
        first,
        median_ms=median_of("median_ms"),
        p90_ms=median_of("p90_ms"),
        iqr_ms=median_of("iqr_ms"),
        mean_ms=median_of("mean_ms"),
        min_ms=min(r.min_ms for r in rounds),
        runs=sum(r.runs for r in rounds),
        timed_s=sum(r.timed_s for r in rounds),
        rounds=len(rounds),
        round_medians_ms=tuple(r.median_ms for r in rounds),
    )


def spread_warning(spread: float, what: str) -> str | None:
    """The warning for rounds of one measurement that spread over ROUND_SPREAD_WARN (None when they do not);
    `what` names them ("the rounds", "trial 3's rounds")."""
    if spread <= ROUND_SPREAD_WARN:
        return None
    return (
        f"{what} spread over {100 * spread:.0f}% (more than {100 * ROUND_SPREAD_WARN:.0f}%): this machine's timing "
        "is noisy; compare latencies measured here only far apart, or measure on a quiet machine"
    )


def genome_flags(genome: str, input_shape: tuple[int, int, int], num_classes: int, settings: Settings) -> list[str]:
    """The `menas latency` command line of one round for a genome at (channels, height, width) and classes."""
    chans, size, _ = input_shape
    return [genome, "--input-size", str(size), "--in-chans", str(chans), "--num-classes", str(num_classes),
            *settings_flags(settings)]  # fmt: skip


__all__ = [
    "MAX_ROUNDS",
    "ROUND_SPREAD_WARN",
    "Runner",
    "combine",
    "genome_flags",
    "measurement_of",
    "run_rounds",
    "settings_flags",
    "spread_warning",
]
