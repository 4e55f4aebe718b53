"""The instructor's grader (``helpers.grading``) never imports torch: it must start in a second."""

from __future__ import annotations

import io
import pkgutil
import subprocess
import sys

from conftest import ROOT


def test_grading_package_imports_no_torch():
    import helpers.grading

    names = [f"helpers.grading.{m.name}" for m in pkgutil.iter_modules(helpers.grading.__path__)]
    names = [n for n in names if n != "helpers.grading.__main__"]
    expected = {
        "commands",
        "common",
        "execute",
        "merge",
        "pool",
        "record",
        "sandbox",
        "session",
        "similarity",
        "stage",
        "worker",
    }
    assert {f"helpers.grading.{m}" for m in expected} <= set(names)
    code = (
        "import importlib, sys\n"
        f"for name in {['helpers.grading', *names]!r}:\n"
        "    importlib.import_module(name)\n"
        "import helpers.course\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


class _Log(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_reports_done_failures_and_time_left():
    from helpers.grading.pool import Progress

    log = _Log()
    progress = Progress(4, stream=log)
    progress.update()
    progress.update(failed=True)
    progress.update()
    lines = log.getvalue().splitlines()
    assert len(lines) == 3  # a small class: a line per submission in a log
    assert "3/4" in lines[-1] and "1 not graded" in lines[-1] and "left" in lines[-1]
    progress.update()
    last = log.getvalue().splitlines()[-1]
    assert "4/4" in last and "left" not in last and "elapsed" in last
    assert Progress.clock(3725) == "1:02:05" and Progress.clock(65) == "01:05"
