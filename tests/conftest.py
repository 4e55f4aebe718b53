"""Shared fixtures: where the course is, which lessons exist, and loaded notebooks (cached)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
LESSONS = ROOT / "lessons"

# Tests always run the notebooks in fast mode.
os.environ.setdefault("COURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def lesson_ids() -> list[str]:
    """Every lesson: a folder of solutions/ holding a notebook of the same name."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").is_file())


def notebook_path(kind: str, lesson: str) -> Path:
    """``solutions`` or ``lessons`` notebook of ``lesson``."""
    return ROOT / kind / lesson / f"{lesson}.ipynb"


def nbgrader_env() -> dict[str, str]:
    """Environment for nbgrader subprocesses: the venv's bin/ first (nbgrader calls alembic)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["COURSE_FAST"] = "1"
    return env


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
