"""Train on HMDB-51: `python train_hmdb51.py --dataset datasets/HMDB-51 [--split 2] [...]`.

Defaults for HMDB-51 (labels from `python -m tools.make_labels hmdb51 ...`: labels/hmdb51_split{1,2,3}.csv), then the
shared trainer (`train.cli`); every argument of `python -m train --help` works here too.
"""
import argparse
import sys

from train.cli import main

DEFAULTS = {
    "dataset": "datasets/HMDB-51", "network": "mict_resnet18", "clip_length": 16, "clip_size": 112,
    "train_frame_interval": [2], "val_frame_interval": 2, "batch_size": 16, "lr_base": 0.01,
    "lr_steps": [30, 45], "end_epoch": 50, "val_clips_per_video": 3,
}


def add_split(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1,
                        help="official train/test split (labels/hmdb51_split<N>.csv unless --labels is given)")


def run(argv=None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    add_split(pre)
    split = pre.parse_known_args(argv)[0].split
    return main(argv, defaults={**DEFAULTS, "labels": f"hmdb51_split{split}"}, extra_args=add_split)


if __name__ == "__main__":
    sys.exit(run())
