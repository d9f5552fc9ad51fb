"""Multigrid short cycle: per-iteration crop sizes and batch sizes, and the batch sampler that cycles them.

Within an epoch the iterations cycle over crops ``[S/2, S/sqrt2, s]`` with batches ``b * round((s / crop)^2)``
(floored at 1x), where ``S`` is the **base** crop and ``s``/``b`` the current long-cycle crop and batch: 4b, 2b, b
at the full crop; 2b, b, b at ``S/sqrt2``. Taking the factors of the base crop rather than of the current one keeps
the cheap iterations cheap in the small long-cycle shapes too (factors of the current crop give 2x/1x/1x there and a
phase slower than the baseline). The sampler yields lists of ``(index, cycle)``; the dataset maps ``cycle`` to a
crop through its ``short_cycle_sizes``, so one DataLoader serves all three shapes.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from data.rounding import round_half_up, round_to_multiple

__all__ = ["SHORT_CYCLE_FACTORS", "short_cycle_crop_sizes", "short_cycle_batch_sizes", "ShortCycleBatchSampler"]

# Spatial factors of the *base* crop for short-cycle iterations 0 and 1; iteration 2 uses the current crop.
SHORT_CYCLE_FACTORS: tuple[float, float] = (0.5, 2 ** -0.5)


def short_cycle_crop_sizes(
    base_crop: int,
    current_crop: int | None = None,
    factors: Sequence[float] = SHORT_CYCLE_FACTORS,
    crop_multiple: int = 2,
) -> list[int]:
    """Crop size of each short-cycle iteration: ``[factors[0]*base, factors[1]*base, ..., current]``.

    A short crop is rounded to a multiple of `crop_multiple` and never larger than the current one. This is what
    the dataset's ``short_cycle_sizes`` must hold.
    """
    current = int(base_crop if current_crop is None else current_crop)
    sizes = [min(current, round_to_multiple(base_crop * f, crop_multiple)) for f in factors]
    return sizes + [current]


def short_cycle_batch_sizes(batch_size: int, crop_sizes: Sequence[int]) -> list[int]:
    """Batch of each short-cycle iteration: ``batch_size * round((current / crop)^2)``, floored at 1x."""
    current = crop_sizes[-1]
    return [int(batch_size) * max(1, round_half_up((current / c) ** 2)) for c in crop_sizes]


def _batches_used(n: int, sizes: Sequence[int], drop_last: bool) -> tuple[int, int]:
    """(batches, indices in them) of `n` indices cut into batches of `sizes` in turn."""
    per_cycle = sum(sizes)
    count, used = (n // per_cycle) * len(sizes), (n // per_cycle) * per_cycle
    rest = n % per_cycle
    for size in sizes:
        if rest < size:
            break
        count, used, rest = count + 1, used + size, rest - size
    if rest and not drop_last:
        count, used = count + 1, used + rest
    return count, used


class ShortCycleBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batch sampler cycling through the short-cycle shapes ``[4b @ S/2, 2b @ S/sqrt2, b @ s]``.

    Yields lists of ``(index, cycle)``. The cycle restarts at every epoch. With a `DistributedSampler` every rank
    gets the same number of indices and hence the same sequence of batch shapes (DDP needs equal iteration counts).
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
        return _batches_used(len(self.sampler), self.batch_sizes, self.drop_last)[0]

    @property
    def clips_per_epoch(self) -> int:
        """Indices that end up in a batch (the rest of an epoch is dropped with ``drop_last``)."""
        return _batches_used(len(self.sampler), self.batch_sizes, self.drop_last)[1]

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped sampler (a `DistributedSampler` reshuffles by epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
