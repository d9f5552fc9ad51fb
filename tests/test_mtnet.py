"""MTNet: reference parameter counts and names, cosine pooling, SoftPool, an MTConv against a hand computation,
strict loading of reference-format checkpoints, bad input, ONNX export of its parts. Tiny widths and clips."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from network import build_model, count_parameters, list_models, load_weights
from network.mtconv import GRUSqueezeRecursion, MTConv, soft_pool, temporal_cosine_pool
from network.mtnet import VARIANTS, MTBlock, MTStem

TINY = 0.125


@pytest.fixture(autouse=True)
def _seeded_one_thread(one_thread):
    torch.manual_seed(0)


def _meta(name: str, num_classes: int = 400, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return build_model(name, num_classes, **kw)


@pytest.mark.parametrize("name,expected", [
    ("mtnet_xs", 21_835_664), ("mtnet_s", 39_981_968), ("mtnet_m", 44_038_288), ("mtnet_l", 88_132_752),
    ("mtnet_s_g8", 12_204_988),
])
def test_exact_reference_parameter_counts(name, expected):
    assert count_parameters(_meta(name)) == expected


@pytest.mark.parametrize("name,millions", [
    ("mtnet_xl", 124.45), ("mtnet_xxl", 134.85), ("mtnet_xs_g8", 7.43), ("mtnet_m_g8", 13.27), ("mtnet_l_g8", 24.88),
])
def test_rounded_reference_parameter_counts(name, millions):
    assert round(count_parameters(_meta(name)) / 1e6, 2) == millions


def test_every_name_builds_its_own_depth():
    # the reference routes mtnet_xs to MTNet-S and mtnet_xl to MTNet-L
    assert set(VARIANTS) <= set(list_models())
    for name, (layers, _) in VARIANTS.items():
        model = _meta(name)
        assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == list(layers)
    assert count_parameters(_meta("mtnet_xs")) < count_parameters(_meta("mtnet_s"))
    assert count_parameters(_meta("mtnet_l")) < count_parameters(_meta("mtnet_xl"))


def _reference_keys(layers, groups: int = 1) -> set[str]:
    """State_dict names of the reference MTNet, written out from its module tree."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    gn = ("weight", "bias")
    gru = [f"{w}_{k}_l{i}" for i in range(2) for w in ("weight", "bias") for k in ("ih", "hh")]

    def conv(prefix: str, lateral: bool, grouped: bool) -> list[str]:
        keys = [f"{prefix}.conv_short.weight", f"{prefix}.conv_long.weight"]
        keys += [f"{prefix}.conv_short2long.weight"] if lateral else []
        keys += [f"{prefix}.norm_{p}.{k}" for p in ("short", "long") for k in (gn if grouped else bn)]
        return keys

    keys = ["stem.0.weight", *(f"stem.1.{k}" for k in bn), "fc.weight", "fc.bias"]
    for i, n in enumerate(layers, 1):
        for j in range(n):
            p = f"layer{i}.{j}"
            keys += conv(f"{p}.conv1_1", True, False) + conv(f"{p}.conv1_2", True, False)
            keys += conv(f"{p}.conv2", True, groups > 1) + conv(f"{p}.conv3", True, groups > 1)
            if j == 0 and i > 1:
                keys += conv(f"{p}.downsample", False, False)
            keys += [f"{p}.sr_{path}.op.{k}" for path in ("short", "long") for k in gru]
    return set(keys)


@pytest.mark.parametrize("name", ["mtnet_xs", "mtnet_s_g8"])
def test_state_dict_names_are_the_reference_names(name):
    layers, groups = VARIANTS[name]
    assert set(_meta(name).state_dict()) == _reference_keys(layers, groups)


def test_reference_format_checkpoint_loads_strictly_and_gives_its_logits(tmp_path):
    source = build_model("mtnet_xs", 6, width_mult=TINY).eval()
    for m in source.modules():  # non-trivial running statistics, so that a missed buffer would show
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "mtnet_xs_ep-0080.pth"
    torch.save({"epoch": 80, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": []}}, path)
    target = build_model("mtnet_xs", 6, width_mult=TINY).eval()
    report = load_weights(target, path, strict=True)
    assert report.complete
    x = torch.randn(2, 3, 8, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def _frames_with_similarities(steps: list[float], c: int = 3, hw: int = 4) -> torch.Tensor:
    """(C, T, H, W): frame t's spatial mean points at angle sum(steps[:t]) in a plane, plus zero-mean texture."""
    angles = torch.tensor([0.0, *steps]).cumsum(0)
    g = torch.zeros(c, len(angles))
    g[0], g[1] = angles.cos(), angles.sin()
    texture = torch.randn(c, len(angles), hw, hw)
    texture -= texture.mean(dim=(2, 3), keepdim=True)
    return g[..., None, None] + texture


def test_cosine_pool_keeps_centres_of_most_similar_triplets_in_time_order():
    steps_a = [0.1, 0.5, 0.2, 1.2, 0.05, 0.9, 0.3]  # 8 frames, all scores distinct
    steps_b = steps_a[::-1]
    x = torch.stack([_frames_with_similarities(steps_a), _frames_with_similarities(steps_b)])
    out = temporal_cosine_pool(x)
    assert out.shape == (2, 3, 4, 4, 4)
    picked = []
    for n, steps in enumerate((steps_a, steps_b)):
        sim = [math.cos(s) ** 2 for s in steps]  # cos^2 between frames t and t+1
        score = {t: (sim[t - 1] + sim[t]) / 2 for t in range(1, len(steps))}  # triplet centred on frame t
        expected = sorted(sorted(score, key=score.get, reverse=True)[:4])
        torch.testing.assert_close(out[n], x[n][:, expected])
        picked.append(expected)
    # by hand for steps_a: triplet scores .880 .866 .546 .564 .692 .650 for frames 1..6 -> 1, 2, 5, 6; the
    # time-reversed clip keeps the mirrored frames 7 - t, which here are the same set
    assert picked == [[1, 2, 5, 6], [1, 2, 5, 6]]


def test_cosine_pool_three_frames_keeps_the_middle_and_two_frames_fail():
    x = torch.randn(2, 4, 3, 2, 2)
    torch.testing.assert_close(temporal_cosine_pool(x), x[:, :, 1:2])
    with pytest.raises(ValueError, match="at least 3 frames, got 2"):
        temporal_cosine_pool(x[:, :, :2])


def _soft_pool_direct(x: torch.Tensor) -> torch.Tensor:
    n, c, t, h, w = x.shape
    out = torch.empty(n, c, t, h // 2, w // 2, dtype=torch.float64)
    for idx in torch.cartesian_prod(*(torch.arange(s) for s in out.shape)).tolist():
        a, b, f, i, j = idx
        win = x[a, b, f, 2 * i:2 * i + 2, 2 * j:2 * j + 2].double().flatten()
        out[a, b, f, i, j] = sum(math.exp(v) * v for v in win.tolist()) / sum(math.exp(v) for v in win.tolist())
    return out


def test_soft_pool_matches_the_direct_formula():
    x = torch.randn(2, 3, 2, 5, 7)  # odd sizes: the trailing row and column are dropped, as by avg_pool
    torch.testing.assert_close(soft_pool(x, (1, 2, 2)).double(), _soft_pool_direct(x), rtol=1e-6, atol=1e-6)
    # between the window mean and its maximum
    y = soft_pool(x, (1, 2, 2))
    assert (y <= F.max_pool3d(x, (1, 2, 2)) + 1e-6).all() and (y >= F.avg_pool3d(x, (1, 2, 2)) - 1e-6).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_soft_pool_stays_finite_in_half_precision(dtype):
    x = torch.randn(1, 4, 2, 6, 6) * 200  # exp() of these overflows any half type without the max shift
    y = soft_pool(x.to(dtype), (1, 2, 2))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), soft_pool(x, (1, 2, 2)), rtol=1e-2, atol=0.5)
    x.requires_grad_(True)
    soft_pool(x.to(dtype), (1, 2, 2)).float().sum().backward()
    assert torch.isfinite(x.grad).all()


def _bn_eval(bn: torch.nn.BatchNorm3d, x: torch.Tensor) -> torch.Tensor:
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return (x - bn.running_mean[:, None, None, None]) * scale[:, None, None, None] + bn.bias[:, None, None, None]


def _randomise_norms(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("long_frames", [3, 4])  # 3: the lateral matches the long shape; 4: it is resized
def test_mtconv_equals_hand_computation(long_frames):
    conv = MTConv(16, 24, 3, padding=1).eval()  # short 14 -> 21 channels, long 2 -> 3
    _randomise_norms(conv)
    short, long = torch.randn(2, 14, 6, 8, 8), torch.randn(2, 2, long_frames, 4, 4)
    with torch.no_grad():
        got_short, got_long = conv((short, long))
        s = F.conv3d(short, conv.conv_short.weight, padding=1)
        lo = F.conv3d(long, conv.conv_long.weight, padding=1)
        lat = F.avg_pool3d(s, (1, 2, 2), (1, 2, 2))  # (2, 21, 6, 4, 4)
        g = lat.mean(dim=(3, 4))
        cos2 = (F.normalize(g[..., :-1], dim=1) * F.normalize(g[..., 1:], dim=1)).sum(1) ** 2
        score = (cos2[:, :-1] + cos2[:, 1:]) / 2  # (2, 4): frames 1..4
        picked = torch.stack([lat[n][:, sorted((score[n].argsort(descending=True)[:3] + 1).tolist())]
                              for n in range(2)])
        if long_frames != 3:
            picked = F.interpolate(picked, size=(long_frames, 4, 4), mode="trilinear")
        lat = F.conv3d(picked, conv.conv_short2long.weight)
    assert got_short.shape == (2, 21, 6, 8, 8) and got_long.shape == (2, 3, long_frames, 4, 4)
    torch.testing.assert_close(got_short, _bn_eval(conv.norm_short, s))
    torch.testing.assert_close(got_long, _bn_eval(conv.norm_long, lo) + _bn_eval(conv.norm_long, lat))


def test_mtconv_long_norm_is_shared_and_updated_twice_in_training():
    conv = MTConv(16, 16, 1).train()
    conv((torch.randn(2, 14, 6, 8, 8), torch.randn(2, 2, 3, 4, 4)))
    assert conv.norm_long.num_batches_tracked.item() == 2 and conv.norm_short.num_batches_tracked.item() == 1
    plain = MTConv(16, 16, 1, lateral=False)
    assert plain.conv_short2long is None and "conv_short2long.weight" not in plain.state_dict()


def test_gru_squeeze_recursion_multiplies_by_the_raw_gru_output():
    sr = GRUSqueezeRecursion(5)
    x = torch.randn(2, 5, 4, 3, 3)
    hidden, _ = sr.op(x.mean(dim=(3, 4)).permute(2, 0, 1))
    torch.testing.assert_close(sr(x), x * hidden.permute(1, 2, 0)[..., None, None])


def test_stem_replicate_pads_odd_sizes_then_pools():
    stem = MTStem(16).eval()
    x = torch.randn(2, 3, 6, 17, 24)  # stem conv output 9 x 12: padded (1, 0) on both axes to 10 x 13
    with torch.no_grad():
        short, long = stem(x)
        y = stem[2](stem[1](stem[0](x)))
        y = F.pad(y, (1, 0, 1, 0, 0, 0), mode="replicate")
        assert y.shape[3:] == (10, 13)
        y = temporal_cosine_pool(F.max_pool3d(y, (1, 3, 3), (1, 2, 2), (0, 1, 1)))
    torch.testing.assert_close(short, y[:, :14])
    assert short.shape == (2, 14, 3, 5, 7) and long.shape == (2, 2, 1, 2, 3)
    torch.testing.assert_close(long, temporal_cosine_pool(F.avg_pool3d(y[:, 14:], (1, 2, 2))))


def test_block_resizes_identity_and_downsamples():
    block = MTBlock(16, 32, stride=2, downsample=MTConv(16, 32, 1, stride=2, lateral=False)).eval()
    out_short, out_long = block((torch.randn(1, 14, 4, 8, 8), torch.randn(1, 2, 2, 2, 2)))  # long 2 px high
    assert out_short.shape == (1, 28, 2, 4, 4) and out_long.shape == (1, 4, 1, 1, 1)
    assert (out_short >= 0).all() and (out_long >= 0).all()


def test_too_short_clips_name_the_minimum_and_small_or_odd_frames_run():
    model = build_model("mtnet_xs", 3, width_mult=TINY).eval()
    assert model.min_frames == 3
    with pytest.raises(ValueError, match="mtnet_xs: needs at least 3 frames, got 2.*cosine pooling"):
        model(torch.randn(1, 3, 2, 32, 32))
    with torch.no_grad():
        for shape in [(1, 3, 3, 32, 32), (1, 3, 5, 17, 23), (1, 3, 8, 8, 8)]:
            assert torch.isfinite(model(torch.randn(*shape))).all()


def test_soft_lateral_pool_option():
    avg = build_model("mtnet_xs", 3, width_mult=TINY).eval()
    soft = build_model("mtnet_xs", 3, width_mult=TINY, lateral_pool="soft").eval()
    load_weights(soft, avg.state_dict(), strict=True)  # same tensors, only the computation differs
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(avg(x), soft(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.isfinite(soft(x)).all()
    with pytest.raises(ValueError, match="lateral_pool must be one of avg, soft"):
        build_model("mtnet_xs", 3, lateral_pool="max")


def test_mtnet_parts_export_to_onnx(tmp_path):
    """The stem's cosine pooling (top-k, sort, gather), an MTBlock with its GRUs and the lateral resize export; the
    whole nets take ~40 s of CPU each, so `python -m tools.export_onnx --all` covers those."""
    from tools import export_onnx

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = MTStem(16)
            self.block = MTBlock(16, 32, stride=2, downsample=MTConv(16, 32, 1, stride=2, lateral=False))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            short, long = self.block(self.stem(x))
            return torch.cat([short.mean(dim=(2, 3, 4)), long.mean(dim=(2, 3, 4))], dim=1)

    res = export_onnx.export_and_check(Tiny().eval(), tmp_path / "mt.onnx", (3, 8, 32, 32))
    assert res.rel_error <= 1e-4


def test_every_mtnet_name_extracts_features_and_predicts(tmp_path):
    import numpy as np

    from tests.test_predict import make_checkpoint, make_dataset
    from tools import extract_features, predict
    from train.inference import load_model

    root = make_dataset(tmp_path / "ds", {"v0": ("cycling", "val", 24, 1)})
    for name in VARIANTS:
        # below half width a grouped net's layer-3 long-path GroupNorm gets one channel of 1x1x1 at 32 px: a
        # single value, which GroupNorm refuses (the full-width nets have 4+ channels there)
        width = 0.5 if name.endswith("_g8") else TINY
        ckpt = make_checkpoint(tmp_path / f"{name}.pth", network=name, clip_length=8, crop_size=32,
                               width_mult=width)
        out = tmp_path / f"{name}.npz"
        assert extract_features.main(["--checkpoint", str(ckpt), "--dataset", str(root), "--split", "val",
                                      "--out", str(out), "--workers", "0", "--device", "cpu"]) == 0
        features = np.load(out)["features"]
        assert features.shape == (1, build_model(name, 4, width_mult=width).num_features), name
        # One clip, the validation sampler and transform in both tools: the checkpoint's classifier on the
        # extracted features gives predict's probabilities on the same converted video.
        [result] = predict.predict_videos(ckpt, [root / "jpg" / "cycling" / "v0"], topk=4, clips=1, device="cpu")
        model = load_model(ckpt, "cpu").model
        with torch.no_grad():
            probs = model.forward_head(torch.from_numpy(features)).softmax(1)[0]
        assert [r["index"] for r in result["top"]] == probs.argsort(descending=True).tolist(), name
        assert [r["prob"] for r in result["top"]] == pytest.approx(probs.sort(descending=True).values.tolist(),
                                                                  abs=1e-5), name


def test_conv_and_linear_gmacs_match_the_reference():
    """The reference's conv + linear GMACs at 16x224x224 (xs 15.9): the same layer shapes and cosine-pooled
    lengths everywhere. Counted on the meta device (shapes only)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_model("mtnet_xs", 400).eval()
        x = torch.empty(1, 3, 16, 224, 224)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    assert round(counter.get_total_flops() / 2e9, 1) == 15.9
