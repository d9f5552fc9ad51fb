"""Check every converted video of a dataset: ``python -m tools.verify DATASET_ROOT [--reconvert VIDEOS]``.

For each ``ROOT/jpg/<class>/<video>/`` folder: SQLite integrity, the rows, index continuity (every frame
``0..n-1`` exactly once), the per-frame checksums, JPEG markers (``--decode``: decode every frame too), and
agreement of the row count, ``meta``'s ``n_frames`` and the ``n_frames`` marker. Every video named by a label CSV
under ``ROOT/labels/`` must exist. Results go to ``ROOT/verify_report.csv`` (``path,problem``; one row per
problem, header only when all is well) and a summary line; the exit status is 0 when nothing is wrong, 1 when a
problem was found, 2 for bad input.

``--reconvert VIDEOS`` hands the broken videos back to the converter: each is converted again from
``VIDEOS/<class>/<source file>`` with the settings its database recorded (or those of the dataset's sound
videos), then checked again; label files are left alone. Videos it cannot re-convert stay in the report.
"""
from __future__ import annotations

import argparse
import collections
import csv
import logging
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data.atomic import atomic_write
from data.integrity import VideoCheck, check_video
from data.labels import LabelError, read_labels
from data.store import DB_NAME, N_FRAMES_NAME, TMP_NAME
from tools.ingest.jobs import DEFAULT_QUALITY, Job, convert_video
from tools.ingest.jpeg_encoders import DEFAULT_ENCODER, DEFAULT_QSCALE
from tools.ingest.video_folder import VIDEO_EXTENSIONS
from train.console import die, setup_logging

log = logging.getLogger(__name__)

REPORT_NAME = "verify_report.csv"


def video_dirs(root: Path) -> list[Path]:
    """Every ``jpg/<class>/<video>`` folder of a dataset root, sorted."""
    jpg = root / "jpg"
    return sorted(v for c in jpg.iterdir() if c.is_dir() for v in c.iterdir()
                  if v.is_dir() and ((v / DB_NAME).exists() or (v / N_FRAMES_NAME).exists()
                                     or (v / TMP_NAME).exists()))


def label_problems(root: Path) -> list[tuple[str, str]]:
    """(path, problem) for every label CSV that cannot be read and every video it names that is not stored."""
    problems = []
    for csv_path in sorted((root / "labels").glob("*.csv")) if (root / "labels").is_dir() else []:
        try:
            samples = read_labels(csv_path)
        except (LabelError, OSError, ValueError) as e:
            problems.append((str(csv_path), f"unreadable label file ({e})"))
            continue
        missing = [s for s in samples if not (root / "jpg" / s.label / s.video_id / DB_NAME).is_file()]
        for s in missing:
            problems.append((str(root / "jpg" / s.label / s.video_id),
                             f"named by {csv_path.name} but not in the frame store"))
    return problems


def write_report(path: Path, rows: list[tuple[str, str]]) -> Path:
    """`path,problem` rows, written atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "problem"])
        writer.writerows(rows)
    return path


def _settings(video_dir: Path) -> dict[str, str] | None:
    """The conversion settings a database recorded (None when it cannot be read)."""
    uri = "file:" + urllib.parse.quote(str((video_dir / DB_NAME).absolute())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return {k: meta[k] for k in ("short_side", "quality", "target_fps", "source", "label", "encoder", "qscale")
            if k in meta}


def _find_source(videos: Path, label: str, video_id: str, recorded: str | None) -> Path | None:
    if recorded and (videos / label / recorded).is_file():
        return videos / label / recorded
    for ext in sorted(VIDEO_EXTENSIONS):
        for candidate in (videos / label / f"{video_id}{ext}", videos / label / f"{video_id}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def reconvert(broken: list[Path], videos: Path, fallback: dict[str, str]) -> dict[Path, str]:
    """Convert `broken` video folders again from their sources; returns folder -> reason for those that failed."""
    failed: dict[Path, str] = {}
    for video_dir in tqdm(broken, desc="reconvert", unit="video"):
        settings = {**fallback, **(_settings(video_dir) or {})}
        label, video_id = video_dir.parent.name, video_dir.name
        source = _find_source(videos, label, video_id, settings.get("source"))
        if source is None:
            failed[video_dir] = f"no source video for it under {videos / label}"
            continue
        job = Job(str(source), label, video_id, str(video_dir),
                  short_side=int(settings["short_side"]) if settings.get("short_side") else None,
                  quality=int(settings.get("quality") or DEFAULT_QUALITY),
                  fps=float(settings["target_fps"]) if settings.get("target_fps") else None, overwrite=True,
                  encoder=settings.get("encoder") or DEFAULT_ENCODER,
                  qscale=int(settings.get("qscale") or DEFAULT_QSCALE))
        result = convert_video(job)
        if result.status != "converted":
            failed[video_dir] = f"re-conversion failed: {result.reason}"
    return failed


def _common_settings(checks: list[VideoCheck]) -> dict[str, str]:
    """The settings most sound videos were converted with (for broken ones whose meta is unreadable)."""
    seen: collections.Counter = collections.Counter()
    for c in checks:
        if c.ok:
            s = _settings(c.video_dir)
            if s:
                seen[tuple(sorted((k, v) for k, v in s.items() if k not in ("source", "label")))] += 1
            if sum(seen.values()) >= 50:
                break
    return dict(seen.most_common(1)[0][0]) if seen else {}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="dataset root written by tools.convert (jpg/, labels/)")
    p.add_argument("--decode", action="store_true", help="also decode every frame (slower)")
    p.add_argument("--report", type=Path, default=None, help=f"report file (default ROOT/{REPORT_NAME})")
    p.add_argument("--reconvert", type=Path, default=None, metavar="VIDEOS",
                   help="convert broken videos again from this source folder (<class>/<video file>)")
    p.add_argument("--log-file", default=None, help="also append the log to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 0 (sound), 1 (problems found); bad input exits 2."""
    args = parse_args(argv)
    setup_logging(log_file=args.log_file)
    root: Path = args.root
    if not root.is_dir():
        die(f"{root}: no such folder (expected a dataset root written by tools.convert)")
    if not (root / "jpg").is_dir():
        die(f"{root}: not a dataset root (no jpg/ folder)")
    if args.reconvert is not None and not args.reconvert.is_dir():
        die(f"--reconvert {args.reconvert}: no such folder")
    report_path = args.report or root / REPORT_NAME
    dirs = video_dirs(root)
    if not dirs:
        die(f"{root / 'jpg'}: no converted videos")
    start = time.perf_counter()
    checks: list[VideoCheck] = []
    with logging_redirect_tqdm(), tqdm(dirs, desc="verify", unit="video", dynamic_ncols=True) as bar:
        for video_dir in bar:
            checks.append(check_video(video_dir, decode=args.decode))
            bar.set_postfix(broken=sum(not c.ok for c in checks), refresh=False)
    broken = [c.video_dir for c in checks if not c.ok]
    if broken and args.reconvert is not None:
        failed = reconvert(broken, args.reconvert, _common_settings(checks))
        again = {d: check_video(d, decode=args.decode) for d in broken if d not in failed}
        fixed = [d for d, c in again.items() if c.ok]
        log.info("re-converted %d of %d broken video(s)", len(fixed), len(broken))
        checks = [again.get(c.video_dir, c) if c.video_dir not in failed else
                  VideoCheck(c.video_dir, (*c.problems, failed[c.video_dir]), c.frames, c.checksummed, c.notes)
                  for c in checks]
    rows = [(str(c.video_dir), p) for c in checks for p in c.problems] + label_problems(root)
    for path, problem in rows[:20]:
        log.error("%s: %s", path, problem)
    if len(rows) > 20:
        log.error("... %d more problem(s) in %s", len(rows) - 20, report_path)
    unverified = sum(not c.checksummed for c in checks)
    frames = sum(c.frames for c in checks)
    # The result first: a root that cannot take the report (read-only) still gets it.
    log.info("verified %d videos (%d frames) in %.1f s: %d sound, %d with problems%s", len(checks),
             frames, time.perf_counter() - start, sum(c.ok for c in checks), sum(not c.ok for c in checks),
             f"; {unverified} without checksums (frames checked for JPEG markers only)" if unverified else "")
    try:
        write_report(report_path, rows)
    except OSError as e:
        die(f"{report_path}: cannot write the report ({e.strerror or e}); write it elsewhere with --report PATH",
            code=1)
    log.info("report %s", report_path)
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())
