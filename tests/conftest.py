"""Shared fixtures: where the course is (from ``helpers.course``), and loaded notebooks (cached).

The layout names are re-exported here because the test files import them from conftest; shared
support code (a course copy, running the grader) is in ``tests/support/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import nbgrader_env

from helpers.course import LESSONS, ROOT, SOLUTIONS, lesson_ids, notebook_path, skip_iri_grammar

__all__ = ["LESSONS", "ROOT", "SOLUTIONS", "lesson_ids", "loaded", "nbgrader_env", "notebook_path"]

skip_iri_grammar()  # every test process reads notebooks with nbformat: seconds saved in each

# Tests always run the notebooks in fast mode.
os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

_LOADED: dict[Path, object] = {}

#: The test files that take minutes (they grade a corpus or a class, or drive Chromium), longest
#: first. They are collected first, so that make test's two workers (pytest-xdist, --dist
#: loadfile, which hands out files in collection order) start with them and end together;
#: every other file keeps its place after them. Only the schedule depends on this list.
LONGEST_FIRST = (
    "test_hostile_grading.py",
    "test_grading_resume.py",
    "test_grading_bounds.py",
    "test_hub.py",
    "test_browser.py",
    "test_autograde.py",
    "test_exchange.py",
    "test_merge.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: same order within


def loaded(path: Path):
    """``helpers.load_notebook(path)``, cached for the whole session."""
    from helpers import load_notebook

    if path not in _LOADED:
        _LOADED[path] = load_notebook(path)
    return _LOADED[path]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
