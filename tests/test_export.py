"""tools.export_onnx: onnxruntime parity with PyTorch (tiny widths), dynamic batch axis, metadata, failures."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from network import SqueezeRecursion, build_model
from tests.test_predict import CLASSES, make_checkpoint
from tools import export_onnx

pytestmark = pytest.mark.usefixtures("one_thread")


# MiCT-ResNet (v1) needs 16 frames; the others run on 8.
@pytest.mark.parametrize("name,frames", [("mict_resnet18", 16), ("r3d_18", 8), ("r2plus1d_18", 8)])
def test_onnx_parity(tmp_path, name, frames):
    torch.manual_seed(0)
    model = build_model(name, 5, width_mult=0.125).eval()
    shape = (3, frames, 32, 32)
    res = export_onnx.export_and_check(model, tmp_path / f"{name}.onnx", shape, metadata={"network": name})
    assert res.rel_error <= 1e-4 and res.size_bytes == (tmp_path / f"{name}.onnx").stat().st_size > 0
    proto = onnx.load(str(tmp_path / f"{name}.onnx"))
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # a symbolic (dynamic) batch axis
    # Independent check with a batch size the export never saw.
    x = torch.randn(4, *shape)
    with torch.inference_mode():
        ref = model(x).numpy()
    got = ort.InferenceSession(res.path, providers=["CPUExecutionProvider"]).run(None, {"clip": x.numpy()})[0]
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_lstm_gate_exports(tmp_path):
    """SRTG's Squeeze-and-Recursion LSTM gate exports with a dynamic batch (the whole srtg_* nets take ~10 s of
    CPU each to export, so the test uses the block in a small net; `--all` covers the full models)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 8, 3, padding=1), SqueezeRecursion(8),
                                torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    res = export_onnx.export_and_check(model, tmp_path / "sr.onnx", (3, 8, 16, 16))
    assert res.rel_error <= 1e-4 and res.exporter == "dynamo"


def test_cli_checkpoint_export_with_metadata_and_bench(tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pth", network="r3d_18", clip_length=8, crop_size=32)
    out = tmp_path / "model.onnx"
    assert export_onnx.main(["--checkpoint", str(ckpt), "--out", str(out), "--bench", "--bench-seconds", "0.2",
                             "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ok"] and row["input_shape"] == ["batch", 3, 8, 32, 32] and row["size_bytes"] > 0
    assert row["torch_clips_per_s"] > 0 and row["ort_clips_per_s"] > 0  # the figures' meaning: test_bench_rate_*
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["network"] == "r3d_18" and json.loads(meta["classes"]) == CLASSES
    assert json.loads(meta["preprocess"])["crop_size"] == 32


def test_bench_rate_counts_clips_per_second_of_the_timed_calls(monkeypatch):
    """On a clock where each call takes 1/64 s, a batch of 4 clips runs at exactly 256 clips/s, for whatever
    measuring time; the untimed warm-up call is not counted. (Binary fractions: no rounding in the clock.)"""
    now = [100.0]
    monkeypatch.setattr(export_onnx.time, "perf_counter", lambda: now[0])
    calls = []

    def fn():
        calls.append(now[0])
        now[0] += 1 / 64

    assert export_onnx._rate(fn, batch=4, seconds=0.25) == 256.0
    assert len(calls) == 1 + 16  # the warm-up, then 0.25 s of 1/64 s calls
    calls.clear()
    assert export_onnx._rate(fn, batch=2, seconds=0.125) == 128.0 and len(calls) == 1 + 8


def test_cli_all_exports_every_registered_network(tmp_path, capsys, monkeypatch):
    """`--all` writes one checked ONNX file per registered network into --out-dir and a row for each; one that does
    not export makes the exit status 1 without stopping the others (the registry is cut to two names here:
    the full zoo takes minutes)."""
    import network

    monkeypatch.setattr(network, "list_models", lambda: ["r3d_18", "mict_resnet18"])
    out_dir = tmp_path / "onnx"
    code = export_onnx.main(["--all", "--out-dir", str(out_dir), "--width-mult", "0.125", "--clip-length", "8",
                             "--crop-size", "32", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["network"] for r in rows] == ["r3d_18", "mict_resnet18"]
    # MiCT-ResNet (v1) needs 16 frames: refused with the model's reason, the others exported
    assert [r["ok"] for r in rows] == [True, False] and code == 1
    assert "16" in rows[1]["reason"]
    assert [p.name for p in out_dir.iterdir()] == ["r3d_18.onnx"]
    proto = onnx.load(str(out_dir / "r3d_18.onnx"))
    assert {p.key: p.value for p in proto.metadata_props}["network"] == "r3d_18"
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 8, 32, 32]


def test_cli_unknown_network_and_missing_args(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export_onnx.main(["--network", "resnet_from_mars", "--num-classes", "3", "--out", str(tmp_path / "x.onnx")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "resnet_from_mars" in err and "r2plus1d_18" in err
    with pytest.raises(SystemExit) as exc:
        export_onnx.main(["--network", "r3d_18", "--out", str(tmp_path / "x.onnx")])
    assert exc.value.code == 2 and "--num-classes" in capsys.readouterr().err


def test_failed_export_says_which_and_why(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::imaginary_op\nlong traceback text")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    rows = export_onnx.export_all(tmp_path, clip_length=8, crop_size=32, width_mult=0.125, names=["r3d_18"])
    assert rows == [{"network": "r3d_18", "ok": False,
                     "reason": "dynamo: RuntimeError: unsupported operator aten::imaginary_op; "
                               "torchscript: RuntimeError: unsupported operator aten::imaginary_op"}]
    assert "FAILED" in export_onnx.format_rows(rows)
