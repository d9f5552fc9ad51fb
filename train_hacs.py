"""Train on HACS: `python train_hacs.py --dataset datasets/HACS [...]`.

Labels from `python -m tools.make_labels hacs HACS_clips_v1.1.1.csv ROOT` (labels/hacs.csv), videos converted with
`python -m tools.convert --labels ROOT/labels/hacs.csv --source-root SRC ROOT`; the defaults are the `hacs` entry of
`train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("hacs", argv)


if __name__ == "__main__":
    sys.exit(main())
