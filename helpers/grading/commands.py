"""The grader's command line: ``python -m helpers.grading COMMAND`` (see :mod:`helpers.grading`)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import helpers.grading
from helpers import course
from helpers.grading import sandbox
from helpers.grading.common import (
    Settings,
    course_folder,
    course_setting,
    exchange_root,
    grading_dir,
    nbgrader,
    register_lessons,
    released,
    staged_dir,
    submissions,
)
from helpers.grading.record import print_summary, record, write_reasons
from helpers.grading.session import Run
from helpers.grading.stage import stage


def autograde(
    root: Path,
    settings: Settings | None = None,
    only: list[str] | None = None,
    students: list[str] | None = None,
) -> int:
    """Grade every submission (or only those of ``only`` lessons / ``students``)."""
    settings = settings or Settings()
    found = submissions(root)
    if only:
        found = {k: v for k, v in found.items() if k in only}
    if students:
        found = {k: [s for s in v if s in students] for k, v in found.items()}
        found = {k: v for k, v in found.items() if v}
    if not found:
        submitted = course_folder(root, "submitted")
        print(f"nothing to grade: put submissions in {submitted}/<student>/<lesson>/")
        return 0
    register_lessons(root)
    known = set(course.lesson_ids(root))
    run = Run.start(root, settings)
    for warning in run.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(run.describe())
    logs = grading_dir(root) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    everything = []
    try:
        for lesson, students in sorted(found.items()):
            if lesson not in known:
                print(f"skipped {lesson}: not a lesson of this course ({', '.join(students)})")
                continue
            for old in staged_dir(root).glob(f"job*/*/{lesson}"):
                shutil.rmtree(old)  # earlier runs, and students who no longer submit
            staged = {
                s: stage(root, lesson, s, settings, i % run.jobs) for i, s in enumerate(students)
            }
            ready = [s for s, info in staged.items() if not info.rejected]
            print(f"autograding {lesson}: {len(ready)} of {len(students)} submission(s) runnable")
            jobs = sorted({staged[s].job for s in ready})
            log = run.grade(root, lesson, settings, jobs) if ready else ""
            (logs / f"autograde-{lesson}.log").write_text(log)
            results = record(root, lesson, staged, log, run)
            write_reasons(root, lesson, results)
            everything += results
    finally:
        run.close()
    print_summary(everything)
    for warning in run.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"\nreasons: {grading_dir(root) / 'reasons.csv'}")
    return 0


def feedback(root: Path) -> int:
    nbgrader(root, "generate_feedback", "*", "--force", "--log-level=WARN")
    print(f"feedback written to {course_folder(root, 'feedback')} (hidden tests removed)")
    return 0


def export(root: Path) -> int:
    target = grading_dir(root) / "grades.csv"
    nbgrader(root, "export", f"--to={target}", "--log-level=WARN")
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
    for lesson in course.lesson_ids(root):
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
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="the course root holding nbgrader_config.py (default: here)",
    )
    limits = sandbox.Limits()
    env = os.environ.get
    group = parser.add_argument_group("autograde")
    parser.add_argument(
        "--lesson", action="append", help="only this lesson (repeatable; not for feedback/export)"
    )
    group.add_argument("--student", action="append", help="grade only this student (repeatable)")
    group.add_argument(
        "--timeout",
        action="append",
        default=[t for t in env("COURSE_GRADING_TIMEOUT", "").split(",") if t],
        metavar="SECONDS or LESSON=SECONDS",
        help="seconds per cell, for every lesson or one (repeatable; default: Execute.timeout "
        "of nbgrader_config.py)",
    )
    group.add_argument(
        "--sandbox",
        choices=["auto", "bwrap", "rlimits", "off"],
        default=env("COURSE_SANDBOX", "auto"),
        help="auto: bubblewrap when it works, else resource limits only (loudly)",
    )
    for name, unit in (
        ("memory_mb", "MB"),
        ("cpu_s", "s"),
        ("file_mb", "MB"),
        ("processes", ""),
        ("tmp_mb", "MB"),
    ):
        default = int(env(f"COURSE_GRADING_{name.upper()}", getattr(limits, name)))
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=default,
            help=f"limit per kernel (default {default}{unit})",
        )
    group.add_argument(
        "--max-notebook-mb",
        type=int,
        default=int(env("COURSE_GRADING_MAX_NOTEBOOK_MB", "50")),
        help="larger submitted notebooks are rejected (default 50)",
    )
    group.add_argument(
        "--max-outputs",
        type=int,
        default=int(env("COURSE_GRADING_MAX_OUTPUTS", "200")),
        help="outputs (prints, plots) a cell may produce before the rest is dropped",
    )
    group.add_argument(
        "--jobs",
        type=int,
        default=int(env("COURSE_GRADING_JOBS", "1")),
        help="grade this many notebooks at a time (default 1; one per spare CPU core)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / course.NBGRADER_CONFIG.name).is_file():
        parser.error(f"{root} has no nbgrader_config.py: run from the course root")
    if args.command in ("release-assignments", "collect", "release-feedback"):
        return commands[args.command](root, args.lesson)
    if args.command != "autograde":
        return commands[args.command](root)
    timeout, lesson_timeouts = None, {}
    for value in args.timeout:
        lesson, _, seconds = value.rpartition("=")
        if not seconds.isdigit():
            parser.error(f"--timeout takes SECONDS or LESSON=SECONDS, got {value!r}")
        if lesson:
            lesson_timeouts[lesson] = int(seconds)
        else:
            timeout = int(seconds)
    settings = Settings(
        timeout=timeout,
        lesson_timeouts=lesson_timeouts,
        mode=args.sandbox,
        limits=sandbox.Limits(
            memory_mb=args.memory_mb,
            cpu_s=args.cpu_s,
            file_mb=args.file_mb,
            processes=args.processes,
            tmp_mb=args.tmp_mb,
        ),
        max_notebook_mb=args.max_notebook_mb,
        jobs=args.jobs,
        max_outputs=args.max_outputs,
    )
    return autograde(root, settings, args.lesson, args.student)
