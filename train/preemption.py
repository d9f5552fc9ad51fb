"""Preemption and Ctrl-C for the trainer: signal flags, the stop agreement between ranks, and the exit codes.

Cluster schedulers warn a job before they kill it (SLURM: `#SBATCH --signal=B:TERM@120` or `--signal=USR1@120`).
`PreemptionHandler` turns the chosen signal (and SIGINT) into a flag; the trainer reads it after every optimizer
step, all ranks agree on it (`should_stop`), rank 0 writes a mid-epoch checkpoint and the process exits with
`EXIT_PREEMPTED`, which a requeue script tests for (under `torchrun`, in `<model-dir>/exit_code`). A second
Ctrl-C while the step is finishing aborts at once (KeyboardInterrupt, exit `EXIT_INTERRUPTED` without a new
checkpoint).

DataLoader workers ignore these signals (`data.loader.worker_init_fn`): the main process decides when to stop, and
a worker killed by SIGTERM would abort the step that is being finished.
"""
from __future__ import annotations

import logging
import os
import signal
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from data.atomic import atomic_write
from train.distributed import DistInfo, all_reduce_max

__all__ = ["EXIT_CODE_FILE", "EXIT_PREEMPTED", "EXIT_INTERRUPTED", "PREEMPT_SIGNALS", "PreemptionHandler",
           "TrainingInterrupted", "parse_signal", "record_exit_code"]

log = logging.getLogger(__name__)

# EX_TEMPFAIL of sysexits.h: "try again later", what a requeue script tests for.
EXIT_PREEMPTED = 75
# 128 + SIGINT, what shells report for a job stopped by Ctrl-C.
EXIT_INTERRUPTED = 130
PREEMPT_SIGNALS = ("TERM", "USR1", "USR2", "INT", "NONE")
# `<model-dir>/exit_code`: the code rank 0 of the last run ended with. `torchrun` exits 1 whatever its processes
# returned (it reports a child's 75 as a failure, and a launcher that got SIGTERM as one too), so a requeue script
# under torchrun reads this file instead of the launcher's exit code.
EXIT_CODE_FILE = "exit_code"


def record_exit_code(model_dir: str | os.PathLike, code: int) -> None:
    """Write `code` to `<model_dir>/exit_code` atomically (a folder that cannot take it gets a warning, no error)."""
    try:
        with atomic_write(Path(model_dir) / EXIT_CODE_FILE, "w", encoding="utf-8") as f:
            f.write(f"{int(code)}\n")
    except OSError as e:
        log.warning("cannot record the exit code in %s (%s)", model_dir, e.strerror or e)


def parse_signal(name: str) -> signal.Signals | None:
    """`TERM`/`SIGTERM`/`usr1`... -> the signal (None for `none`: preemption handling off)."""
    key = name.strip().upper().removeprefix("SIG")
    if key == "NONE":
        return None
    if key not in PREEMPT_SIGNALS:
        raise ValueError(f"preemption signal must be one of {', '.join(PREEMPT_SIGNALS)}, got {name!r}")
    return signal.Signals[f"SIG{key}"]


class TrainingInterrupted(Exception):
    """Training stopped on a signal after the current step; `checkpoint` is the mid-epoch file rank 0 wrote."""

    def __init__(self, signal_name: str, epoch: int, batch: int, checkpoint: Any = None) -> None:
        super().__init__(f"{signal_name} at epoch {epoch} batch {batch}")
        self.signal_name = signal_name
        self.epoch = epoch
        self.batch = batch
        self.checkpoint = checkpoint

    @property
    def exit_code(self) -> int:
        """`EXIT_INTERRUPTED` for Ctrl-C, `EXIT_PREEMPTED` for the preemption signal."""
        return EXIT_INTERRUPTED if self.signal_name == "SIGINT" else EXIT_PREEMPTED


class PreemptionHandler:
    """Sets a flag on the preemption signal(s) and SIGINT; a second SIGINT raises KeyboardInterrupt at once.

    Use as a context manager (or `install()`/`restore()`), in the main thread only.
    """

    def __init__(self, signals: Sequence[signal.Signals] = (signal.SIGTERM,), catch_sigint: bool = True) -> None:
        self.signals = tuple(dict.fromkeys([*signals, *([signal.SIGINT] if catch_sigint else [])]))
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        sig = signal.Signals(signum)
        if sig == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = sig
            log.warning("%s received: finishing the current step, then saving a checkpoint%s", sig.name,
                        " (Ctrl-C again to abort without one)" if sig == signal.SIGINT else "")

    def install(self) -> PreemptionHandler:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> PreemptionHandler:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    @property
    def requested(self) -> bool:
        return self.received is not None

    def should_stop(self, dist_info: DistInfo) -> bool:
        """True on every rank when any rank got a signal (one tiny all-reduce per step when distributed)."""
        if not dist_info.distributed:
            return self.requested
        # Ranks may have been signalled at different steps; agreeing here keeps them in the same step.
        flag = torch.tensor([float(self.received or 0)])
        got = int(all_reduce_max(flag, dist_info).item())
        if got and self.received is None:
            self.received = signal.Signals(got)
        return bool(got)

    @property
    def signal_name(self) -> str:
        return self.received.name if self.received is not None else ""
