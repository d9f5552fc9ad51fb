"""Train on Something-Something v2: `python train_sthv2.py --dataset datasets/Something-Something-v2 [...]`.

Labels from `python -m tools.make_labels sthv2 annotations/ ROOT` (labels/sthv2.csv), videos converted with `python
-m tools.convert --labels ROOT/labels/sthv2.csv --source-root SRC ROOT`; the defaults are the `sthv2` entry of
`train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("sthv2", argv)


if __name__ == "__main__":
    sys.exit(main())
