"""DataLoader construction for clip datasets: seeding, worker set-up, samplers and the clip collate.

Reproducibility: the loader's `torch.Generator` is seeded from `seed`; it drives the shuffle order and the base seed
that PyTorch gives each worker (``base_seed + worker_id``, a new base seed for every iterator unless workers are
persistent). `VideoDataset` derives each item's RNG from that per-worker ``torch.initial_seed()``, so workers
never replay each other's offsets and a fixed seed reproduces a run. With ``workers=0`` items are drawn in the main
process, whose ``torch.initial_seed()`` is the trainer's ``torch.manual_seed``.
"""
from __future__ import annotations

import logging
import random
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

log = logging.getLogger(__name__)

__all__ = ["build_loader", "collate_clips", "worker_init_fn"]


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy and `random` from the worker's torch seed; keep each worker single-threaded."""
    seed = torch.initial_seed()  # base_seed + worker_id, different per worker and per loader iterator
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)
    # Parallelism comes from the workers; threads inside each would only oversubscribe the cores.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def collate_clips(batch: Sequence[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[(clip (3,T,H,W), label, video_index), ...]`` -> ``(clips (N,3,T,H,W), labels, video_index)``.

    Labels and video indices are int64 tensors. In a worker the clips are stacked straight into shared memory
    (through `default_collate`), saving a copy on the way to the main process.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    clips = [item[0] for item in batch]
    shapes = {tuple(c.shape) for c in clips}
    if len(shapes) > 1:
        raise ValueError(f"clips of one batch differ in shape: {sorted(shapes)}")
    labels = torch.tensor([int(item[1]) for item in batch], dtype=torch.int64)
    video_index = torch.tensor([int(item[2]) for item in batch], dtype=torch.int64)
    return default_collate(clips), labels, video_index


def build_loader(dataset: Dataset, batch_size: int, train: bool, workers: int, seed: int = 0,
                 distributed: bool = False, batch_sampler: Sampler[list] | Iterable[list] | None = None,
                 drop_last: bool | None = None) -> DataLoader:
    """A DataLoader of ``(clips, labels, video_index)`` batches.

    Args:
        dataset: a map-style clip dataset (e.g. `VideoDataset`).
        batch_size: clips per batch (ignored when `batch_sampler` is given).
        train: shuffle (and by default drop the last incomplete batch).
        workers: worker processes (0 = load in the main process); workers are persistent when > 0.
        seed: seeds the loader's generator (shuffle order, worker seeds) and the `DistributedSampler`.
        distributed: shard with a `DistributedSampler` (the trainer calls ``loader.sampler.set_epoch(epoch)``).
        batch_sampler: yields lists of indices or ``(index, cycle)`` pairs (multigrid's short cycle); it then
            owns batching, shuffling and sharding.
        drop_last: default `train`.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    drop_last = train if drop_last is None else drop_last
    generator = torch.Generator()
    generator.manual_seed(seed)
    common = dict(num_workers=workers, collate_fn=collate_clips, pin_memory=torch.cuda.is_available(),
                  worker_init_fn=worker_init_fn, generator=generator, persistent_workers=workers > 0)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **common)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if distributed:
        # Evaluation shards are padded to equal length (a few clips twice); video_index lets metrics deduplicate.
        sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=drop_last, **common)
