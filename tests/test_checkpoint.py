"""Checkpoints: atomic save, validated load, corrupt/foreign files, RNG round trip, model rebuilding."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import network
from train import checkpoint as ck
from train.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    capture_rng_state,
    check_same_model,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

torch.set_num_threads(1)
KW = {"version": "v2", "width_mult": 0.125}


def _ckpt(net="mict_resnet18", classes=("a", "b", "c"), kw=KW, model=None):
    model = model or network.build_model(net, len(classes), **kw)
    return {"format": "videotrain-ckpt-1", "network": net, "num_classes": len(classes), "classes": list(classes),
            "model_kwargs": dict(kw), "model": ck.model_state_dict(model), "epoch": 3,
            "preprocess": {"clip_length": 8, "crop_size": 32, "resize_short": 37, "frame_interval": 2,
                           "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]},
            "optimizer": {}, "scheduler": {}, "scaler": {}, "multigrid": {}, "rng": capture_rng_state(),
            "args": {"network": net}, "metrics": {}}


def test_save_load_round_trip_and_rebuild_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    model = network.build_model("mict_resnet18", 3, **KW).eval()
    path = save_checkpoint(_ckpt(model=model), tmp_path / "m_ep-0003.pth")
    loaded = load_checkpoint(path)
    rebuilt, classes, pre = build_model_from_checkpoint(loaded)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
    assert classes == ["a", "b", "c"] and pre["crop_size"] == 32 and not rebuilt.training
    assert list(list_checkpoints(tmp_path, "m")) == [3]


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "net_ep-0001.pth"
    save_checkpoint({"format": "old"}, path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_ckpt(), path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # and no temporary file is left


@pytest.mark.parametrize("content, message", [
    (b"", "corrupt or unreadable"),
    (b"this is not a checkpoint at all", "corrupt or unreadable"),
])
def test_corrupt_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_truncated_checkpoint_is_corrupt(tmp_path):
    path = save_checkpoint(_ckpt(), tmp_path / "full.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(path)


def test_missing_file_and_foreign_formats(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pth")
    bare = tmp_path / "bare.pth"
    torch.save(network.build_model("fr2d_18", 3, width_mult=0.125).state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a videotrain-ckpt-1 checkpoint.*--pretrained-3d"):
        load_checkpoint(bare)
    lacking = _ckpt()
    del lacking["preprocess"]
    torch.save(lacking, tmp_path / "lacking.pth")
    with pytest.raises(CheckpointError, match="lacks preprocess"):
        load_checkpoint(tmp_path / "lacking.pth")
    wrong_count = _ckpt()
    wrong_count["num_classes"] = 5
    with pytest.raises(CheckpointError, match="3 class names for 5 classes"):
        ck.validate_checkpoint(wrong_count)


def test_weights_of_another_model_are_rejected_when_rebuilding():
    other = _ckpt()
    other["model"] = ck.model_state_dict(network.build_model("fr2d_18", 3, width_mult=0.125))
    with pytest.raises(CheckpointError, match="do not fit network 'mict_resnet18'"):
        build_model_from_checkpoint(other)
    unknown = _ckpt()
    unknown["network"] = "no_such_net"
    with pytest.raises(CheckpointError, match="cannot be rebuilt"):
        build_model_from_checkpoint(unknown)
    with pytest.raises(CheckpointError, match="network 'mict_resnet18', not 'fr2d_18'"):
        check_same_model(_ckpt(), "fr2d_18", 3, "x.pth")
    with pytest.raises(CheckpointError, match="3 classes, the dataset has 4"):
        check_same_model(_ckpt(), "mict_resnet18", 4, "x.pth")


def test_state_dict_has_no_ddp_prefix():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    wrapped = torch.nn.Module()
    wrapped.module = model  # what DistributedDataParallel looks like to unwrap_model
    assert list(ck.model_state_dict(wrapped)) == ["0.weight", "0.bias"]


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
