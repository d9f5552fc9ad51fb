"""The model benchmark (tools.bench.models): its live-tensor memory tracker and small end-to-end runs."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_one_thread(one_thread):
    torch.manual_seed(0)


def test_live_tensor_memory_tracker():
    from tools.bench.models import LiveTensorMemory

    layers = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256))
    x = torch.randn(512, 256)
    tracker = LiveTensorMemory(list(layers.parameters()) + [x])
    with torch.inference_mode(), tracker:
        layers(x)
    act = 512 * 256 * 4
    assert tracker.baseline == 2 * (256 * 256 + 256) * 4 + act
    assert tracker.peak == 2 * act  # linear output alive while the ReLU writes a new one


def test_bench_models_end_to_end(tmp_path, capsys):
    from tools.bench.models import main

    out = tmp_path / "bench.md"
    main(["--models", "fr2d_18,mict_resnet18,tv_mc3_18", "--sizes", "4x32x32", "--batches", "1,2",
          "--repeats", "1", "--options", "no_grad,channels_last", "--option-models", "fr2d_18", "--out", str(out),
          "--log-level", "WARNING"])
    text = out.read_text()
    assert "| cpu | fr2d_18 | 11.38 | 4x32x32 |" in text
    assert "needs >= 16 frames" in text  # MiCT v1 at 4 frames: reported, not crashed
    assert "| cpu | tv_mc3_18 | 11.70 |" in text
    assert "| fr2d_18 | 4x32x32 | 2 | channels_last |" in text
    assert text in capsys.readouterr().out


def test_bench_models_takes_layout_and_gates_specs(tmp_path):
    from tools.bench.models import main, split_spec

    assert split_spec("srtg_r3d_18@srtg+gates") == ("srtg_r3d_18", {"layout": "srtg", "temporal_gates": True})
    out = tmp_path / "bench.md"
    main(["--models", "ir_csn_50,srtg_ir_csn_50+gates", "--sizes", "2x32x32", "--batches", "1", "--repeats", "1",
          "--options", "", "--out", str(out), "--log-level", "WARNING"])
    text = out.read_text()
    assert "| cpu | ir_csn_50 | 2.87 | 2x32x32 |" in text and "| cpu | srtg_ir_csn_50+gates | 23.05 | 2x32x32 |" in text
