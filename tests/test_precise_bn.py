"""train.precise_bn: equal-weight BN averages over base-shape batches, only when an epoch used other shapes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from network.sub_batchnorm import SubBatchNorm3d
from train.loaders import EpochInfo
from train.multigrid import Shape
from train.precise_bn import PreciseBN, update_bn_stats


def _batches(n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    # Batches with very different statistics: an exponential average would favour the last one.
    return [(torch.randn(4, 3, 2, 5, 5, generator=g) * (i + 1) + 3 * i, torch.zeros(4)) for i in range(n)]


@pytest.mark.parametrize("bn_class", [nn.BatchNorm3d, lambda c: SubBatchNorm3d(c, group_size=2)])
def test_update_bn_stats_is_the_equal_weight_average(bn_class):
    model = nn.Sequential(bn_class(3))
    model[0].running_mean.fill_(100.0)
    model.eval()
    batches = _batches()
    assert update_bn_stats(model, batches, num_batches=10, device=torch.device("cpu")) == 3
    bn = model[0]
    means = torch.stack([x.mean((0, 2, 3, 4)) for x, _ in batches])
    variances = torch.stack([x.transpose(0, 1).reshape(3, -1).var(1, unbiased=True) for x, _ in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert bn.momentum == 0.1 and not model.training  # restored


def test_update_bn_stats_stops_after_num_batches_and_rejects_an_empty_loader():
    model = nn.BatchNorm3d(3)
    batches = _batches()
    assert update_bn_stats(model, batches, num_batches=1, device=torch.device("cpu")) == 1
    assert torch.allclose(model.running_mean, batches[0][0].mean((0, 2, 3, 4)), atol=1e-5)
    before = model.running_mean.clone()
    with pytest.raises(ValueError, match="no batch"):
        update_bn_stats(model, [], num_batches=5, device=torch.device("cpu"))
    assert torch.equal(model.running_mean, before)  # kept when there was nothing to average


def test_precise_bn_runs_only_after_epochs_on_other_shapes():
    calls = []

    def make_loader():
        calls.append("built")
        return _batches(2)

    model = nn.Sequential(nn.BatchNorm3d(3))
    pbn = PreciseBN(make_loader, num_batches=5, clip_length=8, crop_size=32)
    pbn.note_epoch(EpochInfo(1, 2, 8, 32, 2))  # the base shape: nothing to do
    assert pbn(model, torch.device("cpu"), epoch=1) == 0.0 and calls == []
    pbn.note_epoch(EpochInfo(2, 2, 4, 22, 2))  # a long-cycle shape
    assert pbn.stale
    pbn(model, torch.device("cpu"), epoch=2)
    assert calls == ["built"] and not pbn.stale and int(model[0].num_batches_tracked) == 2
    pbn.note_epoch(EpochInfo(3, 2, 8, 32, 2, shape=Shape(2, 8, 32, 1, 1.0, 3, "base", short_crops=(16, 22, 32))))  # short cycle
    assert pbn.stale
    pbn(model, torch.device("cpu"), epoch=3)
    assert calls == ["built"]  # the loader is built once
    always = PreciseBN(make_loader, 5, 8, 32, always=True)
    always.note_epoch(EpochInfo(1, 2, 8, 32, 2))
    assert always.stale
