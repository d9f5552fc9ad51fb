"""Train on Kinetics: `python train_kinetics.py --variant 400 --dataset datasets/Kinetics-400 [...]`.

Labels from `python -m tools.make_labels kinetics ... --variant N` (labels/kinetics<N>.csv); the defaults are the
`kinetics` entry of `train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("kinetics", argv)


if __name__ == "__main__":
    sys.exit(main())
