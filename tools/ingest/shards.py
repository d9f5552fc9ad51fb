"""Conversion on many machines: shard assignment, per-shard reports and the merge that finishes a dataset root.

- A video belongs to shard ``sha1("<class>/<file name>") mod N``: stable across machines, Python versions and file
  order, so every array task of a scheduler picks a disjoint part of the same folder without talking to the others.
- Shard count and index default from ``SLURM_ARRAY_TASK_COUNT``/``SLURM_ARRAY_TASK_ID`` (a SLURM array whose ids
  start at 0), else ``WORLD_SIZE``/``RANK`` (torchrun, most launchers), else one shard.
- Each shard writes ``<root>/shards/shard-IIIII-of-NNNNN.failures.csv`` and ``.summary.json`` when it ends; the
  shard that finds all N summaries on disk merges (``--merge`` does it by hand, e.g. after a shard was lost).
- The merge (and the end of a single-machine run: `finish_root`) builds everything from what is on disk, under
  the root's lock: the index (`data.index.refresh_index`), ``labels/all.csv`` and ``classes.txt`` from every
  complete video (so a subset conversion into an existing root adds to them), and ``convert_failures.csv``.
  Splits come from `tools.ingest.video_folder.assign_val_split`, a function of the set of videos only: N shards and one
  machine write byte-identical label files.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from data.atomic import atomic_write_text
from data.index import read_all, refresh_index, root_lock
from data.label_table import warm_label_caches
from data.labels import LabelError, Sample, read_classes, write_classes, write_labels
from tools.ingest.failures import HEADER, write_failure_csv, write_failures
from tools.ingest.video_folder import assign_val_split

log = logging.getLogger(__name__)

__all__ = ["ShardError", "resolve_shards", "shard_of", "shard_files", "write_shard_report", "missing_shards",
           "finish_root", "merge_shards"]

SHARDS_DIR = "shards"


class ShardError(ValueError):
    """Inconsistent shard settings (index out of range, a count that is not positive)."""


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ShardError(f"environment variable {name}={text!r} is not an integer") from None


def resolve_shards(num_shards: int | None, shard_index: int | None,
                   env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(N, I) from the arguments, else SLURM array variables, else RANK/WORLD_SIZE, else (1, 0)."""
    env = os.environ if env is None else env
    for count_var, index_var in (("SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID"), ("WORLD_SIZE", "RANK")):
        count, index = _env_int(env, count_var), _env_int(env, index_var)
        if count is not None and index is not None:
            if count_var.startswith("SLURM"):
                # A SLURM array may start at another id (--array=1-8): count from its minimum.
                index -= _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
            num_shards = count if num_shards is None else num_shards
            shard_index = index if shard_index is None else shard_index
            break
    num_shards = 1 if num_shards is None else int(num_shards)
    shard_index = 0 if shard_index is None else int(shard_index)
    if num_shards < 1:
        raise ShardError(f"--num-shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ShardError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    return num_shards, shard_index


def shard_of(relative_path: str, num_shards: int) -> int:
    """The shard of a video given its path relative to the video folder (``<class>/<file>``)."""
    digest = hashlib.sha1(relative_path.replace(os.sep, "/").encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def shard_files(root: str | os.PathLike, num_shards: int, shard_index: int) -> tuple[Path, Path]:
    """(failures CSV, summary JSON) of one shard."""
    stem = Path(root) / SHARDS_DIR / f"shard-{shard_index:05d}-of-{num_shards:05d}"
    return stem.with_name(stem.name + ".failures.csv"), stem.with_name(stem.name + ".summary.json")


def _read_failure_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != HEADER or any(len(r) != 2 for r in rows[1:]):
        raise ShardError(f"{path}: not a shard failure report (expected header path,reason and two fields a row)")
    return [(r[0], r[1]) for r in rows[1:]]


def write_shard_report(root: str | os.PathLike, num_shards: int, shard_index: int,
                       failures: list[tuple[str, str]], summary: dict) -> Path:
    """Write one shard's failure CSV, then its summary JSON (the summary says the shard finished)."""
    fail_path, summary_path = shard_files(root, num_shards, shard_index)
    fail_path.parent.mkdir(parents=True, exist_ok=True)
    write_failure_csv(fail_path, failures)
    atomic_write_text(summary_path, json.dumps({**summary, "num_shards": num_shards, "shard_index": shard_index,
                                                "failed": len(failures)}, indent=1, sort_keys=True) + "\n")
    return summary_path


def missing_shards(root: str | os.PathLike, num_shards: int) -> list[int]:
    """Shard indices of an N-shard run whose summary is not on disk yet."""
    return [i for i in range(num_shards) if not shard_files(root, num_shards, i)[1].is_file()]


def _write_labels_from_index(root: Path, val_fraction: float, seed: int) -> int:
    """``labels/all.csv`` and ``classes.txt`` from every indexed video; returns the video count."""
    entries = read_all(root)
    if not entries:
        return 0
    samples = assign_val_split([Sample(e.video_id, e.label, "train") for e in entries], val_fraction, seed)
    classes = sorted({s.label for s in samples})
    classes_file = root / "classes.txt"
    try:
        old = read_classes(classes_file) if classes_file.is_file() else None
    except LabelError:
        old = None
    if old is not None and old != classes:
        added = sorted(set(classes) - set(old))
        log.warning("%s: class list changes from %d to %d classes (%d added%s); class indices of checkpoints "
                    "trained on the old list no longer match: fine-tune a new head rather than resume",
                    classes_file, len(old), len(classes), len(added), f", e.g. {added[0]!r}" if added else "")
    write_labels(root / "labels" / "all.csv", samples)
    write_classes(classes_file, classes)
    n_val = sum(s.split == "val" for s in samples)
    log.info("wrote %s (%d train, %d val) and %s (%d classes)", root / "labels" / "all.csv",
             len(samples) - n_val, n_val, classes_file, len(classes))
    return len(samples)


def finish_root(root: str | os.PathLike, failures: list[tuple[str, str]], val_fraction: float,
                seed: int) -> Path | None:
    """End of a single-machine run: index, labels and classes from disk, and this run's failure report.

    Returns the failure report's path (None when nothing failed). Held under the root's lock, so two
    converters finishing at once write whole files, the last one including the other's videos.
    """
    root = Path(root)
    refresh_index(root)
    with root_lock(root):
        _write_labels_from_index(root, val_fraction, seed)
        report = write_failures(root, failures)
    warm_label_caches(root)
    return report


def merge_shards(root: str | os.PathLike, val_fraction: float, seed: int,
                 num_shards: int | None = None) -> tuple[Path | None, list[int]]:
    """Merge the shard reports on disk into the root's failure report, index, labels and classes.

    `num_shards` picks the run (default: the shard count of the newest summary). Returns the failure report
    (None when nothing failed) and the indices of shards with no summary (merged anyway, with a warning).
    """
    root = Path(root)
    shard_dir = root / SHARDS_DIR
    summaries = sorted(shard_dir.glob("shard-*-of-*.summary.json"), key=lambda p: p.stat().st_mtime_ns)
    if num_shards is None:
        if not summaries:
            raise ShardError(f"{shard_dir}: no shard summaries to merge")
        num_shards = int(json.loads(summaries[-1].read_text(encoding="utf-8"))["num_shards"])
    missing = missing_shards(root, num_shards)
    if missing:
        log.warning("%s: %d of %d shards have not finished (e.g. shard %d); merging what is on disk",
                    shard_dir, len(missing), num_shards, missing[0])
    failures: list[tuple[str, str]] = []
    for i in range(num_shards):
        path = shard_files(root, num_shards, i)[0]
        if path.is_file():
            failures.extend(_read_failure_csv(path))
    report = finish_root(root, failures, val_fraction, seed)
    log.info("merged %d shard(s) into %s", num_shards - len(missing), root)
    return report, missing
