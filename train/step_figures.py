"""What the training loop needs to know about its steps without waiting for the GPU after each one.

Reading a value computed on the GPU (`.item()`, `float(t)`) blocks the host until every kernel queued before it
has run, so the host cannot queue the next step meanwhile. The loop therefore keeps each batch's figures (loss,
top-1 and top-5 hits, size, whether the loss was finite) as a small tensor on the device, and `BatchFigures`
reads all of them back in one transfer every `interval` batches (`flush`). `StepTimer` times the forward and
backward passes with CUDA events, read once they have completed, instead of synchronising the device around them.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from train.metrics import ClassificationSums, topk_hits

__all__ = ["BatchFigures", "BatchRow", "StepTimer"]


@dataclass(frozen=True)
class BatchRow:
    """One batch's figures, read back from the device."""

    batch: int
    loss: float
    top1: int
    top5: int
    size: int
    finite: bool


class BatchFigures:
    """Per-batch figures kept on the device until `flush` reads them all back (one host read)."""

    def __init__(self) -> None:
        self._pending: list[tuple[int, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, batch: int, logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> None:
        """Queue the figures of batch `batch` (its mean `loss`; the hits against the unmixed `labels`)."""
        loss = loss.detach()
        hits = topk_hits(logits.detach().float(), labels, (1, 5))
        size = torch.full((), labels.shape[0], dtype=torch.float64, device=loss.device)
        row = torch.stack([loss.double(), hits[0].double(), hits[1].double(), size,
                           torch.isfinite(loss).double()])
        self._pending.append((batch, row))

    def flush(self, sums: ClassificationSums, on_row: Callable[[BatchRow], None] | None = None) -> BatchRow | None:
        """Read the queued rows back, add the finite ones to `sums` (as the per-batch reads did), call `on_row`
        for each in order; returns the last row (None if none was queued)."""
        if not self._pending:
            return None
        values = torch.stack([row for _, row in self._pending]).cpu().tolist()
        last = None
        for (batch, _), (loss, top1, top5, size, finite) in zip(self._pending, values):
            last = BatchRow(batch, loss, int(top1), int(top5), int(size), bool(finite))
            if last.finite:
                sums.loss += loss * last.size
                sums.top1 += last.top1
                sums.top5 += last.top5
                sums.count += last.size
            if on_row is not None:
                on_row(last)
        self._pending.clear()
        return last


class StepTimer:
    """Seconds of each step's forward and backward (+ optimizer) pass.

    On a GPU, CUDA events recorded around the passes are read only once the step's last event has completed
    (`query`, which never blocks): `stop` returns the newest completed step's timings, which may be a step behind.
    Only the first step (of each epoch: one timer per epoch) waits for its events. On the CPU the passes run
    synchronously: wall clock.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._marks: list = []
        self._pending: deque[list] = deque()
        self._last: tuple[float, float] | None = None

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self._marks = [self._now()]

    def mark(self) -> None:
        """The forward pass (and the loss) ends here."""
        self._marks.append(self._now())

    def stop(self) -> tuple[float, float]:
        """End of the step: (forward seconds, backward seconds) of the newest step that has completed."""
        self._marks.append(self._now())
        if not self.cuda:
            t0, t1, t2 = self._marks
            return t1 - t0, t2 - t1
        self._pending.append(self._marks)
        if self._last is None:
            self._pending[-1][-1].synchronize()  # nothing has been measured yet
        while self._pending and self._pending[0][-1].query():
            e0, e1, e2 = self._pending.popleft()
            self._last = (e0.elapsed_time(e1) / 1000.0, e1.elapsed_time(e2) / 1000.0)
        return self._last if self._last is not None else (math.nan, math.nan)
