"""The SRTG ResNet family: reference parameter counts, the SRTG layout, temporal gates, bad input, and checkpoints
written by the SRTG and MiCT-Net-PyTorch code (names as those code bases write them) reproducing the logits of
an independent functional re-computation of the reference networks. Tiny widths keep the file in seconds."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import network.srtg as srtg_module
from network import CheckpointError, build_model, count_parameters, list_models, load_weights
from network.resnet3d import DEPTHS, DepthwiseConv3x3x3, VideoResNet, video_resnet
from network.srtg import SqueezeRecursion, cycle_consistent, set_temporal_gates, soft_nearest_neighbour

TINY = 0.125

# Exact counts at 400 classes from the reference table; the rest of the family to the reference's 0.01M.
EXACT = {
    "r3d_18": (33_371_472, 44_543_312), "r3d_34": (63_681_104, 83_861_072), "r3d_50": (36_724_688, 56_904_656),
    "r3d_101": (69_060_048, 107_135_440), "r2plus1d_18": (31_505_325, 42_677_165),
    "r2plus1d_50": (34_863_287, 55_043_255), "r2plus1d_101": (67_218_231, 105_293_623),
    "wide_r3d50_2": (140_937_936, 161_117_904), "ir_csn_50": (2_874_896, 23_054_864),
    "ip_csn_50": (4_139_920, 24_319_888),
}
ROUNDED = {
    "r3d_152": (95.69, 148.51), "r3d_200": (103.31, 160.35), "r2plus1d_152": (93.87, 146.68),
    "r2plus1d_200": (101.49, 158.53), "ir_csn_101": (5.25, None), "ir_csn_152": (7.21, None),
    "ip_csn_101": (7.63, None), "ip_csn_152": (10.52, None),
}
NEW_NAMES = [f"{f}_{d}" for f in ("r3d", "r2plus1d") for d in (50, 101, 152, 200)] + ["wide_r3d50_2"] + [
    f"{f}_{d}" for f in ("ir_csn", "ip_csn") for d in (50, 101, 152)]


@pytest.fixture(autouse=True)
def _seeded_one_thread(one_thread):
    torch.manual_seed(0)


def _meta_count(name: str, **kw) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(name, 400, **kw))


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_reference_parameter_counts(name):
    plain, srtg = EXACT[name]
    assert _meta_count(name, layout="srtg") == plain
    assert _meta_count(f"srtg_{name}", layout="srtg") == srtg
    # the stem pool has no parameters: both layouts count the same
    assert _meta_count(f"srtg_{name}", layout="torchvision") == srtg


@pytest.mark.parametrize("name", sorted(ROUNDED))
def test_rounded_reference_parameter_counts(name):
    plain, srtg = ROUNDED[name]
    assert round(_meta_count(name) / 1e6, 2) == plain
    if srtg is not None:
        assert round(_meta_count(f"srtg_{name}") / 1e6, 2) == srtg


def test_every_family_name_and_its_twin_is_registered_with_its_default_layout():
    names = set(list_models())
    for name in NEW_NAMES:
        assert {name, f"srtg_{name}"} <= names
        assert build_model(f"srtg_{name}", 3, width_mult=TINY).layout == "srtg"
    for name in ("r3d_18", "r3d_34", "r2plus1d_18", "r2plus1d_34", "srtg_r3d_18", "mc3_18"):
        assert build_model(name, 3, width_mult=TINY).layout == "torchvision"


def test_srtg_layout_shapes_pool_and_sr_placement():
    model = build_model("srtg_r3d_50", 5, width_mult=TINY).eval()
    assert isinstance(model.pool, torch.nn.MaxPool3d) and model.num_features == 64
    shapes = {}
    for name in ("pool", "layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape[2:]))
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 112, 112))
    assert [tuple(shapes[k]) for k in ("pool", "layer1", "layer2", "layer3", "layer4")] == [
        (8, 28, 28), (8, 28, 28), (4, 14, 14), (2, 7, 7), (1, 4, 4)]
    block = model.layer2[1]
    assert block.sr.mode == "raw" and block.sr_after_relu
    assert build_model("srtg_r3d_18", 5, width_mult=TINY).layer1[0].sr.mode == "sigmoid"


def test_reference_bottleneck_has_expansion_one_and_depths_from_the_table():
    model = build_model("r3d_101", 5, width_mult=TINY)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == list(DEPTHS[101][1])
    block = model.layer3[0]
    assert block.conv1[0].in_channels == 16 and block.conv3[0].out_channels == 32  # in, planes: no x4
    wide = build_model("wide_r3d50_2", 5, width_mult=TINY).layer1[0]
    assert wide.conv2[0].out_channels == 2 * wide.conv3[0].out_channels
    assert isinstance(build_model("ir_csn_50", 5, width_mult=TINY).layer1[0].conv2[0], DepthwiseConv3x3x3)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown layout 'caffe2'"):
        build_model("r3d_50", 5, layout="caffe2")
    with pytest.raises(ValueError, match="mc3_18 has no layout 'srtg'"):
        build_model("mc3_18", 5, layout="srtg")
    with pytest.raises(ValueError, match="unknown model 'r3d_77'"):
        build_model("r3d_77", 5)
    with pytest.raises(ValueError, match="ir_csn has no depth 18; valid depths: 50, 101, 152"):
        video_resnet("ir_csn", 18)
    with pytest.raises(ValueError, match="does not take temporal_gates"):
        build_model("r3d_50", 5, temporal_gates=True)
    with pytest.raises(ValueError, match="temporal_gates need Squeeze-and-Recursion"):
        video_resnet("r3d", 50, temporal_gates=True)
    with pytest.raises(ValueError, match="no Squeeze-and-Recursion block"):
        set_temporal_gates(build_model("r3d_18", 5, width_mult=TINY), True)
    model = build_model("r3d_50", 5, width_mult=TINY)
    with pytest.raises(ValueError, match="needs at least 2 frames, got 1.*stem max-pool halves time"):
        model(torch.randn(1, 3, 1, 32, 32))
    assert build_model("r3d_50", 5, width_mult=TINY, layout="torchvision")(torch.randn(1, 3, 1, 32, 32)).shape == (
        1, 5)


# ------------------------------------------------------------------------------------------ temporal gates
def _separated_sequence(n: int = 3, t: int = 6, c: int = 8) -> torch.Tensor:
    """Frames far apart from each other (scaled one-hot + noise): nearest neighbours are unambiguous."""
    return 4 * torch.eye(c)[:t].expand(n, t, c) + 0.05 * torch.randn(n, t, c)


def test_identical_sequences_are_cycle_consistent_and_shuffled_ones_are_not():
    u = _separated_sequence()
    assert cycle_consistent(u, u.clone()).all()
    shuffled = u[:, torch.tensor([1, 0, 2, 3, 5, 4])]
    assert not cycle_consistent(u, shuffled).any()
    mixed = torch.stack([u[0], shuffled[1], u[2]])
    assert cycle_consistent(u, mixed).tolist() == [True, False, True]
    # one wrong frame is enough: a different frame in the middle does not cycle back
    broken = u.clone()
    broken[:, 2] = broken[:, 3]
    assert not cycle_consistent(u, broken).any()


def test_soft_nearest_neighbour_is_differentiable_and_near_hard_for_separated_frames():
    u = _separated_sequence().requires_grad_()
    v = _separated_sequence().requires_grad_()
    soft = soft_nearest_neighbour(u, v)
    torch.testing.assert_close(soft, v, atol=1e-3, rtol=0)
    soft.pow(2).sum().backward()
    assert torch.isfinite(u.grad).all() and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_gradients_reach_the_lstm_from_consistent_samples_only(monkeypatch):
    sr = SqueezeRecursion(6, mode="raw", temporal_gates=True)
    x = torch.rand(2, 6, 5, 3, 3) + 0.1
    # fix the decision (sample 0 consistent, sample 1 not): what is under test here is the routing
    monkeypatch.setattr(srtg_module, "cycle_consistent", lambda u, v: torch.tensor([True, False]))
    out = sr(x)
    assert torch.equal(out[1], x[1])  # passed through
    out[1].sum().backward(retain_graph=True)
    assert all(p.grad is None or not p.grad.any() for p in sr.lstm.parameters())
    out[0].sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in sr.lstm.parameters())


def test_gates_decide_per_sample_from_features_and_states():
    sr = SqueezeRecursion(6, mode="raw", temporal_gates=True).eval()
    x = torch.rand(3, 6, 4, 2, 2)
    with torch.no_grad():
        squeezed = x.mean(dim=(3, 4)).transpose(1, 2)
        hidden, _ = sr.lstm(squeezed)
        keep = cycle_consistent(squeezed, hidden)
        out = sr(x)
        sr.temporal_gates = False
        full = sr(x)
    for n in range(3):
        torch.testing.assert_close(out[n], full[n] if keep[n] else x[n], rtol=0, atol=0)


def test_gates_off_is_plain_sr_bit_for_bit(monkeypatch):
    plain = build_model("srtg_r3d_50", 5, width_mult=TINY).eval()
    gated = build_model("srtg_r3d_50", 5, width_mult=TINY, temporal_gates=True).eval()
    gated.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        ref = plain(x)
        assert set_temporal_gates(gated, False) == 16
        assert torch.equal(gated(x), ref)
        # gates on and every sample consistent: also the plain SR, bit for bit
        monkeypatch.setattr(srtg_module, "cycle_consistent", lambda u, v: torch.ones(u.shape[0], dtype=torch.bool))
        set_temporal_gates(gated, True)
        assert torch.equal(gated(x), ref)


# ------------------------------------------------------------------------------ reference checkpoints
def _randomise_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d | torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _srtg_reference_state(model: VideoResNet) -> dict[str, torch.Tensor]:
    """The model's tensors under the names the SRTG code gives them (DataParallel prefix included)."""
    wrapped = {f"{name}.weight" for name, m in model.named_modules()
               if type(m).__name__ in ("Conv3x3x3", "DepthwiseConv3x3x3")}
    out = {}
    for key, value in model.state_dict().items():
        ref = key[: -len(".weight")] + ".0.weight" if key in wrapped else key
        out["module." + ref.replace(".sr.", ".sar.")] = value.clone()
    return out


def _bn(sd, p, x):
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        False, 0.0, 1e-5)


def _ref_conv(sd, p, x, kind, stride):
    """The middle conv of a reference block, from its reference-named tensors."""
    if kind == "r3d":
        return F.conv3d(x, sd[f"{p}.0.weight"], stride=stride, padding=1)
    if kind == "r2plus1d":
        y = F.relu(_bn(sd, f"{p}.1", F.conv3d(x, sd[f"{p}.0.weight"], stride=(1, stride, stride), padding=(0, 1, 1))))
        return F.conv3d(y, sd[f"{p}.3.weight"], stride=(stride, 1, 1), padding=(1, 0, 0))
    if kind == "ir_csn":
        w = sd[f"{p}.0.weight"]
        return F.conv3d(x, w, stride=stride, padding=1, groups=w.shape[0])
    y = F.relu(_bn(sd, f"{p}.1", F.conv3d(x, sd[f"{p}.0.weight"])))  # ip_csn
    w = sd[f"{p}.3.0.weight"]
    return F.conv3d(y, w, stride=stride, padding=1, groups=w.shape[0])


def _ref_sr(sd, p, x):
    """The reference SR: frame-wise avg-pool, time-first 2-layer LSTM, raw product."""
    c = x.shape[1]
    lstm = torch.nn.LSTM(c, c, num_layers=2)
    lstm.load_state_dict({k[len(p) + 6:]: v for k, v in sd.items() if k.startswith(f"{p}.lstm.")})
    pooled = F.avg_pool3d(x, kernel_size=(1, x.shape[3], x.shape[4]), stride=1).flatten(2)  # (N, C, T)
    h, _ = lstm(pooled.permute(2, 0, 1))
    return x * h.permute(1, 2, 0)[..., None, None]


def _reference_srtg_logits(sd: dict[str, torch.Tensor], kind: str, x: torch.Tensor) -> torch.Tensor:
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if kind == "r2plus1d":
        y = F.relu(_bn(sd, "stem.1", F.conv3d(x, sd["stem.0.weight"], stride=(1, 2, 2), padding=(0, 3, 3))))
        y = F.relu(_bn(sd, "stem.4", F.conv3d(y, sd["stem.3.weight"], padding=(1, 0, 0))))
    else:
        y = F.relu(_bn(sd, "stem.1", F.conv3d(x, sd["stem.0.weight"], stride=(1, 2, 2), padding=(1, 3, 3))))
    y = F.max_pool3d(y, 3, 2, 1)
    for i in range(1, 5):
        j = 0
        while f"layer{i}.{j}.conv1.1.weight" in sd:
            p = f"layer{i}.{j}"
            stride = 2 if i > 1 and j == 0 else 1
            if f"{p}.conv3.0.weight" in sd:
                out = F.relu(_bn(sd, f"{p}.conv1.1", F.conv3d(y, sd[f"{p}.conv1.0.weight"])))
                out = F.relu(_bn(sd, f"{p}.conv2.1", _ref_conv(sd, f"{p}.conv2.0", out, kind, stride)))
                out = _bn(sd, f"{p}.conv3.1", F.conv3d(out, sd[f"{p}.conv3.0.weight"]))
            else:
                out = F.relu(_bn(sd, f"{p}.conv1.1", _ref_conv(sd, f"{p}.conv1.0", y, kind, stride)))
                out = _bn(sd, f"{p}.conv2.1", _ref_conv(sd, f"{p}.conv2.0", out, kind, 1))
            identity = y
            if f"{p}.downsample.0.weight" in sd:
                identity = _bn(sd, f"{p}.downsample.1", F.conv3d(y, sd[f"{p}.downsample.0.weight"], stride=stride))
            y = F.relu(out + identity)
            if f"{p}.sar.lstm.weight_ih_l0" in sd:
                y = _ref_sr(sd, f"{p}.sar", y)
            j += 1
    return F.linear(y.mean(dim=(2, 3, 4)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("name,kind", [("srtg_r3d_18", "r3d"), ("srtg_r2plus1d_50", "r2plus1d"),
                                       ("srtg_ip_csn_50", "ip_csn"), ("ir_csn_50", "ir_csn"), ("r3d_101", "r3d")])
def test_srtg_checkpoint_loads_strictly_and_gives_the_reference_logits(tmp_path, name, kind):
    source = build_model(name, 5, width_mult=TINY, layout="srtg")
    _randomise_bn(source)
    ref_state = _srtg_reference_state(source)
    assert any(".0.0.weight" in k for k in ref_state) or kind == "r2plus1d"
    path = tmp_path / "srtg.pth"
    torch.save({"epoch": 40, "state_dict": ref_state, "optimizer": {"state": {}, "param_groups": []}}, path)
    model = build_model(name, 5, width_mult=TINY, layout="srtg").eval()
    report = load_weights(model, path, strict=True)
    assert report.complete
    x = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_srtg_logits(ref_state, kind, x), rtol=1e-4, atol=1e-5)


def test_srtg_checkpoint_of_another_depth_or_layout_is_refused(tmp_path):
    path = tmp_path / "srtg50.pth"
    state = _srtg_reference_state(build_model("srtg_r3d_50", 5, width_mult=TINY))
    torch.save({"epoch": 1, "state_dict": state, "optimizer": {}}, path)
    with pytest.raises(CheckpointError, match=r"bottleneck blocks \[3, 4, 6, 3\] does not fit srtg_r3d_101 "
                                              r"\(bottleneck blocks \[3, 4, 23, 3\]\)"):
        load_weights(build_model("srtg_r3d_101", 5, width_mult=TINY), path, strict=True)
    with pytest.raises(CheckpointError, match="basic blocks"):
        load_weights(build_model("srtg_r3d_34", 5, width_mult=TINY, layout="srtg"), path)
    with pytest.raises(CheckpointError, match="layout='srtg'"):
        load_weights(build_model("srtg_r3d_50", 5, width_mult=TINY, layout="torchvision"), path, strict=True)


def test_foreign_layout_still_loads_by_name_and_shape_with_a_report(tmp_path):
    model = build_model("r3d_50", 5, width_mult=TINY)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4.")}
    state["head.weight"] = torch.zeros(3)
    report = load_weights(build_model("r3d_50", 5, width_mult=TINY), state)
    assert report.skipped == {"head.weight": "not in model"}
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)


def _mict_reference_state(model) -> dict[str, torch.Tensor]:
    """MiCT-ResNet tensors under MiCT-Net-PyTorch's names."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("stem3d."):
            key = key.replace("stem3d.conv.", "conv2.").replace("stem3d.bn.", "bn2.")
        elif "_3d." in key:
            key = key.replace("_3d.", ".")
        elif key.startswith("layer"):
            stage, rest = key.split(".", 1)
            key = f"{stage}.bottlenecks.{rest}"
        out[key] = value.clone()
    return out


def _bn2d(sd, p, x):
    return _bn(sd, p, x)


def _ref_block2d(sd, p, x, stride):
    out = F.relu(_bn2d(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1)))
    out = _bn2d(sd, f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1))
    if f"{p}.downsample.0.weight" in sd:
        x = _bn2d(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride))
    return F.relu(out + x)


def _to4d(x, step=1):
    x = x[:, :, ::step]
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w), t


def _to5d(x, t):
    return x.reshape(-1, t, *x.shape[1:]).transpose(1, 2)


def _reference_mict_logits(sd, x, t_strides=(1, 2, 2, 2)):
    """MiCT-Net-PyTorch's forward, re-computed from its tensor names (eval mode)."""
    y3 = F.pad(x, (3, 3, 3, 3, 0, 6))
    y3 = F.max_pool3d(F.relu(_bn(sd, "bn2", F.conv3d(y3, sd["conv2.weight"], stride=(1, 2, 2)))), 3, 2, 1)
    f, t = _to4d(x, 2)
    y2 = F.max_pool2d(F.relu(_bn2d(sd, "bn1", F.conv2d(f, sd["conv1.weight"], stride=2, padding=3))), 3, 2, 1)
    y = y3 + _to5d(y2, t)
    for i, ts in enumerate(t_strides, start=1):
        s = 1 if i == 1 else 2
        y3 = F.relu(_bn(sd, f"layer{i}.bn", F.conv3d(F.pad(y, (1, 1, 1, 1, 0, 2)), sd[f"layer{i}.conv.weight"],
                                                      stride=(ts, s, s))))
        f, t = _to4d(y, ts)
        y = y3 + _to5d(_ref_block2d(sd, f"layer{i}.bottlenecks.0", f, s), t)
        j = 1
        while f"layer{i}.bottlenecks.{j}.conv1.weight" in sd:
            f, t = _to4d(y)
            y = _to5d(_ref_block2d(sd, f"layer{i}.bottlenecks.{j}", f, 1), t)
            j += 1
    per_frame = F.linear(y.mean(dim=(3, 4)).transpose(1, 2), sd["fc.weight"], sd["fc.bias"])  # (N, T, K)
    return per_frame.mean(dim=1)


def test_mict_net_pytorch_checkpoint_loads_strictly_and_gives_the_reference_logits(tmp_path):
    source = build_model("mict_resnet18", 5, width_mult=TINY)
    _randomise_bn(source)
    ref_state = _mict_reference_state(source)
    assert "layer1.bottlenecks.0.conv1.weight" in ref_state and "layer2.conv.weight" in ref_state
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 60, "state_dict": ref_state, "optimizer": {}, "best_pred": 0.69}, path)
    model = build_model("mict_resnet18", 5, width_mult=TINY).eval()
    assert load_weights(model, path, strict=True).complete
    x = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_mict_logits(ref_state, x), rtol=1e-4, atol=1e-5)
    with pytest.raises(CheckpointError, match=r"MiCT-ResNet with blocks \[2, 2, 2, 2\] does not fit mict_resnet34"):
        load_weights(build_model("mict_resnet34", 5, width_mult=TINY), path, strict=True)


def test_srtg_layout_bottleneck_and_gated_sr_export_to_onnx(tmp_path):
    from tools import export_onnx

    model = build_model("ir_csn_50", 4, width_mult=TINY).eval()
    res = export_onnx.export_and_check(model, tmp_path / "csn.onnx", (3, 8, 32, 32))
    assert res.rel_error <= 1e-4
    sr = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), SqueezeRecursion(8, mode="raw", temporal_gates=True),
                             torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    res = export_onnx.export_and_check(sr, tmp_path / "gated.onnx", (3, 8, 16, 16))
    assert res.rel_error <= 1e-4


def test_gated_block_records_its_last_decision():
    sr = SqueezeRecursion(6, mode="raw", temporal_gates=True).eval()
    assert sr.last_consistent is None
    with torch.no_grad():
        sr(torch.rand(3, 6, 4, 2, 2))
    assert sr.last_consistent.shape == (3,) and sr.last_consistent.dtype == torch.bool
