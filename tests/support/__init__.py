"""What the tests share: a temporary copy of the course, running the grader, the hidden-test
pattern. Import it as ``from support import ...`` (tests/ is on pytest's path). Beside it:
``support.browser`` (JupyterLab in Chromium), ``support.hub`` (a class on JupyterHub) and
``support.hostile`` (the corpus of broken and hostile submissions)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import course
from helpers.grading.common import venv_env

#: A ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` block; group 1 is its content.
HIDDEN_TESTS = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


def nbgrader_env() -> dict[str, str]:
    """Environment for nbgrader subprocesses: the venv's bin/ first (nbgrader calls alembic)."""
    return venv_env(COURSE_FAST="1")


def course_copy(dest: Path, *, lessons: bool = True, files: tuple[str, ...] = ()) -> Path:
    """A course at ``dest``: ``nbgrader_config.py``, ``solutions/``, ``lessons/`` (unless
    ``lessons`` is False) and the top-level ``files`` named. Returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("nbgrader_config.py", *files):
        shutil.copy(course.ROOT / name, dest / name)
    shutil.copytree(course.SOLUTIONS, dest / "solutions")
    if lessons:
        shutil.copytree(course.LESSONS, dest / "lessons")
    return dest


def grader_command(root: Path, command: str, *args: str) -> list[str]:
    """The command line of ``python -m helpers.grading COMMAND --root ROOT ARGS``."""
    return [sys.executable, "-m", "helpers.grading", command, "--root", str(root), *args]


def run_grader(root: Path, command: str, *args: str, timeout: int = 900):
    """Run the grader's ``command`` on the course at ``root``; fail the test on a non-zero exit.

    Returns the ``CompletedProcess`` (text output captured).
    """
    result = subprocess.run(
        grader_command(root, command, *args),
        env=nbgrader_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return result
