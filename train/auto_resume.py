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

from data.rank_logging import SAME_ON_EVERY_RANK
from train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, numbered_checkpoints

__all__ = ["EARLIER_FILE_NAMES", "mid_checkpoint_path", "list_mid_checkpoints", "resume_candidates",
           "find_resume_checkpoint"]

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


#: Networks whose checkpoint files an earlier version wrote under another name (that name now means another network).
EARLIER_FILE_NAMES: dict[str, str] = {"fr2d_18": "r2d_18"}


def find_resume_checkpoint(model_dir: str | os.PathLike, network: str) -> Path | None:
    """The newest checkpoint of `network` that loads and validates (None when there is none); skipped files are
    logged. A run that an earlier version saved under another file name (`EARLIER_FILE_NAMES`) is found too, and a
    file named `network` that holds another network (an earlier version's) is refused: starting afresh would
    overwrite that run's checkpoints."""
    found = _newest_loadable(model_dir, network, network)
    earlier = EARLIER_FILE_NAMES.get(network)
    if found is None and earlier is not None:
        found = _newest_loadable(model_dir, earlier, network)
        if found is not None:
            log.info("--resume auto: %s was saved as %s by an earlier version; resuming %s from it (its new "
                     "checkpoints are named %s_*)", found, earlier, network, network)
    return found


def _newest_loadable(model_dir: str | os.PathLike, file_network: str, network: str) -> Path | None:
    for path in resume_candidates(model_dir, file_network):
        try:
            held = load_checkpoint(path)["network"]
        except CheckpointError as e:
            log.warning("--resume auto: skipping %s", e, extra=SAME_ON_EVERY_RANK)
            continue
        if held == network:
            return path
        if file_network == network:
            raise CheckpointError(
                f"--resume auto: {path} holds a {held} checkpoint (saved as {file_network} by an earlier version), "
                f"not {network}: resume it with --network {held}, or start {network} in another --model-dir "
                "(a fresh run here would overwrite it)")
    return None
