"""Train on HMDB-51: `python train_hmdb51.py --dataset datasets/HMDB-51 [--split 2] [...]`.

Labels from `python -m tools.make_labels hmdb51 ...` (labels/hmdb51_split{1,2,3}.csv); the defaults are the `hmdb51`
entry of `train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("hmdb51", argv)


if __name__ == "__main__":
    sys.exit(main())
