"""Build or refresh the dataset index of a frame store: ``python -m tools.index ROOT [--rebuild]``.

For roots made elsewhere (the legacy ``dataset2database``, a copy, hand edits): scans ``ROOT/jpg/<class>/<video>/``
and writes ``ROOT/index.db`` (`data.index`), re-reading only the databases whose size or mtime changed. The
converter keeps the index up to date by itself; `data.dataset.VideoDataset` warns when it finds it stale.
It also rebuilds the binary cache of every ``ROOT/labels/*.csv`` (`data.label_table`), so that the next dataset
open reads no text.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from data.index import index_path, refresh_index
from data.label_table import warm_label_caches
from train.console import die, setup_logging

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.index", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="dataset root (holds jpg/<class>/<video>/frames.db)")
    p.add_argument("--rebuild", action="store_true", help="re-read every database, not only changed ones")
    p.add_argument("--log-file", default=None, help="also append the log to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 on bad input (a message naming the file)."""
    args = parse_args(argv)
    setup_logging(log_file=args.log_file)
    if not (args.root / "jpg").is_dir():
        die(f"{args.root}: not a dataset root (no jpg/ folder)")
    try:
        stats = refresh_index(args.root, rebuild=args.rebuild, progress=True)
        warm_label_caches(args.root)
    except (ValueError, OSError) as e:  # FrameStoreError, LabelError (a label file warm_label_caches reads)
        die(str(e))
    print(f"{index_path(args.root)}: {stats.total} videos ({stats.kept} unchanged, {stats.read} read, "
          f"{stats.removed} removed, {stats.incomplete} incomplete folders skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
