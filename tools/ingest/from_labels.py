"""Conversion driven by a label file: ``python -m tools.convert --labels LABELS.csv --source-root SRC ROOT``.

Converts exactly the videos a label CSV (``label,video_id,time_start,time_end,split``, e.g. from
``tools.make_labels``) names into ``ROOT/jpg/<label>/<video_id>/frames.db``, wherever the official layout puts
their files under SRC (searched recursively: flat ``<id>.webm``, ``<class>/<file>.mp4``, ``training/<class>/...``).

- Finding a row's video: a file whose name (without extension) is the video id is the clip itself, converted
  whole (trimmed downloads: Diving-48, SSv2, MiT, the Kinetics crawler's clips). Otherwise, for a row with times
  and an id ``<source>_<start:06d>_<end:06d>[_n]``, the file ``<source>.*`` or ``v_<source>.*`` (the HACS
  downloader's name) is an untrimmed source and the segment is cut out of it (``tools.ingest.segments``: every
  source is decoded once, however many clips it gives). Where several files match, the one in a folder named
  after the label (spaces as ``_`` too) wins; otherwise the row is reported as ambiguous.
- The label file is checked before anything is converted: start >= end, only one of the two times, negative
  times, a video listed twice, a label missing from ``classes.txt`` (ROOT's, else the one beside the label
  file's ``labels/`` folder) stop the run with one line naming the file and line (exit 2), and nothing already
  converted is touched.
- Rows whose video is missing, ambiguous or undecodable, and segments starting after their video's end, go to
  ``ROOT/convert_failures.csv`` (``path,reason``) and the run goes on (exit 1). A segment running past the end
  is clipped to the end, with a warning.
- A label file from outside ``ROOT/labels/`` is copied there (and its ``classes.txt`` beside ROOT's), so that
  ``python -m train --dataset ROOT --labels NAME`` finds it; rows that failed stay in it (drop them with
  ``tools.make_labels ... --drop-missing``).
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from data.index import refresh_index
from data.label_table import warm_label_caches
from data.labels import (
    SEGMENT_ID,
    LabelError,
    Sample,
    read_classes,
    read_labels,
    safe_label,
    safe_video_dir,
    write_classes,
    write_labels,
)
from tools.ingest.failures import write_failures
from tools.ingest.jobs import Job, Result, convert_video, job_settings, run_jobs
from tools.ingest.segments import SourceJob, SourceResult, convert_source
from tools.ingest.video_folder import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

__all__ = ["labelled_rows", "check_rows", "index_sources", "locate", "plan", "run"]


def labelled_rows(path: Path) -> list[tuple[int, Sample]]:
    """The samples of a label CSV with their line numbers (``read_labels`` checks every field first)."""
    samples = read_labels(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader, None)
        lines = [reader.line_num for row in reader if row]
    if len(lines) != len(samples):  # a quoted field spanning lines; read_labels rejects line breaks in names
        lines = list(range(2, len(samples) + 2))
    return list(zip(lines, samples))


def _class_file(labels: Path, root: Path) -> Path | None:
    for candidate in (root / "classes.txt", labels.resolve().parent.parent / "classes.txt"):
        if candidate.is_file():
            return candidate
    return None


def check_rows(path: Path, rows: list[tuple[int, Sample]], classes: list[str] | None,
               class_file: Path | None) -> None:
    """Raise `LabelError` ``file:line: ...`` for the first row with bad times, a repeated video or unknown class."""
    seen: dict[tuple[str, str], int] = {}
    known = set(classes) if classes is not None else None
    for line, s in rows:
        where = f"{path}:{line}"
        if (s.time_start is None) != (s.time_end is None):
            raise LabelError(f"{where}: {s.label}/{s.video_id} has only one of time_start and time_end")
        if s.time_start is not None and not s.time_start < s.time_end:
            raise LabelError(f"{where}: {s.label}/{s.video_id}: need time_start < time_end, got "
                             f"{s.time_start:g} and {s.time_end:g}")
        if (s.label, s.video_id) in seen:
            raise LabelError(f"{where}: video {s.label}/{s.video_id} already listed at line "
                             f"{seen[(s.label, s.video_id)]}")
        seen[(s.label, s.video_id)] = line
        if known is not None and s.label not in known:
            raise LabelError(f"{where}: label {s.label!r} is not in {class_file}")
    if not rows:
        raise LabelError(f"{path}: no rows")


def index_sources(source_root: Path) -> dict[str, list[Path]]:
    """Every video file under `source_root` (recursively, hidden entries skipped) by file name without extension."""
    if not source_root.is_dir():
        raise LabelError(f"{source_root}: source folder not found")
    index: dict[str, list[Path]] = {}
    # Links are followed (sources are often linked in), but each real folder is read once: a link back up the
    # tree (loop -> ..) would otherwise list every video again at every depth, as several files of one name.
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(source_root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(folder) / name
            if not name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS:
                index.setdefault(p.stem, []).append(p)
    return index


def _candidates(sample: Sample) -> Iterator[tuple[str, bool]]:
    """(file stem, whole clip?) in the order a row's video is looked for."""
    yield sample.video_id, True
    match = SEGMENT_ID.match(sample.video_id)
    if match and sample.time_start is not None:
        yield match.group("source"), False
        yield "v_" + match.group("source"), False


def locate(sample: Sample, index: dict[str, list[Path]]) -> tuple[Path, bool] | str:
    """(path, whole clip?) of a row's video, or the reason it cannot be found."""
    folders = {sample.label, sample.label.replace(" ", "_"), safe_label(sample.label)}
    names = []
    for stem, whole in _candidates(sample):
        names.append(stem)
        paths = index.get(stem, [])
        preferred = [p for p in paths if p.parent.name in folders]
        if len(preferred) == 1 or (not preferred and len(paths) == 1):
            return (preferred or paths)[0], whole
        if paths:
            shown = ", ".join(str(p) for p in (preferred or paths)[:3])
            return f"ambiguous: several files named {stem}.* ({shown})"
    return f"no source video (looked for {' or '.join(n + '.*' for n in names)})"


def plan(rows: list[tuple[int, Sample]], labels: Path, index: dict[str, list[Path]], root: Path,
         settings: dict) -> tuple[list[Job | SourceJob], list[tuple[str, str]]]:
    """Jobs (whole clips as `Job`, segments grouped per source as `SourceJob`) and the rows that cannot be found."""
    whole: list[Job] = []
    segments: dict[Path, list[tuple[Job, tuple[float, float]]]] = {}
    failures: list[tuple[str, str]] = []
    for line, s in rows:
        found = locate(s, index)
        if isinstance(found, str):
            failures.append((f"{labels}:{line}", f"{s.label}/{s.video_id}: {found}"))
            continue
        path, is_whole = found
        out_dir = safe_video_dir(root, s.label, s.video_id, where=f"{labels}:{line}")
        job = Job(str(path), s.label, s.video_id, str(out_dir), **settings)
        if is_whole or s.time_start is None:
            whole.append(job)
        else:
            segments.setdefault(path, []).append((job, (s.time_start, s.time_end)))
    jobs: list[Job | SourceJob] = list(whole)
    for path, clips in segments.items():
        jobs.append(SourceJob(str(path), tuple(c for c, _ in clips), tuple(t for _, t in clips)))
    return jobs, failures


def convert_any(job: Job | SourceJob) -> Result | SourceResult:
    """A worker's task: a whole video or the clips of one source."""
    return convert_source(job) if isinstance(job, SourceJob) else convert_video(job)


def _results(res: Result | SourceResult) -> Iterator[tuple[Result, str]]:
    """Per-clip results with the time range they cover (for the failure report)."""
    if isinstance(res, SourceResult):
        times = dict(zip((id(c) for c in res.job.clips), res.job.times))
        for r in res.results:
            s, e = times.get(id(r.job), (None, None))
            yield r, "" if s is None else f" ({s:g}-{e:g} s)"
    elif isinstance(res.job, SourceJob):  # the worker died: every clip of the source failed
        for clip, (s, e) in zip(res.job.clips, res.job.times):
            yield Result(clip, "failed", reason=res.reason), f" ({s:g}-{e:g} s)"
    else:
        yield res, ""


def _publish_labels(labels: Path, rows: list[tuple[int, Sample]], root: Path, class_file: Path | None) -> None:
    """Copy a label file from outside ROOT/labels into it (with its class list), so the trainer finds it."""
    target, class_target = root / "labels" / labels.name, root / "classes.txt"
    if class_file is None or class_file.resolve() != class_target.resolve():
        write_classes(class_target, read_classes(class_file) if class_file else sorted({s.label for _, s in rows}))
        log.info("wrote %s", class_target)
    if not (target.exists() and target.resolve() == labels.resolve()):
        write_labels(target, [s for _, s in rows])
        log.info("wrote %s", target)


def run(args: argparse.Namespace, workers: int) -> int:
    """The label-driven conversion of `args` (tools.convert's options); returns the exit status."""
    labels, root, source_root = Path(args.labels), Path(args.root), Path(args.source_root)
    rows = labelled_rows(labels)
    class_file = _class_file(labels, root)
    classes = read_classes(class_file) if class_file else None
    check_rows(labels, rows, classes, class_file)
    index = index_sources(source_root)
    jobs, failures = plan(rows, labels, index, root, job_settings(args, workers))
    for where, reason in failures[:10]:
        log.warning("%s: %s", where, reason)
    if len(failures) > 10:
        log.warning("... and %d more rows without a usable source video", len(failures) - 10)
    root.mkdir(parents=True, exist_ok=True)
    n_clips = len(rows) - len(failures)
    log.info("converting %d clips from %d source videos under %s into %s with %d worker(s)", n_clips, len(jobs),
             source_root, root, workers)
    tqdm.monitor_interval = 0  # no monitor thread in a process that forks
    counts = {"converted": 0, "skipped": 0, "failed": 0}
    frames = nbytes = decoded = 0
    start = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(total=n_clips, unit="clip", desc="convert", dynamic_ncols=True) as bar:
        for res in run_jobs(jobs, workers, convert=convert_any):
            decoded += getattr(res, "decoded", 0)
            for r, span in _results(res):
                counts[r.status] += 1
                for w in r.warnings:
                    log.warning("%s: %s", r.job.source, w)
                if r.status == "failed":
                    reason = f"{r.job.label}/{r.job.video_id}{span}: {r.reason}"
                    log.warning("%s: %s", r.job.source, reason)
                    failures.append((r.job.source, reason))
                elif r.status == "converted":
                    frames += r.frames
                    nbytes += r.bytes
                bar.update()
            bar.set_postfix(frames=frames, failed=counts["failed"], refresh=False)
    seconds = time.perf_counter() - start
    report = write_failures(root, failures)
    _publish_labels(labels, rows, root, class_file)
    refresh_index(root)  # the trainer then opens the dataset without touching every clip's folder
    warm_label_caches(root)
    log.info("summary: %d clips converted, %d skipped (complete), %d failed; %d frames written in %.1f s "
             "(%.0f frames/s), %d source frames decoded; %d bytes (%.1f MB)", counts["converted"], counts["skipped"],
             len(failures), frames, seconds, frames / max(seconds, 1e-9), decoded, nbytes, nbytes / 1e6)
    if report:
        log.error("%d clip(s) failed; see %s (leave them out of the labels with `python -m tools.make_labels ... "
                  "--drop-missing`)", len(failures), report)
        return 1
    return 0
