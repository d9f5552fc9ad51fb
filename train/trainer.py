"""The training loop: epochs of (read, forward, backward) with callbacks, validation and resumable state.

The train loader comes from a factory called once per epoch, `loader_for_epoch(epoch) -> (loader, info)`, so
that multigrid training can change the batch shape between epochs (and rebuild workers only then); `info`
(`train.loaders.EpochInfo`) carries `lr_scale` (multiplies the lr) and the multigrid shape. A plain run uses a
factory that returns the same loader every epoch (`train.loaders.FixedLoader`). Callbacks are any object with the
hooks of `TrainerHooks` (`train.callbacks.CallbackList` is one); the trainer knows nothing else of them.

Randomness is re-seeded at the start of every epoch from (seed, epoch, rank), and the factory calls
`set_epoch` on the sampler and the dataset, so an epoch's data order, augmentation and dropout depend only on
those: resuming from a checkpoint continues exactly as an uninterrupted run would (the RNG states are also
stored in the checkpoint and restored).

Preemption: given a `preemption` flag (`train.preemption.PreemptionHandler`), the trainer checks it after every
optimizer step on every rank; on a signal it hands a mid-epoch state to the callbacks' `on_interrupt` (the
checkpointer writes it) and raises `TrainingInterrupted`. Resuming such a state replays the interrupted epoch's
first batches through the loader without training on them (so every data draw, in the main process or in the
workers, is the one an uninterrupted run makes), then restores the RNG states saved at the interruption (every
rank its own: the checkpoint holds all of them, and a resume with another number of processes says it is not exact).
No rank leaves the interruption before rank 0's checkpoint is written.

Host-device synchronisation: the loop reads nothing back from the device per batch except, once per optimizer
step, whether the gradients are finite (`Precision.step`). Loss and accuracy stay on the device and are read
every `metrics_interval` batches in one transfer (`train.step_figures`); forward/backward times come from CUDA
events; under DDP the preemption flag is all-reduced every `metrics_interval` optimizer steps. A non-finite
loss is still back-propagated (so DDP's gradient all-reduce never waits for a rank that skipped) and its step is
skipped on every rank; with `grad_accum` that skips the whole optimizer step it belongs to. `input_transform`
prepares each batch once on the device (the normalisation of uint8 clips, `data.transforms.NormalizeBatch`).

Recipe options: `grad_accum` micro-batches per optimizer step (the lr follows the step, not the micro-batch),
`mixer` (`train.mixing.ClipMixer`, soft targets) and `ema` (`train.ema.ModelEMA`, updated after every step,
validated and checkpointed next to the raw weights).
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from data.rank_logging import SAME_ON_EVERY_RANK
from data.views import flatten_views
from train.checkpoint import capture_rng_state, model_state_dict, restore_rng_state, unwrap_model
from train.distributed import (
    DistInfo,
    all_gather_objects,
    all_ranks_true,
    all_reduce_max,
    all_reduce_sum,
    broadcast_buffers,
)
from train.loaders import EpochInfo
from train.lr_schedule import StepLRSchedule
from train.metrics import ClassificationSums, EvalResult, VideoAccumulator
from train.precise_bn import PreciseBN
from train.precision import NonFiniteGuard, Precision
from train.preemption import TrainingInterrupted
from train.step_figures import BatchFigures, StepTimer

log = logging.getLogger(__name__)


class LoaderFactory(Protocol):
    """Gives the train loader for an epoch and remembers its position for resume."""

    def __call__(self, epoch: int) -> tuple[Iterable, EpochInfo]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainerHooks(Protocol):
    """What the trainer calls on its callbacks (`train.callbacks.CallbackList` implements it)."""

    def on_train_begin(self, trainer: Any, logs: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Any, logs: dict[str, Any]) -> None: ...

    def on_epoch_begin(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_batch_begin(self, trainer: Any, batch: int, logs: dict[str, Any]) -> None: ...

    def on_batch_end(self, trainer: Any, batch: int, logs: dict[str, Any]) -> None: ...

    def on_validation_end(self, trainer: Any, logs: dict[str, Any]) -> None: ...

    def on_interrupt(self, trainer: Any, logs: dict[str, Any]) -> None: ...


class _NoHooks:
    """Callbacks of a trainer given none."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one epoch on one rank (distinct for every (epoch, rank) pair below 1000 ranks)."""
    return seed * 1_000_003 + epoch * 1000 + rank


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(clips, labels, video_index or None) from a collated batch."""
    if isinstance(batch, dict):
        return batch["clips"], batch["labels"], batch.get("video_index")
    clips, labels = batch[0], batch[1]
    return clips, labels, (batch[2] if len(batch) > 2 else None)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_videos: int, num_classes: int,
             device: torch.device, precision: Precision | None = None,
             criterion: Callable | None = None, dist_info: DistInfo | None = None,
             max_batches: int | None = None, progress: bool = False,
             input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EvalResult:
    """Clip@1/5, video@1/5 (softmax averaged over each video's clips), loss and confusion matrix.

    With `dist_info.distributed`, each rank must see a disjoint shard of the clips (`ShardSampler`); the
    per-video sums are all-reduced so every rank returns the same, exact result. `input_transform` prepares each
    batch on the device (the trainer's normalisation of uint8 clips).
    """
    model.eval()
    criterion = criterion or nn.CrossEntropyLoss()
    acc = VideoAccumulator(num_videos, num_classes)
    batches: Iterable = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="evaluate", unit="batch", leave=False)
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        clips, labels, video_index = _unpack(batch)
        if video_index is None:
            raise ValueError("evaluation batches must carry the video index of each clip")
        clips, labels, video_index = flatten_views(clips, labels, video_index)  # multi-view: N x V clips
        clips = clips.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if input_transform is not None:
            clips = input_transform(clips)
        with precision.autocast() if precision else contextlib.nullcontext():
            logits = model(clips)
        logits = logits.float()
        loss = criterion(logits, labels)
        acc.add(logits, labels, video_index, float(loss))
    if dist_info is not None and dist_info.distributed:
        acc.reduce(lambda t: all_reduce_sum(t, dist_info), lambda t: all_reduce_max(t, dist_info))
    return acc.result()


class Trainer:
    """Runs `fit()` over epochs `start_epoch..end_epoch` (1-based, inclusive) and calls the callbacks.

    Public state read by callbacks: `epoch`, `end_epoch`, `start_epoch`, `num_batches`, `loader_info`,
    `dist`, `history` (per-epoch dicts), `stop_training` (set it to end after the current epoch).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader_for_epoch: LoaderFactory,
                 *, scheduler: StepLRSchedule, end_epoch: int, val_loader: Iterable | None = None,
                 num_val_videos: int = 0, num_classes: int = 0, criterion: nn.Module | None = None,
                 precision: Precision | None = None, dist_info: DistInfo | None = None,
                 callbacks: TrainerHooks | None = None, start_epoch: int = 1, seed: int = 0,
                 max_batches: int | None = None, val_frequency: int = 1, max_nonfinite: int = 5,
                 clip_grad_norm: float | None = None, precise_bn: PreciseBN | None = None,
                 preemption: Any = None, grad_accum: int = 1, mixer: Any = None, ema: Any = None,
                 metrics_interval: int = 1, input_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
                 ) -> None:
        self.dist = dist_info or DistInfo()
        self.precise_bn = precise_bn
        self.device = self.dist.device
        self.model = model
        self.optimizer = optimizer
        self.loader_for_epoch = loader_for_epoch
        self.scheduler = scheduler
        self.val_loader = val_loader
        self.num_val_videos = num_val_videos
        self.num_classes = num_classes
        self.criterion = criterion or nn.CrossEntropyLoss()
        self.precision = precision or Precision("fp32", self.device)
        self.callbacks = callbacks if callbacks is not None else _NoHooks()
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.seed = seed
        self.max_batches = max_batches
        self.val_frequency = max(1, val_frequency)
        self.guard = NonFiniteGuard(max_nonfinite)
        self.clip_grad_norm = clip_grad_norm
        self.epoch = start_epoch
        self.num_batches = 0
        self.loader_info: EpochInfo | None = None
        self.history: list[dict[str, Any]] = []
        self.stop_training = False
        self.preemption = preemption
        if grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
        self.grad_accum = int(grad_accum)
        self.mixer = mixer
        self.ema = ema
        self.metrics_interval = max(1, int(metrics_interval))
        self.input_transform = input_transform
        self.val_criterion = nn.CrossEntropyLoss()  # validation loss stays plain cross-entropy (no smoothing)
        self._mid_epoch: dict[str, Any] | None = None

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[dict[str, Any]]:
        """Train from `start_epoch` to `end_epoch`; returns the per-epoch history (train and val figures)."""
        self.callbacks.on_train_begin(self, {})
        for epoch in range(self.start_epoch, self.end_epoch + 1):
            self.epoch = epoch
            logs: dict[str, Any] = {"epoch": epoch, "train": self.train_epoch(epoch)}
            validating = self.val_loader is not None and (epoch % self.val_frequency == 0 or epoch == self.end_epoch)
            bn_seconds = 0.0
            if self.precise_bn is not None and (validating or epoch == self.end_epoch):
                # The BN averages are only read by evaluation: refresh them when they are about to be used (this
                # validation, or the final checkpoint), counted with the validation's time, not the epoch's.
                bn_seconds = self.precise_bn(unwrap_model(self.model), self.device, epoch, self.precision.autocast)
            if validating:
                start = time.perf_counter()
                result = self.validate()
                val = result.as_dict()
                seconds = time.perf_counter() - start
                val["clips_per_s"] = result.clips / max(seconds, 1e-9)
                val["seconds"] = seconds + bn_seconds
                val["precise_bn_seconds"] = bn_seconds
                logs["val"] = val
                if self.ema is not None:
                    val.update(self._validate_ema())
                self.callbacks.on_validation_end(self, {"epoch": epoch, "val": val, "result": result})
            logs["lr"] = self.scheduler.current_lr
            self.history.append(logs)
            self.callbacks.on_epoch_end(self, epoch, logs)
            if self.preemption is not None and epoch < self.end_epoch and self.preemption.should_stop(self.dist):
                # Signalled during validation or the checkpoint: stop before the next epoch starts.
                self._interrupt(epoch + 1, 0, ClassificationSums())
            if self.stop_training:
                log.info("training stopped after epoch %d", epoch)
                break
        self.callbacks.on_train_end(self, {"history": self.history})
        return self.history

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch over the loader the factory gives for `epoch`; returns sample-weighted figures."""
        seed = epoch_seed(self.seed, epoch, self.dist.rank)
        seed_everything(seed)
        if self.mixer is not None:
            self.mixer.reseed(seed)
        loader, info = self.loader_for_epoch(epoch)
        self.loader_info = info
        self.num_batches = len(loader) if self.max_batches is None else min(len(loader), self.max_batches)
        lr_scale = float(info.lr_scale)
        self.model.train()
        self.callbacks.on_epoch_begin(self, epoch, {"info": self.loader_info, "num_batches": self.num_batches})
        sums = ClassificationSums()
        mid, self._mid_epoch = (self._mid_epoch if self._mid_epoch and self._mid_epoch["epoch"] == epoch
                                else None), None
        skip = int(mid["batches_done"]) if mid else 0
        if mid and self.dist.is_main:  # the saved sums are over all ranks: count them once
            sums = ClassificationSums.from_tensor(mid["sums"])
        resumed_clips = ClassificationSums.from_tensor(mid["sums"]).count if mid else 0
        if skip and self.dist.is_main:
            log.info("resuming epoch %d after batch %d: replaying the loader up to there (no training)", epoch, skip)
        epoch_start = time.perf_counter()
        t_end = epoch_start
        accum = self.grad_accum
        figures = BatchFigures()
        timer = StepTimer(self.device)
        for i, batch in enumerate(loader):
            if i >= self.num_batches:
                break
            if i < skip:
                if i == skip - 1:  # the next batch is the first one the interrupted run did not train on
                    restore_rng_state(mid["rng"])
                    if self.mixer is not None and mid.get("mixer"):
                        self.mixer.load_state_dict(mid["mixer"])
                t_end = time.perf_counter()
                continue
            t_read = time.perf_counter() - t_end
            clips, labels, _ = _unpack(batch)
            group_start = i - i % accum
            group_len = min(accum, self.num_batches - group_start)
            last_in_group = i == group_start + group_len - 1
            # One optimizer step per group of micro-batches: the lr is that of the step, as with the big batch.
            progress = (epoch - 1) + group_start / max(self.num_batches, 1)
            lr = self.scheduler.step(progress, lr_scale)
            logs: dict[str, Any] = {"epoch": epoch, "batch": i, "lr": lr, "shape": tuple(clips.shape),
                                    "batch_size": int(clips.shape[0]), "cycle": self._cycle(i, info)}
            self.callbacks.on_batch_begin(self, i, logs)

            timer.start()
            clips = clips.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            if self.input_transform is not None:
                clips = self.input_transform(clips)
            targets = labels
            if self.mixer is not None:
                clips, targets = self.mixer(clips, labels, self.num_classes)
            if i == group_start:
                self.optimizer.zero_grad(set_to_none=True)
            # DDP: all-reduce the gradients once per optimizer step, not per micro-batch.
            no_sync = (self.model.no_sync() if not last_in_group and hasattr(self.model, "no_sync")
                       else contextlib.nullcontext())
            no_sync.__enter__()
            with self.precision.autocast():
                logits = self.model(clips)
                loss = self.criterion(logits.float(), targets)
            timer.mark()
            figures.add(i, logits, labels, loss)
            # Backward even when the loss is not finite (no host read to find out): its gradients are not finite
            # either, on every rank once DDP has reduced them, and the step below is skipped everywhere.
            self.precision.backward(loss / group_len if group_len > 1 else loss)
            no_sync.__exit__(None, None, None)
            stepped = False
            if last_in_group:
                stepped = self.precision.step(self.optimizer, self.clip_grad_norm)
                # A non-finite loss is reported once, by the guard when its figures are read; this line is for
                # the gradients that overflowed from a finite loss (fp16).
                if not stepped and bool(torch.isfinite(loss.detach()).all()):
                    log.warning("epoch %d batch %d: non-finite gradients, step skipped%s", epoch, i,
                                f" (fp16 scale now {self.precision.scaler.get_scale():.0f})"
                                if self.precision.scaler.is_enabled() else "")
                elif self.ema is not None:
                    self.ema.update(unwrap_model(self.model))
            time_forward, time_backward = timer.stop()

            logs.update(stepped=stepped, time_read=t_read, time_forward=time_forward, time_backward=time_backward)
            if (i + 1) % self.metrics_interval == 0 or i + 1 == self.num_batches:
                row = figures.flush(sums, lambda r: self.guard.check(r.finite, f"epoch {epoch} batch {r.batch}"))
                logs["finite"] = row.finite
                if row.finite:
                    logs.update(loss=row.loss, top1=100.0 * row.top1 / row.size, top5=100.0 * row.top5 / row.size)
                logs.update(epoch_loss=sums.summary()["loss"] if sums.count else float("nan"),
                            epoch_top1=sums.summary()["top1"] if sums.count else float("nan"),
                            epoch_top5=sums.summary()["top5"] if sums.count else float("nan"))
            self.callbacks.on_batch_end(self, i, logs)
            steps_done = (group_start // accum) + 1
            if (self.preemption is not None and last_in_group
                    and (not self.dist.distributed or steps_done % self.metrics_interval == 0
                         or i + 1 == self.num_batches)
                    and self.preemption.should_stop(self.dist)):
                figures.flush(sums, lambda r: self.guard.check(r.finite, f"epoch {epoch} batch {r.batch}"))
                self._interrupt(epoch, i + 1, sums)
            t_end = time.perf_counter()

        figures.flush(sums, lambda r: self.guard.check(r.finite, f"epoch {epoch} batch {r.batch}"))
        if self.precise_bn is not None:
            self.precise_bn.note_epoch(self.loader_info)
        seconds = time.perf_counter() - epoch_start
        total = ClassificationSums.from_tensor(all_reduce_sum(sums.as_tensor(), self.dist))
        out = total.summary()
        out["seconds"] = seconds
        out["clips_per_s"] = (total.count - resumed_clips) / max(seconds, 1e-9)  # clips trained in this process
        out["nonfinite"] = self.guard.total
        return out

    def validate(self) -> EvalResult:
        """Evaluate on the validation loader (all ranks take part; every rank gets the reduced result)."""
        # Each rank updated its BN statistics on its own batches; evaluate (and save) rank 0's everywhere.
        broadcast_buffers(unwrap_model(self.model), self.dist)
        # The bare module: DDP's forward would broadcast buffers, and shards may differ in length by a batch.
        return evaluate(unwrap_model(self.model), self.val_loader, self.num_val_videos, self.num_classes, self.device,
                        self.precision, self.val_criterion, self.dist, self.max_batches,
                        input_transform=self.input_transform)

    def _validate_ema(self) -> dict[str, float]:
        """The EMA weights' validation figures, keyed `ema_<name>`."""
        broadcast_buffers(self.ema.module, self.dist)
        result = evaluate(self.ema.module, self.val_loader, self.num_val_videos, self.num_classes, self.device,
                          self.precision, self.val_criterion, self.dist, self.max_batches,
                          input_transform=self.input_transform)
        figures = {f"ema_{k}": v for k, v in result.as_dict().items() if isinstance(v, (int, float))}
        if self.dist.is_main:
            log.info("Epoch [%d] val (EMA weights): loss=%.4f clip@1=%.2f video@1=%.2f video@5=%.2f", self.epoch,
                     figures.get("ema_loss", float("nan")), figures.get("ema_clip_top1", float("nan")),
                     figures.get("ema_video_top1", float("nan")), figures.get("ema_video_top5", float("nan")))
        return figures

    def _interrupt(self, epoch: int, batches_done: int, sums: ClassificationSums) -> None:
        """Hand the mid-epoch state to the callbacks (rank 0 saves it) and raise `TrainingInterrupted`."""
        name = self.preemption.signal_name or "signal"
        state = self.state_dict()
        state["epoch"] = epoch - 1  # completed epochs; `mid_epoch` says how far into the next one
        # Every rank is here (the stop is agreed), so the epoch's running sums can be reduced for the file, and
        # every rank's own random state gathered: each rank draws its augmentation, dropout and mixing from its
        # own generators (seeded by rank), so a resume that gave every rank rank 0's state would draw differently.
        ranks = all_gather_objects({"rng": capture_rng_state(),
                                    "mixer": self.mixer.state_dict() if self.mixer is not None else {}}, self.dist)
        state["mid_epoch"] = {"epoch": epoch, "batches_done": batches_done,
                              "sums": all_reduce_sum(sums.as_tensor(), self.dist),
                              "rng": ranks[0]["rng"], "mixer": ranks[0]["mixer"],
                              "world_size": self.dist.world_size, "ranks": ranks}
        logs: dict[str, Any] = {"epoch": epoch, "batch": batches_done, "state": state, "signal": name}
        saved = False
        try:
            self.callbacks.on_interrupt(self, logs)
            saved = True
        finally:
            # No rank leaves before rank 0's checkpoint is on disk: a launcher that sees one process end may
            # stop the others, rank 0 in the middle of its save.
            all_ranks_true(saved, self.dist)
        raise TrainingInterrupted(name, epoch, batches_done, logs.get("checkpoint"))

    @staticmethod
    def _cycle(batch_index: int, info: EpochInfo) -> int | None:
        # The short-cycle batch sampler restarts every epoch and visits its shapes in turn.
        crops = info.short_crops
        return batch_index % len(crops) if crops else None

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the current epoch."""
        factory_state = self.loader_for_epoch.state_dict() if hasattr(self.loader_for_epoch, "state_dict") else {}
        return {
            "model": model_state_dict(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),
            "epoch": self.epoch,
            "multigrid": factory_state,
            "rng": capture_rng_state(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; training then continues with epoch `state['epoch'] + 1`."""
        unwrap_model(self.model).load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("scaler") or {})
        if state.get("multigrid") and hasattr(self.loader_for_epoch, "load_state_dict"):
            self.loader_for_epoch.load_state_dict(state["multigrid"])
        if state.get("rng"):
            restore_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"]) + 1
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        mid = state.get("mid_epoch")
        if mid:
            self._mid_epoch = self._own_mid_epoch_state(dict(mid))
            self.start_epoch = int(mid["epoch"])
        self.epoch = self.start_epoch

    def _own_mid_epoch_state(self, mid: dict[str, Any]) -> dict[str, Any]:
        """The mid-epoch state with this rank's own random state (saved per rank) in `rng` and `mixer`."""
        ranks = mid.get("ranks")
        saved_world = int(mid.get("world_size", 1 if ranks is None else len(ranks)))
        if ranks is not None and saved_world == self.dist.world_size:
            mid.update(rng=ranks[self.dist.rank]["rng"], mixer=ranks[self.dist.rank]["mixer"])
            return mid
        if self.dist.is_main and (saved_world != self.dist.world_size or self.dist.distributed):
            why = (f"was written by {saved_world} process(es) and this run has {self.dist.world_size}"
                   if saved_world != self.dist.world_size else "holds rank 0's random state only")
            log.warning("the mid-epoch checkpoint %s: the rest of epoch %d is not what an uninterrupted run "
                        "would train (other data shards and random draws; the weights stay valid), and later "
                        "epochs differ as a consequence. Resume with the same number of processes for an exact "
                        "continuation", why, int(mid["epoch"]), extra=SAME_ON_EVERY_RANK)
        return mid
