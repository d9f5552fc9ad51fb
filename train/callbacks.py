"""Trainer callbacks: speed monitor, metric printer, CSV history, checkpoints and training-curve plots.

Hooks receive the trainer and a `logs` dict. Per batch (`on_batch_end`) the trainer puts in `logs`: `epoch`,
`batch`, `lr`, `shape`, `batch_size`, `cycle`, `loss`, `top1`, `top5` (batch), `epoch_loss`, `epoch_top1`,
`epoch_top5` (running, sample-weighted), `time_read`, `time_forward`, `time_backward` (seconds) and `finite`.
At `on_epoch_end`, `logs["train"]` and (when validated) `logs["val"]` hold the epoch's figures.
Only rank 0 prints or writes files.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from data.atomic import atomic_write, save_figure_png
from train.auto_resume import list_mid_checkpoints, mid_checkpoint_path
from train.checkpoint import (
    best_checkpoint_path,
    checkpoint_path,
    list_checkpoints,
    nonfinite_tensors,
    remove_stale_temp_files,
    save_checkpoint,
    unwrap_model,
)
from train.distributed import DistInfo
from train.metrics import WindowAverage
from train.precision import NonFiniteLossError

log = logging.getLogger(__name__)


class TrainerState(Protocol):
    """What callbacks may read of the trainer (and `stop_training`, which they may set)."""

    epoch: int
    start_epoch: int
    end_epoch: int
    num_batches: int
    model: Any  # the model being trained (DDP-wrapped when distributed)
    loader_info: Any  # train.loaders.EpochInfo of the current epoch
    dist: DistInfo
    history: list[dict[str, Any]]
    stop_training: bool


class Callback:
    """Base class: override the hooks you need (the defaults do nothing)."""

    def on_train_begin(self, trainer: TrainerState, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: TrainerState, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_begin(self, trainer: TrainerState, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: TrainerState, epoch: int, logs: dict[str, Any]) -> None:
        pass

    def on_batch_begin(self, trainer: TrainerState, batch: int, logs: dict[str, Any]) -> None:
        pass

    def on_batch_end(self, trainer: TrainerState, batch: int, logs: dict[str, Any]) -> None:
        pass

    def on_validation_end(self, trainer: TrainerState, logs: dict[str, Any]) -> None:
        pass

    def on_interrupt(self, trainer: TrainerState, logs: dict[str, Any]) -> None:
        """Training stops on a signal: `logs` has `epoch`, `batch` (done), `state` (mid-epoch), `signal`."""


class CallbackList(Callback):
    """Calls each hook on every callback, in order (order matters: SpeedMonitor before MetricPrinter)."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def append(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def _each(self, hook: str, *args: Any) -> None:
        for c in self.callbacks:
            getattr(c, hook)(*args)

    def on_train_begin(self, trainer, logs):
        self._each("on_train_begin", trainer, logs)

    def on_train_end(self, trainer, logs):
        self._each("on_train_end", trainer, logs)

    def on_epoch_begin(self, trainer, epoch, logs):
        self._each("on_epoch_begin", trainer, epoch, logs)

    def on_epoch_end(self, trainer, epoch, logs):
        self._each("on_epoch_end", trainer, epoch, logs)

    def on_batch_begin(self, trainer, batch, logs):
        self._each("on_batch_begin", trainer, batch, logs)

    def on_batch_end(self, trainer, batch, logs):
        self._each("on_batch_end", trainer, batch, logs)

    def on_validation_end(self, trainer, logs):
        self._each("on_validation_end", trainer, logs)

    def on_interrupt(self, trainer, logs):
        self._each("on_interrupt", trainer, logs)


# ---------------------------------------------------------------------------------------------- speed
_RED, _YELLOW, _GREEN, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[0m"
SPEED_THRESHOLDS = {"read": (100.0, 3000.0), "forward": (50.0, 300.0), "backward": (20.0, 200.0)}


def use_colour() -> bool:
    """Colour when the log terminal (stderr) is a TTY and NO_COLOR is not set."""
    return sys.stderr.isatty() and "NO_COLOR" not in os.environ


# Share of the step time spent waiting for data: below the first, green; below the second, yellow; else red.
DATA_WAIT_THRESHOLDS = (0.10, 0.30)


def colour_data_wait(share: float, colour: bool = True) -> str:
    """`share` as a percentage, coloured by `DATA_WAIT_THRESHOLDS` (red: the loader is the bottleneck)."""
    text = f"{100 * share:.0f}%"
    if not colour:
        return text
    low, high = DATA_WAIT_THRESHOLDS
    code = _GREEN if share < low else _YELLOW if share < high else _RED
    return f"{code}{text}{_RESET}"


def colour_speed(value: float, kind: str, colour: bool = True) -> str:
    """`value` in `%.2e`, red below the first threshold of `kind`, yellow below the second, else green."""
    text = f"{value:.2e}" if math.isfinite(value) else "n/a"
    if not colour or not math.isfinite(value):
        return text
    low, high = SPEED_THRESHOLDS[kind]
    code = _RED if value < low else _YELLOW if value < high else _GREEN
    return f"{code}{text}{_RESET}"


def format_duration(seconds: float) -> str:
    """`H:MM:SS` (or `n/a`)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "n/a"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class SpeedMonitor(Callback):
    """Read / forward / backward speed in clips/s over a sliding window of batches, and ETAs.

    Read is the time spent waiting for the next batch; forward and backward are timed by the trainer with
    device synchronisation. Adds to the batch logs `speed` (dict), `data_fraction` (share of the step time spent
    waiting for data: near 1 the loader is the bottleneck, near 0 the model), `speed_text` (`Speed (r=.. f=..
    b=..) clips/s, data 12%`), `eta_epoch` and `eta_run` (seconds). With `verbose=True` it also logs the line itself every
    `log_interval` batches (otherwise MetricPrinter prints it with the metrics).

    Colours: the data-wait share on every device (`DATA_WAIT_THRESHOLDS`); the clips/s figures only on a GPU, where
    SRTG's thresholds (`SPEED_THRESHOLDS`, set for 2080 Ti GPUs) mean something; on a CPU they would always be red.
    """

    def __init__(self, window: int = 20, log_interval: int = 10, verbose: bool = False,
                 colour: bool | None = None) -> None:
        self.window = window
        self.log_interval = max(1, log_interval)
        self.verbose = verbose
        self.colour = use_colour() if colour is None else colour
        self.read = WindowAverage(window)
        self.forward = WindowAverage(window)
        self.backward = WindowAverage(window)
        self.batch_time = WindowAverage(window)
        self.val_seconds = float("nan")
        self.gpu = False

    def on_epoch_begin(self, trainer, epoch, logs):
        self.gpu = getattr(getattr(trainer, "device", None), "type", "cpu") == "cuda"
        # A new epoch may bring a new batch shape (multigrid): old timings would mislead.
        for w in (self.read, self.forward, self.backward, self.batch_time):
            w.reset()

    def on_batch_end(self, trainer, batch, logs):
        n = logs["batch_size"]
        self.read.update(n, logs["time_read"])
        self.forward.update(n, logs["time_forward"])
        self.backward.update(n, logs["time_backward"])
        self.batch_time.update(1, logs["time_read"] + logs["time_forward"] + logs["time_backward"])
        speed = {"read": self.read.rate, "forward": self.forward.rate, "backward": self.backward.rate}
        per_batch = self.batch_time.mean_seconds
        read_s, step_s = self.read.seconds, self.batch_time.seconds
        logs["data_fraction"] = read_s / step_s if step_s > 0 else float("nan")
        eta_epoch = (trainer.num_batches - batch - 1) * per_batch
        epochs_left = trainer.end_epoch - logs["epoch"]
        val_left = 0.0
        if math.isfinite(self.val_seconds) and trainer.val_loader is not None:
            val_left = self.val_seconds * (1 + epochs_left // trainer.val_frequency)
        eta_run = eta_epoch + epochs_left * trainer.num_batches * per_batch + val_left
        logs.update(speed=speed, eta_epoch=eta_epoch, eta_run=eta_run, speed_text=self.format(speed, logs["data_fraction"]))
        if self.verbose and trainer.dist.is_main and (batch + 1) % self.log_interval == 0:
            log.info("Epoch [%d] Batch [%d/%d] %s, ETA epoch %s, run %s", logs["epoch"], batch + 1,
                     trainer.num_batches, logs["speed_text"], format_duration(eta_epoch), format_duration(eta_run))

    def on_validation_end(self, trainer, logs):
        self.val_seconds = logs["val"]["seconds"]

    def format(self, speed: dict[str, float], data_fraction: float = float("nan")) -> str:
        """`Speed (r=.. f=.. b=..) clips/s` and, when known, `, data NN%` (share of step time waiting for data)."""
        figures = self.colour and self.gpu
        r = colour_speed(speed["read"], "read", figures)
        f = colour_speed(speed["forward"], "forward", figures)
        b = colour_speed(speed["backward"], "backward", figures)
        text = f"Speed (r={r} f={f} b={b}) clips/s"
        return text + (f", data {colour_data_wait(data_fraction, self.colour)}" if math.isfinite(data_fraction)
                       else "")


# ---------------------------------------------------------------------------------------------- metrics
def describe_cycle(info: Any, cycle: int | None) -> str:
    """Multigrid position of a batch for the logs ('' for a plain run); `info` is the epoch's `EpochInfo`."""
    parts = []
    if info is not None and info.long_cycle:
        parts.append(info.long_cycle)
    if cycle is not None:
        crops = None if info is None else info.short_crops
        parts.append(f"short cycle {cycle + 1}/{len(crops or ()) or 3}")
    return ", ".join(parts)


class MetricPrinter(Callback):
    """Logs loss, top-1, top-5, batch shape and lr every `log_interval` batches, and the epoch summaries."""

    def __init__(self, log_interval: int = 10) -> None:
        self.log_interval = max(1, log_interval)

    def on_epoch_begin(self, trainer, epoch, logs):
        if not trainer.dist.is_main:
            return
        info = logs["info"]
        if info.description:  # multigrid: the epoch's shape, batch and lr scaling
            log.info("Epoch [%d/%d] %d batches, %s", epoch, trainer.end_epoch, logs["num_batches"],
                     info.description)
            return
        log.info("Epoch [%d/%d] %d batches of %d clips x %d frames x %dpx", epoch, trainer.end_epoch,
                 logs["num_batches"], info.batch_size, info.clip_length, info.crop_size)

    def on_batch_end(self, trainer, batch, logs):
        if not trainer.dist.is_main:
            return
        if (batch + 1) % self.log_interval and batch + 1 != trainer.num_batches:
            return
        if not logs.get("finite", True):
            return
        shape = "x".join(str(s) for s in logs["shape"])
        cycle = describe_cycle(trainer.loader_info, logs.get("cycle"))
        line = (f"Epoch [{logs['epoch']}] Batch [{batch + 1}/{trainer.num_batches}] loss={logs['loss']:.4f} "
                f"top1={logs['top1']:.1f} top5={logs['top5']:.1f} (epoch: loss={logs['epoch_loss']:.4f} "
                f"top1={logs['epoch_top1']:.1f}) batch={shape} lr={logs['lr']:.2e}")
        if cycle:
            line += f" [{cycle}]"
        if "speed_text" in logs:
            line += f" {logs['speed_text']} ETA epoch {format_duration(logs['eta_epoch'])} run " \
                    f"{format_duration(logs['eta_run'])}"
        log.info(line)

    def on_validation_end(self, trainer, logs):
        if not trainer.dist.is_main:
            return
        v = logs["val"]
        log.info("Epoch [%d] val: loss=%.4f clip@1=%.2f clip@5=%.2f video@1=%.2f video@5=%.2f "
                 "(%d clips, %d videos, %.1fs%s)", logs["epoch"], v["loss"], v["clip_top1"], v["clip_top5"],
                 v["video_top1"], v["video_top5"], v["clips"], v["videos"], v["seconds"],
                 f", of which precise BN {v['precise_bn_seconds']:.1f}s" if v.get("precise_bn_seconds") else "")

    def on_epoch_end(self, trainer, epoch, logs):
        if not trainer.dist.is_main:
            return
        t = logs["train"]
        log.info("Epoch [%d] train: loss=%.4f top1=%.2f top5=%.2f (%d clips, %.1f clips/s, %.1fs)", epoch,
                 t["loss"], t["top1"], t["top5"], t["samples"], t["clips_per_s"], t["seconds"])


# ---------------------------------------------------------------------------------------------- CSV
TRAIN_FIELDS = ("epoch", "top1", "top5", "loss", "clips_per_s", "seconds", "lr")
VAL_FIELDS = ("epoch", "top1", "top5", "loss", "clips_per_s", "seconds", "video_top1", "video_top5")


def _write_csv_atomic(path: Path, fields: Sequence[str], rows: list[dict[str, Any]]) -> None:
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_csv_rows(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a history CSV as numbers (empty list if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else float("nan")) for k, v in row.items()}
                for row in csv.DictReader(f)]


class CSVHistory(Callback):
    """`train_results.csv` and `val_results.csv` in `out_dir`, one row per epoch, sample-weighted figures.

    Val `top1`/`top5` are clip accuracies; `video_top1`/`video_top5` average the softmax over each video's
    clips. On resume, rows of epochs at or after the resumed epoch are dropped, so no epoch appears twice.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.train_path = self.out_dir / "train_results.csv"
        self.val_path = self.out_dir / "val_results.csv"
        self.train_rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []

    def on_train_begin(self, trainer, logs):
        keep = trainer.start_epoch
        self.train_rows = [r for r in read_csv_rows(self.train_path) if r["epoch"] < keep] if keep > 1 else []
        self.val_rows = [r for r in read_csv_rows(self.val_path) if r["epoch"] < keep] if keep > 1 else []
        for r in self.train_rows + self.val_rows:
            r["epoch"] = int(r["epoch"])
        self._write(trainer)

    def on_epoch_end(self, trainer, epoch, logs):
        t = logs["train"]
        self.train_rows.append({"epoch": epoch, "top1": t["top1"], "top5": t["top5"], "loss": t["loss"],
                                "clips_per_s": t["clips_per_s"], "seconds": t["seconds"], "lr": logs["lr"]})
        if "val" in logs:
            v = logs["val"]
            self.val_rows.append({"epoch": epoch, "top1": v["clip_top1"], "top5": v["clip_top5"],
                                  "loss": v["loss"], "clips_per_s": v["clips_per_s"], "seconds": v["seconds"],
                                  "video_top1": v["video_top1"], "video_top5": v["video_top5"]})
        self._write(trainer)

    def _write(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        _write_csv_atomic(self.train_path, TRAIN_FIELDS, self.train_rows)
        _write_csv_atomic(self.val_path, VAL_FIELDS, self.val_rows)


# ---------------------------------------------------------------------------------------------- checkpoints
class Checkpointer(Callback):
    """Saves `<model_dir>/<network>_ep-<epoch:04d>.pth` every `save_frequency` epochs (and at the last epoch),
    `<network>_best.pth` whenever the validation `monitor` figure improves (validation split only, never
    train), and keeps only the newest `keep_last` epoch files (0 keeps all).

    `meta` is stored in every file next to the trainer's state (network, classes, preprocess, args, ...).
    """

    def __init__(self, model_dir: str | os.PathLike, network: str, meta: dict[str, Any], save_frequency: int = 1,
                 keep_last: int = 0, monitor: str = "video_top1", best_so_far: float | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.network = network
        self.meta = dict(meta)
        self.save_frequency = max(1, save_frequency)
        self.keep_last = max(0, keep_last)
        self.monitor = monitor
        self.best = best_so_far
        self.best_epoch: int | None = None
        self.last_path: Path | None = None

    def on_train_begin(self, trainer, logs):
        if trainer.dist.is_main:
            remove_stale_temp_files(self.model_dir)

    def on_epoch_end(self, trainer, epoch, logs):
        # On every rank (DDP keeps the weights equal, so all stop together): a model of NaNs is never saved,
        # never "best", and ends the run with an error; the previous checkpoints stay as they were.
        model = getattr(trainer, "model", None)
        weights = unwrap_model(model).state_dict() if model is not None else {}
        bad = nonfinite_tensors(weights)
        if bad:
            total = len(weights)
            raise NonFiniteLossError(f"epoch {epoch}: {len(bad)} of {total} model tensors hold NaN/inf (e.g. "
                                     f"{bad[0]}); not saved. Lower --lr-base or use --clip-grad-norm")
        val = logs.get("val")
        if val is not None and not math.isfinite(val.get("loss", 0.0)):
            raise NonFiniteLossError(f"epoch {epoch}: validation loss is {val['loss']} (the model's outputs are not "
                                     "finite); not saved. Lower --lr-base or use --clip-grad-norm")
        # A NaN figure must never count as an improvement (nor become the best that later ones are compared to).
        scored = val is not None and math.isfinite(val[self.monitor])
        improved = scored and (self.best is None or val[self.monitor] > self.best)
        if improved:
            self.best = val[self.monitor]
            self.best_epoch = epoch
        periodic = epoch % self.save_frequency == 0 or epoch == trainer.end_epoch or trainer.stop_training
        if not trainer.dist.is_main or not (periodic or improved):
            return
        state = trainer.state_dict()
        state.update(self.meta)
        state["metrics"] = {"train": logs["train"], "val": val, "best": self.best, "monitor": self.monitor}
        if periodic:
            self.last_path = save_checkpoint(state, checkpoint_path(self.model_dir, self.network, epoch))
            log.info("saved checkpoint %s", self.last_path)
            self._prune()
            self._prune_mid_epoch(epoch)
        if improved:
            path = save_checkpoint(state, best_checkpoint_path(self.model_dir, self.network))
            log.info("new best %s=%.2f at epoch %d: %s", self.monitor, self.best, epoch, path)

    def on_interrupt(self, trainer, logs):
        if not trainer.dist.is_main:
            return
        state = dict(logs["state"])
        state.update(self.meta)
        state["metrics"] = {"train": None, "val": None, "best": self.best, "monitor": self.monitor}
        path = save_checkpoint(state, mid_checkpoint_path(self.model_dir, self.network, logs["epoch"], logs["batch"]))
        logs["checkpoint"] = path
        self.last_path = path
        log.info("saved mid-epoch checkpoint %s (epoch %d, %d batches done)", path, logs["epoch"], logs["batch"])

    def _prune_mid_epoch(self, epoch_done: int) -> None:
        # A mid-epoch file is superseded once its epoch has a complete checkpoint.
        for (epoch, _), path in list_mid_checkpoints(self.model_dir, self.network).items():
            if epoch <= epoch_done:
                path.unlink(missing_ok=True)

    def _prune(self) -> None:
        if not self.keep_last:
            return
        found = list_checkpoints(self.model_dir, self.network)
        for epoch in list(found)[: -self.keep_last]:
            found[epoch].unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- plots
class PlotCurves(Callback):
    """`curves.png`: loss and top-1 over epochs for train and val, redrawn after every epoch."""

    def __init__(self, path: str | os.PathLike, history: CSVHistory) -> None:
        self.path = Path(path)
        self.history = history

    def on_epoch_end(self, trainer, epoch, logs):
        if trainer.dist.is_main:
            plot_curves(self.path, self.history.train_rows, self.history.val_rows)


def plot_curves(path: str | os.PathLike, train_rows: list[dict[str, Any]], val_rows: list[dict[str, Any]]) -> Path:
    """Draw loss and accuracy curves to `path` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if train_rows:
        ep = [r["epoch"] for r in train_rows]
        ax_loss.plot(ep, [r["loss"] for r in train_rows], "o-", label="train")
        ax_acc.plot(ep, [r["top1"] for r in train_rows], "o-", label="train top-1")
    if val_rows:
        ep = [r["epoch"] for r in val_rows]
        ax_loss.plot(ep, [r["loss"] for r in val_rows], "s-", label="val")
        ax_acc.plot(ep, [r["top1"] for r in val_rows], "s-", label="val clip@1")
        ax_acc.plot(ep, [r["video_top1"] for r in val_rows], "^--", label="val video@1")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Top-1", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure_png(fig, path)
