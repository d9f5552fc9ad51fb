"""Precise batch-norm statistics: recompute the BN running averages at the evaluation shape before evaluating.

Multigrid training mixes input shapes (crops from S/2 to S, clips from T/4 to T, several shapes inside one
short-cycle epoch), so BN running averages mix the activation statistics of all of them, while validation and
inference run at the base shape only. Measured on the demo data, that mismatch alone cost the short cycle most of
its validation accuracy. As SlowFast does for its multigrid configurations (``BN.USE_PRECISE_STATS``) and as
Wu & Johnson recommend ("Rethinking 'Batch' in BatchNorm", 2021), the averages are recomputed over a few training
batches at the base shape, every batch weighing the same, right before a validation or the end of training.
Training itself is unchanged: in train mode BN normalises with batch statistics, never with the averages.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def update_bn_stats(model: nn.Module, batches: Iterable[Any], num_batches: int, device: torch.device,
                    autocast: Callable[[], Any] | None = None,
                    input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> int:
    """Replace every BN layer's running mean/var by their equal-weight average over up to `num_batches` batches.

    `batches` yields clips or ``(clips, ...)`` tuples; `input_transform` prepares a batch on the device (the
    trainer's, e.g. normalising uint8 clips). Returns the number of batches used; raises `ValueError` if
    there was none (the old statistics are kept then).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or num_batches < 1:
        return 0
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise ValueError("precise BN: the training loader gave no batch")
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
    was_training = model.training
    model.train()
    used = 0
    try:
        with torch.no_grad():
            batch = first
            while batch is not None and used < num_batches:
                clips = batch[0] if isinstance(batch, (list, tuple)) else batch
                clips = clips.to(device, non_blocking=True)
                if input_transform is not None:
                    clips = input_transform(clips)
                # The cumulative average (every batch counts the same) with the factor set from here: momentum
                # None would make every BN layer read its batch counter from the device, a sync per layer.
                for m in bns:
                    m.momentum = 1.0 / (used + 1)
                if autocast is None:
                    model(clips)
                else:
                    with autocast():
                        model(clips)
                used += 1
                batch = next(iterator, None) if used < num_batches else None
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    return used


class PreciseBN:
    """Recomputes BN statistics at the base shape when an epoch trained on other shapes (see the module doc).

    Args:
        make_loader: builds the training loader at the base shape (built once, on first use).
        num_batches: batches to average over (capped by the loader's length).
        clip_length, crop_size: the base shape; an epoch whose loader info shows another shape, or short-cycle
            crops, needs new statistics.
        dataset: the loader's dataset, given ``set_epoch`` so that its random draws depend on the epoch only.
        always: recompute after every epoch that needs them, whatever its shape (asked for on a plain run).
        input_transform: prepares a batch on the device, as the trainer does (see `update_bn_stats`).
    """

    def __init__(self, make_loader: Callable[[], Iterable[Any]], num_batches: int, clip_length: int, crop_size: int,
                 dataset: Any = None, always: bool = False,
                 input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.input_transform = input_transform
        self.make_loader = make_loader
        self.num_batches = int(num_batches)
        self.clip_length = int(clip_length)
        self.crop_size = int(crop_size)
        self.dataset = dataset
        self.always = bool(always)
        self.loader: Iterable[Any] | None = None
        self.stale = False

    def note_epoch(self, info: Any) -> None:
        """Record whether the epoch just trained (its `EpochInfo`) used a shape other than the base one."""
        if (self.always or info.short_crops or info.clip_length != self.clip_length
                or info.crop_size != self.crop_size):
            self.stale = True

    def __call__(self, model: nn.Module, device: torch.device, epoch: int,
                 autocast: Callable[[], Any] | None = None) -> float:
        """Recompute the statistics if stale; returns the seconds spent (0 when nothing was needed)."""
        if not self.stale or self.num_batches < 1:
            return 0.0
        start = time.perf_counter()
        if self.loader is None:
            self.loader = self.make_loader()
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        used = update_bn_stats(model, self.loader, self.num_batches, device, autocast, self.input_transform)
        self.stale = False
        seconds = time.perf_counter() - start
        log.debug("precise BN: statistics of %d base-shape batches in %.1f s", used, seconds)
        return seconds
