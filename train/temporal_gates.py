"""Switching the SRTG temporal gates on from a given epoch (`--temporal-gates-from EPOCH`).

The SRTG author trained with the gates off for the first 30-50 epochs, so that the LSTM states mean something
before the cycle-consistency test decides which samples they recalibrate. `TemporalGatesFrom` sets the gates of
every Squeeze-and-Recursion block at the start of each epoch (off before `from_epoch`, on from it) and writes
the option and the current state into every checkpoint the `Checkpointer` saves: `temporal_gates_from` next to
the other metadata, and `temporal_gates` in `model_kwargs`, so that evaluate/predict rebuild the model with the
gates as they were. On resume the option is taken from the checkpoint unless given again, and the gates follow
from the epoch the run continues at.
"""
from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from network.srtg import set_temporal_gates
from train.callbacks import Callback, Checkpointer, TrainerState
from train.checkpoint import unwrap_model

if TYPE_CHECKING:
    from torch import nn

__all__ = ["TemporalGatesFrom", "temporal_gates_callbacks"]

log = logging.getLogger(__name__)


class TemporalGatesFrom(Callback):
    """Gates off for epochs `< from_epoch`, on from `from_epoch` (1-based, as the trainer counts)."""

    def __init__(self, from_epoch: int, checkpointer: Checkpointer | None = None) -> None:
        if from_epoch < 1:
            raise ValueError(f"--temporal-gates-from must be an epoch >= 1, got {from_epoch}")
        self.from_epoch = from_epoch
        self.checkpointer = checkpointer
        self.enabled: bool | None = None

    def on_epoch_begin(self, trainer: TrainerState, epoch: int, logs: dict[str, Any]) -> None:
        enabled = epoch >= self.from_epoch
        set_temporal_gates(unwrap_model(trainer.model), enabled)
        if enabled != self.enabled and trainer.dist.is_main:
            log.info("temporal gates %s from epoch %d", "on" if enabled else "off", epoch)
        self.enabled = enabled
        if self.checkpointer is not None:
            meta = self.checkpointer.meta
            meta["temporal_gates_from"] = self.from_epoch
            meta["model_kwargs"] = {**meta.get("model_kwargs", {}), "temporal_gates": enabled}


def temporal_gates_callbacks(args: argparse.Namespace, model: nn.Module, checkpointer: Checkpointer,
                             resume_ckpt: dict[str, Any] | None) -> list[Callback]:
    """The callback `args.temporal_gates_from` (or the resumed checkpoint's option) asks for, else none.

    Raises `ValueError` when the model has no SR block to gate.
    """
    from_epoch = getattr(args, "temporal_gates_from", None)
    if from_epoch is None and resume_ckpt is not None:
        from_epoch = resume_ckpt.get("temporal_gates_from")
    if from_epoch is None:
        return []
    try:
        set_temporal_gates(model, False)  # fails early for a model without SR
    except ValueError as e:
        raise ValueError(f"--temporal-gates-from: {e}") from None
    return [TemporalGatesFrom(int(from_epoch), checkpointer)]
