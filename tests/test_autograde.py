"""The instructor's loop in a temporary copy of the course: autograde, feedback, export.

Two students submit every lesson: the solution with its last exercise left unanswered (loses
exactly that exercise's points) and the unmodified release with only that exercise answered (earns
exactly its points). Between them every exercise earns its points once and scores 0 once, in two
notebooks a lesson instead of three (the full solutions get full marks in tests/test_hub.py,
through make check in tests/test_checks.py and on the judge's side in tests/test_remote.py).
"""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, lesson_ids, notebook_path
from support import HIDDEN_TESTS, course_copy, run_grader

pytestmark = pytest.mark.slow

HIDDEN = HIDDEN_TESTS


def _points(nb) -> dict[str, float]:
    return {
        c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


def _last_exercise(nb) -> tuple[int, str, str]:
    """(cell index, exercise grade_id, grade_id of the check that follows it)."""
    graded = [
        (i, c.metadata["nbgrader"]) for i, c in enumerate(nb.cells) if "nbgrader" in c.metadata
    ]
    for (i, meta), (_, nxt) in zip(graded[-2::-1], graded[::-1], strict=False):
        if meta.get("solution") and not meta.get("grade") and nxt.get("grade"):
            return i, meta["grade_id"], nxt["grade_id"]
    raise AssertionError("no exercise followed by a check")


def _grading(course: Path, command: str) -> str:
    # two notebooks at a time: the sandboxed grader's --jobs (helpers/grading/)
    extra = ["--jobs=2"] if command == "autograde" else []
    return run_grader(course, command, *extra).stdout


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = course_copy(tmp_path_factory.mktemp("course"))
    expected: dict[tuple[str, str], float] = {}
    for lesson in lesson_ids():
        solution = nbformat.read(notebook_path("solutions", lesson), as_version=4)
        release = nbformat.read(notebook_path("lessons", lesson), as_version=4)
        total = sum(_points(solution).values())
        index, exercise, check = _last_exercise(solution)
        wrong = nbformat.read(notebook_path("solutions", lesson), as_version=4)
        at = next(
            i
            for i, c in enumerate(release.cells)
            if c.metadata.get("nbgrader", {}).get("grade_id") == exercise
        )
        wrong.cells[index].source = release.cells[at].source
        only_last = nbformat.read(notebook_path("lessons", lesson), as_version=4)
        only_last.cells[at].source = solution.cells[index].source
        for student, nb, score in (
            ("one_wrong", wrong, total - _points(solution)[check]),
            ("only_last", only_last, _points(solution)[check]),
        ):
            folder = course / "grading" / "submitted" / student / lesson
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{lesson}.ipynb")
            expected[(student, lesson)] = score
    summary = _grading(course, "autograde")
    return course, expected, summary


def test_scores(graded):
    from nbgrader.api import Gradebook

    course, expected, summary = graded
    with Gradebook(f"sqlite:///{course / 'grading' / 'gradebook.db'}") as gb:
        got = {
            (student, lesson): gb.find_submission(lesson, student).score
            for student, lesson in expected
        }
    assert got == pytest.approx(expected), summary


def test_lessons_untouched_by_grading(graded):
    course, _, _ = graded
    for path in (ROOT / "lessons").rglob("*.ipynb"):
        copy = course / path.relative_to(ROOT)
        assert copy.read_bytes() == path.read_bytes(), f"grading changed {copy}"


def test_feedback_hides_hidden_tests(graded):
    course, expected, _ = graded
    _grading(course, "feedback")
    for (student, lesson), _ in expected.items():
        html = course / "grading" / "feedback" / student / lesson / f"{lesson}.html"
        assert html.is_file(), f"no feedback for {student}/{lesson}"
        text = html.read_text(encoding="utf-8")
        solution = nbformat.read(notebook_path("solutions", lesson), as_version=4)
        for cell in solution.cells:
            for block in HIDDEN.findall(cell.source):
                for line in filter(None, (s.strip() for s in block.splitlines())):
                    assert line not in text, f"hidden test shown in {html}: {line}"


def test_export_lists_every_submission(graded):
    course, expected, _ = graded
    _grading(course, "export")
    with open(course / "grading" / "grades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    seen = {(row["student_id"], row["assignment"]) for row in rows}
    assert {(s, lesson) for s, lesson in expected} <= seen


def test_lessons_are_registered_again_only_when_their_source_changes(graded, monkeypatch):
    """Every grading run registers its lessons in the gradebook (nbgrader generate_assignment,
    seconds each): a lesson recorded from the same source is skipped, a changed one is not."""
    from helpers.grading import common

    course, _, _ = graded
    calls = []
    monkeypatch.setattr(common, "nbgrader", lambda root, *args, **kw: calls.append(args))
    common.register_lessons(course, lessons=lesson_ids())
    assert calls == []
    lesson = lesson_ids()[0]
    source = course / "solutions" / lesson / f"{lesson}.ipynb"
    original = source.read_bytes()
    try:
        nb = nbformat.read(source, as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell("changed"))
        nbformat.write(nb, source)
        common.register_lessons(course, lessons=lesson_ids())
        assert [args[:2] for args in calls] == [("generate_assignment", lesson)]
    finally:
        source.write_bytes(original)
