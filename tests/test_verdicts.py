"""``make check`` and ``make autograde`` give the same verdict, exercise by exercise.

Both read the lesson's case table (``helpers/checks/lesson0N/``), so passing ``make check``
must mean full points from the autograder, and failing it must cost that exercise's points. This
file proves it on a corpus generated from the solutions: for every exercise of every lesson,
three notebooks that each break that one exercise in a different way (left unanswered, always
wrong, wrong only on small sizes such as a batch of 1, which only some case sets contain). Each
notebook is checked the way ``make check`` does it and graded by the course's sandboxed
``make autograde``; for every exercise of every notebook, full points ⇔ passed. The corpus
notebooks leave out the training cells, which ``make check`` skips too, so both sides run the
same code. Per lesson and way of breaking there are two notebooks (the odd and the even
exercises broken), so each exercise is also graded intact beside broken ones.

It also checks, without running anything, that every test cell in ``solutions/`` is exactly the
call its case table prescribes (visible cases, then the hidden ones).
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import textwrap

import nbformat
import pytest
from conftest import lesson_ids, nbgrader_env, notebook_path
from support import course_copy, grader_command

from helpers.checks import exercises
from helpers.checks.run import check_notebook
from helpers.course import is_test_cell
from helpers.notebook import TRAINING_TAG

# Appended to the cell that defines the exercise's object: rebinds the name to a version whose
# results are changed (always, or only when an input has a size of 1); a function that updates
# a list of tensors in place changes the first one. Quiz answers (plain values) are changed
# directly. Nothing is written to stderr.
_BREAK = """
def _course_break(obj, edge):
    import numpy as _np
    import torch as _torch

    def small(values):
        for v in values:
            if isinstance(v, bool):
                continue
            if isinstance(v, int) and v == 1:
                return True
            shape = getattr(v, "shape", None)
            if shape is not None and 1 in tuple(shape):
                return True
            if isinstance(v, (tuple, list)) and small(v):
                return True
        return False

    def perturb(v):
        if isinstance(v, _torch.Tensor):
            return v + 0.25 if v.is_floating_point() else v + 1
        if isinstance(v, _np.ndarray):
            return (v + 1).astype(v.dtype)
        if isinstance(v, tuple):
            return (perturb(v[0]),) + v[1:] if v else v
        if isinstance(v, list):
            return [perturb(v[0])] + v[1:] if v else v
        if isinstance(v, bool):
            return not v
        if isinstance(v, (int, float)):
            return v + 1
        if isinstance(v, str):
            return {"vanishes": "explodes", "explodes": "vanishes"}.get(v, v[1:] + v[:1] + "?")
        if hasattr(v, "__next__"):
            return (perturb(item) for item in v)
        return v

    if isinstance(obj, type):

        class Broken(obj):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self._course_small = small(args) or small(kwargs.values())

            def forward(self, *args, **kwargs):
                out = super().forward(*args, **kwargs)
                hit = self._course_small or small(args)
                return perturb(out) if (not edge or hit) else out

        Broken.__name__ = Broken.__qualname__ = obj.__name__
        return Broken
    if callable(obj):

        def broken(*args, **kwargs):
            if not edge and args and isinstance(args[0], _torch.nn.Module) and len(args) > 1:
                return [1.0] * int(args[1])  # a training function that does not train
            out = obj(*args, **kwargs)
            hit = not edge or small(args) or small(kwargs.values())
            first = args[0] if args else None
            if out is None and isinstance(first, list) and first:
                if hit and isinstance(first[0], _torch.Tensor):  # an in-place update gone wrong
                    with _torch.no_grad():
                        first[0].add_(0.25)
                return out
            return perturb(out) if hit else out

        broken.__name__ = obj.__name__
        return broken
    if edge:  # a quiz answer of a look-alike type: a list for a tuple, capitals for a word
        return list(obj) if isinstance(obj, tuple) else str(obj).upper()
    return perturb(obj)
"""

BREAKS = ("unanswered", "wrong", "edge")


def _defining_cell(nb, name: str) -> int:
    hits = [
        i
        for i, c in enumerate(nb.cells)
        if c.metadata.get("nbgrader", {}).get("solution")
        and any(k in c.source for k in (f"def {name}(", f"class {name}(", f"{name} ="))
    ]
    assert len(hits) == 1, f"expected one solution cell defining {name}, found {hits}"
    return hits[0]


def broken_notebook(lesson: str, broken: tuple[str, ...], how: str):
    """The solution notebook of ``lesson`` with each exercise of ``broken`` broken ``how``."""
    nb = nbformat.read(notebook_path("source", lesson), as_version=4)
    release = nbformat.read(notebook_path("release", lesson), as_version=4)
    blanks = {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in release.cells
        if "nbgrader" in c.metadata
    }
    for exercise in broken:
        # a quiz with several answers breaks its first one; a function exercise its function
        name = exercises(lesson)[exercise].reads[0]
        cell = nb.cells[_defining_cell(nb, name)]
        if how == "unanswered":
            cell.source = blanks[cell.metadata["nbgrader"]["grade_id"]]
        else:
            edge = how == "edge"
            cell.source += f"\n{textwrap.dedent(_BREAK)}\n{name} = _course_break({name}, {edge})\n"
    # make check never runs the training cells; without them the autograder sees the same code
    # (and the corpus grades in a fraction of the time)
    nb.cells = [c for c in nb.cells if TRAINING_TAG not in c.metadata.get("tags", [])]
    return nb


def _corpus() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """student -> (lesson, the exercises broken, how). Per lesson and way of breaking, two
    notebooks: one breaks the 1st, 3rd, 5th... exercise, the other the rest, so every exercise is
    broken three ways and also seen intact next to broken ones."""
    corpus = {}
    for lesson in lesson_ids():
        names = list(exercises(lesson))
        for how in BREAKS:
            for half in (0, 1):
                broken = tuple(names[half::2])
                if broken:
                    corpus[f"{lesson[:2]}-{how}-{half}"] = (lesson, broken, how)
    return corpus


CORPUS = _corpus()


def test_test_cells_follow_the_case_table():
    """Every test cell in solutions/ is its exercise's call, visible then hidden cases."""
    for lesson in lesson_ids():
        nb = nbformat.read(notebook_path("source", lesson), as_version=4)
        cells = {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if is_test_cell(c)}
        table = {e.grade_id: e for e in exercises(lesson).values()}
        assert sorted(cells) == sorted(table), f"{lesson}: test cells and case table differ"
        for gid, exercise in table.items():
            code = [
                line
                for line in cells[gid].source.splitlines()
                if line.strip() and not (line.startswith("#") and not line.startswith("###"))
            ]
            assert code == exercise.test_lines(), (
                f"{lesson} {gid}: the test cell must be exactly {exercise.test_lines()}, got {code}"
            )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Both verdicts for every notebook of the corpus: {(lesson, exercise, how): (check, grade)}."""
    from helpers.notebook import load_notebook

    course = course_copy(tmp_path_factory.mktemp("course"))
    paths = {}
    for student, (lesson, broken, how) in CORPUS.items():
        folder = course / "grading" / "submitted" / student / lesson
        folder.mkdir(parents=True)
        paths[student] = folder / f"{lesson}.ipynb"
        nbformat.write(broken_notebook(lesson, broken, how), paths[student])
    # the grader mostly waits on its kernels: check the notebooks in here meanwhile
    grader = subprocess.Popen(
        grader_command(course, "autograde", "--jobs=3"),
        env=nbgrader_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checked, visible_only = {}, {}
    for student, path in paths.items():
        lesson = CORPUS[student][0]
        with contextlib.redirect_stdout(io.StringIO()):
            namespace = load_notebook(path)
            verdicts = check_notebook(lesson, namespace)
            visible = check_notebook(lesson, namespace, ("visible",))
        checked[student] = {v.exercise: v.passed for v in verdicts}
        visible_only[student] = {v.exercise: v.passed for v in visible}
    log, _ = grader.communicate(timeout=1200)
    assert grader.returncode == 0, log
    from nbgrader.api import Gradebook

    graded = {}
    with Gradebook(f"sqlite:///{course / 'grading' / 'gradebook.db'}") as gb:
        for student, (lesson, _, _) in CORPUS.items():
            full = {}
            for e in exercises(lesson).values():
                grade = gb.find_grade(e.grade_id, lesson, lesson, student)
                full[e.name] = grade.score == grade.max_score
            graded[student] = full
    return checked, graded, log, visible_only


@pytest.mark.slow
@pytest.mark.corpus
def test_make_check_agrees_with_autograde(corpus):
    checked, graded, log, _ = corpus
    disagree = [
        f"{student} ({CORPUS[student][2]}: {', '.join(CORPUS[student][1])}): {name}: make check "
        f"{'passes' if checked[student][name] else 'fails'}, autograde gives "
        f"{'full' if graded[student][name] else 'partial or no'} points"
        for student in CORPUS
        for name in checked[student]
        if checked[student][name] != graded[student][name]
    ]
    assert not disagree, "\n".join(disagree) + "\n" + log[-3000:]


#: (lesson, exercise, how) that make check is known not to catch: the generic "edge" break only
#: changes answers on inputs with a size of 1, and sample's checks use no such input.
UNCAUGHT = {("04_char_lstm", "sample", "edge"), ("03_time_series_rnn", "train_rnn", "edge")}


@pytest.mark.slow
@pytest.mark.corpus
def test_every_break_is_caught(corpus):
    """The corpus has teeth: each broken exercise fails (so the agreement above means something)."""
    checked, _, _, _ = corpus
    missed = {
        (lesson, exercise, how)
        for student, (lesson, broken, how) in CORPUS.items()
        for exercise in broken
        if checked[student][exercise]
    }
    assert missed == UNCAUGHT, f"breaks that make check did not catch: {sorted(missed)}"


@pytest.mark.slow
@pytest.mark.corpus
def test_without_hidden_cases_the_verdicts_differ(corpus):
    """Remove the hidden cases from make check's side and the verdicts part: the corpus is
    sensitive to exactly the property it proves."""
    _, graded, _, visible_only = corpus
    differ = {
        (CORPUS[student][0], name)
        for student in CORPUS
        for name in graded[student]
        if visible_only[student][name] != graded[student][name]
    }
    assert len(differ) >= 5, f"only {sorted(differ)} depend on the hidden cases"
