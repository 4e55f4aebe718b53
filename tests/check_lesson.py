"""A student's self-check: ``make check LESSON=01_intro_to_rnns``.

Loads the student's notebook from lessons/ (without its training cells) and runs every exercise's
full check, visible and hidden cases, one test per exercise. Not collected by ``make test``
(the file name does not start with ``test_``); tests/test_checks.py runs the same checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, loaded, notebook_path

from helpers.checks import CheckFailure, exercises


def _target(config) -> tuple[str, Path]:
    lesson = config.getoption("--lesson")
    if not lesson:
        raise pytest.UsageError("give the lesson: make check LESSON=01_intro_to_rnns")
    path = config.getoption("--notebook")
    path = Path(path).resolve() if path else notebook_path("lessons", lesson)
    if not path.is_file():
        raise pytest.UsageError(f"no notebook at {path}; lessons are in {ROOT / 'lessons'}")
    return lesson, path


def pytest_generate_tests(metafunc):
    if "exercise" in metafunc.fixturenames:
        lesson, _ = _target(metafunc.config)
        try:
            names = list(exercises(lesson))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from exc
        metafunc.parametrize("exercise", names)


@pytest.fixture(scope="module")
def namespace(request):
    lesson, path = _target(request.config)
    ns = loaded(path)
    other = [e for e in ns.errors if not isinstance(e.error, NotImplementedError)]
    for error in other:
        print(f"note: {path.name} {error} (while loading; the checks go on)")
    return lesson, ns


def test_exercise(namespace, exercise):
    lesson, ns = namespace
    try:
        exercises(lesson)[exercise](ns)
        message = None
    except CheckFailure as failure:
        message = str(failure)
    if message:
        pytest.fail(message, pytrace=False)
