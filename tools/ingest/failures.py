"""The failure report of a conversion: ``path,reason`` rows, one per video (or label row) that failed.

A run writes ``<root>/convert_failures.csv``; a shard of a many-machine run writes its own report beside its
summary (`tools.ingest.shards`), which the merge reads back.
"""
from __future__ import annotations

import csv
from pathlib import Path

from data.atomic import atomic_write

__all__ = ["FAILURES_NAME", "HEADER", "write_failure_csv", "write_failures"]

FAILURES_NAME = "convert_failures.csv"
HEADER = ["path", "reason"]


def write_failure_csv(path: Path, failures: list[tuple[str, str]]) -> None:
    """Write `failures` to `path` atomically, sorted, under the ``path,reason`` header."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(sorted(failures))


def write_failures(root: Path, failures: list[tuple[str, str]]) -> Path | None:
    """Write `root/convert_failures.csv`; remove a stale one when nothing failed. Returns its path (None: none)."""
    path = root / FAILURES_NAME
    if not failures:
        path.unlink(missing_ok=True)
        return None
    write_failure_csv(path, failures)
    return path
