"""Conversion on a Dask cluster started as users start it: `dask scheduler` and `dask worker` processes with
their own working folder (not the repository) and no PYTHONPATH, driven by `python -m tools.convert --dask`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.store import N_FRAMES_NAME, TMP_NAME
from tests.test_convert_shards import assert_same_roots, finish, outputs, run_local, spawn
from tests.test_distributed import _free_port
from tests.test_slurm_scripts import descendants
from tests.videos_util import make_video

distributed = pytest.importorskip("distributed")  # optional for users; installed by the Makefile so CI runs this

# The `dask` command of this environment (`python -m dask` is the same program).
DASK = ([str(Path(sys.executable).parent / "dask")] if (Path(sys.executable).parent / "dask").is_file()
        else [sys.executable, "-m", "dask"])
START_TIMEOUT_S = 120


def _cluster_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    return {**env, "NO_COLOR": "1", **extra}


def _start(args: list[str], cwd: Path, log_name: str, **env: str) -> subprocess.Popen:
    log = open(cwd / log_name, "w")  # noqa: SIM115  (kept open by the process until it ends)
    return subprocess.Popen([*DASK, *args], cwd=cwd, env=_cluster_env(**env), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for_workers(address: str, n: int) -> None:
    with distributed.Client(address, timeout=START_TIMEOUT_S, set_as_default=False) as client:
        client.wait_for_workers(n, timeout=START_TIMEOUT_S)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`dask scheduler` + `dask worker --nworkers 2 --nthreads 1`, each started in a folder of its own."""
    cwd = tmp_path_factory.mktemp("dask_cwd")
    address = f"tcp://127.0.0.1:{_free_port()}"
    scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard"],
                       cwd, "scheduler.log")
    worker = _start(["worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                     "--local-directory", str(cwd / "scratch")], cwd, "worker.log")
    try:
        _wait_for_workers(address, 2)
        yield address, worker, cwd
    finally:
        _stop(worker)
        _stop(scheduler)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two classes of tiny videos plus one broken file (a failure every run must report the same way)."""
    src = tmp_path_factory.mktemp("dask_videos") / "videos"
    for label, n in (("walk", 4), ("jump high", 3)):
        for i in range(n):
            make_video(src / label / f"{label[:4]}_{i}.mp4", n_frames=6 + i, height=16, width=24)
    (src / "walk" / "broken.mp4").write_bytes(b"")
    return src


def test_the_cli_cluster_converts_a_folder_into_the_root_of_a_local_run(cluster, videos, tmp_path):
    address, _, _ = cluster
    single = tmp_path / "single"
    run_local(videos, single)
    root = tmp_path / "dask"
    code, out = finish(spawn(videos, root, "--dask", address))
    assert code == 1, out[-3000:]  # the broken video, reported like a local run reports it
    assert "dask: 8 video(s)" in out and "Traceback" not in out
    assert_same_roots(single, root)


def _holder_of(path: Path, candidates: set[int]) -> int | None:
    for pid in candidates:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(path):
                    return pid
            except OSError:
                continue
    return None


def test_a_worker_killed_mid_video_leaves_nothing_complete_and_another_converts_it(cluster, tmp_path):
    address, worker, _ = cluster
    src = tmp_path / "videos"
    make_video(src / "walk" / "long.mp4", n_frames=1200, height=96, width=128)
    make_video(src / "walk" / "short.mp4", n_frames=6, height=16, width=24)
    root = tmp_path / "dask"
    video_dir = root / "jpg" / "walk" / "long"
    driver = spawn(src, root, "--dask", address)
    killed = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        if (video_dir / TMP_NAME).exists():
            pid = _holder_of((video_dir / TMP_NAME).resolve(), descendants(worker.pid))
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = pid
                # What the killed worker left must not look complete to a reader or to the converter.
                assert not (video_dir / N_FRAMES_NAME).exists()
                continue
        time.sleep(0.005)
    code, out = finish(driver)
    assert killed is not None, "the conversion finished before a worker could be killed:\n" + out[-2000:]
    assert "Traceback" not in out
    if code == 0:  # retried on another worker: the same root as a local run
        single = tmp_path / "single"
        assert run_local(src, single) == 0
        assert_same_roots_of(single, root)
    else:  # or recorded as failed, with nothing that looks complete
        assert "walk/long.mp4" in (root / "convert_failures.csv").read_text(encoding="utf-8"), out[-2000:]
        assert not (video_dir / N_FRAMES_NAME).exists()


def assert_same_roots_of(a: Path, b: Path) -> None:
    out_a, out_b = outputs(a), outputs(b)
    assert sorted(out_a) == sorted(out_b)
    assert [k for k in out_a if out_a[k] != out_b[k]] == []


def test_a_worker_that_cannot_run_the_conversion_stops_the_driver_with_one_line(cluster, videos, tmp_path):
    address, _, cwd = cluster
    # A worker whose environment lacks PyAV (simulated by a module of that name that fails to import).
    fake = tmp_path / "no_av"
    (fake / "av").mkdir(parents=True)
    (fake / "av" / "__init__.py").write_text("raise ImportError(\"No module named 'av'\")\n")
    lacking = _start(["worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard", "--local-directory",
                      str(cwd / "scratch-lacking")], cwd, "worker-lacking.log", PYTHONPATH=str(fake))
    try:
        _wait_for_workers(address, 3)
        code, out = finish(spawn(videos, tmp_path / "root", "--dask", address))
    finally:
        _stop(lacking)
    assert code == 2, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No module named 'av'" in lines[0] and "requirements.txt" in lines[0], out[-3000:]
    assert "Traceback" not in out
    assert not list((tmp_path / "root" / "jpg").rglob(N_FRAMES_NAME))  # nothing was submitted
