"""A class on a real JupyterHub: students fetch, work and submit in Chromium, the instructor grades.

Real components only: JupyterHub (requirements/instructor.txt), its PAM login, LocalProcessSpawner,
configurable-http-proxy from the npm registry (``make hub-proxy``), real Linux accounts made
by deploy/hub/hub.py (what ``make hub`` runs), nbgrader's exchange and its Assignments tab, and
the course's sandboxed grader run by the instructor's account. One hub for the whole module:

1. the instructor releases lesson 01 (``make release-assignments``);
2. alice and bob, side by side, each in their own Chromium: log in with their password (a wrong
   one is refused), open the Assignments tab, fetch the lesson, open it from the tab and type
   their answers into the notebook's cells;
   alice: submits once before she is done, stops and restarts her server from the hub's home
   page (the work is still there), types the last answer, runs every cell (all checks pass),
   saves and submits again (the latest counts);
   bob: answers one exercise wrongly, runs every cell, saves; from his kernel tries to read
   alice's work, the exchange's submissions and the gradebook (refused); submits after the
   due date, which the instructor sets once alice is done;
3. the hub is restarted (its students' servers keep running, nobody logs in again);
4. the instructor collects and grades with ``make autograde`` (bubblewrap sandbox required);
5. the instructor, in their own Lab in Chromium: the Formgrader shows the course and the scores,
   its Autograde button says to use make autograde, and a manual grade and a comment are given
   to alice; then feedback is written and released, and ``make export`` run;
6. each student fetches feedback in the tab and opens it: their own score, no hidden test (a
   student's Lab and server have no instructor tools: checked in bob's page).

Screenshots of every step: test-artifacts/hub/. Needs root, node and npm (for the proxy) and
Chromium; without them the module is skipped, or fails when COURSE_REQUIRE_HUB or
COURSE_REQUIRE_BROWSER is set (.ci/run sets them), naming what to install.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import threading
import time

import pytest
from support import HIDDEN_TESTS
from support.hostile.generate import L1, points
from support.hub import ARTIFACTS, Hub, Student, missing_prerequisites

from helpers.course import notebook_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REQUIRED = any(
    os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}
    for name in ("COURSE_REQUIRE_HUB", "COURSE_REQUIRE_BROWSER")
)
MISSING = missing_prerequisites()
if MISSING and not REQUIRED:
    pytest.skip(
        "the JupyterHub class test was SKIPPED; it needs: " + "; ".join(MISSING),
        allow_module_level=True,
    )

INSTRUCTOR, ALICE, BOB = "rnnt-teacher", "rnnt-alice", "rnnt-bob"
WRONG = "clipping_answer"  # bob's wrong answer, and alice's last one
WRONG_ANSWER = 'lower_final_loss = "without clipping"\n'
#: Seconds one student's whole part may take before the test gives up on them.
PHASE_TIMEOUT = 420


def _answers() -> dict[int, str]:
    """Cell index -> what a student who solved it types (the solution, markers removed)."""
    release = json.loads(notebook_path("release", L1).read_text())
    solution = json.loads(notebook_path("source", L1).read_text())
    by_id = {
        c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"])
        for c in solution["cells"]
        if c["metadata"].get("nbgrader", {}).get("solution")
    }
    answers = {}
    for index, cell in enumerate(release["cells"]):
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            lines = by_id[meta["grade_id"]].splitlines(keepends=True)
            answers[index] = "".join(line for line in lines if "### " not in line).strip() + "\n"
    return answers


def _index(grade_id: str) -> int:
    release = json.loads(notebook_path("release", L1).read_text())
    return next(
        i
        for i, c in enumerate(release["cells"])
        if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id
    )


def _errors(notebook: dict) -> dict[str, str]:
    """grade_id (or cell index) -> the error a cell shows."""
    found = {}
    for index, cell in enumerate(notebook["cells"]):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                key = cell["metadata"].get("nbgrader", {}).get("grade_id", str(index))
                found[key] = f"{output['ename']}: {output['evalue']}"[:300]
    return found


PROBE = """
import glob, os
tries = {{
    "alice's notebook": lambda: open({alice!r}).read(),
    "alice's home": lambda: os.listdir({alice_home!r}),
    "the exchange's submissions": lambda: os.listdir({inbound!r}),
    "the gradebook": lambda: open({gradebook!r}, 'rb').read(),
    "the instructor's course": lambda: os.listdir({course!r}),
}}
for what, attempt in tries.items():
    try:
        attempt()
        print(what, 'READ')
    except PermissionError:
        print(what, 'refused')
    except Exception as exc:
        print(what, type(exc).__name__)
"""


class Phases:
    """The students' threads and the instructor's steps wait on each other through these."""

    def __init__(self):
        self.alice_done = threading.Event()
        self.bob_ready = threading.Event()
        self.deadline = threading.Event()
        self.bob_done = threading.Event()
        self.graded = threading.Event()
        self.manual_done = threading.Event()
        self.feedback = threading.Event()
        self.errors: dict[str, BaseException] = {}
        self.seen: dict[str, object] = {}


def _alice(hub: Hub, phases: Phases, answers: dict[int, str]) -> None:
    last = _index(WRONG)
    with Student(hub, ALICE) as me:
        me.log_in(password="not her password")
        me.page.wait_for_selector(".alert-danger, #login_submit")
        phases.seen["wrong password url"] = me.page.url
        me.shot("wrong-password")
        me.log_in()
        me.fetch(L1)
        path = me.open_notebook(L1)
        for index, text in answers.items():
            if index != last:
                me.type_into(index, text)
        me.save()
        me.submit(L1)  # too early: one answer missing
        me.restart_server()
        me.open_notebook(L1)
        phases.seen["alice after restart"] = me.sources()
        me.type_into(last, answers[last])
        me.run_all(path)
        me.save()
        phases.seen["alice notebook"] = json.loads(me.file(path).read_text())
        me.submit(L1)
        phases.alice_done.set()
        _wait(phases.feedback, phases)
        me.reload()
        phases.seen["alice url after hub restart"] = me.page.url
        me.fetch_feedback(L1)
        phases.seen["alice feedback"] = _feedback(me)


#: What a page of a user's JupyterLab reads about nbgrader's tools: the Lab plugins it runs
#: without, and what the user's server answers at the Formgrader's API (status and body).
TOOLS = """async ([user, lesson]) => {
  const element = document.getElementById("jupyter-config-data");
  const config = element ? JSON.parse(element.textContent) : {};
  const disabled = config.disabledExtensions || [];
  // cookie-authenticated requests that are not page loads must carry the XSRF token
  const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
  const read = async (url) => {
    const response = await fetch(url, {headers: {"X-XSRFToken": decodeURIComponent(xsrf)}});
    const text = await response.text();
    try {
      return {status: response.status, body: JSON.parse(text)};
    } catch (error) {
      return {status: response.status, body: text.slice(0, 300)};
    }
  };
  const assignments = await read(`/user/${user}/formgrader/api/assignments`);
  const submissions = await read(`/user/${user}/formgrader/api/submissions/${lesson}`);
  const ids = ["formgrader", "create-assignment", "course-list", "assignment-list"];
  const running = Object.fromEntries(ids.map((id) => [id,
    window.jupyterapp.hasPlugin(`@jupyter/nbgrader:${id}`)]));
  // the header a frame of the Formgrader's page is judged by
  const token = {"X-XSRFToken": decodeURIComponent(xsrf)};
  const page = await fetch(`/user/${user}/formgrader`, {headers: token});
  return {
    running,
    framing: page.headers.get("content-security-policy"),
    disabled: Array.isArray(disabled) ? disabled : Object.keys(disabled).filter(k => disabled[k]),
    status: assignments.status,
    assignments: assignments.body,
    submissions: submissions.body,
  };
}"""


#: The Formgrader's Autograde button for one submission (what the page posts when clicked).
AUTOGRADE = """async ([user, lesson, student]) => {
  const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
  const url = `/user/${user}/formgrader/api/submission/${lesson}/${student}/autograde`;
  const headers = {"X-XSRFToken": decodeURIComponent(xsrf)};
  const response = await fetch(url, {method: "POST", headers});
  return {status: response.status, body: await response.text()};
}"""


#: Where the Formgrader keeps alice's notebook: its submission id, and the ids of the grade and
#: the comment the manual grade changes (read back from its API once the page has saved them).
FIND = """async ([user, lesson, student, check, exercise]) => {
  const base = `/user/${user}/formgrader/api`;
  const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
  const get = async (url) =>
    (await fetch(base + url, {headers: {"X-XSRFToken": decodeURIComponent(xsrf)}})).json();
  const notebooks = await get(`/submitted_notebooks/${lesson}/${lesson}`);
  const mine = notebooks.find((n) => n.student === student);
  const grade = (await get(`/grades?submission_id=${mine.id}`)).find((g) => g.name === check);
  const note = (await get(`/comments?submission_id=${mine.id}`)).find((c) => c.name === exercise);
  return {notebook: mine.id, grade: await get(`/grade/${grade.id}`),
          comment: await get(`/comment/${note.id}`)};
}"""
MANUAL_CELL = "gru_quiz"  # alice's manually graded exercise: half of its point, and a comment
MANUAL_SCORE = 0.5
MANUAL_COMMENT = "Half a point: say which of the GRU's states plays the LSTM's cell state."


def _grade_by_hand(hub: Hub, me: Student) -> dict:
    """In the Formgrader's grading page of alice's notebook: half of one exercise's point, and a
    comment on it, typed into its fields (the page saves a field when it is left)."""
    args = [INSTRUCTOR, L1, ALICE, f"{MANUAL_CELL}_check", MANUAL_CELL]
    before = me.page.evaluate(FIND, args)
    page = me.context.new_page()
    try:
        page.goto(f"{hub.base}/user/{INSTRUCTOR}/formgrader/submissions/{before['notebook']}/")
        score = page.locator(f"input.score#{MANUAL_CELL}_check")
        score.wait_for(timeout=60_000)
        score.fill(str(MANUAL_SCORE))
        score.press("Tab")
        comment = page.locator(f"textarea#{MANUAL_CELL}-comment")
        comment.fill(MANUAL_COMMENT)
        comment.press("Tab")
        deadline = time.monotonic() + 60
        after = me.page.evaluate(FIND, args)
        while time.monotonic() < deadline and (
            after["grade"]["manual_score"] != MANUAL_SCORE
            or after["comment"]["manual_comment"] != MANUAL_COMMENT
        ):
            time.sleep(0.5)
            after = me.page.evaluate(FIND, args)
        page.screenshot(path=str(ARTIFACTS / f"{INSTRUCTOR}-manual-grade.png"))
    finally:
        page.close()
    return {"before": before, "after": after}


def _formgrader_in_a_lab_tab(me: Student) -> str:
    """Nbgrader → Formgrader in the instructor's Lab: the page in a Lab tab (a frame); its text,
    or why it did not show."""
    try:
        me.page.evaluate("() => window.jupyterapp.commands.execute('nbgrader:open-formgrader')")
        frame = me.page.frame_locator("iframe[src*='formgrader']").first
        frame.get_by_text(L1).first.wait_for(timeout=60_000)
        return frame.locator("body").inner_text()
    except Exception as exc:  # judged by the test, with the screenshot
        return f"not shown: {exc!r}"
    finally:
        me.shot("formgrader-in-lab")


def _instructor(hub: Hub, phases: Phases) -> None:
    """The instructor's own JupyterLab, in Chromium: the Formgrader once the class is
    autograded (the course, the scores, the Autograde button, a manual grade and comment)."""
    with Student(hub, INSTRUCTOR) as me:
        me.log_in()
        _wait(phases.graded, phases)
        me.reload()
        phases.seen["instructor tools"] = me.page.evaluate(TOOLS, [INSTRUCTOR, L1])
        phases.seen["formgrader autograde"] = me.page.evaluate(AUTOGRADE, [INSTRUCTOR, L1, ALICE])
        phases.seen["manual grade"] = _grade_by_hand(hub, me)
        me.shot("instructor-lab")
        # the Formgrader's own page, as the instructor opens it from the Nbgrader menu
        formgrader = me.context.new_page()
        try:
            formgrader.goto(f"{hub.base}/user/{INSTRUCTOR}/formgrader")
            formgrader.get_by_text(L1).first.wait_for(timeout=60_000)
            formgrader.screenshot(path=str(ARTIFACTS / f"{INSTRUCTOR}-formgrader.png"))
            phases.seen["formgrader page"] = formgrader.inner_text("body")
        finally:
            formgrader.close()
        phases.seen["formgrader in lab"] = _formgrader_in_a_lab_tab(me)
        phases.manual_done.set()


def _bob(hub: Hub, phases: Phases, answers: dict[int, str]) -> None:
    wrong = _index(WRONG)
    with Student(hub, BOB) as me:
        me.log_in()
        phases.seen["bob tools"] = me.page.evaluate(TOOLS, [BOB, L1])
        me.fetch(L1)
        path = me.open_notebook(L1)
        for index, text in answers.items():
            me.type_into(index, WRONG_ANSWER if index == wrong else text)
        me.run_all(path)
        me.save()
        phases.seen["bob notebook"] = json.loads(me.file(path).read_text())
        room = hub.room
        phases.seen["bob probe"] = me.kernel(
            PROBE.format(
                alice=str(room.home(ALICE) / path),
                alice_home=str(room.home(ALICE)),
                inbound=str(room.exchange / "rnn-course" / "inbound"),
                gradebook=str(room.course / "grading" / "gradebook.db"),
                course=str(room.course),
            )
        )
        phases.bob_ready.set()
        _wait(phases.deadline, phases)
        me.submit(L1)  # after the due date
        phases.bob_done.set()
        _wait(phases.feedback, phases)
        me.reload()
        me.fetch_feedback(L1)
        phases.seen["bob feedback"] = _feedback(me)


def _feedback(me: Student) -> str:
    found = sorted(me.file(L1).glob(f"feedback/*/{L1}.html"))
    assert len(found) == 1, f"{me.user} has feedback files {found}"
    return me.view(str(found[0].relative_to(me.hub.room.home(me.user))))


def _wait(event: threading.Event, phases: Phases) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while not event.wait(1):
        if phases.errors or time.monotonic() > deadline:
            raise RuntimeError("stopped: another part of the class failed or took too long")


def _thread(name, target, *args) -> threading.Thread:
    phases = args[1]

    def run():
        try:
            target(*args)
        except BaseException as exc:  # reported by the fixture
            phases.errors[name] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _raise_first_error(phases: Phases, hub: Hub, when: str = "") -> None:
    """Fail with the first student's error (if any), the screenshots' folder and the hub's log."""
    if phases.errors:
        name, exc = next(iter(phases.errors.items()))
        raise AssertionError(
            f"{name} failed{when}: {exc!r}\nscreenshots: {ARTIFACTS}\n"
            f"JupyterHub's log:\n{hub.log_tail()}"
        ) from exc


def _until(event: threading.Event, phases: Phases, what: str, hub: Hub) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while not event.wait(1):
        _raise_first_error(phases, hub, f" before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {PHASE_TIMEOUT} s")


@pytest.fixture(scope="module")
def klass():
    if MISSING:
        pytest.fail("COURSE_REQUIRE_HUB is set, but the hub test needs: " + "; ".join(MISSING))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    hub = Hub(INSTRUCTOR, [ALICE, BOB])
    timings = {}
    started = time.perf_counter()
    try:
        hub.setup().start()
        timings["setup and hub start"] = time.perf_counter() - started
        out = {"release": hub.instructor("release-assignments", f"--lesson {L1}")}
        phases = Phases()
        answers = _answers()
        threads = [_thread("alice", _alice, hub, phases, answers)]
        threads.append(_thread("bob", _bob, hub, phases, answers))
        threads.append(_thread("instructor", _instructor, hub, phases))
        _until(phases.alice_done, phases, "alice's second submission", hub)
        _until(phases.bob_ready, phases, "bob's work", hub)
        # The due date has whole seconds: one second after alice's last submission at least.
        time.sleep(1.1)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        hub.as_user(
            INSTRUCTOR,
            [
                "bash",
                "-c",
                f"cd {hub.room.course} && nbgrader db assignment add {L1} "
                f"--duedate='{now}' --log-level=WARN",
            ],
        )
        time.sleep(1.1)  # bob's submission is stamped at least a second after the due date
        phases.deadline.set()
        _until(phases.bob_done, phases, "bob's late submission", hub)
        timings["students' work"] = time.perf_counter() - started
        hub.restart()
        out["collect"] = hub.instructor("collect", f"--lesson {L1}")
        out["autograde"] = hub.instructor("autograde", f"--lesson {L1} --jobs 2 --sandbox bwrap")
        phases.graded.set()
        _until(phases.manual_done, phases, "the instructor's manual grade", hub)
        out["feedback"] = hub.instructor("feedback")
        out["release-feedback"] = hub.instructor("release-feedback", f"--lesson {L1}")
        out["export"] = hub.instructor("export")
        timings["grading"] = time.perf_counter() - started
        phases.feedback.set()
        for thread in threads:
            thread.join(timeout=PHASE_TIMEOUT)
        _raise_first_error(phases, hub)
        timings["feedback"] = time.perf_counter() - started
        (ARTIFACTS / "timings.json").write_text(
            json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1) + "\n"
        )
        yield hub, phases.seen, out, _gradebook(hub)
    finally:
        hub.close()


def _gradebook(hub: Hub) -> dict:
    from nbgrader.api import Gradebook

    result = {}
    with Gradebook(f"sqlite:///{hub.room.course / 'grading' / 'gradebook.db'}") as gb:
        for student in (ALICE, BOB):
            sub = gb.find_submission(L1, student)
            nb = sub.notebooks[0]
            result[student] = {
                "score": sub.score,
                "submitted": str(sub.timestamp),
                "due": str(sub.duedate),
                "late": sub.total_seconds_late > 0,
                "penalty": nb.late_submission_penalty or 0,
                "cells": {g.name: g.score for g in nb.grades},
            }
    return result


def test_login_needs_the_password(klass):
    _, seen, _, _ = klass
    assert "/hub/login" in seen["wrong password url"], seen["wrong password url"]


def test_work_survives_a_server_restart(klass):
    _, seen, _, _ = klass
    answers = _answers()
    after = seen["alice after restart"]
    lost = [i for i, text in answers.items() if i != _index(WRONG) and after[i] != text]
    assert not lost, f"cells {lost} lost what alice typed before her server restarted"


def test_checks_pass_in_the_browser_for_a_solved_notebook(klass):
    _, seen, _, _ = klass
    assert _errors(seen["alice notebook"]) == {}, _errors(seen["alice notebook"])
    typed = {i: "".join(seen["alice notebook"]["cells"][i]["source"]) for i in _answers()}
    assert typed == _answers(), "what alice typed is not what the saved notebook holds"


def test_a_wrong_answer_fails_its_check_in_the_browser(klass):
    _, seen, _, _ = klass
    assert set(_errors(seen["bob notebook"])) == {f"{WRONG}_check"}, _errors(seen["bob notebook"])


def test_a_student_cannot_read_others_work_or_the_gradebook(klass):
    _, seen, _, _ = klass
    probe = seen["bob probe"]
    assert "READ" not in probe and probe.count("refused") == 5, probe


def test_scores_latest_submission_and_late_penalty(klass):
    hub, _, out, grades = klass
    total = sum(points(L1).values())
    submissions = list((hub.room.exchange / "rnn-course" / "inbound").glob(f"{ALICE}+{L1}+*"))
    assert len(submissions) == 2, f"alice submitted twice, the exchange has {submissions}"
    # alice: every check, less what the instructor's manual grade took off (below)
    manual = points(L1)[f"{MANUAL_CELL}_check"] - MANUAL_SCORE
    assert grades[ALICE]["score"] == total - manual and not grades[ALICE]["late"], (grades, out)
    assert grades[ALICE]["cells"][f"{MANUAL_CELL}_check"] == MANUAL_SCORE
    # bob: every check but the wrong one, then 0 for a late submission (penalty_method "zero")
    raw = total - points(L1)[f"{WRONG}_check"]
    # nbgrader keeps the points and the penalty apart: what counts is score - penalty
    assert grades[BOB]["late"] and grades[BOB]["score"] == raw, (grades, out)
    assert grades[BOB]["penalty"] == raw, (grades, out)
    lost = {k for k, v in grades[BOB]["cells"].items() if v == 0 and k in points(L1)}
    assert lost == {f"{WRONG}_check"}, grades[BOB]["cells"]
    assert "NO FILE ISOLATION" not in out["autograde"], out["autograde"]


def test_the_hub_restart_lost_no_session(klass):
    _, seen, _, _ = klass
    assert f"/user/{ALICE}/lab" in seen["alice url after hub restart"]


def test_each_student_sees_their_own_score_and_no_hidden_test(klass):
    _, seen, _, _ = klass
    total = sum(points(L1).values())
    alice, bob = seen["alice feedback"], seen["bob feedback"]
    raw = total - points(L1)[f"{WRONG}_check"]
    mine = total - points(L1)[f"{MANUAL_CELL}_check"] + MANUAL_SCORE  # the manual grade
    assert f"{L1} (Score: {mine:.1f} / {total:.1f})" in alice, alice[:1000]
    assert f"{L1} (Score: 0.0 / {total:.1f})" in bob, bob[:1000]
    assert f"Late submission penalty (Score: -{raw:.1f})" in bob, bob[:1000]
    assert "Late submission penalty" not in alice, alice[:1000]
    # bob's feedback names the exercise he got wrong, with the grader's reason
    assert f"{WRONG}_check" in bob and "Autograder" in bob, bob[:3000]
    solution = json.loads(notebook_path("source", L1).read_text())
    hidden = [
        line.strip()
        for c in solution["cells"]
        for block in HIDDEN_TESTS.findall("".join(c["source"]))
        for line in block.splitlines()
        if line.strip()
    ]
    assert hidden
    for who, text in (("alice", alice), ("bob", bob)):
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{who}'s feedback shows hidden tests: {leaked}"


def test_students_get_student_tools_only(klass):
    """A student's Lab runs without the Formgrader, Create Assignment and the course list, and
    their server has no Formgrader; the instructor's has all of them."""
    _, seen, _, _ = klass
    student, instructor = seen["bob tools"], seen["instructor tools"]
    for plugin in ("formgrader", "create-assignment", "course-list"):
        assert f"@jupyter/nbgrader:{plugin}" in student["disabled"], student
        # not running in the student's Lab; running in the instructor's
        assert student["running"][plugin] is False and instructor["running"][plugin] is True
    assert student["running"]["assignment-list"] is True
    assert not any("assignment-list" in d or "validate" in d for d in student["disabled"])
    assert student["status"] == 404, student
    assert not any("nbgrader" in d for d in instructor["disabled"]), instructor
    assert instructor["status"] == 200, instructor


def test_the_formgrader_shows_the_course_and_its_scores(klass):
    """The instructor's Formgrader, served from their home folder, reads the course's
    configuration: the released lesson, both submissions and the autograder's scores."""
    _, seen, _, gradebook = klass
    tools = seen["instructor tools"]
    # the Formgrader may be framed by the instructor's Lab (same origin), by nobody else
    assert "frame-ancestors 'self'" in (tools["framing"] or ""), tools["framing"]
    # its page shows the lesson, in its own browser tab and in a tab of the instructor's Lab
    assert L1 in seen["formgrader page"], seen["formgrader page"][:2000]
    assert "Manage Assignments" in seen["formgrader in lab"], seen["formgrader in lab"][:2000]
    assert L1 in seen["formgrader in lab"]
    lessons = {a["name"]: a for a in tools["assignments"]}
    assert L1 in lessons, tools["assignments"]
    assert lessons[L1]["num_submissions"] == 2
    # read right after make autograde, before the manual grade: the sandboxed grader's scores
    scores = {s["student"]: s["score"] for s in tools["submissions"]}
    total = sum(points(L1).values())
    assert scores[ALICE] == total and scores[BOB] == total - points(L1)[f"{WRONG}_check"], tools
    assert gradebook[BOB]["score"] == scores[BOB]


def test_the_formgrader_autograde_button_says_to_use_make_autograde(klass):
    """The Formgrader's Autograde would run a submission unsandboxed: it refuses, names the
    course's grader, and leaves the score the sandboxed grader gave."""
    _, seen, _, gradebook = klass
    answer = seen["formgrader autograde"]
    assert answer["status"] == 200, answer
    result = json.loads(answer["body"])
    assert result["success"] is False and "make autograde" in result["error"], result
    autograded = {s["student"]: s["score"] for s in seen["instructor tools"]["submissions"]}
    assert autograded[ALICE] == sum(points(L1).values())
    assert gradebook[BOB]["score"] == autograded[BOB]


def test_a_manual_grade_reaches_the_export_and_the_feedback(klass):
    """The instructor overrides one autograded cell of alice's in the Formgrader's grading page
    and comments on the exercise: the gradebook keeps both, make export counts the new score,
    and the feedback alice fetches shows the score and the comment."""
    hub, seen, _, _ = klass
    manual = seen["manual grade"]
    # the autograder's full point, then what the instructor typed, saved by the page
    assert manual["before"]["grade"]["auto_score"] == points(L1)[f"{MANUAL_CELL}_check"], manual
    assert manual["before"]["grade"]["manual_score"] is None, manual
    assert manual["after"]["grade"]["manual_score"] == MANUAL_SCORE, manual
    assert manual["after"]["comment"]["manual_comment"] == MANUAL_COMMENT, manual
    total = sum(points(L1).values())
    mine = total - points(L1)[f"{MANUAL_CELL}_check"] + MANUAL_SCORE
    grading = hub.room.course / "grading"
    with open(grading / "grades.csv", newline="") as fh:
        rows = {row["student_id"]: row for row in csv.DictReader(fh)}
    assert float(rows[ALICE]["raw_score"]) == mine and float(rows[ALICE]["score"]) == mine
    with open(grading / "grades-canvas.csv", newline="") as fh:
        header, _, *students = list(csv.reader(fh))
    canvas = {row[3]: dict(zip(header, row, strict=True)) for row in students}
    assert float(canvas[ALICE][L1]) == mine and float(canvas[BOB][L1]) == 0.0
    assert MANUAL_COMMENT in seen["alice feedback"]
