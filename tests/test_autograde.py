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
        solution = nbformat.read(notebook_path("source", lesson), as_version=4)
        release = nbformat.read(notebook_path("release", lesson), as_version=4)
        total = sum(_points(solution).values())
        index, exercise, check = _last_exercise(solution)
        wrong = nbformat.read(notebook_path("source", lesson), as_version=4)
        at = next(
            i
            for i, c in enumerate(release.cells)
            if c.metadata.get("nbgrader", {}).get("grade_id") == exercise
        )
        wrong.cells[index].source = release.cells[at].source
        only_last = nbformat.read(notebook_path("release", lesson), as_version=4)
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
        solution = nbformat.read(notebook_path("source", lesson), as_version=4)
        for cell in solution.cells:
            for block in HIDDEN.findall(cell.source):
                for line in filter(None, (s.strip() for s in block.splitlines())):
                    assert line not in text, f"hidden test shown in {html}: {line}"


def _csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_export_writes_every_format_with_late_penalties(graded):
    """make export: nbgrader's grades.csv, one row per student, and Canvas's import format, all
    with the late penalty nbgrader recorded taken off the score."""
    from nbgrader.api import Gradebook

    from helpers.grading.export import CANVAS_POINTS_ROW, CANVAS_STUDENT_COLUMNS

    course, expected, _ = graded
    database = f"sqlite:///{course / 'grading' / 'gradebook.db'}"
    late = ("only_last", lesson_ids()[0])
    with Gradebook(database) as gb:
        notebook = gb.find_submission_notebook(late[1], late[1], late[0])
        notebook.late_submission_penalty = 1.0
        gb.db.commit()
        most = {a.name: a.max_score for a in gb.assignments}
    try:
        _grading(course, "export")
    finally:
        with Gradebook(database) as gb:
            gb.find_submission_notebook(late[1], late[1], late[0]).late_submission_penalty = None
            gb.db.commit()
    score = dict(expected)
    score[late] -= 1.0
    students = sorted({s for s, _ in expected})

    header, *rows = _csv(course / "grading" / "grades.csv")
    nbgrader_rows = [dict(zip(header, row, strict=True)) for row in rows]
    seen = {(r["student_id"], r["assignment"]): float(r["score"]) for r in nbgrader_rows}
    assert seen == pytest.approx(score)

    header, *rows = _csv(course / "grading" / "grades-by-student.csv")
    assert header[:4] == ["student_id", "last_name", "first_name", "email"]
    assert header[-2:] == ["total", "max_total"] and sorted(header[4:-2]) == sorted(most)
    assert [row[0] for row in rows] == students
    for row in rows:
        values = dict(zip(header, row, strict=True))
        mine = {lesson: float(values[lesson]) for lesson in most}
        assert mine == pytest.approx({lesson: score[row[0], lesson] for lesson in most})
        assert float(values["total"]) == pytest.approx(sum(mine.values()))
        assert float(values["max_total"]) == sum(most.values())

    header, points, *rows = _csv(course / "grading" / "grades-canvas.csv")
    # Canvas's gradebook import: its five student columns, one column per assignment, a row of
    # the most points, then one row per student
    assert tuple(header[:5]) == CANVAS_STUDENT_COLUMNS and sorted(header[5:]) == sorted(most)
    assert points[:5] == [CANVAS_POINTS_ROW, "", "", "", ""]
    assert [float(p) for p in points[5:]] == [most[lesson] for lesson in header[5:]]
    assert sorted(row[3] for row in rows) == students  # SIS Login ID: the nbgrader id
    for row in rows:
        got = {lesson: float(v) for lesson, v in zip(header[5:], row[5:], strict=True)}
        assert got == pytest.approx({lesson: score[row[3], lesson] for lesson in most})


def test_canvas_export_takes_ids_from_a_roster(graded, tmp_path, caplog):
    from nbgrader.api import Gradebook

    from helpers.grading.export import CanvasCsvExportPlugin

    course, _, _ = graded
    roster = tmp_path / "canvas.csv"
    roster.write_text(
        "Student,ID,SIS User ID,SIS Login ID,Section,Quiz 1 (77)\n"
        "    Points Possible,,,,,10\n"
        '"Lovelace, Ada",1234,S-1,one_wrong,Section A,9\n',
        encoding="utf-8",
    )
    target = tmp_path / "out.csv"
    with Gradebook(f"sqlite:///{course / 'grading' / 'gradebook.db'}") as gb:
        CanvasCsvExportPlugin(roster=str(roster), to=str(target)).export(gb)
    rows = {row[3]: row for row in _csv(target)[2:]}
    assert rows["one_wrong"][:5] == ["Lovelace, Ada", "1234", "S-1", "one_wrong", "Section A"]
    # not in the roster: still written, by login, and said
    assert rows["only_last"][1:4] == ["", "", "only_last"]
    assert "only_last" in caplog.text and "not in the Canvas roster" in caplog.text
    roster.write_text("Name,Login\nAda,one_wrong\n", encoding="utf-8")
    with (
        Gradebook(f"sqlite:///{course / 'grading' / 'gradebook.db'}") as gb,
        pytest.raises(ValueError, match="missing: Student, ID"),
    ):
        CanvasCsvExportPlugin(roster=str(roster), to=str(target)).export(gb)
    with pytest.raises(AssertionError, match="no such file"):
        run_grader(course, "export", "--canvas-roster", str(tmp_path / "missing.csv"))


def test_nbgraders_own_autograde_refuses_and_names_make_autograde(graded):
    """``nbgrader autograde`` (and the Formgrader's button, the same converter) would run the
    submission unsandboxed: the course's configuration makes it stop first, with the way."""
    from nbgrader.api import Gradebook

    from helpers.grading.common import nbgrader

    course, expected, _ = graded
    lesson = lesson_ids()[0]
    database = f"sqlite:///{course / 'grading' / 'gradebook.db'}"
    result = nbgrader(course, "autograde", lesson, "--student=one_wrong", "--force", check=False)
    assert result.returncode != 0
    assert "make autograde" in result.stdout + result.stderr
    with Gradebook(database) as gb:
        assert gb.find_submission(lesson, "one_wrong").score == expected["one_wrong", lesson]


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
