"""Rounding shared by shape schedules: half-up (not banker's) rounding, to an integer or to a multiple."""
from __future__ import annotations

import math

__all__ = ["round_half_up", "round_to_multiple"]


def round_half_up(x: float) -> int:
    """Nearest integer, halves rounded up (Python's `round` rounds 2.5 to 2: schedules must not depend on parity)."""
    return int(math.floor(x + 0.5))


def round_to_multiple(x: float, multiple: int) -> int:
    """Nearest multiple of `multiple` (halves up), at least `multiple`."""
    return max(multiple, round_half_up(x / multiple) * multiple)
