"""Benchmark opening a large dataset: ``python -m tools.bench.index --videos 100000 650000``.

For each N it builds (once, reused afterwards) a synthetic frame-store layout under ``--dir``: N video folders
over ``--classes`` classes holding only an ``n_frames`` marker (no frames are needed to open a dataset), a label
CSV and ``classes.txt``, plus the dataset index. Then, each in a fresh process, it measures three ways to open it:

- ``lists``: the previous `VideoDataset` construction, reproduced here: a `Sample`, a `Path` and an int per video
  in Python lists, frame counts from the markers;
- ``markers``: today's `VideoDataset` with no index (numpy columns, markers read one by one);
- ``index``: today's `VideoDataset` with ``index.db`` (no per-video file access) and the binary label cache
  (`data.label_table`) that the converter and ``tools.index`` leave behind: no text is parsed;
- ``index-nocache``: the same with the label cache deleted before the measured open, i.e. the first open after
  the label file changed (the CSV is parsed and joined with the index, and the cache is written).

Figures: open time cold (every file of the layout evicted from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)``, and ``/proc/sys/vm/drop_caches`` when writable, i.e. as root outside a
container; without it the kernel keeps directory entries and inodes cached, which this reports) and warm; RSS the
dataset adds; and the RSS growth (and the growth of private memory, where copy-on-write copies show: a forked
worker's RSS already counts the parent's pages it shares) of each of 2 DataLoader workers over one pass of index sampling (every item
draws a clip's frame indices and touches the video's label, directory and sample, the per-video data a real
``__getitem__`` reads; no frames are decoded).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.index import index_path
from data.label_table import cache_path, warm_label_caches
from tools.synthetic import build_layout
from train.console import die, setup_logging

log = logging.getLogger(__name__)

MODES = ("lists", "markers", "index", "index-nocache")


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _private_kib() -> int:
    """Memory private to this process (USS: what copy-on-write copies show up in; RSS hides them)."""
    total = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def drop_cache(root: Path) -> str:
    """Evict the layout's files from the page cache; returns how (for the report)."""
    how = "posix_fadvise(DONTNEED) on every file"
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        how += " + drop_caches=3"
    except OSError:
        how += " (drop_caches not writable: dentries/inodes stay cached)"
    return how


class _ListsDataset:
    """The previous VideoDataset's per-video state: Python lists of Sample, Path and int."""

    def __init__(self, root: Path):
        from data.labels import read_classes, read_labels, safe_video_dir
        from data.store import read_n_frames

        csv_path = root / "labels" / "all.csv"
        self.samples = [s for s in read_labels(csv_path) if s.split == "train"]
        class_to_idx = {c: i for i, c in enumerate(read_classes(root / "classes.txt"))}
        self.labels = [class_to_idx[s.label] for s in self.samples]
        self.video_dirs = [safe_video_dir(root, s.label, s.video_id, str(csv_path)) for s in self.samples]
        self.n_frames = [read_n_frames(d) for d in self.video_dirs]


class _Sampling:
    """Map-style dataset over an opened one: index sampling only, returning (item, RSS in KiB, worker id)."""

    def __init__(self, ds, clip_length: int = 16, interval: int = 2):
        from data.sampling import RandomClipSampler

        self.ds, self.sampler = ds, RandomClipSampler(clip_length, interval)
        self._served = 0

    def __len__(self) -> int:
        return len(self.ds.samples)

    def __getitem__(self, i: int):
        rng = np.random.default_rng(i)
        frames = self.sampler(self.ds.n_frames[i], rng)
        touched = (self.ds.labels[i], self.ds.video_dirs[i], self.ds.samples[i].video_id)
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        self._served += 1
        # Reading /proc costs ~1 ms for a large process: sample it on every 256th item only (-1 otherwise).
        if self._served % 256 != 1:
            return int(frames[0]) + len(touched), -1, -1, -1 if info is None else info.id
        return int(frames[0]) + len(touched), _rss_kib(), _private_kib(), -1 if info is None else info.id


def child(mode: str, root: Path, workers: int, batch: int) -> dict:
    """Measure one mode in this (fresh) process."""
    import torch
    from torch.utils.data import DataLoader

    from data.dataset import VideoDataset

    torch.set_num_threads(1)
    logging.getLogger("data.dataset").setLevel(logging.ERROR)  # the markers mode warns about the missing index
    before = _rss_kib()
    start = time.perf_counter()
    if mode == "lists":
        ds = _ListsDataset(root)
    else:
        ds = VideoDataset(root, split="train", clip_length=16, frame_interval=2)
    seconds = time.perf_counter() - start
    added = _rss_kib() - before
    result = {"mode": mode, "open_s": seconds, "added_mib": added / 1024, "videos": len(ds.samples)}
    if workers == 0:
        return result
    loader = DataLoader(_Sampling(ds), batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    first_uss: dict[int, int] = {}
    last_uss: dict[int, int] = {}
    for _, rss, uss, worker in loader:
        w = int(worker[0])
        measured = rss >= 0
        if not bool(measured.any()):
            continue
        rss_kib, uss_kib = int(rss[measured][-1]), int(uss[measured][-1])
        first.setdefault(w, rss_kib)
        first_uss.setdefault(w, uss_kib)
        last[w], last_uss[w] = rss_kib, uss_kib
    growth = {w: (last[w] - first[w]) / first[w] for w in first}
    return {**result, "worker_private_growth_mib": [(last_uss[w] - first_uss[w]) / 1024 for w in sorted(first)],
            "worker_rss_first_mib": [first[w] / 1024 for w in sorted(first)],
            "worker_rss_last_mib": [last[w] / 1024 for w in sorted(last)],
            "worker_growth": [growth[w] for w in sorted(growth)]}


def run_child(mode: str, root: Path, cold: bool, workers: int, batch: int, timeout: float) -> dict:
    hidden = index_path(root).with_name("index.db.hidden")
    if hidden.exists() and not index_path(root).exists():
        hidden.rename(index_path(root))  # left hidden by an interrupted run
    label_cache = cache_path(root, root / "labels" / "all.csv")
    if mode == "index":
        warm_label_caches(root)  # what a conversion or `tools.index` leaves behind
    if mode == "index-nocache":
        label_cache.unlink(missing_ok=True)
    how = drop_cache(root) if cold else "warm (second open)"
    if not mode.startswith("index"):
        index_path(root).rename(hidden)  # the markers paths must not find an index
    try:
        if not cold:  # warm the page cache with one open first
            subprocess.run([sys.executable, "-m", "tools.bench.index", "--child", mode, str(root), "--workers", "0"],
                           check=True, capture_output=True, timeout=timeout)
            if mode == "index-nocache":
                label_cache.unlink(missing_ok=True)
        out = subprocess.run([sys.executable, "-m", "tools.bench.index", "--child", mode, str(root),
                              "--workers", str(workers), "--batch", str(batch)],
                             check=True, capture_output=True, text=True, timeout=timeout)
    finally:
        if hidden.exists():
            hidden.rename(index_path(root))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["cache"] = how
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench.index", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, nargs="+", default=[100_000, 650_000], help="dataset sizes")
    p.add_argument("--classes", type=int, default=700, help="classes of the synthetic layout")
    p.add_argument("--dir", type=Path, default=Path("bench_data/index"), help="where the layouts are built")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the sampling pass")
    p.add_argument("--batch", type=int, default=256, help="batch size of the sampling pass")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to each measuring process")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", nargs=2, metavar=("MODE", "ROOT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: builds the layouts, prints one line per measurement and a JSON summary."""
    args = parse_args(argv)
    if args.child:
        mode, root = args.child
        print(json.dumps(child(mode, Path(root), max(args.workers, 0), args.batch)))
        return 0
    setup_logging()
    if any(n < 1 for n in args.videos) or args.classes < 1 or args.workers < 1:
        die("--videos, --classes and --workers must be positive")
    results = []
    for n in args.videos:
        root = args.dir / f"n{n}"
        t0 = time.perf_counter()
        build_layout(root, n, args.classes)
        log.info("layout of %d videos ready in %.0f s: %s", n, time.perf_counter() - t0, root)
        for mode in args.modes:
            for cold in (True, False):
                try:
                    r = run_child(mode, root, cold, args.workers, args.batch, args.timeout)
                except subprocess.CalledProcessError as e:
                    die(f"{mode} on {root} failed: {(e.stderr or b'')[-500:]!r}", 1)
                except subprocess.TimeoutExpired:
                    die(f"{mode} on {root} took more than {args.timeout:.0f} s", 1)
                r.update(n=n, cold=cold)
                results.append(r)
                growth = max(r["worker_growth"])
                print(f"N={n:>7} {mode:<7} {'cold' if cold else 'warm'}: open {r['open_s']:7.2f} s, "
                      f"+{r['added_mib']:6.1f} MiB, worker RSS {r['worker_rss_first_mib'][0]:.0f} -> "
                      f"{r['worker_rss_last_mib'][0]:.0f} MiB (max growth {100 * growth:.1f}%), worker private memory "
                      f"+{max(r['worker_private_growth_mib']):.1f} MiB [{r['cache']}]",
                      flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
