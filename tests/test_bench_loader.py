"""Smoke test of the loader benchmark on a handful of tiny videos: every loader row and the storage table appear."""
from __future__ import annotations

import re

from tools import bench_loader


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
