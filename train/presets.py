"""Training presets of the per-dataset scripts: one table entry per dataset, one function that runs an entry.

A preset is a set of `python -m train` argument defaults plus, optionally, one extra option of its own (``--split N``
for datasets with official splits, ``--variant N`` for Kinetics) whose value picks further defaults such as the
label file or the dataset root. Arguments given on the command line override every default. Each
``train_<dataset>.py`` only names its preset::

    sys.exit(run_preset("ucf101"))

Adding a dataset is adding an entry to `PRESETS` (and, if wanted, a three-line script).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEMO_LR_BASE", "DEMO_MODEL_ARGS", "DatasetPreset", "PRESETS", "PresetOption", "demo_network_defaults",
           "run_preset", "split_option", "variant_option"]


@dataclass(frozen=True)
class PresetOption:
    """The one extra integer option of a preset and the defaults its value picks."""

    flag: str  # e.g. "--split"
    choices: tuple[int, ...]
    default: int
    help: str
    picks: Callable[[int], dict[str, Any]]

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add the option to `parser` (the trainer's parser, and the pre-parser that reads it first)."""
        parser.add_argument(self.flag, type=int, choices=self.choices, default=self.default, help=self.help)


@dataclass(frozen=True)
class DatasetPreset:
    """Trainer defaults for one dataset, and its extra option if it has one."""

    name: str
    summary: str
    defaults: Mapping[str, Any]
    option: PresetOption | None = None
    #: defaults that follow the ``--network`` the user picks (model arguments, learning rate, model folder)
    per_network: Callable[[str], dict[str, Any]] | None = None


def split_option(dataset: str, splits: Sequence[int] = (1, 2, 3)) -> PresetOption:
    """``--split N`` of a dataset whose labels are ``labels/<dataset>_split<N>.csv``."""
    return PresetOption("--split", tuple(splits), splits[0],
                        f"official train/test split (labels/{dataset}_split<N>.csv unless --labels is given)",
                        lambda n: {"labels": f"{dataset}_split{n}"})


def variant_option(variants: Sequence[int] = (200, 400, 600, 700), default: int = 400) -> PresetOption:
    """Kinetics' ``--variant N``: the number of classes, picking ``labels/kinetics<N>.csv`` and the root."""
    return PresetOption("--variant", tuple(variants), default,
                        "Kinetics variant: number of classes; picks labels/kinetics<N>.csv and the root",
                        lambda n: {"dataset": f"datasets/Kinetics-{n}", "labels": f"kinetics{n}"})


# Model arguments the demo needs per network. MiCT v2 (temporal stride 4) accepts 8-frame clips. Its 3D stem pads
# time only at the end, so with the reference 7-frame kernel 6 of the 8 stem outputs see zero padding, whose edges
# drown the motion signal. Measured with the demo config: the 7-frame stem stayed at chance for ~7 epochs (92.5%
# test in the end); the 3-frame stem (the paper's 3x7x7 ablation) left chance at epoch 4, passed 90% val at epoch
# 6 and reached 97.5% test video@1. MTNet-XS at half width (5.4M parameters) costs about what MiCT-ResNet-18
# does per training step on CPU.
DEMO_MODEL_ARGS: Mapping[str, tuple[tuple[str, Any], ...]] = {
    "mict_resnet18": (("version", "v2"), ("first_kernel_depth", 3)),
    "mict_resnet34": (("version", "v2"), ("first_kernel_depth", 3)),
    "mtnet_xs": (("width_mult", 0.5),),
}

# The demo's learning rate where the preset's (AdamW 1e-3) does not suit a network at full width. Adam's step is
# about lr per weight whatever the gradient, while BatchNorm makes a layer's output invariant to its weights' scale,
# so the step that counts is relative to Kaiming-initialised weights of std sqrt(2 / fan_in): it grows as
# sqrt(fan_in), 3x more for a 3x3x3 convolution than for a 3x3 one. R3D-18 stays at chance at 1e-3 (docs/BENCHMARKS.md).
DEMO_LR_BASE: Mapping[str, float] = {"r3d_18": 1e-4}
_DEMO_LR = 1e-3

_UCF_HMDB = {
    "network": "mict_resnet18", "clip_length": 16, "clip_size": 112, "train_frame_interval": [2],
    "val_frame_interval": 2, "batch_size": 16, "lr_base": 0.01, "lr_steps": [30, 45], "end_epoch": 50,
    "val_clips_per_video": 3,
}

_SRTG = {"network": "srtg_r3d_34", "clip_length": 16, "lr_base": 0.1}

PRESETS: dict[str, DatasetPreset] = {p.name: p for p in (
    DatasetPreset("ucf101", "UCF-101 (labels from `python -m tools.make_labels ucf101 ...`)",
                  {"dataset": "datasets/UCF-101", **_UCF_HMDB}, split_option("ucf101")),
    DatasetPreset("hmdb51", "HMDB-51 (labels from `python -m tools.make_labels hmdb51 ...`)",
                  {"dataset": "datasets/HMDB-51", **_UCF_HMDB}, split_option("hmdb51")),
    DatasetPreset("kinetics", "Kinetics-200/400/600/700 (labels from `python -m tools.make_labels kinetics ...`)",
                  {"network": "r2plus1d_18", "clip_length": 16, "clip_size": 112, "train_frame_interval": [4, 5, 6],
                   "val_frame_interval": 5, "batch_size": 16, "lr_base": 0.01, "lr_steps": [20, 30, 40],
                   "end_epoch": 45, "warmup_epochs": 2.0, "val_clips_per_video": 5},
                  variant_option()),
    # SRTG's defaults (its README and scripts): 16-frame clips, lr 0.1, multigrid cycles on HACS and MiT.
    DatasetPreset("hacs", "HACS clips (labels from `python -m tools.make_labels hacs ...`)",
                  {"dataset": "datasets/HACS", "labels": "hacs", **_SRTG, "clip_size": 284,
                   "train_frame_interval": [1, 2], "val_frame_interval": 2, "batch_size": 48,
                   "lr_steps": [40, 60, 75, 90], "end_epoch": 120, "long_cycles": True, "short_cycles": True}),
    DatasetPreset("moments", "Moments in Time (labels from `python -m tools.make_labels moments ...`)",
                  {"dataset": "datasets/Moments-in-Time", "labels": "moments", **_SRTG, "clip_size": 284,
                   "train_frame_interval": [3, 4], "val_frame_interval": 3, "batch_size": 48,
                   "lr_steps": [25, 50, 70], "end_epoch": 110, "long_cycles": True, "short_cycles": True}),
    DatasetPreset("diving48", "Diving-48 V2 (labels from `python -m tools.make_labels diving48 ...`)",
                  {"dataset": "datasets/Diving-48", "labels": "diving48", **_SRTG, "clip_size": 256,
                   "train_frame_interval": [2], "val_frame_interval": 2, "batch_size": 32,
                   "lr_steps": [15, 30, 40], "end_epoch": 100}),
    # Not an SRTG dataset: Diving-48's schedule; no flips, since "left" and "right" are what some labels mean.
    DatasetPreset("sthv2", "Something-Something v2 (labels from `python -m tools.make_labels sthv2 ...`)",
                  {"dataset": "datasets/Something-Something-v2", "labels": "sthv2", **_SRTG, "clip_size": 224,
                   "train_frame_interval": [2], "val_frame_interval": 2, "batch_size": 32,
                   "lr_steps": [15, 30, 40], "end_epoch": 50, "flip": False}),
    # The demo's settings are tuned to finish in < 15 min on 2 CPU cores (`python -m tools.demo` reads them too).
    DatasetPreset("demo", "the synthetic motion dataset made by `python -m tools.demo` (demo_data/store)",
                  {"dataset": Path("demo_data/store"), "labels": "demo.csv", "network": "mict_resnet18",
                   "model_dir": Path("demo_runs") / "mict_resnet18", "clip_length": 8, "clip_size": 32,
                   # 8 frames at interval 4 span the whole 32-frame demo video
                   "train_frame_interval": [4], "val_frame_interval": 4,
                   "flip": False,  # a mirrored "move left" clip is "move right": flips would corrupt the labels
                   "batch_size": 16, "optimizer": "adamw", "lr_base": _DEMO_LR, "lr_steps": [10], "end_epoch": 14,
                   "warmup_epochs": 0.0, "workers": 1, "clip_grad_norm": None, "val_clips_per_video": 1,
                   "log_interval": 5, "keep_last": 2, "random_seed": 0, "width_mult": None,
                   "model_arg": list(DEMO_MODEL_ARGS["mict_resnet18"])},
                  per_network=lambda network: demo_network_defaults(network)),
)}


def demo_network_defaults(network: str) -> dict[str, Any]:
    """The demo's defaults that follow the network: its model arguments, learning rate and model folder."""
    return {"model_arg": list(DEMO_MODEL_ARGS.get(network, ())),
            "lr_base": DEMO_LR_BASE.get(network, _DEMO_LR), "model_dir": Path("demo_runs") / network}


def run_preset(name: str, argv: Sequence[str] | None = None) -> int:
    """Train with preset `name`: its option (if any) picks further defaults, which the user's explicit arguments
    still override; then `train.cli.main`. Returns the exit code."""
    from train import cli  # looked up at call time, so the trainer's entry point can be replaced in tests

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    defaults = dict(preset.defaults)
    if preset.per_network is not None:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--network", default=defaults.get("network"))
        defaults.update(preset.per_network(pre.parse_known_args(argv)[0].network))
    if preset.option is None:
        return cli.main(argv, defaults=defaults)
    pre = argparse.ArgumentParser(add_help=False)
    preset.option.add_to(pre)
    picked = getattr(pre.parse_known_args(argv)[0], preset.option.dest)  # a bad choice exits 2 here
    defaults.update(preset.option.picks(picked))
    return cli.main(argv, defaults=defaults, extra_args=preset.option.add_to)
