"""Per-epoch train loaders for the trainer: a fixed loader (plain run) and the multigrid loaders.

The trainer calls `factory(epoch)` (1-based) at the start of every epoch and gets `(loader, EpochInfo)`. Both
factories call `set_epoch` on the sampler (its order is a function of seed and epoch) and on the dataset (its
augmentation draws likewise), so that the randomness of an epoch depends only on the seed and the epoch number:
a resumed run then draws exactly what an uninterrupted one would, with or without (persistent) workers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import BatchSampler, DistributedSampler, Sampler

from data.loader import build_loader
from data.rank_logging import SAME_ON_EVERY_RANK
from data.short_cycle import ShortCycleBatchSampler
from train.epoch_notes import note_epoch_coverage
from train.multigrid import LONG_CYCLE_FACTORS, MultigridSchedule, Shape

__all__ = ["EpochInfo", "FixedLoader", "MultigridLoaders"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochInfo:
    """What the trainer and its callbacks know of one epoch's train loader.

    ``lr_scale`` multiplies the lr of the step schedule; ``shape`` is the multigrid shape (None on a plain run),
    ``lr_multiplier`` the schedule's whole lr factor and ``changed`` whether the loader was rebuilt.
    """

    epoch: int
    batch_size: int
    clip_length: int
    crop_size: int
    num_batches: int
    lr_scale: float = 1.0
    lr_multiplier: float = 1.0
    shape: Shape | None = None
    long_cycle: str | None = None
    changed: bool = False

    @property
    def short_crops(self) -> tuple[int, ...] | None:
        """Crops of the short-cycle slots, or None when the short cycle is off."""
        return None if self.shape is None else self.shape.short_crops

    @property
    def description(self) -> str:
        """The multigrid shape in one line ('' on a plain run)."""
        return "" if self.shape is None else self.shape.summary()


def restart_item_rng(dataset: Any, epoch: int) -> None:
    """Make the dataset's random draws of this epoch a function of (seed, epoch) (`VideoDataset.set_epoch`)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


class FixedLoader:
    """`loader_for_epoch` of a plain (non-multigrid) run: the same loader every epoch, built on first use."""

    def __init__(self, build: Callable[[], Any], dataset: Any, batch_size: int, clip_length: int,
                 crop_size: int) -> None:
        self.build = build
        self.dataset = dataset
        self.batch_size, self.clip_length, self.crop_size = int(batch_size), int(clip_length), int(crop_size)
        self.loader: Any = None

    def __call__(self, epoch: int) -> tuple[Any, EpochInfo]:
        if self.loader is None:
            self.loader = self.build()
            note_epoch_coverage(self.dataset, self.loader)
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        restart_item_rng(self.dataset, epoch)
        return self.loader, EpochInfo(epoch, self.batch_size, self.clip_length, self.crop_size, len(self.loader))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError("the checkpoint was trained with multigrid cycles; resume it with the same "
                             "--long-cycles/--short-cycles")


class _EpochBatchSampler(BatchSampler):
    """`BatchSampler` that forwards `set_epoch` (long cycle without short cycle)."""

    @property
    def clips_per_epoch(self) -> int:
        n = len(self.sampler)
        return (n // self.batch_size) * self.batch_size if self.drop_last else n

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class MultigridLoaders:
    """`loader_for_epoch` of a multigrid run: reshapes the dataset and rebuilds the DataLoader when the shape changes.

    Epochs are the trainer's (1-based); the schedule counts from 0. Batches are always drawn by its own batch
    sampler (a `ShortCycleBatchSampler` when the short cycle is on) over a `DistributedSampler` (one replica when
    not distributed), so the order depends only on (seed, epoch) and every rank gets the same batch shapes.
    """

    def __init__(self, dataset: Any, schedule: MultigridSchedule, workers: int = 0, seed: int = 0,
                 distributed: bool = False, drop_last: bool = True) -> None:
        self.dataset = dataset
        self.schedule = schedule
        self.workers = workers
        self.seed = seed
        self.distributed = distributed
        self.drop_last = drop_last
        self.loader: Any = None
        self.batch_sampler: Sampler | None = None
        self._key: tuple | None = None
        self.rebuilds = 0

    def _base_sampler(self) -> Sampler[int]:
        # DistributedSampler reshuffles as a function of (seed, epoch) only, which makes resume reproducible;
        # with one replica it is a plain seeded shuffle without padding.
        if self.distributed:
            return DistributedSampler(self.dataset, shuffle=True, seed=self.seed, drop_last=False)
        return DistributedSampler(self.dataset, num_replicas=1, rank=0, shuffle=True, seed=self.seed)

    def _build(self, shape: Shape) -> Any:
        self.loader = None  # drop the old loader (and its persistent workers) before forking new ones
        config = self.schedule.config
        if shape.short_crops is not None:
            batch_sampler: Sampler = ShortCycleBatchSampler(
                self._base_sampler(), shape.batch_size, config["base_crop"], shape.crop_size,
                drop_last=self.drop_last, crop_multiple=config["crop_multiple"])
        else:
            batch_sampler = _EpochBatchSampler(self._base_sampler(), shape.batch_size, self.drop_last)
        self.batch_sampler = batch_sampler
        available, used = len(batch_sampler.sampler), batch_sampler.clips_per_epoch
        sizes = shape.short_batches if shape.short_batches is not None else (shape.batch_size,)
        if len(batch_sampler) == 0:
            raise ValueError(f"multigrid {shape.phase}: {available} training clips per process do not fill one "
                             f"batch of {sizes[0]}; lower --batch-size (now {config['base_batch']})")
        if available - used > 0.1 * available:
            log.warning("multigrid %s: batches of %s clips leave %d of %d clips per process out of every epoch "
                        "(drop_last); a smaller base batch keeps more", shape.phase,
                        "/".join(map(str, sizes)), available - used, available, extra=SAME_ON_EVERY_RANK)
        return build_loader(self.dataset, shape.batch_size, train=True, workers=self.workers, seed=self.seed,
                            distributed=self.distributed, batch_sampler=batch_sampler, drop_last=self.drop_last)

    def _long_cycle_text(self, shape: Shape) -> str | None:
        if shape.phase.startswith("long-"):
            return f"{shape.phase} ({shape.long_index + 1}/{len(LONG_CYCLE_FACTORS)})"
        return shape.phase or None

    def __call__(self, epoch: int) -> tuple[Any, EpochInfo]:
        index = epoch - 1
        if index < 0:
            raise ValueError(f"multigrid: epochs count from 1, got {epoch}")
        shape = self.schedule.shape(index)
        self.schedule.set_epoch(index)
        changed = shape.loader_key != self._key
        if changed:
            self.dataset.set_shape(shape.clip_length, shape.frame_interval, shape.crop_size, shape.short_crops)
            self.loader = self._build(shape)
            self._key = shape.loader_key
            self.rebuilds += 1
            log.info("multigrid epoch %d: %s", epoch, shape.summary())
        self.batch_sampler.set_epoch(index)
        restart_item_rng(self.dataset, epoch)
        info = EpochInfo(epoch, shape.batch_size, shape.clip_length, shape.crop_size, len(self.loader),
                         lr_scale=shape.lr_scale, lr_multiplier=self.schedule.lr_multiplier(index), shape=shape,
                         long_cycle=self._long_cycle_text(shape), changed=changed)
        return self.loader, info

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (configuration and position) for the checkpoint's ``multigrid`` entry."""
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore the schedule; the next call rebuilds the loader for the resumed epoch's shape."""
        if not state:
            raise ValueError("the checkpoint was trained without multigrid cycles; resume it without "
                             "--long-cycles/--short-cycles")
        self.schedule.load_state_dict(state, strict=strict)
        self._key = None

    def close(self) -> None:
        """Drop the current loader (shuts its workers down)."""
        self.loader = None
        self.batch_sampler = None
        self._key = None
