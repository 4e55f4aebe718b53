"""Generate the hostile-submission corpus from the real lessons.

Every case is one student's submission folder (a notebook, or broken files) plus what the grader
must do with it: the test cells that lose their points (with a word expected in the reason),
or the reason a submission is rejected outright, notes the grader must record, and text the
graded notebook must show. Everything else in the case scores full marks.

Lesson 01 gets the full corpus (faults, tampering, resource abuse, broken files, numerical edge
cases, device mismatch); every other lesson that is released (``lessons/<id>/``) gets a few
generic cases, so the corpus follows the course as lessons are added.

Lesson 01's corpus is the table ``LESSON01``: one ``Row`` a case (student, category, summary,
what it does to the solved notebook, what the grader must do, whether it is graded twice).
The builders above it (``before``, ``after``, ``replace``, ``setup``, ``chain``, ``folder``,
``raw``, ...) make the usual changes, so a new case is usually one row.

    python tests/support/hostile/generate.py OUT
        # writes the corpus to OUT/<student>/<lesson>/ and OUT/expected.json, to look at it
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from helpers.publish import SETUP_TAG

ROOT = Path(__file__).resolve().parents[3]
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
    """The lesson's first code cell of its own (its imports): the set-up cell before it only
    installs the course package where it is missing."""
    return next(
        c
        for c in nb.cells
        if c.cell_type == "code" and SETUP_TAG not in c.get("metadata", {}).get("tags", [])
    )


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
    _repo / "helpers" / "data" / "vandal.txt",
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
# builders: what a case does to the solved notebook
#
# A case's ``submit`` is called with the solved notebook and the lesson; it returns the notebook
# to submit as ``<lesson>.ipynb`` or a whole folder ({file name: notebook | bytes | Link}).

Submit = Callable[[nbformat.NotebookNode, str], object]


def solved(nb, lesson: str):
    """The solved notebook, unchanged."""
    return nb


def released(nb, lesson: str):
    """The release, unanswered."""
    return blank(lesson)


def empty(nb, lesson: str):
    """A valid notebook with no cells."""
    return nbformat.v4.new_notebook()


def before(grade_id: str, code: str) -> Submit:
    """Put ``code`` before a cell's source."""
    return lambda nb, lesson: edit(nb, grade_id, before=code)


def after(grade_id: str, code: str) -> Submit:
    """Put ``code`` after a cell's source."""
    return lambda nb, lesson: edit(nb, grade_id, after=code)


def replace(grade_id: str, source: str) -> Submit:
    """Put ``source`` instead of a cell's source."""
    return lambda nb, lesson: edit(nb, grade_id, source=source)


def setup(before: str = "", after: str = "") -> Submit:
    """Put code before/after the first code cell (the notebook's imports)."""
    return lambda nb, lesson: with_setup(nb, before, after)


def unanswered(grade_id: str) -> Submit:
    """Leave one exercise as released."""
    return lambda nb, lesson: blank_exercise(nb, lesson, grade_id)


def chain(*steps: Submit) -> Submit:
    """Apply notebook changes one after the other."""

    def run(nb, lesson: str):
        for step in steps:
            nb = step(nb, lesson)
        return nb

    return run


def folder(contents: dict[str, object]) -> Submit:
    """A whole submission folder: file name ("{lesson}" filled in) -> bytes, a Link or a
    Submit (called with the solved notebook)."""

    def run(nb, lesson: str):
        return {
            name.format(lesson=lesson): content(nb, lesson) if callable(content) else content
            for name, content in contents.items()
        }

    return run


def raw(data: bytes) -> Submit:
    """``<lesson>.ipynb`` holding these bytes."""
    return folder({"{lesson}.ipynb": data})


def as_bytes(change: Callable[[bytes], bytes]) -> Submit:
    """``<lesson>.ipynb`` holding the solved notebook's bytes, changed."""
    return folder({"{lesson}.ipynb": lambda nb, lesson: change(ipynb(nb))})


def wrong_rnn_cell(code: str = "") -> Submit:
    """A wrong (sigmoid) rnn_cell, then ``code``."""
    return replace("rnn_cell", SIGMOID_CELL + code)


def rnn_cell_returning(expr: str) -> Submit:
    """rnn_cell computes the right h_next but returns ``expr``."""
    return replace(
        "rnn_cell",
        "def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):\n"
        "    h_next = torch.tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)\n"
        f"    return {expr}",
    )


def rnn_forward_returning(expr: str) -> Submit:
    """rnn_forward wrapped: the right ``out, h`` computed, ``expr`` returned."""
    return after(
        "rnn_forward",
        "_rnn_forward = rnn_forward\n"
        "def rnn_forward(*args):\n"
        "    out, h = _rnn_forward(*args)\n"
        f"    return {expr}",
    )


def _tamper_tests(nb, lesson: str):
    """A test cell edited, another deleted, a third duplicated."""
    nb = edit(nb, "rnn_cell_check", source="print('all good')")
    nb.cells = [c for c in nb.cells if _gid(c) != "rnn_forward_check"]
    index = next(i for i, c in enumerate(nb.cells) if _gid(c) == "gru_quiz_check")
    nb.cells.insert(index, copy.deepcopy(nb.cells[index]))
    nb.cells[index].id = "duplicate"
    return nb


def _tamper_metadata(nb, lesson: str):
    """Grading metadata changed every way: cell type, grade_id, points, test made an exercise."""
    nb = copy.deepcopy(nb)
    target = cell(nb, "hidden_state_shape_check")
    target.cell_type = "markdown"
    del target["outputs"], target["execution_count"]
    cell(nb, "rnn_cell_check").metadata["nbgrader"]["grade_id"] = "free_points"
    cell(nb, "gradient_answers_check").metadata["nbgrader"]["points"] = 100
    cell(nb, "gru_quiz_check").metadata["nbgrader"].update(grade=False, solution=True, locked=False)
    return nb


def _pad_output(nb, lesson: str):
    """6 MB of stdout in the first code cell's outputs."""
    nb = copy.deepcopy(nb)
    first_code(nb).outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="x" * (6 * 2**20))
    ]
    return nb


def _halve(text: bytes) -> bytes:
    return text[: len(text) // 2]


def _nbformat_5(text: bytes) -> bytes:
    wrong = json.loads(text)
    wrong["nbformat"] = 5
    return json.dumps(wrong).encode()


def _link_to_solution(nb, lesson: str) -> Link:
    return Link(str(ROOT / "solutions" / lesson / f"{lesson}.ipynb"))


# ----------------------------------------------------------------------------------------------
# the corpus

#: In ``lost``: every test cell of the lesson loses its points, with this text in the reason.
ALL = "*"


def from_on(first: str, reason: str = "") -> dict[str, str]:
    """``first`` and every test cell after it lose their points, with ``reason`` in each reason:
    what happens when the kernel dies or is stopped in the cell before ``first``."""
    tests = list(points(L1))  # the release's test cells, in notebook order
    return {gid: reason for gid in tests[tests.index(first) :]}


def cell_fails(reason: str = "") -> dict[str, str]:
    """rnn_cell_check loses its points, and so does rnn_forward_check (rnn_forward uses it)."""
    return {"rnn_cell_check": reason, "rnn_forward_check": ""}


@dataclass(frozen=True)
class Row:
    """One case of the table: a Case without its files, and how to make them."""

    student: str
    category: str
    summary: str
    submit: Submit
    lost: dict[str, str] = field(default_factory=dict)
    rejected: str | None = None
    notes: tuple[str, ...] = ()
    outputs: dict[str, str] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    needs_sandbox: bool = False
    #: graded a second time: the outcome depends on time, signals, limits or threads (or a
    #: control)
    repeat: bool = False

    def case(self, lesson: str, ok) -> Case:
        files = self.submit(ok, lesson)
        if isinstance(files, nbformat.NotebookNode):
            files = {f"{lesson}.ipynb": files}
        lost = dict(self.lost)
        if ALL in lost:
            lost = {g: lost[ALL] for g in points(lesson)}
        return Case(
            self.student,
            lesson,
            self.category,
            self.summary,
            files,
            lost=lost,
            rejected=self.rejected,
            notes=self.notes,
            repeat=self.repeat,
            outputs=dict(self.outputs),
            absent=dict(self.absent),
            needs_sandbox=self.needs_sandbox,
        )


#: The lesson 01 corpus, one row a case.
LESSON01: list[Row] = [
    # controls: graded in the same run, they must keep their normal scores
    Row("perfect", "control", "every exercise solved", solved, repeat=True),
    Row("blank", "control", "the release, unanswered", released, lost={ALL: ""}, repeat=True),
    Row(
        "one_wrong",
        "control",
        "a wrong quiz answer",
        replace(
            "gru_quiz",
            "def gru_quiz_answer(gru, batch_size):\n    return (batch_size, 1, gru.hidden_size)",
        ),
        lost={"gru_quiz_check": "CheckFailure"},
        repeat=True,
    ),
    # execution faults
    Row(
        "syntax_error",
        "execution",
        "a syntax error in the rnn_cell cell",
        after("rnn_cell", "def broken(:\n    pass"),
        lost=cell_fails("SyntaxError"),
    ),
    Row(
        "missing_function",
        "execution",
        "rnn_forward renamed",
        after("rnn_forward", "rnn_fwd = rnn_forward\ndel rnn_forward"),
        # the grader looks the name up in the kernel: the check's own message says it is missing
        lost={"rnn_forward_check": "not defined"},
    ),
    Row(
        "sys_exit",
        "execution",
        "sys.exit() before hidden_state_shape is defined",
        before("hidden_state_shape", "import sys\nsys.exit(1)"),
        lost={"hidden_state_shape_check": "SystemExit"},
    ),
    Row(
        "os_exit",
        "execution",
        "os._exit(0) in the quiz cell: the kernel dies half way",
        before("gru_quiz", "import os\nos._exit(0)"),
        lost=from_on("gru_quiz_check", "kernel exited"),
        repeat=True,
    ),
    Row(
        "os_exit_first",
        "execution",
        "os._exit(3) before anything is imported",
        setup(before="import os\nos._exit(3)"),
        lost={ALL: "status 3"},
    ),
    Row(
        "infinite_loop",
        "execution",
        "an infinite loop (interruptible) before the gradient answers",
        before("gradient_answers", "import time\nwhile True:\n    time.sleep(0.5)"),
        lost={"gradient_answers_check": "CellTimeoutError"},
        repeat=True,
    ),
    Row(
        "sigint_immune",
        "execution",
        "a loop that ignores SIGINT: the grader must stop the kernel",
        before(
            "hidden_state_shape",
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "while True:\n    time.sleep(0.5)",
        ),
        lost=from_on("hidden_state_shape_check", "time limit"),
        repeat=True,
    ),
    Row(
        "recursion",
        "execution",
        "rnn_forward calls itself forever",
        replace(
            "rnn_forward",
            "def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):\n"
            "    return rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh)",
        ),
        lost={"rnn_forward_check": "RecursionError"},
    ),
    Row(
        "native_crash",
        "execution",
        "a segmentation fault in native code (ctypes)",
        before("gradient_answers", "import ctypes\nctypes.string_at(0)"),
        lost=from_on("gradient_answers_check", "SIGSEGV"),
        repeat=True,
    ),
    # in the last exercise: whether the interrupt stops the loop or (now and then, inside
    # ipykernel's output machinery) kills the kernel, the same test cell loses its points
    Row(
        "print_loop",
        "execution",
        "an endless print loop (100 kB a line) before adagrad_update (the last exercise)",
        before(
            "adagrad_update",
            "import time\nwhile True:\n    print('spam ' * 20000)\n    time.sleep(0.01)",
        ),
        lost={"adagrad_update_check": ""},
        outputs={"adagrad_update": "truncated"},
        repeat=True,
    ),
    Row(
        "thread_printing",
        "execution",
        "a background thread that never stops printing",
        setup(
            after="import threading, time\n"
            "def _chatter():\n"
            "    while True:\n"
            "        print('still here')\n"
            "        time.sleep(0.05)\n"
            "threading.Thread(target=_chatter, daemon=True).start()"
        ),
        repeat=True,
    ),
    Row(
        "torch_warning",
        "execution",
        "rnn_cell triggers a harmless torch UserWarning on every call",
        after(
            "rnn_cell",
            "_rnn_cell = rnn_cell\n"
            "def rnn_cell(x, *args):\n"
            "    return _rnn_cell(torch.tensor(x), *args)",
        ),
        outputs={"rnn_cell_check": "no points lost"},
    ),
    # tampering: test cells are all put back as released
    Row(
        "tests_tampered",
        "tampering",
        "a test cell edited, one deleted, one duplicated",
        _tamper_tests,
        notes=("edited read-only cell restored", "deleted test cell put back", "second copy"),
    ),
    Row(
        "metadata_tampered",
        "tampering",
        "a test cell retyped, one with a new grade_id, one worth 100 points, one made an exercise",
        _tamper_metadata,
        notes=("cell type", "unknown id", "points", "grade, locked, solution"),
    ),
    Row(
        "showtraceback",
        "tampering",
        "tracebacks silenced (showtraceback override) and a wrong rnn_cell",
        wrong_rnn_cell(
            "get_ipython().showtraceback = lambda *a, **k: None\n"
            "get_ipython()._showtraceback = lambda *a, **k: None"
        ),
        lost=cell_fails(),
    ),
    # the verdict is decided by the grader's own torch: patching the kernel's changes nothing,
    # the wrong rnn_cell (and rnn_forward, built on it) fail, every other exercise keeps its points
    Row(
        "patched_allclose",
        "tampering",
        "torch.allclose, numpy.allclose and Tensor.__eq__ patched to agree, wrong rnn_cell",
        wrong_rnn_cell(
            "import numpy\n"
            "torch.allclose = lambda *a, **k: True\n"
            "numpy.allclose = lambda *a, **k: True\n"
            "torch.Tensor.__eq__ = lambda *a, **k: True"
        ),
        lost=cell_fails("differs"),
    ),
    Row(
        "rebind_checks",
        "tampering",
        "check functions redefined as no-ops, wrong rnn_cell",
        wrong_rnn_cell("check_rnn_cell = check_rnn_forward = lambda *a, **k: None"),
        lost=cell_fails(),
    ),
    Row(
        "patch_check_modules",
        "tampering",
        "helpers.checks functions patched in their modules, wrong rnn_cell",
        wrong_rnn_cell(
            "import helpers.checks.core, helpers.checks.lesson01\n"
            "helpers.checks.core.assert_close = lambda *a, **k: 0.0\n"
            "helpers.checks.lesson01.check_rnn_cell = lambda *a, **k: None\n"
            "helpers.checks.lesson01.check_rnn_forward = lambda *a, **k: None"
        ),
        lost=cell_fails(),
    ),
    Row(
        "always_equal",
        "tampering",
        "rnn_cell returns an object equal to everything",
        replace(
            "rnn_cell",
            ALWAYS_EQUAL + "def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):\n"
            "    return AlwaysEqual()",
        ),
        lost=cell_fails("should be a torch.Tensor"),
    ),
    Row(
        "always_equal_answers",
        "tampering",
        "quiz and gradient answers that compare equal to anything",
        chain(
            replace(
                "gru_quiz",
                ALWAYS_EQUAL + "def gru_quiz_answer(gru, batch_size):\n    return AlwaysEqual()",
            ),
            replace(
                "gradient_answers",
                "class S(str):\n"
                "    def __eq__(self, other):\n"
                "        return True\n"
                "    __hash__ = str.__hash__\n"
                "small_weights_gradient = S('explodes')\n"
                "large_weights_gradient = S('vanishes')",
            ),
        ),
        lost={"gru_quiz_check": "CheckFailure", "gradient_answers_check": "CheckFailure"},
    ),
    Row(
        "fake_pass_print",
        "tampering",
        "a wrong rnn_cell that prints the checks' success lines",
        replace(
            "rnn_cell",
            SIGMOID_CELL.replace(
                "    return",
                "    print('rnn_cell: OK, matches torch.nn.RNNCell on 4 cases; all tests passed')\n"
                "    return",
            ),
        ),
        lost=cell_fails(),
    ),
    Row(
        "last_line_values",
        "tampering",
        "test cells edited to end with 1e9 and -100 (partial credit), a wrong quiz answer",
        chain(
            after("gru_quiz_check", "1e9"),
            after("gradient_answers_check", "-100"),
            replace("gru_quiz", "def gru_quiz_answer(gru, batch_size):\n    return (3,)"),
        ),
        lost={"gru_quiz_check": "CheckFailure"},
        notes=("gru_quiz_check: edited", "gradient_answers_check: edited"),
    ),
    Row(
        "grading_branch",
        "tampering",
        "code that behaves differently when NBGRADER_EXECUTION is set",
        after("rnn_cell", "import os\nif os.environ.get('NBGRADER_EXECUTION'):\n    os._exit(0)"),
    ),
    Row(
        "vandal",
        "tampering",
        "writes to the gradebook, helpers, data, solutions, lessons and another student",
        after("rnn_cell", VANDAL),
        outputs={"rnn_cell": "refused"},
        absent={"rnn_cell": "WROTE"},
        needs_sandbox=True,
    ),
    Row(
        "read_solutions",
        "tampering",
        "rnn_cell left blank, the solution read from disk instead",
        chain(unanswered("rnn_cell"), after("rnn_cell", READ_SOLUTIONS)),
        lost=cell_fails(),
        absent={"rnn_cell": "READ"},
        needs_sandbox=True,
    ),
    Row(
        "probe",
        "tampering",
        "looks around: user, gradebook, solutions, other students, git, network, environment",
        after("gru_quiz", PROBE),
        outputs={"gru_quiz": '"network": "OSError"'},
        absent={"gru_quiz": '"gradebook_visible": true'},
        needs_sandbox=True,
    ),
    # resource abuse
    Row(
        "memory_bomb",
        "resources",
        "allocates memory until it fails, before rnn_cell is defined",
        # the blocks are let go once the limit is hit: a kernel left with no memory at all cannot
        # start the thread that sends a large output (a later cell's figure), and its garbled
        # message stops nbgrader for the whole notebook (a grader weakness, not this case's point)
        before(
            "rnn_cell",
            "_blocks = []\ntry:\n    while True:\n        _blocks.append(bytearray(64 * 2**20))\n"
            "finally:\n    del _blocks",
        ),
        lost=cell_fails("memory limit"),
        repeat=True,
    ),
    Row(
        "tensor_bomb",
        "resources",
        "one 64 GB tensor before rnn_forward is defined",
        before("rnn_forward", "_big = torch.ones(2**34)"),
        lost={"rnn_forward_check": "memory limit"},
    ),
    Row(
        "fork_bomb",
        "resources",
        "forks without end before adagrad_update (the last exercise)",
        before("adagrad_update", "import os\nwhile True:\n    os.fork()"),
        lost={"adagrad_update_check": ""},
        repeat=True,
    ),
    Row(
        "huge_file",
        "resources",
        "writes a 1 GB file before rnn_forward is defined",
        before(
            "rnn_forward",
            "with open('big.bin', 'wb') as _fh:\n"
            "    for _ in range(1024):\n"
            "        _fh.write(bytes(2**20))",
        ),
        lost={"rnn_forward_check": "file size limit"},
        repeat=True,
    ),
    Row(
        "plot_flood",
        "resources",
        "draws 60 figures after answering the quiz (the corpus allows 50 outputs)",
        after(
            "gru_quiz",
            "for _i in range(60):\n"
            "    plt.figure(figsize=(0.5, 0.5), dpi=10)\n"
            "    plt.plot([0, 1])\n"
            "    plt.show()",
        ),
        outputs={"gru_quiz": "truncated"},
        repeat=True,
    ),
    # broken files (caught before anything runs)
    Row("invalid_json", "format", "not JSON", raw(b"{this is not json"), rejected="not valid JSON"),
    Row("truncated", "format", "the notebook cut in half", as_bytes(_halve), rejected="truncated"),
    Row("empty_file", "format", "a 0-byte notebook", raw(b""), rejected="empty"),
    Row(
        "wrong_nbformat",
        "format",
        "nbformat 5",
        as_bytes(_nbformat_5),
        rejected="notebook format 5",
    ),
    Row("json_list", "format", "a JSON list", raw(b"[1, 2, 3]"), rejected="not a notebook"),
    Row(
        "empty_notebook",
        "format",
        "a valid notebook with no cells: every graded cell put back, unanswered",
        empty,
        lost={ALL: ""},
        notes=("deleted exercise cell put back unanswered", "deleted test cell put back"),
    ),
    Row(
        "renamed",
        "format",
        "the notebook saved under another name",
        folder({"my_rnn_homework.ipynb": solved}),
        notes=("in place of",),
    ),
    Row(
        "missing",
        "format",
        "no notebook, only notes",
        folder({"notes.txt": b"I will submit later"}),
        rejected="no 01_intro_to_rnns.ipynb",
    ),
    Row(
        "extra_notebooks",
        "format",
        "the notebook plus two scratch notebooks",
        folder({"{lesson}.ipynb": solved, "scratch.ipynb": released, "Untitled.ipynb": empty}),
        notes=("ignored other notebooks",),
    ),
    Row(
        "two_candidates",
        "format",
        "two notebooks, neither with the right name",
        folder({"a.ipynb": solved, "b.ipynb": solved}),
        rejected="found a.ipynb, b.ipynb",
    ),
    Row(
        "symlink",
        "format",
        "the notebook is a link to the instructor's solution",
        folder({"{lesson}.ipynb": _link_to_solution}),
        rejected="link",
    ),
    Row(
        "oversized",
        "format",
        "a 6 MB notebook (the corpus limit is 5 MB)",
        _pad_output,
        rejected="MB limit",
    ),
    # numerical edge cases and device
    Row(
        "nan_output",
        "numeric",
        "rnn_cell returns NaN",
        rnn_cell_returning("h_next * float('nan')"),
        lost=cell_fails("nan"),
    ),
    Row(
        "wrong_dtype",
        "numeric",
        "rnn_cell returns float32",
        rnn_cell_returning("h_next.float()"),
        lost=cell_fails("dtype"),
    ),
    Row(
        "numpy_output",
        "numeric",
        "rnn_cell returns a NumPy array",
        rnn_cell_returning("h_next.numpy()"),
        lost=cell_fails("torch.Tensor"),
    ),
    Row(
        "mutates_input",
        "numeric",
        "rnn_cell writes its answer into h",
        rnn_cell_returning("h.copy_(h_next)"),
        lost=cell_fails("in place"),
    ),
    Row(
        "swapped_weights",
        "numeric",
        "weight_ih and weight_hh used the wrong way round",
        replace(
            "rnn_cell",
            "def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):\n"
            "    return torch.tanh(x @ weight_hh.T + bias_ih + h @ weight_ih.T + bias_hh)",
        ),
        lost=cell_fails("wrong way round"),
    ),
    Row(
        "inf_output",
        "numeric",
        "rnn_forward's output contains inf",
        rnn_forward_returning("out / 0.0, h"),
        lost={"rnn_forward_check": "inf"},
    ),
    Row(
        "wrong_shape",
        "numeric",
        "rnn_forward returns (seq, batch, hidden)",
        rnn_forward_returning("out.transpose(0, 1), h"),
        lost={"rnn_forward_check": "shape"},
    ),
    Row(
        "state_not_carried",
        "numeric",
        "rnn_forward restarts from h0 at every step",
        replace(
            "rnn_forward",
            "def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):\n"
            "    steps = [rnn_cell(x[:, t], h0, weight_ih, weight_hh, bias_ih, bias_hh)\n"
            "             for t in range(x.shape[1])]\n"
            "    return torch.stack(steps, dim=1), steps[-1]",
        ),
        lost={"rnn_forward_check": "differs"},
    ),
    Row(
        "hard_coded_cuda",
        "device",
        "rnn_cell moves its answer to the GPU with .cuda()",
        rnn_cell_returning("h_next.cuda()"),
        lost=cell_fails("cuda"),
    ),
]

#: Modules (tests/support/hostile/) that add rows to lesson 01's corpus, each its own ``ROWS`` list:
#: attacks on the verdict, on the sandbox and on the grader's bounds.
EXTRA_ROW_MODULES = (
    "support.hostile.verdict_rows",
    "support.hostile.sandbox_rows",
    "support.hostile.bounds_rows",
)


def lesson01_rows() -> list[Row]:
    """``LESSON01`` and the rows of ``EXTRA_ROW_MODULES`` (imported here: they import this
    module's builders)."""
    import importlib

    rows = list(LESSON01)
    for name in EXTRA_ROW_MODULES:
        rows += importlib.import_module(name).ROWS
    return rows


def lesson01_cases() -> list[Case]:
    ok = perfect(L1)
    return [row.case(L1, ok) for row in lesson01_rows()]


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


def build() -> list[Case]:
    """Every case: the full corpus for lesson 01, generic cases for the other released lessons."""
    cases = lesson01_cases()
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
        path.parent.mkdir(parents=True, exist_ok=True)
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
    sys.path.insert(0, str(ROOT / "tests"))  # the row modules import support.hostile.generate
    main(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus")
