"""Attacks on the grader's bounds (issue 22): outputs that flood the notebook past the caps in
every way a cell can add to it, a notebook that runs past its wall-clock limit, JSON nested too
deeply to read, and a folder left thousands of levels deep by the kernel.

The corpus grades lesson 01 with ``--max-output-kb=1000 --max-notebook-output-kb=3000
--notebook-timeout=01_intro_to_rnns=75`` (tests/test_hostile_grading.py's ``SETTINGS``); the
flooding cases keep their honest marks, and their autograded notebooks must stay under the
caps (``test_autograded_notebooks_are_bounded``). Submission folders the ``write`` of
generate.py cannot make (FIFOs, folders 1,100 levels deep, odd file names) are in
tests/test_grading_bounds.py.
"""

from __future__ import annotations

import copy
import json

import nbformat

from support.hostile.generate import ALL, Row, after, as_bytes, first_code, replace

#: the students whose autograded notebooks must stay under the output caps
FLOODS = (
    "traceback_flood",
    "traceback_list",
    "metadata_flood",
    "display_updates",
    "clear_after_flood",
)

TRACEBACK_FLOOD = """
for _i in range(8):
    try:
        raise ValueError("x" * 10_000_000)
    except ValueError:
        get_ipython().showtraceback()
raise ValueError("y" * 10_000_000)
"""

TRACEBACK_LIST = """
def _long_traceback(shell, etype, value, tb, tb_offset=None):
    return [f"frame {_i} " + "t" * 100 for _i in range(200_000)]
get_ipython().set_custom_exc((LookupError,), _long_traceback)
raise LookupError("a 20 MB traceback")
"""

METADATA_FLOOD = """
from IPython.display import display as _display
for _i in range(20):
    _display({"text/plain": "small"}, raw=True, metadata={"junk": ["m" * 1_000_000]})
"""

DISPLAY_UPDATES = """
from IPython.display import display as _display, update_display as _update
for _i in range(40):
    _display({"text/plain": "x"}, raw=True, display_id="shared")
for _i in range(20):
    _update({"text/plain": "u" * 200_000}, raw=True, display_id="shared")
"""

CLEAR_AFTER_FLOOD = """
from IPython.display import clear_output as _clear
for _i in range(100):
    print("w" * 50_000)
_clear()
raise NotImplementedError("the exercise is left as released")
"""

DEEP_FOLDER = """
import os as _os
_here = _os.getcwd()
for _i in range(1100):
    _os.mkdir("d")
    _os.chdir("d")
_os.chdir(_here)
print("made a folder 1100 levels deep")
"""


def _sleepers(nb, lesson: str):
    """Six cells of 14 s each (each under lesson 01's 15 s cell limit) after the set-up cell."""
    nb = copy.deepcopy(nb)
    at = nb.cells.index(first_code(nb)) + 1
    for i in range(6):
        sleeper = nbformat.v4.new_code_cell("import time\ntime.sleep(14)")
        sleeper.id = f"sleeper-{i}"
        nb.cells.insert(at, sleeper)
    return nb


def _nest(depth: int) -> str:
    """A JSON fragment nested ``depth`` lists deep, as text (never built as Python objects)."""
    return "[" * depth + "]" * depth


def _deep_metadata(text: bytes) -> bytes:
    data = json.loads(text)
    data["cells"][1]["metadata"]["deep"] = "@@DEEP@@"
    return json.dumps(data).encode().replace(b'"@@DEEP@@"', _nest(100_000).encode())


def _deep_outputs(text: bytes) -> bytes:
    data = json.loads(text)
    code = next(c for c in data["cells"] if c["cell_type"] == "code")
    code["outputs"] = [
        {"output_type": "display_data", "data": {"application/json": "@@DEEP@@"}, "metadata": {}}
    ]
    return json.dumps(data).encode().replace(b'"@@DEEP@@"', _nest(300).encode())


ROWS: list[Row] = [
    Row(
        "traceback_flood",
        "resources",
        "an exercise cell shows nine tracebacks of a 10 MB exception (90 MB)",
        after("gru_quiz", TRACEBACK_FLOOD),
        outputs={"gru_quiz": "ValueError"},
    ),
    Row(
        "traceback_list",
        "resources",
        "an exercise cell raises with a traceback of 200,000 lines (20 MB)",
        after("hidden_state_shape", TRACEBACK_LIST),
        outputs={"hidden_state_shape": "LookupError"},
    ),
    Row(
        "metadata_flood",
        "resources",
        "20 displays, each with 1 MB of output metadata",
        after("rnn_cell_backward", METADATA_FLOOD),
        outputs={"rnn_cell_backward": "truncated"},
    ),
    Row(
        "display_updates",
        "resources",
        "40 outputs under one display id, then 20 updates of 200 kB each (8 MB each)",
        after("clip_grad_norm", DISPLAY_UPDATES),
    ),
    Row(
        "clear_after_flood",
        "resources",
        "an unanswered exercise prints 5 MB, clears its output, then raises",
        replace("rnn_cell", CLEAR_AFTER_FLOOD),
        lost={"rnn_cell_check": "", "rnn_forward_check": ""},
        outputs={"rnn_cell": "NotImplementedError"},
    ),
    Row(
        "notebook_sleeper",
        "resources",
        "six cells of 14 s: each under the cell limit, together over the notebook's limit",
        _sleepers,
        lost={ALL: "wall-clock"},
        repeat=True,
    ),
    Row(
        "deep_output_folder",
        "resources",
        "the kernel leaves a folder 1,100 levels deep in the autograded folder (graded twice)",
        after("rnn_forward", DEEP_FOLDER),
        repeat=True,
    ),
    Row(
        "deep_json_metadata",
        "format",
        "a cell's metadata nested 100,000 lists deep",
        as_bytes(_deep_metadata),
        rejected="nested",
    ),
    Row(
        "deep_json_outputs",
        "format",
        "an output nested 300 lists deep (valid JSON Python can read)",
        as_bytes(_deep_outputs),
        rejected="nested",
    ),
]
