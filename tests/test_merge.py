"""``make merge-grades`` (``helpers.grading.merge``): shard results merged into the course.

The shards are built without running a notebook: each gets a real nbgrader gradebook with every
lesson registered (``nbgrader generate_assignment`` with the shard's ``db_url``), submissions
whose grades and comments are set through nbgrader's API, autograded notebooks (copies of the
solutions) and ``reasons/<lesson>.json`` rows as ``record.write_reasons`` writes them.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import course_copy, nbgrader_env

from helpers.grading.common import nbgrader

# Shards are merged after a class is graded in shards: with tests/test_grading_resume.py, this
# runs in make test-grading, to keep make test within its budget.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.corpus,
    # nbgrader's own add_submission warns about its autoflush; not this module's concern
    pytest.mark.filterwarnings("ignore:Object of type:sqlalchemy.exc.SAWarning"),
]

COURSE_ID = "rnn-course"
# shard folder name -> {student: [lessons]}; dave's 03 was rejected (nothing autograded)
SHARDS = {
    "1-of-2": {"alice": ["01_intro_to_rnns", "02_lstm_gate_math"], "bob": ["01_intro_to_rnns"]},
    "2-of-2": {"carol": ["01_intro_to_rnns"], "dave": ["03_time_series_rnn"]},
}
REJECTED = {("dave", "03_time_series_rnn")}


def _url(db: Path) -> str:
    return f"sqlite:///{db}"


def _fill_shard(shard: Path, template: Path, root: Path, students: dict[str, list[str]]) -> None:
    """A shard folder as ``autograde --shard`` writes it, with made-up but varied grades."""
    from nbgrader.api import Gradebook

    shard.mkdir(parents=True)
    shutil.copy(template, shard / "gradebook.db")
    reasons: dict[str, list[dict]] = {}
    with Gradebook(_url(shard / "gradebook.db"), COURSE_ID) as gb:
        for student, lessons in students.items():
            gb.update_or_create_student(student, first_name=student.title(), last_name="Shard")
            for k, lesson in enumerate(lessons):
                stamp = datetime.datetime(2026, 11, 1 + k, 9, len(student))
                sub = gb.add_submission(lesson, student, timestamp=stamp.isoformat())
                cells = []
                for nb in sub.notebooks:
                    nb.late_submission_penalty = 1.0 if student == "bob" else None
                    nb.flagged = student == "carol"
                    for i, grade in enumerate(sorted(nb.grades, key=lambda g: g.name)):
                        rejected = (student, lesson) in REJECTED
                        full = not rejected and (i + len(student)) % 3 != 0
                        grade.auto_score = grade.max_score if full else 0.0
                        grade.needs_manual_grade = False
                        if student == "alice" and i == 1:
                            grade.manual_score, grade.extra_credit = 0.5, 0.25
                        cells.append(
                            {
                                "cell": grade.name,
                                "score": grade.auto_score,
                                "max_score": grade.max_score,
                                "reason": None if full else "AssertionError: wrong",
                            }
                        )
                    for i, comment in enumerate(sorted(nb.comments, key=lambda c: c.name)):
                        if i % 2 == 0:
                            comment.auto_comment = f"Autograder: {student} {comment.name}"
                        if student == "carol" and i == 1:
                            comment.manual_comment = "see me"
                gb.db.commit()
                score = sum(c["score"] for c in cells)
                status = "rejected" if (student, lesson) in REJECTED else "graded"
                reasons.setdefault(lesson, []).append(
                    {
                        "student": student,
                        "lesson": lesson,
                        "status": status,
                        "score": score,
                        "max_score": sum(c["max_score"] for c in cells),
                        "notes": ["not a notebook"] if status == "rejected" else [],
                        "cells": cells,
                        "sandbox": "sandbox: bwrap (test)",
                    }
                )
                if status == "graded":
                    target = shard / "autograded" / student / lesson
                    target.mkdir(parents=True)
                    shutil.copy(root / "solutions" / lesson / f"{lesson}.ipynb", target)
                    (target / "timestamp.txt").write_text(f"{stamp} UTC")
    (shard / "reasons").mkdir()
    for lesson, rows in reasons.items():
        (shard / "reasons" / f"{lesson}.json").write_text(json.dumps(rows, indent=1))
    (shard / "logs").mkdir()


def dump(db: Path) -> list[tuple]:
    """Every submission, notebook, grade and comment value of the gradebook ``db``, sorted."""
    from nbgrader.api import Gradebook

    rows = []
    with Gradebook(_url(db), COURSE_ID) as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                key = (sub.student.id, assignment.name)
                student = (sub.student.first_name, sub.student.last_name)
                rows.append(("sub", *key, *student, str(sub.timestamp), str(sub.extension)))
                for nb in sub.notebooks:
                    rows.append(("nb", *key, nb.name, nb.flagged, nb.late_submission_penalty))
                    for g in nb.grades:
                        values = (g.auto_score, g.manual_score, g.extra_credit)
                        rows.append(("grade", *key, g.name, *values, g.needs_manual_grade))
                    for c in nb.comments:
                        rows.append(("comment", *key, c.name, c.auto_comment, c.manual_comment))
    return sorted(rows, key=repr)


def tree(folder: Path, skip: tuple[str, ...] = ("gradebook.db",)) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (``skip`` names left out)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course whose grading/shards/ holds two shards, with stale results of its own."""
    base = tmp_path_factory.mktemp("merge")
    root = course_copy(base / "course", lessons=False)
    template = base / "template"
    template.mkdir()
    nbgrader(
        root,
        "generate_assignment",
        "*",
        "--force",
        f"--CourseDirectory.db_url={_url(template / 'gradebook.db')}",
        f"--CourseDirectory.release_directory={template / 'release'}",
        "--log-level=WARN",
    )
    for name, students in SHARDS.items():
        _fill_shard(root / "grading" / "shards" / name, template / "gradebook.db", root, students)
    # a third shard that grades alice's lesson 01 again: may never be merged with 1-of-2
    _fill_shard(
        base / "dup" / "3-of-3",
        template / "gradebook.db",
        root,
        {"alice": SHARDS["1-of-2"]["alice"][:1]},
    )
    # stale results from an earlier run here: must be replaced or removed, never kept
    stale = root / "grading" / "autograded"
    for student, lesson in (("bob", "01_intro_to_rnns"), ("dave", "03_time_series_rnn")):
        (stale / student / lesson).mkdir(parents=True)
        (stale / student / lesson / "leftover.txt").write_text("old")
    feedback = root / "grading" / "feedback" / "dave" / "03_time_series_rnn"
    feedback.mkdir(parents=True)
    (feedback / "03_time_series_rnn.html").write_text("old feedback")
    return root


@pytest.fixture(scope="module")
def merged(course: Path) -> subprocess.CompletedProcess:
    """The first merge, through the command line, of the shards it finds by itself."""
    result = subprocess.run(
        [sys.executable, "-m", "helpers.grading.merge", "--root", str(course)],
        env=nbgrader_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_merged_gradebook_equals_the_shards(course, merged):
    expected = []
    for name in SHARDS:
        expected += dump(course / "grading" / "shards" / name / "gradebook.db")
    assert dump(course / "grading" / "gradebook.db") == sorted(expected, key=repr)
    assert "merged 1-of-2: 2 student(s), 3 submission(s)" in merged.stdout
    assert "merged 2-of-2: 2 student(s), 2 submission(s)" in merged.stdout
    assert "total: 4 student(s), 5 submission(s) from 2 shard(s)" in merged.stdout


def test_merged_files_and_reasons(course, merged):
    grading = course / "grading"
    for name, students in SHARDS.items():
        shard = grading / "shards" / name
        for student, lessons in students.items():
            for lesson in lessons:
                target = grading / "autograded" / student / lesson
                if (student, lesson) in REJECTED:
                    assert not target.exists()
                    assert not (grading / "feedback" / student / lesson).exists()
                else:
                    assert tree(target) == tree(shard / "autograded" / student / lesson)
        for file in (shard / "reasons").glob("*.json"):
            ours = {
                r["student"]: r for r in json.loads((grading / "reasons" / file.name).read_text())
            }
            for row in json.loads(file.read_text()):
                assert ours[row["student"]] == row
    leftovers = [p.name for p in (grading / "autograded").glob("*/*/*")]
    assert "leftover.txt" not in leftovers
    assert not [p for p in (grading / "autograded").rglob(".*merging*")]
    with open(grading / "reasons.csv") as fh:
        csv_students = {row["student"] for row in csv.DictReader(fh)}
    assert csv_students == {"alice", "bob", "carol", "dave"}


def test_merging_again_changes_nothing(course, merged, capsys):
    from helpers.grading.merge import merge

    before = (dump(course / "grading" / "gradebook.db"), tree(course))
    assert merge(course) == 0
    assert "0 autograded folder(s) updated" in capsys.readouterr().out
    assert (dump(course / "grading" / "gradebook.db"), tree(course)) == before


def test_a_student_in_two_shards_is_refused_and_nothing_changes(course, merged):
    from helpers.grading.merge import merge

    before = (dump(course / "grading" / "gradebook.db"), tree(course))
    first = course / "grading" / "shards" / "1-of-2"
    dup = course.parent / "dup" / "3-of-3"
    with pytest.raises(ValueError) as err:
        merge(course, [first, dup])
    message = str(err.value)
    assert "'alice'" in message and "01_intro_to_rnns" in message
    assert str(first) in message and str(dup) in message
    assert (dump(course / "grading" / "gradebook.db"), tree(course)) == before


def test_missing_shard_or_gradebook_says_what_was_expected(course, tmp_path):
    from helpers.grading.merge import main, merge

    with pytest.raises(ValueError, match="is not a folder: expected a shard folder"):
        merge(course, [tmp_path / "nowhere"])
    (tmp_path / "1-of-2").mkdir()
    with pytest.raises(ValueError, match="has no gradebook.db: expected a shard folder"):
        merge(course, [tmp_path / "1-of-2"])
    assert main(["--root", str(tmp_path), str(tmp_path / "1-of-2")]) == 1  # not a course


def test_export_and_feedback_of_the_merged_course(course, merged):
    target = course / "grading" / "grades.csv"
    nbgrader(course, "export", f"--to={target}", "--log-level=WARN", env=nbgrader_env())
    with open(target) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["student_id"] for r in rows} == {"alice", "bob", "carol", "dave"}
    expected = {}
    for name in SHARDS:
        for row in dump(course / "grading" / "shards" / name / "gradebook.db"):
            if row[0] == "grade":
                auto, manual, extra = row[4:7]
                score = (manual if manual is not None else auto) + (extra or 0.0)
                expected[(row[1], row[2])] = expected.get((row[1], row[2]), 0.0) + score
    for r in rows:
        key = (r["student_id"], r["assignment"])
        if key in expected:
            penalty = 1.0 if r["student_id"] == "bob" else 0.0
            assert float(r["raw_score"]) == pytest.approx(expected[key])
            assert float(r["score"]) == pytest.approx(max(expected[key] - penalty, 0.0))
    nbgrader(
        course,
        "generate_feedback",
        "01_intro_to_rnns",
        "--student=carol",
        "--force",
        "--log-level=WARN",
        env=nbgrader_env(),
    )
    html = course / "grading" / "feedback" / "carol" / "01_intro_to_rnns" / "01_intro_to_rnns.html"
    text = html.read_text()
    assert "Autograder: carol" in text and "see me" in text


def test_a_failed_copy_leaves_the_old_folder(tmp_path, monkeypatch):
    from helpers.grading import merge

    source, target = tmp_path / "new", tmp_path / "autograded" / "alice" / "01"
    source.mkdir()
    (source / "a.ipynb").write_text("new")
    target.mkdir(parents=True)
    (target / "a.ipynb").write_text("old")

    def broken(src, dst, **kwargs):
        Path(dst).mkdir()
        (Path(dst) / "a.ipynb").write_text("ha")  # half copied
        raise OSError("disk full")

    monkeypatch.setattr(merge.shutil, "copytree", broken)
    with pytest.raises(OSError, match="disk full"):
        merge.replace_folder(source, target)
    assert tree(target.parent) == {"01/a.ipynb": _sha("old")}  # no temporary folder left
    monkeypatch.undo()
    assert merge.replace_folder(source, target) is True
    assert tree(target.parent) == {"01/a.ipynb": _sha("new")}
    assert merge.replace_folder(source, target) is False


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
