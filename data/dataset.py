"""Map-style video clip dataset over the SQLite frame store.

``VideoDataset(root, labels_csv, split, clip_length, frame_interval, transform, clips_per_video)`` reads the label
CSV of a dataset root, maps labels to class indices through ``classes.txt`` and returns
``(clip (3, T, H, W) float tensor, label int, video_index int)``.

- Training (``train=True``, the default for ``split="train"``): one item per video, a random clip per access
  (`RandomClipSampler`). Evaluation: ``clips_per_video`` deterministic, evenly spaced clips per video
  (`UniformClipSampler`), item ``i`` is clip ``i % K`` of video ``i // K``.
- Only the frame counts are read at construction, from the dataset index (``index.db``, `data.index`: one file,
  no per-video access), else from each video's ``n_frames`` file; databases are opened lazily through
  the per-process reader cache (`data.store.get_reader`), so no SQLite connection ever crosses a ``fork()`` into
  DataLoader workers.
- Frames are decoded at reduced scale (libjpeg-turbo DCT scaling) when the transform's crop needs fewer pixels
  than are stored (``transform.min_short_side``), e.g. multigrid's small crops.
- Randomness: each item gets its own generator seeded from ``torch.initial_seed()`` (different in every
  DataLoader worker), the epoch (`set_epoch`, shared with persistent workers), the item index and a per-process
  draw counter (so persistent workers and the main process never repeat a clip's augmentation, even when nobody
  calls `set_epoch`). A fixed seed reproduces a run; with `set_epoch` an epoch's draws depend only on the seed and
  the epoch, so a resumed run draws what an uninterrupted one would.
- Items may be ``(index, cycle)`` pairs from multigrid's short-cycle batch sampler (`data.short_cycle`): the crop
  size is then ``short_cycle_sizes[cycle]``. `set_shape` changes clip length, interval and crops between epochs.

Labels' ``time_start``/``time_end`` are not used: trimmed clips (Kinetics) are stored already trimmed, under an id
that encodes the times.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data.bad_clips import BAD_CLIP_POLICIES, BadVideoFlags, with_repair
from data.columns import IntColumn, LazySequence
from data.index import stale_classes
from data.label_table import open_label_table, release_freed_memory
from data.labels import SPLITS, LabelError, Sample, read_classes
from data.rank_logging import SAME_ON_EVERY_RANK
from data.sampling import RandomClipSampler, UniformClipSampler, as_intervals, eval_interval
from data.short_cycle import short_cycle_crop_sizes
from data.store import (
    DB_NAME,
    N_FRAMES_NAME,
    FrameStoreError,
    collect_missing_markers,
    get_reader,
    read_n_frames,
    reduce_for,
)
from data.transforms import ToTensorNormalize

log = logging.getLogger(__name__)

__all__ = ["VideoDataset"]

_MAX_LISTED = 5
# Bad videos met in a row by one item before it gives up (a dataset this broken needs repair, not skips).
_MAX_REPLACEMENTS = 20


def _resolve_labels_csv(root: Path, labels_csv: str | os.PathLike | None) -> Path:
    """An existing path as given, else ``<root>/labels/<name>[.csv]``; default ``<root>/labels/all.csv``."""
    if labels_csv is None:
        return root / "labels" / "all.csv"
    path = Path(labels_csv)
    if path.is_file():
        return path
    for candidate in (root / "labels" / path, root / "labels" / f"{path}.csv"):
        if candidate.is_file():
            return candidate
    return path  # read_labels reports it as not found


class VideoDataset(Dataset):
    """Clips of the videos of one split of a dataset root (see the module docstring).

    Args:
        root: dataset root holding ``jpg/<label>/<video_id>/frames.db`` and ``labels/``.
        labels_csv: label CSV path or name under ``<root>/labels/`` (default ``labels/all.csv``).
        split: rows of this split (``train``, ``val``, ``test``); None keeps every row.
        clip_length: frames per clip (`set_shape` changes it, e.g. for the multigrid long cycle).
        frame_interval: frame step, or a list to draw from in training (evaluation uses the middle value).
        transform: a `ClipTransform` ``t(clip, rng[, crop_size])`` returning ``(3, T, H, W)``; default: only
            `ToTensorNormalize` (full frames, normalised).
        clips_per_video: evaluation clips per video (K).
        classes: class names in index order; default ``<root>/classes.txt``, else the sorted labels of the CSV.
        train: random clips (True) or K evenly spaced clips (False); default ``split == "train"``.
        bad_clips: what a training item does when its video cannot be read: ``"fail"`` raises `FrameStoreError`
            naming the video, the frame and the repair command; ``"skip"`` replaces it by another video drawn from
            the item's generator and marks it (`bad_videos`). Evaluation items always fail.
    """

    def __init__(self, root: str | os.PathLike, labels_csv: str | os.PathLike | None = None,
                 split: str | None = "train", clip_length: int = 16, frame_interval: int | Sequence[int] = 2,
                 transform=None, clips_per_video: int = 1, classes: Sequence[str] | None = None,
                 train: bool | None = None, bad_clips: str = "fail"):
        self.root = Path(root)
        if bad_clips not in BAD_CLIP_POLICIES:
            raise ValueError(f"bad_clips must be one of {BAD_CLIP_POLICIES}, got {bad_clips!r}")
        if not (self.root / "jpg").is_dir():
            raise FrameStoreError(f"{self.root}: not a dataset root (no jpg/ folder)")
        if clip_length < 1 or clips_per_video < 1:
            raise ValueError(f"clip_length and clips_per_video must be >= 1, got {clip_length}, {clips_per_video}")
        self.labels_csv = _resolve_labels_csv(self.root, labels_csv)
        if not self.labels_csv.exists():
            have = sorted(q.name for q in (self.root / "labels").glob("*.csv"))
            raise LabelError(f"{self.labels_csv}: label file not found; {self.root / 'labels'} holds "
                             f"{', '.join(have[:_MAX_LISTED * 2]) or 'no label files'}")
        cols = open_label_table(self.root, self.labels_csv)
        self.split = split
        self.train = (split == "train") if train is None else bool(train)
        self.clip_length = int(clip_length)
        self.frame_interval = frame_interval
        as_intervals(frame_interval)  # validate now rather than in a worker
        self.clips_per_video = int(clips_per_video)
        self.transform = transform if transform is not None else ToTensorNormalize()
        self.short_cycle_sizes: list[int] | None = None

        self.classes = self._load_classes(classes, cols.label_names)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        # Per-video fields live in numpy buffers (data.columns): no Python object per video to be copied into
        # every DataLoader worker; `samples`, `labels`, `video_dirs` and `n_frames` are array-backed views.
        keep = (np.ones(len(cols), dtype=bool) if split is None else
                cols.split_codes == (SPLITS.index(split) if split in SPLITS else -1))
        if not keep.any():
            raise ValueError(f"{self.labels_csv}: no rows for split {split!r}")
        self._label_names = cols.label_names
        self._label_codes = cols.label_codes[keep]
        self._split_codes = cols.split_codes[keep]
        self._video_ids = cols.video_ids.select(keep)
        index_counts = None if cols.index_counts is None else cols.index_counts[keep]
        class_mtimes = cols.class_mtimes
        del cols
        used = sorted({self._label_names[c] for c in np.unique(self._label_codes).tolist()})
        unknown = [lb for lb in used if lb not in self.class_to_idx]
        if unknown:
            raise ValueError(f"{self.labels_csv}: label(s) {unknown[:_MAX_LISTED]} not in the class list "
                             f"({len(unknown)} unknown)")
        code_to_class = np.array([self.class_to_idx.get(n, -1) for n in self._label_names], dtype=np.int64)
        self.labels = IntColumn(code_to_class[self._label_codes])
        n = len(self._label_codes)
        self.samples = LazySequence(n, self._sample)
        self.video_dirs = LazySequence(n, self._video_dir)
        with collect_missing_markers(str(self.labels_csv)):
            self.n_frames = IntColumn(self._count_frames(index_counts, class_mtimes))
        del index_counts
        release_freed_memory()  # before any fork: the parse's and the full table's freed pages
        # Epoch number in shared memory, so that persistent DataLoader workers see `set_epoch` too.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._pid, self._seen_epoch, self._draws = -1, -1, 0
        # Evaluation never skips: a score over silently replaced videos would not be the dataset's score.
        self.skip_bad = bad_clips == "skip" and self.train
        self._bad = BadVideoFlags(n) if self.skip_bad else None
        log.info("%s split=%s: %d videos, %d classes, %s", self.labels_csv, split, len(self.samples),
                 len(self.classes), "train" if self.train else f"eval x{self.clips_per_video}")

    # -- construction ----------------------------------------------------------------------------------------
    def _load_classes(self, classes: Sequence[str] | None, label_names: list[str]) -> list[str]:
        if classes is not None:
            classes = list(classes)
            if len(set(classes)) != len(classes):
                raise ValueError("classes contains duplicates")
            return classes
        classes_file = self.root / "classes.txt"
        if classes_file.is_file():
            return read_classes(classes_file)
        # Sorted over every split of the CSV, so that train and val map labels identically.
        log.warning("%s not found; class indices from the sorted labels of %s", classes_file, self.labels_csv,
                    extra=SAME_ON_EVERY_RANK)
        return sorted(label_names)

    def _sample(self, i: int) -> Sample:
        return Sample(video_id=self._video_ids[i], label=self._label_names[self._label_codes[i]],
                      split=SPLITS[self._split_codes[i]])

    def _video_dir(self, i: int) -> Path:
        return self.root / "jpg" / self._label_names[self._label_codes[i]] / self._video_ids[i]

    def _count_frames(self, index_counts: np.ndarray | None, class_mtimes: dict[str, int]) -> np.ndarray:
        """Frame counts from the dataset index (`data.index`, joined by `data.label_table`), else from each
        video's ``n_frames`` file.

        Videos the index lacks, and those of classes whose folder changed since indexing, fall back to their
        marker files (one warning); a video with neither marker nor database is an error.
        """
        n = len(self._video_ids)
        counts = np.zeros(n, dtype=np.int64)
        todo = np.arange(n)
        if index_counts is not None:
            used = np.unique(self._label_codes)
            stale = stale_classes(self.root, class_mtimes, [self._label_names[c] for c in used.tolist()])
            stale_codes = np.array([i for i, name in enumerate(self._label_names) if name in stale], dtype=np.int64)
            counts[:] = index_counts
            counts[np.isin(self._label_codes, stale_codes)] = 0
            todo = np.flatnonzero(counts == 0)
        missing: list[str] = []
        for i in todo.tolist():
            video_dir = self._video_dir(i)
            if not (video_dir / N_FRAMES_NAME).is_file() and not (video_dir / DB_NAME).is_file():
                missing.append(f"{self._label_names[self._label_codes[i]]}/{self._video_ids[i]}")
                continue
            frames = read_n_frames(video_dir)
            if frames < 1:
                raise FrameStoreError(f"{video_dir / N_FRAMES_NAME}: video has {frames} frames")
            counts[i] = frames
        if missing:
            listed = ", ".join(missing[:_MAX_LISTED]) + (", ..." if len(missing) > _MAX_LISTED else "")
            raise FrameStoreError(f"{self.labels_csv}: {len(missing)} of {n} videos of split "
                                  f"{self.split!r} are not in {self.root / 'jpg'}: {listed}; convert them, or "
                                  f"write the labels again without them: python -m tools.make_labels DATASET ... "
                                  f"{self.root} --drop-missing")
        if index_counts is not None and len(todo):
            # Only now: for videos that are missing altogether, updating the index is not the advice that applies.
            log.warning("%s: %d of %d videos are not in the index or in class folders changed since it was "
                        "written (%s); reading their n_frames files (update it: python -m tools.index %s)",
                        self.labels_csv, len(todo), n, ", ".join(sorted(stale)[:_MAX_LISTED]) or "none stale",
                        self.root, extra=SAME_ON_EVERY_RANK)
        return counts

    def set_shape(self, clip_length: int, frame_interval: int | Sequence[int], crop_size: int,
                  short_cycle_sizes: Sequence[int] | None = None) -> None:
        """Change the clip shape (multigrid): frames per clip, frame interval(s), crop size and the crops of the
        short-cycle slots (None: no short cycle)."""
        if clip_length < 1 or crop_size < 1:
            raise ValueError(f"clip_length and crop_size must be >= 1, got {clip_length}, {crop_size}")
        as_intervals(frame_interval)
        if not hasattr(self.transform, "crop_size"):
            raise ValueError(f"{type(self.transform).__name__} has no crop size to change")
        self.clip_length = int(clip_length)
        self.frame_interval = frame_interval if isinstance(frame_interval, int) else list(frame_interval)
        self.transform.crop_size = int(crop_size)
        self.short_cycle_sizes = None if short_cycle_sizes is None else [int(c) for c in short_cycle_sizes]

    # -- sampling --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples) if self.train else len(self.samples) * self.clips_per_video

    def set_epoch(self, epoch: int) -> None:
        """Make the random draws of this epoch a function of (seed, epoch) only (exact resume).

        Seen by persistent workers as well. Without it, draws still differ from epoch to epoch (a per-process
        counter keeps running), but then depend on everything drawn before in that process.
        """
        self._epoch.fill_(int(epoch))

    def _item_rng(self, index: int) -> np.random.Generator:
        """A fresh generator for one item from torch's process seed, the epoch, the index and a draw counter.

        The counter restarts in every new process (DataLoader worker) and when the epoch changes.
        """
        epoch = int(self._epoch)
        if self._pid != os.getpid() or self._seen_epoch != epoch:
            self._pid, self._seen_epoch, self._draws = os.getpid(), epoch, 0
        self._draws += 1
        return np.random.default_rng([torch.initial_seed() % 2 ** 63, epoch, index, self._draws])

    def eval_interval(self) -> int:
        """Frame interval used by evaluation: the value, or the middle of a list."""
        return eval_interval(self.frame_interval)

    def frame_indices(self, index: int, rng: np.random.Generator | None = None) -> tuple[int, np.ndarray]:
        """(video index, frame indices) of item `index`; training items need `rng`."""
        if self.train:
            video = index
            sampler = RandomClipSampler(self.clip_length, self.frame_interval)
            return video, sampler(self.n_frames[video], rng)
        video, clip = divmod(index, self.clips_per_video)
        sampler = UniformClipSampler(self.clip_length, self.eval_interval(), self.clips_per_video)
        return video, sampler(self.n_frames[video], clip)

    def crop_size_for(self, cycle: int) -> int:
        """Crop size of short-cycle slot `cycle`, from `short_cycle_sizes` or the short cycle's default crops."""
        sizes = self.short_cycle_sizes
        if sizes is None:
            base = getattr(self.transform, "crop_size", None)
            if base is None:
                raise ValueError("short-cycle item, but neither short_cycle_sizes nor transform.crop_size is set")
            sizes = short_cycle_crop_sizes(int(base))
        if not 0 <= cycle < len(sizes):
            raise IndexError(f"short cycle {cycle} out of range for sizes {list(sizes)}")
        return int(sizes[cycle])

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, cycle = item if isinstance(item, (tuple, list)) else (item, None)
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        crop_size = None if cycle is None else self.crop_size_for(int(cycle))
        rng = self._item_rng(index)
        video, indices = self.frame_indices(index, rng)
        tried: list[int] = []
        while True:
            try:
                frames = self._read(video, indices, crop_size)
                break
            except FrameStoreError as e:
                if not self.skip_bad:
                    raise FrameStoreError(with_repair(str(e), self.root)) from e
                self._bad.mark(video, int(self._epoch))
                tried.append(video)
                video = self._replacement(tried, rng, e)
                indices = RandomClipSampler(self.clip_length, self.frame_interval)(self.n_frames[video], rng)
        if crop_size is None:
            clip = self.transform(frames, rng)
        else:
            clip = self.transform(frames, rng, crop_size=crop_size)
        return clip, int(self.labels.array[video]), video

    def _read(self, video: int, indices: np.ndarray, crop_size: int | None) -> np.ndarray:
        """The frames at `indices` of video `video`, decoded at the reduced scale the crop allows."""
        video_dir = self._video_dir(video)
        try:
            reader = get_reader(video_dir)
        except FrameStoreError as e:
            if not video_dir.exists():
                raise FrameStoreError(f"{video_dir}: video of {self.labels_csv} was removed after the dataset "
                                      f"was opened") from e
            raise
        return reader.read(indices, reduce=self._reduce(reader, crop_size))

    def _replacement(self, tried: list[int], rng: np.random.Generator, error: FrameStoreError) -> int:
        """Another video for an item whose videos in `tried` could not be read, drawn from the item's generator.

        Drawn from the item's own generator, the replacement is the same in every run and after a resume.
        """
        n = len(self.samples)
        if len(tried) >= min(n, _MAX_REPLACEMENTS):
            raise FrameStoreError(with_repair(f"{len(tried)} videos in a row could not be read, the last: {error}",
                                              self.root)) from error
        while True:
            video = int(rng.integers(n))
            if video not in tried:
                return video

    def bad_videos(self, epoch: int) -> list[int]:
        """Videos whose clips could not be read in `epoch` (any process), replaced by others (``bad_clips="skip"``)."""
        return [] if self._bad is None else self._bad.in_epoch(epoch)

    @property
    def bad_video_flags(self) -> BadVideoFlags | None:
        """The shared record of skipped videos (None unless ``bad_clips="skip"`` on a training set)."""
        return self._bad

    def _reduce(self, reader, crop_size: int | None) -> int:
        """Largest JPEG reduce factor that still gives the transform the short side it needs."""
        if crop_size is not None and hasattr(self.transform, "short_side_for"):
            need = self.transform.short_side_for(crop_size)
        else:
            need = getattr(self.transform, "min_short_side", None)
        return reduce_for(reader.frame_size, need) if need else 1

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, videos={len(self.samples)}, "
                f"classes={len(self.classes)}, clip_length={self.clip_length}, "
                f"frame_interval={self.frame_interval}, train={self.train}, clips_per_video={self.clips_per_video})")
