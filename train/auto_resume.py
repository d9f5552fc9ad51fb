"""Checkpoint files for auto-resume: mid-epoch file names and the newest complete checkpoint of a run.

A run's model folder holds epoch checkpoints `<network>_ep-<E:04d>.pth` (epochs 1..E done) and, after a preemption,
mid-epoch ones `<network>_ep-<E:04d>_batch-<B:06d>.pth` (epochs 1..E-1 done and B batches of epoch E). Progress is
read from the names, so finding the newest needs no loading; it is then loaded to prove it complete, and a
truncated or corrupt file is skipped with a warning in favour of the next newest.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, numbered_checkpoints

__all__ = ["mid_checkpoint_path", "list_mid_checkpoints", "resume_candidates", "find_resume_checkpoint"]

log = logging.getLogger(__name__)


def mid_checkpoint_path(model_dir: str | os.PathLike, network: str, epoch: int, batches_done: int) -> Path:
    """Where the mid-epoch checkpoint after `batches_done` batches of `epoch` goes."""
    return Path(model_dir) / f"{network}_ep-{epoch:04d}_batch-{batches_done:06d}.pth"


def list_mid_checkpoints(model_dir: str | os.PathLike, network: str) -> dict[tuple[int, int], Path]:
    """(epoch, batches done) -> path of the mid-epoch checkpoints of `network` in `model_dir`, in order."""
    return numbered_checkpoints(model_dir, network, r"ep-(\d+)_batch-(\d+)")


def resume_candidates(model_dir: str | os.PathLike, network: str) -> list[Path]:
    """Every epoch and mid-epoch checkpoint, newest training progress first."""
    # Epoch E done sorts as (E, 0, 1): after any mid-epoch file of epoch E, before one of epoch E + 1.
    keyed = [((epoch, 0, 1), p) for epoch, p in list_checkpoints(model_dir, network).items()]
    keyed += [((epoch - 1, batch, 0), p) for (epoch, batch), p in list_mid_checkpoints(model_dir, network).items()]
    return [p for _, p in sorted(keyed, key=lambda kp: kp[0], reverse=True)]


def find_resume_checkpoint(model_dir: str | os.PathLike, network: str) -> Path | None:
    """The newest checkpoint that loads and validates (None when there is none); skipped files are logged."""
    for path in resume_candidates(model_dir, network):
        try:
            load_checkpoint(path)
        except CheckpointError as e:
            log.warning("--resume auto: skipping %s", e)
            continue
        return path
    return None
