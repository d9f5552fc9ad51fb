"""Train on Diving-48: `python train_diving48.py --dataset datasets/Diving-48 [...]`.

Labels from `python -m tools.make_labels diving48 Diving48/ ROOT` (labels/diving48.csv), videos converted with
`python -m tools.convert --labels ROOT/labels/diving48.csv --source-root SRC ROOT`; the defaults are the `diving48`
entry of `train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("diving48", argv)


if __name__ == "__main__":
    sys.exit(main())
