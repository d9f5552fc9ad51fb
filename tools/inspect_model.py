"""Look inside a network: parameters per array, layer types, every block's convolution kernels, GFLOPs, and the
first convolution's kernels as an image.

    python -m tools.inspect_model --network r2plus1d_18
    python -m tools.inspect_model --network r3d_18 --checkpoint r3d_18-b3b3357e.pth --kernels stem.png
    python -m tools.inspect_model --network mict_resnet18 --width-mult 0.5 --clip 8x112x112 --json

- arrays: every parameter and buffer tensor with its shape and element count, and the totals (the count of
  trainable parameters is what papers quote);
- layer types: how many leaf modules of each type (Conv3d, BatchNorm3d, ReLU, ...);
- blocks: per block (the stem, each ``layerN.M`` residual block, ...) the kernel sizes of its convolutions in
  order, ``T x H x W``, and what they make it: 3D (``3x3x3``), 2D (``1x3x3``, as MC3's later blocks), (2+1)D
  (``1x3x3`` then ``3x1x1``), with 1x1x1 projections marked;
- with ``--checkpoint``: the class names, in output order;
- GFLOPs per clip for ``--clip TxHxW`` (default: the checkpoint's clip, else 16x112x112);
- ``--kernels PNG``: the first convolution's kernels as a grid, one row per output channel (``--kernel-rows``
  of them), one column per kernel frame; each kernel is contrast-stretched on its own, RGB when it reads the
  three colour channels.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from torch import nn

from data.atomic import save_figure_png
from train.console import add_process_options, die, start_process

__all__ = ["BlockKernels", "block_kernels", "layer_type_counts", "main", "parameter_table", "save_kernel_grid"]

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class BlockKernels:
    """The convolutions of one block: their names (inside the block), kernel sizes and the block's kind."""

    block: str
    convs: tuple[str, ...]
    kernels: tuple[tuple[int, ...], ...]
    kind: str


def parameter_table(model: nn.Module) -> tuple[list[dict], dict[str, int]]:
    """One row per parameter/buffer array (``name``, ``shape``, ``elements``, ``trainable``) and the totals."""
    rows = [{"name": n, "shape": list(p.shape), "elements": p.numel(), "trainable": p.requires_grad}
            for n, p in model.named_parameters()]
    rows += [{"name": n, "shape": list(b.shape), "elements": b.numel(), "trainable": False}
             for n, b in model.named_buffers() if b.dtype.is_floating_point]
    totals = {"parameters": sum(r["elements"] for r in rows if r["trainable"]),
              "buffers": sum(r["elements"] for r in rows if not r["trainable"]),
              "arrays": len(rows)}
    totals["all"] = totals["parameters"] + totals["buffers"]
    return rows, totals


def layer_type_counts(model: nn.Module) -> dict[str, int]:
    """Leaf-module type name -> count, most frequent first."""
    counts = Counter(type(m).__name__ for m in model.modules() if not any(True for _ in m.children()))
    return dict(counts.most_common())


def _block_key(name: str) -> str:
    parts = name.split(".")
    # residual stages are sequences of blocks (layer1.0, layer1.1, ...); anything else is its own block
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


def _kernel_kind(kernels: Sequence[tuple[int, ...]]) -> str:
    main = [k for k in kernels if any(v > 1 for v in k)]  # 1x1(x1) projections do not define the block
    if not main:
        return "1x1 only"
    if all(len(k) < 3 for k in main):
        return "2D"
    spatial = [k for k in main if k[0] == 1]
    temporal = [k for k in main if k[0] > 1 and all(v == 1 for v in k[1:])]
    full = [k for k in main if k[0] > 1 and any(v > 1 for v in k[1:])]
    if full and not temporal:
        return "3D" if not spatial else "3D + 2D"
    if temporal and spatial and not full:
        return "(2+1)D"
    if spatial and not temporal and not full:
        return "2D (per frame)"
    return "mixed"


def block_kernels(model: nn.Module) -> list[BlockKernels]:
    """Kernel sizes of every block's convolutions, in module order, grouped by block (see module doc)."""
    groups: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for name, m in model.named_modules():
        if isinstance(m, _CONVS):
            key = _block_key(name)
            groups.setdefault(key, []).append((name[len(key) + 1:] or name, tuple(int(k) for k in m.kernel_size)))
    return [BlockKernels(b, tuple(n for n, _ in convs), tuple(k for _, k in convs), _kernel_kind([k for _, k in convs]))
            for b, convs in groups.items()]


def first_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """The first convolution in module order (the stem's)."""
    for name, m in model.named_modules():
        if isinstance(m, _CONVS):
            return name, m
    raise ValueError(f"{type(model).__name__} has no convolution")


def save_kernel_grid(weight: np.ndarray, path: str | os.PathLike, rows: int = 64, title: str = "",
                     cell: float = 0.45) -> tuple[int, int]:
    """Draw a conv weight ``(O, I, [kT,] kH, kW)``: rows = the first `rows` output channels, columns = frames.

    RGB when ``I == 3`` (the colours the kernel responds to), else the mean over input channels in grey. Each
    kernel (all its frames together) is stretched to the full range. Returns ``(rows, columns)`` drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.asarray(weight, dtype=np.float32)
    if w.ndim == 4:
        w = w[:, :, None]
    if w.ndim != 5:
        raise ValueError(f"expected a convolution weight (O, I, [T,] H, W), got shape {w.shape}")
    n_rows, n_cols = min(rows, w.shape[0]), w.shape[2]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(max(3.2, cell * n_cols + 1.2), max(2.0, cell * n_rows + 0.8)),
                             squeeze=False)
    for o in range(n_rows):
        k = w[o]  # (I, T, H, W)
        lo, hi = float(k.min()), float(k.max())
        k = (k - lo) / (hi - lo) if hi > lo else np.zeros_like(k)
        for t in range(n_cols):
            ax = axes[o, t]
            img = np.moveaxis(k[:, t], 0, -1) if k.shape[0] == 3 else k[:, t].mean(axis=0)
            ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if o == 0:
                ax.set_title(f"t={t}", fontsize=7)
            if t == 0:
                ax.set_ylabel(str(o), fontsize=6, rotation=0, labelpad=8)
    fig.suptitle(title or f"{w.shape[0]} kernels, first {n_rows} shown", fontsize=8)
    fig.tight_layout()
    save_figure_png(fig, path)
    return n_rows, n_cols


def _parse_clip(text: str) -> tuple[int, int, int]:
    try:
        t, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clip takes TxHxW, e.g. 16x112x112, got {text!r}") from None
    if min(t, h, w) < 1:
        raise argparse.ArgumentTypeError(f"--clip sizes must be >= 1, got {text!r}")
    return t, h, w


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.inspect_model", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--network", default=None, help="registered model name (optional with --checkpoint)")
    p.add_argument("--checkpoint", default=None,
                   help="a trained checkpoint, torchvision Kinetics-400 weights file or checkpoint of the SRTG or "
                        "MiCT-Net-PyTorch code (with --network) to inspect instead of an untrained model")
    p.add_argument("--num-classes", type=int, default=400, help="classes of an untrained --network")
    p.add_argument("--width-mult", type=float, default=None, help="channel width of an untrained --network")
    p.add_argument("--clip", type=_parse_clip, default=None, help="clip TxHxW for the GFLOPs")
    p.add_argument("--kernels", default=None, metavar="PNG", help="draw the first convolution's kernels here")
    p.add_argument("--kernel-rows", type=int, default=64, help="output channels drawn by --kernels")
    p.add_argument("--arrays", type=int, default=None, metavar="N",
                   help="print only the N largest arrays (default: all)")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    add_process_options(p)
    return p.parse_args(argv)


def _load(args: argparse.Namespace) -> tuple[nn.Module, str, tuple[int, int, int], list[str] | None]:
    import network
    from train.inference import CheckpointError, load_model

    if args.checkpoint:
        try:
            loaded = load_model(args.checkpoint, "cpu")
        except CheckpointError:
            if not args.network:
                raise
            # a checkpoint of the SRTG or MiCT-Net-PyTorch code does not name its network: --network does
            loaded = load_model(args.checkpoint, "cpu", network=args.network)
        if args.network and loaded.network != args.network:
            raise ValueError(f"{args.checkpoint}: a {loaded.network} checkpoint, not {args.network}")
        pre = loaded.preprocess
        clip = (int(pre["clip_length"]), int(pre["crop_size"]), int(pre["crop_size"]))
        return loaded.model, loaded.network, clip, loaded.classes
    kwargs: dict = {} if args.width_mult is None else {"width_mult": args.width_mult}
    clip = tuple(args.clip or (16, 112, 112))
    if "frames" in network.model_kwargs(args.network):
        kwargs["frames"] = clip[0]  # R2D stacks the frames of the clip it is shown
    return network.build_model(args.network, args.num_classes, **kwargs).eval(), args.network, clip, None


def _text(name: str, rows: list[dict], totals: dict, layers: dict, blocks: list[BlockKernels], clip, gflops,
          top: int | None) -> str:
    shown = sorted(rows, key=lambda r: -r["elements"])[:top] if top else rows
    width = max(len(r["name"]) for r in shown)
    out = [f"{name}: {totals['parameters']:,} parameters in {sum(r['trainable'] for r in rows)} arrays "
           f"(+ {totals['buffers']:,} buffer elements); {gflops:.2f} GFLOPs per {'x'.join(map(str, clip))} clip "
           f"(2 per multiply-add)", "", f"arrays{f' ({top} largest)' if top else ''}:"]
    out += [f"  {r['name']:<{width}}  {'x'.join(map(str, r['shape'])) or 'scalar':>16}  {r['elements']:>10,}"
            f"{'' if r['trainable'] else '  (buffer)'}" for r in shown]
    out += ["", "layer types:"] + [f"  {k:<22} {v:>4}" for k, v in layers.items()]
    out += ["", "block kernels (T x H x W):"]
    bw = max(len(b.block) for b in blocks)
    for b in blocks:
        ks = ", ".join(f"{n} {'x'.join(map(str, k))}" for n, k in zip(b.convs, b.kernels))
        out.append(f"  {b.block:<{bw}}  {b.kind:<14}  {ks}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0; bad input exits 2)."""
    args = parse_args(argv)
    start_process(args)
    if not args.network and not args.checkpoint:
        die("give --network NAME and/or --checkpoint FILE")
    if args.kernel_rows < 1 or args.num_classes < 1:
        die("--kernel-rows and --num-classes must be >= 1")
    from tools.inference.flops import count_gflops

    try:
        model, name, clip, classes = _load(args)
        clip = args.clip or clip
        gflops = count_gflops(model, (3, *clip))
    except ValueError as e:  # CheckpointError, unknown network / argument, a clip too short for the model
        die(str(e))
    rows, totals = parameter_table(model)
    layers, blocks = layer_type_counts(model), block_kernels(model)
    kernels = None
    if args.kernels:
        conv_name, conv = first_conv(model)
        shape = tuple(conv.weight.shape)
        drawn = save_kernel_grid(conv.weight.detach().cpu().numpy(), args.kernels, rows=args.kernel_rows,
                                 title=f"{name} {conv_name}.weight {'x'.join(map(str, shape))}")
        kernels = {"path": args.kernels, "layer": conv_name, "shape": list(shape), "rows": drawn[0],
                   "columns": drawn[1]}
    if args.json:
        print(json.dumps({"network": name, "clip": list(clip), "gflops": gflops, "totals": totals, "arrays": rows,
                          "layer_types": layers, "blocks": [asdict(b) for b in blocks], "kernels": kernels,
                          "classes": classes},
                         indent=1))
        return 0
    print(_text(name, rows, totals, layers, blocks, clip, gflops, args.arrays))
    if classes is not None:
        print(f"\nclasses ({len(classes)}): {', '.join(classes)}")
    if kernels:
        print(f"\n{kernels['path']}: {kernels['layer']}.weight {'x'.join(map(str, kernels['shape']))}, "
              f"{kernels['rows']} output channel(s) x {kernels['columns']} frame(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
