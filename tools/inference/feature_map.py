"""The feature-space map of ``tools.extract_features --plot``: videos' features in 2-D, drawn as thumbnails.

Projection: PCA (centred features, top two right singular vectors; signs fixed so that reruns give the same
picture). PCA keeps global distances, so classes the model separates stay apart, and it needs no extra library
and no random seed; with only a few tens of videos (the usual size of such a plot) t-SNE/UMAP give little more.
Each video is the thumbnail of its middle frame, framed in its label's colour, with a legend of the labels.

    from tools.inference.feature_map import project_2d, plot_feature_map
    xy, explained = project_2d(features)                 # (V, 2), share of the variance the two axes keep
    plot_feature_map(arrays, "data/ucf101", "map.png")   # arrays: what extract_features returns
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from data.atomic import save_figure_png
from data.labels import safe_video_dir
from data.store import open_video

__all__ = ["FeatureMap", "middle_frame", "plot_feature_map", "project_2d"]

log = logging.getLogger(__name__)

THUMB_SIDE = 48  # pixels of the longer side of a thumbnail in the stored image grid


@dataclass(frozen=True)
class FeatureMap:
    """What `plot_feature_map` wrote: the PNG, the 2-D points (video order) and the variance they keep."""

    path: str
    videos: int
    method: str
    points: np.ndarray
    explained: float | None


def project_2d(features: np.ndarray) -> tuple[np.ndarray, float]:
    """PCA to two dimensions: ``(V, 2)`` coordinates and the share of the total variance they explain.

    Each axis is oriented so that its largest-magnitude loading is positive (deterministic signs).
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"a 2-D map needs features of at least 2 videos, got shape {x.shape}")
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    xy = x @ axes.T
    if xy.shape[1] < 2:  # one feature dimension: a line
        xy = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)
    total = float((s ** 2).sum())
    return xy.astype(np.float32), float((s[:2] ** 2).sum() / total) if total > 0 else 0.0


def middle_frame(video_dir: str | os.PathLike) -> np.ndarray:
    """The middle frame (RGB uint8) of a converted video, shrunk so its longer side is `THUMB_SIDE` pixels."""
    import cv2

    with open_video(video_dir) as reader:
        frame = reader.read([len(reader) // 2])[0]
    h, w = frame.shape[:2]
    scale = THUMB_SIDE / max(h, w)
    if scale < 1:
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return frame


def plot_feature_map(arrays: dict[str, np.ndarray], dataset_root: str | os.PathLike, path: str | os.PathLike,
                     title: str = "", zoom: float = 1.0) -> FeatureMap:
    """Draw ``arrays["features"]`` in 2-D with a thumbnail per video (``video_ids`` / ``label_names`` say which
    video of `dataset_root`), framed in the colour of its label; writes `path` (PNG) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    feats = arrays["features"]
    ids, labels = [str(v) for v in arrays["video_ids"]], [str(v) for v in arrays["label_names"]]
    xy, explained = project_2d(feats)
    classes = list(dict.fromkeys(str(c) for c in arrays.get("classes", sorted(set(labels)))))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colour = {c: cmap(i % cmap.N) for i, c in enumerate(classes)}

    fig, ax = plt.subplots(figsize=(9, 8))
    for c in classes:  # invisible points: the axis limits and the legend
        mask = np.array([lab == c for lab in labels])
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], s=30, color=colour[c], label=c, alpha=0.9)
    span = float(np.ptp(xy, axis=0).max()) or 1.0
    for (x, y), vid, lab in zip(xy, ids, labels):
        frame = middle_frame(safe_video_dir(dataset_root, lab, vid))
        box = AnnotationBbox(OffsetImage(frame, zoom=0.6 * zoom), (x, y), frameon=True, pad=0.15,
                             bboxprops={"edgecolor": colour.get(lab, "black"), "linewidth": 2.5})
        ax.add_artist(box)
    ax.margins(0.12)
    ax.set_xlim(xy[:, 0].min() - 0.1 * span, xy[:, 0].max() + 0.1 * span)
    ax.set_ylim(xy[:, 1].min() - 0.1 * span, xy[:, 1].max() + 0.1 * span)
    ax.set(xlabel="PC 1", ylabel="PC 2",
           title=(title + "  " if title else "") + f"({len(ids)} videos, PCA keeps {explained:.1%} of the variance)")
    ax.legend(loc="best", fontsize=8, title="label")
    fig.tight_layout()
    path = save_figure_png(fig, path)
    log.info("feature map of %d videos written to %s", len(ids), path)
    return FeatureMap(str(path), len(ids), "pca", xy, explained)
