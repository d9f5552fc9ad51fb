"""Multigrid training (Wu et al., "A Multigrid Method for Efficiently Training Video Models", CVPR 2020).

Training cycles through cheaper input shapes with proportionally larger batches, so that every iteration costs
about the same and an epoch costs far less. We follow the SlowFast semantics:

**Long cycle** (`MultigridSchedule`): (T, S) factors `LONG_CYCLE_FACTORS` of the base clip length T and crop S,
giving shapes ``(t, s)`` with batch ``B * round(T*S^2 / (t*s^2))`` (8B, 4B, 2B, B). The shape changes at epoch
boundaries. Every learning-rate stage (``[0] + lr_steps``) except the last is split over the four shapes with
*equal iterations per shape*: a shape with an 8x larger batch has 8x fewer iterations per epoch, so its share of
the stage's epochs is proportional to its (average) batch factor. The last lr stage becomes a fine-tune phase at
the base shape, shortened by the same iteration saving as the rest; as in SlowFast, its first half keeps the
previous stage's lr and its second half uses the last one. The epoch counts are then rescaled so that the whole
schedule has ``round(end_epoch * epoch_factor)`` epochs (SlowFast's ``EPOCH_FACTOR`` is 1.5; we default to 1.0
so that a multigrid run has the same epoch budget as the baseline), rounding cumulatively to whole epochs (so a
very short schedule may give a shape zero epochs: `describe` shows it). The learning rate scales linearly with
the long-cycle batch factor (``lr_scale``); the temporal sampling interval is multiplied by ``round(T/t)`` so that
a short clip spans the same time as a full one.

**Short cycle** (`ShortCycleBatchSampler`): within an epoch, iterations cycle over crops
``[S/2, S/sqrt2, s]`` with batches ``b * round((s / crop)^2)`` (floored at 1), where ``S`` is the **base** crop
and ``s``/``b`` the current long-cycle crop/batch: 4b, 2b, b at full crop; 2b, b, b at ``S/sqrt2``. Taking the
factors of the base crop, not of the current one, avoids SlowFast issue #429 (factors of the current crop gave
2x/1x/1x and a slower-than-baseline phase). One batch sampler yields lists of ``(index, cycle)``; the dataset
maps ``cycle`` to a crop through ``dataset.short_cycle_sizes``, so one DataLoader serves all three shapes. The lr
is not scaled for the short cycle (SlowFast), unless ``short_lr_scaling`` says so (an ablation that gained
nothing on the benchmark, docs/BENCHMARKS.md). With the short cycle alone, lr steps and epochs are multiplied by
``epoch_factor``.

Rounding: clip lengths are rounded to the nearest integer, at least ``min_clip_length`` (a model's minimum) and at
most T; crops other than the base one are rounded to a multiple of ``crop_multiple`` (default 2: even sizes keep
stride-2 stems symmetric; use 8 or 16 for a network that needs its feature maps to divide evenly, e.g. models
without padding in their last pooling). Batch factors are computed from the rounded shapes, so an iteration keeps
about the cost of a base iteration.

**Batch norm** (`SubBatchNorm3d`, `convert_sub_batchnorm`): with both cycles the per-device batch grows up to 32x.
Plain BN would then normalise over 32x more clips than the baseline, which changes its regularising noise (the
multigrid paper and SlowFast keep BN statistics over a fixed number of clips). `SubBatchNorm3d` normalises each
group of ``group_size`` clips with its own statistics (`MultigridSchedule.bn_group_size`: the base per-device
batch, at least `BN_BASE_SIZE` = 8 like SlowFast, so a multigrid batch is normalised like a baseline batch) while
keeping one set of running statistics computed over the whole batch, and has exactly `nn.BatchNorm3d`'s parameters, buffers and state_dict keys, so checkpoints stay
interchangeable; in eval mode it *is* `BatchNorm3d`. Only 5-D (`BatchNorm3d`) layers are converted: 2-D BN inside
frame-stacked models (the MiCT 2-D branch, f-R2D) sees ``N*T`` frames and is left as is. Measured on CPU (4 motion
classes, r3d_18 at width 0.25, base batch 4, long cycle, 10 epochs, two seeds): video@1 91.7 / 94.0 with
sub-batch BN against 95.0 / 93.3 with plain BN, i.e. no difference beyond seed noise at these batch sizes (up to
32 clips) and no cost either; we keep the paper's choice, which also bounds the change of BN noise for the much
larger per-device batches of real runs (``tools.bench_multigrid`` runs the ``-plainbn`` ablation).

**Learning rate** (``lr_scaling``, `default_lr_scaling`): ``linear`` multiplies the lr by the batch factor (up
to 8; the paper and SlowFast, with SGD and a long warm-up), ``sqrt`` by its square root, ``none`` keeps it. The
trainer's ``auto`` picks linear for SGD and sqrt for AdamW. Measured on CPU (docs/BENCHMARKS.md): with AdamW on the
demo data, linear scaling never left chance level, with or without warm-up, while sqrt and none trained; with SGD
at an lr already near the largest stable one for the base batch, linear also failed and none trained. When the
baseline's lr is near its limit, scale less (``sqrt``/``none``) or warm up longer.

**Loaders** (`build_multigrid_loader_factory`): gives the trainer ``loader_for_epoch(epoch) -> (loader, info)``;
it sets the dataset's clip length / interval / crop / short-cycle sizes and rebuilds the DataLoader (and its
workers) only when the shape changes.

SRTG's variant (long cycle by quarters of every epoch, short cycle relative to the current shape, interval not
scaled, one DataLoader per short-cycle slot) is a documented alternative that we do not implement.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

__all__ = [
    "LONG_CYCLE_FACTORS",
    "SHORT_CYCLE_FACTORS",
    "BN_BASE_SIZE",
    "LR_SCALINGS",
    "default_lr_scaling",
    "Shape",
    "Phase",
    "MultigridSchedule",
    "ShortCycleBatchSampler",
    "short_cycle_crop_sizes",
    "short_cycle_batch_sizes",
    "SubBatchNorm3d",
    "convert_sub_batchnorm",
    "set_sub_batchnorm_group",
    "MultigridLoaderFactory",
    "build_multigrid_loader_factory",
]

log = logging.getLogger(__name__)

SQRT_HALF = 2 ** -0.5
# (temporal, spatial) factors of the base (T, S), from the cheapest shape to the base one.
LONG_CYCLE_FACTORS: list[tuple[float, float]] = [(0.25, SQRT_HALF), (0.5, SQRT_HALF), (0.5, 1.0), (1.0, 1.0)]
# Spatial factors of the *base* crop for short-cycle iterations 0 and 1; iteration 2 uses the current crop.
SHORT_CYCLE_FACTORS: tuple[float, float] = (0.5, SQRT_HALF)
# Fewest clips a BN group normalises over (SlowFast's MULTIGRID.BN_BASE_SIZE).
BN_BASE_SIZE = 8
# lr multiplier of a long-cycle shape as a function of its batch factor.
LR_SCALINGS: dict[str, Callable[[int], float]] = {
    "linear": lambda f: float(f),
    "sqrt": lambda f: math.sqrt(f),
    "none": lambda f: 1.0,
}

_STATE_FORMAT = "multigrid-schedule-1"


def default_lr_scaling(optimizer: str) -> str:
    """The long cycle's lr scaling for an optimizer (``--multigrid-lr-scaling auto``).

    SGD: ``linear``, the paper's rule (Goyal et al.'s linear scaling, which needs a warm-up). Adam/AdamW: ``sqrt``,
    the square-root rule that keeps adaptive optimizers on the same trajectory when the batch grows (Malladi et
    al., NeurIPS 2022); with AdamW, linear scaling never left chance level on the demo benchmark while sqrt trained
    (docs/BENCHMARKS.md, multigrid).
    """
    return "sqrt" if optimizer.lower().startswith("adam") else "linear"


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding (round(2.5) == 2); schedules should not depend on parity.
    return int(math.floor(x + 0.5))


def _round_to_multiple(x: float, multiple: int) -> int:
    return max(multiple, _round_half_up(x / multiple) * multiple)


def _scale_interval(interval: int | Sequence[int], factor: int) -> int | tuple[int, ...]:
    if isinstance(interval, int):
        return interval * factor
    return tuple(int(i) * factor for i in interval)


def short_cycle_crop_sizes(
    base_crop: int,
    current_crop: int | None = None,
    factors: Sequence[float] = SHORT_CYCLE_FACTORS,
    crop_multiple: int = 2,
) -> list[int]:
    """Crop size of each short-cycle iteration: ``[factors[0]*base, factors[1]*base, ..., current]``.

    The factors apply to the **base** crop (avoids SlowFast #429); a short crop is never larger than the current
    one. This is what the dataset's ``short_cycle_sizes`` must hold.
    """
    current = int(base_crop if current_crop is None else current_crop)
    sizes = [min(current, _round_to_multiple(base_crop * f, crop_multiple)) for f in factors]
    return sizes + [current]


def short_cycle_batch_sizes(batch_size: int, crop_sizes: Sequence[int]) -> list[int]:
    """Batch of each short-cycle iteration: ``batch_size * round((current / crop)^2)``, floored at 1x."""
    current = crop_sizes[-1]
    return [int(batch_size) * max(1, _round_half_up((current / c) ** 2)) for c in crop_sizes]


@dataclass(frozen=True)
class Shape:
    """Input shape of one epoch.

    ``batch_size`` is the per-process batch of the long-cycle shape (the short cycle multiplies it per iteration:
    ``short_batches``/``short_crops``, None when the short cycle is off). ``lr_scale`` is the linear lr scaling of
    this shape (its batch factor; 1 at the base shape), ``stage`` the lr stage (the lr is
    ``lr_base * lr_factor**stage * lr_scale``), ``long_index`` the index in `LONG_CYCLE_FACTORS` (3 = base shape),
    ``phase`` one of ``long-0..long-3``, ``fine-tune`` or ``base``. ``short_lr_scales`` multiplies the lr of each
    short-cycle slot (all 1 unless the schedule's ``short_lr_scaling`` says otherwise).
    """

    batch_size: int
    clip_length: int
    crop_size: int
    frame_interval: int | tuple[int, ...]
    lr_scale: float
    long_index: int
    phase: str
    stage: int = 0
    short_crops: tuple[int, ...] | None = None
    short_batches: tuple[int, ...] | None = None
    short_lr_scales: tuple[float, ...] | None = None

    @property
    def loader_key(self) -> tuple:
        """Everything a DataLoader depends on: a new key means new workers."""
        return (self.batch_size, self.clip_length, self.crop_size, self.frame_interval, self.short_crops,
                self.short_batches)

    def summary(self) -> str:
        """One line for the training log."""
        interval = self.frame_interval if isinstance(self.frame_interval, int) else list(self.frame_interval)
        text = (f"{self.phase} (lr stage {self.stage}): batch {self.batch_size} x {self.clip_length} frames "
                f"(interval {interval}) x {self.crop_size}px, lr x{self.lr_scale:g}")
        if self.short_crops is not None:
            cycle = " / ".join(f"{b}@{c}px" for b, c in zip(self.short_batches, self.short_crops))
            text += f", short cycle {cycle}"
        return text


@dataclass(frozen=True)
class Phase:
    """A run of epochs ``[start, end)`` at one long-cycle shape and lr stage."""

    start: int
    end: int
    stage: int
    long_index: int
    name: str


@dataclass(frozen=True)
class _LongShape:
    clip_length: int
    crop_size: int
    batch_factor: int
    interval_factor: int
    short_crops: tuple[int, ...] | None
    short_multipliers: tuple[int, ...] | None

    @property
    def avg_batch_factor(self) -> float:
        if self.short_multipliers is None:
            return float(self.batch_factor)
        return self.batch_factor * sum(self.short_multipliers) / len(self.short_multipliers)


class MultigridSchedule:
    """Per-epoch input shape, batch and lr scaling for multigrid training (see the module docstring).

    Args:
        base_batch: per-process batch size of the base shape (what ``--batch-size`` gives the loader).
        base_clip_length, base_crop, base_interval: the base T, S and temporal interval (int or list of ints).
        lr_steps: epochs at which the baseline multiplies the lr by ``lr_factor``.
        end_epoch: number of epochs of the baseline schedule.
        long_cycle, short_cycle: switch each cycle on; both off gives the baseline schedule unchanged.
        epoch_factor: stretch of the multigrid schedule (SlowFast uses 1.5); ignored with both cycles off.
        lr_factor: the baseline's lr decay per stage (for `lr_multiplier`).
        min_clip_length: the model's minimum clip length (long-cycle clips are never shorter).
        crop_multiple: reduced crops are rounded to a multiple of this.
        lr_scaling: how the lr follows the long-cycle batch factor f: ``linear`` (x f, SlowFast and the paper),
            ``sqrt`` (x sqrt f) or ``none``; see `LR_SCALINGS`.
        short_lr_scaling: the same for the short cycle's per-iteration batch factor (4, 2, 1 at the base
            shape); ``none`` (the default) is SlowFast's and SRTG's choice, the others an ablation.

    After construction: ``end_epoch`` (total epochs), ``lr_steps`` (the remapped lr milestones: give these to a
    step lr schedule together with ``lr_scale``), ``phases``, `shape`, `lr_multiplier`, `describe`.
    """

    def __init__(
        self,
        base_batch: int,
        base_clip_length: int,
        base_crop: int,
        base_interval: int | Sequence[int],
        lr_steps: Sequence[int],
        end_epoch: int,
        long_cycle: bool = True,
        short_cycle: bool = False,
        epoch_factor: float = 1.0,
        lr_factor: float = 0.1,
        min_clip_length: int = 1,
        crop_multiple: int = 2,
        lr_scaling: str = "linear",
        short_lr_scaling: str = "none",
    ):
        interval = base_interval if isinstance(base_interval, int) else [int(i) for i in base_interval]
        self.config: dict[str, Any] = dict(
            base_batch=int(base_batch), base_clip_length=int(base_clip_length), base_crop=int(base_crop),
            base_interval=interval, lr_steps=[int(s) for s in lr_steps], end_epoch=int(end_epoch),
            long_cycle=bool(long_cycle), short_cycle=bool(short_cycle), epoch_factor=float(epoch_factor),
            lr_factor=float(lr_factor), min_clip_length=int(min_clip_length), crop_multiple=int(crop_multiple),
            lr_scaling=str(lr_scaling), short_lr_scaling=str(short_lr_scaling),
        )
        self.epoch = 0  # last epoch given to set_epoch: the schedule position stored in checkpoints
        self._build()

    # -- construction ---------------------------------------------------------------------------------------
    def _validate(self) -> None:
        c = self.config
        for key in ("base_batch", "base_clip_length", "base_crop", "end_epoch", "min_clip_length", "crop_multiple"):
            if c[key] < 1:
                raise ValueError(f"multigrid: {key} must be >= 1, got {c[key]}")
        intervals = [c["base_interval"]] if isinstance(c["base_interval"], int) else c["base_interval"]
        if not intervals or any(i < 1 for i in intervals):
            raise ValueError(f"multigrid: base_interval must be positive integers, got {c['base_interval']}")
        if c["min_clip_length"] > c["base_clip_length"]:
            raise ValueError(f"multigrid: min_clip_length {c['min_clip_length']} exceeds the base clip length "
                             f"{c['base_clip_length']}")
        steps = c["lr_steps"]
        if any(b <= a for a, b in zip(steps, steps[1:])) or any(s <= 0 or s >= c["end_epoch"] for s in steps):
            raise ValueError(f"multigrid: lr_steps must increase strictly within (0, end_epoch={c['end_epoch']}), "
                             f"got {steps}")
        if not c["epoch_factor"] > 0:
            raise ValueError(f"multigrid: epoch_factor must be > 0, got {c['epoch_factor']}")
        if c["lr_scaling"] not in LR_SCALINGS:
            raise ValueError(f"multigrid: lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {c['lr_scaling']!r}")
        if c["short_lr_scaling"] not in LR_SCALINGS:
            raise ValueError(f"multigrid: short_lr_scaling must be one of {', '.join(LR_SCALINGS)}, got "
                             f"{c['short_lr_scaling']!r}")

    def _long_shape(self, t_factor: float, s_factor: float) -> _LongShape:
        c = self.config
        T, S = c["base_clip_length"], c["base_crop"]
        t = min(T, max(c["min_clip_length"], _round_half_up(T * t_factor)))
        s = S if s_factor >= 1 else min(S, _round_to_multiple(S * s_factor, c["crop_multiple"]))
        batch_factor = max(1, _round_half_up(T * S * S / (t * s * s)))
        interval_factor = max(1, _round_half_up(T / t))
        crops = mults = None
        if c["short_cycle"]:
            crops = tuple(short_cycle_crop_sizes(S, s, SHORT_CYCLE_FACTORS, c["crop_multiple"]))
            mults = tuple(short_cycle_batch_sizes(1, crops))
        return _LongShape(t, s, batch_factor, interval_factor, crops, mults)

    def _build(self) -> None:
        self._validate()
        c = self.config
        steps, end = c["lr_steps"], c["end_epoch"]
        self.long_cycle, self.short_cycle = c["long_cycle"], c["short_cycle"]
        if not self.long_cycle:
            base = self._long_shape(1.0, 1.0)
            self._shapes = {len(LONG_CYCLE_FACTORS) - 1: base}
            factor = c["epoch_factor"] if self.short_cycle else 1.0
            total = max(1, _round_half_up(end * factor))
            bounds = [0] + [_round_half_up(s * factor) for s in steps] + [total]
            name = "base"
            self.phases = [Phase(a, b, k, len(LONG_CYCLE_FACTORS) - 1, name)
                           for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        else:
            self._shapes = {i: self._long_shape(tf, sf) for i, (tf, sf) in enumerate(LONG_CYCLE_FACTORS)}
            self.phases = self._long_cycle_phases(steps, end)
        self.all_phases = list(self.phases)  # including phases that rounding left empty (for describe)
        self.phases = [p for p in self.phases if p.end > p.start]
        self.end_epoch = self.phases[-1].end
        max_stage = max(p.stage for p in self.phases)
        self.lr_steps = [next((p.start for p in self.phases if p.stage >= s), self.end_epoch)
                         for s in range(1, max_stage + 1)]

    def _long_cycle_phases(self, steps: list[int], end: int) -> list[Phase]:
        n_long = len(LONG_CYCLE_FACTORS)
        avg = [self._shapes[i].avg_batch_factor for i in range(n_long)]
        # Every lr stage but the last is cycled; the last one becomes the fine-tune phase at the base shape.
        if steps:
            cycled = [b - a for a, b in zip([0] + steps[:-1], steps)]
            ft_len = end - steps[-1]
        else:
            cycled, ft_len = [end], 0
        if not steps:
            log.warning("multigrid: no lr steps, so no fine-tune phase at the base shape after the long cycles")
        raw: list[tuple[int, int, str, float]] = []  # (stage, long index, name, epochs before rescaling)
        for stage, length in enumerate(cycled):
            for i in range(n_long):
                raw.append((stage, i, f"long-{i}", length * avg[i] / sum(avg)))
        if ft_len > 0:
            # Same iteration saving as the cycled stages (n_long iterations-worth per sum(avg) epochs).
            ft_epochs = ft_len * n_long / sum(avg) * avg[-1]
            raw.append((len(cycled), n_long - 1, "fine-tune", ft_epochs))
        total = max(1, _round_half_up(end * self.config["epoch_factor"]))
        scale = total / sum(r[3] for r in raw)
        # The fine-tune phase keeps at least one epoch (when there is room), so that a short schedule still ends
        # at the base shape with the last lr; for longer ones this is exactly SlowFast's cumulative rounding.
        ft_epochs = max(1, _round_half_up(raw[-1][3] * scale)) if ft_len > 0 and total > 1 else 0
        cycled_total = total - ft_epochs
        n_cycled = len(raw) - (1 if ft_len > 0 else 0)
        phases, acc, start = [], 0.0, 0
        for j, (stage, index, name, epochs) in enumerate(raw):
            acc += epochs * scale
            if name == "fine-tune":
                stop = total
            elif j == n_cycled - 1:
                stop = cycled_total
            else:
                stop = min(cycled_total, _round_half_up(acc))
            if name == "fine-tune":
                # SlowFast: the first half of the fine-tune phase keeps the previous stage's lr.
                mid = (start + stop) // 2
                phases.append(Phase(start, mid, stage - 1, index, name))
                phases.append(Phase(mid, stop, stage, index, name))
            else:
                phases.append(Phase(start, stop, stage, index, name))
            start = stop
        last = phases[-1]
        phases[-1] = Phase(last.start, total, last.stage, last.long_index, last.name)
        return phases

    @classmethod
    def from_args(cls, args: Any, min_clip_length: int = 1, **kwargs: Any) -> MultigridSchedule:
        """Build from the SPEC 7 training arguments (``batch_size, clip_length, clip_size, train_frame_interval,
        lr_steps, lr_factor, end_epoch, long_cycles, short_cycles``) and, when the parser has them,
        ``multigrid_epoch_factor`` and ``multigrid_lr_scaling``; `kwargs` override."""
        options = dict(lr_factor=getattr(args, "lr_factor", 0.1), min_clip_length=min_clip_length)
        if getattr(args, "multigrid_epoch_factor", None) is not None:
            options["epoch_factor"] = args.multigrid_epoch_factor
        scaling = getattr(args, "multigrid_lr_scaling", None)
        if scaling in (None, "auto"):
            scaling = default_lr_scaling(getattr(args, "optimizer", "sgd"))
        options["lr_scaling"] = scaling
        if getattr(args, "multigrid_short_lr_scaling", None) is not None:
            options["short_lr_scaling"] = args.multigrid_short_lr_scaling
        options.update(kwargs)
        return cls(
            base_batch=args.batch_size, base_clip_length=args.clip_length, base_crop=args.clip_size,
            base_interval=args.train_frame_interval, lr_steps=args.lr_steps or [], end_epoch=args.end_epoch,
            long_cycle=bool(args.long_cycles), short_cycle=bool(args.short_cycles), **options,
        )

    # -- queries ----------------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when either cycle is on (a plain run should not even build the schedule)."""
        return self.long_cycle or self.short_cycle

    @property
    def bn_group_size(self) -> int:
        """Clips per `SubBatchNorm3d` group: the base per-process batch, at least `BN_BASE_SIZE` (8)."""
        return max(BN_BASE_SIZE, self.config["base_batch"])

    def phase(self, epoch: int) -> Phase:
        """The phase of `epoch` (epochs past the end stay in the last phase, like SlowFast)."""
        if epoch < 0:
            raise ValueError(f"multigrid: epoch must be >= 0, got {epoch}")
        for p in self.phases:
            if epoch < p.end:
                return p
        return self.phases[-1]

    def shape(self, epoch: int) -> Shape:
        """The input shape, batch and lr scaling of `epoch` (0-based)."""
        p = self.phase(epoch)
        ls = self._shapes[p.long_index]
        base_batch = self.config["base_batch"]
        batch = base_batch * ls.batch_factor
        return Shape(
            batch_size=batch,
            clip_length=ls.clip_length,
            crop_size=ls.crop_size,
            frame_interval=_scale_interval(self.config["base_interval"], ls.interval_factor),
            lr_scale=self._lr_scale(ls.batch_factor),
            long_index=p.long_index,
            phase=p.name,
            stage=p.stage,
            short_crops=ls.short_crops,
            short_batches=None if ls.short_multipliers is None else tuple(batch * m for m in ls.short_multipliers),
            short_lr_scales=None if ls.short_multipliers is None else tuple(
                LR_SCALINGS[self.config["short_lr_scaling"]](m) for m in ls.short_multipliers),
        )

    @property
    def smallest_crop(self) -> int:
        """The smallest crop any training iteration of the schedule uses (long- or short-cycle)."""
        crops = []
        for p in self.phases:
            ls = self._shapes[p.long_index]
            crops += [ls.crop_size, *(ls.short_crops or ())]
        return min(crops)

    def _lr_scale(self, batch_factor: int) -> float:
        if not self.long_cycle:
            return 1.0
        return LR_SCALINGS[self.config["lr_scaling"]](batch_factor)

    def stage(self, epoch: int) -> int:
        """The lr stage of `epoch` (number of lr decays applied)."""
        return self.phase(epoch).stage

    def lr_multiplier(self, epoch: int) -> float:
        """Full lr multiplier of `epoch` relative to the base lr: ``lr_factor**stage * lr_scale``."""
        s = self.shape(epoch)
        return self.config["lr_factor"] ** s.stage * s.lr_scale

    def set_epoch(self, epoch: int) -> None:
        """Record the position (the epoch about to be trained) for `state_dict`."""
        self.phase(epoch)
        self.epoch = int(epoch)

    def describe(self) -> str:
        """The schedule as a table for the training log."""
        c = self.config
        mode = {(True, True): "long + short cycles", (True, False): "long cycle", (False, True): "short cycle",
                (False, False): "off (baseline)"}[(self.long_cycle, self.short_cycle)]
        lines = [
            f"Multigrid schedule: {mode}; base batch {c['base_batch']} x {c['base_clip_length']} frames "
            f"(interval {c['base_interval']}) x {c['base_crop']}px, {self.end_epoch} epochs "
            f"(baseline {c['end_epoch']}, lr steps {c['lr_steps']} -> {self.lr_steps}), lr scaling "
            f"{c['lr_scaling'] if self.long_cycle else 'none'}"
            + (f", short-cycle lr scaling {c['short_lr_scaling']}"
               if self.short_cycle and c["short_lr_scaling"] != "none" else ""),
            f"  {'epochs':<10} {'phase':<10} {'stage':>5} {'batch':>6} {'frames':>6} {'interval':>9} "
            f"{'crop':>5} {'lr x':>6}  short cycle (batch@crop)",
        ]
        for p in self.all_phases:
            ls = self._shapes[p.long_index]
            batch = c["base_batch"] * ls.batch_factor
            interval = _scale_interval(c["base_interval"], ls.interval_factor)
            interval = interval if isinstance(interval, int) else ",".join(map(str, interval))
            span = f"{p.start}-{p.end - 1}" if p.end > p.start else "(0 epochs)"
            short = "-"
            if ls.short_crops is not None:
                short = " ".join(f"{batch * m}@{cr}" for m, cr in zip(ls.short_multipliers, ls.short_crops))
            lr = self._lr_scale(ls.batch_factor)
            lines.append(f"  {span:<10} {p.name:<10} {p.stage:>5} {batch:>6} {ls.clip_length:>6} {interval!s:>9} "
                         f"{ls.crop_size:>5} {lr:>6g}  {short}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"MultigridSchedule({', '.join(f'{k}={v!r}' for k, v in self.config.items())})"

    # -- resume -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Configuration, position and the phase table (for checkpoints)."""
        return {"format": _STATE_FORMAT, "config": dict(self.config), "epoch": self.epoch,
                "phases": [asdict(p) for p in self.phases]}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore the position; the configuration must match the checkpoint's.

        With ``strict=False`` a different configuration is replaced by the checkpoint's (with a warning), so that
        a resumed run continues the schedule it started with.
        """
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError("multigrid: not a multigrid schedule state (missing or unknown 'format')")
        # Checkpoints from before the short-cycle lr option trained with its default.
        saved = {"short_lr_scaling": "none", **state["config"]}
        diff = {k: (saved.get(k), v) for k, v in self.config.items() if saved.get(k) != v}
        diff.update({k: (v, None) for k, v in saved.items() if k not in self.config})
        if diff:
            text = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            if strict:
                raise ValueError(f"multigrid: the resumed configuration differs from the checkpoint's ({text})")
            log.warning("multigrid: continuing the checkpoint's schedule, which differs from the arguments (%s)", text)
            self.config = dict(saved)
            self._build()
        self.set_epoch(int(state.get("epoch", 0)))


class ShortCycleBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batch sampler cycling through short-cycle shapes: ``[4b @ S/2, 2b @ S/sqrt2, b @ s]`` (see module doc).

    Yields lists of ``(index, cycle)``; the dataset reads ``cycle`` as an index into its ``short_cycle_sizes``
    (set it to `crop_sizes`). The cycle restarts at every epoch. With a `DistributedSampler` every rank gets the
    same number of indices and hence the same sequence of batch shapes (DDP needs equal iteration counts).
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        base_crop: int,
        current_crop: int | None = None,
        drop_last: bool = True,
        factors: Sequence[float] = SHORT_CYCLE_FACTORS,
        crop_multiple: int = 2,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.crop_sizes = short_cycle_crop_sizes(base_crop, current_crop, factors, crop_multiple)
        self.batch_sizes = short_cycle_batch_sizes(batch_size, self.crop_sizes)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cycle, batch = 0, []
        for index in self.sampler:
            batch.append((int(index), cycle))
            if len(batch) == self.batch_sizes[cycle]:
                yield batch
                batch = []
                cycle = (cycle + 1) % len(self.batch_sizes)
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        per_cycle = sum(self.batch_sizes)
        count = (n // per_cycle) * len(self.batch_sizes)
        rest = n % per_cycle
        for size in self.batch_sizes:
            if rest < size:
                break
            count += 1
            rest -= size
        return count + (1 if rest and not self.drop_last else 0)

    @property
    def clips_per_epoch(self) -> int:
        """Indices that end up in a batch (the rest of an epoch is dropped with ``drop_last``)."""
        n = len(self.sampler)
        if not self.drop_last:
            return n
        per_cycle = sum(self.batch_sizes)
        used, rest = (n // per_cycle) * per_cycle, n % per_cycle
        for size in self.batch_sizes:
            if rest < size:
                break
            used, rest = used + size, rest - size
        return used

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped sampler (a `DistributedSampler` reshuffles by epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


# -- batch norm over groups of clips -------------------------------------------------------------------------
class SubBatchNorm3d(nn.BatchNorm3d):
    """`BatchNorm3d` that, in training, normalises groups of at least ``group_size`` clips separately.

    A batch of N clips is split into ``k = N // group_size`` groups (reduced until it divides N; k <= 1 is plain
    BN, bit for bit). Clip ``i`` goes to group ``i % k``: the batch is viewed as ``(N/k, k*C, ...)`` so one
    `F.batch_norm` call normalises all groups without a copy. The running statistics are those of the whole
    batch (aggregated exactly from the group statistics), so evaluation is unchanged. Same parameters, buffers and
    state_dict as `nn.BatchNorm3d`.
    """

    def __init__(self, num_features: int, group_size: int = 8, **kwargs: Any):
        super().__init__(num_features, **kwargs)
        self.group_size = int(group_size)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"

    def _splits(self, n: int) -> int:
        if self.group_size < 1:
            return 1
        k = n // self.group_size
        while k > 1 and n % k:
            k -= 1
        return k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self._splits(x.shape[0]) if self.training and x.dim() == 5 else 1
        if k <= 1:
            return super().forward(x)
        self._check_input_dim(x)
        n, c = x.shape[:2]
        xs = x.reshape(n // k, k * c, *x.shape[2:])
        weight = self.weight.repeat(k) if self.weight is not None else None
        bias = self.bias.repeat(k) if self.bias is not None else None
        if not self.track_running_stats or self.running_mean is None:
            return F.batch_norm(xs, None, None, weight, bias, True, 0.0, self.eps).reshape(x.shape)
        # momentum 1 on scratch buffers leaves exactly each group's mean and unbiased variance in them.
        group_mean = torch.zeros(k * c, device=x.device, dtype=self.running_mean.dtype)
        group_var = torch.ones(k * c, device=x.device, dtype=self.running_var.dtype)
        out = F.batch_norm(xs, group_mean, group_var, weight, bias, True, 1.0, self.eps)
        with torch.no_grad():
            m = xs.numel() // (k * c)  # elements per group and channel
            group_mean, group_var = group_mean.view(k, c), group_var.view(k, c)
            mean = group_mean.mean(0)
            biased = (group_var * (m - 1) / m).mean(0) + ((group_mean - mean) ** 2).mean(0)
            total = m * k
            var = biased * total / max(total - 1, 1)
            self.num_batches_tracked.add_(1)
            f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - f).add_(mean, alpha=f)
            self.running_var.mul_(1 - f).add_(var, alpha=f)
        return out.reshape(x.shape)


def convert_sub_batchnorm(module: nn.Module, group_size: int) -> nn.Module:
    """Replace every `nn.BatchNorm3d` in `module` by a `SubBatchNorm3d` sharing its parameters and buffers.

    Returns the (possibly new) root module, like `nn.SyncBatchNorm.convert_sync_batchnorm`. Call it before
    building the optimizer or DDP; parameters are shared, not copied, so either order works for the optimizer.
    """
    if type(module) is nn.BatchNorm3d:
        new = SubBatchNorm3d(module.num_features, group_size=group_size, eps=module.eps, momentum=module.momentum,
                             affine=module.affine, track_running_stats=module.track_running_stats,
                             device=None if module.weight is None else module.weight.device)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_sub_batchnorm(child, group_size)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def set_sub_batchnorm_group(module: nn.Module, group_size: int) -> int:
    """Set ``group_size`` on every `SubBatchNorm3d` in `module`; returns how many layers were changed."""
    count = 0
    for m in module.modules():
        if isinstance(m, SubBatchNorm3d):
            m.group_size = int(group_size)
            count += 1
    return count


# -- loaders -------------------------------------------------------------------------------------------------
class _EpochBatchSampler(BatchSampler):
    """`BatchSampler` that forwards `set_epoch` (long cycle without short cycle)."""

    @property
    def clips_per_epoch(self) -> int:
        n = len(self.sampler)
        return (n // self.batch_size) * self.batch_size if self.drop_last else n

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class MultigridLoaderFactory:
    """``loader_for_epoch(epoch) -> (loader, info)`` for the trainer (see `build_multigrid_loader_factory`)."""

    def __init__(
        self,
        dataset: Any,
        schedule: MultigridSchedule,
        workers: int = 0,
        seed: int = 0,
        distributed: bool = False,
        drop_last: bool = True,
        first_epoch: int = 0,
        build_loader_fn: Callable[..., Any] | None = None,
        **loader_kwargs: Any,
    ):
        if build_loader_fn is None:
            from data.loader import build_loader as build_loader_fn  # late: the loader module imports the dataset
        self.dataset = dataset
        self.schedule = schedule
        self.workers = workers
        self.seed = seed
        self.distributed = distributed
        self.drop_last = drop_last
        self.first_epoch = int(first_epoch)
        self.build_loader_fn = build_loader_fn
        self.loader_kwargs = loader_kwargs
        self.loader: Any = None
        self.batch_sampler: Sampler | None = None
        self._key: tuple | None = None
        self.rebuilds = 0

    def _base_sampler(self) -> Sampler[int]:
        # DistributedSampler reshuffles as a function of (seed, epoch) only, which makes resume reproducible;
        # with one replica it is a plain seeded shuffle without padding.
        if self.distributed:
            return DistributedSampler(self.dataset, shuffle=True, seed=self.seed, drop_last=False)
        return DistributedSampler(self.dataset, num_replicas=1, rank=0, shuffle=True, seed=self.seed)

    def _apply_shape(self, shape: Shape) -> None:
        ds = self.dataset
        ds.clip_length = shape.clip_length
        ds.frame_interval = (shape.frame_interval if isinstance(shape.frame_interval, int)
                             else list(shape.frame_interval))
        ds.transform.crop_size = shape.crop_size
        ds.short_cycle_sizes = list(shape.short_crops) if shape.short_crops is not None else None

    def _build(self, shape: Shape) -> Any:
        self.loader = None  # drop the old loader (and its persistent workers) before forking new ones
        if shape.short_crops is not None:
            batch_sampler: Sampler = ShortCycleBatchSampler(
                self._base_sampler(), shape.batch_size, self.schedule.config["base_crop"], shape.crop_size,
                drop_last=self.drop_last, crop_multiple=self.schedule.config["crop_multiple"])
        else:
            batch_sampler = _EpochBatchSampler(self._base_sampler(), shape.batch_size, self.drop_last)
        self.batch_sampler = batch_sampler
        available, used = len(batch_sampler.sampler), batch_sampler.clips_per_epoch
        sizes = shape.short_batches if shape.short_batches is not None else (shape.batch_size,)
        if len(batch_sampler) == 0:
            raise ValueError(f"multigrid {shape.phase}: {available} training clips per process do not fill one "
                             f"batch of {sizes[0]}; lower --batch-size (now {self.schedule.config['base_batch']})")
        if available - used > 0.1 * available:
            log.warning("multigrid %s: batches of %s clips leave %d of %d clips per process out of every epoch "
                        "(drop_last); a smaller base batch keeps more", shape.phase,
                        "/".join(map(str, sizes)), available - used, available)
        return self.build_loader_fn(self.dataset, shape.batch_size, train=True, workers=self.workers,
                                    seed=self.seed, distributed=self.distributed, batch_sampler=batch_sampler,
                                    drop_last=self.drop_last, **self.loader_kwargs)

    def __call__(self, epoch: int) -> tuple[Any, dict[str, Any]]:
        index = epoch - self.first_epoch  # the schedule counts epochs from 0
        if index < 0:
            raise ValueError(f"multigrid: epoch {epoch} is before the first epoch {self.first_epoch}")
        shape = self.schedule.shape(index)
        self.schedule.set_epoch(index)
        changed = shape.loader_key != self._key
        if changed:
            self._apply_shape(shape)
            self.loader = self._build(shape)
            self._key = shape.loader_key
            self.rebuilds += 1
            log.info("multigrid epoch %d: %s", epoch, shape.summary())
        self.batch_sampler.set_epoch(index)
        info = {
            "epoch": epoch,
            "shape": shape,
            "changed": changed,
            "lr_scale": shape.lr_scale,
            "lr_multiplier": self.schedule.lr_multiplier(index),
            "stage": shape.stage,
            "phase": shape.phase,
            "long_index": shape.long_index,
            "batch_size": shape.batch_size,
            "clip_length": shape.clip_length,
            "crop_size": shape.crop_size,
            "frame_interval": shape.frame_interval,
            "short_cycle": shape.short_crops is not None,
            # Keys read by train.callbacks.describe_shape (the MetricPrinter's epoch line).
            "long_cycle": (None if not self.schedule.long_cycle else shape.phase if shape.phase == "fine-tune"
                           else f"{shape.long_index + 1}/{len(LONG_CYCLE_FACTORS)}"),
            "short_cycles": shape.short_crops is not None,
            "short_crops": shape.short_crops,
            "short_batches": shape.short_batches,
            "short_lr_scales": shape.short_lr_scales,
            "end_epoch": self.schedule.end_epoch,
            "lr_steps": list(self.schedule.lr_steps),
            "num_batches": len(self.loader),
            "description": shape.summary(),
        }
        return self.loader, info

    loader_for_epoch = __call__

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (configuration and position) for the checkpoint's ``multigrid`` entry."""
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore the schedule; the next call rebuilds the loader for the resumed epoch's shape."""
        self.schedule.load_state_dict(state, strict=strict)
        self._key = None

    def close(self) -> None:
        """Drop the current loader (shuts its workers down)."""
        self.loader = None
        self.batch_sampler = None
        self._key = None


def build_multigrid_loader_factory(
    dataset: Any,
    schedule: MultigridSchedule,
    workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = True,
    first_epoch: int = 0,
    **loader_kwargs: Any,
) -> MultigridLoaderFactory:
    """The trainer's ``loader_for_epoch(epoch) -> (loader, info)`` for a multigrid schedule.

    ``epoch`` counts from `first_epoch` (default 0, like the schedule; ``train.loaders.MultigridLoaders`` passes
    the trainer's 1-based epoch minus 1).
    Per epoch it sets ``dataset.clip_length``, ``dataset.frame_interval``, ``dataset.transform.crop_size`` and
    ``dataset.short_cycle_sizes`` to the epoch's shape and rebuilds the DataLoader (``data.loader.build_loader``,
    with a `ShortCycleBatchSampler` when the short cycle is on) only when the shape changes. It calls
    ``set_epoch`` on its sampler itself (a DataLoader with a batch sampler has no useful ``loader.sampler``):
    batches are always drawn by its own batch sampler over a `DistributedSampler` (one replica when not
    distributed), so the order depends only on (seed, epoch) and every rank gets the same batch shapes.

    ``info`` has ``lr_scale`` (linear scaling of the epoch's shape: multiply the lr of a step schedule built on
    ``schedule.lr_steps`` and ``schedule.end_epoch``), ``lr_multiplier`` (the whole factor,
    ``lr_factor**stage * lr_scale``), ``stage``, ``phase``, ``shape``, ``changed`` (loader rebuilt),
    ``num_batches``, ``long_cycle``/``short_cycles`` (for the MetricPrinter) and ``description`` (one line for
    the log); the checkpoint stores ``factory.state_dict()``.
    """
    return MultigridLoaderFactory(dataset, schedule, workers=workers, seed=seed, distributed=distributed,
                                  drop_last=drop_last, first_epoch=first_epoch, **loader_kwargs)
