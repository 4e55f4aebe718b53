"""``make merge-grades``: merge the results of sharded grading runs into the course's own.

``python -m helpers.grading autograde --shard K/N`` grades one N-th of the class and writes
everything into ``grading/shards/K-of-N/`` (its own ``gradebook.db``, ``autograded/`` and
``reasons/``), so that N machines can grade at the same time on shared storage. This module
copies those results into the course's gradebook, ``grading/autograded/`` and
``grading/reasons/`` (and ``reasons.csv``), so that ``make feedback`` and ``make export`` give
what they would have given had everything been graded here::

    python -m helpers.grading.merge [--root DIR] [SHARD_DIR ...]

Merging is idempotent, and refuses (before writing anything) shards that graded the same
student's lesson twice.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helpers import course
from helpers.grading.common import (
    add_root_argument,
    course_folder,
    course_setting,
    db_url,
    grading_dir,
    register_lessons,
)
from helpers.grading.record import write_reasons

SHARDS = "shards"
GRADEBOOK = "gradebook.db"
STUDENT_FIELDS = ("first_name", "last_name", "email", "lms_user_id")
EXPECTED = (
    "a shard folder written by `python -m helpers.grading autograde --shard K/N` "
    f"(grading/{SHARDS}/K-of-N/ holding {GRADEBOOK}, autograded/ and reasons/)"
)


@dataclass
class Submission:
    """One (student, lesson) of a shard's gradebook, read into plain values."""

    student: str
    lesson: str
    student_fields: dict[str, str]
    timestamp: object  # datetime or None
    extension: object  # timedelta or None
    # notebook name -> {"flagged", "late_submission_penalty"}
    notebooks: dict[str, dict] = field(default_factory=dict)
    # (notebook, cell) -> (auto_score, manual_score, extra_credit, needs_manual_grade, max_score)
    grades: dict[tuple[str, str], tuple] = field(default_factory=dict)
    # (notebook, cell) -> (auto_comment, manual_comment)
    comments: dict[tuple[str, str], tuple] = field(default_factory=dict)


@dataclass
class Shard:
    """A shard folder's results: its submissions and its reasons rows, by (student, lesson)."""

    path: Path
    submissions: dict[tuple[str, str], Submission]
    reasons: dict[tuple[str, str], dict]

    @property
    def name(self) -> str:
        return str(self.path)

    def autograded(self, student: str, lesson: str) -> Path:
        return self.path / "autograded" / student / lesson


def find_shards(root: Path) -> list[Path]:
    """Every ``grading/shards/*-of-*/`` folder of the course at ``root`` holding a gradebook."""
    folder = grading_dir(root) / SHARDS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*-of-*") if p.is_dir() and (p / GRADEBOOK).is_file())


def _safe_name(name: str, what: str, where: Path) -> str:
    """``name`` when it can be one folder name (a student or lesson id), else ValueError."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{where}: {what} {name!r} cannot be a folder name")
    return name


def read_shard(path: Path) -> Shard:
    """Read the shard folder ``path`` (read-only): its gradebook's submissions and its reasons.

    Expects ``path/gradebook.db`` (an nbgrader gradebook) and, optionally,
    ``path/reasons/<lesson>.json`` (lists of rows as ``record.write_reasons`` writes them) and
    ``path/autograded/<student>/<lesson>/``. Raises ValueError saying what was expected when
    the folder, its gradebook or a reasons file is missing or malformed.
    """
    from nbgrader.api import SubmittedAssignment
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.orm import Session

    path = Path(path).resolve()
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder: expected {EXPECTED}")
    db = path / GRADEBOOK
    if not db.is_file():
        raise ValueError(f"{path} has no {GRADEBOOK}: expected {EXPECTED}")
    # read-only: reading a shard must never change it (nor create a missing table)
    engine = create_engine(f"sqlite:///file:{db}?mode=ro&uri=true", future=True)
    try:
        tables = set(inspect(engine).get_table_names())
        if not {"submitted_assignment", "grade", "comment"} <= tables:
            raise ValueError(f"{db} is not an nbgrader gradebook: expected {EXPECTED}")
        found: dict[tuple[str, str], Submission] = {}
        with Session(engine) as session:
            for sub in session.query(SubmittedAssignment):
                student = _safe_name(sub.student.id, "student id", db)
                lesson = _safe_name(sub.assignment.name, "lesson", db)
                fields = {k: getattr(sub.student, k) for k in STUDENT_FIELDS}
                item = Submission(
                    student=student,
                    lesson=lesson,
                    student_fields={k: v for k, v in fields.items() if v is not None},
                    timestamp=sub.timestamp,
                    extension=sub.extension,
                )
                for nb in sub.notebooks:
                    item.notebooks[nb.name] = {
                        "flagged": nb.flagged,
                        "late_submission_penalty": nb.late_submission_penalty,
                    }
                    for g in nb.grades:
                        item.grades[(nb.name, g.name)] = (
                            g.auto_score,
                            g.manual_score,
                            g.extra_credit,
                            g.needs_manual_grade,
                            g.max_score,
                        )
                    for c in nb.comments:
                        item.comments[(nb.name, c.name)] = (c.auto_comment, c.manual_comment)
                found[(student, lesson)] = item
    finally:
        engine.dispose()
    reasons: dict[tuple[str, str], dict] = {}
    for file in sorted((path / "reasons").glob("*.json")):
        try:
            rows = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{file}: expected a JSON list of reasons rows ({exc})") from exc
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("student"), str) for r in rows
        ):
            raise ValueError(f"{file}: expected a JSON list of rows, each with a 'student'")
        for row in rows:
            if row.get("lesson") != file.stem:
                raise ValueError(
                    f"{file}: a row of student {row['student']!r} is for lesson "
                    f"{row.get('lesson')!r}, expected {file.stem!r} (the file's name)"
                )
            key = (row["student"], file.stem)
            if key not in found:
                raise ValueError(
                    f"{file}: student {key[0]!r} has a reasons row for {key[1]} but {db} has no "
                    "such submission (expected the gradebook and reasons/ of one grading run)"
                )
            reasons[key] = row
    return Shard(path=path, submissions=found, reasons=reasons)


def check_no_overlap(shards: list[Shard]) -> None:
    """ValueError naming the student, the lesson and both shard folders when two shards hold
    the same (student, lesson)."""
    seen: dict[tuple[str, str], Shard] = {}
    for shard in shards:
        for key in sorted(shard.submissions):
            if key in seen:
                raise ValueError(
                    f"student {key[0]!r}, lesson {key[1]!r} was graded in two shards: "
                    f"{seen[key].path} and {shard.path}; nothing merged (merge one of them, or "
                    "re-grade with a single --shard K/N split)"
                )
            seen[key] = shard


def _course_cells(gb, lesson: str) -> tuple[dict, set]:
    """The course gradebook's cells of ``lesson``: ({(notebook, cell): max_score} of graded
    cells, {(notebook, cell)} of commented cells)."""
    assignment = gb.find_assignment(lesson)
    graded, commented = {}, set()
    for nb in assignment.notebooks:
        for cell in list(nb.grade_cells) + list(nb.task_cells):
            graded[(nb.name, cell.name)] = cell.max_score
        for cell in list(nb.solution_cells) + list(nb.task_cells):
            commented.add((nb.name, cell.name))
    return graded, commented


def check_cells(gb, shards: list[Shard]) -> None:
    """ValueError unless every shard submission's lesson has, in the course gradebook ``gb``,
    exactly the graded and commented cells (and points) that the shard graded."""
    from nbgrader.api import MissingEntry

    cache: dict[str, tuple[dict, set]] = {}
    for shard in shards:
        for (student, lesson), sub in sorted(shard.submissions.items()):
            if lesson not in cache:
                try:
                    cache[lesson] = _course_cells(gb, lesson)
                except MissingEntry:
                    raise ValueError(
                        f"{shard.path}: {student!r} submitted {lesson!r}, which is not a lesson "
                        "of this course (expected the shard graded from the same solutions/)"
                    ) from None
            graded, commented = cache[lesson]
            theirs = {k: v[4] for k, v in sub.grades.items()}
            if theirs != graded or set(sub.comments) != commented:
                raise ValueError(
                    f"{shard.path}: {lesson} of {student!r} was graded with other cells or "
                    "points than the course's gradebook has (expected the shard graded from "
                    "the same solutions/; re-grade it)"
                )


def _merge_gradebook(gb, sub: Submission) -> None:
    """Copy ``sub`` into the course gradebook ``gb`` (the cells already checked to match)."""
    from nbgrader.api import MissingEntry

    gb.update_or_create_student(sub.student, **sub.student_fields)
    try:
        target = gb.find_submission(sub.lesson, sub.student)
    except MissingEntry:
        target = gb.add_submission(sub.lesson, sub.student)
    target.timestamp = sub.timestamp
    target.extension = sub.extension
    for nb in target.notebooks:
        values = sub.notebooks.get(nb.name, {})
        nb.flagged = values.get("flagged", False)
        nb.late_submission_penalty = values.get("late_submission_penalty")
        for grade in nb.grades:
            auto, manual, extra, needs, _ = sub.grades[(nb.name, grade.name)]
            grade.auto_score, grade.manual_score = auto, manual
            grade.extra_credit, grade.needs_manual_grade = extra, needs
        for comment in nb.comments:
            comment.auto_comment, comment.manual_comment = sub.comments[(nb.name, comment.name)]


def _same_tree(a: Path, b: Path) -> bool:
    """Whether folders ``a`` and ``b`` hold the same names and file contents."""
    if not b.is_dir() or b.is_symlink():
        return False
    cmp = filecmp.dircmp(a, b, ignore=[])
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def replace_folder(source: Path, target: Path) -> bool:
    """Make ``target`` a copy of ``source`` (False when it already is one).

    The copy is made in a temporary sibling and renamed into place, so ``target`` is never a
    half-copied folder: it is the old folder, briefly absent, or the complete new one.
    """
    if _same_tree(source, target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.merging-", dir=target.parent))
    old = None
    try:
        shutil.copytree(source, tmp / "new", symlinks=True)
        if target.exists() or target.is_symlink():
            old = tmp / "old"
            os.rename(target, old)
        os.rename(tmp / "new", target)
    except BaseException:
        if old is not None and old.exists() and not target.exists():
            os.rename(old, target)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def merge(root: Path, shards: list[Path] | None = None) -> int:
    """Merge the shard folders ``shards`` (default: every ``grading/shards/*-of-*/`` holding a
    gradebook) into the course at ``root`` (the folder with ``nbgrader_config.py``).

    For every (student, lesson) of a shard's gradebook: the gradebook's submission (timestamp,
    extension, late penalty, flags, every grade and comment), the autograded folder (replaced;
    removed, with any stale feedback, when the shard has none, as for a rejected submission)
    and the reasons row. Every shard is read and checked first (a missing folder or
    gradebook, two shards holding the same submission, cells unlike the course's): ValueError,
    and nothing is written. Returns 0.
    """
    from nbgrader.api import Gradebook

    root = Path(root).resolve()
    if not (root / course.NBGRADER_CONFIG.name).is_file():
        raise ValueError(f"{root} has no {course.NBGRADER_CONFIG.name}: expected the course root")
    paths = find_shards(root) if shards is None else [Path(p) for p in shards]
    if not paths:
        raise ValueError(
            f"no shard results in {grading_dir(root) / SHARDS}: expected {EXPECTED}; run "
            '`make autograde ARGS="--shard K/N"` first'
        )
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"a shard folder is named twice: {', '.join(map(str, paths))}")
    loaded = [read_shard(p) for p in resolved]
    check_no_overlap(loaded)

    # the lessons the shards graded, as `make autograde` registers them
    register_lessons(root, lessons=sorted({x for sh in loaded for _, x in sh.submissions}))
    course_id = course_setting(root, "CourseDirectory", "course_id") or "default_course"
    autograded = course_folder(root, "autograded")
    feedback = course_folder(root, "feedback")
    with Gradebook(db_url(root), course_id=course_id) as gb:
        check_cells(gb, loaded)
        for shard in loaded:
            for _, sub in sorted(shard.submissions.items()):
                _merge_gradebook(gb, sub)
        gb.db.commit()

    total_students: set[str] = set()
    total = 0
    by_lesson: dict[str, list[dict]] = {}
    for shard in loaded:
        copied = 0
        for student, lesson in sorted(shard.submissions):
            source = shard.autograded(student, lesson)
            target = autograded / student / lesson
            if source.is_dir() and not source.is_symlink():
                copied += replace_folder(source, target)
            else:  # nothing graded (a rejected submission): nothing may be handed back
                for stale in (target, feedback / student / lesson):
                    if stale.exists() or stale.is_symlink():
                        _remove(stale)
                        copied += 1
        for (_, lesson), row in sorted(shard.reasons.items()):
            by_lesson.setdefault(lesson, []).append(row)
        students = {s for s, _ in shard.submissions}
        lessons = sorted({x for _, x in shard.submissions})
        total_students |= students
        total += len(shard.submissions)
        print(
            f"merged {shard.path.name}: {len(students)} student(s), "
            f"{len(shard.submissions)} submission(s) ({', '.join(lessons) or 'none'}); "
            f"{copied} autograded folder(s) updated"
        )
    for lesson, rows in sorted(by_lesson.items()):
        write_reasons(root, lesson, rows)  # grading/reasons/<lesson>.json, then reasons.csv
    print(
        f"total: {len(total_students)} student(s), {total} submission(s) from "
        f"{len(loaded)} shard(s) merged into {db_url(root)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.grading.merge [--root DIR] [SHARD_DIR ...]``; exits with the error's
    message (status 1) on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grading.merge",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_root_argument(parser)
    parser.add_argument(
        "shards",
        nargs="*",
        type=Path,
        metavar="SHARD_DIR",
        help=f"shard folders (default: every grading/{SHARDS}/*-of-*/ holding a {GRADEBOOK})",
    )
    args = parser.parse_args(argv)
    try:
        return merge(args.root, args.shards or None)
    except ValueError as exc:
        print(f"merge-grades: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
