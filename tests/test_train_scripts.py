"""Every `train_<dataset>.py` script, started as users start it (a separate process, from another folder), trains
one tiny epoch with its preset: the preset's label file is the one read, and every preset default not given on
the command line reaches the trainer (read back from the checkpoint's recorded arguments)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem.removeprefix("train_") for p in ROOT.glob("train_*.py"))
# What the tests give on the command line (everything else comes from the preset).
OVERRIDES = {"network": "mict_resnet18", "width_mult": 0.125, "clip_length": 8,
             "clip_size": 32, "batch_size": 4, "workers": 0, "end_epoch": 1, "lr_steps": [], "long_cycles": False,
             "short_cycles": False, "precise_bn_batches": 0}


def _argv(store: Path, model_dir: Path) -> list[str]:
    return ["--dataset", str(store), "--model-dir", str(model_dir), "--network", "mict_resnet18",
            "--model-arg", "version=v2", "--width-mult", "0.125", "--clip-length", "8", "--clip-size", "32",
            "--batch-size", "4", "--workers", "0", "--end-epoch", "1", "--lr-steps", "--no-long-cycles",
            "--no-short-cycles", "--precise-bn-batches", "0"]


def _expected(name: str) -> dict:
    preset = PRESETS[name]
    want = dict(preset.defaults)
    if preset.option is not None:
        want.update(preset.option.picks(preset.option.default))
    return {k: v for k, v in want.items() if k not in OVERRIDES and k not in ("dataset", "model_dir", "model_arg")}


def _plain(value):
    """The checkpoint's JSON-like form of an argument value (paths as strings, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@pytest.fixture(scope="module")
def runs(tiny_store, tmp_path_factory):
    """All scripts started at once (they are independent processes), each on a copy of the store that holds the
    label file its preset picks (a copy of all.csv under that name)."""
    base = tmp_path_factory.mktemp("scripts")
    store = base / "store"
    shutil.copytree(tiny_store, store, ignore=shutil.ignore_patterns(".cache"))
    for name in SCRIPTS:
        labels = _expected(name).get("labels")
        if labels:
            shutil.copy(store / "labels" / "all.csv", store / "labels" / f"{labels}.csv")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for name in SCRIPTS:
        procs[name] = subprocess.Popen([sys.executable, str(ROOT / f"train_{name}.py"), *_argv(store, base / name)],
                                       cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = {}
    for name, proc in procs.items():
        text, _ = proc.communicate(timeout=600)
        out[name] = (proc.returncode, text, base / name)
    return out


def test_every_preset_has_a_script():
    assert SCRIPTS == sorted(PRESETS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_trains_one_epoch_with_its_preset(runs, name):
    code, output, model_dir = runs[name]
    assert code == 0, output[-3000:]
    ckpt = torch.load(model_dir / "mict_resnet18_ep-0001.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and (model_dir / "train_results.csv").is_file()
    recorded = ckpt["args"]
    for key, value in _expected(name).items():
        assert recorded[key] == _plain(value), (name, key, recorded[key], value)
    for key, value in OVERRIDES.items():  # the command line wins over the preset
        assert recorded[key] == value, (name, key)
    # --model-arg adds to the preset's model arguments
    assert recorded["model_arg"] == _plain(PRESETS[name].defaults.get("model_arg", [])) + [["version", "v2"]]


def test_the_demo_script_with_another_network_takes_that_networks_defaults(tiny_store, tmp_path):
    """`python train_demo.py --network r3d_18` (its docstring's example): the demo's MiCT model arguments are not
    passed to R3D, which trains at its own rate in its own folder (demo_runs/r3d_18)."""
    argv = ["--dataset", str(tiny_store), "--labels", "all", "--network", "r3d_18", "--width-mult", "0.125",
            "--clip-length", "4",
            "--clip-size", "32", "--batch-size", "4", "--workers", "0", "--end-epoch", "1", "--lr-steps"]
    proc = subprocess.run([sys.executable, str(ROOT / "train_demo.py"), *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = torch.load(tmp_path / "demo_runs" / "r3d_18" / "r3d_18_ep-0001.pth", weights_only=True)["args"]
    assert recorded["lr_base"] == 1e-4 and recorded["model_arg"] == [] and recorded["network"] == "r3d_18"
