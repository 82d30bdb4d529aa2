"""Predicted latency of a genome from a lookup table, and how good a latency predictor is.

The prediction is the sum of the genome's blocks' table entries (`latency.blocks.genome_blocks` on the table's
channel grid) corrected by a fitted overhead: `(scale + sum_per_mparam * params in millions) * sum + overhead_ms +
per_block_ms * blocks`, fitted on genomes measured whole by least squares of the relative error (the error the
+-10% goal counts; `Predictor.fit`). The per-block term is there because a block measured alone pays its own call
overhead (an onnxruntime session run, a Python call) that a whole network pays once, and the number of blocks varies
with depth. The parameter term is there because a block measured alone keeps its weights in cache and a whole
network of many weights does not: on onnxruntime at 32 px the measured / table-sum ratio rose with the
parameter count at Spearman 0.85 (median 0.79 at 1-2M parameters, 1.47 over 5M), and the term (with the relative
fit) took the predictor from 48% to 73% of genomes within +-10% there, from 66% to 74% on torch (BENCHMARKS.md,
"Latency predictor against measured latency"). Optionally a small
scikit-learn regression (gradient-boosted trees on the per-stage sums, MACs and depth) corrects what is left
(`regression="gbr"`). A genome block the table does not hold is a one-line `UserError` naming the block and its
place.

`evaluate` scores predictions against measurements the way the issue asks: the share within +-10%, RMSE, the
worst relative error and Spearman's rank correlation; `macs_factor` fits MACs to latency by one factor, so that
MACs can be scored as a predictor on the same genomes.

This module never imports torch (numpy, and scipy or scikit-learn inside the functions that need them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from menas.errors import UserError, check
from menas.latency.blocks import Block, genome_blocks
from menas.latency.table import LatencyTable, open_table
from menas.space.cost import count_macs, count_params
from menas.space.genome import Genome
from menas.space.spaces import SearchSpace

REGRESSIONS = ("none", "gbr")
#: Genomes at least, to fit the four coefficients of the overhead.
MIN_FIT = 4
#: The fitted overhead's coefficients, as a table stores them (`LatencyTable.fit`) ...
FIT_KEYS = ("scale", "overhead_ms", "per_block_ms")
#: ... and those a table fitted before they existed lacks (read as 0).
NEWER_FIT_KEYS = ("sum_per_mparam",)


@dataclass(frozen=True)
class Predictor:
    """Latency of genomes from `table`: `(scale + sum_per_mparam * params / 1e6) * table sum + overhead_ms +
    per_block_ms * blocks` (+ the regression's correction when fitted with one). Unfitted: the plain sum of the
    table's entries."""

    table: LatencyTable
    scale: float = 1.0
    overhead_ms: float = 0.0
    per_block_ms: float = 0.0
    regression: Any = None
    fitted_on: int = 0
    sum_per_mparam: float = 0.0  # the table sum's extra scale per million parameters (weights out of cache)

    def blocks(self, genome: Genome) -> list[tuple[str, Block]]:
        """The genome's blocks as the table keys them (channel counts on the table's grid), with their places."""
        t = self.table.target
        return genome_blocks(genome, t.input_size, t.in_chans, t.num_classes, self.table.grid)

    def table_sum(self, genome: Genome) -> float:
        """The sum of the genome's blocks' median latencies in the table, ms; a block the table does not hold is
        a `UserError` naming it."""
        total = 0.0
        for place, block in self.blocks(genome):
            latency = self.table.latency_ms(block)
            if latency is None:
                raise UserError(
                    f"{self.table.where()}: no entry for block {block.key} ({place} of genome {genome.to_str()}); "
                    f"the table holds {len(self.table.entries)} blocks of {self.table.target.describe()}"
                )
            total += latency
        return total

    def features(self, genome: Genome) -> list[float]:
        """What the optional regression reads: the table sum, the stem + ds, per-stage and head sums, MACs (M) and
        the number of layers."""
        sums: dict[str, float] = {}
        for place, block in self.blocks(genome):
            group = place.rsplit(".", 1)[0] if place.startswith("stages.") else place
            sums[group] = sums.get(group, 0.0) + (self.table.latency_ms(block) or 0.0)
        stages = [sums.get(f"stages.{i}", 0.0) for i in range(len(self.table.space.stages))]
        t = self.table.target
        macs = count_macs(genome, t.input_size, t.in_chans, t.num_classes) / 1e6
        return [self.table_sum(genome), sums["stem"] + sums["ds"], *stages, sums["head"], macs, float(genome.depth)]

    def mparams(self, genome: Genome) -> float:
        """The genome's parameters in millions, at the table's input channels and classes."""
        t = self.table.target
        return count_params(genome, t.in_chans, t.num_classes) / 1e6

    def linear(self, genome: Genome) -> float:
        """The table sum with the fitted overhead, ms (no regression)."""
        n_blocks = genome.depth + 3  # stem, ds, the layers, head
        scale = self.scale + (self.sum_per_mparam * self.mparams(genome) if self.sum_per_mparam else 0.0)
        return scale * self.table_sum(genome) + self.overhead_ms + self.per_block_ms * n_blocks

    def predict(self, genome: Genome) -> float:
        """The predicted latency of the genome, ms."""
        value = self.linear(genome)
        if self.regression is not None:
            value += float(self.regression.predict([self.features(genome)])[0])
        return value

    def latency_ms(self, genome: Genome) -> float:
        """What a latency budget compares and a trial records: `predict`, never below 0 (a fitted negative
        constant or per-block term could take a tiny genome below)."""
        return max(0.0, self.predict(genome))

    def fit(self, genomes: Sequence[Genome], measured_ms: Sequence[float], regression: str = "none") -> Predictor:
        """A predictor whose overhead (scale, constant, per block, per million parameters) is fitted to the
        measured latencies of whole genomes by least squares of the relative error, and with `regression="gbr"` a
        gradient-boosted correction of what is left."""
        import numpy as np

        check(regression in REGRESSIONS, "regression", regression, ", ".join(REGRESSIONS))
        check(
            len(genomes) == len(measured_ms), "measured latencies", len(measured_ms), f"{len(genomes)} (one a genome)"
        )
        check(len(genomes) >= MIN_FIT, "measured genomes", len(genomes), f">= {MIN_FIT}")
        sums = [self.table_sum(g) for g in genomes]
        target = np.asarray(measured_ms, dtype=float)
        check(bool(np.all(target > 0)), "measured latencies", "a value <= 0", "milliseconds > 0")
        rows = [[s, 1.0, g.depth + 3, s * self.mparams(g)] for s, g in zip(sums, genomes, strict=True)]
        weights = 1.0 / target  # relative error: a 0.1 ms network counts as much as a 3 ms one
        design = np.array(rows) * weights[:, None]
        (scale, overhead, per_block, per_mparam), *_ = np.linalg.lstsq(design, target * weights, rcond=None)
        fitted = replace(self, scale=float(scale), overhead_ms=float(overhead), per_block_ms=float(per_block),
                         sum_per_mparam=float(per_mparam), regression=None, fitted_on=len(genomes))  # fmt: skip
        if regression == "gbr":
            residual = target - np.array([fitted.linear(g) for g in genomes])
            fitted = replace(fitted, regression=_gbr([fitted.features(g) for g in genomes], residual))
        return fitted

    @classmethod
    def from_table(cls, table: LatencyTable) -> Predictor:
        """The predictor stored with `table`: its fitted overhead (`save_fit`) when it has one, else the plain
        sum of its entries."""
        if table.fit is None:
            return cls(table)
        try:
            coefficients = [float(table.fit[k]) for k in FIT_KEYS]
            newer = [float(table.fit.get(k, 0.0)) for k in NEWER_FIT_KEYS]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{table.where()}: its fit is damaged, allowed: numbers {', '.join(FIT_KEYS)}") from None
        if not all(math.isfinite(c) for c in coefficients + newer):
            raise UserError(f"{table.where()}: its fit {coefficients + newer} is not finite")
        return cls(table, *coefficients, fitted_on=int(table.fit.get("fitted_on", 0)),
                   **dict(zip(NEWER_FIT_KEYS, newer, strict=True)))  # fmt: skip

    def save_fit(self) -> Path:
        """Stores the fitted overhead (scale, constant, per block, per million parameters) in the table's file,
        where a latency budget (`open_predictor`) reads it. A regression is not stored: refused in one line."""
        if self.regression is not None:
            raise UserError("regression: a fitted regression is not stored in a table; fit with regression none")
        self.table.fit = {k: getattr(self, k) for k in (*FIT_KEYS, *NEWER_FIT_KEYS, "fitted_on")}
        return self.table.save()

    def to_dict(self) -> dict[str, Any]:
        """The fitted coefficients (the regression, if any, is named, not serialised)."""
        return {
            "scale": self.scale,
            "overhead_ms": self.overhead_ms,
            "per_block_ms": self.per_block_ms,
            "sum_per_mparam": self.sum_per_mparam,
            "regression": None if self.regression is None else type(self.regression).__name__,
            "fitted_on": self.fitted_on,
            "table": str(self.table.path) if self.table.path else None,
            "target": asdict(self.table.target),
        }


def open_predictor(path: str | Path, space: SearchSpace, input_size: int, in_chans: int, num_classes: int) -> Predictor:
    """The predictor a latency budget uses (`budget.latency_table`): the table at `path`, refused in one line
    unless measured for this space and input shape (`open_table`) and complete (a search prices every genome it
    samples), with the overhead stored in it (`Predictor.from_table`)."""
    table = open_table(path, space, input_size, in_chans, num_classes)
    if not table.complete:
        raise UserError(
            f"{table.where()} holds {len(table.entries)} of the space's {table.total} blocks, "
            f"allowed: a complete table; finish it with `menas latency-table --out {table.path}` and the settings "
            f"it was started with ({table.target.describe()})"
        )
    return Predictor.from_table(table)


def _gbr(features: list[list[float]], residual: Any) -> Any:
    """A small gradient-boosted tree ensemble on the features (shallow trees, few of them: a few hundred genomes
    fit it)."""
    try:
        from sklearn.ensemble import GradientBoostingRegressor
    except ImportError:
        raise UserError("regression gbr: needs scikit-learn, not installed: pip install scikit-learn") from None
    model = GradientBoostingRegressor(n_estimators=100, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=0)
    return model.fit(features, residual)


@dataclass(frozen=True)
class Evaluation:
    """How well predictions match measurements: the share within +-`tolerance` (relative to the measurement),
    RMSE in ms, the worst and mean relative errors, and Spearman's rank correlation."""

    n: int
    tolerance: float
    within: float
    rmse_ms: float
    worst_rel_error: float
    mean_rel_error: float
    spearman: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self, label: str) -> str:
        """One line: "LABEL: 97.0% within +-10% of 200, RMSE 0.041 ms, worst 12.3%, Spearman 0.981"."""
        return (
            f"{label}: {self.within:.1%} within +-{self.tolerance:.0%} of {self.n}, RMSE {self.rmse_ms:.4g} ms, "
            f"worst {self.worst_rel_error:.1%}, mean {self.mean_rel_error:.1%}, Spearman {self.spearman:.3f}"
        )


def evaluate(predicted: Sequence[float], measured: Sequence[float], tolerance: float = 0.10) -> Evaluation:
    """Scores predicted latencies against measured ones (same order, measured > 0)."""
    import numpy as np

    check(len(predicted) == len(measured) and len(measured) >= 1, "predictions", len(predicted),
          f"{len(measured)} (one a measurement, at least one)")  # fmt: skip
    pred, meas = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    check(bool((meas > 0).all()), "measured latencies", float(meas.min()), "numbers > 0")
    rel = np.abs(pred - meas) / meas
    return Evaluation(
        n=len(meas),
        tolerance=tolerance,
        within=float((rel <= tolerance).mean()),
        rmse_ms=float(np.sqrt(((pred - meas) ** 2).mean())),
        worst_rel_error=float(rel.max()),
        mean_rel_error=float(rel.mean()),
        spearman=spearman(pred, meas),
    )


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged); NaN for fewer than 2 points or a constant sequence."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def macs_factor(macs: Sequence[float], measured_ms: Sequence[float]) -> float:
    """The least-squares factor (ms per MAC, through the origin) that turns MACs into latency: MACs as a latency
    predictor, fitted like the table's overhead."""
    num = sum(m * y for m, y in zip(macs, measured_ms, strict=True))
    den = sum(m * m for m in macs)
    check(den > 0, "MACs", den, "a positive count")
    return num / den
