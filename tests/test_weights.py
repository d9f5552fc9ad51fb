"""Weights from local files: load by name and shape, prefixes, reports, corrupt files, 2D -> 3D inflation."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
import torchvision

from network import CheckpointError, LoadReport, build_model, inflate_2d_resnet, load_weights

TINY = 0.125


@pytest.fixture(autouse=True)
def _seeded_one_thread(one_thread):
    torch.manual_seed(0)


def _same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_load_weights_round_trip(tmp_path, wrap, prefix):
    source = build_model("r3d_18", 5, width_mult=TINY)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    payload = state if wrap == "bare" else {wrap: state, "epoch": 3, "format": "videotrain-ckpt-1"}
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    target = build_model("r3d_18", 5, width_mult=TINY)
    assert not _same_params(source, target)
    report = load_weights(target, path)
    assert isinstance(report, LoadReport) and report.complete
    assert len(report.loaded) == len(source.state_dict())
    assert _same_params(source, target)


def test_load_weights_reports_shape_mismatch_and_strict(tmp_path):
    source = build_model("r3d_18", 400, width_mult=TINY)
    path = tmp_path / "k400.pth"
    torch.save(source.state_dict(), path)
    target = build_model("r3d_18", 101, width_mult=TINY)
    before = target.fc.weight.clone()
    with pytest.raises(CheckpointError, match="strictly.*fc.weight"):
        load_weights(target, path, strict=True)
    assert torch.equal(target.fc.weight, before)  # strict failure loads nothing
    report = load_weights(target, path)
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert "shape (400, 64) != model (101, 64)" in report.skipped["fc.weight"]
    assert report.missing == ["fc.weight", "fc.bias"]
    assert torch.equal(target.layer4[1].conv2[0].weight, source.layer4[1].conv2[0].weight)
    assert "skipped 2" in str(report)


def test_load_weights_other_architecture_reports(tmp_path):
    path = tmp_path / "mict.pth"
    torch.save({"model": build_model("mict_resnet18", 5, width_mult=TINY).state_dict()}, path)
    target = build_model("r2plus1d_18", 5, width_mult=TINY)
    report = load_weights(target, path)  # no exception
    assert report.skipped and report.missing
    assert "layer1_3d.conv.weight" in report.skipped
    assert set(report.loaded) | set(report.missing) == set(target.state_dict())


def test_plain_checkpoint_into_srtg_model(tmp_path):
    plain = build_model("r3d_18", 5, width_mult=TINY)
    srtg = build_model("srtg_r3d_18", 5, width_mult=TINY)
    report = load_weights(srtg, plain.state_dict())
    assert not report.skipped
    assert report.missing and all(".sr.lstm." in k for k in report.missing)


def test_half_precision_checkpoint_loads_into_float_model(tmp_path):
    source = build_model("fr2d_18", 5, width_mult=TINY)
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}, path)
    target = build_model("fr2d_18", 5, width_mult=TINY)
    assert load_weights(target, path).complete
    assert target.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(target.conv1.weight, source.conv1.weight, atol=1e-3, rtol=1e-3)


class _NotATensor:
    pass


@pytest.mark.parametrize("content,match", [
    (b"this is not a checkpoint", "cannot read checkpoint"),
    (b"", "cannot read checkpoint"),
    ("truncated", "cannot read checkpoint"),
    ("pickled_object", "cannot read checkpoint"),
    ("list", "expected a state_dict"),
    ("no_tensors", "no tensors found"),
])
def test_corrupt_or_foreign_files_raise_checkpoint_error(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    if content == "truncated":
        good = tmp_path / "good.pth"
        torch.save(build_model("fr2d_18", 5, width_mult=TINY).state_dict(), good)
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif content == "pickled_object":
        # weights_only=True refuses arbitrary objects: nothing from the file is executed
        with open(path, "wb") as f:
            pickle.dump({"model": _NotATensor()}, f, protocol=2)
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    elif content == "no_tensors":
        torch.save({"epoch": 3, "args": {"lr": 0.1}}, path)
    else:
        path.write_bytes(content)
    model = build_model("fr2d_18", 5, width_mult=TINY)
    with pytest.raises(CheckpointError, match=match) as info:
        load_weights(model, path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_file():
    with pytest.raises(CheckpointError, match="no such file"):
        load_weights(build_model("fr2d_18", 5, width_mult=TINY), "/nonexistent/weights.pth")


@pytest.fixture
def resnet2d_tiny(tmp_path):
    """A tiny 2D ResNet-18 state_dict with torchvision's names (fr2d_18's names are torchvision's)."""
    state = build_model("fr2d_18", 1000, width_mult=TINY).state_dict()
    path = tmp_path / "resnet18_tiny.pth"
    torch.save(state, path)
    return path, state


def test_inflate_into_r3d(resnet2d_tiny):
    path, w2d = resnet2d_tiny
    model = build_model("r3d_18", 10, width_mult=TINY)
    report = inflate_2d_resnet(model, path)
    # every 3D conv: repeated over time, divided by depth
    stem = model.stem[0].weight
    assert stem.shape[2] == 3
    for t in range(3):
        torch.testing.assert_close(stem[:, :, t], w2d["conv1.weight"] / 3)
    torch.testing.assert_close(model.layer2[0].conv1[0].weight.sum(2), w2d["layer2.0.conv1.weight"])
    torch.testing.assert_close(model.layer2[0].downsample[0].weight[:, :, 0], w2d["layer2.0.downsample.0.weight"])
    torch.testing.assert_close(model.layer3[1].conv2[1].running_var, w2d["layer3.1.bn2.running_var"])
    assert set(report.skipped) == {"fc.weight", "fc.bias"}  # 1000 ImageNet classes vs 10
    assert report.missing == ["fc.weight", "fc.bias"]


def test_inflated_stem_gives_2d_response_on_static_clip(resnet2d_tiny):
    path, w2d = resnet2d_tiny
    model = build_model("r3d_18", 10, width_mult=TINY)
    inflate_2d_resnet(model, path)
    frame = torch.randn(1, 3, 16, 16)
    clip = frame[:, :, None].expand(1, 3, 5, 16, 16)
    with torch.no_grad():
        out3d = model.stem[0](clip)[:, :, 2]  # an interior frame: no temporal padding involved
        out2d = F.conv2d(frame, w2d["conv1.weight"], stride=2, padding=3)
    torch.testing.assert_close(out3d, out2d, rtol=1e-4, atol=1e-5)


def test_inflate_into_mc3_and_r2plus1d(resnet2d_tiny):
    path, w2d = resnet2d_tiny
    mc3 = build_model("mc3_18", 10, width_mult=TINY)
    inflate_2d_resnet(mc3, path)
    torch.testing.assert_close(mc3.layer3[0].conv1[0].weight[:, :, 0], w2d["layer3.0.conv1.weight"])
    r21d = build_model("r2plus1d_18", 10, width_mult=TINY)
    report = inflate_2d_resnet(r21d, path)
    # factorised convs have no 2D counterpart: reported, not loaded; the 1x1 shortcuts do load
    assert "layer1.0.conv1.0.0.weight" in report.missing
    assert "stem.0.weight" in report.missing
    assert "layer2.0.downsample.0.weight" in report.loaded
    assert "layer1.0.conv1.weight" in report.skipped


def test_inflate_into_mict(resnet2d_tiny):
    path, w2d = resnet2d_tiny
    model = build_model("mict_resnet18", 101, width_mult=TINY, first_kernel_depth=5)
    report = inflate_2d_resnet(model, path)
    assert torch.equal(model.layer3[1].conv2.weight, w2d["layer3.1.conv2.weight"])  # 2D branch as is
    torch.testing.assert_close(model.stem3d.conv.weight[:, :, 4], w2d["conv1.weight"] / 5)
    torch.testing.assert_close(model.layer4_3d.conv.weight.sum(2), w2d["layer4.0.conv1.weight"])
    torch.testing.assert_close(model.layer4_3d.bn.running_mean, w2d["layer4.0.bn1.running_mean"])
    assert report.missing == ["fc.weight", "fc.bias"]


def test_torchvision_resnet18_file_into_full_size_mict_and_r2d(tmp_path):
    path = tmp_path / "resnet18.pth"
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), path)
    with torch.device("meta"):
        mict = build_model("mict_resnet18", 101)
    mict.to_empty(device="cpu")
    report = inflate_2d_resnet(mict, path)
    assert report.missing == ["fc.weight", "fc.bias"]
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert torch.equal(mict.layer1[0].conv1.weight, tv.layer1[0].conv1.weight)
    r2d = build_model("fr2d_18", 1000, width_mult=1.0)
    assert inflate_2d_resnet(r2d, path).complete
    assert load_weights(r2d, path, strict=True).complete


def test_inflate_unrelated_checkpoint_reports(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    report = inflate_2d_resnet(build_model("mict_resnet18", 5, width_mult=TINY), path)
    assert not report.loaded
    assert report.skipped == {"encoder.weight": "no counterpart in the model"}
