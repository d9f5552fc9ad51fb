"""Conversion on many machines and several converters in one root: shards, merge, concurrency, subsets, Dask."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data.index import read_all
from data.labels import read_classes, read_labels
from data.store import open_video
from tests.videos_util import make_video
from tools import convert
from tools.ingest.shards import ShardError, resolve_shards, shard_of

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180  # seconds for any converter subprocess: nothing may hang CI


@pytest.fixture
def videos(tmp_path):
    """Two classes of tiny videos plus one broken file (a failure every run must report the same way)."""
    src = tmp_path / "videos"
    for label, n in (("walk", 4), ("jump high", 3)):
        for i in range(n):
            make_video(src / label / f"{label[:4]}_{i}.mp4", n_frames=6 + i, height=16, width=24)
    (src / "walk" / "broken.mp4").write_bytes(b"")
    return src


def run_local(videos, root, *extra) -> int:
    return convert.main([str(videos), str(root), "--workers", "1", *extra])


def spawn(videos, root, *extra, env=None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    for var in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "RANK", "WORLD_SIZE"):
        if env is None or var not in env:
            full_env.pop(var, None)
    return subprocess.Popen([sys.executable, "-m", "tools.convert", str(videos), str(root), "--workers", "1",
                             *extra], cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"converter did not finish in {TIMEOUT} s:\n{out[-2000:]}")
    return proc.returncode, out


def outputs(root: Path) -> dict[str, bytes]:
    """Every file a user keeps from a root (databases, markers, labels, classes, failure report) by path; not the
    derived index and label caches, which record file times."""
    keep = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(("shards/", ".cache/")) and rel not in ("index.db", ".lock"):
            keep[rel] = path.read_bytes()
    return keep


def index_rows(root: Path) -> list[tuple]:
    return [(e.label, e.video_id, e.n_frames, e.height, e.width, e.fps, e.bytes, e.source_mtime)
            for e in read_all(root)]


def assert_same_roots(a: Path, b: Path) -> None:
    out_a, out_b = outputs(a), outputs(b)
    assert sorted(out_a) == sorted(out_b)
    different = [k for k in out_a if out_a[k] != out_b[k]]
    assert not different, f"files differ: {different[:5]}"
    assert index_rows(a) == index_rows(b) and len(index_rows(a)) == 7


def failures_of(root: Path) -> str:
    return (root / "convert_failures.csv").read_text(encoding="utf-8")


def test_shard_assignment_is_stable_disjoint_and_defaults_from_the_scheduler():
    paths = [f"class {c}/video_{i}.mp4" for c in range(5) for i in range(40)]
    shards = [shard_of(p, 3) for p in paths]
    assert set(shards) == {0, 1, 2} and shards == [shard_of(p, 3) for p in paths]
    assert shard_of("walk/walk_0.mp4", 1000) == shard_of("walk/walk_0.mp4", 1000)  # no per-process hash seed
    assert resolve_shards(None, None, {}) == (1, 0)
    assert resolve_shards(None, None, {"SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_ID": "3",
                                       "RANK": "1", "WORLD_SIZE": "2"}) == (8, 3)
    assert resolve_shards(None, None, {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "4",
                                       "SLURM_ARRAY_TASK_MIN": "1"}) == (4, 3)
    assert resolve_shards(None, None, {"RANK": "1", "WORLD_SIZE": "2"}) == (2, 1)
    assert resolve_shards(4, 2, {"RANK": "1", "WORLD_SIZE": "2"}) == (4, 2)
    with pytest.raises(ShardError, match="--shard-index must be in"):
        resolve_shards(3, 3, {})


def test_three_shard_processes_equal_one_run_byte_for_byte(videos, tmp_path):
    single = tmp_path / "single"
    assert run_local(videos, single) == 1  # the broken file fails
    sharded = tmp_path / "sharded"
    procs = [spawn(videos, sharded, "--num-shards", "3", "--shard-index", str(i)) for i in range(3)]
    codes = [finish(p)[0] for p in procs]
    assert all(c in (0, 1) for c in codes) and 1 in codes  # the shard holding the broken file reports it
    assert_same_roots(single, sharded)
    assert "broken.mp4" in failures_of(sharded)


def test_shards_from_slurm_variables_merge_by_hand_then_by_the_last_shard(videos, tmp_path, caplog):
    single = tmp_path / "single"
    run_local(videos, single)
    root = tmp_path / "root"
    env = {"SLURM_ARRAY_TASK_COUNT": "3"}
    for i in (0, 1):
        finish(spawn(videos, root, env={**env, "SLURM_ARRAY_TASK_ID": str(i)}))
    assert not (root / "labels" / "all.csv").exists()  # shard 2 (as if killed) has not finished: no merge yet
    with caplog.at_level(logging.WARNING):
        run_local(videos, root, "--merge", "--num-shards", "3")
    assert "1 of 3 shards have not finished" in caplog.text
    partial = read_labels(root / "labels" / "all.csv")
    assert 0 < len(partial) < 7
    code, out = finish(spawn(videos, root, env={**env, "SLURM_ARRAY_TASK_ID": "2"}))  # the rerun of shard 2
    assert "all 3 shards have finished: merging" in out
    assert_same_roots(single, root)


def test_two_converters_at_once_finish_with_complete_databases_and_whole_labels(videos, tmp_path):
    single = tmp_path / "single"
    run_local(videos, single)
    root = tmp_path / "root"
    procs = [spawn(videos, root), spawn(videos, root)]
    results = [finish(p) for p in procs]
    assert [c for c, _ in results] == [1, 1], results[0][1][-2000:]
    for video_dir in (root / "jpg").glob("*/*"):
        assert not list(video_dir.glob("frames.db.tmp*"))
        with open_video(video_dir) as reader:  # checks marker against the rows
            assert len(reader.read(list(range(len(reader))))) == len(reader) >= 6
    assert_same_roots(single, root)


def test_subset_conversion_adds_to_the_labels_and_classes_of_a_root(tmp_path, caplog):
    first, second = tmp_path / "first", tmp_path / "second"
    for label in ("walk", "run"):
        for i in range(2):
            make_video(first / label / f"{label}_{i}.mp4", n_frames=6, height=16, width=24)
    make_video(second / "jump" / "jump_0.mp4", n_frames=6, height=16, width=24)
    make_video(second / "walk" / "walk_9.mp4", n_frames=6, height=16, width=24)
    root = tmp_path / "root"
    assert run_local(first, root) == 0
    with caplog.at_level(logging.WARNING):
        assert run_local(second, root) == 0
    assert read_classes(root / "classes.txt") == ["jump", "run", "walk"]
    rows = {(s.label, s.video_id) for s in read_labels(root / "labels" / "all.csv")}
    assert rows == {("run", "run_0"), ("run", "run_1"), ("walk", "walk_0"), ("walk", "walk_1"),
                    ("walk", "walk_9"), ("jump", "jump_0")}
    assert "class list changes from 2 to 3 classes" in caplog.text
    assert len(read_all(root)) == 6


def test_failed_reconversion_drops_the_stale_video_from_the_labels(tmp_path):
    src = tmp_path / "videos"
    make_video(src / "walk" / "a.mp4", n_frames=6, height=16, width=24)
    make_video(src / "walk" / "b.mp4", n_frames=6, height=16, width=24)
    root = tmp_path / "root"
    assert run_local(src, root) == 0
    (src / "walk" / "b.mp4").write_bytes(b"")  # the source changes into a broken file
    assert run_local(src, root) == 1
    assert [s.video_id for s in read_labels(root / "labels" / "all.csv")] == ["a"]
    assert not (root / "jpg" / "walk" / "b" / "n_frames").exists()


def test_dask_local_cluster_of_two_processes_equals_a_local_run(videos, tmp_path):
    import distributed  # optional for users, installed by the Makefile (requirements-dask.txt) so CI runs this
    single = tmp_path / "single"
    run_local(videos, single)
    root = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster:
        code, out = finish(spawn(videos, root, "--dask", cluster.scheduler_address))
        assert len(cluster.scheduler_info["workers"]) == 2
    assert code == 1, out[-2000:]
    assert "dask: 8 video(s)" in out
    assert_same_roots(single, root)


def test_dask_unreachable_scheduler_is_one_clear_line(videos, tmp_path):
    code, out = finish(spawn(videos, tmp_path / "root", "--dask", "tcp://127.0.0.1:9", "--dask-timeout", "2"))
    assert code == 2 and "cannot reach the Dask scheduler" in out and "Traceback" not in out
