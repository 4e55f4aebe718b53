"""The course's layout: where everything is. Torch-free, so the grader and the tools can ask it.

Every other module asks this one for a path or the list of lessons instead of working it out.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The repository root (the folder holding ``solutions/``, ``lessons/``, ``nbgrader_config.py``).
ROOT = Path(__file__).resolve().parent.parent
#: Instructor notebooks: nbgrader's source directory, the one source of truth.
SOLUTIONS = ROOT / "solutions"
#: Student notebooks: nbgrader's release directory, generated from ``SOLUTIONS``.
LESSONS = ROOT / "lessons"
DATA = ROOT / "data"
IMAGES = ROOT / "images"
#: Everything the instructor's grading writes (git-ignored).
GRADING = ROOT / "grading"
NBGRADER_CONFIG = ROOT / "nbgrader_config.py"
#: Lesson 04's trained model, shipped with the lesson.
CHECKPOINT_LESSON = "04_char_lstm"
CHECKPOINT_NAME = "char_lstm_tinyshakespeare.pt"


def lesson_ids(root: Path = ROOT) -> list[str]:
    """Lesson ids, sorted: the folders of ``solutions/`` that hold a notebook of the same name."""
    source = Path(root) / "solutions"
    return sorted(p.name for p in source.iterdir() if (p / f"{p.name}.ipynb").is_file())


def notebook_path(kind: str, lesson: str, root: Path = ROOT) -> Path:
    """The notebook of ``lesson`` in ``kind`` (``"solutions"`` or ``"lessons"``)."""
    if kind not in ("solutions", "lessons"):
        raise ValueError(f"kind must be 'solutions' or 'lessons', got {kind!r}")
    return Path(root) / kind / lesson / f"{lesson}.ipynb"


def checkpoint_paths(name: str = CHECKPOINT_NAME) -> list[Path]:
    """Where lesson 04's checkpoint ``name`` may be, in the order to try: the release, then the
    solutions."""
    return [notebook_path(k, CHECKPOINT_LESSON).parent / name for k in ("lessons", "solutions")]


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
