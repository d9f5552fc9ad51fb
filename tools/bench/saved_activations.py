"""Activation bytes autograd saves for the backward pass, per clip, by precision and BatchNorm handling.

    python -m tools.bench.saved_activations --network r3d_18 r2plus1d_18 --clip-length 16 --crop-size 112

Every tensor autograd saves is counted once (by storage) through `torch.autograd.graph.saved_tensors_hooks`, in
one training forward at batch B and one at 2B; the difference over B is what each clip adds, so the weights (and
autocast's half-precision copies of them), which do not grow with the batch, drop out. Columns: fp32; bf16
autocast with BatchNorm fed its autocast (bf16) input, as CUDA runs it; bf16 autocast with the BN inputs cast to
fp32 (`train.precision.keep_batchnorm_fp32`, what CPU runs get).
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

import torch

import network
from train.precision import keep_batchnorm_fp32


def saved_bytes(model: torch.nn.Module, clips: torch.Tensor, dtype: torch.dtype | None) -> int:
    """Bytes of the distinct storages autograd saves in one forward of `model` (autocast to `dtype` if given)."""
    seen: dict[tuple[int, torch.device], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.device)] = storage.nbytes()
        return t

    autocast = (torch.autocast(clips.device.type, dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = model(clips).float().sum()
    del loss
    return sum(seen.values())


def per_clip_bytes(model: torch.nn.Module, clip_shape: tuple[int, ...], batch: int,
                   dtype: torch.dtype | None) -> float:
    """Saved activation bytes per clip: (bytes at 2 x `batch` - bytes at `batch`) / `batch`."""
    g = torch.Generator().manual_seed(0)
    small = saved_bytes(model, torch.randn(batch, *clip_shape, generator=g), dtype)
    large = saved_bytes(model, torch.randn(2 * batch, *clip_shape, generator=g), dtype)
    return (large - small) / batch


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", nargs="+", default=["r3d_18", "r2plus1d_18"])
    p.add_argument("--batch-size", type=int, default=1, help="B: the forwards run at B and 2B clips")
    p.add_argument("--clip-length", type=int, default=16)
    p.add_argument("--crop-size", type=int, default=112)
    p.add_argument("--width-mult", type=float, default=None)
    args = p.parse_args(argv)
    kw = {} if args.width_mult is None else {"width_mult": args.width_mult}
    shape = (3, args.clip_length, args.crop_size, args.crop_size)
    print(f"saved activations per clip of 3 x {args.clip_length} x {args.crop_size}^2, one training forward (MiB)")
    print(f"{'network':<16}{'fp32':>10}{'bf16':>10}{'bf16 + fp32 BN':>16}")
    for name in args.network:
        torch.manual_seed(0)
        model = network.build_model(name, 10, **kw).train()
        row = [per_clip_bytes(model, shape, args.batch_size, None),
               per_clip_bytes(model, shape, args.batch_size, torch.bfloat16)]
        keep_batchnorm_fp32(model)
        row.append(per_clip_bytes(model, shape, args.batch_size, torch.bfloat16))
        print(f"{name:<16}" + "".join(f"{b / 2**20:>{w}.1f}" for b, w in zip(row, (10, 10, 16))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
