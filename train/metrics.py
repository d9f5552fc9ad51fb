"""Classification metrics: top-k counts, windowed rates, clip/video accuracy, confusion matrices.

Everything here works on sums and counts (never means of batch means), so that epoch figures are weighted by
the number of samples and can be summed across distributed ranks before dividing.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


def topk_hits(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """`topk_correct` as an int64 tensor on the logits' device (nothing is read back to the host)."""
    if logits.ndim != 2 or target.ndim != 1 or logits.shape[0] != target.shape[0]:
        raise ValueError(f"topk_correct expects logits (N, C) and target (N,), got {tuple(logits.shape)} "
                         f"and {tuple(target.shape)}")
    max_k = min(max(ks), logits.shape[1])
    top = logits.topk(max_k, dim=1).indices  # (N, max_k)
    hits = top.eq(target.unsqueeze(1))
    return torch.stack([hits[:, : min(k, max_k)].any(dim=1).sum() for k in ks])


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the `k` highest scores, for each `k` (clamped to the classes)."""
    return [int(v) for v in topk_hits(logits, target, ks).tolist()]


class WindowAverage:
    """Mean of the last `size` (amount, seconds) pairs as a rate: sum(amounts) / sum(seconds)."""

    def __init__(self, size: int = 20) -> None:
        self.size = size
        self._items: list[tuple[float, float]] = []

    def update(self, amount: float, seconds: float) -> None:
        self._items.append((amount, seconds))
        if len(self._items) > self.size:
            self._items.pop(0)

    @property
    def rate(self) -> float:
        seconds = sum(s for _, s in self._items)
        return sum(a for a, _ in self._items) / seconds if seconds > 0 else float("nan")

    @property
    def seconds(self) -> float:
        """Total seconds in the window."""
        return sum(s for _, s in self._items)

    @property
    def mean_seconds(self) -> float:
        return sum(s for _, s in self._items) / len(self._items) if self._items else float("nan")

    def reset(self) -> None:
        self._items.clear()


@dataclass
class ClassificationSums:
    """Sums for one epoch of classification: loss*n, top-1 and top-5 hits, sample count."""

    loss: float = 0.0
    top1: int = 0
    top5: int = 0
    count: int = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float) -> tuple[int, int]:
        """Add one batch (its mean `loss`); returns the batch's (top-1, top-5) hit counts."""
        c1, c5 = topk_correct(logits.detach().float(), target, (1, 5))
        n = int(target.shape[0])
        self.loss += float(loss) * n
        self.top1 += c1
        self.top5 += c5
        self.count += n
        return c1, c5

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.loss, self.top1, self.top5, self.count], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> ClassificationSums:
        loss, top1, top5, count = t.tolist()
        return cls(loss, int(round(top1)), int(round(top5)), int(round(count)))

    def summary(self) -> dict[str, float]:
        """Means in percent (top1, top5) and the mean loss."""
        n = max(self.count, 1)
        return {"loss": self.loss / n, "top1": 100.0 * self.top1 / n, "top5": 100.0 * self.top5 / n,
                "samples": self.count}


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """`cm[t, p]` = number of samples of true class `t` predicted as `p`."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(target, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class in percent (NaN for a class with no samples)."""
    totals = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(cm) / np.maximum(totals, 1), np.nan)


@dataclass
class VideoAccumulator:
    """Collects clip scores for clip@k and video@k (softmax averaged over the clips of each video).

    `add(logits, labels, video_index, loss)` per batch; `result()` when done. Sums live in dense tensors indexed
    by video, so ranks that saw disjoint clips are merged by all-reducing them (`reduce`).
    """

    num_videos: int
    num_classes: int
    prob_sum: torch.Tensor = field(init=False)
    clip_count: torch.Tensor = field(init=False)
    video_label: torch.Tensor = field(init=False)
    clips: ClassificationSums = field(init=False)

    def __post_init__(self) -> None:
        self.prob_sum = torch.zeros(self.num_videos, self.num_classes, dtype=torch.float64)
        self.clip_count = torch.zeros(self.num_videos, dtype=torch.float64)
        self.video_label = torch.zeros(self.num_videos, dtype=torch.float64)
        self.clips = ClassificationSums()

    def add(self, logits: torch.Tensor, labels: torch.Tensor, video_index: torch.Tensor, loss: float) -> None:
        logits = logits.detach().float().cpu()
        labels = labels.cpu()
        video_index = video_index.cpu().long()
        self.clips.update(logits, labels, loss)
        self.prob_sum.index_add_(0, video_index, logits.softmax(dim=1).double())
        self.clip_count.index_add_(0, video_index, torch.ones(len(video_index), dtype=torch.float64))
        # All clips of a video carry its label; stored +1 so that 0 means "not seen here" and ranks merge by max.
        self.video_label[video_index] = (labels.long() + 1).double()

    def reduce(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor],
               reduce_max: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Merge with the other ranks in place: `reduce_sum(t)`/`reduce_max(t)` all-reduce one tensor.

        Ranks must have seen disjoint clips (a sharding sampler without padding); a video's clips may be split.
        """
        self.prob_sum = reduce_sum(self.prob_sum)
        self.clip_count = reduce_sum(self.clip_count)
        self.video_label = reduce_max(self.video_label)
        self.clips = ClassificationSums.from_tensor(reduce_sum(self.clips.as_tensor()))

    def result(self, topk: int = 5) -> EvalResult:
        seen = self.clip_count > 0
        probs = self.prob_sum[seen] / self.clip_count[seen].unsqueeze(1)
        labels = (self.video_label[seen] - 1).long()
        v1, vk = topk_correct(probs, labels, (1, topk)) if len(labels) else (0, 0)
        pred = probs.argmax(dim=1).numpy() if len(labels) else np.zeros(0, dtype=np.int64)
        cm = confusion_matrix(pred, labels.numpy(), self.num_classes)
        n = max(int(seen.sum()), 1)
        clip = self.clips.summary()
        return EvalResult(
            loss=clip["loss"], clip_top1=clip["top1"], clip_top5=clip["top5"], clips=self.clips.count,
            video_top1=100.0 * v1 / n, video_top5=100.0 * vk / n, videos=int(seen.sum()),
            confusion=cm, per_class=per_class_accuracy(cm), video_pred=pred, video_target=labels.numpy(),
            video_probs=probs.numpy(),
        )


@dataclass
class EvalResult:
    """Evaluation figures; accuracies in percent."""

    loss: float
    clip_top1: float
    clip_top5: float
    clips: int
    video_top1: float
    video_top5: float
    videos: int
    confusion: np.ndarray
    per_class: np.ndarray
    video_pred: np.ndarray
    video_target: np.ndarray
    video_probs: np.ndarray

    def as_dict(self) -> dict[str, float]:
        """The scalar figures (for CSV rows, logs, checkpoint metrics)."""
        return {"loss": self.loss, "clip_top1": self.clip_top1, "clip_top5": self.clip_top5,
                "video_top1": self.video_top1, "video_top5": self.video_top5, "clips": self.clips,
                "videos": self.videos}
