"""Run the converter's per-video work on a Dask cluster: ``python -m tools.convert VIDEOS ROOT --dask ADDRESS``.

The scheduler at ADDRESS (``tcp://host:8786``; started by ``dask scheduler`` + ``dask worker``, or by dask-jobqueue
on SLURM/PBS, dask-kubernetes, dask-yarn, or ``dask ssh``) receives one task per video; every worker must see
VIDEOS and ROOT at the same paths (a shared filesystem) and run the same Python environment. The driver collects
results as they finish and writes the index, labels and failure report like a local run, so the root is
identical, database for database, to a single-machine conversion.

The workers need nothing of this project beforehand: the driver ships its code with Dask's own means. The
packages the conversion imports are zipped (named by a hash of their content) and sent with Dask's `UploadFile`
worker plugin, as `Client.upload_file` does (workers that join later, or replace a dead one, receive it too; the
plugin is removed when the run ends). Tasks carry plain data only (a dict per video, a tuple back) and a function
defined inside `_worker_functions`, which cloudpickle sends by value: the scheduler, which unpickles the task
graph, never imports the project either. On the worker the function puts the zip first on `sys.path` and imports
the converter from it (dropping modules of the same names that another version of the zip loaded before). The project is not pip-installed on the cluster:
its top-level packages are named `data`, `network`, `train` and `tools`, names that other distributions use too,
and installing them into a shared environment would shadow (or be shadowed by) those. Inside a worker they do
take those names while it converts: run the conversion on workers of its own (the commands in docs/cluster.md).

Before submitting, the driver runs a check on every worker (`Client.run`): the shipped code imports with its
dependencies, VIDEOS is visible and ROOT writable. A worker that fails it stops the run with one line saying what
is missing and how to fix it. A worker that dies while converting a video (decoder crash, OOM killer) is replaced
by its nanny and Dask retries the task elsewhere; a video that kills ``allowed-failures`` workers (Dask's setting,
default 3) is recorded as failed. A cluster that fails while running (scheduler gone) records the unfinished
videos as failed. ``distributed`` is optional: ``pip install -r requirements-dask.txt``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["run_jobs_dask", "code_archive"]

_REPO = Path(__file__).resolve().parents[2]


def _project_packages() -> list[str]:
    """The top-level packages of this project that the converter has imported (what a worker needs)."""
    import tools.ingest.jobs  # noqa: F401  (the conversion's imports are what ships)

    names = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and "." not in name and Path(path).name == "__init__.py":
            if Path(path).resolve().parent.parent == _REPO:
                names.add(name)
    return sorted(names)


def code_archive(folder: Path) -> tuple[Path, list[str]]:
    """Zip this project's packages the conversion imports into `folder`; returns (zip path, package names).

    The zip is reproducible (fixed timestamps, sorted entries) and named by a hash of its content, so workers
    tell one version of the code from another.
    """
    packages = _project_packages()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in packages:
            for path in sorted((_REPO / package).rglob("*.py")):
                info = zipfile.ZipInfo(path.relative_to(_REPO).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    data = buf.getvalue()
    out = Path(folder) / f"videotrain-code-{hashlib.sha1(data).hexdigest()[:12]}.zip"
    out.write_bytes(data)
    return out, packages


def _worker_functions(zip_name: str, packages: list[str]) -> tuple[Callable[..., str], Callable[[dict], tuple]]:
    """(check, convert): the two functions the workers run, self-contained so that they travel by value.

    They may use only their arguments, these closure variables and what they import themselves.
    """

    def load(local_directory: str) -> Any:
        import os
        import sys

        path = os.path.join(local_directory, zip_name)
        if not os.path.isfile(path):
            raise ImportError(f"the project's code {zip_name} was not uploaded to this worker")
        if not sys.path or sys.path[0] != path:
            if path in sys.path:
                sys.path.remove(path)
            sys.path.insert(0, path)
        for name in list(sys.modules):  # modules of these names loaded from elsewhere (an older zip)
            if name.split(".")[0] in packages:
                where = getattr(sys.modules[name], "__file__", None) or ""
                if not where.startswith(path):
                    del sys.modules[name]
        import tools.ingest.jobs

        return tools.ingest.jobs

    def check(videos: str, root: str, dask_worker: Any = None) -> str:
        """'' when this worker can convert VIDEOS into ROOT, else what is missing (`Client.run` passes the worker)."""
        import os
        import tempfile

        try:
            load(dask_worker.local_directory)
            import av  # noqa: F401  (the decoder, imported by the conversion only when it runs)
            import cv2  # noqa: F401
        except ImportError as e:
            return (f"cannot import the conversion ({e}): install this project's requirements.txt in the workers' "
                    "environment (the same Python environment as the driver's)")
        if not os.path.isdir(videos):
            return f"does not see {videos}: the workers need VIDEOS and ROOT at the same paths (a shared filesystem)"
        try:
            os.makedirs(root, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
                pass
        except OSError as e:
            return f"cannot write to {root} ({e.strerror or e}): the workers need ROOT writable at the same path"
        return ""

    def convert(fields: dict) -> tuple:
        """Convert one video; returns (status, frames, bytes, seconds, reason, warnings)."""
        import cv2
        from distributed import get_worker

        convert_module = load(get_worker().local_directory)
        cv2.setNumThreads(1)
        r = convert_module.convert_video(convert_module.Job(**fields))
        return r.status, r.frames, r.bytes, r.seconds, r.reason, list(r.warnings)

    return check, convert


def _connect(address: str, timeout: float) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise RuntimeError("--dask needs the optional dependency `distributed`: "
                           "pip install -r requirements-dask.txt") from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise RuntimeError(f"--dask {address}: cannot reach the Dask scheduler ({e})") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise RuntimeError(f"--dask {address}: no Dask worker connected within {timeout:g} s; start workers with "
                           f"`dask worker {address} --nworkers N --nthreads 1` (--dask-timeout waits longer)") from None
    return client


def _check_workers(client: Any, address: str, check: Callable[..., str], videos: str, root: str) -> None:
    """Raise RuntimeError naming the first worker that cannot run the conversion, and why."""
    try:
        answers = client.run(check, videos, root, on_error="return")
    except (OSError, TimeoutError) as e:
        raise RuntimeError(f"--dask {address}: the workers could not be checked ({e})") from None
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            answer = f"the check failed ({type(answer).__name__}: {answer})"
        if answer:
            raise RuntimeError(f"--dask {address}: worker {worker} {answer}")


def run_jobs_dask(jobs: list, address: str, timeout: float = 60.0, videos: str | os.PathLike = "",
                  root: str | os.PathLike = "") -> Iterator:
    """Results of `jobs` (`tools.ingest.jobs.Job`) as the cluster at `address` finishes them.

    Raises RuntimeError with one clear line when ``distributed`` is missing, the scheduler cannot be reached or
    has no workers within `timeout` seconds, or a worker cannot run the conversion (checked on every worker
    before anything is submitted). Once running, a failure of the cluster yields the unfinished jobs as failed.
    """
    from tools.ingest.jobs import Result

    client = _connect(address, timeout)
    plugin = None
    try:
        from distributed import as_completed
        from distributed.diagnostics.plugin import UploadFile
        from distributed.scheduler import KilledWorker

        with tempfile.TemporaryDirectory(prefix="videotrain-dask-") as tmp:
            archive, packages = code_archive(Path(tmp))
            check, convert = _worker_functions(archive.name, packages)
            try:
                # What `Client.upload_file` does for the workers, under a name of our own: removed at the end, so
                # a long-lived cluster does not send every past version to each worker that joins.
                client.register_plugin(UploadFile(str(archive), load=False), name=archive.stem)
                plugin = archive.stem
            except Exception as e:  # the cluster's own error types vary: the message says what happened
                raise RuntimeError(f"--dask {address}: cannot upload the project's code ({e})") from None
        _check_workers(client, address, check, str(videos), str(root))
        n_workers = len(client.scheduler_info().get("workers", {}))
        log.info("dask: %d video(s) on %s (%d worker(s))", len(jobs), address, n_workers)
        # pure=False: the same job submitted twice (a rerun) must run again, not return a cached result.
        futures = client.map(convert, [dataclasses.asdict(job) for job in jobs], pure=False)
        job_of = {f.key: job for f, job in zip(futures, jobs)}
        pending = dict(job_of)
        try:
            for future in as_completed(futures, loop=client.loop):
                job = pending.pop(future.key)
                try:
                    status, frames, nbytes, seconds, reason, warnings = future.result()
                    yield Result(job, status, frames=frames, bytes=nbytes, seconds=seconds, reason=reason,
                                 warnings=warnings)
                except KilledWorker:
                    yield Result(job, "failed", reason="the Dask worker died converting it, on every retry "
                                                       "(decoder crash or killed)")
                except Exception as e:  # convert_video never raises for a bad video: this is the cluster failing
                    yield _lost(job, f"Dask task failed ({type(e).__name__}: {_first_line(e)})")
                finally:
                    future.release()
        except (OSError, TimeoutError, RuntimeError) as e:  # the scheduler went away mid-run
            log.error("dask: the cluster failed with %d video(s) unfinished (%s)", len(pending), _first_line(e))
            for job in pending.values():
                yield _lost(job, f"the Dask cluster failed before converting it ({_first_line(e)})")
    finally:
        if plugin is not None:
            with contextlib.suppress(Exception):  # a cluster that is gone has nothing left to clean
                client.unregister_worker_plugin(plugin)
        client.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _lost(job: Any, reason: str) -> Any:
    """The result of a job whose task the cluster lost: complete on disk (a worker finished it), or failed."""
    from data.store import N_FRAMES_NAME
    from tools.ingest.jobs import Result, is_complete

    if is_complete(job):
        return Result(job, "skipped", frames=int((Path(job.out_dir) / N_FRAMES_NAME).read_text()))
    return Result(job, "failed", reason=reason)
