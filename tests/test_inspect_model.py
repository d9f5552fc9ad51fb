"""``tools.inspect_model``: parameter counts, layer types, block kernel sizes, GFLOPs, the kernel image."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision

from tests.test_predict import make_checkpoint
from tests.train_util import FRAME_BASELINE
from tools import inspect_model
from tools.inspect_model import block_kernels, layer_type_counts, parameter_table

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, *argv: str) -> dict:
    assert inspect_model.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_full_models_match_torchvision_counts_and_kernel_layouts(capsys):
    from network import build_model

    for name, kind in (("r3d_18", "3D"), ("r2plus1d_18", "(2+1)D")):
        model = build_model(name, 400)
        rows, totals = parameter_table(model)
        tv = getattr(torchvision.models.video, name)()
        assert totals["parameters"] == sum(p.numel() for p in tv.parameters())
        assert sum(r["elements"] for r in rows if r["trainable"]) == totals["parameters"]
        blocks = {b.block: b for b in block_kernels(model)}
        assert all(blocks[f"layer{i}.{j}"].kind == kind for i in range(1, 5) for j in range(2))
    mc3 = {b.block: b for b in block_kernels(build_model("mc3_18", 400))}
    # MC3: 3D convolutions in the first stage, 2D (1x3x3) ones later (the card's "Mixed")
    assert mc3["layer1.0"].kernels[:2] == ((3, 3, 3), (3, 3, 3)) and mc3["layer1.0"].kind == "3D"
    assert mc3["layer3.1"].kernels == ((1, 3, 3), (1, 3, 3)) and mc3["layer3.1"].kind == "2D (per frame)"
    r21 = {b.block: b for b in block_kernels(build_model("r2plus1d_18", 400))}
    assert r21["layer2.0"].kernels == ((1, 3, 3), (3, 1, 1), (1, 3, 3), (3, 1, 1), (1, 1, 1))
    assert r21["stem"].kernels == ((1, 7, 7), (3, 1, 1))
    counts = layer_type_counts(build_model("r2plus1d_18", 400))
    assert counts["Conv3d"] == 37 and counts["BatchNorm3d"] == 37 and counts["Linear"] == 1


def test_cli_untrained_network_with_gflops_and_kernel_grid(tmp_path, capsys):
    png = tmp_path / "stem.png"
    out = _run(capsys, "--network", "r3d_18", "--width-mult", "0.125", "--num-classes", "5",
               "--clip", "4x32x32", "--kernels", str(png), "--kernel-rows", "6")
    assert out["network"] == "r3d_18" and out["clip"] == [4, 32, 32]
    assert out["layer_types"]["Conv3d"] > 0 and out["totals"]["parameters"] > 0
    assert any(a["name"] == "fc.weight" and a["shape"][0] == 5 for a in out["arrays"])
    # stem 3x7x7 conv of 8 channels (64/8) on 4x32x32: 2 FLOPs per MAC, output 4x16x16
    stem_flops = 2 * 8 * 3 * 3 * 7 * 7 * 4 * 16 * 16
    assert out["gflops"] * 1e9 > stem_flops
    k = out["kernels"]
    assert k["layer"] == "stem.0" and k["shape"] == [8, 3, 3, 7, 7] and (k["rows"], k["columns"]) == (6, 3)
    assert png.read_bytes()[:4] == b"\x89PNG" and out["classes"] is None


def test_cli_reads_a_checkpoint_and_prints_tables(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r2plus1d_18", clip_length=8, crop_size=32)
    assert inspect_model.main(["--checkpoint", str(ckpt), "--arrays", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("r2plus1d_18: ") and "GFLOPs per 8x32x32 clip" in text
    assert "arrays (3 largest):" in text and "layer types:" in text and "(2+1)D" in text
    assert "classes (4): archery, bowling, cycling, diving" in text
    with pytest.raises(SystemExit) as exc:
        inspect_model.main(["--checkpoint", str(ckpt), "--network", "r3d_18"])
    assert exc.value.code == 2 and "a r2plus1d_18 checkpoint, not r3d_18" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        inspect_model.main(["--network", "resnet_from_mars"])
    assert "unknown model" in capsys.readouterr().err
    torch.save({"x": torch.zeros(2)}, tmp_path / "junk.pth")
    with pytest.raises(SystemExit):
        inspect_model.main(["--checkpoint", str(tmp_path / "junk.pth")])
    assert "junk.pth" in capsys.readouterr().err


def _published_example() -> list[str]:
    """The inference guide's `tools.inspect_model --network r2plus1d_18` example output, up to the elided block table."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "inference.md").read_text()
    start = text.index("$ python -m tools.inspect_model --network r2plus1d_18 --arrays 4 --kernels stem_kernels.png")
    lines = text[start:].splitlines()[1:]
    return lines[:lines.index("block kernels (T x H x W):")]


def test_cli_prints_the_published_figures(tmp_path, capsys):
    """The published example (31,505,325 parameters, 81.04 GFLOPs per 16x112x112 clip, the largest arrays, the
    layer-type counts) is what the command prints."""
    expected = _published_example()
    assert expected[0].startswith("r2plus1d_18: 31,505,325 parameters") and "81.04 GFLOPs" in expected[0]
    assert inspect_model.main(["--network", "r2plus1d_18", "--arrays", "4", "--kernels",
                               str(tmp_path / "stem_kernels.png")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:len(expected)] == expected


@pytest.mark.parametrize("name,kwargs,gflops", [
    ("r3d_18", {}, 81.4), ("mc3_18", {}, 86.7), ("r2plus1d_18", {}, 81.0), ("mict_resnet18", {}, 12.5),
    (FRAME_BASELINE, {}, 15.5), ("r3d_18", {"layout": "srtg"}, 12.8), ("mtnet_xs", {}, 8.1)])
def test_gflops_match_the_published_tables(name, kwargs, gflops):
    """docs/BENCHMARKS.md's GFLOPs per 16x112x112 clip (counted on the meta device: shapes only)."""
    from network import build_model
    from tools.inference.flops import count_gflops

    with torch.device("meta"):
        model = build_model(name, 400, **kwargs)
    assert round(count_gflops(model, (3, 16, 112, 112)), 1) == gflops
