"""Train on the demo dataset made by `python -m tools.demo` (demo_data/store) with the demo's settings.

`python train_demo.py --end-epoch 20 --network r3d_18`: the demo's defaults, then the shared trainer (`train.cli`).
"""
import sys

from tools.demo import train_defaults
from train.cli import main

if __name__ == "__main__":
    sys.exit(main(defaults=train_defaults()))
