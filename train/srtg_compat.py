"""The SRTG code's way of continuing a run, accepted as written: ``--pretrained_3d FILE --resume-epoch E``.

There, ``--pretrained_3d`` names the checkpoint of the run and ``--resume-epoch`` the epoch to continue with
(``srtg_r3d_50_ep-0020.pth --resume-epoch 21``). Here ``--resume-epoch E`` names a checkpoint in --model-dir; when
there is none and FILE is a checkpoint of this trainer ending at epoch E - 1 (or E), the run resumes from FILE.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from train.checkpoint import CheckpointError, checkpoint_path, load_checkpoint

__all__ = ["resume_from_pretrained"]

log = logging.getLogger(__name__)


def resume_from_pretrained(args: argparse.Namespace) -> None:
    """Turn SRTG's ``--pretrained_3d FILE --resume-epoch E`` into ``--resume FILE`` (see the module docstring)."""
    if args.resume_epoch is None or args.pretrained_3d is None or not Path(args.pretrained_3d).is_file():
        return
    if checkpoint_path(args.model_dir, args.network, args.resume_epoch).is_file():
        return  # this trainer's meaning: the checkpoint of that epoch in --model-dir
    try:
        done = int(load_checkpoint(args.pretrained_3d).get("epoch", -1))
    except (CheckpointError, TypeError, ValueError):
        return  # weights only: --resume-epoch then reports the missing checkpoint
    if done not in (args.resume_epoch - 1, args.resume_epoch):
        return
    log.info("--pretrained-3d %s --resume-epoch %d: resuming that checkpoint (epoch %d done)", args.pretrained_3d,
             args.resume_epoch, done)
    args.resume, args.resume_epoch, args.pretrained_3d = Path(args.pretrained_3d), None, None
