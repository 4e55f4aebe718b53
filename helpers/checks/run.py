"""``make check``: every exercise of a lesson, visible and hidden cases, on one notebook.

    python -m helpers.checks 01                       # lesson 01's notebook in lessons/
    python -m helpers.checks 01 --notebook path/to/copy.ipynb
    python -m helpers.checks path/to/<lesson id>.ipynb  # a lesson's notebook, wherever it is

Prints one line per exercise (name, points, passed or the message) and the total, and exits 1
when anything fails. It runs exactly the cases the autograder runs (both read the lesson's case
table), so full points here mean full points there. Training cells are skipped, as when loading
a notebook with :func:`helpers.notebook.load_notebook`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import course


@dataclass(frozen=True)
class Verdict:
    """The outcome of one exercise: its points, and the failure message (``None``: passed)."""

    exercise: str
    points: float
    message: str | None

    @property
    def passed(self) -> bool:
        return self.message is None


def points_of(lesson: str) -> dict[str, float]:
    """``grade_id -> points`` of the lesson's test cells (its marks, from the course manifest)."""
    return {grade_id: float(p) for grade_id, p in course.lesson(lesson).points.items()}


def check_notebook(lesson: str, namespace, which: tuple[str, ...] | None = None) -> list[Verdict]:
    """Run every exercise of ``lesson`` on a loaded notebook ``namespace``.

    ``which`` limits the case sets (``("visible",)``); by default all run, as when grading. What
    the checks print is dropped, but for ``note:`` lines, which stay on stdout.
    """
    from helpers.checks import CheckFailure, exercises

    points = points_of(lesson)
    verdicts = []
    for exercise in exercises(lesson).values():
        if exercise.grade_id not in points:
            raise ValueError(f"{lesson}: no test cell {exercise.grade_id!r} in the notebook")
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exercise.run(namespace, which)
            message = None
        except CheckFailure as failure:
            message = str(failure)
        for line in out.getvalue().splitlines():
            if line.startswith("note:"):
                print(line)
        verdicts.append(Verdict(exercise.name, points[exercise.grade_id], message))
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.checks",
        description="Check a lesson's notebook: every exercise, visible and hidden cases.",
    )
    parser.add_argument(
        "lesson",
        help="lesson id or a unique prefix (01), or a lesson's notebook file (named as the "
        "course names it: <lesson id>.ipynb)",
    )
    parser.add_argument(
        "--notebook", type=Path, help="notebook to check (default: lessons/<lesson>/<lesson>.ipynb)"
    )
    args = parser.parse_args(argv)
    given = Path(args.lesson) if args.lesson.endswith(".ipynb") else None
    try:
        lesson = course.lesson(args.lesson).id
    except ValueError as exc:
        parser.error(str(exc))
    path = (args.notebook or given or course.notebook_path("release", lesson)).resolve()
    if not path.is_file():
        parser.error(f"no notebook at {path}; give its path: {parser.prog} {lesson}.ipynb")

    from helpers.notebook import load_notebook

    print(f"checking {path}")
    with contextlib.redirect_stdout(io.StringIO()):  # the notebook's own prints
        namespace = load_notebook(path)
    for error in namespace.errors:
        if not isinstance(error.error, NotImplementedError):
            print(f"note: {path.name} {error} (while loading; the checks go on)")
    verdicts = check_notebook(lesson, namespace)
    width = max(len(v.exercise) for v in verdicts)
    for v in verdicts:
        got = v.points if v.passed else 0
        status = "passed" if v.passed else "FAILED"
        print(f"{v.exercise:<{width}}  {got:g}/{v.points:g}  {status}")
        if v.message:
            print("    " + v.message.replace("\n", "\n    "))
    total = sum(v.points for v in verdicts)
    scored = sum(v.points for v in verdicts if v.passed)
    failed = sum(not v.passed for v in verdicts)
    print(f"total: {scored:g}/{total:g} points" + (f" ({failed} to fix)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
