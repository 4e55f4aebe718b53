"""A class graded the way a big class is: killed and resumed, incremental, and in shards.

One small class (three students, lessons 01 and 02) is graded three ways, each in its own copy
of the course:

* **reference**: one uninterrupted ``make autograde``;
* **killed**: the grader is killed with SIGKILL before its first notebook is done, in the middle
  of a notebook, and between the two lessons, then run once more; every rerun grades exactly
  what the killed run had not finished, and the final grades and reasons equal the reference;
* **shards**: ``--shard 1/3``, ``2/3`` and ``3/3`` run as three processes at once, then
  ``make merge-grades``; grades and reasons equal the reference.

Afterwards a plain ``make autograde`` in either copy has nothing to grade (every submission is
unchanged since it was graded), and one changed submission is the only one graded again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from support import course_copy, grader_command, nbgrader_env, run_grader
from support.hostile import generate

from helpers.grading.common import in_shard

# Grading this class five times over is minutes of 2 cores: it runs in make test-grading (with
# the hostile and verdict corpora), not in make test, which must stay within its budget.
pytestmark = [pytest.mark.slow, pytest.mark.corpus, pytest.mark.timeout(900)]

LESSONS = ("01_intro_to_rnns", "02_lstm_gate_math")


def _one_per_shard() -> list[str]:
    """Three student ids, one in each of the three shards."""
    names, k = [], 1
    for i in range(1000):
        name = f"student{i}"
        if in_shard(name, k, 3):
            names.append(name)
            k += 1
            if k > 3:
                return names
    raise AssertionError("no ids for three shards")


STUDENTS = _one_per_shard()


def _exercises(lesson: str) -> list[str]:
    return [
        c.metadata["nbgrader"]["grade_id"]
        for c in generate.perfect(lesson).cells
        if c.cell_type == "code"
        and c.metadata.get("nbgrader", {}).get("solution")
        and not c.metadata["nbgrader"].get("grade")
    ]


def _class(root: Path) -> Path:
    course_copy(root)
    for lesson in LESSONS:
        solved = generate.perfect(lesson)
        first, last = _exercises(lesson)[0], _exercises(lesson)[-1]
        notebooks = (
            solved,
            generate.blank_exercise(solved, lesson, first),
            generate.blank_exercise(solved, lesson, last),
        )
        for student, nb in zip(STUDENTS, notebooks, strict=True):
            folder = root / "grading" / "submitted" / student / lesson
            folder.mkdir(parents=True)
            nbformat.write(nb, folder / f"{lesson}.ipynb")
    return root


def _results(root: Path) -> dict[tuple[str, str], dict]:
    """(student, lesson) -> what the grade is made of (scores, reasons, notes, status)."""
    found = {}
    for path in sorted((root / "grading" / "reasons").glob("*.json")):
        for r in json.loads(path.read_text()):
            found[(r["student"], r["lesson"])] = {
                k: r[k] for k in ("status", "score", "max_score", "notes", "cells", "fingerprint")
            }
    return found


def _scores(root: Path) -> dict[tuple[str, str], float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'grading' / 'gradebook.db'}") as gb:
        return {
            (s.student.id, lesson): s.score
            for lesson in LESSONS
            for s in gb.find_assignment(lesson).submissions
        }


def _to_grade(output: str) -> int:
    line = next(x for x in output.splitlines() if "to grade" in x)
    return int(line.rsplit(":", 1)[1].split()[0])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = _class(tmp_path_factory.mktemp("reference"))
    run_grader(root, "autograde", "--jobs=2")
    return root


def _kill_when(root: Path, ready, what: str) -> None:
    """Start ``autograde --jobs 1``, SIGKILL it (the grader only, as a crash would) as soon as
    ``ready()`` holds, and wait until its workers and kernels are gone too."""
    process = subprocess.Popen(
        grader_command(root, "autograde", "--jobs=1"),
        env=nbgrader_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, f"the run ended before {what}:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.02)
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes left running after the grader was killed: {alive}"


def _inflight(root: Path) -> list[Path]:
    return [p for p in (root / "grading" / "inflight").rglob("*") if p.is_file()]


def _reasons_count(root: Path, lesson: str | None = None) -> int:
    paths = (root / "grading" / "reasons").glob(f"{lesson or '*'}.json")
    return sum(len(json.loads(p.read_text())) for p in paths)


def test_killed_runs_resume_with_the_reference_grades(reference, tmp_path):
    root = _class(tmp_path / "course")
    total = len(STUDENTS) * len(LESSONS)
    # 1. before the first notebook is finished: the first one has just been handed out
    _kill_when(root, lambda: bool(_inflight(root)), "the first notebook")
    assert _reasons_count(root) == 0
    # 2. mid-notebook: two finished, the third being graded
    _kill_when(
        root,
        lambda: _reasons_count(root) >= 2 and bool(_inflight(root)),
        "the third notebook",
    )
    done = _reasons_count(root)
    assert done == 2, done
    # 3. between the lessons: lesson 01 finished
    _kill_when(root, lambda: _reasons_count(root, LESSONS[0]) == len(STUDENTS), "lesson 02")
    done = _reasons_count(root)
    assert len(STUDENTS) <= done < total
    # the rerun grades what was not finished, and only that
    out = run_grader(root, "autograde", "--jobs=1").stdout
    assert _to_grade(out) == total - done, out
    assert not _inflight(root)
    assert _results(root) == _results(reference)
    assert _scores(root) == _scores(reference)
    assert _grades_csv(root) == _grades_csv(reference)
    leftovers = [
        p for p in (root / "grading").rglob("*") if ".old-" in p.name or p.name.endswith(".tmp")
    ]
    assert not leftovers, leftovers
    # nothing left to grade; a changed submission is the only one graded again
    out = run_grader(root, "autograde", "--jobs=1").stdout
    assert _to_grade(out) == 0 and "everything is up to date" in out, out
    changed = root / "grading" / "submitted" / STUDENTS[1] / LESSONS[0] / f"{LESSONS[0]}.ipynb"
    nb = nbformat.read(changed, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("resubmitted"))
    nbformat.write(nb, changed)
    out = run_grader(root, "autograde", "--jobs=1").stdout
    assert _to_grade(out) == 1 and "graded 1 submission(s)" in out, out
    assert "grading [" in out and "1/1" in out, out  # the progress line
    assert _scores(root) == _scores(reference)


def test_three_shards_merged_give_the_reference_grades(reference, tmp_path):
    root = _class(tmp_path / "course")
    shards = [
        subprocess.Popen(
            grader_command(root, "autograde", f"--shard={k}/3", "--jobs=1"),
            env=nbgrader_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in (1, 2, 3)
    ]
    for k, process in enumerate(shards, 1):
        out, _ = process.communicate(timeout=600)
        assert process.returncode == 0, out
        assert _to_grade(out) == len(LESSONS), out  # one student of each lesson per shard
        graded = _results_of(root / "grading" / "shards" / f"{k}-of-3")
        assert {s for s, _ in graded} == {STUDENTS[k - 1]}
    merge = subprocess.run(
        [sys.executable, "-m", "helpers.grading.merge", "--root", str(root)],
        env=nbgrader_env(),
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert merge.returncode == 0, merge.stdout + merge.stderr
    assert _results(root) == _results(reference)
    assert _scores(root) == _scores(reference)
    assert _grades_csv(root) == _grades_csv(reference)
    # the merged class is up to date for the unsharded grader too
    out = run_grader(root, "autograde", "--jobs=1").stdout
    assert _to_grade(out) == 0, out


def _grades_csv(root: Path) -> list[str]:
    """``make export``'s grades.csv, its rows sorted (nbgrader lists them by gradebook order)."""
    run_grader(root, "export")
    lines = (root / "grading" / "grades.csv").read_text().splitlines()
    return [lines[0], *sorted(lines[1:])]


def _results_of(folder: Path) -> set[tuple[str, str]]:
    return {
        (r["student"], r["lesson"])
        for p in (folder / "reasons").glob("*.json")
        for r in json.loads(p.read_text())
    }


def test_shard_argument_is_checked(tmp_path):
    root = course_copy(tmp_path / "course")
    result = subprocess.run(
        grader_command(root, "autograde", "--shard=4/3"),
        env=nbgrader_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "1 <= K <= N" in result.stderr, result.stderr
