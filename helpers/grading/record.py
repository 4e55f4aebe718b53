"""Step 4 of ``autograde``: a score for every submission and a reason for every lost point."""

from __future__ import annotations

import csv as csv_module
import io
import json
import os
from functools import cache
from pathlib import Path

from helpers.grading.common import ANSI, Target, grading_dir, printable, remove_tree
from helpers.grading.stage import Staged

GRADER_ERRORS = (
    "NotRun",
    "DeadKernelError",
    "KernelStopped",
    "NotebookTimeoutError",
    "CellTimeoutError",
    "GraderError",
)


def _cell_reason(cell) -> str | None:
    """Why a cell failed, from its outputs (the grader's own verdicts first)."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    errors.sort(key=lambda o: o.get("ename") not in GRADER_ERRORS)
    for out in errors:
        if out.get("output_type") == "error":
            value = ANSI.sub("", str(out.get("evalue", ""))).strip()
            lines = value.splitlines()
            first = lines[0] if lines else ""
            text = f"{out.get('ename')}: {first}" if first else str(out.get("ename"))
            hint = next((x.strip() for x in lines if x.strip().startswith("likely cause:")), "")
            return _explain(f"{text} ({hint})" if hint else text)
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            first = ANSI.sub("", out.get("text", "")).strip().splitlines()
            return "wrote to stderr during the test: " + (first[0][:200] if first else "")
    return None


def _explain(text: str) -> str:
    """Name the limit behind common resource errors."""
    hints = (
        ("MemoryError", "memory limit"),
        ("can't allocate memory", "memory limit"),
        ("File too large", "file size limit"),
        ("Resource temporarily unavailable", "process limit"),
        ("can't start new thread", "process limit"),
        ("Network is unreachable", "no network while grading"),
        ("Temporary failure in name resolution", "no network while grading"),
        ("Read-only file system", "the course is read-only while grading"),
    )
    for key, hint in hints:
        if key in text and hint not in text:
            return f"{text[:400]} ({hint})"
    return text[:400]


def _pairs(release: dict) -> dict[str, str | None]:
    """Test cell grade_id -> the exercise cell it checks (the closest solution cell above)."""
    pairs: dict[str, str | None] = {}
    last = None
    for cell in release["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            last = meta.get("grade_id")
        elif meta.get("grade"):
            pairs[meta["grade_id"]] = last
    return pairs


@cache
def lesson_pairs(release_notebook: str) -> dict[str, str | None]:
    """:func:`_pairs` of a released notebook (read once per run)."""
    return _pairs(json.loads(Path(release_notebook).read_text()))


def record(target: Target, info: Staged, graded: bool, sandbox: str) -> dict:
    """Give one submission a score and a reason for each lost point; its result (a dict).

    ``graded``: nbgrader graded the notebook and its autograded copy is in place in
    ``target.autograded``. A rejected or ungraded submission scores 0 with the reason why.
    """
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    student, lesson = info.student, info.lesson
    pairs = lesson_pairs(str(target.release / lesson / f"{lesson}.ipynb"))
    autograded = target.autograded / student / lesson / f"{lesson}.ipynb"
    with Gradebook(f"{target.db_url}?timeout=120") as gb:
        notes = list(info.notes)
        status = "graded"
        blanket = None
        if info.rejected:
            status, blanket = "rejected", info.rejected
        elif not graded:
            status = "grader-error"
            blanket = "nbgrader could not grade this notebook (see grading/logs)"
        if status != "graded":
            stale = [autograded.parent]
            if target.feedback is not None:
                stale.append(target.feedback / student / lesson)
            for folder in stale:
                if folder.exists():  # from an earlier run: must not be handed back
                    remove_tree(folder)
        gb.update_or_create_student(student)
        try:
            sub = gb.find_submission(lesson, student)
        except MissingEntry:
            sub = gb.add_submission(lesson, student)
        executed = {}
        if status == "graded":
            nb = nbformat.read(str(autograded), as_version=4)
            executed = {
                c.metadata["nbgrader"]["grade_id"]: c
                for c in nb.cells
                if "grade_id" in c.metadata.get("nbgrader", {})
            }
        cells = []
        comments: dict[str, list[str]] = {}
        for nb_sub in sub.notebooks:
            for grade in sorted(nb_sub.grades, key=lambda g: g.name):
                if blanket is not None:
                    grade.auto_score = 0.0
                    grade.manual_score = None
                    grade.needs_manual_grade = status == "grader-error"
                elif grade.auto_score is None and grade.manual_score is None:
                    grade.auto_score = 0.0
                    grade.needs_manual_grade = True
                score = grade.score or 0.0
                reason = None
                if score < grade.max_score:
                    reason = blanket or _cell_reason(executed.get(grade.name, {}))
                    reason = reason or "no points: the test cell did not pass"
                    exercise = pairs.get(grade.name)
                    cause = _cell_reason(executed.get(exercise, {})) if exercise else None
                    if cause and not blanket and not reason.startswith("NotRun"):
                        reason = f"{reason} [the exercise cell {exercise} raised {cause}]"
                cells.append(
                    {
                        "cell": grade.name,
                        "score": score,
                        "max_score": grade.max_score,
                        "reason": reason,
                    }
                )
                if reason:
                    checked = pairs.get(grade.name)
                    comments.setdefault(checked or "", []).append(
                        f"{grade.name}: {score:g}/{grade.max_score:g}, {reason}"
                    )
            if notes and nb_sub.comments:
                first = pairs.get(next(iter(pairs), ""), None) or ""
                comments.setdefault(first, []).insert(0, "grader notes: " + "; ".join(notes))
            for comment in nb_sub.comments:
                lines = comments.get(comment.name)
                previous = comment.auto_comment or ""
                if previous.startswith("Autograder:"):  # ours, from an earlier run
                    previous = ""
                if lines:
                    text = "Autograder: " + "\n".join(lines)
                    comment.auto_comment = f"{previous}\n{text}" if previous else text
                else:
                    comment.auto_comment = previous or None
        gb.db.commit()
        total = sum(c["score"] for c in cells)
        return {
            "student": student,
            "lesson": lesson,
            "status": status,
            "score": total,
            "max_score": sum(c["max_score"] for c in cells),
            "notes": notes + ([blanket] if blanket else []),
            "cells": cells,
            "sandbox": sandbox,
        }


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a kill leaves the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, errors="backslashreplace")
    os.replace(tmp, path)


def reasons_of(folder: Path, lesson: str) -> dict[str, dict]:
    """student -> result, from ``<folder>/reasons/<lesson>.json`` (empty when there is none)."""
    path = folder / "reasons" / f"{lesson}.json"
    return {r["student"]: r for r in json.loads(path.read_text())} if path.exists() else {}


def write_reasons(
    root: Path, lesson: str, results: list[dict], folder: Path | None = None, csv: bool = True
) -> None:
    """Update ``<folder>/reasons/<lesson>.json`` with ``results`` (by student) and rewrite
    ``<folder>/reasons.csv`` from every lesson's file (``folder``: default ``grading/``).

    Each file is replaced in one step: a kill leaves the old version or the new one."""
    folder = grading_dir(root) if folder is None else folder
    (folder / "reasons").mkdir(parents=True, exist_ok=True)
    merged = reasons_of(folder, lesson)
    merged.update({r["student"]: r for r in results})
    rows = [merged[s] for s in sorted(merged)]
    _write_atomically(
        folder / "reasons" / f"{lesson}.json", json.dumps(rows, indent=1, sort_keys=True) + "\n"
    )
    if csv:
        write_reasons_csv(folder)


def write_reasons_csv(folder: Path) -> None:
    """``<folder>/reasons.csv``: one row per lost point and per note, from every lesson's file."""
    rows = []
    for path in sorted((folder / "reasons").glob("*.json")):
        for r in json.loads(path.read_text()):
            for note in r["notes"]:
                rows.append([r["student"], r["lesson"], "submission", "", "", note])
            for c in r["cells"]:
                rows.append(
                    [r["student"], r["lesson"], c["cell"], c["score"], c["max_score"], c["reason"]]
                )
    out = io.StringIO()
    writer = csv_module.writer(out)
    writer.writerow(["student", "lesson", "item", "score", "max_score", "reason"])
    writer.writerows(sorted(rows, key=lambda r: (r[0], r[1])))
    _write_atomically(folder / "reasons.csv", out.getvalue())


def print_summary(results: list[dict]) -> None:
    print(f"\n{'student':24} {'lesson':20} {'score':>9}  reasons for lost points")
    for r in sorted(results, key=lambda r: (r["lesson"], r["student"])):
        lost = [c for c in r["cells"] if c["reason"]]
        score = f"{r['score']:g}/{r['max_score']:g}"
        first = ""
        if r["status"] != "graded":
            first = f"[{r['status']}] {r['notes'][-1]}"
        elif lost:
            first = f"{lost[0]['cell']}: {lost[0]['reason']}"
        student = printable(r["student"])[:24]
        print(f"{student:24} {r['lesson'][:20]:20} {score:>9}  {printable(first)[:110]}")
        rest = lost[1:] if r["status"] == "graded" else []
        for c in rest:
            print(f"{'':56}{c['cell']}: {printable(str(c['reason']))[:100]}")
        if r["status"] == "graded" and r["notes"]:
            print(f"{'':56}notes: {printable('; '.join(r['notes']))[:100]}")
