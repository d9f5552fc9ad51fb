"""The timeline strip of a prediction: one thumbnail per sliding window, with its label, probability and times.

Thumbnails are shrunk as soon as a window's middle frame is decoded, so a long video costs little memory.
"""
from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data.atomic import save_figure_png

__all__ = ["THUMB_HEIGHT", "save_timeline_png", "thumbnail", "timeline_png_path"]

THUMB_HEIGHT = 96  # pixels


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """`frame` shrunk to `THUMB_HEIGHT` pixels high (aspect kept); smaller frames are copied as they are."""
    import cv2

    h, w = frame.shape[:2]
    if h <= THUMB_HEIGHT:
        return frame.copy()
    return cv2.resize(frame, (max(1, round(w * THUMB_HEIGHT / h)), THUMB_HEIGHT), interpolation=cv2.INTER_AREA)


def save_timeline_png(result: dict, thumbs: Sequence[np.ndarray], path: str | os.PathLike,
                      columns: int = 8) -> str:
    """Draw the timeline as a grid of thumbnails (one per window: label, probability, time range) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["timeline"]
    cols = max(1, min(columns, len(rows)))
    nrows = math.ceil(len(rows) / cols)
    aspect = thumbs[0].shape[1] / thumbs[0].shape[0] if thumbs else 4 / 3
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.6 * aspect, nrows * 2.1 + 0.5), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(set(r["index"] for r in rows)) <= 10 else "tab20")
    colours: dict[int, tuple] = {}
    for ax in axes.flat:
        ax.axis("off")
    for ax, row, thumb in zip(axes.flat, rows, thumbs):
        colour = colours.setdefault(row["index"], cmap(len(colours) % cmap.N))
        ax.axis("on")
        ax.imshow(thumb)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)
        label = textwrap.shorten(row["label"], width=28, placeholder="...")
        ax.set_title(f"{textwrap.fill(label, 16)}\n{row['prob']:.2f}", fontsize=7, color="black")
        ax.set_xlabel(f"{row['start_s']:.2f}-{row['end_s']:.2f} s", fontsize=7)
    if len(colours) > 1:
        from matplotlib.patches import Patch

        names = {r["index"]: r["label"] for r in rows}
        fig.legend(handles=[Patch(color=c, label=names[i]) for i, c in colours.items()], loc="lower center",
                   ncol=min(len(colours), 6), fontsize=7, frameon=False)
    fig.suptitle(f"{result['name']}: window {result['window']} frames, stride {result['stride']} "
                 f"({result['fps']:g} fps)", fontsize=9)
    fig.tight_layout(rect=(0, 0.06 if len(colours) > 1 else 0, 1, 1))
    return str(save_figure_png(fig, path, dpi=110))


def timeline_png_path(video: str, out: str | os.PathLike | None) -> Path:
    """Where the strip of `video` goes: ``<dir of out>/<out stem>.<video name>.timeline.png`` (cwd without out)."""
    p = Path(video)
    name = p.parent.name if p.name == "frames.db" else (p.name if p.is_dir() else p.stem)
    if out is None:
        return Path(f"{name}.timeline.png")
    out = Path(out)
    if out.suffix == "":  # a folder
        return out / f"{name}.timeline.png"
    return out.parent / f"{out.stem}.{name}.timeline.png"
