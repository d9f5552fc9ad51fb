"""The one model registry: `register_model`, `build_model(name, num_classes, **kw)`, `list_models()`."""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["build_model", "list_models", "model_defaults", "model_kwargs", "register_model", "register_name_hint"]

Builder = Callable[..., nn.Module]
_B = TypeVar("_B", bound=Builder)
_MODELS: dict[str, Builder] = {}
_HINTS: list[tuple[re.Pattern[str], str]] = []


def register_model(fn: _B | None = None, *, name: str | None = None) -> Any:
    """Decorator registering a builder `fn(num_classes=..., **kw) -> nn.Module` under `name` (default: its name)."""

    def deco(f: _B) -> _B:
        key = name or f.__name__
        if key in _MODELS and _MODELS[key] is not f:
            raise ValueError(f"model name {key!r} is registered twice")
        _MODELS[key] = f
        return f

    return deco(fn) if fn is not None else deco


def register_name_hint(pattern: str, hint: str) -> None:
    """Unknown names matching `pattern` (a full-match regex) get `hint` instead of the list of every name, e.g. a
    family member that does not exist (`mc1_18`) is told which members do."""
    _HINTS.append((re.compile(pattern), hint))


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return sorted(_MODELS)


def model_kwargs(name: str) -> list[str]:
    """Keyword arguments the builder of `name` accepts (besides `num_classes`)."""
    _check_name(name)
    params = inspect.signature(_MODELS[name]).parameters
    return [p for p in params if p != "num_classes"]


def model_defaults(name: str) -> dict[str, Any]:
    """Default value of every keyword argument of the builder of `name` (`num_classes` included)."""
    _check_name(name)
    params = inspect.signature(_MODELS[name]).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _check_name(name: str) -> None:
    if name not in _MODELS:
        for pattern, hint in _HINTS:
            if pattern.fullmatch(name):
                raise ValueError(f"unknown model {name!r}: {hint}")
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


def build_model(name: str, num_classes: int, **kw: Any) -> nn.Module:
    """Build the registered model `name` with a `num_classes`-way classifier.

    Unknown names and unknown keyword arguments raise `ValueError` listing what is valid.
    """
    _check_name(name)
    accepted = model_kwargs(name)
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {', '.join(unknown)}; it takes: {', '.join(accepted) or 'nothing'}"
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"num_classes must be a non-negative int, got {num_classes!r}")
    model = _MODELS[name](num_classes=num_classes, **kw)
    model._model_name = name
    return model
