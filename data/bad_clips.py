"""Clips that cannot be read: the repair a message names, and the shared record of the videos that failed.

A training set may skip a video whose frames cannot be read (`VideoDataset(..., bad_clips="skip")`): the item is
replaced by another video drawn from the item's own generator, and the video is marked in a `BadVideoFlags`
record. The record lives in shared memory, created before DataLoader workers fork, so that the workers mark what
they meet and the main process reads it after every batch (workers cannot safely write the run folder).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["BAD_CLIP_POLICIES", "BadVideoFlags", "repair_command", "with_repair", "worker_error_text"]

BAD_CLIP_POLICIES = ("fail", "skip")

_WORKER_HEADER = "Original Traceback (most recent call last):"
_QUALIFIED_NAME = re.compile(r"^[A-Za-z_][\w.]*: ")


def repair_command(root: str | os.PathLike) -> str:
    """The command that converts a dataset's broken videos again (`tools.verify` finds them first)."""
    return f"python -m tools.verify {Path(root)} --reconvert VIDEOS (VIDEOS: the folder the videos were converted from)"


def with_repair(message: str, root: str | os.PathLike) -> str:
    """`message` ending in the repair command, unless it names it already."""
    if "python -m tools.verify" in message:
        return message
    return f"{message}; repair: {repair_command(root)}"


def worker_error_text(error: BaseException) -> str:
    """The one-line message of an error, also when a DataLoader worker raised it.

    torch re-raises a worker's exception in the main process with the worker's whole traceback as its message
    (``Caught FrameStoreError in DataLoader worker process 0. Original Traceback ...``); the original message is its
    last line, after the exception's qualified name.
    """
    text = str(error)
    if _WORKER_HEADER not in text:
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    return _QUALIFIED_NAME.sub("", lines[-1], count=1) if lines else text


class BadVideoFlags:
    """Per video, the last epoch in which one of its clips could not be read (0: never), in shared memory.

    Marks survive `fork` both ways: the tensor is shared before workers start, so what a worker marks the main
    process sees. Only a record: whether a clip is bad is decided by reading it, never by an earlier mark, so the
    items of an epoch do not depend on which process met a video first.
    """

    def __init__(self, n_videos: int) -> None:
        self.tensor = torch.zeros(int(n_videos), dtype=torch.int32).share_memory_()

    def __len__(self) -> int:
        return int(self.tensor.numel())

    def mark(self, video: int, epoch: int) -> None:
        self.tensor[int(video)] = int(epoch) + 1  # + 1: epoch 0 (no set_epoch) must not read as "never"

    def in_epoch(self, epoch: int) -> list[int]:
        """Videos that failed in `epoch`, sorted."""
        return np.flatnonzero(self.tensor.numpy() == int(epoch) + 1).tolist()

    def ever(self) -> list[int]:
        """Videos that failed in any epoch seen by this process tree, sorted."""
        return np.flatnonzero(self.tensor.numpy()).tolist()

    def merge(self, other: torch.Tensor) -> None:
        """Take the element-wise max with `other` (the marks of other ranks)."""
        torch.maximum(self.tensor, other.to(self.tensor.dtype), out=self.tensor)
