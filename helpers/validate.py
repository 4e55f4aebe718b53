"""The checks of a helper's arguments, written once.

Each raises a ``ValueError`` that names the argument, says what was expected and shows what came,
and otherwise returns the value, so that a helper can validate and assign in one line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable


def integer(name: str, value, minimum: int = 1, *, optional: bool = False) -> int | None:
    """``value`` is an ``int`` (not a ``bool``) of at least ``minimum`` (or ``None``, where
    ``optional``)."""
    if optional and value is None:
        return value
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        also = " or None" if optional else ""
        raise ValueError(f"{name} must be an int >= {minimum}{also}, got {value!r}")
    return value


def integers(minimum: int = 1, **values) -> None:
    """Every keyword argument is an ``int`` of at least ``minimum``."""
    for name, value in values.items():
        integer(name, value, minimum)


def positive(name: str, value, *, optional: bool = False):
    """``value`` is a finite real number above 0 (or ``None``, where ``optional``)."""
    if optional and value is None:
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or not value > 0
    ):
        also = " or None" if optional else ""
        raise ValueError(f"{name} must be a positive number{also}, got {value!r}")
    return value


def positives(**values) -> None:
    """Every keyword argument is a finite real number above 0."""
    for name, value in values.items():
        positive(name, value)


def fraction(name: str, value, *, closed: bool = False):
    """``value`` lies strictly between 0 and 1 (in ``[0, 1]`` where ``closed``)."""
    inside = isinstance(value, numbers.Real) and not isinstance(value, bool)
    inside = inside and (0 <= value <= 1 if closed else 0 < value < 1)
    if not inside:
        bounds = "in [0, 1]" if closed else "strictly between 0 and 1"
        raise ValueError(f"{name} must be a number {bounds}, got {value!r}")
    return value


def function(name: str, value, signature: str = "", *, optional: bool = False) -> Callable | None:
    """``value`` is callable (or ``None``, where ``optional``); ``signature`` says how it is
    called, for the message."""
    if (optional and value is None) or callable(value):
        return value
    shape = f" {signature}" if signature else ""
    also = " or None" if optional else ""
    raise ValueError(f"{name} must be a function{shape}{also}, got {type(value).__name__}")
