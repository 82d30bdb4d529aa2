"""Does the lottery-ticket shortcut work on your data? A diagnostic in the spirit of EagleEye's Table 1.

For M pruning proposals of a trained candidate it measures three scores: the quick score without BN
recalibration, the quick score with it (both on the lottery's scoring subset), and the accuracy after a short
fine-tune (on all of search-val, more images than the subset). It reports how well each quick score ranks the
fine-tuned accuracies (Pearson, Spearman, Kendall) and the noise ceiling: the correlation between two fine-tunes
of the same proposals with different seeds. EagleEye reports Spearman 0.56-0.94 with recalibration and near 0 or
negative without.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scipy import stats

from menas.config import LotteryConfig, TrainConfig
from menas.data.splits import SearchData
from menas.nn.builder import MenasNet
from menas.prune.recalibrate import merge_batches, recalibrate_bn
from menas.prune.surgery import inherit_weights, propose
from menas.prune.tickets import take_images, top1, use_bf16
from menas.space.cost import count_cost
from menas.train.loop import seed_trial, train


@dataclass
class ProposalScores:
    mean_mid_rate: float
    macs: int
    stale: float  # subset top-1 with the copied BN statistics
    recalibrated: float  # subset top-1 after BN recalibration
    recalibrated_full: float  # search-val top-1 after BN recalibration (the score the lottery's finalists get)
    finetuned: float  # search-val top-1 after fine-tuning (seed A)
    finetuned_again: float  # the same with another seed (seed B): the noise ceiling


@dataclass
class Correlations:
    pearson: float
    spearman: float
    kendall: float


@dataclass
class Diagnosis:
    proposals: list[ProposalScores]
    subset_images: int
    finetune_images: int
    stale: Correlations  # quick score without recalibration vs fine-tuned accuracy
    recalibrated: Correlations  # quick score with recalibration vs fine-tuned accuracy
    recalibrated_full: Correlations  # the same scored on all of search-val (same images as the fine-tuned score)
    noise_ceiling: Correlations  # fine-tune A vs fine-tune B


def correlations(a: Sequence[float], b: Sequence[float]) -> Correlations:
    """Pearson, Spearman and Kendall correlations; NaN where one side is constant."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return Correlations(math.nan, math.nan, math.nan)
    return Correlations(
        float(stats.pearsonr(a, b).statistic),
        float(stats.spearmanr(a, b).statistic),
        float(stats.kendalltau(a, b).statistic),
    )


def diagnose(
    model: MenasNet,
    data: SearchData,
    lottery: LotteryConfig,
    train_cfg: TrainConfig,
    *,
    proposals: int = 20,
    finetune_epochs: int = 1,
    seed: int = 0,
    calib_epoch: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Diagnosis:
    """Scores `proposals` proposals of `model` three ways (see the module docstring)."""
    from menas.prune.recalibrate import calibration_batches

    rng = random.Random(seed)
    cfg = dataclasses.replace(lottery, proposals=proposals)
    calib = merge_batches(calibration_batches(data.train, cfg.calib_batches, calib_epoch))
    full = data.val
    subset = take_images(full, cfg.score_images) if cfg.score_images else full
    bf16 = use_bf16(next(model.parameters()).device, cfg.amp)  # score as the lottery does
    ft_cfg = train_cfg.finetune(finetune_epochs, data.train.batch_size, cfg.finetune_lr_scale)
    rows = []
    for proposal in propose(model.genome, cfg, rng, data.input_size, data.in_chans, data.num_classes):
        child = inherit_weights(model, proposal.genome, cfg.importance, channels_last=True)
        stale = top1(child, subset, bf16)
        recalibrated = top1(recalibrate_bn(child, calib, bf16), subset, bf16)
        recalibrated_full = top1(child, full, bf16)
        finetuned = []
        for k in (1, 2):
            seed_trial(seed + k)
            tuned = recalibrate_bn(inherit_weights(model, proposal.genome, cfg.importance, channels_last=True), calib)
            history = train(tuned, data.train, full, dataclasses.replace(ft_cfg, seed=seed + k))
            finetuned.append(history.val_top1)
        macs = count_cost(proposal.genome, data.input_size, data.in_chans, data.num_classes).macs
        rows.append(
            ProposalScores(
                proposal.mean_mid_rate, macs, stale, recalibrated, recalibrated_full, finetuned[0], finetuned[1]
            )
        )
        if progress is not None:
            progress(len(rows))
    tuned_a = [r.finetuned for r in rows]
    return Diagnosis(
        proposals=rows,
        subset_images=sum(len(y) for _, y in subset),
        finetune_images=data.val.num_samples,
        stale=correlations([r.stale for r in rows], tuned_a),
        recalibrated=correlations([r.recalibrated for r in rows], tuned_a),
        recalibrated_full=correlations([r.recalibrated_full for r in rows], tuned_a),
        noise_ceiling=correlations(tuned_a, [r.finetuned_again for r in rows]),
    )
