"""The loader benchmark: a smoke run on a handful of tiny videos (every loader row and the storage table appear),
and its timing workers forked after this process used OpenCV finish."""
from __future__ import annotations

import re

from tests.test_fork_safety import run_bounded
from tools.bench import loader as bench_loader


def test_bench_loader_small_run(tmp_path, capsys):
    out = tmp_path / "table.md"
    code = bench_loader.main(["--data", str(tmp_path / "bench"), "--videos", "4", "--frames", "32", "--size",
                              "32x48", "--clips", "16", "--batch-size", "4", "--workers", "0", "--repeats", "1",
                              "--convert-workers", "1", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert text.strip() == capsys.readouterr().out.strip()
    for row in ("(a) SQL, cached connection + mmap", "(a) SQL, cached + mmap, checksums not verified", "(a) SQL, reduce=2", "(b) JPEG file per frame",
                "(c) PyAV decode + seek", "(d) bound"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {row}"))
        rates = [float(x) for x in re.findall(r"\| (\d+(?:\.\d+)?)", line)]
        assert rates and all(r > 0 for r in rates), line
    assert "| SQLite frame store |" in text and "| JPEG folder |" in text
    assert "0 workers, cold" in text
    m = re.search(r"Per-frame checksum \(CRC-32, verified on every read\): (\d+\.\d+) us per frame against (\d+) us", text)
    assert m and 0 < float(m.group(1)) < float(m.group(2)), text[-500:]


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
