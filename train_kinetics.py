"""Train on Kinetics: `python train_kinetics.py --variant 400 --dataset datasets/Kinetics-400 [...]`.

Defaults for Kinetics-200/400/600/700 (labels from `python -m tools.make_labels kinetics ... --variant N`:
labels/kinetics<N>.csv), then the shared trainer (`train.cli`); every argument of `python -m train --help` works.
"""
import argparse
import sys

from train.cli import run_dataset_script

VARIANTS = (200, 400, 600, 700)
DEFAULTS = {
    "network": "r2plus1d_18", "clip_length": 16, "clip_size": 112, "train_frame_interval": [4, 5, 6],
    "val_frame_interval": 5, "batch_size": 16, "lr_base": 0.01, "lr_steps": [20, 30, 40], "end_epoch": 45,
    "warmup_epochs": 2.0, "val_clips_per_video": 5,
}


def add_variant(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", type=int, choices=VARIANTS, default=400,
                        help="Kinetics variant: number of classes; picks labels/kinetics<N>.csv and the root")


def run(argv=None) -> int:
    return run_dataset_script(argv, DEFAULTS, add_variant, lambda a: {
        "dataset": f"datasets/Kinetics-{a.variant}", "labels": f"kinetics{a.variant}"})


if __name__ == "__main__":
    sys.exit(run())
