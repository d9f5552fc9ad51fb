"""The training command line: argument names and types, per-dataset scripts, bad inputs, a real CPU run."""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

import pytest
import torch

from tests.train_util import make_store, tiny_train_argv
from tests.unprivileged import run_unprivileged
from train import cli
from train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

torch.set_num_threads(1)
SPEC7 = ("--dataset --network --clip-length --clip-size --train-frame-interval --val-frame-interval --batch-size "
         "--lr-base --lr-steps --lr-factor --end-epoch --save-frequency --model-dir --log-file --pretrained-3d "
         "--fine-tune --resume-epoch --long-cycles --short-cycles --random-seed --gpus --workers --precision "
         "--debug-mode --log-interval").split()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("cli_store"), classes=2, videos_per_class=6)


def test_parser_has_the_spec_arguments_with_real_types():
    parser = cli.build_parser()
    options = {s for a in parser._actions for s in a.option_strings}
    assert set(SPEC7) <= options
    for action in parser._actions:
        assert action.type is not bool, action.dest  # flags are store_true / BooleanOptionalAction
    args = cli.parse_args(["--dataset", "d", "--lr-steps", "10", "20", "--train-frame-interval", "1", "2",
                           "--gpus", "0,1", "--precision", "bf16", "--fine-tune", "--pretrained-3d", "x.pth"])
    assert args.lr_steps == [10, 20] and args.train_frame_interval == [1, 2] and args.gpus == [0, 1]
    assert args.fine_tune is True and args.long_cycles is False and args.nesterov is True
    assert str(args.model_dir) == os.path.join("runs", "d", "mict_resnet18")
    assert args.log_file == args.model_dir / "train.log"


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "d", "--batch-size", "abc"], "positive integer"),
    (["--dataset", "d", "--batch-size", "0"], "positive integer"),
    (["--dataset", "d", "--lr-base", "-1"], "positive number"),
    (["--dataset", "d", "--gpus", "a,b"], "--gpus takes GPU ids"),
    (["--dataset", "d", "--network", "nope"], "invalid choice"),
    (["--dataset", "d", "--precision", "fp8"], "invalid choice"),
    (["--dataset", "d", "--fine-tune"], "--fine-tune needs"),
    (["--dataset", "d", "--resume", "a.pth", "--resume-epoch", "2"], "either --resume or --resume-epoch"),
    (["--dataset", "d", "--lr-steps", "20", "10"], "--lr-steps must increase"),
    ([], "--dataset is required"),
])
def test_bad_arguments_exit_2_with_usage(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_defaults_and_extra_args_of_scripts():
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--variant", type=int, choices=(200, 400), default=400)

    args = cli.parse_args(["--variant", "200"], defaults={"dataset": "k", "clip_length": 32}, extra_args=extra)
    assert args.variant == 200 and args.clip_length == 32 and str(args.dataset) == "k"
    with pytest.raises(ValueError, match="unknown arguments: no_such"):
        cli.build_parser(defaults={"no_such": 1})


@pytest.mark.parametrize("script, expect", [
    ("train_ucf101", {"labels": "ucf101_split2", "dataset": "datasets/UCF-101"}),
    ("train_hmdb51", {"labels": "hmdb51_split2", "dataset": "datasets/HMDB-51"}),
    ("train_kinetics", {"labels": "kinetics600", "dataset": "datasets/Kinetics-600"}),
])
def test_per_dataset_scripts_are_thin_wrappers(script, expect, monkeypatch):
    module = importlib.import_module(script)
    seen = {}

    def fake_main(argv, defaults, extra_args):
        seen["args"] = cli.parse_args(argv, defaults, extra_args)
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    argv = ["--variant", "600"] if script == "train_kinetics" else ["--split", "2"]
    assert module.main(argv) == 0
    args = seen["args"]
    assert args.labels == expect["labels"] and str(args.dataset) == expect["dataset"]
    with pytest.raises(SystemExit):
        module.main(["--variant", "123"] if script == "train_kinetics" else ["--split", "4"])


# ---------------------------------------------------------------------------------------------- bad input
def _one_line_error(capsys):
    """The run's stderr ends with exactly one `error: ...` line and holds no traceback (logs may precede it)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0] and not any("Traceback" in line for line in err), err
    return errors[0]


def _assert_fails(argv, capsys, pattern):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    line = _one_line_error(capsys)
    assert re.search(pattern, line), line
    return line


@pytest.fixture()
def guarded_dir(tmp_path):
    """A model dir holding a previous run's files, which no failed run may touch."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "train_results.csv").write_text("epoch,top1\n1,50\n")
    save_checkpoint({"format": "previous"}, d / "mict_resnet18_ep-0001.pth")
    return d


def _snapshot(d):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()}


def test_missing_and_empty_dataset_root(tmp_path, guarded_dir, capsys):
    before = _snapshot(guarded_dir)
    _assert_fails(tiny_train_argv(tmp_path / "missing", guarded_dir), capsys, "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_fails(tiny_train_argv(empty, guarded_dir), capsys, "is empty")
    assert _snapshot(guarded_dir) == before


def test_labels_naming_classes_the_store_lacks(store, tmp_path, guarded_dir, capsys):
    csv = tmp_path / "labels.csv"
    lines = (store / "labels" / "all.csv").read_text().splitlines()
    csv.write_text("\n".join(lines + ["juggling,juggling_0001,,,train"]) + "\n")
    before = _snapshot(guarded_dir)
    _assert_fails(tiny_train_argv(store, guarded_dir, "--labels", str(csv)), capsys, "juggling")
    assert _snapshot(guarded_dir) == before


def test_resume_with_checkpoint_of_another_model(store, tmp_path, guarded_dir, capsys):
    other = tmp_path / "other"
    assert cli.main(tiny_train_argv(store, other, "--debug-mode", network="fr2d_18")) == 0
    before = _snapshot(guarded_dir)
    _assert_fails(tiny_train_argv(store, guarded_dir, "--resume", str(checkpoint_path(other, "fr2d_18", 1))), capsys,
                  "network 'fr2d_18', not 'mict_resnet18'")
    assert _snapshot(guarded_dir) == before


def test_corrupt_checkpoint_and_missing_resume_epoch(store, guarded_dir, capsys):
    before = _snapshot(guarded_dir)
    # the guarded dir's epoch-1 file is not a real checkpoint
    _assert_fails(tiny_train_argv(store, guarded_dir, "--resume-epoch", "1"), capsys, "not a videotrain-ckpt-1")
    (guarded_dir / "garbage.pth").write_bytes(b"\x00garbage")
    before = _snapshot(guarded_dir)
    _assert_fails(tiny_train_argv(store, guarded_dir, "--resume", str(guarded_dir / "garbage.pth")), capsys,
                  "corrupt or unreadable")
    _assert_fails(tiny_train_argv(store, guarded_dir, "--resume-epoch", "7"), capsys,
                  r"--resume-epoch 7: no checkpoint .*epochs 1..1 are there")
    assert _snapshot(guarded_dir) == before


def test_non_writable_model_dir(store, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _assert_fails(tiny_train_argv(store, blocker / "run"), capsys, "--model-dir .* is not writable")
    assert blocker.read_text() == "not a folder"
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    result = run_unprivileged([sys.executable, "-m", "train", *tiny_train_argv(store, ro)], cwd=tmp_path)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and re.search("is not writable", err[-1]) and err[-1].startswith("error: "), \
        result.stderr[-2000:]
    assert not list(ro.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
@pytest.mark.parametrize("gpus", ["0", "0,1"])
def test_gpus_without_gpus(store, guarded_dir, gpus, capsys):
    before = _snapshot(guarded_dir)
    _assert_fails(tiny_train_argv(store, guarded_dir, "--gpus", gpus), capsys, "no CUDA GPU is available")
    assert _snapshot(guarded_dir) == before


def test_several_gpus_without_torchrun_prints_the_command(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "select_device", lambda gpus, local_rank=0: torch.device("cpu"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    line = _assert_fails(tiny_train_argv(store, tmp_path / "r", "--gpus", "0,1"), capsys, "torchrun")
    assert "torchrun --nproc_per_node=2" in line and "--gpus 0,1" in line


def test_fp16_on_cpu_is_refused(store, tmp_path, capsys):
    _assert_fails(tiny_train_argv(store, tmp_path / "r", "--precision", "fp16"), capsys, "fp16 needs a CUDA GPU")


# ---------------------------------------------------------------------------------------------- real runs
def test_debug_run_bf16_writes_everything(store, tmp_path):
    run = tmp_path / "run"
    assert cli.main(tiny_train_argv(store, run, "--debug-mode", "--precision", "bf16", "--end-epoch", "2")) == 0
    for name in ("mict_resnet18_ep-0001.pth", "mict_resnet18_ep-0002.pth", "mict_resnet18_best.pth",
                 "train_results.csv", "val_results.csv", "curves.png", "train.log"):
        assert (run / name).is_file(), name
    ckpt = load_checkpoint(run / "mict_resnet18_ep-0002.pth")
    assert ckpt["args"]["precision"] == "bf16" and ckpt["classes"] == (store / "classes.txt").read_text().split()
    assert ckpt["preprocess"]["crop_size"] == 32 and ckpt["model_kwargs"] == {"version": "v2", "width_mult": 0.125}
    log = (run / "train.log").read_text()
    assert "Speed (r=" in log and "\x1b[" not in log  # plain text in the file
    assert len((run / "train_results.csv").read_text().splitlines()) == 3


def test_pretrained_3d_and_fine_tune(store, tmp_path, caplog):
    src = tmp_path / "src"
    assert cli.main(tiny_train_argv(store, src, "--debug-mode")) == 0
    # A 5-class state_dict with a "module." prefix: the classifier cannot load (shape), the rest does.
    state = {"module." + k: v for k, v in load_checkpoint(checkpoint_path(src, "mict_resnet18", 1))["model"].items()}
    state["module.fc.weight"] = torch.zeros(5, state["module.fc.weight"].shape[1])
    state["module.fc.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "pre.pth")
    run = tmp_path / "ft"
    with caplog.at_level("INFO"):
        assert cli.main(tiny_train_argv(store, run, "--debug-mode", "--pretrained-3d", str(tmp_path / "pre.pth"),
                                        "--fine-tune", "--lr-base", "0.5")) == 0
    text = caplog.text
    assert "skipped 2 checkpoint tensors" in text and "fc.weight" in text
    groups = load_checkpoint(checkpoint_path(run, "mict_resnet18", 1))["optimizer"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [0.1, 1.0]
    assert groups[0]["lr"] == pytest.approx(0.1 * groups[1]["lr"]) and len(groups[1]["params"]) == 2
    # A file of a completely different model loads nothing: a clear error.
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "alien.pth")
    with pytest.raises(SystemExit) as e:
        cli.main(tiny_train_argv(store, tmp_path / "alien_run", "--pretrained-3d", str(tmp_path / "alien.pth")))
    assert e.value.code == 2


def test_demo_quick(tmp_path, capsys):
    from tools import demo

    assert demo.main(["--quick", "--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "runs"),
                      "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "video@1" in out and "checkpoint:" in out and "curves.png" in out
    run = tmp_path / "runs" / "quick_mict_resnet18"
    assert (run / "mict_resnet18_best.pth").is_file() and (run / "eval_test.json").is_file()
    # The demo ends by predicting on two raw held-out videos, with a timeline PNG each.
    assert "predict on raw held-out videos" in out and out.count("timeline strip:") == 2
    assert len(list((run / "predict").glob("*.timeline.png"))) == 2


def test_the_demo_trains_each_network_at_its_own_rate_unless_told(capsys):
    from tools import demo

    def lr(*argv: str) -> float:
        return demo.config_for(demo.parse_args(list(argv))).lr_base

    assert lr() == demo.FULL.lr_base == 1e-3  # MiCT-ResNet-18 at the preset's rate
    assert lr("--network", "r3d_18") == 1e-4  # at full width 1e-3 leaves R3D-18 at chance
    assert lr("--network", "r3d_18", "--lr", "3e-4") == 3e-4
    assert lr("--network", "r3d_18", "--quick") == demo.QUICK.lr_base  # the tiny test model keeps its own
    with pytest.raises(SystemExit) as e:
        lr("--lr", "0")
    assert e.value.code == 2 and "--lr must be > 0" in capsys.readouterr().err
