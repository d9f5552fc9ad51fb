"""Train on UCF-101: `python train_ucf101.py --dataset datasets/UCF-101 [--split 2] [...]`.

Labels from `python -m tools.make_labels ucf101 ...` (labels/ucf101_split{1,2,3}.csv); the defaults are the `ucf101`
entry of `train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("ucf101", argv)


if __name__ == "__main__":
    sys.exit(main())
