"""Attacks on the verdict itself (issue 22): a notebook that tries to make the autograder award
points its code did not earn by changing how its kernel runs the test cells.

The autograder never runs a test cell in the student's kernel: it judges each one in its own
process (helpers/grading/verdict.py, helpers/checks/remote.py), reaching the learner's objects
through a narrow channel. So a blank notebook scores 0 whatever it does to its kernel, and a
solved one keeps full marks whatever hooks it leaves behind.
"""

from __future__ import annotations

import copy

from support.hostile.generate import (
    ALL,
    Row,
    blank,
    chain,
    folder,
    released,
    setup,
    with_setup,
    wrong_rnn_cell,
)

#: IPython's documented hooks and transformers, used to neuter every ``check_*`` call.
HOOKS = """
import ast as _ast
_ip = get_ipython()
def _neuter_lines(lines):
    return ["pass\\n" if "check_" in line else line for line in lines]
_ip.input_transformers_post.append(_neuter_lines)
class _NoChecks(_ast.NodeTransformer):
    def visit_Expr(self, node):
        text = _ast.unparse(node)
        return _ast.Pass() if "check_" in text else node
_ip.ast_transformers.append(_NoChecks())
_ip.events.register("pre_run_cell", lambda *a, **k: None)
_ip.events.register("post_execute", lambda *a, **k: None)
"""

#: A finder that answers every later import of helpers.checks* with modules whose check_*
#: functions do nothing (what a test cell would import after the checks were re-imported).
META_PATH = """
import sys as _sys, types as _types, importlib.abc as _abc, importlib.machinery as _mach
class _NoOpChecks(_types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("check_"):
            return lambda *a, **k: None
        raise AttributeError(name)
class _Finder(_abc.MetaPathFinder, _abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "helpers.checks" or name.startswith("helpers.checks."):
            return _mach.ModuleSpec(name, self, is_package=True)
        return None
    def create_module(self, spec):
        return _NoOpChecks(spec.name)
    def exec_module(self, module):
        module.__path__ = []
_sys.meta_path.insert(0, _Finder())
for _name in [m for m in _sys.modules if m.startswith("helpers.checks")]:
    del _sys.modules[_name]
"""

#: The record of genuine torch/NumPy functions edited to accept patched ones, then patched.
BASELINE_EDIT = """
import numpy as _np
import helpers.checks._baseline as _base
_base.tampering = lambda: []
torch.allclose = lambda *a, **k: True
_np.allclose = lambda *a, **k: True
"""

#: numpy.ndarray replaced by a look-alike that claims to come from numpy and agrees with all.
NDARRAY = """
import numpy as _np
class ndarray:
    __module__ = "numpy"
    def __init__(self, *a, **k):
        pass
    def __le__(self, other):
        return True
    __eq__ = __ge__ = __le__
    def all(self, *a, **k):
        return True
_np.ndarray = ndarray
"""

#: A package named helpers beside the notebook: first on the kernel's sys.path, it shadows the
#: course's own, with check functions that pass everything.
FAKE_HELPERS = {
    "helpers/__init__.py": b"",
    "helpers/checks/__init__.py": (
        b"def __getattr__(name):\n"
        b"    if name.startswith('check_'):\n"
        b"        return lambda *a, **k: print(name[6:] + ': OK')\n"
        b"    raise AttributeError(name)\n"
    ),
}


def _tag_tests(tag: str):
    """Every test cell (and nothing else) carries ``tag`` in its metadata."""

    def run(nb, lesson: str):
        nb = copy.deepcopy(nb)
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and not meta.get("solution"):
                cell.metadata["tags"] = [*cell.metadata.get("tags", []), tag]
        return nb

    return run


def _blank_with(code: str):
    return lambda nb, lesson: with_setup(blank(lesson), after=code)


ROWS: list[Row] = [
    Row(
        "skip_tests_blank",
        "verdict",
        "the release, unanswered, its test cells tagged skip-execution (metadata only)",
        chain(released, _tag_tests("skip-execution")),
        lost={ALL: ""},
    ),
    Row(
        "skip_tests_solved",
        "verdict",
        "every exercise solved, test cells tagged skip-execution: judged all the same",
        _tag_tests("skip-execution"),
    ),
    Row(
        "hooks_blank",
        "verdict",
        "the release, unanswered, with IPython hooks and input/AST transformers that neuter "
        "every check_* call",
        _blank_with(HOOKS),
        lost={ALL: ""},
    ),
    Row(
        "hooks_solved",
        "verdict",
        "every exercise solved, with the same hooks and transformers left in the kernel",
        setup(after=HOOKS),
    ),
    Row(
        "meta_path_blank",
        "verdict",
        "the release, unanswered, with a sys.meta_path finder serving no-op check modules",
        _blank_with(META_PATH),
        lost={ALL: ""},
    ),
    Row(
        "fake_helpers_blank",
        "verdict",
        "the release, unanswered, with a helpers/ package beside it whose checks pass all",
        folder({"{lesson}.ipynb": released, **FAKE_HELPERS}),
        lost={ALL: ""},
    ),
    Row(
        "baseline_edit",
        "verdict",
        "the checks' record of genuine functions edited, allclose patched, a wrong rnn_cell",
        wrong_rnn_cell(BASELINE_EDIT),
        lost={"rnn_cell_check": "differs", "rnn_forward_check": ""},
    ),
    Row(
        "ndarray_lookalike",
        "verdict",
        "numpy.ndarray replaced by a look-alike from 'numpy' that agrees with all, a wrong "
        "rnn_cell",
        wrong_rnn_cell(NDARRAY),
        lost={"rnn_cell_check": "", "rnn_forward_check": ""},
    ),
]
