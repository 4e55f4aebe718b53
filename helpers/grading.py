"""The instructor's grading commands, run by ``make autograde | feedback | export``.

Real nbgrader does the work; this module makes it work on a fresh clone (it creates the
git-ignored gradebook and registers every lesson found in ``solutions/`` before grading) and
prints a readable summary. Run from the course root::

    python -m helpers.grading autograde   # grading/submitted/<student>/<lesson>/, all of them
    python -m helpers.grading feedback    # grading/feedback/..., hidden tests removed
    python -m helpers.grading export      # grading/grades.csv
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def lessons(root: Path) -> list[str]:
    """Lesson ids: the folders of ``solutions/`` that hold a notebook of the same name."""
    source = root / "solutions"
    return sorted(p.name for p in source.iterdir() if (p / f"{p.name}.ipynb").is_file())


def nbgrader(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``root`` with this interpreter's ``bin/`` first on PATH."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    cmd = [sys.executable, "-m", "nbgrader", *args]
    result = subprocess.run(cmd, cwd=root, env=env, text=True, capture_output=True)
    if check and result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"nbgrader {' '.join(args)} failed with exit code {result.returncode}")
    return result


def register_lessons(root: Path) -> None:
    """Create the gradebook if needed and record every lesson's cells and points in it.

    The lessons are generated into ``grading/release`` so that ``lessons/`` is never touched.
    """
    nbgrader(
        root,
        "generate_assignment",
        "*",
        "--force",
        "--CourseDirectory.release_directory=grading/release",
        "--log-level=WARN",
    )


def submissions(root: Path) -> dict[str, list[str]]:
    """lesson id -> students who submitted it, from ``grading/submitted/<student>/<lesson>/``."""
    found: dict[str, list[str]] = {}
    submitted = root / "grading" / "submitted"
    if not submitted.is_dir():
        return found
    for student in sorted(p for p in submitted.iterdir() if p.is_dir()):
        for lesson in sorted(p for p in student.iterdir() if p.is_dir()):
            found.setdefault(lesson.name, []).append(student.name)
    return found


def scores(root: Path) -> list[tuple[str, str, float, float]]:
    """(student, lesson, score, max_score) for every graded submission in the gradebook."""
    from nbgrader.api import Gradebook

    rows = []
    with Gradebook(f"sqlite:///{root / 'grading' / 'gradebook.db'}") as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                rows.append((sub.student.id, assignment.name, sub.score, sub.max_score))
    return sorted(rows)


def autograde(root: Path) -> int:
    found = submissions(root)
    if not found:
        print(
            f"nothing to grade: put submissions in {root / 'grading/submitted'}/<student>/<lesson>/"
        )
        return 0
    register_lessons(root)
    known = set(lessons(root))
    for lesson, students in sorted(found.items()):
        if lesson not in known:
            print(f"skipped {lesson}: not a lesson of this course ({', '.join(students)})")
            continue
        print(f"autograding {lesson}: {len(students)} submission(s)")
        nbgrader(root, "autograde", lesson, "--force", "--log-level=WARN", check=False)
    print(f"\n{'student':20} {'lesson':22} score")
    for student, lesson, score, max_score in scores(root):
        print(f"{student:20} {lesson:22} {score:g} / {max_score:g}")
    return 0


def feedback(root: Path) -> int:
    nbgrader(root, "generate_feedback", "*", "--force", "--log-level=WARN")
    print(f"feedback written to {root / 'grading' / 'feedback'} (hidden tests removed)")
    return 0


def export(root: Path) -> int:
    target = root / "grading" / "grades.csv"
    nbgrader(root, "export", f"--to={target}", "--log-level=WARN")
    print(f"grades written to {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grading",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["autograde", "feedback", "export"])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="the course root holding nbgrader_config.py (default: here)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "nbgrader_config.py").is_file():
        parser.error(f"{root} has no nbgrader_config.py: run from the course root")
    return {"autograde": autograde, "feedback": feedback, "export": export}[args.command](root)


if __name__ == "__main__":
    raise SystemExit(main())
