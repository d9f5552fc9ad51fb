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
- One module per dataset reads its official files (``tools/labels/<dataset>.py``); ``classes.txt`` follows the
  official index file where there is one (Moments, Diving-48, SSv2), so class i means what the dataset means.
- ``--check-root`` lists the videos the frame store lacks (exit status 1), ``--drop-missing`` leaves them out.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from data.labels import LabelError, Sample, classes_of
from tools.ingest.video_folder import hold_out_val
from tools.labels.common import underscore_labels
from tools.labels.diving48 import diving48_samples
from tools.labels.folder import folder_samples
from tools.labels.hacs import hacs_samples
from tools.labels.hmdb51 import hmdb51_samples
from tools.labels.kinetics import kinetics_samples, read_id_list
from tools.labels.moments import moments_samples
from tools.labels.output import check_and_filter, write_dataset
from tools.labels.sthv2 import sthv2_samples
from tools.labels.ucf101 import ucf101_samples, ucf_group
from train.console import die, setup_logging

log = logging.getLogger(__name__)

# The datasets whose annotations give samples and classes in one call.
ANNOTATION_READERS = {"hacs": hacs_samples, "moments": moments_samples, "diving48": diving48_samples,
                      "sthv2": sthv2_samples}


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
    elif args.format in ANNOTATION_READERS:
        samples, classes = ANNOTATION_READERS[args.format](args.annotations)
        if getattr(args, "label_names", "keep") == "underscore":
            samples, classes = underscore_labels(samples, classes)
        jobs.append((args.name or args.format, samples, classes))
    else:
        if not 0 <= args.val_fraction < 1:
            raise LabelError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
        samples = folder_samples(args.videos or args.root, args.val_fraction, args.seed)
        jobs.append((args.name, samples, classes_of(samples)))

    status = 0
    for name, samples, classes in jobs:
        kept, n_missing = check_and_filter(args.root, samples, args.check_root, args.drop_missing)
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
