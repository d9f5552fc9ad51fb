"""Training service: the loop (`trainer`), callbacks (speed, metrics, CSV, checkpoints, plots), checkpoints,
learning-rate schedule, mixed precision, distributed helpers, per-epoch loaders and the command line (`cli`).

`python -m train --dataset ROOT ...` trains on any converted dataset; see `train.cli` for the arguments.
"""
