"""Train on UCF-101: `python train_ucf101.py --dataset datasets/UCF-101 [--split 2] [...]`.

Defaults for UCF-101 (labels from `python -m tools.make_labels ucf101 ...`: labels/ucf101_split{1,2,3}.csv), then the
shared trainer (`train.cli`); every argument of `python -m train --help` works here too.
"""
import sys

from train.cli import run_dataset_script, split_option

DEFAULTS = {
    "dataset": "datasets/UCF-101", "network": "mict_resnet18", "clip_length": 16, "clip_size": 112,
    "train_frame_interval": [2], "val_frame_interval": 2, "batch_size": 16, "lr_base": 0.01,
    "lr_steps": [30, 45], "end_epoch": 50, "val_clips_per_video": 3,
}


def run(argv=None) -> int:
    return run_dataset_script(argv, DEFAULTS, split_option("ucf101"), lambda a: {"labels": f"ucf101_split{a.split}"})


if __name__ == "__main__":
    sys.exit(run())
