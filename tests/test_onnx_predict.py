"""ONNX metadata (class names, preprocessing) and ``tools.predict --onnx`` from that metadata alone."""
from __future__ import annotations

import json

import onnx
import pytest

from tests.test_predict import CLASSES, make_checkpoint, write_video
from tools import export_onnx, predict
from tools.inference.onnx_metadata import read_model_metadata
from tools.inference.onnx_predict import load_onnx_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny r3d_18 checkpoint, its ONNX export and what export_onnx printed (one export for the module)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("onnx")
    ckpt = make_checkpoint(tmp / "m.pth", network="r3d_18", clip_length=8, crop_size=32, frame_interval=2)
    out = tmp / "m.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_onnx.main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    return ckpt, out, printed.getvalue()


def test_export_writes_class_names_and_preprocessing_and_prints_opset_ir_size(exported):
    _, out, text = exported
    proto = onnx.load(str(out))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert f"opset {opset}" in text and f"IR version {proto.ir_version}" in text
    assert f"{out.stat().st_size:,} bytes" in text
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["videotrain_format"] == "onnx-1" and json.loads(meta["classes"]) == CLASSES
    assert (meta["clip_length"], meta["frame_interval"], meta["crop_size"]) == ("8", "2", "32")
    assert json.loads(meta["mean"]) == pytest.approx([0.43216, 0.394666, 0.37645])
    assert json.loads(meta["std"]) == pytest.approx([0.22803, 0.22145, 0.216989])
    info = read_model_metadata(out)
    assert info.network == "r3d_18" and info.preprocess["resize_short"] == 37


def test_predict_onnx_matches_predict_checkpoint(exported, tmp_path, capsys):
    ckpt, out, _ = exported
    video = write_video(tmp_path / "v.mp4", n_frames=40, seed=3)
    assert predict.main(["--checkpoint", str(ckpt), "--json", "--device", "cpu", "--topk", "4", str(video)]) == 0
    torch_top = json.loads(capsys.readouterr().out)[0]["top"]
    assert predict.main(["--onnx", str(out), "--json", "--topk", "4", str(video)]) == 0
    onnx_result = json.loads(capsys.readouterr().out)[0]
    assert onnx_result["ok"] and onnx_result["clip_length"] == 8 and onnx_result["frame_interval"] == 2
    assert [r["label"] for r in onnx_result["top"]] == [r["label"] for r in torch_top]
    for a, b in zip(onnx_result["top"], torch_top):
        assert a["prob"] == pytest.approx(b["prob"], abs=1e-4)


def test_predict_onnx_short_video_loops_and_says_so(exported, tmp_path, capsys):
    _, out, _ = exported
    video = write_video(tmp_path / "short.mp4", n_frames=6)
    assert predict.main(["--onnx", str(out), "--json", str(video)]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert result["looped"] and "shorter than one clip" in result["warnings"][0]


def test_onnx_without_our_metadata_is_refused(exported, tmp_path, capsys):
    proto = onnx.load(str(exported[1]))
    del proto.metadata_props[:]  # as another exporter writes it
    out = tmp_path / "plain.onnx"
    onnx.save(proto, str(out))
    with pytest.raises(SystemExit) as exc:
        predict.main(["--onnx", str(out), str(tmp_path / "v.mp4")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "has no videotrain metadata" in err and str(out) in err
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="junk.onnx"):
        load_onnx_model(tmp_path / "junk.onnx")


def test_predict_onnx_refuses_frames(exported, tmp_path, capsys):
    _, out, _ = exported
    with pytest.raises(SystemExit) as exc:
        predict.main(["--onnx", str(out), "--frames", "4", str(tmp_path / "v.mp4")])
    assert exc.value.code == 2 and "fixed clip length" in capsys.readouterr().err
