"""--temporal-gates-from: gates off before the epoch, on from it, saved in checkpoints, restored on resume."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from network import build_model
from network.srtg import SqueezeRecursion
from tests.train_util import make_store, tiny_train_argv
from train import cli
from train.callbacks import Checkpointer
from train.checkpoint import build_model_from_checkpoint, checkpoint_path, load_checkpoint
from train.temporal_gates import TemporalGatesFrom, temporal_gates_callbacks


def _gates(model: torch.nn.Module) -> set[bool]:
    return {m.temporal_gates for m in model.modules() if isinstance(m, SqueezeRecursion)}


def test_callback_switches_gates_at_the_epoch_and_records_them_for_checkpoints(tmp_path):
    model = build_model("srtg_r3d_18", 3, width_mult=0.125)
    ckpt = Checkpointer(tmp_path, "srtg_r3d_18", {"model_kwargs": {"width_mult": 0.125}})
    trainer = SimpleNamespace(model=model, dist=SimpleNamespace(is_main=True))
    cb = TemporalGatesFrom(3, ckpt)
    for epoch, expected in ((1, False), (2, False), (3, True), (4, True)):
        cb.on_epoch_begin(trainer, epoch, {})
        assert _gates(model) == {expected}
        assert ckpt.meta["model_kwargs"] == {"width_mult": 0.125, "temporal_gates": expected}
        assert ckpt.meta["temporal_gates_from"] == 3


def test_option_comes_from_the_resumed_checkpoint_and_refuses_models_without_sr():
    model = build_model("srtg_r3d_18", 3, width_mult=0.125)
    args = SimpleNamespace(temporal_gates_from=None)
    assert temporal_gates_callbacks(args, model, None, None) == []
    (cb,) = temporal_gates_callbacks(args, model, None, {"temporal_gates_from": 7})
    assert cb.from_epoch == 7
    with pytest.raises(ValueError, match="--temporal-gates-from: r3d_18 has no Squeeze-and-Recursion block"):
        temporal_gates_callbacks(SimpleNamespace(temporal_gates_from=2), build_model("r3d_18", 3), None, None)
    with pytest.raises(ValueError, match="epoch >= 1"):
        TemporalGatesFrom(0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("gates_store"), classes=2, videos_per_class=6)


def test_cli_run_switches_gates_saves_and_resumes(store, tmp_path, one_thread):
    run = tmp_path / "run"
    argv = tiny_train_argv(store, run, "--debug-mode", network="srtg_r3d_18")
    assert cli.main([*argv, "--end-epoch", "2", "--temporal-gates-from", "2"]) == 0
    first, second = (load_checkpoint(checkpoint_path(run, "srtg_r3d_18", e)) for e in (1, 2))
    assert first["model_kwargs"]["temporal_gates"] is False and second["model_kwargs"]["temporal_gates"] is True
    assert second["temporal_gates_from"] == 2 and second["args"]["temporal_gates_from"] == 2
    model, _, _ = build_model_from_checkpoint(second)
    assert _gates(model) == {True}
    # resume without the option: taken from the checkpoint, gates on for epoch 3
    assert cli.main([*argv, "--end-epoch", "3", "--resume-epoch", "2"]) == 0
    third = load_checkpoint(checkpoint_path(run, "srtg_r3d_18", 3))
    assert third["temporal_gates_from"] == 2 and third["model_kwargs"]["temporal_gates"] is True


def test_cli_refuses_gates_for_a_model_without_sr(store, tmp_path, capsys):
    argv = tiny_train_argv(store, tmp_path / "plain", "--debug-mode", "--temporal-gates-from", "2", network="r3d_18")
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "no Squeeze-and-Recursion block" in capsys.readouterr().err
