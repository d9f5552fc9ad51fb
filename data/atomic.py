"""Atomic file writes: a temporary file in the target's folder, flushed and fsynced, then renamed over the target.

Readers (a resumed run, the dataset indexer, a plotting tool) therefore see either the previous file or the
complete new one, never a half-written file, even when the writer is killed mid-way.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "replace_durably",
           "save_figure_png"]


def replace_durably(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Fsync the finished file `tmp` and rename it over `final` (same folder, so the rename is atomic)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def _create_temp(path: Path) -> tuple[int, str]:
    # Not tempfile.mkstemp: its files are mode 0600, while the final file should get the usual umask mode.
    for _ in range(100):
        tmp = str(path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"))
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: cannot create a temporary file next to it")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to `path` for writing; on a clean exit it replaces `path`.

    `mode` is ``"wb"`` or ``"w"`` (then `open_kwargs` such as ``encoding`` and ``newline`` apply). On an error
    the temporary file is removed and `path` is left as it was. The parent folder must exist.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` for writers that want a file name (e.g. FFmpeg muxers); on a clean exit
    the finished file is fsynced and renamed over `path`, on an error it is removed."""
    path = Path(path)
    fd, tmp = _create_temp(path)
    os.close(fd)
    try:
        yield Path(tmp)
        replace_durably(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (no newline translation); returns the path."""
    with atomic_write(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(path)


def save_figure_png(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure to `path` as PNG atomically (creating its folder) and close the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
