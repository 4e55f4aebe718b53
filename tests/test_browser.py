"""Every lesson opened and run in JupyterLab in a real browser (Chromium), as a student would.

Needs Debian's ``chromium`` at /usr/bin/chromium (``apt-get install -y chromium``; .ci/run does
it); without it these tests are skipped with a message saying so. COURSE_REQUIRE_BROWSER=1 makes a
missing browser a failure instead (.ci/run sets it). Screenshots of every run, and the seconds
each took (timings.json), go to test-artifacts/browser/ (git-ignored).

The course is copied to a temporary folder first: the browser saves outputs into the notebooks it
runs and the formgrader writes a gradebook. Lab runs from the project's .venv with COURSE_FAST=1
in its environment, so every kernel it starts runs in fast mode and imports the installed
``helpers``.

Running an unsolved lesson: Lab's "Run All Cells" stops at the first error, and an unsolved lesson
raises ``NotImplementedError`` by design, so the student notebook is run cell by cell through
Lab's own "run cell" command (what Shift+Enter down the notebook does); each command resolves when
that cell's execution has finished, error or not. The solution notebook uses the Run menu's
"Run All Cells", where any error stops the run and is reported.

All the browser work runs once, in the module fixture ``runs``, in one or two pages at a time
(see ``_workers``); each test then reports its own part. Kernels get OMP_NUM_THREADS=1.

Run only these: ``make test ARGS=tests/test_browser.py`` (``ARGS="tests/test_browser.py -k 01_"``
for one lesson). Settings: COURSE_CHROMIUM (browser binary), COURSE_REQUIRE_BROWSER=1,
COURSE_BROWSER_WORKERS (pages at once), COURSE_BROWSER_FULL_SCREENSHOTS=1 (whole notebooks
even when nothing is wrong).
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from conftest import lesson_ids
from support.browser import (
    ARTIFACTS,
    BROKEN_IMAGE,
    HOW_TO_ENABLE,
    MISSING_BROWSER,
    Job,
    LabServer,
    NotebookRun,
    chromium_available,
    copy_course,
    doctored_notebook,
    problem_report,
    run_jobs,
    solution_problems,
    student_problems,
)

REQUIRED = os.environ.get("COURSE_REQUIRE_BROWSER", "").strip().lower() in {"1", "true", "yes"}

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not chromium_available() and not REQUIRED:
    # One line in the summary (-ra): "SKIPPED [1] tests/test_browser.py: Chromium not found ..."
    pytest.skip(
        f"{MISSING_BROWSER}: the JupyterLab browser tests were SKIPPED; to run them, "
        f"{HOW_TO_ENABLE}",
        allow_module_level=True,
    )

LESSONS = lesson_ids()
DOCTORED = f"doctored/{LESSONS[0]}_mistakes.ipynb" if LESSONS else "doctored/none.ipynb"


def _student(lesson: str) -> str:
    return f"lessons/{lesson}/{lesson}.ipynb"


def _solution(lesson: str) -> str:
    return f"solutions/{lesson}/{lesson}.ipynb"


def _jobs_for(items, course) -> list[Job]:
    """Only the browser work the selected tests need (``-k 01_intro`` runs one lesson)."""
    wanted: list[Job] = []
    for item in items:
        lesson = getattr(item, "callspec", None) and item.callspec.params.get("lesson")
        name = getattr(item, "originalname", item.name)
        if name == "test_solution_notebook_in_jupyterlab":
            path = _solution(lesson)
            wanted.append(Job(path, path, "run_all", f"{lesson}-solution", solution_problems))
        elif name == "test_student_notebook_in_jupyterlab":
            path = _student(lesson)
            judge = _student_judge(course, lesson)
            wanted.append(Job(path, path, "each_cell", f"{lesson}-student", judge))
        elif name.startswith("test_doctored_"):
            judge = _student_judge(course, LESSONS[0])
            wanted.append(Job(DOCTORED, DOCTORED, "each_cell", "doctored-mistakes", judge))
        elif name == "test_formgrader_lists_every_lesson":
            wanted.append(Job("formgrader", how="formgrader", screenshot="formgrader"))
    # Longest first (solutions train), so two pages finish at about the same time.
    order = {"run_all": 0, "each_cell": 1, "formgrader": 2}
    unique = {job.name: job for job in wanted}.values()
    return sorted(unique, key=lambda job: (order[job.how], job.name.startswith("doctored")))


def _workers(other_tests: bool) -> int:
    """Pages (each with its kernel) at once: 2 when this module has the machine's two cores.

    Under ``make test`` (pytest-xdist, ``-n auto --dist loadfile``) the other worker runs the
    other test files on the second core; one page then costs less CPU in all (one browser, no
    two kernels fighting for one core). Measured on 2 cores: 1 page about 180 CPU-seconds for the
    whole module, 2 pages about 210 but finishing sooner when nothing else runs.
    """
    if os.environ.get("COURSE_BROWSER_WORKERS"):
        return max(1, int(os.environ["COURSE_BROWSER_WORKERS"]))
    sharing = other_tests and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
    return 1 if sharing else 2


def _student_judge(course, lesson):
    solution = json.loads((course / _solution(lesson)).read_text())
    return lambda run: student_problems(run, solution)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = copy_course(tmp_path_factory.mktemp("browser-course"))
    if LESSONS and (course / _student(LESSONS[0])).is_file():
        lesson = json.loads((course / _student(LESSONS[0])).read_text())
        notebook, _, _ = doctored_notebook(lesson)
        (course / DOCTORED).parent.mkdir(parents=True, exist_ok=True)
        (course / DOCTORED).write_text(json.dumps(notebook, indent=1))
    return course


@pytest.fixture(scope="module")
def runs(request, course, tmp_path_factory):
    """Start Lab on the course copy and do every selected test's browser work; then stop Lab."""
    if not chromium_available():
        pytest.fail(f"COURSE_REQUIRE_BROWSER is set, but {MISSING_BROWSER}: {HOW_TO_ENABLE}")
    for old in ARTIFACTS.glob("*.png"):  # only this run's screenshots
        old.unlink()
    module_items = [i for i in request.session.items if i.module is request.module]
    workers = _workers(len(module_items) < len(request.session.items))
    lab = LabServer(course, tmp_path_factory.mktemp("lab-state")).start()
    started = time.perf_counter()
    try:
        results, timings = run_jobs(lab, _jobs_for(module_items, course), workers=workers)
    finally:
        lab.stop()
    total = round(time.perf_counter() - started, 1)
    report = {"workers": workers, "total seconds (Lab start to last job)": total, "jobs": {}}
    for name, seconds in timings.items():
        report["jobs"][name] = {"seconds": seconds}
        run = results.get(name)
        if isinstance(run, NotebookRun):
            report["jobs"][name]["phases"] = run.phases
            report["jobs"][name]["cells run (seconds)"] = round(sum(run.cell_seconds), 1)
        if isinstance(run, NotebookRun) and run.cell_seconds:
            slowest = sorted(enumerate(run.cell_seconds), key=lambda pair: -pair[1])[:3]
            report["jobs"][name]["slowest cells"] = {str(i): round(t, 1) for i, t in slowest}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(report, indent=1) + "\n")
    results["lab log"] = lab.log_tail()
    return results


def _result(runs, name):
    result = runs[name]
    if isinstance(result, BaseException):
        raise AssertionError(f"{name}: {result}\nJupyterLab's log:\n{runs['lab log']}") from result
    return result


def _check(problems: list[str], run: NotebookRun) -> None:
    assert not problems, (
        f"{run.path} in JupyterLab:\n{problem_report(problems)}\nscreenshot: {run.screenshot}"
    )


@pytest.mark.parametrize("lesson", LESSONS)
def test_student_notebook_in_jupyterlab(runs, lesson):
    """Run cell by cell: exercises editable, tests locked, images shown, only 'not implemented'."""
    run = _result(runs, _student(lesson))
    _check(run.problems, run)


@pytest.mark.parametrize("lesson", LESSONS)
def test_solution_notebook_in_jupyterlab(runs, lesson):
    """Run All Cells in fast mode: no error, every plot and the training progress bar shown."""
    run = _result(runs, _solution(lesson))
    _check(run.problems, run)


def test_formgrader_lists_every_lesson(runs):
    page = _result(runs, "formgrader")
    assert "manage_assignments" in page.url, f"the formgrader went to {page.url}"
    missing = sorted(set(LESSONS) - set(page.assignments))
    assert not missing, (
        f"the formgrader does not list {missing} (it lists {page.assignments}); "
        f"screenshot: {page.screenshot}"
    )


# --- the checks have teeth: a doctored copy of the first lesson must fail, naming notebook and cell


@pytest.fixture(scope="module")
def doctored(runs, course):
    run = _result(runs, DOCTORED)
    problems = run.problems
    with pytest.raises(AssertionError) as failure:
        _check(problems, run)
    _, image_cell, locked_cell = doctored_notebook(
        json.loads((course / _student(LESSONS[0])).read_text())
    )
    return str(failure.value), problems, image_cell, locked_cell


def test_doctored_broken_image_path_fails_naming_notebook_and_cell(doctored):
    message, problems, image_cell, _ = doctored
    assert re.search(rf"{re.escape(DOCTORED)} cell {image_cell}: broken image ", message), message
    assert BROKEN_IMAGE in message, message
    assert len(problems) == 2, f"only the two planted mistakes should be reported:\n{message}"


def test_doctored_locked_exercise_cell_fails_naming_notebook_and_cell(doctored):
    message, problems, _, locked_cell = doctored
    pattern = rf"{re.escape(DOCTORED)} cell {locked_cell} \(\w+\): exercise cell is read-only"
    assert re.search(pattern, message), message
    assert len(problems) == 2, f"only the two planted mistakes should be reported:\n{message}"
