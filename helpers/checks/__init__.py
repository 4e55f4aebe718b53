"""Exercise checks, one module per lesson; each module's ``EXERCISES`` maps an exercise name to a
function that checks a notebook namespace (visible and hidden cases together)."""

from __future__ import annotations

import importlib

from helpers.checks.core import Cause, CheckFailure, assert_close, call, fail, get, report

#: lesson id -> module holding that lesson's checks.
LESSON_MODULES = {
    "01_intro_to_rnns": "helpers.checks.lesson01",
    "02_lstm_gate_math": "helpers.checks.lesson02",
    "03_time_series_rnn": "helpers.checks.lesson03",
    "04_char_lstm": "helpers.checks.lesson04",
}


def exercises(lesson: str) -> dict:
    """The ``EXERCISES`` of ``lesson`` (e.g. ``"01_intro_to_rnns"``)."""
    if lesson not in LESSON_MODULES:
        raise ValueError(f"unknown lesson {lesson!r}; expected one of {sorted(LESSON_MODULES)}")
    return importlib.import_module(LESSON_MODULES[lesson]).EXERCISES


__all__ = ["Cause", "CheckFailure", "assert_close", "call", "exercises", "fail", "get", "report"]
