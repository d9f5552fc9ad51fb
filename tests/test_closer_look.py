"""The eleven 18-layer networks of "A Closer Look at Spatiotemporal Convolutions" plus the paper-count R(2+1)D:
parameter counts against the paper's table, training at tiny width, frame-order (in)sensitivity, 2D ResNet
initialisation, ONNX export, bad input, and checkpoints of the frame-based network saved as `r2d_18`."""
from __future__ import annotations

import argparse
import logging

import pytest
import torch
import torch.nn.functional as F

from network import build_model, count_parameters, inflate_2d_resnet
from network.r2d import FrameResNet, StackedFrameResNet
from tools import export_onnx
from train import checkpoint as ck
from train.builders import build_run_model
from train.checkpoint import CheckpointError, build_model_from_checkpoint, check_same_model, load_checkpoint
from train.inference import load_model

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = 0.125

# name, builder arguments, the paper's count (millions, one decimal), ours exactly (400 classes). R2D's count
# depends on the clip length it stacks: the paper's 11.4M is R2D at 8 frames (16 frames: 11,522,832).
NETWORKS = [
    ("r2d_18", {"frames": 8}, 11.4, 11_447_568),
    ("fr2d_18", {}, 11.4, 11_381_712),
    ("r3d_18", {}, 33.4, 33_371_472),
    ("mc2_18", {}, 11.4, 11_400_528),
    ("mc3_18", {}, 11.7, 11_695_440),
    ("mc4_18", {}, 12.7, 12_727_632),
    ("mc5_18", {}, 16.9, 16_856_400),
    ("rmc2_18", {}, 33.3, 33_352_656),
    ("rmc3_18", {}, 33.0, 33_057_744),
    ("rmc4_18", {}, 32.0, 32_025_552),
    ("rmc5_18", {}, 27.9, 27_896_784),
    ("r2plus1d_18", {}, 31.5, 31_505_325),  # torchvision's; the paper's table has the per-conv count below
    ("r2plus1d_18", {"mid_channels": "per_conv"}, 33.3, 33_370_839),
]
# Where the paper's rounding and ours part (within 0.1M): rMC2 33.35M, rMC3 33.06M and the per-conv R(2+1)D 33.37M
# (each (2+1)D conv has the count of the 3x3x3 one it replaces less the floor() in its M, and the 45-plane stem:
# R3D's 33.37M less 0.6k; the paper lists 33.3M beside R3D's 33.4M).
ROUNDED_APART = {"rmc2_18", "rmc3_18", "r2plus1d_18/per_conv"}


def _key(name: str, kw: dict) -> str:
    return f"{name}/{kw['mid_channels']}" if "mid_channels" in kw else name


@pytest.mark.parametrize("name,kw,paper,exact", NETWORKS, ids=[_key(n, k) for n, k, _, _ in NETWORKS])
def test_parameter_counts_match_the_paper(name, kw, paper, exact):
    with torch.device("meta"):
        count = count_parameters(build_model(name, 400, **kw))
    assert count == exact
    if _key(name, kw) in ROUNDED_APART:
        assert abs(count / 1e6 - paper) < 0.1
    else:
        assert round(count / 1e6, 1) == paper


@pytest.mark.parametrize("name,kw", [(n, k) for n, k, _, _ in NETWORKS], ids=[_key(n, k) for n, k, _, _ in NETWORKS])
def test_trains_forward_backward_on_8_frames_and_sees_frame_order_unless_frame_based(name, kw):
    torch.manual_seed(0)
    model = build_model(name, 4, width_mult=TINY, dropout=0.1, **kw)
    x = torch.randn(2, 3, 8, 32, 32)
    model(x).logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        diff = (model(x) - model(x.flip(2))).abs().max().item()
    if name == "fr2d_18":
        assert diff < 1e-5  # f-R2D averages per-frame features: blind to frame order
    else:
        assert diff > 1e-4


def test_stages_keep_their_names_and_show_where_time_is_modelled():
    from tools.inspect_model import block_kernels

    kinds = {b.block: b.kind for b in block_kernels(build_model("mc4_18", 4, width_mult=TINY))}
    assert kinds["stem"] == "3D" and kinds["layer2.1"] == "3D" and kinds["layer3.0"] == "2D (per frame)"
    kinds = {b.block: b.kind for b in block_kernels(build_model("rmc4_18", 4, width_mult=TINY))}
    assert kinds["stem"] == "2D (per frame)" and kinds["layer2.1"] == "2D (per frame)" and kinds["layer3.0"] == "3D"
    kinds = {b.block: b.kind for b in block_kernels(build_model("r2d_18", 4, width_mult=TINY))}
    assert set(kinds) == {"stem", *(f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1))}
    assert set(kinds.values()) == {"2D"}


def test_r2d_stacks_a_fixed_number_of_frames():
    model = build_model("r2d_18", 4, width_mult=TINY, frames=4).eval()
    assert isinstance(model, StackedFrameResNet) and model.stem[0].in_channels == 12
    assert model(torch.randn(1, 3, 4, 32, 32)).shape == (1, 4)
    for t in (3, 5):
        with pytest.raises(ValueError, match=f"exactly 4 frames .*got {t} .*frames={t}"):
            model(torch.randn(1, 3, t, 32, 32))
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match="frames must be an integer >= 1"):
            build_model("r2d_18", 4, frames=bad)


def test_mixed_networks_outside_2_to_5_are_named():
    for name in ("mc1_18", "rmc6_18"):
        with pytest.raises(ValueError, match=f"unknown model '{name}': .*mc2_18..mc5_18 and rmc2_18..rmc5_18"):
            build_model(name, 4)
    with pytest.raises(ValueError, match="mid_channels"):
        build_model("r2plus1d_18", 4, mid_channels="paper")
    with pytest.raises(ValueError, match="does not take mid_channels"):
        build_model("r3d_18", 4, mid_channels="per_conv")


@pytest.fixture(scope="module")
def resnet2d_file(tmp_path_factory):
    """A tiny 2D ResNet-18 state_dict with torchvision's names (f-R2D's names are torchvision's)."""
    torch.manual_seed(1)
    state = build_model("fr2d_18", 1000, width_mult=TINY).state_dict()
    path = tmp_path_factory.mktemp("r2d") / "resnet18_tiny.pth"
    torch.save(state, path)
    return path, state


def test_pretrained_2d_spreads_the_first_conv_over_r2d_stacked_frames(resnet2d_file):
    path, w2d = resnet2d_file
    model = build_model("r2d_18", 4, width_mult=TINY, frames=4).eval()
    report = inflate_2d_resnet(model, path)
    assert report.missing == ["fc.weight", "fc.bias"]
    frame = torch.randn(1, 3, 32, 32)
    clip = frame[:, :, None].expand(1, 3, 4, 32, 32).reshape(1, 12, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.stem[0](clip), F.conv2d(frame, w2d["conv1.weight"], stride=2, padding=3),
                                   rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.layer3[1].conv2.weight, w2d["layer3.1.conv2.weight"])


@pytest.mark.parametrize("name", ["mc2_18", "rmc3_18"])
def test_pretrained_2d_fills_the_2d_stages_of_mixed_networks(resnet2d_file, name):
    path, w2d = resnet2d_file
    model = build_model(name, 4, width_mult=TINY)
    report = inflate_2d_resnet(model, path)
    assert report.missing == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.stem[0].weight.sum(2), w2d["conv1.weight"])
    torch.testing.assert_close(model.layer4[0].conv1[0].weight.sum(2), w2d["layer4.0.conv1.weight"])


def test_pretrained_2d_on_a_network_without_2d_stages_is_one_line(resnet2d_file):
    path, _ = resnet2d_file
    args = argparse.Namespace(network="mtnet_xs", model_arg={}, dropout=None, width_mult=TINY, clip_length=8,
                              pretrained_3d=None, pretrained_2d=path)
    with pytest.raises(CheckpointError, match=r"^--pretrained-2d .*: mtnet_xs has no 2D ResNet stages"):
        build_run_model(args, 4, None)


def test_trainer_builds_r2d_for_its_clip_length():
    args = argparse.Namespace(network="r2d_18", model_arg={}, dropout=None, width_mult=TINY, clip_length=6,
                              pretrained_3d=None, pretrained_2d=None)
    assert build_run_model(args, 4, None).frames == 6


def test_onnx_export_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = build_model("rmc3_18", 4, width_mult=TINY).eval()
    res = export_onnx.export_and_check(model, tmp_path / "rmc3_18.onnx", (3, 8, 32, 32))
    assert res.rel_error <= 1e-4


def test_export_cli_builds_r2d_for_the_clip_length(tmp_path, capsys):
    out = tmp_path / "r2d.onnx"
    assert export_onnx.main(["--network", "r2d_18", "--num-classes", "3", "--width-mult", "0.125",
                             "--clip-length", "4", "--crop-size", "32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "input (batch, 3, 4, 32, 32)" in text and "max relative error" in text


def _old_r2d_checkpoint(path):
    """A checkpoint as an earlier version wrote it for its `r2d_18`, the frame-based network."""
    model = build_model("fr2d_18", 3, width_mult=TINY)
    ckpt = {"format": ck.FORMAT, "network": "r2d_18", "num_classes": 3, "classes": ["a", "b", "c"],
            "model_kwargs": {"width_mult": TINY}, "model": ck.model_state_dict(model), "epoch": 2,
            "preprocess": {"clip_length": 8, "crop_size": 32, "resize_short": 37, "frame_interval": 2,
                           "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}, "args": {"network": "r2d_18"}}
    ck.save_checkpoint(ckpt, path)
    return model


def test_checkpoint_saved_as_r2d_18_by_an_earlier_version_loads_as_fr2d_18(tmp_path, caplog):
    path = tmp_path / "r2d_18_best.pth"
    original = _old_r2d_checkpoint(path).eval()
    with caplog.at_level(logging.INFO, logger="train.checkpoint"):
        ckpt = load_checkpoint(path)
    assert ckpt["network"] == "fr2d_18"
    lines = [r.getMessage() for r in caplog.records if "earlier version" in r.getMessage()]
    assert lines == [f"{path}: saved as r2d_18 by an earlier version (the frame-based network), loaded as fr2d_18"]
    check_same_model(ckpt, "fr2d_18", 3, path)  # resuming it as fr2d_18
    model, classes, _ = build_model_from_checkpoint(ckpt)
    assert isinstance(model, FrameResNet) and classes == ["a", "b", "c"]
    loaded = load_model(path, "cpu")  # what evaluate / predict / export do
    assert loaded.network == "fr2d_18"
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), original(x))


def test_resume_auto_finds_a_run_saved_as_r2d_18_and_refuses_to_overwrite_it_as_the_new_r2d(tmp_path):
    from train.auto_resume import find_resume_checkpoint

    old = tmp_path / "r2d_18_ep-0002.pth"
    _old_r2d_checkpoint(old)
    _old_r2d_checkpoint(tmp_path / "r2d_18_ep-0001.pth")
    assert find_resume_checkpoint(tmp_path, "fr2d_18") == old  # the frame-based run goes on under its new name
    with pytest.raises(CheckpointError, match=r"holds a fr2d_18 checkpoint .* --network fr2d_18"):
        find_resume_checkpoint(tmp_path, "r2d_18")  # a fresh R2D run here would overwrite those files
    assert find_resume_checkpoint(tmp_path / "elsewhere", "fr2d_18") is None
