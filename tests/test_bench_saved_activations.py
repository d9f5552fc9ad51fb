"""tools.bench.saved_activations: bytes autograd saves, by precision and BN handling."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import network
from tools.bench.saved_activations import main, per_clip_bytes, saved_bytes
from train.precision import keep_batchnorm_fp32


def test_saved_bytes_counts_each_saved_storage_once():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    x = torch.randn(4, 8)
    # The linear layer saves its input (its weight needs no gradient for an input without one), ReLU its output.
    assert saved_bytes(model, x, None) == (32 + 32) * 4
    x.requires_grad_()
    assert saved_bytes(model, x, None) == (32 + 64 + 32) * 4  # now the weight too (for the input's gradient)


def test_bf16_saves_half_per_clip_and_fp32_bn_inputs_take_it_back(capsys):
    model = network.build_model("r3d_18", 4, width_mult=0.125).train()
    shape = (3, 4, 32, 32)
    fp32 = per_clip_bytes(model, shape, 1, None)
    bf16 = per_clip_bytes(model, shape, 1, torch.bfloat16)
    keep_batchnorm_fp32(model)
    bf16_fp32_bn = per_clip_bytes(model, shape, 1, torch.bfloat16)
    assert bf16 == pytest.approx(fp32 / 2, rel=0.02) and bf16_fp32_bn > 2 * bf16
    assert main(["--network", "r3d_18", "--width-mult", "0.125", "--clip-length", "4", "--crop-size", "32"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("r3d_18")
