"""Generate the hostile-submission corpus from the real lessons.

Every case is one student's submission folder (a notebook, or broken files) plus what the grader
must do with it: the test cells that lose their points (with a word expected in the reason),
or the reason a submission is rejected outright, notes the grader must record, and text the
graded notebook must show. Everything else in the case scores full marks.

Lesson 01 gets the full corpus (faults, tampering, resource abuse, broken files, numerical edge
cases, device mismatch); every other lesson that is released (``lessons/<id>/``) gets a few
generic cases, so the corpus follows the course as lessons are added.

    python tests/hostile/generate.py OUT    # write the corpus to OUT/<student>/<lesson>/ and
                                            # OUT/expected.json, to look at it
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
L1 = "01_intro_to_rnns"


@dataclass
class Link:
    """A symbolic link in a submission folder."""

    target: str


@dataclass
class Case:
    student: str
    lesson: str
    category: str
    summary: str
    files: dict[str, object]  # relative path -> NotebookNode | bytes | Link
    lost: dict[str, str] = field(default_factory=dict)  # test grade_id -> text in its reason
    rejected: str | None = None  # text in the rejection reason; the whole submission scores 0
    notes: tuple[str, ...] = ()  # texts in the submission's notes
    repeat: bool = False  # graded a second time to show the scores do not change
    outputs: dict[str, str] = field(default_factory=dict)  # grade_id -> text in its outputs
    absent: dict[str, str] = field(default_factory=dict)  # grade_id -> text NOT in its outputs
    needs_sandbox: bool = False  # writes or reads where only the sandbox stops it

    def expected_score(self, points: dict[str, float]) -> float:
        if self.rejected is not None:
            return 0.0
        return sum(p for gid, p in points.items() if gid not in self.lost)


# ----------------------------------------------------------------------------------------------
# notebooks


def _read(kind: str, lesson: str):
    return nbformat.read(ROOT / kind / lesson / f"{lesson}.ipynb", as_version=4)


def _gid(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def points(lesson: str) -> dict[str, float]:
    """Test cell grade_id -> points, from the release."""
    return {
        _gid(c): float(c.metadata["nbgrader"]["points"])
        for c in _read("lessons", lesson).cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


def perfect(lesson: str):
    """What a student who solved everything submits: the release with the solutions filled in."""
    release = _read("lessons", lesson)
    answers = {_gid(c): c.source for c in _read("solutions", lesson).cells if _gid(c)}
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = answers[_gid(cell)]
    return nb


def blank(lesson: str):
    return _read("lessons", lesson)


def cell(nb, grade_id: str):
    found = [c for c in nb.cells if _gid(c) == grade_id]
    assert len(found) == 1, f"no single cell {grade_id} in the notebook"
    return found[0]


def edit(nb, grade_id: str, before: str = "", after: str = "", source: str | None = None):
    """A copy of ``nb`` with code put before/after (or instead of) a cell's source."""
    nb = copy.deepcopy(nb)
    target = cell(nb, grade_id)
    body = target.source if source is None else source
    target.source = "\n".join(s for s in (before, body, after) if s)
    return nb


def first_code(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def with_setup(nb, before: str = "", after: str = ""):
    """A copy with code put before/after the notebook's first code cell (its imports)."""
    nb = copy.deepcopy(nb)
    target = first_code(nb)
    target.source = "\n".join(s for s in (before, target.source, after) if s)
    return nb


def blank_exercise(nb, lesson: str, grade_id: str):
    """A copy where one exercise is left as released (raises NotImplementedError)."""
    return edit(nb, grade_id, source=cell(blank(lesson), grade_id).source)


def ipynb(nb) -> bytes:
    return nbformat.writes(nb).encode()


# ----------------------------------------------------------------------------------------------
# code put into hostile notebooks

PATHS = """
import pathlib as _pl
import helpers as _helpers
_course = _pl.Path.cwd().parents[3]  # grading/autograded/<student>/<lesson> -> the course
_repo = _pl.Path(_helpers.__file__).resolve().parents[1]
"""

SIGMOID_CELL = """
def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    return torch.sigmoid(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)
"""

PROBE = (
    PATHS
    + """
import os, socket, json as _json
_seen = {
    "uid": os.getuid(),
    "gradebook_visible": (_course / "grading" / "gradebook.db").exists(),
    "solutions_visible": any((_course / "solutions").glob("*/*.ipynb")),
    "other_students_visible": (_course / "grading" / "submitted").exists(),
    "git_visible": (_repo / ".git" / "HEAD").exists(),
    "NBGRADER_EXECUTION": os.environ.get("NBGRADER_EXECUTION"),
}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    _seen["network"] = "open"
except OSError as exc:
    _seen["network"] = type(exc).__name__
print("PROBE " + _json.dumps(_seen, sort_keys=True))
"""
)

VANDAL = (
    PATHS
    + """
_lesson = _pl.Path.cwd().name
_targets = [
    _course / "grading" / "gradebook.db",
    _repo / "grading" / "vandal.txt",
    _repo / "helpers" / "vandal.py",
    _repo / "helpers" / "checks" / "vandal.py",
    _repo / "data" / "vandal.txt",
    _course / "solutions" / "vandal.txt",
    _course / "lessons" / "vandal.txt",
    _course / "grading" / "submitted" / "perfect" / _lesson / f"{_lesson}.ipynb",
    _course / "grading" / "autograded" / "perfect" / _lesson / f"{_lesson}.ipynb",
    _pl.Path.cwd().parent.parent / "perfect" / _lesson / "vandal.txt",
]
for _t in _targets:
    try:
        with open(_t, "ab") as _fh:
            _fh.write(b"vandalised")
        print("WROTE", _t)
    except OSError as _exc:
        print("refused", _t.name, type(_exc).__name__)
try:
    import sqlite3
    _con = sqlite3.connect(_course / "grading" / "gradebook.db")
    _con.execute("update grade set manual_score = 1000")
    _con.commit()
    print("WROTE gradebook rows")
except Exception as _exc:
    print("refused sqlite", type(_exc).__name__)
"""
)

READ_SOLUTIONS = (
    PATHS
    + """
_lesson = _pl.Path.cwd().name
_stolen = None
for _p in [
    _course / "solutions" / _lesson / f"{_lesson}.ipynb",
    _repo / "solutions" / _lesson / f"{_lesson}.ipynb",
    _course / "grading" / "release" / _lesson / f"{_lesson}.ipynb",
    _course / "grading" / "gradebook.db",
    _repo / ".git" / "HEAD",
]:
    try:
        _stolen = _p.read_text(errors="replace")
        print("READ", _p)
        break
    except OSError as _exc:
        print("hidden", _p.name, type(_exc).__name__)
if _stolen and "BEGIN SOLUTION" in _stolen:
    import json as _json
    for _c in _json.loads(_stolen)["cells"]:
        if "def rnn_cell" in "".join(_c["source"]):
            exec("".join(_c["source"]))
"""
)

ALWAYS_EQUAL = """
class AlwaysEqual:
    shape = dtype = device = None
    def __eq__(self, other):
        return True
    __ne__ = lambda self, other: False
    __hash__ = object.__hash__
    def __getattr__(self, name):
        return lambda *a, **k: self
"""


# ----------------------------------------------------------------------------------------------
# the corpus


def lesson01_cases() -> list[Case]:
    lesson = L1
    ok = perfect(lesson)
    cases: list[Case] = []

    def add(student, category, summary, nb_or_files, **kw):
        if isinstance(nb_or_files, nbformat.NotebookNode):
            nb_or_files = {f"{lesson}.ipynb": nb_or_files}
        files = nb_or_files
        cases.append(Case(student, lesson, category, summary, files, **kw))

    forward_too = {"rnn_cell_check": "", "rnn_forward_check": ""}  # rnn_forward uses rnn_cell

    # controls: graded in the same run, they must keep their normal scores
    add("perfect", "control", "every exercise solved", ok)
    add(
        "blank",
        "control",
        "the release, unanswered",
        blank(lesson),
        lost={g: "" for g in points(lesson)},
    )
    add(
        "one_wrong",
        "control",
        "a wrong quiz answer",
        edit(ok, "gru_quiz", source="gru_quiz_answer = (3, 1, 20)"),
        lost={"gru_quiz_check": "CheckFailure"},
    )

    # execution faults
    add(
        "syntax_error",
        "execution",
        "a syntax error in the rnn_cell cell",
        edit(ok, "rnn_cell", after="def broken(:\n    pass"),
        lost={"rnn_cell_check": "SyntaxError", "rnn_forward_check": ""},
    )
    add(
        "missing_function",
        "execution",
        "rnn_forward renamed",
        edit(ok, "rnn_forward", after="rnn_fwd = rnn_forward\ndel rnn_forward"),
        lost={"rnn_forward_check": "NameError"},
    )
    add(
        "sys_exit",
        "execution",
        "sys.exit() before hidden_state_shape is defined",
        edit(ok, "hidden_state_shape", before="import sys\nsys.exit(1)"),
        lost={"hidden_state_shape_check": "SystemExit"},
    )
    add(
        "os_exit",
        "execution",
        "os._exit(0) in the quiz cell: the kernel dies half way",
        edit(ok, "gru_quiz", before="import os\nos._exit(0)"),
        lost={"gru_quiz_check": "kernel exited", "gradient_answers_check": "kernel exited"},
    )
    add(
        "os_exit_first",
        "execution",
        "os._exit(3) before anything is imported",
        with_setup(ok, before="import os\nos._exit(3)"),
        lost={g: "status 3" for g in points(lesson)},
    )
    add(
        "infinite_loop",
        "execution",
        "an infinite loop (interruptible) before the gradient answers",
        edit(ok, "gradient_answers", before="import time\nwhile True:\n    time.sleep(0.5)"),
        lost={"gradient_answers_check": "CellTimeoutError"},
    )
    add(
        "sigint_immune",
        "execution",
        "a loop that ignores SIGINT: the grader must stop the kernel",
        edit(
            ok,
            "hidden_state_shape",
            before="import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "while True:\n    time.sleep(0.5)",
        ),
        lost={
            "hidden_state_shape_check": "time limit",
            "gru_quiz_check": "time limit",
            "gradient_answers_check": "time limit",
        },
    )
    add(
        "recursion",
        "execution",
        "rnn_forward calls itself forever",
        edit(
            ok,
            "rnn_forward",
            source="def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):\n"
            "    return rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh)",
        ),
        lost={"rnn_forward_check": "RecursionError"},
    )
    add(
        "native_crash",
        "execution",
        "a segmentation fault in native code (ctypes)",
        edit(ok, "gradient_answers", before="import ctypes\nctypes.string_at(0)"),
        lost={"gradient_answers_check": "SIGSEGV"},
    )
    add(
        "print_loop",
        "execution",
        # in the last exercise: whether the interrupt stops the loop or (now and then, inside
        # ipykernel's output machinery) kills the kernel, the same test cell loses its points
        "an endless print loop (100 kB a line) before the gradient answers",
        edit(
            ok,
            "gradient_answers",
            before="import time\nwhile True:\n    print('spam ' * 20000)\n    time.sleep(0.01)",
        ),
        lost={"gradient_answers_check": ""},
        outputs={"gradient_answers": "truncated"},
    )
    add(
        "thread_printing",
        "execution",
        "a background thread that never stops printing",
        with_setup(
            ok,
            after="import threading, time\n"
            "def _chatter():\n"
            "    while True:\n"
            "        print('still here')\n"
            "        time.sleep(0.05)\n"
            "threading.Thread(target=_chatter, daemon=True).start()",
        ),
    )
    add(
        "torch_warning",
        "execution",
        "rnn_cell triggers a harmless torch UserWarning on every call",
        edit(
            ok,
            "rnn_cell",
            after="_rnn_cell = rnn_cell\n"
            "def rnn_cell(x, *args):\n"
            "    return _rnn_cell(torch.tensor(x), *args)",
        ),
        outputs={"rnn_cell_check": "no points lost"},
    )

    # tampering
    # a test cell edited, another deleted, a third duplicated: all put back as released
    tests = edit(ok, "rnn_cell_check", source="print('all good')")
    tests.cells = [c for c in tests.cells if _gid(c) != "rnn_forward_check"]
    index = next(i for i, c in enumerate(tests.cells) if _gid(c) == "gru_quiz_check")
    tests.cells.insert(index, copy.deepcopy(tests.cells[index]))
    tests.cells[index].id = "duplicate"
    add(
        "tests_tampered",
        "tampering",
        "a test cell edited, one deleted, one duplicated",
        tests,
        notes=("edited read-only cell restored", "deleted test cell put back", "second copy"),
    )
    # grading metadata changed every way: cell type, grade_id, points, test made an exercise
    meta = copy.deepcopy(ok)
    target = cell(meta, "hidden_state_shape_check")
    target.cell_type = "markdown"
    del target["outputs"], target["execution_count"]
    cell(meta, "rnn_cell_check").metadata["nbgrader"]["grade_id"] = "free_points"
    cell(meta, "gradient_answers_check").metadata["nbgrader"]["points"] = 100
    cell(meta, "gru_quiz_check").metadata["nbgrader"].update(
        grade=False, solution=True, locked=False
    )
    add(
        "metadata_tampered",
        "tampering",
        "a test cell retyped, one with a new grade_id, one worth 100 points, one made an exercise",
        meta,
        notes=("cell type", "unknown id", "points", "grade, locked, solution"),
    )
    add(
        "showtraceback",
        "tampering",
        "tracebacks silenced (showtraceback override) and a wrong rnn_cell",
        edit(
            ok,
            "rnn_cell",
            source=SIGMOID_CELL + "get_ipython().showtraceback = lambda *a, **k: None\n"
            "get_ipython()._showtraceback = lambda *a, **k: None",
        ),
        lost=forward_too,
    )
    add(
        "patched_allclose",
        "tampering",
        "torch.allclose, numpy.allclose and Tensor.__eq__ patched to agree, wrong rnn_cell",
        edit(
            ok,
            "rnn_cell",
            source=SIGMOID_CELL + "import numpy\n"
            "torch.allclose = lambda *a, **k: True\n"
            "numpy.allclose = lambda *a, **k: True\n"
            "torch.Tensor.__eq__ = lambda *a, **k: True",
        ),
        # every check that calls the learner's code refuses to run on a patched torch
        lost={
            "rnn_cell_check": "replaced",
            "rnn_forward_check": "replaced",
            "hidden_state_shape_check": "replaced",
        },
    )
    add(
        "rebind_checks",
        "tampering",
        "check functions redefined as no-ops, wrong rnn_cell",
        edit(
            ok,
            "rnn_cell",
            source=SIGMOID_CELL + "check_rnn_cell = check_rnn_forward = lambda *a, **k: None",
        ),
        lost=forward_too,
    )
    add(
        "patch_check_modules",
        "tampering",
        "helpers.checks functions patched in their modules, wrong rnn_cell",
        edit(
            ok,
            "rnn_cell",
            source=SIGMOID_CELL + "import helpers.checks.core, helpers.checks.lesson01\n"
            "helpers.checks.core.assert_close = lambda *a, **k: 0.0\n"
            "helpers.checks.lesson01.check_rnn_cell = lambda *a, **k: None\n"
            "helpers.checks.lesson01.check_rnn_forward = lambda *a, **k: None",
        ),
        lost=forward_too,
    )
    add(
        "always_equal",
        "tampering",
        "rnn_cell returns an object equal to everything",
        edit(
            ok,
            "rnn_cell",
            source=ALWAYS_EQUAL + "def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):\n"
            "    return AlwaysEqual()",
        ),
        lost={"rnn_cell_check": "should be a torch.Tensor", "rnn_forward_check": ""},
    )
    add(
        "always_equal_answers",
        "tampering",
        "quiz and gradient answers that compare equal to anything",
        edit(
            edit(ok, "gru_quiz", source=ALWAYS_EQUAL + "gru_quiz_answer = AlwaysEqual()"),
            "gradient_answers",
            source="class S(str):\n"
            "    def __eq__(self, other):\n"
            "        return True\n"
            "    __hash__ = str.__hash__\n"
            "small_weights_gradient = S('explodes')\n"
            "large_weights_gradient = S('vanishes')",
        ),
        lost={"gru_quiz_check": "CheckFailure", "gradient_answers_check": "CheckFailure"},
    )
    add(
        "fake_pass_print",
        "tampering",
        "a wrong rnn_cell that prints the checks' success lines",
        edit(
            ok,
            "rnn_cell",
            source=SIGMOID_CELL.replace(
                "    return",
                "    print('rnn_cell: OK, matches torch.nn.RNNCell on 4 cases; all tests passed')\n"
                "    return",
            ),
        ),
        lost=forward_too,
    )
    add(
        "last_line_values",
        "tampering",
        "test cells edited to end with 1e9 and -100 (partial credit), a wrong quiz answer",
        edit(
            edit(edit(ok, "gru_quiz_check", after="1e9"), "gradient_answers_check", after="-100"),
            "gru_quiz",
            source="gru_quiz_answer = (3,)",
        ),
        lost={"gru_quiz_check": "CheckFailure"},
        notes=("gru_quiz_check: edited", "gradient_answers_check: edited"),
    )
    add(
        "grading_branch",
        "tampering",
        "code that behaves differently when NBGRADER_EXECUTION is set",
        edit(
            ok,
            "rnn_cell",
            after="import os\nif os.environ.get('NBGRADER_EXECUTION'):\n    os._exit(0)",
        ),
    )
    add(
        "vandal",
        "tampering",
        "writes to the gradebook, helpers, data, solutions, lessons and another student",
        edit(ok, "rnn_cell", after=VANDAL),
        outputs={"rnn_cell": "refused"},
        absent={"rnn_cell": "WROTE"},
        needs_sandbox=True,
    )
    add(
        "read_solutions",
        "tampering",
        "rnn_cell left blank, the solution read from disk instead",
        edit(blank_exercise(ok, lesson, "rnn_cell"), "rnn_cell", after=READ_SOLUTIONS),
        lost=forward_too,
        absent={"rnn_cell": "READ"},
        needs_sandbox=True,
    )
    add(
        "probe",
        "tampering",
        "looks around: user, gradebook, solutions, other students, git, network, environment",
        edit(ok, "gru_quiz", after=PROBE),
        outputs={"gru_quiz": '"network": "OSError"'},
        absent={"gru_quiz": '"gradebook_visible": true'},
        needs_sandbox=True,
    )

    # resource abuse
    add(
        "memory_bomb",
        "resources",
        "allocates memory until it fails, before rnn_cell is defined",
        edit(
            ok,
            "rnn_cell",
            before="_blocks = []\nwhile True:\n    _blocks.append(bytearray(64 * 2**20))",
        ),
        lost={"rnn_cell_check": "memory limit", "rnn_forward_check": ""},
    )
    add(
        "tensor_bomb",
        "resources",
        "one 64 GB tensor before rnn_forward is defined",
        edit(ok, "rnn_forward", before="_big = torch.ones(2**34)"),
        lost={"rnn_forward_check": "memory limit"},
    )
    add(
        "fork_bomb",
        "resources",
        "forks without end before the gradient answers",
        edit(ok, "gradient_answers", before="import os\nwhile True:\n    os.fork()"),
        lost={"gradient_answers_check": ""},
    )
    add(
        "huge_file",
        "resources",
        "writes a 1 GB file before rnn_forward is defined",
        edit(
            ok,
            "rnn_forward",
            before="with open('big.bin', 'wb') as _fh:\n"
            "    for _ in range(1024):\n"
            "        _fh.write(bytes(2**20))",
        ),
        lost={"rnn_forward_check": "file size limit"},
    )
    add(
        "plot_flood",
        "resources",
        "draws 60 figures after answering the quiz (the corpus allows 50 outputs)",
        edit(
            ok,
            "gru_quiz",
            after="for _i in range(60):\n"
            "    plt.figure(figsize=(0.5, 0.5), dpi=10)\n"
            "    plt.plot([0, 1])\n"
            "    plt.show()",
        ),
        outputs={"gru_quiz": "truncated"},
    )

    # broken files (caught before anything runs)
    text = ipynb(ok)
    add(
        "invalid_json",
        "format",
        "not JSON",
        {f"{lesson}.ipynb": b"{this is not json"},
        rejected="not valid JSON",
    )
    add(
        "truncated",
        "format",
        "the notebook cut in half",
        {f"{lesson}.ipynb": text[: len(text) // 2]},
        rejected="truncated",
    )
    add("empty_file", "format", "a 0-byte notebook", {f"{lesson}.ipynb": b""}, rejected="empty")
    wrong = json.loads(text)
    wrong["nbformat"] = 5
    add(
        "wrong_nbformat",
        "format",
        "nbformat 5",
        {f"{lesson}.ipynb": json.dumps(wrong).encode()},
        rejected="notebook format 5",
    )
    add(
        "json_list",
        "format",
        "a JSON list",
        {f"{lesson}.ipynb": b"[1, 2, 3]"},
        rejected="not a notebook",
    )
    empty = nbformat.v4.new_notebook()
    add(
        "empty_notebook",
        "format",
        "a valid notebook with no cells: every graded cell put back, unanswered",
        empty,
        lost={g: "" for g in points(lesson)},
        notes=("deleted exercise cell put back unanswered", "deleted test cell put back"),
    )
    add(
        "renamed",
        "format",
        "the notebook saved under another name",
        {"my_rnn_homework.ipynb": ok},
        notes=("in place of",),
    )
    add(
        "missing",
        "format",
        "no notebook, only notes",
        {"notes.txt": b"I will submit later"},
        rejected="no 01_intro_to_rnns.ipynb",
    )
    add(
        "extra_notebooks",
        "format",
        "the notebook plus two scratch notebooks",
        {f"{lesson}.ipynb": ok, "scratch.ipynb": blank(lesson), "Untitled.ipynb": empty},
        notes=("ignored other notebooks",),
    )
    add(
        "two_candidates",
        "format",
        "two notebooks, neither with the right name",
        {"a.ipynb": ok, "b.ipynb": ok},
        rejected="found a.ipynb, b.ipynb",
    )
    add(
        "symlink",
        "format",
        "the notebook is a link to the instructor's solution",
        {f"{lesson}.ipynb": Link(str(ROOT / "solutions" / lesson / f"{lesson}.ipynb"))},
        rejected="link",
    )
    padded = copy.deepcopy(ok)
    first_code(padded).outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="x" * (6 * 2**20))
    ]
    add(
        "oversized",
        "format",
        "a 6 MB notebook (the corpus limit is 5 MB)",
        padded,
        rejected="MB limit",
    )

    # numerical edge cases and device
    def cell_returning(expr: str) -> str:
        return (
            "def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):\n"
            "    h_next = torch.tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)\n"
            f"    return {expr}"
        )

    add(
        "nan_output",
        "numeric",
        "rnn_cell returns NaN",
        edit(ok, "rnn_cell", source=cell_returning("h_next * float('nan')")),
        lost={"rnn_cell_check": "nan", "rnn_forward_check": ""},
    )
    add(
        "wrong_dtype",
        "numeric",
        "rnn_cell returns float32",
        edit(ok, "rnn_cell", source=cell_returning("h_next.float()")),
        lost={"rnn_cell_check": "dtype", "rnn_forward_check": ""},
    )
    add(
        "numpy_output",
        "numeric",
        "rnn_cell returns a NumPy array",
        edit(ok, "rnn_cell", source=cell_returning("h_next.numpy()")),
        lost={"rnn_cell_check": "torch.Tensor", "rnn_forward_check": ""},
    )
    add(
        "mutates_input",
        "numeric",
        "rnn_cell writes its answer into h",
        edit(ok, "rnn_cell", source=cell_returning("h.copy_(h_next)")),
        lost={"rnn_cell_check": "in place", "rnn_forward_check": ""},
    )
    add(
        "swapped_weights",
        "numeric",
        "weight_ih and weight_hh used the wrong way round",
        edit(
            ok,
            "rnn_cell",
            source=(
                "def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):\n"
                "    return torch.tanh(x @ weight_hh.T + bias_ih + h @ weight_ih.T + bias_hh)"
            ),
        ),
        lost={"rnn_cell_check": "wrong way round", "rnn_forward_check": ""},
    )
    add(
        "inf_output",
        "numeric",
        "rnn_forward's output contains inf",
        edit(
            ok,
            "rnn_forward",
            after=(
                "_rnn_forward = rnn_forward\n"
                "def rnn_forward(*args):\n"
                "    out, h = _rnn_forward(*args)\n"
                "    return out / 0.0, h"
            ),
        ),
        lost={"rnn_forward_check": "inf"},
    )
    add(
        "wrong_shape",
        "numeric",
        "rnn_forward returns (seq, batch, hidden)",
        edit(
            ok,
            "rnn_forward",
            after=(
                "_rnn_forward = rnn_forward\n"
                "def rnn_forward(*args):\n"
                "    out, h = _rnn_forward(*args)\n"
                "    return out.transpose(0, 1), h"
            ),
        ),
        lost={"rnn_forward_check": "shape"},
    )
    add(
        "state_not_carried",
        "numeric",
        "rnn_forward restarts from h0 at every step",
        edit(
            ok,
            "rnn_forward",
            source=(
                "def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):\n"
                "    steps = [rnn_cell(x[:, t], h0, weight_ih, weight_hh, bias_ih, bias_hh)\n"
                "             for t in range(x.shape[1])]\n"
                "    return torch.stack(steps, dim=1), steps[-1]"
            ),
        ),
        lost={"rnn_forward_check": "differs"},
    )
    add(
        "hard_coded_cuda",
        "device",
        "rnn_cell moves its answer to the GPU with .cuda()",
        edit(ok, "rnn_cell", source=cell_returning("h_next.cuda()")),
        lost={"rnn_cell_check": "cuda", "rnn_forward_check": ""},
    )
    return cases


def generic_cases(lesson: str) -> list[Case]:
    """One case for any other released lesson: solved, but hostile.

    It makes every check function a no-op and kills its kernel at the second exercise: the tests
    before it must pass on the real checks, those after score 0. (Stopping early keeps it cheap;
    tests/test_autograde.py grades every lesson solved, unanswered and with one exercise left.)
    """
    ok = perfect(lesson)
    tests = list(points(lesson))
    release = blank(lesson)
    exercises = [_gid(c) for c in release.cells if c.metadata.get("nbgrader", {}).get("solution")]
    names = sorted(
        {
            word
            for line in first_code(release).source.splitlines()
            for word in line.replace("(", " ").replace(")", " ").replace(",", " ").split()
            if word.startswith("check_")
        }
    )
    hostile = with_setup(ok, after="\n".join(f"{n} = lambda *a, **k: None" for n in names))
    lost = {}
    if len(exercises) > 1:
        hostile = edit(hostile, exercises[1], before="import os\nos._exit(0)")
        order = [_gid(c) for c in ok.cells if _gid(c)]
        lost = {t: "kernel exited" for t in tests if order.index(t) > order.index(exercises[1])}
    return [
        Case(
            f"hostile_{lesson[:2]}",
            lesson,
            "execution",
            "check functions made no-ops, kernel killed at the second exercise",
            {f"{lesson}.ipynb": hostile},
            lost=lost,
        )
    ]


def released_lessons() -> list[str]:
    return sorted(
        p.name
        for p in (ROOT / "solutions").iterdir()
        if (p / f"{p.name}.ipynb").is_file()
        and (ROOT / "lessons" / p.name / f"{p.name}.ipynb").is_file()
    )


#: Lesson 01 cases graded a second time: those whose outcome depends on time, signals, limits
#: or threads, and the controls.
REPEAT = {
    "perfect",
    "blank",
    "one_wrong",
    "os_exit",
    "infinite_loop",
    "sigint_immune",
    "native_crash",
    "print_loop",
    "thread_printing",
    "memory_bomb",
    "fork_bomb",
    "huge_file",
    "plot_flood",
}


def build() -> list[Case]:
    """Every case: the full corpus for lesson 01, generic cases for the other released lessons."""
    cases = lesson01_cases()
    for case in cases:
        case.repeat = case.student in REPEAT
    for lesson in released_lessons():
        if lesson != L1:
            cases += generic_cases(lesson)
    names = [c.student for c in cases]
    assert len(names) == len(set(names)), "duplicate student ids in the corpus"
    return cases


def write(case: Case, folder: Path) -> None:
    """Write one case's files into ``folder`` (the student's submission folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in case.files.items():
        path = folder / name
        if isinstance(content, Link):
            path.symlink_to(content.target)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(ipynb(content))


def main(out: str) -> None:
    out_dir = Path(out)
    cases = build()
    summary = []
    for case in cases:
        write(case, out_dir / case.student / case.lesson)
        info = asdict(case)
        info.pop("files")
        info["expected_score"] = case.expected_score(points(case.lesson))
        summary.append(info)
    (out_dir / "expected.json").write_text(json.dumps(summary, indent=1))
    print(f"{len(cases)} cases written to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus")
