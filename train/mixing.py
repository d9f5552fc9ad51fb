"""Mixup and CutMix for clip batches, one mixing decision per clip, with soft targets.

Each clip `i` of a batch is mixed with its partner `N-1-i` (the batch reversed, as timm's element mode): it draws
whether to mix at all (`prob`), mixup or CutMix (`switch_prob` when both are on) and its own lambda from
Beta(alpha, alpha). A CutMix box spans every frame of the clip at the same place, so motion inside the box stays
that of the pasted clip. Lambda of a CutMix clip is corrected to the box's real area. The targets are
`lam * onehot(y_i) + (1 - lam) * onehot(y_partner)`; label smoothing is left to the loss
(`nn.CrossEntropyLoss(label_smoothing=...)` accepts such probability targets).

Randomness comes from the mixer's own `torch.Generator`, which the trainer reseeds every epoch and stores in
mid-epoch checkpoints, so a resumed run mixes exactly as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["MixConfig", "ClipMixer", "cutmix_box"]


@dataclass(frozen=True)
class MixConfig:
    """Mixup and CutMix Beta alphas (0: off), the chance a clip is mixed and the chance of CutMix when both are on."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A box `(y0, y1, x0, x1)` covering about `1 - lam` of the frame, centred uniformly (clipped at the borders)."""
    ratio = math.sqrt(max(0.0, 1.0 - lam))
    bh, bw = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, height)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, width)
    return y0, y1, x0, x1


class ClipMixer:
    """Call `mixer(clips (N,C,T,H,W), labels (N,), num_classes)` -> `(mixed clips, soft targets (N, classes))`."""

    def __init__(self, config: MixConfig, seed: int = 0) -> None:
        if config.mixup_alpha < 0 or config.cutmix_alpha < 0:
            raise ValueError("mixup and cutmix alphas must be >= 0")
        if not 0 <= config.prob <= 1 or not 0 <= config.switch_prob <= 1:
            raise ValueError("mixing probabilities must be in [0, 1]")
        self.config = config
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def _beta(self, alpha: float) -> float:
        # Beta(a, a) from two Gammas drawn with our own generator (torch.distributions takes no generator).
        g1 = torch._standard_gamma(torch.tensor([alpha], dtype=torch.float64), generator=self.generator)
        g2 = torch._standard_gamma(torch.tensor([alpha], dtype=torch.float64), generator=self.generator)
        return float(g1 / (g1 + g2))

    def decisions(self, n: int, height: int, width: int) -> list[tuple[str, float, tuple[int, int, int, int] | None]]:
        """Per clip: ('none' | 'mixup' | 'cutmix', lambda, box or None), drawn in clip order."""
        c = self.config
        out = []
        for _ in range(n):
            if float(torch.rand((), generator=self.generator)) >= c.prob or not c.enabled:
                out.append(("none", 1.0, None))
                continue
            use_cutmix = c.cutmix_alpha > 0 and (
                c.mixup_alpha <= 0 or float(torch.rand((), generator=self.generator)) < c.switch_prob)
            if use_cutmix:
                lam = self._beta(c.cutmix_alpha)
                box = cutmix_box(height, width, lam, self.generator)
                y0, y1, x0, x1 = box
                out.append(("cutmix", 1.0 - (y1 - y0) * (x1 - x0) / float(height * width), box))
            else:
                out.append(("mixup", self._beta(c.mixup_alpha), None))
        return out

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
        if clips.dim() != 5:
            raise ValueError(f"expected clips (N, C, T, H, W), got shape {tuple(clips.shape)}")
        n, _, _, h, w = clips.shape
        decisions = self.decisions(n, h, w)
        # The decisions are drawn on the host; the batch is mixed with a few whole-batch kernels and never read
        # back, so a device batch costs no synchronisation.
        partner = torch.arange(n - 1, -1, -1, device=clips.device)
        source = clips[partner]  # a copy: clip i and its partner may both be mixed
        lams = [lam for _, lam, _ in decisions]
        mixup = [mode == "mixup" for mode, _, _ in decisions]
        if any(mixup):
            # 1 - lam is rounded from float64 as a Python scalar would be, so the result is the per-clip one.
            keep = torch.tensor([lam if m else 1.0 for m, lam in zip(mixup, lams)], dtype=clips.dtype)
            take = torch.tensor([1.0 - lam if m else 0.0 for m, lam in zip(mixup, lams)], dtype=clips.dtype)
            rows = torch.tensor(mixup).to(clips.device, non_blocking=True).view(n, 1, 1, 1, 1)
            mixed = (keep.to(clips.device, non_blocking=True).view(n, 1, 1, 1, 1) * clips
                     + take.to(clips.device, non_blocking=True).view(n, 1, 1, 1, 1) * source)
            clips = torch.where(rows, mixed, clips)
        boxes = [box if mode == "cutmix" else (0, 0, 0, 0) for mode, _, box in decisions]
        if any(mode == "cutmix" for mode, _, _ in decisions):
            b = torch.tensor(boxes, dtype=torch.int64)
            ys, xs = torch.arange(h), torch.arange(w)
            inside = (((ys >= b[:, 0:1]) & (ys < b[:, 1:2])).view(n, h, 1)
                      & ((xs >= b[:, 2:3]) & (xs < b[:, 3:4])).view(n, 1, w))
            clips = torch.where(inside.to(clips.device, non_blocking=True).view(n, 1, 1, h, w), source, clips)
        onehot = torch.nn.functional.one_hot(labels, num_classes).to(torch.float32)
        lam_t = torch.tensor(lams, dtype=torch.float32).to(onehot.device, non_blocking=True).unsqueeze(1)
        targets = lam_t * onehot + (1.0 - lam_t) * onehot[partner]
        return clips, targets
