"""lessons/ is exactly what nbgrader generates from solutions/, and nothing secret leaks into it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import LESSONS, lesson_ids, nbgrader_env, notebook_path
from support import HIDDEN_TESTS, course_copy

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
    secret = _secret_lines(notebook_path("solutions", lesson))
    assert secret, f"{lesson}: the solution notebook has no solution blocks"
    released = _released_text(lesson)
    leaks = [f"{kind}: {line}" for line, kind in secret.items() if line in released]
    assert not leaks, f"{lesson}: released lesson contains secret lines:\n" + "\n".join(leaks)
    markers = [marker for marker in MARKERS if marker in released]
    assert not markers, f"{lesson}: nbgrader markers left in the release: {markers}"


@pytest.mark.parametrize("lesson", lesson_ids())
def test_every_exercise_is_unsolved_in_release(lesson):
    nb = nbformat.read(notebook_path("lessons", lesson), as_version=4)
    answers = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert answers, f"{lesson}: no exercise cells in the release"
    for cell in answers:
        assert "YOUR CODE HERE" in cell.source or "YOUR ANSWER HERE" in cell.source, (
            f"{lesson}: exercise cell {cell.metadata['nbgrader']['grade_id']} is not blanked"
        )
