"""Bytes the autograd graph saves for the backward pass of one training forward, by precision and BN handling.

    python -m tools.bench.saved_activations --network r3d_18 --batch-size 4 --clip-length 16 --crop-size 112

Every tensor autograd saves is counted once (by storage) through `torch.autograd.graph.saved_tensors_hooks`.
Rows: fp32; bf16 autocast with BatchNorm fed its autocast (bf16) input, as CUDA runs it; bf16 autocast with the
BN inputs cast to fp32 (`train.precision.keep_batchnorm_fp32`, what the CPU runs get).
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", nargs="+", default=["r3d_18", "r2plus1d_18"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--clip-length", type=int, default=16)
    p.add_argument("--crop-size", type=int, default=112)
    p.add_argument("--width-mult", type=float, default=None)
    args = p.parse_args(argv)
    kw = {} if args.width_mult is None else {"width_mult": args.width_mult}
    clips = torch.randn(args.batch_size, 3, args.clip_length, args.crop_size, args.crop_size)
    print(f"saved activations of one training forward, batch {args.batch_size} x 3 x {args.clip_length} x "
          f"{args.crop_size}^2 (MiB)")
    print(f"{'network':<16}{'fp32':>10}{'bf16':>10}{'bf16 + fp32 BN':>16}")
    for name in args.network:
        torch.manual_seed(0)
        model = network.build_model(name, 10, **kw).train()
        row = [saved_bytes(model, clips, None), saved_bytes(model, clips, torch.bfloat16)]
        keep_batchnorm_fp32(model)
        row.append(saved_bytes(model, clips, torch.bfloat16))
        print(f"{name:<16}" + "".join(f"{b / 2**20:>{w}.1f}" for b, w in zip(row, (10, 10, 16))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
