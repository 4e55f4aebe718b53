"""nbgrader's whole exchange cycle, with two students, in a temporary copy of the course.

Instructor steps are the ``make`` targets (``release-assignments``, ``collect``, ``autograde``,
``feedback``, ``release-feedback``, ``export``) run in a copy of the course; student steps are
the nbgrader commands docs/instructors.md documents (on JupyterHub, the Assignments tab runs
them). Two identities share this machine: each student has their own home (their nbgrader cache)
and names themselves with ``--student``, which stands in for the separate accounts of a
JupyterHub.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, nbgrader_env, notebook_path
from support import HIDDEN_TESTS, course_copy
from support.hostile.generate import L1, perfect, points

# The same cycle runs through a real JupyterHub in tests/test_hub.py (in make test); this
# command-line version runs in make test-grading, to keep make test within its budget.
pytestmark = [pytest.mark.slow, pytest.mark.corpus]

HIDDEN = HIDDEN_TESTS
STUDENTS = ("alice", "bob")


def _make(course: Path, target: str, args: str = "") -> str:
    """``make TARGET ARGS=...`` in the course copy, as the instructor types it."""
    env = nbgrader_env()
    env.pop("MAKEFLAGS", None)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(course), target, f"ARGS={args}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _student(course: Path, home: Path, student: str, *args: str) -> str:
    """``nbgrader ARGS --course rnn-course --student STUDENT`` run from the student's home."""
    env = nbgrader_env()
    env["HOME"] = str(home)
    env.pop("JUPYTER_CONFIG_DIR", None)
    cmd = [sys.executable, "-m", "nbgrader", *args, "--course=rnn-course"]  # as documented
    cmd += [f"--student={student}", f"--Exchange.root={course / 'grading' / 'exchange'}"]
    result = subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def cycle(tmp_path_factory):
    # A course folder the way an instructor has it: Makefile, config, solutions, lessons and the
    # installed .venv (linked; the lock files are dated back so that make sees it up to date).
    files = ("Makefile", "pyproject.toml")
    course = course_copy(tmp_path_factory.mktemp("course"), files=files)
    shutil.copytree(ROOT / "requirements", course / "requirements")
    for name in [
        "nbgrader_config.py",
        *files,
        "requirements/dev.txt",
        "requirements/instructor.txt",
    ]:
        os.utime(course / name, (0, 0))
    (course / ".venv").symlink_to(ROOT / ".venv")
    one = f"--lesson {L1}"
    homes = {s: tmp_path_factory.mktemp(s) for s in STUDENTS}

    _make(course, "release-assignments", one)
    for student, home in homes.items():
        _student(course, home, student, "fetch_assignment", L1)
        fetched = home / L1 / f"{L1}.ipynb"
        assert fetched.read_bytes() == notebook_path("release", L1).read_bytes()
    # alice solves everything; bob leaves the quiz unanswered and submits the rest
    nbformat.write(perfect(L1), homes["alice"] / L1 / f"{L1}.ipynb")
    bob = perfect(L1)
    released = nbformat.read(notebook_path("release", L1), as_version=4)
    quiz = next(
        c for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "gru_quiz"
    )
    for cell in bob.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "gru_quiz":
            cell.source = quiz.source
    nbformat.write(bob, homes["bob"] / L1 / f"{L1}.ipynb")
    for student, home in homes.items():
        _student(course, home, student, "submit", L1)

    collected = _make(course, "collect", one)
    summary = _make(course, "autograde", f"{one} --jobs 2")
    _make(course, "feedback")
    _make(course, "release-feedback", one)
    for student, home in homes.items():
        _student(course, home, student, "fetch_feedback", L1)
    return course, homes, collected, summary


def test_collect_brings_both_submissions(cycle):
    course, _, collected, _ = cycle
    for student in STUDENTS:
        assert (course / "grading" / "submitted" / student / L1 / f"{L1}.ipynb").is_file()
    assert "2 submission(s)" in collected


def test_scores_per_student(cycle):
    from nbgrader.api import Gradebook

    course, _, _, summary = cycle
    total = sum(points(L1).values())
    with Gradebook(f"sqlite:///{course / 'grading' / 'gradebook.db'}") as gb:
        got = {s: gb.find_submission(L1, s).score for s in STUDENTS}
    assert got == {"alice": total, "bob": total - points(L1)["gru_quiz_check"]}, summary


def test_each_student_fetches_their_own_feedback(cycle):
    course, homes, _, _ = cycle
    total = sum(points(L1).values())
    texts = {}
    for student, home in homes.items():
        found = list((home / L1 / "feedback").glob(f"*/{L1}.html"))
        assert len(found) == 1, f"{student} fetched {found}"
        texts[student] = found[0].read_text(encoding="utf-8")
    assert f"Score: {total:g}" in texts["alice"] or f"{total:g} / {total:g}" in texts["alice"]
    assert texts["alice"] != texts["bob"]
    # bob's feedback carries the grader's reason for the lost point
    assert "gru_quiz_answer" in texts["bob"] and "Autograder" in texts["bob"]


def test_feedback_hides_hidden_tests(cycle):
    course, homes, _, _ = cycle
    solution = nbformat.read(notebook_path("source", L1), as_version=4)
    hidden = [
        line.strip()
        for c in solution.cells
        for block in HIDDEN.findall(c.source)
        for line in block.splitlines()
        if line.strip()
    ]
    assert hidden
    for home in homes.values():
        for html in (home / L1 / "feedback").glob(f"*/{L1}.html"):
            text = html.read_text(encoding="utf-8")
            leaked = [line for line in hidden if line in text]
            assert not leaked, f"hidden tests shown in {html}: {leaked}"


def test_export_lists_both(cycle):
    course, _, _, _ = cycle
    _make(course, "export")
    with open(course / "grading" / "grades.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["assignment"] == L1]
    assert {r["student_id"] for r in rows} >= set(STUDENTS)


def test_students_submissions_untouched(cycle):
    """What each student submitted is exactly what the instructor collected."""
    course, homes, _, _ = cycle
    for student, home in homes.items():
        mine = (home / L1 / f"{L1}.ipynb").read_bytes()
        collected = (course / "grading" / "submitted" / student / L1 / f"{L1}.ipynb").read_bytes()
        assert mine == collected
    assert os.path.isdir(course / "grading" / "exchange" / "rnn-course" / "feedback")
