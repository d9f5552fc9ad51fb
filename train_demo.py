"""Train on the demo dataset made by `python -m tools.demo` (demo_data/store) with the demo's settings.

`python train_demo.py --end-epoch 20 --network r3d_18` changes any of them; the defaults are the `demo` entry of
`train.presets.PRESETS`, and every argument of `python -m train --help` works here too.
"""
import sys
from collections.abc import Sequence

from train.presets import run_preset


def main(argv: Sequence[str] | None = None) -> int:
    return run_preset("demo", argv)


if __name__ == "__main__":
    sys.exit(main())
