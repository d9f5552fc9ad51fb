"""The loader benchmark on a handful of tiny videos: every reader reads the same frames, the table's ratios and
storage figures follow from what was converted and timed."""
from __future__ import annotations

import re
import sqlite3

import numpy as np

from tests.test_fork_safety import run_bounded
from tests.videos_util import frame_value, frame_values, make_store, make_video
from tools.bench import loader as bench_loader
from tools.bench.loader_readers import FolderReader, MemoryReader, PyAVReader, SqlReader

ROWS = ("(a) SQL, cached connection + mmap", "(a) SQL, cached + mmap, checksums not verified", "(a) SQL, reduce=2",
        "(b) JPEG file per frame", "(c) PyAV decode + seek", "(d) bound")


def test_every_reader_returns_the_frames_asked_for(tmp_path):
    """The comparison is only fair if all readers deliver the same clip: frame i of each source is grey level
    `frame_value(i)`, so a reader that is off by one frame (1-based JPEG names, seeking) gives other values."""
    video = make_video(tmp_path / "v.mp4", n_frames=20, codec="h264")
    db = make_store(tmp_path / "store" / "v", n_frames=20)
    conn = sqlite3.connect(db / "frames.db")
    blobs = [b for (b,) in conn.execute("SELECT jpeg FROM frames ORDER BY idx")]
    conn.close()
    folder = tmp_path / "folder" / "v"
    folder.mkdir(parents=True)
    for i, b in enumerate(blobs, 1):
        (folder / f"frame_{i:05d}.jpg").write_bytes(b)
    indices, size = np.array([3, 5, 7, 9, 17]), (32, 48)
    clips = {"sql": SqlReader([db], "cached")(0, indices), "folder": FolderReader([folder], size)(0, indices),
             "memory": MemoryReader([blobs], size)(0, indices), "pyav": PyAVReader([video], size)(0, indices)}
    expected = [frame_value(i) for i in indices]
    for name, clip in clips.items():
        assert clip.shape == (5, 32, 48, 3), name
        got = frame_values(clip)
        assert all(abs(g - e) <= 3 for g, e in zip(got, expected)), (name, got, expected)
    # The three JPEG readers decode the very same bytes: identical pixels.
    assert np.array_equal(clips["sql"], clips["folder"]) and np.array_equal(clips["sql"], clips["memory"])


def test_bench_loader_small_run(tmp_path, capsys):
    out = tmp_path / "table.md"
    code = bench_loader.main(["--data", str(tmp_path / "bench"), "--videos", "4", "--frames", "32", "--size",
                              "32x48", "--clips", "16", "--batch-size", "4", "--workers", "0", "--repeats", "1",
                              "--convert-workers", "1", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert text.strip() == capsys.readouterr().out.strip()
    # Columns: 0 workers warm, cold, per CPU-second. "rate (ratio x d)": the ratio is the rate over the bound's
    # warm rate (its per-CPU-second rate in the last column); the bound has no cold figure (nothing to evict).
    bound = next(ln for ln in text.splitlines() if ln.startswith("| (d) bound"))
    m = re.fullmatch(r"\| [^|]+ \| (\d+) \(1\.00x d\) \| n/a \| (\d+) \(1\.00x d\) \|", bound)
    assert m, bound
    d_warm, d_cpu = float(m.group(1)), float(m.group(2))
    for row in ROWS:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {row}"))
        cells = re.findall(r"\| (\d+) \((\d+\.\d+)x d\)", line)
        assert len(cells) == 3 or row.startswith("(d)"), line
        for (rate, ratio), d in zip(cells, (d_warm, d_warm, d_cpu) if len(cells) == 3 else (d_warm, d_cpu)):
            # both figures are rounded (rate to 1 clip/s, ratio to 0.01): allow for that
            assert abs(float(rate) / d - float(ratio)) <= 0.006 + (1.0 + float(ratio)) / d, line
    # Storage: 4 videos of 32 frames in both stores; one frames.db + n_frames per video, one file per frame.
    storage = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^\| (SQLite frame store|JPEG folder|source videos) \| (\S+) \| (\d+) \| (\d+) \| (\d+\.\d+) MB \|", text,
        re.M)}
    assert storage["SQLite frame store"][1:3] == ("128", "8"), storage
    assert storage["JPEG folder"][1:3] == ("128", "128"), storage
    assert storage["source videos"][1:3] == ("128", "4"), storage
    assert "0 workers, cold" in text
    m = re.search(r"Per-frame checksum \(CRC-32, verified on every read\): (\d+\.\d+) us per frame against (\d+) us"
                  r" to decode it \((\d+\.\d+)% of the decode\), median of 5 passes over all (\d+) stored frames", text)
    assert m and 0 < float(m.group(1)) < float(m.group(2)) and m.group(4) == "128", text[-500:]


def test_benchmark_loader_workers_after_opencv_ran_here_finish(tmp_path):
    out = run_bounded("""
        import torch
        from tools.bench.loader import time_loader

        class Clips(torch.utils.data.Dataset):
            def __len__(self):
                return 8

            def __getitem__(self, i):
                return torch.full((3, 4, 8, 8), float(i))

        rate, _ = time_loader(Clips(), workers=2, batch_size=2)
        print(rate > 0)
    """, tmp_path)
    assert out.split() == ["True"]
