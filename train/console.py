"""Console set-up shared by every command line: coloured logging and one-line fatal errors."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

import coloredlogs

from data.rank_logging import RankSpecificOnly

__all__ = ["DefaultsHelpFormatter", "add_process_options", "die", "setup_logging", "start_process"]

_FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# coloredlogs' default draws level names in bold black, invisible on a dark terminal: bold in the terminal's colour.
_FIELD_STYLES = {**coloredlogs.DEFAULT_FIELD_STYLES, "levelname": {"bold": True}}


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with each option's default once: not for flags (``--no-x ... (default: True)`` reads as the
    opposite), not when it is None, not when the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or isinstance(action.default, bool) or "default" in text
                or action.default is argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def setup_logging(level: str | int = "INFO", log_file: str | None = None, main_process: bool = True) -> None:
    """Coloured logs on the terminal and, if given, plain-text logs appended to `log_file`.

    `main_process=False` (the other ranks of a distributed run) drops records marked
    `data.rank_logging.SAME_ON_EVERY_RANK`, which the main process writes once for all."""
    root = logging.getLogger()
    coloredlogs.install(level=level, fmt=_FMT, datefmt="%H:%M:%S", logger=root, field_styles=_FIELD_STYLES)
    if not main_process:
        for handler in root.handlers:
            if not any(isinstance(f, RankSpecificOnly) for f in handler.filters):
                handler.addFilter(RankSpecificOnly())
    if log_file:
        handler = _LogFileHandler(log_file)
        handler.setFormatter(logging.Formatter(_FMT))
        root.addHandler(handler)


class _LogFileHandler(logging.FileHandler):
    """A log file that, when it cannot be written (disk full, /dev/full), says so once and is dropped.

    logging's default prints a traceback for every record that fails, which buries the terminal log.
    """

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        reason = getattr(err, "strerror", None) or err or "write failed"
        print(f"warning: cannot write the log file {self.baseFilename} ({reason}); logging to the terminal only",
              file=sys.stderr, flush=True)
        logging.getLogger().removeHandler(self)
        try:
            self.close()
        except OSError:
            pass  # closing flushes the same unwritable buffer


def die(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit with `code` (2: bad input or argument, 1: some work failed)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def add_process_options(parser: argparse.ArgumentParser, threads_help: str = "torch CPU threads (default: torch's choice)",
                        ) -> None:
    """``--threads`` and ``--log-file``, spelled the same in every tool that runs a model."""
    parser.add_argument("--threads", type=int, default=None, help=threads_help)
    parser.add_argument("--log-file", default=None, help="also append the log to this file")


def start_process(args: argparse.Namespace) -> None:
    """Apply `add_process_options`' options: logging (with the log file) and torch's CPU thread count."""
    setup_logging(log_file=args.log_file)
    if args.threads:
        import torch  # only the tools that run a model pay for it

        torch.set_num_threads(args.threads)
