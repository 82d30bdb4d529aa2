"""The trial record: everything a run knows about one trial, in one frozen dataclass.

`TrialRecord` is the row of the store's `trials` table (its columns are derived from the fields: `COLUMNS`), what
`run_trial` returns, what the strategy reads a projection of (`TrialOutcome.from_record`) and what `trials.csv`
and the report print. Adding a metric is one field here plus a migration in the store.

The fields come in three parts (`PART` in each field's metadata):

- **spec**: what the strategy asked for (genome, generation, role, parents and their trial ids, tickets or not,
  a bred child's gene origin, the recipe it trains with);
- **life**: its life cycle in the run (status, attempts, worker, error, timestamps);
- **measured**: what the trial measured. Scores are search-val top-1 in percent, one per phase:
  `trained_score` (the candidate after its training epochs), `ticket_recalibrated_score` and
  `ticket_finetuned_score` (the kept ticket right after BN recalibration, and after fine-tuning),
  `finetuned_score` (the candidate after fine-tuning when no ticket was kept). The search ranks by `fitness`:
  `final_score`, the final network's last score, or under `fidelity.score: tse` (the recipe's "score") `tse`, the
  training-speed estimate (minus the mean of the trial's own training losses).

One convention for "no ticket": `ticket` is None and so are the ticket's fields. The *final* network is the ticket
when one was kept, else the candidate (`final_genome`, `final_macs`, `final_params`, `final_latency_ms`: the
predicted latency of a search with a latency table, None without one). `measured_latency_ms` is the final
network's latency measured whole on the search's machine when the search ends (the final front's members only).
Image counts are raw (`train_images`, `calib_images`, `eval_images`, `raw_images`) or weighted as the compute
budget counts them (`budget_images`). No torch.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from menas.errors import check, is_int, is_real

SPEC, LIFE, MEASURED = "spec", "life", "measured"

TRIAL_STATUSES = ("queued", "running", "done", "failed")
IN_FLIGHT = ("queued", "running")

#: Forward-only images (BN calibration, scoring) that cost about as much as one training image: a training step
#: runs the forward pass and a backward pass of about twice its cost, so `compute.images` counts a calibrated or
#: scored image as 1/3 of a trained one (training-image equivalents).
FORWARD_IMAGES_PER_TRAINING_IMAGE = 3


def _spec(default: Any = None, **kw: Any) -> Any:
    return field(default=default, metadata={"part": SPEC}, **kw)


def _life(default: Any = None) -> Any:
    return field(default=default, metadata={"part": LIFE})


def _measured(default: Any = None) -> Any:
    return field(default=default, metadata={"part": MEASURED})


@dataclass(frozen=True)
class TrialRecord:
    """One trial. Times are Unix seconds, durations seconds, scores search-val top-1 in percent."""

    # -- spec: what the strategy asked for
    trial_id: int = _spec()
    genome: str = _spec()
    generation: int = _spec(0)
    role: str = _spec("sample")
    parents: tuple[str, ...] = _spec(())  # the parents' final genomes (their tickets when kept)
    parent_ids: tuple[int, ...] = _spec(())  # the trials those parents are the final networks of
    use_tickets: bool = _spec(False)
    origin: dict[str, Any] | None = _spec(None, hash=False)  # noqa: RUF009 (a field()) a bred child's gene origin (`Origin.to_dict()`)
    recipe: dict[str, Any] | None = _spec(None, hash=False)  # noqa: RUF009 (a field()) epochs, fine-tune epochs, inherit
    # -- life: the trial in the run
    status: str = _life("queued")
    attempts: int = _life(0)
    worker: str | None = _life()  # "host:pid" of the process that ran it
    error: str | None = _life()
    queued_at: float = _life(0.0)
    started_at: float | None = _life()
    finished_at: float | None = _life()
    # -- measured: the candidate
    macs: int | None = _measured()
    params: int | None = _measured()
    latency_ms: float | None = _measured()  # predicted inference latency, ms (a latency budget's table; else None)
    trained_score: float | None = _measured()  # after the training epochs
    finetuned_score: float | None = _measured()  # after fine-tuning, when no ticket was kept
    # -- measured: the ticket (all None when none was kept)
    ticket: str | None = _measured()
    ticket_macs: int | None = _measured()
    ticket_params: int | None = _measured()
    ticket_latency_ms: float | None = _measured()  # predicted, as `latency_ms` (pruned widths rounded up)
    ticket_recalibrated_score: float | None = _measured()  # right after weight inheritance and BN recalibration
    ticket_finetuned_score: float | None = _measured()  # after fine-tuning
    # -- measured: the final network's inference latency on the search's machine, measured whole at the latency
    # table's settings when the search ends (members of the final front; `menas.latency.front`); None until then
    measured_latency_ms: float | None = _measured()  # the median of the timed runs, ms
    # how: p90 and IQR (ms), runs, input shape, the settings (batch, threads, runtime, device, warm-up, runs), the
    # host, whether it is the table's host (`same_host`), the table's path and the time it was measured
    latency_measurement: dict[str, Any] | None = _measured(None)  # noqa: RUF009 (a field(), default None)
    # -- measured: files, time and work
    weights: str | None = _measured()  # the final network's weights, relative to the run folder
    train_s: float | None = _measured()  # the candidate's training epochs (scoring included)
    lottery_s: float | None = _measured()  # the ticket search: proposals, inheritance, calibration, scoring
    finetune_s: float | None = _measured()  # the fine-tune epochs (scoring included)
    eval_s: float | None = _measured()  # search-val scoring inside training and fine-tuning epochs
    epoch_s: tuple[float, ...] = _measured(())  # every epoch, training and fine-tuning, scoring included
    train_epoch_s: tuple[float, ...] = _measured(())  # training passes of the candidate's epochs (no scoring)
    # mean training loss of each of the candidate's training epochs (their sum is the training-speed estimate TSE)
    train_losses: tuple[float, ...] = _measured(())
    finetune_epoch_s: tuple[float, ...] = _measured(())  # training passes of the fine-tune epochs
    epochs: int | None = _measured()  # epochs run, training and fine-tuning
    finetune_epochs: int | None = _measured()
    images_per_epoch: int | None = _measured()  # search-train images per epoch
    train_images: int | None = _measured()  # images trained on (training and fine-tuning passes)
    calib_images: int | None = _measured()  # images passed for BN recalibration (tickets, inheritance)
    eval_images: int | None = _measured()  # search-val images scored
    # what weight inheritance did (None: the trial did not try): counts (copied, sliced, padded, fresh), the
    # fallback reason when it trained from scratch, epochs run and saved, calibration images, seconds
    inherited: dict[str, Any] | None = _measured(None)  # noqa: RUF009 (a field(), default None)

    def __post_init__(self) -> None:
        _check_fields(self)

    # -- derived --------------------------------------------------------------------------------------

    @property
    def replaced(self) -> bool:
        """Whether a lottery ticket replaced the candidate."""
        return self.ticket is not None

    @property
    def in_flight(self) -> bool:
        return self.status in IN_FLIGHT

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def rung(self) -> int:
        """The rung the trial's network reached (`menas.search.fidelity`; 0 without rungs)."""
        return int((self.recipe or {}).get("rung", 0))

    @property
    def final_genome(self) -> str:
        """The network the trial ends with: its ticket when it kept one, else the candidate."""
        return self.ticket if self.ticket is not None else self.genome

    @property
    def final_score(self) -> float | None:
        """The score the search ranks by: the ticket's after fine-tuning when a ticket was kept, else the
        candidate's last (after fine-tuning when it was fine-tuned, else after training)."""
        if self.ticket is not None:
            return self.ticket_finetuned_score
        return self.trained_score if self.finetuned_score is None else self.finetuned_score

    @property
    def tse(self) -> float | None:
        """The training-speed estimate: minus the mean training loss of the trial's own training epochs (a
        promotion's: the epochs it continued for), so higher is better; None without training epochs. Comparable
        between trials trained alike (one rung); the sum of the losses (Ru et al., 2021) ranks them the same."""
        return -sum(self.train_losses) / len(self.train_losses) if self.train_losses else None

    @property
    def ranks_by_tse(self) -> bool:
        """Whether selection ranks the trial by `tse`: its recipe says so (`fidelity.score: tse`)."""
        return (self.recipe or {}).get("score") == "tse"

    @property
    def fitness(self) -> float | None:
        """What selection ranks the trial by (`menas.search.ranking.rank_key`): `tse` when it `ranks_by_tse`, else
        `final_score`."""
        return self.tse if self.ranks_by_tse else self.final_score

    @property
    def final_macs(self) -> int | None:
        return self.ticket_macs if self.ticket is not None else self.macs

    @property
    def final_params(self) -> int | None:
        return self.ticket_params if self.ticket is not None else self.params

    @property
    def final_latency_ms(self) -> float | None:
        """The final network's predicted latency, ms; None when the search had no latency table."""
        return self.ticket_latency_ms if self.ticket is not None else self.latency_ms

    def latency_info(self) -> dict[str, Any] | None:
        """The final network's latency as status, export and `menas.load` show it: `predicted_ms` (the table's,
        None without one), `measured_ms` (None until measured) and `measurement` (how); None when the run
        predicted no latency and nothing was measured."""
        if self.final_latency_ms is None and self.measured_latency_ms is None:
            return None
        return {
            "predicted_ms": self.final_latency_ms,
            "measured_ms": self.measured_latency_ms,
            "measurement": self.latency_measurement,
        }

    @property
    def raw_images(self) -> int | None:
        """Every image the trial passed through a network (trained, calibrated, scored); None when not counted."""
        counted = [v for v in (self.train_images, self.calib_images, self.eval_images) if v is not None]
        return sum(counted) if counted else None

    @property
    def budget_images(self) -> float | None:
        """The trial's compute as `compute.images` counts it: trained images + forward-only ones /
        `FORWARD_IMAGES_PER_TRAINING_IMAGE` (`Store.compute_used` sums the same in SQL)."""
        if self.raw_images is None:
            return None
        forward = (self.calib_images or 0) + (self.eval_images or 0)
        return (self.train_images or 0) + forward / FORWARD_IMAGES_PER_TRAINING_IMAGE

    # -- plain data -----------------------------------------------------------------------------------

    def values(self, part: str | None = None) -> dict[str, Any]:
        """The fields (of one part, or all) as a name -> value mapping."""
        return {f.name: getattr(self, f.name) for f in FIELDS if part is None or f.metadata["part"] == part}


FIELDS: tuple[dataclasses.Field, ...] = dataclasses.fields(TrialRecord)
#: Field name -> its part (spec, life, measured).
PART = {f.name: f.metadata["part"] for f in FIELDS}
#: Derived values the CSV and the report print beside the fields.
DERIVED = (
    "final_genome",
    "final_score",
    "tse",
    "final_macs",
    "final_params",
    "final_latency_ms",
    "raw_images",
    "budget_images",
)


def _base_type(annotation: str) -> type:
    """The value type of a field annotation such as `int | None` or `tuple[float, ...]`."""
    hint = typing.get_type_hints(TrialRecord)[annotation]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = args[0]
    return typing.get_origin(hint) or hint


#: Field name -> the Python type of its values (tuple and dict fields are stored as JSON text).
TYPES: dict[str, type] = {f.name: _base_type(f.name) for f in FIELDS}
_SQL_TYPES = {int: "INTEGER", bool: "INTEGER", float: "REAL", str: "TEXT", tuple: "TEXT", dict: "TEXT"}


def column_sql(name: str) -> str:
    """The column definition of field `name` in the `trials` table."""
    if name == "trial_id":
        return "trial_id INTEGER PRIMARY KEY"
    default = next(f.default for f in FIELDS if f.name == name)
    sql = f"{name} {_SQL_TYPES[TYPES[name]]}"
    if default is not None:
        sql += f" NOT NULL DEFAULT {_sql_literal(default)}"
    elif name == "genome":
        sql += " NOT NULL"
    if name == "status":
        sql += f" CHECK (status IN ({', '.join(_sql_literal(s) for s in TRIAL_STATUSES)}))"
    return sql


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return f"'{json.dumps(list(value))}'"
    return "'" + str(value).replace("'", "''") + "'"


def to_row(record: TrialRecord, names: typing.Iterable[str]) -> dict[str, Any]:
    """Column values of `names` (tuples and dicts as JSON text, booleans as 0/1)."""
    row = {}
    for name in names:
        value = getattr(record, name)
        if isinstance(value, tuple):
            value = json.dumps(list(value))
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        elif isinstance(value, bool):
            value = int(value)
        row[name] = value
    return row


def from_row(row: dict[str, Any]) -> TrialRecord:
    """A record from a `trials` row; columns that are no field (left by an older schema) are ignored."""
    values = {}
    for name, value in row.items():
        if name not in TYPES:
            continue
        kind = TYPES[name]
        if value is not None and kind in (tuple, dict):
            value = json.loads(value)
            value = tuple(value) if kind is tuple else value
        elif value is not None and kind is bool:
            value = bool(value)
        values[name] = value
    return TrialRecord(**values)


def _check_fields(record: TrialRecord) -> None:
    """Types and ranges of every field, and the rules that tie them: a done trial has its candidate's score, MACs
    and params; a ticket has all its fields or none. Raises `UserError` naming the field."""
    for f in FIELDS:
        value, kind = getattr(record, f.name), TYPES[f.name]
        where = f"TrialRecord.{f.name}"
        if value is None:
            continue
        if kind is int:
            check(is_int(value) and value >= 0, where, value, "None or integers >= 0")
        elif kind is float:
            score = f.name.endswith("score")
            check(is_real(value) and (score or value >= 0), where, value, "finite numbers" + ("" if score else " >= 0"))
            object.__setattr__(record, f.name, float(value))
        elif kind is bool:
            check(isinstance(value, bool), where, value, "true or false")
        elif kind is str:
            check(isinstance(value, str) and (value != "" or f.name == "error"), where, value, "non-empty strings")
        elif kind is tuple:
            check(isinstance(value, list | tuple), where, value, "a sequence")
            item_ok, items = _ITEMS.get(f.name, (_is_seconds, "seconds >= 0"))
            check(all(item_ok(v) for v in value), where, value, f"a sequence of {items}")
            object.__setattr__(record, f.name, tuple(value))
        elif kind is dict:
            check(isinstance(value, dict), where, value, "None or a mapping")
    check(record.trial_id is not None and record.genome, "TrialRecord", record.trial_id, "a trial id and a genome")
    check(record.status in TRIAL_STATUSES, "TrialRecord.status", record.status, ", ".join(TRIAL_STATUSES))
    if record.status == "done":
        for name in ("trained_score", "macs", "params"):
            check(getattr(record, name) is not None, f"TrialRecord.{name}", None, "a value when status is done")
    ticket_fields = ("ticket_macs", "ticket_params", "ticket_finetuned_score")
    if record.ticket is None:
        of_ticket = (*ticket_fields, "ticket_recalibrated_score", "ticket_latency_ms")
        given = [n for n in of_ticket if getattr(record, n) is not None]
        check(not given, "TrialRecord.ticket", None, f"a genome string when {', '.join(given)} is given")
    elif record.status == "done":
        missing = [n for n in ticket_fields if getattr(record, n) is None]
        check(not missing, "TrialRecord.ticket", record.ticket, f"None, or a genome with {', '.join(missing)}")
    if record.finetuned_score is not None:
        check(record.ticket is None, "TrialRecord.finetuned_score", record.finetuned_score, "None with a ticket")


def _is_seconds(value: Any) -> bool:
    return is_real(value) and value >= 0


#: Tuple fields whose items are not seconds: how to check an item, and what the error calls it.
_ITEMS = {
    "parents": (lambda v: isinstance(v, str) and v != "", "genome strings"),
    "parent_ids": (lambda v: is_int(v) and v >= 0, "trial ids"),
}


__all__ = [
    "DERIVED",
    "FIELDS",
    "FORWARD_IMAGES_PER_TRAINING_IMAGE",
    "IN_FLIGHT",
    "LIFE",
    "MEASURED",
    "PART",
    "SPEC",
    "TRIAL_STATUSES",
    "TYPES",
    "TrialRecord",
    "column_sql",
    "from_row",
    "to_row",
]
