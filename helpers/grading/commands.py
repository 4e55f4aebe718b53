"""The grader's command line: ``python -m helpers.grading COMMAND`` (see :mod:`helpers.grading`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helpers.grading
from helpers import course
from helpers.grading import pool
from helpers.grading import settings as settings_module
from helpers.grading.common import (
    Target,
    add_root_argument,
    course_folder,
    course_setting,
    exchange_root,
    grading_dir,
    in_shard,
    nbgrader,
    printable,
    register_lessons,
    released,
    remove_tree,
    submissions,
)
from helpers.grading.record import print_summary, record, write_reasons, write_reasons_csv
from helpers.grading.session import Run
from helpers.grading.settings import Settings
from helpers.grading.stage import Staged


def autograde(
    root: Path,
    settings: Settings | None = None,
    only: list[str] | None = None,
    students: list[str] | None = None,
    force: bool = False,
    shard: tuple[int, int] | None = None,
) -> int:
    """Grade every new or changed submission (or only those of ``only`` lessons / ``students``
    / the shard ``(K, N)``); ``force``: regrade unchanged ones too."""
    settings = settings or Settings()
    target = Target.for_shard(root, *shard) if shard else Target.course(root)
    found = submissions(root)
    if only:
        found = {k: v for k, v in found.items() if k in only}
    if students:
        found = {k: [s for s in v if s in students] for k, v in found.items()}
    if shard:
        found = {k: [s for s in v if in_shard(s, *shard)] for k, v in found.items()}
    found = {k: v for k, v in found.items() if v}
    known = set(course.lesson_ids())
    for lesson in sorted(set(found) - known):
        names = printable(", ".join(found.pop(lesson)))
        print(f"skipped {printable(lesson)}: not a lesson of this course ({names})")
    if not found:
        submitted = course_folder(root, "submitted")
        where = f" in shard {shard[0]}/{shard[1]}" if shard else ""
        print(f"nothing to grade{where}: put submissions in {submitted}/<student>/<lesson>/")
        return 0
    register_lessons(root, target if shard else None, sorted(found))
    todo, skipped, cut_off = pool.plan(root, target, found, settings, force)
    total = sum(len(v) for v in found.values())
    where = f" (shard {shard[0]}/{shard[1]}: {target.folder})" if shard else ""
    print(f"{total} submission(s) of {len(found)} lesson(s){where}: {len(todo)} to grade")
    if skipped:
        print(f"  {len(skipped)} unchanged since they were graded: skipped (--force regrades them)")
    if cut_off:
        print(f"  {len(cut_off)} whose grading was cut off by an earlier run: graded again")
    remove_tree(target.staged)  # an earlier run's copies
    if not todo:
        print(f"everything is up to date; reasons: {target.folder / 'reasons.csv'}")
        return 0
    run = Run.start(root, settings)
    for warning in run.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(run.describe())
    print(f"{run.jobs} notebook(s) at a time")
    progress = pool.Progress(len(todo))
    results: list[dict] = []

    def done(item: pool.Item, info, graded: bool, log: str) -> None:
        try:
            result = record(target, info, graded, run.describe())
        except Exception as exc:  # this submission only: 0 with the reason, the run goes on
            result = _grader_error(target, info, exc, run.describe())
        result["fingerprint"] = item.fingerprint
        write_reasons(root, item.lesson, [result], folder=target.folder, csv=False)
        pool.marker(target, item.lesson, item.student).unlink(missing_ok=True)
        results.append(result)
        progress.update(failed=result["status"] != "graded")

    try:
        pool.grade(root, target, run, settings, todo, done)
    finally:
        run.close()
        if (target.reasons).is_dir():
            write_reasons_csv(target.folder)
    print_summary(results)
    for warning in run.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    seconds = progress.seconds()
    print(
        f"\ngraded {len(results)} submission(s) in {pool.Progress.clock(seconds)} "
        f"({seconds / max(len(results), 1):.1f} s per notebook, {run.jobs} at a time)"
    )
    print(f"reasons: {target.folder / 'reasons.csv'}")
    return 0


def _grader_error(target: Target, info, exc: Exception, sandbox_words: str) -> dict:
    """The result of a submission whose recording failed: 0, with the reason, in the gradebook
    when it can still be written there (as a rejected submission), else in the reasons only."""
    reason = f"grader error: {type(exc).__name__}: {printable(str(exc))[:200]}"
    failed = Staged(info.student, info.lesson, notes=list(info.notes), rejected=reason)
    try:
        return record(target, failed, False, sandbox_words)
    except Exception:
        return {
            "student": info.student,
            "lesson": info.lesson,
            "status": "rejected",
            "score": 0.0,
            "max_score": 0.0,
            "notes": [*failed.notes, reason],
            "cells": [],
            "sandbox": sandbox_words,
        }


def feedback(root: Path) -> int:
    nbgrader(root, "generate_feedback", "*", "--force", "--log-level=WARN")
    print(f"feedback written to {course_folder(root, 'feedback')} (hidden tests removed)")
    return 0


#: What ``make export`` writes in grading/: file name -> nbgrader export plugin (None: nbgrader's
#: own CsvExportPlugin). The formats are described in ``helpers.grading.export``.
EXPORTS = {
    "grades.csv": None,
    "grades-by-student.csv": "helpers.grading.export.ByStudentCsvExportPlugin",
    "grades-canvas.csv": "helpers.grading.export.CanvasCsvExportPlugin",
}


def export(root: Path, canvas_roster: Path | None = None, canvas_match: str | None = None) -> int:
    """Write the gradebook's scores in every format of ``EXPORTS``, each by ``nbgrader export``."""
    for name, plugin in EXPORTS.items():
        target = grading_dir(root) / name
        options = [f"--to={target}", "--log-level=WARN"]
        if plugin:
            options.append(f"--exporter={plugin}")
        if plugin and plugin.endswith("CanvasCsvExportPlugin"):
            if canvas_roster is not None:
                if not canvas_roster.is_file():
                    raise ValueError(f"--canvas-roster: no such file {canvas_roster}")
                options.append(f"--CanvasCsvExportPlugin.roster={canvas_roster.resolve()}")
            if canvas_match:
                options.append(f"--CanvasCsvExportPlugin.match={canvas_match}")
        result = nbgrader(root, "export", *options)
        if result.stderr.strip():  # warnings only (--log-level=WARN): students not matched
            sys.stderr.write(result.stderr)
        print(f"grades written to {target}")
    return 0


def release_assignments(root: Path, only: list[str] | None = None) -> int:
    """Put every released lesson of ``lessons/`` into the exchange, where students fetch it."""
    register_lessons(root)
    for lesson in released(root):
        if not only or lesson in only:
            nbgrader(root, "release_assignment", lesson, "--force", "--log-level=WARN")
            print(f"released {lesson} to the exchange")
    return 0


def collect(root: Path, only: list[str] | None = None) -> int:
    """Copy the latest submission of every student from the exchange to grading/submitted/."""
    exchange = exchange_root(root)
    course = course_setting(root, "CourseDirectory", "course_id")
    inbound = exchange / course / "inbound" if exchange and course else None
    for lesson in released(root):
        if only and lesson not in only:
            continue
        if inbound is not None and inbound.is_dir() and not any(inbound.glob(f"*+{lesson}+*")):
            continue  # nobody submitted it
        nbgrader(root, "collect", lesson, "--update", "--log-level=WARN")
    found = submissions(root)
    for lesson, students in sorted(found.items()):
        print(f"{lesson}: {len(students)} submission(s) in grading/submitted")
    return 0


def release_feedback(root: Path, only: list[str] | None = None) -> int:
    """Put the feedback of every graded submission into the exchange for students to fetch."""
    for lesson in course.lesson_ids():
        if only and lesson not in only:
            continue
        if any(course_folder(root, "feedback").glob(f"*/{lesson}")):
            nbgrader(root, "release_feedback", lesson, "--log-level=WARN")
            print(f"released feedback for {lesson}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grading",
        description=helpers.grading.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = {
        "autograde": None,
        "feedback": feedback,
        "export": export,
        "release-assignments": release_assignments,
        "collect": collect,
        "release-feedback": release_feedback,
    }
    parser.add_argument("command", choices=list(commands))
    add_root_argument(parser)
    exports = parser.add_argument_group("export")
    exports.add_argument(
        "--canvas-roster",
        type=Path,
        help="a CSV with Canvas's student columns (its gradebook export) to match students by",
    )
    exports.add_argument(
        "--canvas-match",
        help="the roster column holding the nbgrader student id (default: SIS Login ID)",
    )
    group = parser.add_argument_group("autograde")
    parser.add_argument(
        "--lesson", action="append", help="only this lesson (repeatable; not for feedback/export)"
    )
    group.add_argument("--student", action="append", help="grade only this student (repeatable)")
    try:
        settings_module.add_arguments(group)
    except ValueError as exc:
        parser.error(str(exc))
    group.add_argument(
        "--force",
        action="store_true",
        help="regrade every submission, also those unchanged since they were graded",
    )
    group.add_argument(
        "--shard",
        metavar="K/N",
        help="grade only shard K of N (a fixed 1/N of the students, by a hash of their ids) "
        "into grading/shards/K-of-N/; merge the shards with make merge-grades",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / course.NBGRADER_CONFIG.name).is_file():
        parser.error(f"{root} has no nbgrader_config.py: run from the course root")
    if args.command in ("release-assignments", "collect", "release-feedback"):
        return commands[args.command](root, args.lesson)
    if args.command == "export":
        try:
            return export(root, args.canvas_roster, args.canvas_match)
        except ValueError as exc:
            parser.error(str(exc))
    if args.command != "autograde":
        return commands[args.command](root)
    try:
        settings = settings_module.from_arguments(args)
    except ValueError as exc:
        parser.error(str(exc))
    shard = None
    if args.shard:
        k, _, n = args.shard.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            parser.error(f"--shard takes K/N with 1 <= K <= N (e.g. 2/3), got {args.shard!r}")
        shard = (int(k), int(n))
    return autograde(root, settings, args.lesson, args.student, args.force, shard)
