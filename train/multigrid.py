"""Multigrid long cycle (Wu et al., "A Multigrid Method for Efficiently Training Video Models", CVPR 2020).

Training cycles through cheaper input shapes with proportionally larger batches, so that every iteration costs
about the same and an epoch costs far less. `MultigridSchedule` gives each epoch its `Shape`: the (T, S) factors
`LONG_CYCLE_FACTORS` of the base clip length T and crop S give shapes ``(t, s)`` with batch
``B * round(T*S^2 / (t*s^2))`` (8B, 4B, 2B, B), changing at epoch boundaries. Every lr stage but the last is split
over the four shapes with *equal iterations per shape* (a shape's share of the stage's epochs is proportional to its
batch factor); the last stage becomes a fine-tune phase at the base shape, shortened by the same iteration saving,
whose first half keeps the previous stage's lr (SlowFast). The epoch counts are rescaled to
``round(end_epoch * epoch_factor)`` epochs (default 1.0: the baseline's budget; SlowFast uses 1.5), rounding
cumulatively, so a very short schedule may give a shape zero epochs (`describe` shows it). The temporal interval is
multiplied by ``round(T/t)`` so that a short clip spans the time of a full one; the lr follows the batch factor by
``lr_scaling`` (`LR_SCALINGS`).

With the short cycle alone (`data.short_cycle`), lr steps and epochs are multiplied by ``epoch_factor``; its
per-iteration batches do not scale the lr (SlowFast). Clip lengths are rounded to the nearest integer within
``[min_clip_length, T]``; reduced crops to a multiple of ``crop_multiple``; batch factors are computed from the
rounded shapes. SRTG's variant (long cycle by quarters of every epoch, short cycle relative to the current shape,
interval not scaled) is not implemented.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from data.rank_logging import SAME_ON_EVERY_RANK
from data.rounding import round_half_up, round_to_multiple
from data.short_cycle import SHORT_CYCLE_FACTORS, short_cycle_batch_sizes, short_cycle_crop_sizes

__all__ = ["LONG_CYCLE_FACTORS", "BN_BASE_SIZE", "LR_SCALINGS", "default_lr_scaling", "Shape", "Phase",
           "MultigridSchedule"]

log = logging.getLogger(__name__)

SQRT_HALF = 2 ** -0.5
# (temporal, spatial) factors of the base (T, S), from the cheapest shape to the base one.
LONG_CYCLE_FACTORS: list[tuple[float, float]] = [(0.25, SQRT_HALF), (0.5, SQRT_HALF), (0.5, 1.0), (1.0, 1.0)]
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


def _scale_interval(interval: int | Sequence[int], factor: int) -> int | tuple[int, ...]:
    if isinstance(interval, int):
        return interval * factor
    return tuple(int(i) * factor for i in interval)



@dataclass(frozen=True)
class Shape:
    """Input shape of one epoch.

    ``batch_size`` is the per-process batch of the long-cycle shape (the short cycle multiplies it per iteration:
    ``short_batches``/``short_crops``, None when the short cycle is off). ``lr_scale`` is the linear lr scaling of
    this shape (its batch factor; 1 at the base shape), ``stage`` the lr stage (the lr is
    ``lr_base * lr_factor**stage * lr_scale``), ``long_index`` the index in `LONG_CYCLE_FACTORS` (3 = base shape),
    ``phase`` one of ``long-0..long-3``, ``fine-tune`` or ``base``.
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
    ):
        interval = base_interval if isinstance(base_interval, int) else [int(i) for i in base_interval]
        self.config: dict[str, Any] = dict(
            base_batch=int(base_batch), base_clip_length=int(base_clip_length), base_crop=int(base_crop),
            base_interval=interval, lr_steps=[int(s) for s in lr_steps], end_epoch=int(end_epoch),
            long_cycle=bool(long_cycle), short_cycle=bool(short_cycle), epoch_factor=float(epoch_factor),
            lr_factor=float(lr_factor), min_clip_length=int(min_clip_length), crop_multiple=int(crop_multiple),
            lr_scaling=str(lr_scaling),
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

    def _long_shape(self, t_factor: float, s_factor: float) -> _LongShape:
        c = self.config
        T, S = c["base_clip_length"], c["base_crop"]
        t = min(T, max(c["min_clip_length"], round_half_up(T * t_factor)))
        s = S if s_factor >= 1 else min(S, round_to_multiple(S * s_factor, c["crop_multiple"]))
        batch_factor = max(1, round_half_up(T * S * S / (t * s * s)))
        interval_factor = max(1, round_half_up(T / t))
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
            total = max(1, round_half_up(end * factor))
            bounds = [0] + [round_half_up(s * factor) for s in steps] + [total]
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
            log.warning("multigrid: no lr steps, so no fine-tune phase at the base shape after the long cycles",
                        extra=SAME_ON_EVERY_RANK)
        raw: list[tuple[int, int, str, float]] = []  # (stage, long index, name, epochs before rescaling)
        for stage, length in enumerate(cycled):
            for i in range(n_long):
                raw.append((stage, i, f"long-{i}", length * avg[i] / sum(avg)))
        if ft_len > 0:
            # Same iteration saving as the cycled stages (n_long iterations-worth per sum(avg) epochs).
            ft_epochs = ft_len * n_long / sum(avg) * avg[-1]
            raw.append((len(cycled), n_long - 1, "fine-tune", ft_epochs))
        total = max(1, round_half_up(end * self.config["epoch_factor"]))
        scale = total / sum(r[3] for r in raw)
        # The fine-tune phase keeps at least one epoch (when there is room), so that a short schedule still ends
        # at the base shape with the last lr; for longer ones this is exactly SlowFast's cumulative rounding.
        ft_epochs = max(1, round_half_up(raw[-1][3] * scale)) if ft_len > 0 and total > 1 else 0
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
                stop = min(cycled_total, round_half_up(acc))
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
        """Build from the trainer's arguments (``batch_size, clip_length, clip_size, train_frame_interval,
        lr_steps, lr_factor, end_epoch, long_cycles, short_cycles``) and, when the parser has them,
        ``multigrid_epoch_factor`` and ``multigrid_lr_scaling``; `kwargs` override."""
        options = dict(lr_factor=getattr(args, "lr_factor", 0.1), min_clip_length=min_clip_length)
        if getattr(args, "multigrid_epoch_factor", None) is not None:
            options["epoch_factor"] = args.multigrid_epoch_factor
        scaling = getattr(args, "multigrid_lr_scaling", None)
        if scaling in (None, "auto"):
            scaling = default_lr_scaling(getattr(args, "optimizer", "sgd"))
        options["lr_scaling"] = scaling
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
            f"{c['lr_scaling'] if self.long_cycle else 'none'}",
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
        saved = dict(state["config"])
        # Checkpoints of older versions may record the short cycle's lr scaling; only its default remains.
        if saved.get("short_lr_scaling", "none") == "none":
            saved.pop("short_lr_scaling", None)
        diff = {k: (saved.get(k), v) for k, v in self.config.items() if saved.get(k) != v}
        diff.update({k: (v, None) for k, v in saved.items() if k not in self.config})
        if diff:
            text = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            if strict:
                raise ValueError(f"multigrid: the resumed configuration differs from the checkpoint's ({text})")
            log.warning("multigrid: continuing the checkpoint's schedule, which differs from the arguments (%s)", text,
                        extra=SAME_ON_EVERY_RANK)
            self.config = dict(saved)
            self._build()
        self.set_epoch(int(state.get("epoch", 0)))
