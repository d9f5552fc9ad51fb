"""An argument parser for newcomers: a mistyped option or name ends in one line with the closest valid ones.

argparse answers ``--batchsize 4`` with its whole usage block and an invalid ``--network`` with every registered
name; `FriendlyParser` prints one line instead (``python -m train: error: unrecognized arguments: --batchsize
(did you mean --batch-size?)``) and exits with 2, naming the program as the user launched it.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import NoReturn

__all__ = ["FriendlyParser", "program_name", "closest"]

# Spellings of other training code that difflib cannot guess.
_SYNONYMS = {"--epochs": "--end-epoch", "--num-epochs": "--end-epoch", "--lr": "--lr-base",
             "--learning-rate": "--lr-base", "--num-workers": "--workers", "--seed": "--random-seed",
             "--data": "--dataset", "--arch": "--network", "--model": "--network"}
_INVALID_CHOICE = re.compile(r"^argument (?P<flag>[^:]+): invalid choice: '(?P<value>[^']*)'")
_DIGITS = re.compile(r"\d+")


def program_name(argv0: str | None = None) -> str:
    """How the user launched the program: ``python -m train`` for a package's ``__main__.py``, else the script."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(argv0) == "__main__.py":
        return f"python -m {os.path.basename(os.path.dirname(os.path.abspath(argv0)))}"
    return os.path.basename(argv0) or "python -m train"


def _normal(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def closest(word: str, candidates: list[str], n: int = 3) -> list[str]:
    """Up to `n` candidates closest to `word`; those with the same numbers (a network's depth) come first."""
    if word in _SYNONYMS and _SYNONYMS[word] in candidates:
        return [_SYNONYMS[word]]
    by_normal = {_normal(c): c for c in candidates}
    numbers = _DIGITS.findall(word)
    same_depth = [k for k, c in by_normal.items() if numbers and _DIGITS.findall(c) == numbers]
    found = difflib.get_close_matches(_normal(word), same_depth, n=n, cutoff=0.4)
    found += [m for m in difflib.get_close_matches(_normal(word), list(by_normal), n=n, cutoff=0.6) if m not in found]
    return [by_normal[m] for m in found[:n]]


class FriendlyParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are one line with suggestions (see the module docstring)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {self._suggest(message)}\n")

    def _suggest(self, message: str) -> str:
        match = _INVALID_CHOICE.match(message)
        if match:
            flag, value = match.group("flag"), match.group("value")
            action = next((a for a in self._actions if flag in a.option_strings or "/".join(a.option_strings) == flag),
                          None)
            choices = [str(c) for c in (action.choices or [])] if action is not None else []
            hint = closest(value, choices)
            tail = f"did you mean {', '.join(hint)}?" if hint else f"one of {len(choices)} names"
            return f"argument {flag}: invalid choice {value!r} ({tail} {self.prog} --help lists them all)"
        if message.startswith("unrecognized arguments: "):
            options = [o for o in self._option_string_actions if o.startswith("--")]
            words = message[len("unrecognized arguments: "):].split()
            hints = []
            for word in words:
                if word.startswith("--"):
                    hint = closest(word.split("=")[0], options, n=1)
                    if hint:
                        hints.append(f"{word.split('=')[0]}: did you mean {hint[0]}?")
            shown = " ".join(words) if len(" ".join(words)) <= 80 else " ".join(words)[:77] + "..."
            return f"unrecognized arguments: {shown}" + (f" ({'; '.join(hints)})" if hints else "")
        return message
