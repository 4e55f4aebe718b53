"""``make check``: every exercise of a lesson, visible and hidden cases, on one notebook.

    python -m helpers.checks 01_intro_to_rnns                 # lessons/01_intro_to_rnns/...
    python -m helpers.checks 01 --notebook path/to/copy.ipynb

Prints one line per exercise (name, points, passed or the message) and the total, and exits 1
when anything fails. It runs exactly the cases the autograder runs (both read the lesson's case
table), so full points here mean full points there. Training cells are skipped, as when loading
a notebook with :func:`helpers.notebook.load_notebook`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
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


def resolve_lesson(name: str) -> str:
    """The lesson id ``name`` stands for: the id itself or a unique prefix (``"01"``)."""
    ids = course.lesson_ids()
    matches = [lesson for lesson in ids if lesson == name] or [
        lesson for lesson in ids if lesson.startswith(name)
    ]
    if len(matches) != 1:
        raise ValueError(f"unknown lesson {name!r}; expected one of {', '.join(ids)}")
    return matches[0]


def points_of(lesson: str) -> dict[str, float]:
    """``grade_id -> points`` of the released notebook's test cells (the lesson's marks)."""
    path = course.notebook_path("solutions", lesson)
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    points = {}
    for cell in cells:
        if course.is_test_cell(cell):
            meta = cell["metadata"]["nbgrader"]
            points[meta["grade_id"]] = float(meta.get("points", 0))
    return points


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
    parser.add_argument("lesson", help="lesson id or a unique prefix, e.g. 01_intro_to_rnns or 01")
    parser.add_argument(
        "--notebook", type=Path, help="notebook to check (default: lessons/<lesson>/<lesson>.ipynb)"
    )
    args = parser.parse_args(argv)
    try:
        lesson = resolve_lesson(args.lesson)
    except ValueError as exc:
        parser.error(str(exc))
    path = (args.notebook or course.notebook_path("lessons", lesson)).resolve()
    if not path.is_file():
        parser.error(f"no notebook at {path}")

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
