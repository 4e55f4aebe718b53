"""lessons/ is exactly what nbgrader generates from solutions/, and nothing secret leaks into it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import LESSONS, ROOT, SOLUTIONS, lesson_ids, nbgrader_env, notebook_path
from support import HIDDEN_TESTS, course_copy

from helpers import course, publish

BLOCKS = {
    "solution": re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S),
    "hidden test": HIDDEN_TESTS,
}
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".ipynb_checkpoints" not in p.parts and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def fresh_release(tmp_path_factory) -> Path:
    """A fresh ``nbgrader generate_assignment`` of solutions/, made in a copy of the course."""
    course = course_copy(tmp_path_factory.mktemp("course"), lessons=False)
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", "*", "--no-db", "--force"],
        cwd=course,
        env=nbgrader_env(),
        check=True,
        capture_output=True,
    )
    return course / "lessons"


def test_release_matches_solutions(fresh_release):
    expected = _files(fresh_release)
    actual = _files(LESSONS)
    assert sorted(actual) == sorted(expected), (
        "lessons/ holds different files from a fresh release of solutions/; run `make release`"
    )
    stale = [name for name in expected if actual[name] != expected[name]]
    assert not stale, f"out of date in lessons/ (run `make release` and commit): {stale}"


def _secret_lines(path: Path) -> dict[str, str]:
    """Lines inside solution and hidden-test blocks that appear nowhere else in the notebook."""
    nb = nbformat.read(path, as_version=4)
    secret: dict[str, str] = {}
    public: set[str] = set()
    for cell in nb.cells:
        source = cell.source
        for kind, pattern in BLOCKS.items():
            for block in pattern.findall(source):
                for line in block.splitlines():
                    if len(line.strip()) >= 6:
                        secret[line.strip()] = kind
            source = pattern.sub("", source)
        public.update(line.strip() for line in source.splitlines())
    return {line: kind for line, kind in secret.items() if line not in public}


def _released_text(lesson: str) -> str:
    parts = []
    for path in sorted((LESSONS / lesson).rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".ipynb":
            nb = nbformat.read(path, as_version=4)
            parts.extend(cell.source for cell in nb.cells)
            parts.append(str(nb.metadata))
        else:
            parts.append(path.read_bytes().decode("utf-8", errors="ignore"))
    return "\n".join(parts)


@pytest.mark.parametrize("lesson", lesson_ids())
def test_no_solution_or_hidden_test_leaks(lesson):
    secret = _secret_lines(notebook_path("source", lesson))
    assert secret, f"{lesson}: the solution notebook has no solution blocks"
    released = _released_text(lesson)
    leaks = [f"{kind}: {line}" for line, kind in secret.items() if line in released]
    assert not leaks, f"{lesson}: released lesson contains secret lines:\n" + "\n".join(leaks)
    markers = [marker for marker in MARKERS if marker in released]
    assert not markers, f"{lesson}: nbgrader markers left in the release: {markers}"


@pytest.mark.parametrize("lesson", lesson_ids())
def test_every_exercise_is_unsolved_in_release(lesson):
    nb = nbformat.read(notebook_path("release", lesson), as_version=4)
    answers = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert answers, f"{lesson}: no exercise cells in the release"
    for cell in answers:
        assert "YOUR CODE HERE" in cell.source or "YOUR ANSWER HERE" in cell.source, (
            f"{lesson}: exercise cell {cell.metadata['nbgrader']['grade_id']} is not blanked"
        )


# --------------------------------------------------------------------------- the manifest


def test_the_manifest_lists_every_lesson_with_its_marks():
    """helpers.course's lessons and points are those of solutions/ (nbgrader's source)."""
    on_disk = sorted(p.parent.name for p in SOLUTIONS.glob("*/*.ipynb") if p.stem == p.parent.name)
    assert course.lesson_ids() == on_disk
    for lesson in course.LESSONS_TABLE:
        nb = nbformat.read(notebook_path("source", lesson.id), as_version=4)
        marks = {
            c.metadata.nbgrader["grade_id"]: c.metadata.nbgrader["points"]
            for c in nb.cells
            if course.is_test_cell(c)
        }
        assert marks == lesson.points, lesson.id
        title = next(c.source for c in nb.cells if c.cell_type == "markdown")
        assert f"· {lesson.title}\n" in title, lesson.id
    assert course.lesson("01").id == course.lesson("01_intro_to_rnns.ipynb").id
    with pytest.raises(ValueError, match="expected one of 01_intro_to_rnns"):
        course.lesson("0")


# ------------------------------------------------------------------ what make release writes


def test_set_up_cells_colab_links_and_readme_table_are_up_to_date():
    assert publish.publish(check=True) == [], "run `make release` and commit"
    for lesson in lesson_ids():
        for kind in ("source", "release"):
            cell = nbformat.read(notebook_path(kind, lesson), as_version=4).cells[0]
            assert publish.SETUP_TAG in cell.metadata.tags, (kind, lesson)
            assert cell.source == publish.setup_cell_source(publish.repository())


def test_set_up_cell_does_nothing_where_helpers_imports(monkeypatch):
    """In this checkout (and the grader's sandbox) the cell runs no pip."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(publish.setup_cell_source("https://github.com/someone/rnn-course"), {})
    assert calls == []


def test_publishing_at_an_address_writes_colab_links_and_the_install_source(tmp_path):
    """With [project.urls] Repository set, make release gives each lesson a Colab badge under
    its title, the README's table a link per lesson, and the set-up cell that address; unset
    again, every file is as before."""
    root = course_copy(tmp_path / "course", lessons=False, files=("pyproject.toml", "README.md"))
    before = {p: p.read_bytes() for p in [*root.glob("solutions/*/*.ipynb"), root / "README.md"]}
    address = "https://github.com/someone/rnn-course"
    original = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(
        original.replace(
            "[project.optional-dependencies]",
            f'[project.urls]\nRepository = "{address}"\n\n[project.optional-dependencies]',
        )
    )
    assert len(publish.publish(root)) == len(before)
    assert publish.publish(root) == []  # idempotent
    colab = "https://colab.research.google.com/github/someone/rnn-course/blob/main/lessons"
    readme = (root / "README.md").read_text()
    for lesson in course.LESSONS_TABLE:
        link = f"{colab}/{lesson.id}/{lesson.id}.ipynb"
        assert link in readme
        nb = nbformat.read(notebook_path("source", lesson.id, root), as_version=4)
        assert f'"git+{address}"' in nb.cells[0].source
        title = next(c.source for c in nb.cells if c.cell_type == "markdown")
        assert f"· {lesson.title}\n\n[![Open in Colab]" in title and link in title
    (root / "pyproject.toml").write_text(original)
    publish.publish(root)
    assert {p: p.read_bytes() for p in before} == before
    (root / "pyproject.toml").write_text("[project\n")  # not TOML
    with pytest.raises(ValueError, match=r"\[project\] table"):
        publish.publish(root)


def test_lesson_ids_and_folders_are_spelled_only_by_the_manifest():
    """No source file but helpers/course.py names a lesson or a course folder (tests and the
    notebooks aside): the others ask the manifest."""
    sources = [
        *(ROOT / "helpers").rglob("*.py"),
        *(ROOT / "benchmarks").rglob("*.py"),
        *(ROOT / "deploy").rglob("*.py"),
        *(ROOT / "images").glob("*.py"),
        ROOT / "nbgrader_config.py",
        ROOT / "Makefile",
    ]
    spelled = [*course.lesson_ids(), *(f'"{f}"' for f in course.FOLDERS.values())]
    spelled += [f'"{course.GRADING_FOLDER}"', f'"{course.EXCHANGE}"', f'"{course.GRADEBOOK}"']
    for path in sources:
        if path == ROOT / "helpers" / "course.py" or "__pycache__" in path.parts:
            continue
        text = path.read_text()
        for word in spelled:
            assert word not in text, f"{path.relative_to(ROOT)} spells {word}: ask helpers.course"
