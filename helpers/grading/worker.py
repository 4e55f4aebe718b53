"""One grading process: ``nbgrader autograde`` for one submission at a time, on request.

``autograde`` starts one worker per job (:mod:`helpers.grading.pool`). A worker imports nbgrader
once, then reads requests on stdin, one JSON object a line::

    {"lesson": "<lesson id>", "student": "ada", "config": {...}}

grades that one submission with nbgrader's own ``Autograde`` converter (what
``nbgrader autograde LESSON --student ada --force`` does, in-process, the way nbgrader's
formgrader calls it), and answers on its original stdout with one JSON line::

    {"lesson": ..., "student": ..., "success": true, "log": "...", "seconds": 3.1}

``config`` is the traitlets configuration added to the course's ``nbgrader_config.py``
(:meth:`helpers.grading.session.Run.nbgrader_config`). Everything else the worker or its kernels
print goes to the log file named on the command line, never into the answers.

    python -m helpers.grading.worker ROOT LOG
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path

from helpers import course

course.skip_iri_grammar()  # before nbgrader imports nbformat (seconds of CPU saved)


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the grader that started it dies (a killed run must
    not leave a worker grading behind the next run's back)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            os._exit(1)


class Grader:
    """nbgrader's Autograde for one submission at a time, with the course's configuration."""

    def __init__(self, root: Path):
        from traitlets.config.loader import PyFileConfigLoader

        self.root = root
        self.base = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
        self._cache: dict[str, tuple] = {}

    def _setup(self, overrides: dict):
        from nbgrader.coursedir import CourseDirectory
        from traitlets.config import Config

        key = json.dumps(overrides, sort_keys=True)
        if key not in self._cache:
            config = Config(self.base)
            config.merge(Config(overrides))
            self._cache[key] = (config, CourseDirectory(config=config))
        return self._cache[key]

    def grade(self, lesson: str, student: str, overrides: dict) -> dict:
        from nbgrader.converters import Autograde
        from nbgrader.utils import capture_log, temp_attrs

        config, coursedir = self._setup(overrides)
        with temp_attrs(coursedir, assignment_id=lesson, student_id=student):
            app = Autograde(coursedir=coursedir, config=config)
            app.force = True
            app.create_student = True
            result = capture_log(app)
        log = result.get("log", "")
        if result.get("error"):
            log += "\n" + result["error"]
        return {"success": bool(result.get("success")), "log": log}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m helpers.grading.worker ROOT LOG")
    root, log_path = Path(argv[0]), argv[1]
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # not inherited by the kernels
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(root)
    grader = Grader(root)
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        lesson, student = request["lesson"], request["student"]
        start = time.monotonic()
        try:
            result = grader.grade(lesson, student, request["config"])
        except Exception as exc:  # nbgrader itself failed: this submission gets a grader error
            import traceback

            result = {
                "success": False,
                "log": f"error processing assignment '{lesson}' for "
                f"student '{student}': {exc}\n{traceback.format_exc()}",
            }
        result.update(lesson=lesson, student=student, seconds=time.monotonic() - start)
        answers.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
