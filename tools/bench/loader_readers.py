"""The clip readers `tools.bench.loader` compares: SQLite frame store, JPEG folder, PyAV, JPEGs in memory.

Each reader maps ``(video number, frame indices)`` to one ``(T, H, W, 3)`` uint8 RGB clip; `ClipSet` turns one into
a `torch.utils.data.Dataset` of clip numbers so that every reader is timed through the same `DataLoader`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data import store


class ClipSet(Dataset):
    """Items are clip numbers; `read(video, indices)` returns the (T, H, W, 3) uint8 RGB clip."""

    def __init__(self, clips: list[tuple[int, np.ndarray]], read: Callable[[int, np.ndarray], np.ndarray]):
        self.clips, self.read = clips, read

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        video, indices = self.clips[i]
        return torch.from_numpy(self.read(video, indices))


_RGB_FLAG = store.decode_flag(1)


def _decode_into(out: np.ndarray, blobs: list[bytes]) -> np.ndarray:
    for slot, blob in zip(out, blobs):
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), _RGB_FLAG)
        if store.DECODES_RGB:
            np.copyto(slot, img)
        else:
            cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=slot)
    return out


class SqlReader:
    """(a) through `data.store`: the default per-process cache, or a private one with other settings."""

    def __init__(self, dirs: list[Path], mode: str):
        self.dirs, self.mode = dirs, mode
        self._pid, self._readers = None, {}

    def __call__(self, video: int, indices: np.ndarray) -> np.ndarray:
        if self.mode == "cached":
            return store.get_reader(self.dirs[video]).read(indices)
        if self.mode == "reduce2":
            return store.get_reader(self.dirs[video]).read(indices, reduce=2)
        if self.mode == "per-clip":
            with store.open_video(self.dirs[video]) as reader:
                return reader.read(indices)
        if self._pid != os.getpid():  # "no-mmap", "unverified": a private per-process cache of readers
            self._pid, self._readers = os.getpid(), {}
        reader = self._readers.get(video)
        if reader is None:
            if self.mode == "unverified":
                reader = store.VideoReader(self.dirs[video])
                reader.checksummed = False  # what reading cost before per-frame checksums
            else:
                reader = store.VideoReader(self.dirs[video], mmap_size=0)
            self._readers[video] = reader
        return reader.read(indices)

    def reset(self) -> None:
        """Close this process's connections (and unmap the files) so that a cold pass really reads the disk."""
        store.close_cached_readers()
        for reader in self._readers.values():
            reader.close()
        self._readers = {}


class FolderReader:
    """(b) one JPEG file per frame: `<dir>/frame_%05d.jpg`, 1-based."""

    def __init__(self, dirs: list[Path], size: tuple[int, int]):
        self.dirs, self.size = dirs, size

    def __call__(self, video: int, indices: np.ndarray) -> np.ndarray:
        blobs = []
        for i in indices.tolist():
            with open(self.dirs[video] / f"frame_{i + 1:05d}.jpg", "rb") as f:
                blobs.append(f.read())
        return _decode_into(np.empty((len(indices), *self.size, 3), np.uint8), blobs)


class MemoryReader:
    """(d) the bound: the same JPEG bytes already in memory."""

    def __init__(self, blobs: list[list[bytes]], size: tuple[int, int]):
        self.blobs, self.size = blobs, size

    def __call__(self, video: int, indices: np.ndarray) -> np.ndarray:
        frames = self.blobs[video]
        return _decode_into(np.empty((len(indices), *self.size, 3), np.uint8), [frames[i] for i in indices.tolist()])


class PyAVReader:
    """(c) the source videos: open, seek to the keyframe before the clip, decode forward to its last frame."""

    def __init__(self, paths: list[Path], size: tuple[int, int]):
        self.paths, self.size = paths, size

    def __call__(self, video: int, indices: np.ndarray) -> np.ndarray:
        import av

        out = np.empty((len(indices), *self.size, 3), np.uint8)
        wanted: dict[int, list[int]] = {}
        for pos, i in enumerate(indices.tolist()):
            wanted.setdefault(i, []).append(pos)
        first, last = min(wanted), max(wanted)
        with av.open(str(self.paths[video])) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            rate, tb = stream.average_rate, stream.time_base
            t0 = stream.start_time or 0
            container.seek(t0 + int(first / rate / tb), stream=stream, backward=True)
            for frame in container.decode(stream):
                i = round(float((frame.pts - t0) * tb * rate))
                if i in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    for pos in wanted.pop(i):
                        out[pos] = rgb
                if i >= last:
                    break
        if wanted:
            raise RuntimeError(f"{self.paths[video]}: frames {sorted(wanted)[:5]} not decoded")
        return out
