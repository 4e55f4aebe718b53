"""Shared fixtures: where the course is (from ``helpers.course``), and loaded notebooks (cached).

The layout names are re-exported here because the test files import them from conftest; shared
support code (a course copy, running the grader) is in ``tests/support/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import nbgrader_env

from helpers.course import LESSONS, ROOT, SOLUTIONS, lesson_ids, notebook_path

__all__ = ["LESSONS", "ROOT", "SOLUTIONS", "lesson_ids", "loaded", "nbgrader_env", "notebook_path"]

# Tests always run the notebooks in fast mode.
os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

_LOADED: dict[Path, object] = {}


def loaded(path: Path):
    """``helpers.load_notebook(path)``, cached for the whole session."""
    from helpers import load_notebook

    if path not in _LOADED:
        _LOADED[path] = load_notebook(path)
    return _LOADED[path]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
