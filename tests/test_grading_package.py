"""The instructor's grader (``helpers.grading``) never imports torch: it must start in a second."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

from conftest import ROOT


def test_grading_package_imports_no_torch():
    import helpers.grading

    names = [f"helpers.grading.{m.name}" for m in pkgutil.iter_modules(helpers.grading.__path__)]
    names = [n for n in names if n != "helpers.grading.__main__"]
    expected = {"commands", "common", "execute", "record", "sandbox", "session", "stage"}
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
