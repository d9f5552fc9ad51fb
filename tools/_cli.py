"""Shared helpers for the command-line tools: logging set-up and one-line fatal errors."""
from __future__ import annotations

import logging
import sys
from typing import NoReturn

import coloredlogs

_FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("tools")


def setup_logging(level: str | int = "INFO", log_file: str | None = None) -> None:
    """Coloured logs on the terminal and, if given, plain-text logs appended to `log_file`."""
    root = logging.getLogger()
    coloredlogs.install(level=level, fmt=_FMT, datefmt="%H:%M:%S", logger=root)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter(_FMT))
        root.addHandler(handler)


def die(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit with `code` (2: bad input or argument, 1: some work failed)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
