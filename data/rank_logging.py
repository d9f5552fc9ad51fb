"""Log records that every process of a distributed run would write alike, and the filter that keeps them on one.

A fact about the dataset or the schedule (videos left out by drop_last, a missing classes file, a changed
schedule) is the same on every rank; written by each, it repeats world-size times. Such records carry
``extra=SAME_ON_EVERY_RANK``; the other ranks' handlers drop them (`RankSpecificOnly`) and keep their own warnings.
"""
from __future__ import annotations

import logging

__all__ = ["SAME_ON_EVERY_RANK", "RankSpecificOnly"]

SAME_ON_EVERY_RANK = {"same_on_every_rank": True}


class RankSpecificOnly(logging.Filter):
    """Drops records marked `SAME_ON_EVERY_RANK` (installed on the handlers of every rank but the main one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "same_on_every_rank", False)
