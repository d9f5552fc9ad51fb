"""Batch norm over groups of clips, for the large per-device batches of multigrid training.

With both multigrid cycles the per-device batch grows up to 32x. Plain BN would then normalise over 32x more clips
than the baseline, which changes its regularising noise; the multigrid paper and SlowFast keep BN statistics over a
fixed number of clips. `SubBatchNorm3d` normalises each group of ``group_size`` clips with its own statistics while
keeping one set of running statistics over the whole batch, and has exactly `nn.BatchNorm3d`'s parameters, buffers
and state_dict keys, so checkpoints stay interchangeable; in eval mode it *is* `BatchNorm3d`. Only 5-D layers are
converted: 2-D BN inside frame-stacked models (the MiCT 2-D branch, f-R2D) sees ``N*T`` frames and is left as is.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SubBatchNorm3d", "convert_sub_batchnorm", "set_sub_batchnorm_group"]


class SubBatchNorm3d(nn.BatchNorm3d):
    """`BatchNorm3d` that, in training, normalises groups of at least ``group_size`` clips separately.

    A batch of N clips is split into ``k = N // group_size`` groups (reduced until it divides N; k <= 1 is plain
    BN, bit for bit). Clip ``i`` goes to group ``i % k``: the batch is viewed as ``(N/k, k*C, ...)`` so one
    `F.batch_norm` call normalises all groups without a copy. The running statistics are those of the whole
    batch (aggregated exactly from the group statistics), so evaluation is unchanged. Same parameters, buffers and
    state_dict as `nn.BatchNorm3d`.
    """

    def __init__(self, num_features: int, group_size: int = 8, **kwargs: Any):
        super().__init__(num_features, **kwargs)
        self.group_size = int(group_size)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", group_size={self.group_size}"

    def _splits(self, n: int) -> int:
        if self.group_size < 1:
            return 1
        k = n // self.group_size
        while k > 1 and n % k:
            k -= 1
        return k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self._splits(x.shape[0]) if self.training and x.dim() == 5 else 1
        if k <= 1:
            return super().forward(x)
        self._check_input_dim(x)
        n, c = x.shape[:2]
        xs = x.reshape(n // k, k * c, *x.shape[2:])
        weight = self.weight.repeat(k) if self.weight is not None else None
        bias = self.bias.repeat(k) if self.bias is not None else None
        if not self.track_running_stats or self.running_mean is None:
            return F.batch_norm(xs, None, None, weight, bias, True, 0.0, self.eps).reshape(x.shape)
        # momentum 1 on scratch buffers leaves exactly each group's mean and unbiased variance in them.
        group_mean = torch.zeros(k * c, device=x.device, dtype=self.running_mean.dtype)
        group_var = torch.ones(k * c, device=x.device, dtype=self.running_var.dtype)
        out = F.batch_norm(xs, group_mean, group_var, weight, bias, True, 1.0, self.eps)
        with torch.no_grad():
            m = xs.numel() // (k * c)  # elements per group and channel
            group_mean, group_var = group_mean.view(k, c), group_var.view(k, c)
            mean = group_mean.mean(0)
            biased = (group_var * (m - 1) / m).mean(0) + ((group_mean - mean) ** 2).mean(0)
            total = m * k
            var = biased * total / max(total - 1, 1)
            self.num_batches_tracked.add_(1)
            f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - f).add_(mean, alpha=f)
            self.running_var.mul_(1 - f).add_(var, alpha=f)
        return out.reshape(x.shape)


def convert_sub_batchnorm(module: nn.Module, group_size: int) -> nn.Module:
    """Replace every `nn.BatchNorm3d` in `module` by a `SubBatchNorm3d` sharing its parameters and buffers.

    Returns the (possibly new) root module, like `nn.SyncBatchNorm.convert_sync_batchnorm`. Call it before
    building the optimizer or DDP; parameters are shared, not copied, so either order works for the optimizer.
    """
    if type(module) is nn.BatchNorm3d:
        new = SubBatchNorm3d(module.num_features, group_size=group_size, eps=module.eps, momentum=module.momentum,
                             affine=module.affine, track_running_stats=module.track_running_stats,
                             device=None if module.weight is None else module.weight.device)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = convert_sub_batchnorm(child, group_size)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def set_sub_batchnorm_group(module: nn.Module, group_size: int) -> int:
    """Set ``group_size`` on every `SubBatchNorm3d` in `module`; returns how many layers were changed."""
    count = 0
    for m in module.modules():
        if isinstance(m, SubBatchNorm3d):
            m.group_size = int(group_size)
            count += 1
    return count
