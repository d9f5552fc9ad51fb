"""The newcomer's mistakes: a mistyped option or network name is one line with the closest valid names, and the
SRTG code's spellings (``--pretrained_3d``, ``--fine-tune True``) and README commands work as written."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_util import make_store
from train.arguments import parse_args
from train.presets import run_preset

ROOT = Path(__file__).resolve().parents[1]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv, expected", [
    (["--network", "resnet50"], "invalid choice 'resnet50' (did you mean "),
    (["--network", "mict_resnet_18"], "did you mean mict_resnet18"),
    (["--batchsize", "4"], "unrecognized arguments: --batchsize 4 (--batchsize: did you mean --batch-size?)"),
    (["--epochs", "3"], "--epochs: did you mean --end-epoch?"),
])
def test_a_typo_is_one_line_with_the_closest_valid_name(monkeypatch, capsys, argv, expected):
    monkeypatch.setattr(sys, "argv", [str(ROOT / "train" / "__main__.py")])
    with pytest.raises(SystemExit) as e:
        parse_args(["--dataset", "d", *argv])
    assert e.value.code == 2
    line = _one_line(capsys)
    assert line.startswith("python -m train: error: ") and expected in line, line
    assert len(line) < 300


def test_a_network_typo_suggests_networks_of_that_depth(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "d", "--network", "resnet50"])
    line = _one_line(capsys)
    suggested = line[line.index("did you mean ") + len("did you mean "):line.index("?")].split(", ")
    assert suggested and all(name.endswith("50") for name in suggested), line


@pytest.mark.parametrize("text, expected", [("True", True), ("False", False), ("true", True), ("0", False)])
def test_the_srtg_spellings_are_accepted(text, expected):
    args = parse_args(["--dataset", "d", "--pretrained_3d", "w.pth", "--fine-tune", text])
    assert args.pretrained_3d == Path("w.pth") and args.fine_tune is expected
    assert parse_args(["--dataset", "d", "--pretrained-3d", "w.pth", "--fine-tune"]).fine_tune is True


# The SRTG README's three commands, as written but scaled to a CPU: tiny clips, width, batch and lr, one debug epoch,
# no multigrid (its shapes need more videos than this store has) and no --gpus 4 (no GPU here).
README_COMMANDS = [
    "train_hacs.py --network srtg_r3d_34 --dataset D --clip-size 324 --gpus 4 --lr-base 0.1 --batch-size 48",
    "train_hacs.py --network srtg_r3d_50 --dataset D --clip-size 256 --gpus 4 --pretrained_3d "
    "results/HACS/srtg_r3d_50_gates_False/srtg_r3d_50_ep-0020.pth --resume-epoch 21 --lr-base 0.1 --batch-size 32",
    "train_kinetics.py --network srtg_r3d_34 --dataset D --variant 700 --clip-size 224 --gpus 4 --pretrained_3d "
    "results/HACS/srtg_r3d_34_gates_False/srtg_r3d_34_ep-0080.pth --fine-tune True --lr-base 0.1 --batch-size 48",
]
# No validation: the tiny-width SRTG networks' eval outputs on two clips can be NaN, which the trainer refuses.
SCALE = ["--val-split", "test", "--end-epoch", "1", "--clip-length", "8", "--width-mult", "0.125", "--workers", "0", "--debug-mode", "--no-long-cycles",
         "--no-short-cycles", "--val-frame-interval", "1", "--train-frame-interval", "1"]


def _scaled(command: str, store: Path, epochs: dict[str, str]) -> list[str]:
    words = command.split()
    # The lr scales with the batch (0.1 at 32-48 clips, 0.001 at 2: the tiny networks must not diverge to NaN)
    for flag, value in (("--clip-size", "32"), ("--batch-size", "2"), ("--dataset", str(store)), ("--lr-base", "0.001")):
        words[words.index(flag) + 1] = value
    i = words.index("--gpus")
    del words[i:i + 2]
    for long, short in epochs.items():  # the epochs of the checkpoints the scratch runs leave
        words = [short if w == long else w.replace(long, short) if long.startswith("ep-") else w for w in words]
    return [sys.executable, str(ROOT / words[0]), *words[1:], *SCALE]


def test_the_srtg_readme_commands_run_as_written(tmp_path, monkeypatch):
    store = make_store(tmp_path / "data", classes=2, videos_per_class=3, frames=12)
    for name in ("hacs", "kinetics700"):
        shutil.copy(store / "labels" / "all.csv", store / "labels" / f"{name}.csv")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(argv: list[str]) -> None:
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    # Scratch runs leave the checkpoints the other two commands name (at epoch 1 instead of 20 and 80); the second,
    # only there to make a checkpoint, runs in this process.
    run([*_scaled(README_COMMANDS[0], store, {}), "--model-dir", "results/HACS/srtg_r3d_34_gates_False"])
    monkeypatch.chdir(tmp_path)
    argv = _scaled(README_COMMANDS[0].replace("srtg_r3d_34", "srtg_r3d_50"), store, {})[2:]
    assert run_preset("hacs", [*argv, "--model-dir", "results/HACS/srtg_r3d_50_gates_False"]) == 0
    run([*_scaled(README_COMMANDS[1], store, {"ep-0020": "ep-0001", "21": "2"}),
         "--end-epoch", "2", "--model-dir", "resumed"])
    assert (tmp_path / "resumed" / "srtg_r3d_50_ep-0002.pth").is_file()
    run([*_scaled(README_COMMANDS[2], store, {"ep-0080": "ep-0001"}), "--end-epoch", "1", "--model-dir", "tuned"])
    assert (tmp_path / "tuned" / "srtg_r3d_34_ep-0001.pth").is_file()


def test_mict_short_clip_error_names_the_flag_to_use():
    from network import build_model

    model = build_model("mict_resnet18", 2, version="v1", width_mult=0.125)
    assert "--model-arg version=v2" in model.min_frames_hint()


def test_a_missing_label_file_names_the_label_files_the_root_has(tmp_path):
    from data.dataset import VideoDataset
    from data.labels import LabelError
    from tests.test_dataset import make_root

    root = make_root(tmp_path, [("walk", "w1", 10, "train")])
    (root / "labels" / "ucf101_split1.csv").write_text((root / "labels" / "all.csv").read_text())
    with pytest.raises(LabelError) as e:
        VideoDataset(root, "kinetics400", split="train")
    assert "label file not found" in str(e.value) and "all.csv, ucf101_split1.csv" in str(e.value)


def test_labels_naming_missing_videos_point_to_drop_missing_without_index_advice(tmp_path, caplog):
    from data.dataset import VideoDataset
    from data.index import refresh_index
    from data.labels import Sample, write_labels
    from data.store import FrameStoreError
    from tests.test_dataset import make_root

    root = make_root(tmp_path, [("walk", "w1", 10, "train")])
    refresh_index(root)
    write_labels(root / "labels" / "all.csv", [Sample("w1", "walk", "train"), Sample("gone", "walk", "train")])
    with pytest.raises(FrameStoreError) as e:
        VideoDataset(root, split="train")
    assert "1 of 2 videos" in str(e.value) and "python -m tools.make_labels" in str(e.value)
    assert "--drop-missing" in str(e.value)
    assert "tools.index" not in caplog.text
