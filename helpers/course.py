"""The course's manifest: its lessons, its folders and where a lesson's files are. Torch-free, so
the grader and the tools can ask it.

Every other module asks this one for a lesson id, a folder or a shipped file instead of spelling
it. The files a lesson reads at run time (texts, the shipped checkpoint, diagrams) live inside the
``helpers`` package and are found through :mod:`importlib.resources`, so a lesson runs the same
from this checkout (editable install) and from an installed wheel anywhere else (Colab, Kaggle, a
learner's own Jupyter). Only the instructor's tools use the checkout's folders (``ROOT``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# --------------------------------------------------------------------------- the lessons


@dataclass(frozen=True)
class Lesson:
    """One lesson: its id (its folder and notebook name), title, checks module and marks.

    ``points`` maps each graded test cell's ``grade_id`` to its points, as nbgrader reads them
    from the notebook (``tests/test_release.py`` proves the two agree).
    """

    id: str
    title: str
    checks: str
    points: dict[str, float]

    @property
    def notebook(self) -> str:
        return f"{self.id}.ipynb"

    @property
    def total(self) -> float:
        return sum(self.points.values())


LESSONS_TABLE: tuple[Lesson, ...] = (
    Lesson(
        "01_intro_to_rnns",
        "Introduction to recurrent neural networks",
        "helpers.checks.lesson01",
        {
            "rnn_cell_check": 3,
            "rnn_forward_check": 3,
            "hidden_state_shape_check": 2,
            "gru_quiz_check": 1,
            "gradient_answers_check": 2,
            "rnn_cell_backward_check": 3,
            "rnn_backward_check": 3,
            "clip_grad_norm_check": 2,
            "clipping_answer_check": 1,
            "softmax_cross_entropy_check": 3,
            "adagrad_update_check": 2,
        },
    ),
    Lesson(
        "02_lstm_gate_math",
        "The LSTM, gate by gate",
        "helpers.checks.lesson02",
        {
            "forget_gate_check": 2,
            "learn_gate_check": 1,
            "use_gate_check": 1,
            "lstm_cell_check": 3,
            "lstm_forward_check": 3,
            "lstm_cell_backward_check": 5,
            "ltm_gradient_answers_check": 2,
            "gru_cell_check": 3,
            "peephole_lstm_cell_check": 3,
            "lstm_param_count_check": 2,
        },
    ),
    Lesson(
        "03_time_series_rnn",
        "Time series with a recurrent network",
        "helpers.checks.lesson03",
        {
            "SimpleRNN_check": 3,
            "train_rnn_check": 4,
            "forecast_check": 3,
            "marker_sensitivity_check": 2,
        },
    ),
    Lesson(
        "04_char_lstm",
        "A character-level LSTM that writes Shakespeare",
        "helpers.checks.lesson04",
        {
            "one_hot_encode_check": 2,
            "get_batches_check": 4,
            "CharRNN_check": 4,
            "sample_check": 4,
            "unigram_loss_check": 2,
            "bigram_loss_check": 3,
            "train_step_check": 4,
        },
    ),
)
_BY_ID = {lesson.id: lesson for lesson in LESSONS_TABLE}


def lesson_ids() -> list[str]:
    """The lesson ids, in order (``"01_intro_to_rnns"``, ...)."""
    return [lesson.id for lesson in LESSONS_TABLE]


def lesson(name: str) -> Lesson:
    """The lesson ``name`` stands for: its id, a unique prefix (``"01"``) or its notebook's file
    name (``"01_intro_to_rnns.ipynb"``, as a learner's copy is named)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a lesson is named by its id or a prefix such as '01', got {name!r}")
    stem = Path(name).name.removesuffix(".ipynb")
    if stem in _BY_ID:
        return _BY_ID[stem]
    matches = [x for x in LESSONS_TABLE if x.id.startswith(stem)]
    if len(matches) != 1:
        raise ValueError(f"unknown lesson {name!r}; expected one of {', '.join(_BY_ID)}")
    return matches[0]


# --------------------------------------------------------------------------- what a lesson reads

#: The package folder holding the corpora, the long-memory sweep and lesson 04's checkpoint.
DATA_PACKAGE = "helpers.data"
#: The package folder holding the diagrams the notebooks display (drawn by ``images/draw_*.py``).
IMAGES_PACKAGE = "helpers.images"
#: Lesson 04's trained model, shipped in ``helpers/data``.
CHECKPOINT_LESSON = "04_char_lstm"
CHECKPOINT_NAME = "char_lstm_tinyshakespeare.pt"


def _folder(package: str) -> Path:
    """The folder of an installed resource package, as a path on disk (wheels and editable
    installs both unpack to real folders; a zipped install is refused with the reason)."""
    folder = resources.files(package)
    if not isinstance(folder, Path):
        raise ValueError(
            f"{package} is not a folder on disk ({folder!r}); install the course package "
            "unzipped (pip does)"
        )
    return folder


def data_dir() -> Path:
    """The folder of the course's data files (inside the installed ``helpers`` package)."""
    return _folder(DATA_PACKAGE)


def images_dir() -> Path:
    """The folder of the course's diagrams (inside the installed ``helpers`` package)."""
    return _folder(IMAGES_PACKAGE)


def resource(kind: str, name: str) -> Path:
    """The shipped file ``name`` of ``kind`` (``"data"`` or ``"images"``), checked to exist."""
    folders = {"data": data_dir, "images": images_dir}
    if kind not in folders:
        raise ValueError(f"kind must be 'data' or 'images', got {kind!r}")
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ValueError(f"a file name without folders is expected, got {name!r}")
    folder = folders[kind]()
    path = folder / name
    if not path.is_file():
        available = sorted(p.name for p in folder.iterdir() if p.is_file())
        raise ValueError(f"no {kind} file {name!r} in {folder}; available: {available}")
    return path


# --------------------------------------------------------------------------- the checkout

#: The course's folders, relative to a course's root, by nbgrader's name for each step.
#: ``nbgrader_config.py`` gives nbgrader these; the tools ask nbgrader's ``CourseDirectory``
#: (``helpers.grading.common.course_folder``) or this module.
FOLDERS = {
    "source": "solutions",  # the instructor's notebooks, the one source of truth
    "release": "lessons",  # the students' notebooks, generated from the source
    "submitted": "grading/submitted",
    "autograded": "grading/autograded",
    "feedback": "grading/feedback",
    "solution": "grading/solution",
}
#: nbgrader's id of the course (the exchange's folder for it).
COURSE_ID = "rnn-course"
#: Everything the instructor's grading writes (git-ignored), the exchange and gradebook in it.
GRADING_FOLDER = "grading"
EXCHANGE = f"{GRADING_FOLDER}/exchange"
GRADEBOOK = f"{GRADING_FOLDER}/gradebook.db"

#: The repository root (the folder holding ``solutions/``, ``lessons/``, ``nbgrader_config.py``):
#: only the instructor's tools, the benchmarks and the tests use it; no lesson does.
ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / FOLDERS["source"]
LESSONS = ROOT / FOLDERS["release"]
GRADING = ROOT / GRADING_FOLDER
NBGRADER_CONFIG = ROOT / "nbgrader_config.py"
_KINDS = ("source", "release")


def notebook_path(kind: str, lesson: str, root: Path = ROOT) -> Path:
    """The notebook of ``lesson`` in ``kind``: ``"source"`` (the instructor's, with answers) or
    ``"release"`` (the students'), nbgrader's names for the two."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'source' or 'release', got {kind!r}")
    return Path(root) / FOLDERS[kind] / lesson / f"{lesson}.ipynb"


def released_lesson_ids(root: Path = ROOT) -> list[str]:
    """The lessons whose released notebook exists under ``root`` (a course folder)."""
    return [x for x in lesson_ids() if notebook_path("release", x, root).is_file()]


def is_test_cell(cell) -> bool:
    """Whether a notebook cell (a dict or ``NotebookNode``) is an nbgrader test cell: graded and
    not a solution. The same rule as ``nbgrader.utils.is_grade(cell) and not is_solution(cell)``,
    without importing nbgrader (seconds of start-up) into every notebook and ``make check``."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def skip_iri_grammar() -> None:
    """Make the next import of nbformat (and of nbgrader and Jupyter's servers) seconds faster.

    jsonschema, which nbformat imports, builds a grammar for its optional IRI format check when
    it is imported: about 3 s of CPU per process. Notebooks never hold IRIs to check, so the
    processes that read notebooks skip that module (jsonschema then has no "iri" check). Call it
    before nbformat is first imported; afterwards it changes nothing.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
