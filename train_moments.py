"""Train on Moments in Time: `python train_moments.py --dataset datasets/Moments-in-Time [...]`.

Labels from `python -m tools.make_labels moments Moments_in_Time_Raw/ ROOT` (labels/moments.csv), videos converted
with `python -m tools.convert --labels ROOT/labels/moments.csv --source-root SRC ROOT`; the defaults are the
`moments` entry of `train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("moments", argv)


if __name__ == "__main__":
    sys.exit(main())
