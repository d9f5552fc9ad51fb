"""Tiny generated videos and frame stores for the data-pipeline tests (nothing is downloaded or committed)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import av
import numpy as np

from data.store import encode_jpeg, write_frames_db


def frame_value(i: int) -> int:
    """The grey level that frame `i` of a generated video carries (distinct, well apart, JPEG/codec proof)."""
    return (20 + 17 * i) % 236


def make_frames(n: int, height: int = 32, width: int = 48) -> np.ndarray:
    """`n` flat RGB frames; frame i has value `frame_value(i)` (red channel a little brighter, to catch BGR)."""
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        v = frame_value(i)
        frames[i] = (min(v + 15, 255), v, max(v - 15, 0))
    return frames


def make_video(path: str | Path, n_frames: int = 12, height: int = 32, width: int = 48, fps: int = 25,
               codec: str = "mpeg4") -> Path:
    """Write a small real encoded video (`mpeg4` or `h264` in mp4/avi/mkv) whose frame i has `frame_value(i)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}
        for rgb in make_frames(n_frames, height, width):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_store(video_dir: str | Path, n_frames: int = 12, height: int = 32, width: int = 48,
               quality: int = 95) -> Path:
    """A converted video folder (`frames.db` + `n_frames`) written by the real writer."""
    frames = make_frames(n_frames, height, width)
    write_frames_db(video_dir, (encode_jpeg(f, quality) for f in frames),
                    {"fps": 25, "codec": "test", "quality": quality, "source": "generated"})
    return Path(video_dir)


def make_legacy_store(video_dir: str | Path, n_frames: int = 12, height: int = 32, width: int = 48,
                      padded: bool = True, shuffle_seed: int = 0) -> Path:
    """A dataset2database-style `frames.db`: `Images(ObjId STRING, frames BLOB, size INT)`, no index, rows
    inserted in random order; `padded=False` writes `frame_9, frame_10` so that string order would be wrong."""
    video_dir = Path(video_dir)
    video_dir.mkdir(parents=True, exist_ok=True)
    frames = make_frames(n_frames, height, width)
    order = np.random.default_rng(shuffle_seed).permutation(n_frames)
    conn = sqlite3.connect(video_dir / "frames.db")
    conn.execute("CREATE TABLE Images(ObjId STRING, frames BLOB, size INT)")
    for i in order:
        obj_id = f"{video_dir.name}/frame_{i + 1:05d}" if padded else f"{video_dir.name}/frame_{i + 1}"
        conn.execute("INSERT INTO Images VALUES (?, ?, ?)", (obj_id, encode_jpeg(frames[i], 95), width))
    conn.commit()
    conn.close()
    (video_dir / "n_frames").write_text(f"{n_frames}\n")
    return video_dir


def frame_values(clip: np.ndarray) -> list[int]:
    """Per-frame mean of the green channel, rounded: recovers `frame_value(i)` from decoded frames."""
    return [int(round(float(f[..., 1].mean()))) for f in clip]
