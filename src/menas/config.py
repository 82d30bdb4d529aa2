"""Configuration dataclasses and their strict (de)serialisation.

This module owns every user-settable knob as a dataclass with commented defaults (nanoGPT style), and re-exports
the generic machinery (`menas.config_io`) that reads them from YAML-like mappings (`from_dict`), writes them back
(`to_dict`), and applies `key.sub=value` overrides (`apply_override`). Reading is strict: an unknown key, a value
of the wrong type or a value outside the allowed set is a one-line `UserError` naming the key, the value and what
is allowed. This is
the validation edge for what a user writes; the library checks what a Python caller passes at its own entry points
(see ARCHITECTURE.md, "Errors"), with the same bounds.

Imports only `menas.errors` and `menas.config_io` from menas; never imports torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from typing import Any, ClassVar, Literal, TypeVar

from menas.config_io import apply_override, dump_yaml, from_dict, load_yaml, to_dict  # noqa: F401 (re-exported)
from menas.errors import UserError, check, is_int

T = TypeVar("T")
#: `budget.latency_rounds` (and `menas latency --rounds`): at most this many processes per measurement.
MAX_LATENCY_ROUNDS = 20

DatasetName = Literal["fashion-mnist", "cifar10", "cifar100", "imagefolder", "digits", "synthetic"]
OptimizerName = Literal["rmsproptf", "sgd"]
ScheduleName = Literal["step", "cosine"]
AmpMode = Literal["auto", "off", "bf16", "fp16"]
RecipeName = Literal["short", "paper"]
RetrainRecipeName = Literal["short", "paper", "transfer"]  # RETRAIN_RECIPES' names


# --------------------------------------------------------------------------------------------- configs


@dataclasses.dataclass
class DataConfig:
    """Which dataset, how it is split for the search, and how batches are made."""

    dataset: DatasetName = "fashion-mnist"
    root: str | None = None  # None: the dataset's default (fashion-mnist: /usr/share/datasets/fashion-mnist)
    search_train_fraction: float = 0.1  # per class, of the training set (the paper: 10% of ImageNet-1K's classes)
    search_val_fraction: float = 0.05  # per class, held out from the training set, disjoint from search-train
    input_size: int | None = None  # square side in px; None: 32 (224 for imagefolder); resized once, not per batch
    batch_size: int = 128  # training batch; evaluation uses eval_batch_size
    eval_batch_size: int = 512
    seed: int = 0  # split indices and per-epoch shuffling/augmentation derive from this
    workers: int | None = None  # DataLoader worker processes (imagefolder only); null: min(4, CPU cores - 1)
    augment: bool = True  # master switch for training augmentation
    crop_padding: int | None = None  # random-crop padding in px for in-memory data; None: input_size // 8
    hflip: bool | None = None  # random horizontal flip; None: on, except for digits and synthetic
    randaugment: str | None = None  # timm RandAugment spec, e.g. "rand-m9-mstd0.5"; None: off
    random_erasing: float = 0.0  # probability of erasing a random box of a training image (timm's RandomErasing)

    def __post_init__(self) -> None:
        _check_fraction("data.search_train_fraction", self.search_train_fraction)
        _check_fraction("data.search_val_fraction", self.search_val_fraction)
        if self.search_train_fraction + self.search_val_fraction > 1.0 + 1e-9:
            total = self.search_train_fraction + self.search_val_fraction
            raise UserError(
                f"data.search_train_fraction + data.search_val_fraction: got {total:g}, allowed: <= 1 (disjoint)"
            )
        _check_min("data.input_size", self.input_size, 1, optional=True)
        _check_min("data.batch_size", self.batch_size, 1)
        _check_min("data.eval_batch_size", self.eval_batch_size, 1)
        _check_min("data.workers", self.workers, 0, optional=True)
        _check_min("data.crop_padding", self.crop_padding, 0, optional=True)
        _check_range("data.random_erasing", self.random_erasing, 0.0, 1.0)


@dataclasses.dataclass
class TrainConfig:
    """How a candidate is trained: optimizer, schedule, regularisation, precision, checkpoints.

    Two named recipes (`recipe`; `TrainConfig.preset(name)`, or `recipe: paper` in a `train:` section, whose other
    keys then override the preset's values):

    * "short" (the defaults below): timm's RMSpropTF at a peak lr of 0.004 at batch 128 (0.032 at 1024, scaled
      linearly), a 0.3-epoch warmup and a cosine decay to 0. It trains in 2-3 epochs (about 70% search-val top-1
      on Fashion-MNIST after 2 epochs, see BENCHMARKS.md "Default recipe").
    * "paper": the paper's search recipe (section 3.1: RMSProp with momentum 0.9, lr warmed up from 0 to 0.064 at
      a total batch of 1024 and decayed by 0.97 every 2.4 epochs), meant for 30+ epochs on ImageNet; over 2
      epochs on a small dataset it can end near chance.

    timm's EfficientNet/MobileNetV3 recipe for the rest (eps 1e-3, weight decay 1e-5, label smoothing 0.1).
    """

    #: `recipe` sets the other defaults (`preset`), in config files and overrides too (`menas.config_io`)
    recipe_sets_defaults: ClassVar[bool] = True
    recipe: RecipeName = "short"  # which preset the defaults come from (see the class docstring)
    epochs: int = 3  # early-stop training: a fixed number of epochs
    optimizer: OptimizerName = "rmsproptf"  # timm's RMSpropTF (TF-style eps); "sgd" is Nesterov SGD
    lr: float | None = None  # peak learning rate; None: lr_base * batch_size / lr_base_batch
    lr_base: float = 0.032  # peak lr (0.004 at batch 128) ...
    lr_base_batch: int = 1024  # ... at this total batch size (linear scaling rule)
    momentum: float = 0.9
    opt_eps: float = 1e-3  # RMSpropTF epsilon (timm's EfficientNet recipe)
    schedule: ScheduleName = "cosine"  # "step": decay_rate every decay_epochs; "cosine": to 0 at the last step
    warmup_epochs: float = 0.3  # linear warmup from ~0 to the peak lr, in epochs (fractions allowed)
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    weight_decay: float = 1e-5  # not applied to biases and norm parameters
    label_smoothing: float = 0.1
    ema: bool = False  # evaluate an exponential moving average of the weights
    ema_decay: float = 0.9999  # per step at ema_base_batch; rescaled so the decay per image stays the same
    ema_base_batch: int = 1024
    ema_warmup: bool = False  # timm's EMA warmup: decay 1 - (1 + update)^(-2/3) until it reaches ema_decay
    threads: int | None = None  # torch.set_num_threads for the trial; None: leave torch's setting
    amp: AmpMode = "auto"  # "auto": bf16 (or fp16 without bf16 support) on CUDA, off on CPU
    channels_last: bool = True  # faster training on CPU for MobileNetV3 at 32 px (BENCHMARKS.md, "Training")
    tune_allocator: bool = True  # CPU: keep freed activations in glibc's heap (process-wide); 0-20% faster
    seed: int = 0  # torch generator seed for dropout etc.; data order comes from DataConfig.seed
    eval_every: int = 1  # score search-val every N epochs (the last epoch is always scored)
    kd_alpha: float = 0.5  # knowledge distillation (only with a teacher): weight of the teacher's soft targets
    kd_temperature: float = 4.0  # ... and the softmax temperature T of both sides

    def __post_init__(self) -> None:
        _check_min("train.epochs", self.epochs, 1)
        _check_range("train.kd_alpha", self.kd_alpha, 0.0, 1.0)
        _check_min("train.kd_temperature", self.kd_temperature, 0.0, strict=True)
        _check_min("train.lr", self.lr, 0.0, optional=True, strict=True)
        _check_min("train.lr_base", self.lr_base, 0.0, strict=True)
        _check_min("train.lr_base_batch", self.lr_base_batch, 1)
        _check_range("train.momentum", self.momentum, 0.0, 1.0)
        _check_min("train.opt_eps", self.opt_eps, 0.0, strict=True)
        _check_min("train.warmup_epochs", self.warmup_epochs, 0.0)
        _check_min("train.decay_epochs", self.decay_epochs, 0.0, strict=True)
        _check_range("train.decay_rate", self.decay_rate, 0.0, 1.0)
        _check_min("train.weight_decay", self.weight_decay, 0.0)
        _check_range("train.label_smoothing", self.label_smoothing, 0.0, 1.0)
        _check_range("train.ema_decay", self.ema_decay, 0.0, 1.0)
        _check_min("train.ema_base_batch", self.ema_base_batch, 1)
        _check_min("train.threads", self.threads, 1, optional=True)
        _check_min("train.eval_every", self.eval_every, 1)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> TrainConfig:
        """The named recipe ("short" or "paper", see the class docstring) with `changes` applied."""
        if name not in TRAIN_RECIPES:
            raise UserError(f"train.recipe: got {name!r}, allowed: {', '.join(TRAIN_RECIPES)}")
        return cls(**{"recipe": name, **TRAIN_RECIPES[name], **changes})

    def peak_lr(self, batch_size: int) -> float:
        """The peak learning rate for a batch size: `lr` if set, else scaled linearly from `lr_base`."""
        return self.lr if self.lr is not None else self.lr_base * batch_size / self.lr_base_batch

    def finetune(self, epochs: int, batch_size: int, lr_scale: float) -> TrainConfig:
        """The recipe for fine-tuning an inherited network: `epochs`, no warmup, `lr_scale` x the peak lr."""
        return dataclasses.replace(self, epochs=epochs, warmup_epochs=0.0, lr=self.peak_lr(batch_size) * lr_scale)

    def ema_decay_for(self, batch_size: int) -> float:
        """EMA decay per step at this batch size, so that the decay per training image is unchanged."""
        return self.ema_decay ** (batch_size / self.ema_base_batch)


#: Values of each named training recipe that differ from the dataclass defaults (which are the "short" recipe).
TRAIN_RECIPES: dict[str, dict[str, Any]] = {
    "short": {},
    "paper": {"lr_base": 0.064, "schedule": "step", "warmup_epochs": 1.0},
}


#: `lottery.policy` values: how a ticket is chosen among the proposals (see `menas.prune.tickets.choose_ticket`).
LOTTERY_POLICIES = ("tolerance", "always")


@dataclasses.dataclass(frozen=True)
class LotteryConfig:
    """How tickets are searched. Defaults follow the paper's scale (50 proposals); 4 calibration batches rank
    proposals as more batches do (BENCHMARKS.md, "Lottery tickets")."""

    proposals: int = 50  # P random pruning proposals per trained candidate
    mid_rates: tuple[float, float] = (0.0, 0.5)  # per-layer pruning rate of expanded channels, drawn uniformly
    stage_rates: tuple[float, float] = (0.0, 0.0)  # per-stage output-channel rate; (0, 0) = stage widths kept
    macs_keep: tuple[float, float] | None = None  # e.g. (0.5, 0.9): rates scaled so MACs keep this share
    importance: str = "l1"  # "l1": keep channels with the largest filter L1 norm; "first": paper's Eq. 1
    calib_batches: int = 4  # K fixed search-train batches for BN recalibration
    score_images: int = 512  # first-round scoring subset of search-val (successive halving); 0 = all
    rescore_top: int = 5  # proposals re-scored on all of search-val
    tolerance: float = 1.0  # percentage points: a ticket must score >= parent's recalibrated top-1 - tolerance
    # which proposal replaces the candidate: "tolerance" = the best one within `tolerance` of the parent (else
    # the candidate stays); "always" = the paper's reading, the best proposal smaller than the parent replaces
    # it whatever its score (pair it with `macs_keep` so every proposal is really smaller). Default "tolerance":
    # on a short proxy "always" shrinks networks at a cost in accuracy (BENCHMARKS.md, "Lottery policy").
    policy: str = "tolerance"
    amp: str = "auto"  # "auto": bf16 scoring on CUDA and on CPUs with native bf16; "bf16"; "off"
    divisor: int = 8  # pruned channel counts are multiples of this
    finetune_lr_scale: float = 0.1  # fine-tuning peak lr = this x the training peak lr (no warmup)

    def __post_init__(self) -> None:
        if not isinstance(self.proposals, int) or self.proposals < 1:
            raise UserError(f"lottery.proposals: got {self.proposals!r}, allowed: integers >= 1")
        for name in ("mid_rates", "stage_rates"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi < 1.0:
                raise UserError(f"lottery.{name}: got {(lo, hi)!r}, allowed: 0 <= low <= high < 1")
        if self.macs_keep is not None:
            lo, hi = self.macs_keep
            if not 0.0 < lo <= hi <= 1.0:
                raise UserError(f"lottery.macs_keep: got {self.macs_keep!r}, allowed: 0 < low <= high <= 1")
        if self.policy not in LOTTERY_POLICIES:
            raise UserError(f"lottery.policy: got {self.policy!r}, allowed: {', '.join(LOTTERY_POLICIES)}")
        if self.importance not in ("l1", "first"):
            raise UserError(f"lottery.importance: got {self.importance!r}, allowed: l1, first")
        if self.amp not in ("auto", "bf16", "off"):
            raise UserError(f"lottery.amp: got {self.amp!r}, allowed: auto, bf16, off")
        for name in ("calib_batches", "rescore_top", "divisor"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"lottery.{name}: got {getattr(self, name)!r}, allowed: integers >= 1")
        if not 0.0 < self.finetune_lr_scale <= 10.0:
            raise UserError(f"lottery.finetune_lr_scale: got {self.finetune_lr_scale!r}, allowed: 0 < scale <= 10")
        if not isinstance(self.score_images, int) or self.score_images < 0:
            raise UserError(f"lottery.score_images: got {self.score_images!r}, allowed: integers >= 0")


StrategyName = Literal["menas", "menas-no-tickets", "menas-inherit", "random", "evolution"]
#: Strategies that breed children with gene origins, so they can inherit their parents' weights (`inherit`).
INHERITING_STRATEGIES = ("menas", "menas-no-tickets", "menas-inherit")
ExecutorKind = Literal["local", "pool", "ray"]
#: What selection optimises (`strategy.objective`; `menas.search.strategies.OBJECTIVES`).
ObjectiveName = Literal["accuracy", "pareto"]
#: Where a search logs its trials (`track`; `menas.track.hook`): none, or a tracker and the extra it needs.
TrackerName = Literal["none", "tensorboard", "mlflow"]
#: Where a search with rungs cuts its lottery tickets (`fidelity.tickets`; `menas.search.fidelity.TICKET_PLACES`).
TicketPlace = Literal["first", "top"]
#: What selection ranks by (`fidelity.score`; `menas.search.fidelity.SCORES`).
ScoreName = Literal["val", "tse"]


@dataclasses.dataclass
class BudgetConfig:
    """The compute budget candidates are sampled under, at the dataset's input shape. Numbers or strings with
    K/M/G suffixes ("150M"); null means unbounded. A latency bound is predicted from a per-block lookup table
    measured on the target (docs/latency.md): latency_ms_max and latency_table go together."""

    macs_min: float | str = 0  # multiply-accumulates of conv and linear layers (the paper's "FLOPs")
    macs_max: float | str | None = None
    params_max: float | str | None = None
    # predicted inference latency bound in ms on the table's target (sampling, mutation, repair and tickets keep to it)
    latency_ms_max: float | None = None
    # the lookup table's JSON file (`menas latency-table`) for this space and input size, complete; with its fitted
    # overhead when it has one (bench/bench_latency.py --save-fit), else the plain sum of its blocks. Also what the
    # `latency` objective of strategy.pareto is predicted from (then latency_ms_max may stay null); at the end the
    # final front is measured on this machine at the table's settings
    latency_table: str | None = None
    # the final front's latency: the median over this many fresh processes a network (1..20). On a noisy machine
    # (a shared VM) one process's median moves up to ~10% (docs/latency.md); 3 makes it repeatable there
    latency_rounds: int = 1

    def __post_init__(self) -> None:
        _check_min("budget.latency_ms_max", self.latency_ms_max, 0.0, optional=True, strict=True)
        check(
            is_int(self.latency_rounds) and 1 <= self.latency_rounds <= MAX_LATENCY_ROUNDS,
            "budget.latency_rounds",
            self.latency_rounds,
            f"integers 1..{MAX_LATENCY_ROUNDS}",
        )

    def check_latency(self, latency_objective: bool = False) -> None:
        """Both latency keys or neither; with `latency_objective` (`strategy.pareto` names latency) the table is
        required and the bound optional. Checked when a search builds its budget, not on construction, so that
        `--set budget.latency_ms_max=2 --set budget.latency_table=T` (one key at a time) is accepted."""
        if latency_objective:
            if self.latency_table is None:
                raise UserError(
                    "budget.latency_table: got null with latency in strategy.pareto, allowed: a lookup table of "
                    "`menas latency-table` for this space and input size (it predicts the latency objective)"
                )
            return
        if (self.latency_ms_max is None) != (self.latency_table is None):
            missing, given = ("latency_table", "latency_ms_max")[:: 1 if self.latency_table is None else -1]
            raise UserError(
                f"budget.{missing}: got null with budget.{given}, allowed: both set (a bound in ms and the lookup "
                "table it is predicted from) or neither"
            )


@dataclasses.dataclass
class ComputeConfig:
    """The search's compute budget, enforced by the engine for every strategy: once it is used, no new trial
    starts (trials already running finish and count). Derived from the store, so a resumed run keeps its count.
    null means unbounded."""

    # training-image equivalents (K/M/G suffixes allowed): each image trained or fine-tuned on counts 1, each image
    # calibrated with or scored 1/3 (a forward pass costs about a third of forward + backward; see
    # `record.FORWARD_IMAGES_PER_TRAINING_IMAGE`)
    images: float | str | None = None
    # trial seconds: the sum of the trials' wall seconds (a pool of W workers spends about trial_s / W of wall time)
    trial_s: float | None = None

    def __post_init__(self) -> None:
        if self.trial_s is not None and not (isinstance(self.trial_s, int | float) and self.trial_s > 0):
            raise UserError(f"compute.trial_s: got {self.trial_s!r}, allowed: null or numbers > 0")


@dataclasses.dataclass
class StrategyConfig:
    """Which search strategy and its settings (unused keys are ignored by the other strategies)."""

    # menas | menas-no-tickets (ablation) | menas-inherit (menas with `inherit` on) | random | evolution (regularized)
    name: StrategyName = "menas"
    population: int = 60  # MENAS/evolution population; random search: trials per reporting generation
    generations: int = 5  # MENAS generations (the paper: 5)
    parents: int = 20  # MENAS: top-K tickets that breed the next generation
    keep_largest: float = 0.0  # MENAS: share of parents taken as the largest models (against collapse; 0.25: no gain)
    mutation_prob: float = 0.08  # per gene (the paper: 0.08)
    crossover_share: float = 0.5  # MENAS: share of offspring made by crossover, the rest by mutation
    trials: int = 200  # random search: number of trials
    sample_size: int = 10  # evolution: tournament size
    cycles: int = 150  # evolution: children after the initial population
    # what MENAS' parents and evolution's tournament winners are chosen by. accuracy: the best final search-val
    # top-1 (then fewer MACs). pareto: NSGA-II over final top-1 (up) and final MACs (down): lower Pareto front,
    # then larger crowding distance; the run's result is then its front (`menas status`, `menas export --front K`)
    objective: ObjectiveName = "accuracy"
    # with objective pareto: what the front trades, accuracy first, then one or more costs (macs, params, latency:
    # the predicted latency, which needs budget.latency_table)
    pareto: list[str] = dataclasses.field(default_factory=lambda: ["accuracy", "macs"])

    def __post_init__(self) -> None:
        for name in ("population", "generations", "parents", "trials", "sample_size", "cycles"):
            _check_min(f"strategy.{name}", getattr(self, name), 1)
        if self.objective not in typing.get_args(ObjectiveName):
            raise UserError(
                f"strategy.objective: got {self.objective!r}, allowed: {', '.join(typing.get_args(ObjectiveName))}"
            )
        costs = ("macs", "params", "latency")  # `menas.search.pareto.OBJECTIVES`
        pareto = self.pareto
        if not (
            isinstance(pareto, list | tuple)
            and len(pareto) >= 2
            and pareto[0] == "accuracy"
            and len(set(pareto)) == len(pareto)
            and set(pareto[1:]) <= set(costs)
        ):
            raise UserError(
                f"strategy.pareto: got {pareto!r}, allowed: [accuracy, then one or more of {', '.join(costs)}], "
                "e.g. [accuracy, macs]"
            )
        self.pareto = list(pareto)
        if not 0.0 <= self.keep_largest < 1.0:  # as MENAS: some parents are always taken by score
            raise UserError(f"strategy.keep_largest: got {self.keep_largest!r}, allowed: 0 <= share < 1")
        _check_range("strategy.mutation_prob", self.mutation_prob, 0.0, 1.0)
        _check_range("strategy.crossover_share", self.crossover_share, 0.0, 1.0)


@dataclasses.dataclass
class InheritConfig:
    """Individual weight sharing (`menas.search.inherit`): a bred child starts from its parents' final weights (the
    ticket's when a ticket replaced the parent), mapped tensor by tensor along its gene origin, BN recalibrated,
    then trains `epochs` instead of `train.epochs`. A parent whose weights file is missing or unusable makes the
    child train from scratch (an `inherit_fallback` event), never a failed trial. Off by default: at equal search
    compute it did not find better networks (BENCHMARKS.md, "Weight sharing at equal search compute")."""

    enabled: bool = False  # the one switch; with strategy menas or menas-no-tickets (`menas-inherit` sets it)
    epochs: int | None = None  # training epochs of an inheriting child; null = train.epochs; 0 = recalibrate only
    shrink: float = 1.0  # shrink-perturb: inherited = shrink * parent + perturb * fresh (1, 0: plain copy)
    perturb: float = 0.0
    importance: str = "l1"  # which channels a narrower child keeps: "l1" (the lottery's order) or "first"

    def __post_init__(self) -> None:
        _check_min("inherit.epochs", self.epochs, 0, optional=True)
        if not 0.0 < self.shrink <= 1.0:
            raise UserError(f"inherit.shrink: got {self.shrink!r}, allowed: 0 < shrink <= 1")
        _check_range("inherit.perturb", self.perturb, 0.0, 1.0)
        if self.importance not in ("l1", "first"):
            raise UserError(f"inherit.importance: got {self.importance!r}, allowed: l1, first")


@dataclasses.dataclass
class FidelityConfig:
    """Multi-fidelity selection and the search's noise estimate (`menas.search.fidelity`), for every strategy
    (regularized evolution then breeds `population` children at a time). With `rungs`, every child trains
    `rungs[0]` epochs (instead of `train.epochs`; then tickets and fine-tuning as always); the best 1/eta of a
    generation's networks continue from their own weights to `rungs[1]` epochs, the best 1/eta of those to
    `rungs[2]`, and so on. Selection ranks a network by its highest rung reached, then its score there. Every rung
    is a trial (resumable, counted by `compute`)."""

    rungs: list[int] | None = None  # cumulative training epochs per rung, e.g. [1, 3, 9]; null: one rung
    eta: int = 3  # the best ceil(n / eta) of a rung's n networks continue to the next
    # a continuation's peak lr as a share of the training peak lr (cosine to 0, no warmup: a warm restart)
    lr_scale: float = 1.0
    # children per generation (the best) trained again from scratch with another seed: `menas status` and the
    # report show the score noise they measure; they never change selection
    repeats: int = 0
    # where tickets (and fine-tuning) happen with rungs: first (every child, after rung 0) or top (only a network
    # promoted to the top rung searches its ticket and fine-tunes it: children train only, so a rung-0 trial costs
    # its training alone and the lottery prunes better-trained weights)
    tickets: TicketPlace = "first"
    # elites re-scored after each generation: the best networks scored once (MENAS' parent pool, regularized
    # evolution's population, random search's best) are trained again from scratch with another seed through the
    # same rungs; their score becomes the mean of the two trainings (each replica also measures the score noise)
    rescore: int = 0
    # what selection ranks a rung's networks by: val (the final network's search-val top-1) or tse (the training-speed
    # estimate: minus the mean training loss of the trial's own training epochs, comparable between trials of one
    # rung; steadier between seeds than val in bench/bench_proxy.py). Status, report and export show search-val
    # either way
    score: ScoreName = "val"

    def __post_init__(self) -> None:
        rungs = self.rungs
        if rungs is not None and not (
            isinstance(rungs, list | tuple)
            and rungs
            and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in rungs)
            and all(a < b for a, b in itertools.pairwise(rungs))
        ):
            raise UserError(
                f"fidelity.rungs: got {rungs!r}, allowed: null or a rising list of epochs >= 1, e.g. [1, 3, 9]"
            )
        if rungs is not None:
            self.rungs = list(rungs)
        _check_min("fidelity.eta", self.eta, 2)
        _check_min("fidelity.repeats", self.repeats, 0)
        _check_min("fidelity.rescore", self.rescore, 0)
        _check_min("fidelity.lr_scale", self.lr_scale, 0.0, strict=True)
        places = typing.get_args(TicketPlace)
        check(self.tickets in places, "fidelity.tickets", self.tickets, ", ".join(places))  # a Python caller's value
        scores = typing.get_args(ScoreName)
        check(self.score in scores, "fidelity.score", self.score, ", ".join(scores))

    @property
    def staged(self) -> bool:
        """Whether generations have stages after their children (promotions, repeats or re-scores)."""
        return (self.rungs is not None and len(self.rungs) > 1) or self.repeats > 0 or self.rescore > 0


@dataclasses.dataclass
class ExecutorConfig:
    """Where trials run. `local`: one at a time in the search's process. `pool`: `workers` processes, each
    running one trial at a time with `threads` torch threads (CPU) or on one GPU (`trials_per_gpu` workers per GPU).
    `ray`: each trial a Ray task with 1 / `trials_per_gpu` of a GPU (or `threads` CPUs), at most `workers` at once,
    on the cluster at `address`."""

    kind: ExecutorKind = "local"  # local | pool | ray
    workers: int | None = None  # trials at once; None: GPUs x trials_per_gpu, else CPU cores // threads (at least 1)
    threads: int | None = None  # torch threads per trial; None: CPU cores // workers (at least 1)
    address: str | None = None  # ray: the cluster ("auto", "ray://host:10001"); None: RAY_ADDRESS or a local Ray
    # pool and ray with GPUs: trials sharing one GPU at once (1: a GPU per trial); ignored without GPUs. Above 1,
    # start the CUDA MPS daemon (`nvidia-cuda-mps-control -d`, docs/distributed.md), else the trials time-slice it
    trials_per_gpu: int = 1

    def __post_init__(self) -> None:
        _check_min("executor.workers", self.workers, 1, optional=True)
        _check_min("executor.threads", self.threads, 1, optional=True)
        check(is_int(self.trials_per_gpu) and self.trials_per_gpu >= 1, "executor.trials_per_gpu",
              self.trials_per_gpu, "integers >= 1")  # fmt: skip


@dataclasses.dataclass
class SearchConfig:
    """A whole search: space, budget, strategy, data, training recipe, lottery tickets. Saved beside the run."""

    space: str = "mobilenet3-mt"  # preset name or a space YAML file
    seed: int = 0  # the strategy's seed; trial i trains with seed + i
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)
    strategy: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    lottery: LotteryConfig = dataclasses.field(default_factory=LotteryConfig)
    executor: ExecutorConfig = dataclasses.field(default_factory=ExecutorConfig)
    finetune_epochs: int = 3  # epochs of fine-tuning after the ticket search (the paper: 3)
    compute: ComputeConfig = dataclasses.field(default_factory=ComputeConfig)  # search compute budget
    max_failure_share: float = 0.5  # stop when more than this share of (at least 5) trials failed
    inherit: InheritConfig = dataclasses.field(default_factory=InheritConfig)  # children start from parents' weights
    fidelity: FidelityConfig = dataclasses.field(default_factory=FidelityConfig)  # rungs and noise repeats
    # log every trial as it finishes, and the best trial and Pareto front at the end, to an experiment tracker
    # (docs/tracking.md): none, tensorboard (`pip install menas[tensorboard]`) or mlflow (`pip install menas[mlflow]`)
    track: TrackerName = "none"
    # where: tensorboard: this run's event-file folder (null: RUN/tensorboard); mlflow: the tracking URI, e.g.
    # http://host:5000 (null: sqlite:///RUN/mlflow.db with artifacts in RUN/mlartifacts). Relative paths are taken
    # from the working directory
    track_uri: str | None = None

    def __post_init__(self) -> None:
        _check_min("finetune_epochs", self.finetune_epochs, 0)

        _check_range("max_failure_share", self.max_failure_share, 0.0, 1.0)
        if self.track not in typing.get_args(TrackerName):  # a Python caller's value; YAML and --set are checked
            raise UserError(f"track: got {self.track!r}, allowed: {', '.join(typing.get_args(TrackerName))}")
        epochs = self.inherit.epochs
        if epochs is not None and epochs > self.train.epochs:
            raise UserError(f"inherit.epochs: got {epochs!r}, allowed: null or 0..train.epochs ({self.train.epochs})")
        ex_threads, train_threads = self.executor.threads, self.train.threads
        if self.executor.kind != "local" and None not in (ex_threads, train_threads) and ex_threads != train_threads:
            raise UserError(
                f"train.threads: got {train_threads} with executor.threads {ex_threads}, allowed: the same value or "
                "one of them unset (a pool or Ray worker runs each trial with executor.threads threads)"
            )
        if self.strategy.name == "menas-inherit":  # a name for menas with `inherit.enabled`: one switch, stored so
            object.__setattr__(self, "strategy", dataclasses.replace(self.strategy, name="menas"))
            object.__setattr__(self, "inherit", dataclasses.replace(self.inherit, enabled=True))
        if self.inherit.enabled and self.fidelity.score == "tse":
            raise UserError(
                "fidelity.score: got 'tse' with inherit.enabled, allowed: val (an inheriting child starts from trained "
                "weights, so its training loss is not comparable with a child's from scratch)"
            )
        if self.inherit.enabled and self.strategy.name not in INHERITING_STRATEGIES:
            raise UserError(
                f"inherit.enabled: got True with strategy.name {self.strategy.name!r}, allowed: true only with "
                f"{', '.join(INHERITING_STRATEGIES)} (the other strategies record no gene origins)"
            )

    @property
    def inherits(self) -> bool:
        """Whether bred children start from their parents' weights (`inherit.enabled`; `strategy.name:
        menas-inherit` is read as menas with it on)."""
        return self.inherit.enabled


#: Each named retraining recipe: its training recipe with changes, its data augmentation, and its other keys.
RETRAIN_RECIPES: dict[str, dict[str, Any]] = {
    # CPU-sized: the short training recipe with an EMA that warms up and whose horizon (~200 updates) fits a few
    # epochs
    "short": {
        "train": {"recipe": "short", "ema": True, "ema_decay": 0.995, "ema_base_batch": 128, "ema_warmup": True},
        "data": {},
    },
    # the paper's final recipe (section 3.2, after timm's EfficientNet/MobileNetV3 training)
    "paper": {
        "train": {"recipe": "paper", "ema": True, "ema_decay": 0.9999, "ema_base_batch": 1024},
        "data": {"randaugment": "rand-m9-mstd0.5", "random_erasing": 0.2},
    },
    # fine-tuning a trained network on another dataset (`menas transfer`): the short recipe with a 0.1-epoch warmup
    # (the trained layers need little; the new classifier starts from scratch) and the short EMA; half the peak lr
    # transferred worse (Fashion-MNIST to digits, 3 seeds each)
    "transfer": {
        "train": {
            "recipe": "short",
            "warmup_epochs": 0.1,
            "ema": True,
            "ema_decay": 0.995,
            "ema_base_batch": 128,
            "ema_warmup": True,
        },
        "data": {},
    },
}


@dataclasses.dataclass
class RetrainConfig:
    """The final training of a chosen network (`menas retrain`), written beside its results as recipe.yaml.

    Built from a named recipe (`RetrainConfig.preset`) on top of the data config the network was searched with,
    then `key=value` overrides. "paper" is the paper's final recipe: RMSpropTF (momentum 0.9, eps 1e-3), linear
    warmup, x0.97 every 2.4 epochs, weight decay 1e-5, label smoothing 0.1, dropout 0.2, EMA 0.9999 per update at
    batch 1024 (scaled to the batch), RandAugment rand-m9-mstd0.5 and random erasing 0.2; "short" (the default)
    is the short training recipe with an EMA for CPU runs of a few epochs; "transfer" fine-tunes a trained network
    on another dataset (`menas transfer`: the short recipe with a 0.1-epoch warmup).
    """

    recipe: RetrainRecipeName = "short"  # informational: the preset these values started from
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    dropout: float = 0.2  # before the classifier
    drop_path: float = 0.0  # stochastic depth of the residual blocks, rising linearly to this rate at the last
    holdout_fraction: float = 0.02  # per class, of the training split: scored every epoch (the curve), not trained

    def __post_init__(self) -> None:
        _check_range("dropout", self.dropout, 0.0, 0.99)
        _check_range("drop_path", self.drop_path, 0.0, 0.99)
        if not 0.0 < self.holdout_fraction <= 0.5:
            raise UserError(f"holdout_fraction: got {self.holdout_fraction!r}, allowed: 0 < fraction <= 0.5")

    @classmethod
    def preset(cls, name: str, data: DataConfig | None = None, epochs: int | None = None) -> RetrainConfig:
        """The named recipe ("short", "paper" or "transfer") on top of `data` (the searched dataset), for `epochs`."""
        if name not in RETRAIN_RECIPES:
            raise UserError(f"--recipe: got {name!r}, allowed: {', '.join(RETRAIN_RECIPES)}")
        spec = dict(RETRAIN_RECIPES[name])
        train_spec = dict(spec.pop("train"))
        if epochs is not None:
            train_spec["epochs"] = epochs
        train = TrainConfig.preset(train_spec.pop("recipe"), **train_spec)
        data = dataclasses.replace(data or DataConfig(), **spec.pop("data"))
        return cls(recipe=name, data=data, train=train, **spec)


# --------------------------------------------------------------------------------------------- value checks


def _check_fraction(where: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise UserError(f"{where}: got {value!r}, allowed: 0 < fraction <= 1")


def _check_min(where: str, value: Any, low: float, optional: bool = False, strict: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or (value <= low if strict else value < low):
        raise UserError(f"{where}: got {value!r}, allowed: {'>' if strict else '>='} {low:g}")


def _check_range(where: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise UserError(f"{where}: got {value!r}, allowed: {low:g} <= value <= {high:g}")
