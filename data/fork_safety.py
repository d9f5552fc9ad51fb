"""Starting forked worker processes from a process that has already used OpenCV.

OpenCV starts its thread pool on the first parallel call (a large enough ``resize``, ``warpAffine``, ...) and,
once idle, its threads sleep on a condition variable. ``fork()`` copies that condition variable, with those
sleepers counted in it, but not the threads. A forked child that then calls ``cv2.setNumThreads`` (as a pool
initializer does, to keep workers x threads within the cores) tears the inherited pool down and blocks for ever
in ``pthread_cond_destroy``, waiting for waiters that do not exist in it. Whether the pool has gone idle at the
moment of the fork is a matter of milliseconds, so the hang depends on what the process ran before.

The cure is in the parent: with one OpenCV thread there is no pool to inherit, and a child's own
``cv2.setNumThreads(1)`` is harmless. `opencv_single_threaded` holds that state while a pool forks and works,
then gives the process its thread count back. A forked child that never calls ``cv2.setNumThreads`` (the
DataLoader workers of `data.loader`) runs OpenCV fine on an inherited pool.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
from collections.abc import Iterator
from multiprocessing.context import BaseContext

import cv2

log = logging.getLogger(__name__)

__all__ = ["fork_context", "opencv_single_threaded"]


def fork_context() -> BaseContext | None:
    """The ``fork`` start method where the platform has it (workers start at once and re-import nothing),
    else None (the platform default, ``spawn``)."""
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None


@contextlib.contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """Run the block with one OpenCV thread in this process (no thread pool for a forked child to inherit);
    the previous thread count is restored afterwards, also when the block raises."""
    previous = cv2.getNumThreads()
    if previous != 1:
        cv2.setNumThreads(1)  # joins this process's pool threads: safe here, where they exist
    try:
        yield
    finally:
        if previous != 1:
            cv2.setNumThreads(previous)
