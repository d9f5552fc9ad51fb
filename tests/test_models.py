"""Model zoo: registry, every model's forward/backward, parameter counts, torchvision equivalence, MiCT details,
SRTG blocks, bad input. Tiny widths and clips keep the whole file in seconds on a busy CPU."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models import video as tv_video

import network
from network import SqueezeRecursion, build_model, count_parameters, list_models
from network.mict import MiCTResNet
from network.mtnet import VARIANTS as MTNET_VARIANTS
from network.mtnet import MTNet

TINY = 0.125  # width_mult for tests: 8/16/32/64 channels


@pytest.fixture(autouse=True)
def _seeded_one_thread(one_thread):
    torch.manual_seed(0)


def _meta_model(name: str, num_classes: int, **kw) -> torch.nn.Module:
    """Full-size model on the meta device: parameter shapes without allocating or initialising anything."""
    with torch.device("meta"):
        return build_model(name, num_classes, **kw)


def _clip(model: torch.nn.Module, n: int = 2, size: int = 32) -> torch.Tensor:
    # every stage keeps >= 2 time steps, so the SR LSTMs' recurrent weights get gradients too: 16 frames, 32 in
    # the SRTG layout (its stem pool halves time); MTNet halves time in its stem and again on its long path: 64
    if isinstance(model, MTNet):
        frames = 64
    else:
        frames = 32 if getattr(model, "layout", None) == "srtg" else 16
    return torch.randn(n, 3, max(model.min_frames, frames), size, size)


EXPECTED = {
    "r3d_18", "r3d_34", "mc3_18", "r2plus1d_18", "r2plus1d_34", "r2d_18", "fr2d_18", "mict_resnet18", "mict_resnet34",
    "srtg_r3d_18", "srtg_r3d_34", "srtg_r2plus1d_18", "srtg_r2plus1d_34", *MTNET_VARIANTS,
}


def test_registry_lists_every_model():
    assert EXPECTED <= set(list_models())
    assert list_models() == sorted(list_models())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'r3d_19'") as info:
        build_model("r3d_19", 10)
    for name in EXPECTED:
        assert name in str(info.value)


def test_unknown_kwarg_and_bad_num_classes():
    with pytest.raises(ValueError, match="does not take version.*width_mult"):
        build_model("r3d_18", 10, version="v2")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("r3d_18", -1)
    with pytest.raises(ValueError, match="dropout"):
        build_model("r3d_18", 10, dropout=1.5)
    with pytest.raises(ValueError, match="version"):
        build_model("mict_resnet18", 10, version="v3")


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_tiny(name):
    model = build_model(name, 7, width_mult=TINY, dropout=0.2)
    assert model.model_name == name
    x = _clip(model)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    no_grad = [k for k, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"

    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        model.reset_classifier(3)
        assert model(x).shape == (2, 3) and model.num_classes == 3
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), feats)


@pytest.mark.parametrize("name,num_classes,expected", [
    ("r3d_18", 400, 33_371_472),
    ("mc3_18", 400, 11_695_440),
    ("r2plus1d_18", 400, 31_505_325),
    ("srtg_r3d_18", 400, 44_543_312),  # SRTG reference table: 44.54M
    ("fr2d_18", 400, 11_381_712),  # paper: 11.4M
])
def test_exact_parameter_counts(name, num_classes, expected):
    assert count_parameters(_meta_model(name, num_classes)) == expected


@pytest.mark.parametrize("name,kw,millions", [
    ("mict_resnet18", {}, 16.05),
    ("mict_resnet18", {"first_kernel_depth": 3}, 16.01),
    ("mict_resnet18", {"first_kernel_depth": 5}, 16.03),
    ("mict_resnet18", {"version": "v2"}, 16.05),
    ("mict_resnet34", {}, 26.16),
    ("r3d_34", {}, 63.68),  # SRTG reference table (same layout, its MaxPool has no parameters)
])
def test_reference_parameter_counts(name, kw, millions):
    num_classes = 101 if name.startswith("mict") else 400
    assert round(count_parameters(_meta_model(name, num_classes, **kw)) / 1e6, 2) == millions


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_torchvision_equivalence(name):
    reference = getattr(tv_video, name)(num_classes=400)
    ref_state = reference.state_dict()
    ours = _meta_model(name, 400)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref_state.items()}
    ours.load_state_dict(ref_state, strict=True, assign=True)
    x = torch.randn(2, 3, 4, 32, 32)
    for train in (False, True):
        reference.train(train)
        ours.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-6)


def test_fr2d_is_torchvision_resnet18_per_frame_and_order_invariant():
    reference = torchvision.models.resnet18().eval()
    model = _meta_model("fr2d_18", 1000)
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    model.eval()
    frames = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        clip = frames.transpose(0, 1)[None]  # (1, 3, T=3, H, W)
        expected = reference(frames).mean(0, keepdim=True)  # linear head: mean of logits = logits of mean
        torch.testing.assert_close(model(clip), expected, rtol=1e-4, atol=1e-5)
        shuffled = clip[:, :, torch.tensor([2, 0, 1])]
        torch.testing.assert_close(model(shuffled), model(clip), rtol=1e-5, atol=1e-6)


def test_mict_min_frames_and_strides():
    v1 = build_model("mict_resnet18", 5, width_mult=TINY).eval()
    v2 = build_model("mict_resnet18", 5, width_mult=TINY, version="v2").eval()
    assert (v1.min_frames, v2.min_frames) == (16, 4)
    with pytest.raises(ValueError, match=r"at least 16 frames, got 8.*--model-arg version=v2"):
        v1(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="at least 4 frames, got 3"):
        v2(torch.randn(1, 3, 3, 32, 32))
    with torch.no_grad():
        for t in (4, 5, 8, 11):  # odd lengths too: both branches give ceil(T / stride) frames
            assert v2(torch.randn(1, 3, t, 32, 32)).shape == (1, 5)
        assert v1(torch.randn(1, 3, 17, 32, 32)).shape == (1, 5)
        # stem: (N*ceil(T/2), C, H/4, W/4) with the 2D and 3D branches merged
        assert v1.forward_stem(torch.randn(2, 3, 16, 32, 32)).shape == (2 * 8, 8, 8, 8)


@pytest.mark.parametrize("depth", [3, 5, 7])
def test_mict_3d_stem_pads_time_only_at_the_end(depth):
    """Output frame t of a 3D conv depends on input frames t..t+k-1 only, so it lines up with 2D frame t."""
    model = build_model("mict_resnet18", 5, width_mult=TINY, first_kernel_depth=depth).eval()
    x = torch.randn(1, 3, 16, 16, 16)
    j = 9
    bumped = x.clone()
    bumped[:, :, j] += 1.0
    with torch.no_grad():
        changed = (model.stem3d(bumped) - model.stem3d(x)).abs().amax(dim=(0, 1, 3, 4)) > 0
    assert changed.nonzero().flatten().tolist() == list(range(j - depth + 1, j + 1))
    assert model.stem3d.conv.weight.shape[2] == depth


def test_bad_inputs():
    model = build_model("r3d_18", 5, width_mult=TINY)
    with pytest.raises(ValueError, match=r"5-D batch .*got shape \(3, 8, 32, 32\)"):
        model(torch.randn(3, 8, 32, 32))
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.randn(1, 1, 8, 32, 32))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 3, 8, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="5-D"):
        build_model("fr2d_18", 5, width_mult=TINY).forward_features(torch.randn(1, 3, 32, 32))


def test_any_clip_length_for_video_resnets():
    for name in ("r3d_18", "mc3_18", "r2plus1d_18", "fr2d_18"):
        model = build_model(name, 4, width_mult=TINY).eval()
        assert model.min_frames == 1
        with torch.no_grad():
            for t in (1, 3):
                assert model(torch.randn(1, 3, t, 32, 32)).shape == (1, 4)


@pytest.mark.parametrize("name", ["srtg_r3d_18", "srtg_r3d_34", "srtg_r2plus1d_18", "srtg_r2plus1d_34"])
def test_srtg_models_really_have_squeeze_recursion(name):
    model = build_model(name, 4, width_mult=TINY)
    plain = build_model(name.removeprefix("srtg_"), 4, width_mult=TINY)
    blocks = [m for m in model.modules() if hasattr(m, "conv1") and hasattr(m, "sr")]
    assert blocks and all(isinstance(b.sr, SqueezeRecursion) for b in blocks)
    assert not any(isinstance(m, SqueezeRecursion) for m in plain.modules())
    lstm_params = {k for k in model.state_dict() if ".sr.lstm." in k}
    # the SR tensors are the only additions: a plain checkpoint covers everything else
    assert set(model.state_dict()) - lstm_params == set(plain.state_dict())
    model(torch.randn(2, 3, 16, 32, 32)).sum().backward()
    for block in blocks:
        grads = [p.grad for p in block.sr.parameters()]
        assert all(g is not None and torch.any(g != 0) for g in grads)


def test_squeeze_recursion_gates_per_frame_and_channel():
    sr = SqueezeRecursion(6).eval()
    x = torch.rand(2, 6, 5, 4, 4) + 0.1
    with torch.no_grad():
        y = sr(x)
    ratio = y / x
    assert ((ratio > 0) & (ratio < 1)).all()  # sigmoid gate
    # one weight per (sample, channel, frame), constant over space
    torch.testing.assert_close(ratio, ratio[..., :1, :1].expand_as(ratio))
    # recursion: the gate of frame t depends on earlier frames, not later ones
    later = x.clone()
    later[:, :, 3:] *= 3
    with torch.no_grad():
        torch.testing.assert_close(sr(later)[:, :, :3], y[:, :, :3])
        assert not torch.allclose(sr(later)[:, :, 3:] / later[:, :, 3:], ratio[:, :, 3:])


def test_public_api_exports():
    for name in ("build_model", "list_models", "register_model", "load_weights", "inflate_2d_resnet",
                 "CheckpointError", "LoadReport"):
        assert hasattr(network, name)
    assert isinstance(build_model("mict_resnet18", 3, width_mult=TINY), MiCTResNet)


def test_channels_last_layout_gives_same_outputs():
    from network import to_channels_last

    for name in ("mict_resnet18", "fr2d_18", "r3d_18"):
        model = build_model(name, 4, width_mult=TINY).eval()
        x = torch.randn(2, 3, 16, 32, 32)
        with torch.no_grad():
            expected = model(x)
            to_channels_last(model)
            torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last_3d)), expected,
                                       rtol=1e-4, atol=1e-5)
