"""Build the label CSVs and ``classes.txt`` of a dataset from its official annotation files.

    python -m tools.make_labels ucf101 ucfTrainTestlist/ DATASET_ROOT           # labels/ucf101_split{1,2,3}.csv
    python -m tools.make_labels hmdb51 testTrainMulti_7030_splits/ DATASET_ROOT # labels/hmdb51_split{1,2,3}.csv
    python -m tools.make_labels kinetics train.csv validate.csv DATASET_ROOT --variant 400  # labels/kinetics400.csv
    python -m tools.make_labels folder DATASET_ROOT --val-fraction 0.2         # labels/all.csv
    python -m tools.make_labels hacs HACS_clips_v1.1.1.csv DATASET_ROOT         # labels/hacs.csv
    python -m tools.make_labels moments Moments_in_Time_Raw/ DATASET_ROOT       # labels/moments.csv
    python -m tools.make_labels diving48 Diving48/ DATASET_ROOT                 # labels/diving48.csv
    python -m tools.make_labels sthv2 labels/ DATASET_ROOT                      # labels/sthv2.csv

Conventions
- ``classes.txt`` is the sorted class list; class index = line position (0-based). It is *not* the 1-based
  order of UCF-101's ``classInd.txt``.
- UCF-101 / HMDB-51: the official training list is ``train``; the official test list is ``val`` by default (what
  the published numbers, and the trainer's best-checkpoint choice, use); ``--test-as test`` keeps it apart and
  ``--val-fraction F`` then holds out part of the training list as ``val`` (UCF-101: whole groups ``_gNN_``, so
  clips cut from one long video never straddle train and val).
- Kinetics: video id ``<youtube_id>_<time_start:06d>_<time_end:06d>``; labels are kept verbatim as folder names
  by default (spaces, parentheses and apostrophes are valid on every common filesystem; only ``/``, ``..`` and
  the like are rejected). ``--label-names underscore`` maps each run of characters other than letters, digits,
  ``-`` and ``_`` to one ``_`` (``passing American football (in game)`` -> ``passing_American_football_in_game``)
  for stores made that way. Rows without a label (an unlabelled test csv) are skipped with a warning.
- HACS, Moments in Time, Diving-48, Something-Something v2: see ``tools.label_builders``; their ``classes.txt``
  follows the official index file (Moments, Diving-48, SSv2), so class i means what the dataset means.
- ``--check-root`` lists the videos the frame store lacks (exit status 1), ``--drop-missing`` leaves them out.
"""
from __future__ import annotations

import argparse
import csv
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from data.labels import (
    SPLITS,
    LabelError,
    Sample,
    check_name,
    classes_of,
    read_classes,
    safe_video_dir,
    write_classes,
    write_labels,
)
from tools import label_builders
from tools.label_builders import find_file, safe_label
from tools.video_folder import folder_samples, hold_out_val
from train.console import die, setup_logging

log = logging.getLogger(__name__)

KINETICS_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                   "validation": "val", "test": "test", "testing": "test"}


# ----------------------------------------------------------------------------------------------------------------
# Reading helpers


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of a text file; official lists use CRLF and a BOM."""
    if not path.is_file():
        raise LabelError(f"{path}: file not found")
    with open(path, encoding="utf-8-sig", errors="strict") as f:
        try:
            for number, line in enumerate(f, 1):
                text = line.strip()
                if text:
                    yield number, text
        except UnicodeDecodeError as e:
            raise LabelError(f"{path}: not a UTF-8 text file ({e.reason})") from None


# ----------------------------------------------------------------------------------------------------------------
# UCF-101


def read_ucf_class_index(path: Path) -> dict[str, int]:
    """``classInd.txt`` ("1 ApplyEyeMakeup" per line) -> {class: 1-based index}; indices must be 1..N."""
    classes: dict[str, int] = {}
    for number, text in _lines(path):
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise LabelError(f"{path}:{number}: expected '<index> <class>', got {text!r}")
        index, name = int(parts[0]), parts[1]
        check_name(name, "class", f"{path}:{number}")
        if name in classes:
            raise LabelError(f"{path}:{number}: class {name!r} listed twice")
        classes[name] = index
    if not classes:
        raise LabelError(f"{path}: no classes")
    if sorted(classes.values()) != list(range(1, len(classes) + 1)):
        raise LabelError(f"{path}: class indices are not 1..{len(classes)}")
    return classes


def _ucf_entry(path: Path, number: int, text: str, class_index: dict[str, int], with_label: bool) -> Sample | str:
    parts = text.split()
    if len(parts) not in ((1, 2) if with_label else (1,)):
        expected = "'<class>/<video>.avi [<index>]'" if with_label else "'<class>/<video>.avi'"
        raise LabelError(f"{path}:{number}: expected {expected}, got {text!r}")
    where = f"{path}:{number}"
    pieces = parts[0].replace("\\", "/").split("/")
    if len(pieces) != 2:
        raise LabelError(f"{where}: expected '<class>/<video file>', got {parts[0]!r}")
    label, filename = pieces
    check_name(label, "label", where)
    check_name(filename, "video file", where)
    video_id = Path(filename).stem
    check_name(video_id, "video id", where)
    if label not in class_index:
        raise LabelError(f"{where}: unknown class {label!r} (not in classInd.txt)")
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise LabelError(f"{where}: class index {parts[1]!r} is not a number")
        if int(parts[1]) != class_index[label]:
            raise LabelError(f"{where}: class index {parts[1]} does not match {label!r} "
                             f"(classInd.txt says {class_index[label]})")
    return Sample(video_id=video_id, label=label, split="train")


def ucf101_samples(splits_dir: str | Path, split: int, test_as: str = "val") -> tuple[list[Sample], list[str]]:
    """Samples of official split `split` (1-3): ``trainlist0N.txt`` -> train, ``testlist0N.txt`` -> `test_as`."""
    splits_dir = Path(splits_dir)
    class_file = find_file(splits_dir, "classInd.txt")
    class_index = read_ucf_class_index(class_file)
    samples: list[Sample] = []
    seen: dict[tuple[str, str], str] = {}
    for kind, split_name in (("train", "train"), ("test", test_as)):
        path = find_file(splits_dir, f"{kind}list{split:02d}.txt")
        for number, text in _lines(path):
            s = _ucf_entry(path, number, text, class_index, with_label=(kind == "train"))
            key = (s.label, s.video_id)
            if key in seen:
                raise LabelError(f"{path}:{number}: video {s.label}/{s.video_id} already listed at {seen[key]}")
            seen[key] = f"{path.name}:{number}"
            samples.append(Sample(s.video_id, s.label, split_name))
    return samples, sorted(class_index)


def ucf_group(sample: Sample) -> str:
    """UCF-101 group (``v_Class_g08_c01`` -> ``g08``): clips of one group come from one long video."""
    match = re.search(r"_(g\d+)_c\d+$", sample.video_id)
    return match.group(1) if match else sample.video_id


# ----------------------------------------------------------------------------------------------------------------
# HMDB-51

_HMDB_FILE = re.compile(r"^(?P<label>.+)_test_split(?P<split>\d+)\.txt$")
_HMDB_CODES = {"1": "train", "2": "test", "0": None}


def hmdb51_samples(splits_dir: str | Path, split: int, test_as: str = "val") -> tuple[list[Sample], list[str]]:
    """Samples of official split `split` from the per-class ``<class>_test_split<N>.txt`` files
    (lines ``<video>.avi <0|1|2>``: 1 train, 2 test -> `test_as`, 0 unused)."""
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        raise LabelError(f"{splits_dir}: annotation folder not found")
    files = {m.group("label"): {} for p in splits_dir.iterdir() if (m := _HMDB_FILE.match(p.name))}
    if not files:
        nested = sorted({p.parent for p in splits_dir.glob("*/*_test_split*.txt")})
        if nested:
            return hmdb51_samples(nested[0], split, test_as)
        raise LabelError(f"{splits_dir}: no '<class>_test_split<N>.txt' files")
    samples: list[Sample] = []
    seen: dict[tuple[str, str], str] = {}
    for label in sorted(files):
        path = splits_dir / f"{label}_test_split{split}.txt"
        check_name(label, "label", str(path))
        for number, text in _lines(path):
            where = f"{path}:{number}"
            parts = text.split()
            if len(parts) != 2 or parts[1] not in _HMDB_CODES:
                raise LabelError(f"{where}: expected '<video>.avi <0|1|2>', got {text!r}")
            check_name(parts[0], "video file", where)
            split_name = _HMDB_CODES[parts[1]]
            if split_name is None:
                continue
            video_id = check_name(Path(parts[0]).stem, "video id", where)
            key = (label, video_id)
            if key in seen:
                raise LabelError(f"{where}: video {label}/{video_id} already listed at {seen[key]}")
            seen[key] = f"{path.name}:{number}"
            samples.append(Sample(video_id, label, "train" if split_name == "train" else test_as))
    return samples, sorted(files)


# ----------------------------------------------------------------------------------------------------------------
# Kinetics


def kinetics_video_id(youtube_id: str, time_start: float, time_end: float) -> str:
    """``<youtube_id>_<start:06d>_<end:06d>``, the name every Kinetics download script gives a clip."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}"


def kinetics_samples(csv_paths: Sequence[str | Path], label_names: str = "keep",
                     ids: set[str] | None = None) -> tuple[list[Sample], list[str]]:
    """Samples of the official Kinetics csv files (``label,youtube_id,time_start,time_end,split[,is_cc]``; the
    test csv may lack ``label``). Unlabelled rows are skipped with a warning; `ids` keeps only those youtube ids
    (e.g. the Mini-Kinetics-200 lists); a repeated clip keeps its first row."""
    if label_names not in ("keep", "underscore"):
        raise ValueError(f"label_names must be 'keep' or 'underscore', got {label_names!r}")
    samples: list[Sample] = []
    seen: dict[str, tuple[str, str]] = {}
    unlabelled = repeated = 0
    renamed: dict[str, str] = {}
    for csv_path in csv_paths:
        path = Path(csv_path)
        if not path.is_file():
            raise LabelError(f"{path}: file not found")
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in ("youtube_id", "time_start", "time_end", "split") if c not in header]
            if missing:
                raise LabelError(f"{path}:1: header lacks {missing}; expected "
                                 "label,youtube_id,time_start,time_end,split[,is_cc]")
            reader.fieldnames = header
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if None in row or any(row.get(c) is None for c in header):
                    raise LabelError(f"{where}: expected {len(header)} fields")
                youtube_id = row["youtube_id"].strip()
                check_name(youtube_id, "youtube id", where)
                try:
                    start, end = float(row["time_start"]), float(row["time_end"])
                except ValueError:
                    raise LabelError(f"{where}: time_start/time_end {row['time_start']!r}, {row['time_end']!r} "
                                     "are not numbers") from None
                if not 0 <= start < end:
                    raise LabelError(f"{where}: need 0 <= time_start < time_end, got {start}, {end}")
                split = KINETICS_SPLITS.get(row["split"].strip().lower())
                if split is None:
                    raise LabelError(f"{where}: unknown split {row['split']!r}")
                if ids is not None and youtube_id not in ids:
                    continue
                raw = (row.get("label") or "").strip()
                if not raw:
                    unlabelled += 1
                    continue
                label = raw if label_names == "keep" else safe_label(raw)
                check_name(label, "label", where)
                if renamed.setdefault(label, raw) != raw:
                    raise LabelError(f"{where}: labels {raw!r} and {renamed[label]!r} both become {label!r}")
                video_id = kinetics_video_id(youtube_id, start, end)
                if video_id in seen:
                    repeated += 1
                    if seen[video_id][0] != label:
                        log.warning("%s: clip %s is labelled %r here and %r at %s; keeping the first",
                                    where, video_id, label, *seen[video_id])
                    continue
                seen[video_id] = (label, where)
                samples.append(Sample(video_id, label, split, start, end))
    if unlabelled:
        log.warning("skipped %d rows without a label (no class folder to put them in)", unlabelled)
    if repeated:
        log.warning("skipped %d repeated clips", repeated)
    if not samples:
        raise LabelError(f"{', '.join(map(str, csv_paths))}: no labelled clips")
    return samples, classes_of(samples)


def read_id_list(path: str | Path) -> set[str]:
    """One youtube id per line (the first whitespace-separated field; a csv row's first column also works)."""
    return {text.split()[0].split(",")[0] for _, text in _lines(Path(path))}


# ----------------------------------------------------------------------------------------------------------------
# Output


def video_present(root: Path, sample: Sample) -> bool:
    """Whether the frame store holds the video (a ``frames.db`` in its folder)."""
    return (safe_video_dir(root, sample.label, sample.video_id) / "frames.db").is_file()


def missing_videos(root: str | Path, samples: Iterable[Sample]) -> list[Sample]:
    """The samples whose ``<root>/jpg/<label>/<video_id>/frames.db`` does not exist."""
    root = Path(root)
    if not (root / "jpg").is_dir():
        raise LabelError(f"{root}: no frame store (expected {root / 'jpg'}; run tools.convert first)")
    return [s for s in samples if not video_present(root, s)]


def write_dataset(root: str | Path, name: str, samples: list[Sample], classes: list[str]) -> Path:
    """Write ``<root>/labels/<name>.csv`` and ``<root>/classes.txt`` (warning when an existing list differs)."""
    root = Path(root)
    for s in samples:
        safe_video_dir(root, s.label, s.video_id, where=f"{name}.csv video {s.label}/{s.video_id}")
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise LabelError(f"labels {unknown[:5]} are not in the class list")
    class_file = root / "classes.txt"
    if class_file.is_file():
        try:
            old = read_classes(class_file)
        except LabelError:
            old = None
        if old is not None and old != classes:
            log.warning("%s: replacing a different class list (%d classes, now %d)", class_file, len(old),
                        len(classes))
    write_classes(class_file, classes)
    csv_path = root / "labels" / f"{name}.csv"
    write_labels(csv_path, samples)
    counts = Counter(s.split for s in samples)
    log.info("%s: %d videos (%s), %d classes", csv_path, len(samples),
             ", ".join(f"{counts[k]} {k}" for k in SPLITS if counts[k]), len(classes))
    return csv_path


def _check_and_filter(root: Path, samples: list[Sample], check: bool, drop: bool) -> tuple[list[Sample], int]:
    if not (check or drop):
        return samples, 0
    missing = missing_videos(root, samples)
    if missing:
        shown = ", ".join(f"{s.label}/{s.video_id}" for s in missing[:10])
        log.warning("%d of %d videos are not in %s/jpg: %s%s", len(missing), len(samples), root, shown,
                    " ..." if len(missing) > 10 else "")
    if drop:
        gone = {(s.label, s.video_id) for s in missing}
        return [s for s in samples if (s.label, s.video_id) not in gone], 0
    return samples, len(missing)


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _split_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--splits", type=int, nargs="+", choices=(1, 2, 3), default=[1, 2, 3],
                        help="official splits to write")
    parser.add_argument("--test-as", choices=("val", "test"), default="val",
                        help="split name given to the official test list")
    parser.add_argument("--val-fraction", type=float, default=0.0,
                        help="also hold out this fraction of each class's training list as val")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.make_labels", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--check-root", action="store_true",
                        help="report videos the frame store lacks (exit status 1 if any)")
    common.add_argument("--drop-missing", action="store_true", help="leave out videos the frame store lacks")
    common.add_argument("--seed", type=int, default=0, help="seed of the held-out val choice")
    sub = parser.add_subparsers(dest="format", required=True)

    p = sub.add_parser("ucf101", parents=[common], help="UCF-101 classInd.txt, trainlist0N.txt, testlist0N.txt")
    p.add_argument("annotations", type=Path, help="folder with classInd.txt (ucfTrainTestlist/)")
    p.add_argument("root", type=Path, metavar="DATASET_ROOT")
    _split_args(p)

    p = sub.add_parser("hmdb51", parents=[common], help="HMDB-51 <class>_test_split<N>.txt files")
    p.add_argument("annotations", type=Path, help="folder with the split files (testTrainMulti_7030_splits/)")
    p.add_argument("root", type=Path, metavar="DATASET_ROOT")
    _split_args(p)

    p = sub.add_parser("kinetics", parents=[common], help="Kinetics-200/400/600/700 csv files")
    p.add_argument("csv", type=Path, nargs="+", help="official csv files (train, validate, test)")
    p.add_argument("root", type=Path, metavar="DATASET_ROOT")
    p.add_argument("--variant", type=int, choices=(200, 400, 600, 700), help="check the class count")
    p.add_argument("--name", help="label file name (default kinetics<variant> or kinetics)")
    p.add_argument("--label-names", choices=("keep", "underscore"), default="keep",
                   help="class folder names: the label verbatim, or non-alphanumerics as '_'")
    p.add_argument("--ids", type=Path, nargs="+", help="keep only these youtube ids (e.g. Mini-Kinetics-200 lists)")

    p = sub.add_parser("folder", parents=[common], help="a folder dataset: scan <root>/jpg/<class>/<video_id>")
    p.add_argument("root", type=Path, metavar="DATASET_ROOT")
    p.add_argument("--videos", type=Path, help="scan this <class>/<video file> folder instead of the store")
    p.add_argument("--val-fraction", type=float, default=0.2, help="stratified held-out fraction")
    p.add_argument("--name", default="all", help="label file name")

    p = sub.add_parser("hacs", parents=[common], help="HACS clips csv (positive clips; ids <youtube_id>_%%06d_%%06d)")
    p.add_argument("annotations", type=Path, help="HACS_clips_v1.1.1.csv")
    p.add_argument("root", type=Path, metavar="DATASET_ROOT")
    p.add_argument("--label-names", choices=("keep", "underscore"), default="keep",
                   help="class folder names: the class verbatim, or non-alphanumerics as '_'")
    for name, what in (("moments", "Moments in Time: trainingSet.csv, validationSet.csv, moments_categories.txt"),
                       ("diving48", "Diving-48: Diving48_V2_{train,test}.json, Diving48_vocab.json"),
                       ("sthv2", "Something-Something v2: something-something-v2-{labels,train,validation}.json")):
        p = sub.add_parser(name, parents=[common], help=what)
        p.add_argument("annotations", type=Path, help="folder with the official annotation files")
        p.add_argument("root", type=Path, metavar="DATASET_ROOT")
    for p in (sub.choices[n] for n in ("hacs", "moments", "diving48", "sthv2")):
        p.add_argument("--name", help="label file name (default: the dataset's name)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build and write the label files of `args`; returns the exit status (1 if --check-root found gaps)."""
    jobs: list[tuple[str, list[Sample], list[str]]] = []
    if args.format in ("ucf101", "hmdb51"):
        if not 0 <= args.val_fraction < 1:
            raise LabelError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
        for split in sorted(set(args.splits)):
            if args.format == "ucf101":
                samples, classes = ucf101_samples(args.annotations, split, args.test_as)
                samples = hold_out_val(samples, args.val_fraction, args.seed, ucf_group)
            else:
                samples, classes = hmdb51_samples(args.annotations, split, args.test_as)
                samples = hold_out_val(samples, args.val_fraction, args.seed)
            jobs.append((f"{args.format}_split{split}", samples, classes))
        if args.test_as == "test" and args.val_fraction == 0:
            log.warning("no val split: training will have nothing to validate on (use --val-fraction)")
    elif args.format == "kinetics":
        ids = set().union(*(read_id_list(p) for p in args.ids)) if args.ids else None
        samples, classes = kinetics_samples(args.csv, args.label_names, ids)
        if args.variant and len(classes) != args.variant:
            raise LabelError(f"{', '.join(map(str, args.csv))}: {len(classes)} classes, "
                             f"expected {args.variant} for Kinetics-{args.variant}")
        name = args.name or (f"kinetics{args.variant}" if args.variant else "kinetics")
        jobs.append((name, samples, classes))
    elif args.format in ("hacs", "moments", "diving48", "sthv2"):
        samples, classes = getattr(label_builders, f"{args.format}_samples")(args.annotations)
        if getattr(args, "label_names", "keep") == "underscore":
            samples, classes = label_builders.underscore_labels(samples, classes)
        jobs.append((args.name or args.format, samples, classes))
    else:
        if not 0 <= args.val_fraction < 1:
            raise LabelError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
        samples = folder_samples(args.videos or args.root, args.val_fraction, args.seed)
        jobs.append((args.name, samples, classes_of(samples)))

    status = 0
    for name, samples, classes in jobs:
        kept, n_missing = _check_and_filter(args.root, samples, args.check_root, args.drop_missing)
        if not kept:
            raise LabelError(f"{args.root}: none of the {len(samples)} videos of {name} is in the frame store")
        write_dataset(args.root, name, kept, classes)
        if n_missing:
            status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; missing videos exit 1, bad input exits 2)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        status = run(args)
    except (LabelError, OSError) as e:
        die(str(e))
    if status:
        die("some videos are missing from the frame store (see above; --drop-missing leaves them out)", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
