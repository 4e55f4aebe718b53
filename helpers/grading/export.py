"""Grades out of the gradebook in files other tools import, as nbgrader export plugins.

``make export`` runs ``nbgrader export`` once per format (``--exporter`` names the plugin):

* ``grades.csv``: nbgrader's own ``CsvExportPlugin``, one row per student and lesson;
* ``grades-by-student.csv`` (``ByStudentCsvExportPlugin``): one row per student, one column per
  lesson (its score after the late penalty), the total and the most points possible;
* ``grades-canvas.csv`` (``CanvasCsvExportPlugin``): Canvas's gradebook import format. The
  header is Canvas's ``Student, ID, SIS User ID, SIS Login ID, Section``, then one column per
  lesson; the second row is ``Points Possible``; then one row per student.

Every score is the one nbgrader's ``grades.csv`` gives: the submission's score less its late
penalty (as nbgrader recorded it, never below 0), and 0 for a lesson the student did not submit.

Canvas matches a row to a student by ``ID`` (Canvas's own), ``SIS User ID`` or ``SIS Login ID``.
Without a roster, a row carries the nbgrader student id as its ``SIS Login ID`` (on a
JupyterHub with the institution's single sign-on, the same login). With a roster
(``--CanvasCsvExportPlugin.roster=FILE``: the CSV that Canvas's gradebook export writes, or any
CSV with its five columns), each student is found in it by ``CanvasCsvExportPlugin.match``
(default ``SIS Login ID``) and the row copies the roster's five columns. A student missing from
the roster is still written, by login, with a warning.
"""

from __future__ import annotations

import csv
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Unicode

#: The columns Canvas's gradebook import reads to find a student, in its order.
CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
#: The label of the row of most points, in column ``Student``.
CANVAS_POINTS_ROW = "Points Possible"


def lesson_scores(gradebook: Gradebook, assignments, student_id: str) -> dict[str, float]:
    """``{lesson: score}``, the score after the late penalty (0 when not submitted), as
    nbgrader's own ``grades.csv`` computes it."""
    scores = {}
    for assignment in assignments:
        try:
            submission = gradebook.find_submission(assignment.name, student_id)
        except MissingEntry:
            scores[assignment.name] = 0.0
            continue
        penalty = submission.late_submission_penalty or 0.0
        scores[assignment.name] = max(0.0, submission.score - penalty)
    return scores


def _number(value: float) -> str:
    """A score as a CSV cell: ``25`` rather than ``25.0``, ``24.5`` kept."""
    return f"{value:g}"


class _CourseExport(ExportPlugin):
    """What both course exports share: the lessons and students asked for, and the file."""

    def _selection(self, gradebook: Gradebook):
        assignments = [
            a for a in gradebook.assignments if not self.assignment or a.name in self.assignment
        ]
        students = sorted(
            (s for s in gradebook.students if not self.student or s.id in self.student),
            key=lambda s: s.id,
        )
        return assignments, students

    def _write(self, default: str, rows: list[list[str]]) -> None:
        destination = Path(self.to or default)
        with destination.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)
        self.log.info("Exported %d rows to %s", len(rows) - 1, destination)


class ByStudentCsvExportPlugin(_CourseExport):
    """One row per student: id, names, email, one score per lesson, total, most possible."""

    def export(self, gradebook: Gradebook) -> None:
        assignments, students = self._selection(gradebook)
        most = sum(a.max_score for a in assignments)
        rows = [
            ["student_id", "last_name", "first_name", "email"]
            + [a.name for a in assignments]
            + ["total", "max_total"]
        ]
        for student in students:
            scores = lesson_scores(gradebook, assignments, student.id)
            rows.append(
                [student.id, student.last_name or "", student.first_name or "", student.email or ""]
                + [_number(scores[a.name]) for a in assignments]
                + [_number(sum(scores.values())), _number(most)]
            )
        self._write("grades-by-student.csv", rows)


class CanvasCsvExportPlugin(_CourseExport):
    """Canvas's gradebook import format: ``Student, ID, SIS User ID, SIS Login ID, Section``,
    one column per lesson, a ``Points Possible`` row, then one row per student."""

    roster = Unicode(
        "",
        help="A CSV with Canvas's student columns (Student, ID, SIS User ID, SIS Login ID, "
        "Section), such as Canvas's own gradebook export, to copy into each student's row.",
    ).tag(config=True)
    match = Unicode(
        "SIS Login ID",
        help="The roster column that holds the nbgrader student id.",
    ).tag(config=True)

    def _roster(self) -> dict[str, dict[str, str]]:
        if not self.roster:
            return {}
        path = Path(self.roster)
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                columns = reader.fieldnames or []
                rows = list(reader)
        except OSError as exc:
            raise ValueError(f"cannot read the Canvas roster {path}: {exc}") from None
        missing = [c for c in (*CANVAS_STUDENT_COLUMNS, self.match) if c not in columns]
        if missing:
            raise ValueError(
                f"the Canvas roster {path} should have the columns "
                f"{', '.join(CANVAS_STUDENT_COLUMNS)} (Canvas's gradebook export has them); "
                f"missing: {', '.join(dict.fromkeys(missing))}"
            )
        found = {}
        for row in rows:
            key = (row.get(self.match) or "").strip()
            if key and row.get("Student", "").strip() != CANVAS_POINTS_ROW:
                found[key] = {c: row.get(c) or "" for c in CANVAS_STUDENT_COLUMNS}
        return found

    def export(self, gradebook: Gradebook) -> None:
        assignments, students = self._selection(gradebook)
        roster = self._roster()
        rows = [
            [*CANVAS_STUDENT_COLUMNS] + [a.name for a in assignments],
            [CANVAS_POINTS_ROW, "", "", "", ""] + [_number(a.max_score) for a in assignments],
        ]
        unmatched = []
        for student in students:
            known = roster.get(student.id)
            if known is None:
                if roster:
                    unmatched.append(student.id)
                name = ", ".join(n for n in (student.last_name, student.first_name) if n)
                known = {"Student": name or student.id, "SIS Login ID": student.id}
            scores = lesson_scores(gradebook, assignments, student.id)
            rows.append(
                [known.get(c, "") for c in CANVAS_STUDENT_COLUMNS]
                + [_number(scores[a.name]) for a in assignments]
            )
        if unmatched:
            self.log.warning(
                "%d student(s) not in the Canvas roster %s (matched by %r), written by login: %s",
                len(unmatched),
                self.roster,
                self.match,
                ", ".join(unmatched),
            )
        self._write("grades-canvas.csv", rows)
