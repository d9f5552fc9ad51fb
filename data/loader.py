"""DataLoader construction for clip datasets: seeding, worker set-up, samplers and the clip collate.

Reproducibility: the training order is a function of ``(seed, epoch)`` (`EpochShuffleSampler`, or the
`DistributedSampler` when distributed); the trainer calls ``loader.sampler.set_epoch(epoch)`` and
``dataset.set_epoch(epoch)`` every epoch. The loader's `torch.Generator`, seeded from `seed`, gives the base seed of
the (persistent) workers (``base_seed + worker_id``). `VideoDataset` derives each item's RNG from that per-worker
``torch.initial_seed()``, the epoch and the index, so workers never replay each other's offsets, a fixed seed
reproduces a run and a resumed run draws what an uninterrupted one would. With ``workers=0`` items are drawn in the
main process, whose ``torch.initial_seed()`` is the trainer's ``torch.manual_seed``.
"""
from __future__ import annotations

import atexit
import logging
import random
import signal
import weakref
from collections.abc import Iterable, Iterator, Sequence, Sized

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate

log = logging.getLogger(__name__)

__all__ = ["build_loader", "collate_clips", "worker_init_fn", "EpochShuffleSampler", "shutdown_workers"]

# Loaders with worker processes, so that they can be stopped at interpreter exit (see `shutdown_workers`).
_WITH_WORKERS: weakref.WeakSet[DataLoader] = weakref.WeakSet()


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that is a function of ``(seed, epoch)`` only.

    ``set_epoch(e)`` picks the epoch (the trainer calls it, so a resumed run sees the same order as an
    uninterrupted one); without it every new iteration moves on to the next epoch's order by itself.
    """

    def __init__(self, data_source: Sized, seed: int = 0):
        self.n = len(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        self.epoch += 1
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.n


def shutdown_workers() -> None:
    """Stop the persistent workers of every loader `build_loader` made that is still alive.

    Registered at exit, ahead of torch's and multiprocessing's own exit handlers: a loader kept alive by a
    reference cycle is otherwise never shut down (torch skips it once its exit flag is set), and multiprocessing
    then ends the workers with SIGTERM, which they ignore (`worker_init_fn`), and waits for them forever.
    """
    for loader in list(_WITH_WORKERS):
        iterator = getattr(loader, "_iterator", None)  # torch keeps the persistent workers' iterator here
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None


atexit.register(shutdown_workers)


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy and `random` from the worker's torch seed (torch itself is seeded by the DataLoader).

    OpenCV's thread count is deliberately left alone: ``cv2.setNumThreads`` in a forked child tears down the
    parent's thread pool and deadlocks (its threads do not exist in the child). Clip-sized OpenCV calls hardly use
    threads anyway; the DataLoader already sets torch to one thread per worker.
    """
    # Preemption signals and Ctrl-C are the main process's: it finishes the current step and checkpoints, which a
    # worker killed by a SIGTERM sent to the whole process group would abort. Workers still end with the main one.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    seed = torch.initial_seed()  # base_seed + worker_id, different per worker and per loader iterator
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


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
        train: shuffle (`EpochShuffleSampler`, or the `DistributedSampler`) and by default drop the last
            incomplete batch.
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
        loader = DataLoader(dataset, batch_sampler=batch_sampler, **common)
    else:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if distributed:
            # Evaluation shards are padded to equal length (a few clips twice); video_index lets metrics deduplicate.
            sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=False)
        else:
            sampler = EpochShuffleSampler(dataset, seed) if train else None
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
    if workers > 0:
        _WITH_WORKERS.add(loader)
    return loader
