"""Recipe options of a run, built from its arguments: loss, mixing, EMA, SyncBatchNorm and the preemption flag.

Each builder returns None (or the model unchanged) when its option is off, so the plain run stays the baseline.
"""
from __future__ import annotations

import argparse
import logging

from torch import nn

from network.sub_batchnorm import SubBatchNorm3d
from train.arguments import SYNC_BN_MULTIGRID
from train.distributed import DistInfo
from train.ema import ModelEMA
from train.mixing import ClipMixer, MixConfig
from train.preemption import PreemptionHandler, parse_signal

__all__ = ["build_criterion", "build_mixer", "build_ema", "build_sync_bn", "build_preemption", "count_sync_bn",
           "check_sync_bn_compatible"]

log = logging.getLogger(__name__)


def build_criterion(args: argparse.Namespace) -> nn.Module:
    """Cross-entropy with `--label-smoothing` (it also takes the soft targets of mixup/CutMix)."""
    return nn.CrossEntropyLoss(label_smoothing=float(getattr(args, "label_smoothing", 0.0)))


def build_mixer(args: argparse.Namespace) -> ClipMixer | None:
    """The per-clip mixup/CutMix of `--mixup`/`--cutmix` (None when both are 0)."""
    config = MixConfig(getattr(args, "mixup", 0.0), getattr(args, "cutmix", 0.0), getattr(args, "mix_prob", 1.0),
                       getattr(args, "mix_switch_prob", 0.5))
    if not config.enabled:
        return None
    log.info("mixing: mixup alpha %g, CutMix alpha %g, %.0f%% of the clips", config.mixup_alpha,
             config.cutmix_alpha, 100 * config.prob)
    return ClipMixer(config, seed=args.random_seed)


def build_ema(model: nn.Module, args: argparse.Namespace) -> ModelEMA | None:
    """An EMA of `model`'s weights with `--ema DECAY` (build it after the model is on its device)."""
    decay = getattr(args, "ema", None)
    return None if decay is None else ModelEMA(model, decay)


def count_sync_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


def check_sync_bn_compatible(model: nn.Module) -> None:
    """Refuse `--sync-bn` on a model with sub-batch BN (multigrid): the conversion would drop its grouping."""
    if any(isinstance(m, SubBatchNorm3d) for m in model.modules()):
        raise ValueError(SYNC_BN_MULTIGRID)


def build_sync_bn(model: nn.Module, args: argparse.Namespace, dist_info: DistInfo) -> nn.Module:
    """With `--sync-bn`, every BatchNorm becomes a SyncBatchNorm (statistics over all processes' batches).

    SyncBatchNorm runs on CUDA only (NCCL); a CPU (gloo) run is refused rather than failing at the first step.
    """
    if not getattr(args, "sync_bn", False):
        return model
    check_sync_bn_compatible(model)
    if not dist_info.distributed:
        log.warning("--sync-bn has no effect in a single process (BatchNorm already sees the whole batch)")
        return model
    if dist_info.device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA GPUs: SyncBatchNorm cannot run on the CPU (gloo); leave it out")
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist_info.is_main:
        log.info("--sync-bn: %d BatchNorm layers synchronised across %d processes", count_sync_bn(model),
                 dist_info.world_size)
    return model


def build_preemption(args: argparse.Namespace) -> PreemptionHandler:
    """The signal flag of `--preempt-signal` (SIGINT is always caught: Ctrl-C checkpoints too)."""
    sig = parse_signal(getattr(args, "preempt_signal", "TERM"))
    return PreemptionHandler(() if sig is None else (sig,))
