"""Run the converter's per-video work on a Dask cluster: ``python -m tools.convert VIDEOS ROOT --dask ADDRESS``.

The scheduler at ADDRESS (``tcp://host:8786``; started by ``dask scheduler`` + ``dask worker``, or by dask-jobqueue
on SLURM/PBS, dask-kubernetes, dask-yarn, or ``dask ssh``) receives one task per video; every worker must see
VIDEOS and ROOT at the same paths (a shared filesystem) and import this project (same environment). The driver
collects results as they finish and writes the index, labels and failure report like a local run, so the root is
identical, database for database, to a single-machine conversion.

A worker that dies while converting a video (decoder crash, OOM killer) is replaced by Dask, which retries the
task on another worker; a video that kills ``allowed-failures`` workers (Dask's setting, default 3) is recorded
as failed. ``distributed`` is optional: ``pip install -r requirements-dask.txt``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from tools.ingest.jobs import Job, Result, convert_video

log = logging.getLogger(__name__)

__all__ = ["run_jobs_dask"]


def _convert_one(job: Job) -> Result:
    # Imported on the worker: the task carries only the module path, not the driver's state.
    import cv2

    cv2.setNumThreads(1)
    return convert_video(job)


def run_jobs_dask(jobs: list[Job], address: str, timeout: float = 60.0) -> Iterator[Result]:
    """Results of `jobs` (`tools.ingest.jobs.Job`) as the cluster at `address` finishes them.

    Raises RuntimeError with one clear line when ``distributed`` is missing or the scheduler cannot be reached
    within `timeout` seconds.
    """
    try:
        from distributed import Client, as_completed
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise RuntimeError("--dask needs the optional dependency `distributed`: "
                           "pip install -r requirements-dask.txt") from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise RuntimeError(f"--dask {address}: cannot reach the Dask scheduler ({e})") from None
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        log.info("dask: %d video(s) on %s (%d worker(s))", len(jobs), address, n_workers)
        # pure=False: the same job submitted twice (a rerun) must run again, not return a cached result.
        futures = client.map(_convert_one, jobs, pure=False)
        job_of = {f.key: job for f, job in zip(futures, jobs)}
        for future in as_completed(futures, loop=client.loop):
            job = job_of[future.key]
            try:
                yield future.result()
            except KilledWorker:
                yield Result(job, "failed", reason="the Dask worker died converting it, on every retry "
                                                   "(decoder crash or killed)")
            except Exception as e:  # convert_video never raises for a bad video: this is the cluster failing
                yield Result(job, "failed", reason=f"Dask task failed ({type(e).__name__}: {e})")
            finally:
                future.release()
    finally:
        client.close()
