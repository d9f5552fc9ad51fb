"""The index benchmark's layout and measurement on a tiny dataset (figures go to docs/BENCHMARKS.md, not here)."""
from __future__ import annotations

import logging

from data.dataset import VideoDataset
from tools.bench import index as bench_index


def test_layout_opens_from_its_index_and_matches_its_markers(tmp_path, caplog):
    root = tmp_path / "layout"
    bench_index.build_layout(root, 300, 7)
    with caplog.at_level(logging.WARNING, logger="data.dataset"):
        ds = VideoDataset(root, split="train", clip_length=4, frame_interval=1)
    assert not caplog.records  # a fresh index: no fallback to markers
    assert len(ds) == 270 and len(ds.classes) == 7
    markers = [int((d / "n_frames").read_text()) for d in ds.video_dirs]
    assert ds.n_frames == markers and all(30 <= n <= 300 for n in markers)
    bench_index.build_layout(root, 300, 7)  # complete: reused, not rebuilt
    assert (root / ".layout_complete").read_text() == "300 7 0\n"


def test_measurement_reports_open_time_memory_and_both_workers(tmp_path):
    root = tmp_path / "layout"
    bench_index.build_layout(root, 600, 5)
    for mode in ("lists", "index"):
        r = bench_index.child(mode, root, workers=2, batch=32)
        assert r["mode"] == mode and r["videos"] == 540 and r["open_s"] > 0
        assert len(r["worker_rss_first_mib"]) == 2 and min(r["worker_rss_first_mib"]) > 10
        assert all(abs(g) < 1 for g in r["worker_growth"])
