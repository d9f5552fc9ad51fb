"""Per-epoch train loader factories for the trainer: a fixed loader (plain run) and the multigrid adapter.

The trainer calls `factory(epoch)` (1-based) at the start of every epoch and gets `(loader, info)`. Both
factories call `set_epoch` on the sampler (its order is a function of seed and epoch) and on the dataset (its
augmentation draws likewise), so that the randomness of an epoch depends only on the seed and the epoch number:
a resumed run then draws exactly what an uninterrupted one would, with or without (persistent) workers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def restart_item_rng(dataset: Any, epoch: int) -> None:
    """Make the dataset's random draws of this epoch a function of (seed, epoch) (`VideoDataset.set_epoch`)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


class FixedLoader:
    """`loader_for_epoch` of a plain (non-multigrid) run: the same loader every epoch, built on first use."""

    def __init__(self, build: Callable[[], Any], dataset: Any, info: dict[str, Any]) -> None:
        self.build = build
        self.dataset = dataset
        self.info = dict(info)
        self.loader: Any = None

    def __call__(self, epoch: int) -> tuple[Any, dict[str, Any]]:
        if self.loader is None:
            self.loader = self.build()
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        restart_item_rng(self.dataset, epoch)
        return self.loader, dict(self.info, epoch=epoch)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError("the checkpoint was trained with multigrid cycles; resume it with the same "
                             "--long-cycles/--short-cycles")


class MultigridLoaders:
    """Adapts `data.multigrid.MultigridLoaderFactory` (0-based epochs) to the trainer (1-based epochs).

    Adds to `info`: `long_cycle` text for the logs (e.g. `long-1 (2/4)`), and keeps `lr_scale` (linear scaling
    of the epoch's batch factor, multiplied into the step schedule built on `schedule.lr_steps`).
    """

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __call__(self, epoch: int) -> tuple[Any, dict[str, Any]]:
        loader, info = self.factory(epoch - 1)
        restart_item_rng(self.factory.dataset, epoch)
        info = dict(info)
        phase = info.get("phase", "")
        if phase.startswith("long-"):
            info["long_cycle"] = f"{phase} ({int(info['long_index']) + 1}/4)"
        elif phase:
            info["long_cycle"] = phase
        return loader, info

    def state_dict(self) -> dict[str, Any]:
        return self.factory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            raise ValueError("the checkpoint was trained without multigrid cycles; resume it without "
                             "--long-cycles/--short-cycles")
        self.factory.load_state_dict(state)
