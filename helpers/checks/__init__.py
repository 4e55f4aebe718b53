"""Exercise checks, one module per lesson; each module's ``EXERCISES`` maps an exercise name to a
function that checks a notebook namespace (visible and hidden cases together)."""

from __future__ import annotations

import importlib

from helpers import course
from helpers.checks.core import Cause, CheckFailure, assert_close, call, fail, get, report


def exercises(lesson: str) -> dict:
    """The ``EXERCISES`` of ``lesson`` (a lesson id), from the module the course manifest
    (``helpers.course``) names for it."""
    if lesson not in course.lesson_ids():
        raise ValueError(f"unknown lesson {lesson!r}; expected one of {course.lesson_ids()}")
    return importlib.import_module(course.lesson(lesson).checks).EXERCISES


__all__ = ["Cause", "CheckFailure", "assert_close", "call", "exercises", "fail", "get", "report"]
