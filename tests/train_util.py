"""Helpers for the trainer tests: a tiny in-memory motion dataset, a tiny model and a tiny real frame store."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

# The frame-based 2D baseline's registered name (no motion modelling: the demo's chance-level network).
FRAME_BASELINE = "fr2d_18"


class MotionClips(Dataset):
    """`n` clips (3, T, S, S): a bright square moving right (label 0) or left (label 1), plus fresh noise per access.

    The noise comes from the global torch RNG, so the trainer's per-epoch seeding decides what a run sees.
    """

    def __init__(self, n: int = 32, frames: int = 8, size: int = 16, classes: int = 2) -> None:
        self.n, self.frames, self.size, self.classes = n, frames, size, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        label = i % self.classes
        clip = torch.zeros(3, self.frames, self.size, self.size)
        row = (i * 5) % (self.size - 4)
        for t in range(self.frames):
            x = t if label == 0 else self.size - 4 - t
            clip[:, t, row:row + 4, x:x + 4] = 1.0
        clip += 0.05 * torch.randn_like(clip)
        return clip, label, i


class TinyNet(nn.Module):
    """A 3D conv, optional BN, global pooling and a linear classifier (with the zoo's interface)."""

    def __init__(self, num_classes: int = 2, width: int = 4, bn: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm3d(width) if bn else nn.Identity()
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3, 4))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc


def make_store(root: Path, classes: int = 4, videos_per_class: int = 4, frames: int = 16,
               size: tuple[int, int] = (32, 40), val_fraction: float = 0.25) -> Path:
    """A real converted dataset root (synthetic motion videos -> SQLite frame store) under `root`."""
    from tools import convert, synthetic

    videos, store = root / "videos", root / "store"
    synthetic.generate(videos, classes=classes, videos_per_class=videos_per_class, frames=frames, size=size,
                       workers=1, progress=False)
    with contextlib.redirect_stdout(io.StringIO()):
        rc = convert.main([str(videos), str(store), "--workers", "1", "--val-fraction", str(val_fraction)])
    assert rc == 0 and (store / "labels" / "all.csv").is_file()
    return store


def tiny_train_argv(store: Path, model_dir: Path, *extra: str, network: str = "mict_resnet18") -> list[str]:
    """CLI arguments of a fast CPU run: a tiny model (MiCT-ResNet-18 v2 at width 1/8) on 8x32x32 clips."""
    model = ["--network", network] + (["--model-arg", "version=v2"] if network.startswith("mict") else [])
    return ["--dataset", str(store), "--model-dir", str(model_dir), *model, "--width-mult", "0.125",
            "--clip-length", "8", "--clip-size", "32",
            "--train-frame-interval", "1", "2", "--val-frame-interval", "1", "--batch-size", "4", "--workers", "0",
            "--lr-base", "0.01", "--end-epoch", "1", "--log-interval", "1", *extra]


def run_rank(work) -> None:  # noqa: ANN001 - a callable taking the rank's DistInfo
    """Run `work(info)` in a spawned rank between `init_distributed` and the product's orderly `shutdown`.

    The work runs in its own frame so that the DDP model and its gloo work objects are gone before the group is
    destroyed; destroying the group while they live lets a gloo thread free them during interpreter teardown,
    which aborts the rank ("terminate called without an active exception").
    """
    from train.distributed import init_distributed, shutdown

    info = init_distributed()
    finished = False
    try:
        work(info)
        finished = True
    finally:
        shutdown(synchronize=finished)
