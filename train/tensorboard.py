"""TensorBoard logging of a run (`--tensorboard`): scalars, the validation confusion matrix and the arguments.

Written to `MODEL_DIR/tensorboard` on rank 0 only; view with `tensorboard --logdir MODEL_DIR`. Needs the optional
`tensorboard` package (requirements-tensorboard.txt). Steps are global batch indices (epoch - 1) x batches +
batch, so curves of a resumed run continue where the interrupted one stopped (`purge_step` drops what the
interrupted run logged after its checkpoint).

Tags: `train/loss`, `train/top1`, `train/top5`, `train/lr`, `batch/clips`, `batch/frames`, `batch/crop`,
`speed/read`, `speed/forward`, `speed/backward` (clips/s), `time/data_s`, `time/data_fraction`; per epoch
`epoch/train_*` and `epoch/val_*`; image `val/confusion_matrix`; text `run/arguments`.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train.callbacks import Callback

__all__ = ["TensorBoardLogger", "confusion_image"]

log = logging.getLogger(__name__)


def confusion_image(cm: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The confusion matrix (rows: true class) drawn as an RGB image `(3, H, W)` uint8, row-normalised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(3 + 0.4 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true")
    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba()).copy()
    plt.close(fig)
    return np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class TensorBoardLogger(Callback):
    """Writes the run's scalars every `log_interval` batches, the epoch figures and the confusion matrix."""

    def __init__(self, log_dir: str | os.PathLike, args: dict[str, Any] | None = None,
                 classes: Sequence[str] = (), log_interval: int = 10) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs the tensorboard package: pip install -r "
                             "requirements-tensorboard.txt") from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self.args = dict(args or {})
        self.classes = list(classes)
        self.log_interval = max(1, log_interval)
        self.writer: Any = None
        self.steps_per_epoch = 0

    def _step(self, trainer: Any, batch: int) -> int:
        return (trainer.epoch - 1) * max(trainer.num_batches, 1) + batch + 1

    def on_train_begin(self, trainer, logs):
        if not trainer.dist.is_main:
            return
        self.writer = self._writer_class(str(self.log_dir))
        rows = "\n".join(f"| {k} | `{v}` |" for k, v in sorted(self.args.items()))
        self.writer.add_text("run/arguments", "| argument | value |\n|---|---|\n" + rows, global_step=0)

    def on_epoch_begin(self, trainer, epoch, logs):
        if self.writer is None:
            return
        if epoch == trainer.start_epoch and epoch > 1:
            # A resumed run: drop whatever the interrupted run logged past its checkpoint.
            self.writer.close()
            self.writer = self._writer_class(str(self.log_dir), purge_step=self._step(trainer, -1))

    def on_batch_end(self, trainer, batch, logs):
        if self.writer is None or ((batch + 1) % self.log_interval and batch + 1 != trainer.num_batches):
            return
        step = self._step(trainer, batch)
        w = self.writer
        for key in ("loss", "top1", "top5"):
            if _finite(logs.get(key)):
                w.add_scalar(f"train/{key}", logs[key], step)
        w.add_scalar("train/lr", logs["lr"], step)
        shape = logs["shape"]
        w.add_scalar("batch/clips", shape[0], step)
        if len(shape) == 5:
            w.add_scalar("batch/frames", shape[2], step)
            w.add_scalar("batch/crop", shape[3], step)
        for kind, rate in (logs.get("speed") or {}).items():
            if _finite(rate):
                w.add_scalar(f"speed/{kind}", rate, step)
        w.add_scalar("time/data_s", logs["time_read"], step)
        if _finite(logs.get("data_fraction")):
            w.add_scalar("time/data_fraction", logs["data_fraction"], step)

    def on_validation_end(self, trainer, logs):
        if self.writer is None:
            return
        result = logs.get("result")
        if result is not None and getattr(result, "confusion", None) is not None:
            cm = np.asarray(result.confusion)
            names = self.classes or [str(i) for i in range(cm.shape[0])]
            self.writer.add_image("val/confusion_matrix", confusion_image(cm, names), logs["epoch"])

    def on_epoch_end(self, trainer, epoch, logs):
        if self.writer is None:
            return
        for part in ("train", "val"):
            for key, value in (logs.get(part) or {}).items():
                if _finite(value):
                    self.writer.add_scalar(f"epoch/{part}_{key}", value, epoch)
        self.writer.add_scalar("epoch/lr", logs["lr"], epoch)
        self.writer.flush()

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def on_interrupt(self, trainer, logs):
        self._close()

    def on_train_end(self, trainer, logs):
        self._close()
