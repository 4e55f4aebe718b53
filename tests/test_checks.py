"""Every exercise check passes on the reference solution and fails on the unsolved release."""

from __future__ import annotations

import pytest
from conftest import lesson_ids, loaded, notebook_path

from helpers.checks import CheckFailure, exercises

CASES = [(lesson, name) for lesson in lesson_ids() for name in exercises(lesson)]


@pytest.mark.parametrize(("lesson", "exercise"), CASES)
def test_solution_passes(lesson, exercise):
    ns = loaded(notebook_path("solutions", lesson))
    assert not ns.errors, f"solution notebook raised while loading: {ns.errors}"
    exercises(lesson)[exercise](ns)


@pytest.mark.parametrize(("lesson", "exercise"), CASES)
def test_release_fails(lesson, exercise):
    ns = loaded(notebook_path("lessons", lesson))
    with pytest.raises(CheckFailure) as failure:
        exercises(lesson)[exercise](ns)
    # The message must name the exercise (or the missing answer) so a student can act on it.
    assert str(failure.value).strip(), "a failing check must explain itself"


def test_every_lesson_has_checks():
    for lesson in lesson_ids():
        assert exercises(lesson), f"{lesson} has no exercises registered"
