"""A class on a real JupyterHub, driven the way its people use it. Used by tests/test_hub.py.

* ``Hub``: deploy/hub/hub.py's set-up (Linux accounts with passwords, nbgrader's exchange, the
  instructor's copy of the course) for test accounts of its own, then JupyterHub itself with
  deploy/hub/jupyterhub_config.py, its proxy from npm, on 127.0.0.1 and a free port; it can be
  restarted (same state, same ports) and is torn down with its accounts.
* ``Hub.instructor``: a ``make`` target run in the instructor's course as the instructor.
* ``Student``: one person in Chromium: log in with a password, the Nbgrader menu's Assignment
  List (fetch, submit, fetch feedback), type into the notebook, run it, save it, stop and start
  their server from the hub's home page, ask their own kernel something; a screenshot of every
  step into test-artifacts/hub/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.browser import (
    CHROMIUM,
    HOW_TO_ENABLE,
    LAUNCH_ARGS,
    MISSING_BROWSER,
    NO_ANIMATIONS_JS,
    OPEN_TIMEOUT,
    POLL_MS,
    WITHIN_JS,
    _command,
    _run_all_from_menu,
    _wait_open,
    chromium_available,
    log_tail,
    run_in_kernel,
    stop_process,
)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "hub"

_spec = importlib.util.spec_from_file_location("course_hub", ROOT / "deploy" / "hub" / "hub.py")
hub_setup = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hub_setup  # dataclasses look their module up there
_spec.loader.exec_module(hub_setup)

#: Seconds: the hub's start, a user's server start (hub + JupyterLab), one make target.
HUB_START_TIMEOUT = 60
SPAWN_TIMEOUT = 120
MAKE_TIMEOUT = 600


def missing_prerequisites() -> list[str]:
    """What this machine lacks for the hub test, each with what to install."""
    missing = []
    if os.geteuid() != 0:
        missing.append(
            "root: the hub test creates Linux accounts and runs servers as them (run it as root)"
        )
    if not hub_setup.PROXY.is_file() and not (shutil.which("node") and shutil.which("npm")):
        missing.append(hub_setup.NEED_NODE)
    for tool in ("useradd", "userdel", "chpasswd", "runuser"):
        if not shutil.which(tool):
            missing.append(f"{tool} (Debian: the passwd and util-linux packages)")
    if not chromium_available():
        missing.append(f"{MISSING_BROWSER}: {HOW_TO_ENABLE}")
    return missing


def _get(url: str, timeout: float = 10) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class Hub:
    """JupyterHub for a test class: ``start()``, ``restart()``, ``close()``."""

    def __init__(self, instructor: str, students: list[str]):
        self.state = Path(tempfile.mkdtemp(prefix="rnn-course-hub-"))
        self.room = hub_setup.Classroom(self.state, instructor, list(students))
        self.port = hub_setup.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = self.state / "jupyterhub.log"
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.opened: list[str] = []

    # --- set-up and the hub's process ---

    def setup(self) -> Hub:
        if not hub_setup.PROXY.is_file() or not _proxy_current():
            _make_proxy()
        for user in self.room.users:  # a clean class: accounts left by an interrupted run go
            hub_setup.remove_user(user)
        self.opened = hub_setup.setup(self.room)
        self.env = hub_setup.hub_environment(
            self.room, self.port, COURSE_FAST="1", COURSE_HUB_EXPOSE_APP="1"
        )
        return self

    def start(self) -> Hub:
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            hub_setup.hub_command(),
            cwd=self.room.hub_dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + HUB_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"JupyterHub exited at once:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if _get(f"{self.base}/hub/api/", timeout=2) == 200:
                    return self
            time.sleep(0.3)
        raise AssertionError(
            f"JupyterHub did not answer in {HUB_START_TIMEOUT} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the hub (and the proxy it started); the users' servers keep running."""
        stop_process(self.process, timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop every process of the test accounts, the hub, then delete the accounts."""
        for user in self.room.users:
            for pid in _pids_of(user):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self.stop()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_pids_of(u) for u in self.room.users):
            time.sleep(0.3)
        for user in self.room.users:
            for pid in _pids_of(user):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            hub_setup.remove_user(user)
        with contextlib.suppress(OSError):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, ARTIFACTS / "jupyterhub.log")
        shutil.rmtree(self.state, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    # --- the instructor, from a terminal ---

    def instructor(self, target: str, args: str = "") -> str:
        """``make TARGET ARGS=...`` in the instructor's course, as the instructor."""
        return self.as_user(
            self.room.instructor,
            ["make", "--no-print-directory", "-C", str(self.room.course), target, f"ARGS={args}"],
        )

    def as_user(self, user: str, command: list[str], check: bool = True) -> str:
        env = {
            "PATH": f"{hub_setup.VENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "COURSE_FAST": "1",
        }
        result = subprocess.run(
            [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--", *command],
            cwd="/",
            env=env,
            capture_output=True,
            text=True,
            timeout=MAKE_TIMEOUT,
        )
        output = result.stdout + result.stderr
        if check:
            assert result.returncode == 0, f"{' '.join(command)} as {user} failed:\n{output}"
        return output


def _proxy_current() -> bool:
    lock = hub_setup.PROXY_DIR / "package-lock.json"
    return lock.is_file() and lock.read_bytes() == (hub_setup.HERE / lock.name).read_bytes()


def _make_proxy() -> None:
    """``make hub-proxy``: configurable-http-proxy from the npm registry into .hub/proxy."""
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "hub-proxy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"make hub-proxy failed:\n{result.stdout}{result.stderr}"


def _pids_of(user: str) -> list[int]:
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
    return pids


# --- a person in the browser ------------------------------------------------------------------


class Student:
    """One user of the hub in their own Chromium (Playwright is not thread-safe: one per thread).

    Use as a context manager inside the thread that drives it.
    """

    def __init__(self, hub: Hub, user: str):
        self.hub = hub
        self.user = user
        self.password = hub.room.passwords[user]
        self.steps = 0
        self.screenshots: list[Path] = []

    def __enter__(self) -> Student:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS
        )
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        self.context.add_init_script(NO_ANIMATIONS_JS)
        self.page = self.context.new_page()
        self.page.set_default_timeout(OPEN_TIMEOUT * 1000)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.shot("failed")
        with contextlib.suppress(Exception):
            self.browser.close()
        with contextlib.suppress(Exception):
            self._playwright.stop()

    # --- what every step leaves behind ---

    def shot(self, what: str) -> Path:
        self.steps += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "-", f"{self.user}-{self.steps:02d}-{what}")
        target = ARTIFACTS / f"{name}.png"
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(target))
            self.screenshots.append(target)
        return target

    @property
    def lab_url(self) -> str:
        return f"{self.hub.base}/user/{self.user}/lab"

    # --- the hub ---

    def log_in(self, password: str | None = None) -> None:
        """The hub's login form, with the account's password; waits for JupyterLab."""
        page = self.page
        page.goto(f"{self.hub.base}/hub/login")
        page.fill("#username_input", self.user)
        page.fill("#password_input", password or self.password)
        self.shot("login")
        page.click("#login_submit")
        if password is not None:
            return
        self._wait_lab()
        self.shot("lab")

    def _wait_lab(self) -> None:
        page = self.page
        page.wait_for_url(
            re.compile(rf".*/user/{re.escape(self.user)}/lab.*"), timeout=SPAWN_TIMEOUT * 1000
        )
        page.wait_for_function(
            "() => !!window.jupyterapp", timeout=SPAWN_TIMEOUT * 1000, polling=POLL_MS
        )
        page.evaluate(
            f"""async ms => {{
              await ({WITHIN_JS})(window.jupyterapp.restored, 'JupyterLab', ms);
            }}""",
            OPEN_TIMEOUT * 1000,
        )

    def restart_server(self) -> None:
        """Stop My Server, then Start My Server, on the hub's home page."""
        page = self.page
        page.goto(f"{self.hub.base}/hub/home")
        page.click("#stop")
        page.wait_for_selector("#start", state="visible", timeout=SPAWN_TIMEOUT * 1000)
        page.wait_for_function(
            "() => !document.querySelector('#stop') || document.querySelector('#stop')"
            ".offsetParent === null",
            timeout=SPAWN_TIMEOUT * 1000,
            polling=POLL_MS,
        )
        self.shot("server-stopped")
        page.click("#start")
        self._wait_lab()
        self.shot("server-started")

    # --- nbgrader's Assignments tab ---

    def assignments(self) -> None:
        """Nbgrader menu -> Assignment List (or its refresh button when it is open)."""
        page = self.page
        if page.locator("#nbgrader-assignment-list").count():
            page.locator(".lm-TabBar-tab", has_text="Assignments").first.click()
            page.click("#refresh_assignments_list")
        else:
            page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
            page.locator(".lm-Menu-itemLabel", has_text="Assignment List").click()
        page.wait_for_function(
            """() => ['released', 'fetched', 'submitted'].every(k => {
                 const l = document.querySelector(`#${k}_assignments_list_loading`);
                 return l && l.hidden; })""",
            timeout=OPEN_TIMEOUT * 1000,
            polling=POLL_MS,
        )

    def _row(self, panel: str, lesson: str):
        return self.page.locator(f"#{panel}_assignments_list > .list_item", has_text=lesson)

    def fetch(self, lesson: str) -> None:
        self.assignments()
        self._row("released", lesson).locator("button", has_text="Fetch").click()
        self._row("fetched", lesson).wait_for(timeout=OPEN_TIMEOUT * 1000)
        self.shot("fetched")

    def submit(self, lesson: str) -> None:
        self.assignments()
        before = self.page.locator("#submitted_assignments_list .list_item").count()
        self._row("fetched", lesson).locator("button", has_text="Submit").click()
        try:
            self.page.wait_for_function(
                "n => document.querySelectorAll('#submitted_assignments_list .list_item')"
                ".length > n",
                arg=before,
                timeout=OPEN_TIMEOUT * 1000,
                polling=POLL_MS,
            )
        except Exception as exc:
            dialog = self.page.locator(".jp-Dialog").all_inner_texts()
            raise AssertionError(f"{self.user}: submitting {lesson} failed: {dialog}") from exc
        self.shot("submitted")

    def fetch_feedback(self, lesson: str) -> None:
        self.assignments()
        row = self._row("submitted", lesson)
        row.locator("button", has_text="Fetch Feedback").first.click()
        self.page.locator("#submitted_assignments_list", has_text="view feedback").wait_for(
            timeout=OPEN_TIMEOUT * 1000
        )
        self.shot("feedback-fetched")

    # --- the notebook ---

    def open_notebook(self, lesson: str) -> str:
        """Open the fetched lesson from the Assignments tab; returns its path in the home."""
        self.assignments()
        self._row("fetched", lesson).locator("a.assignment-notebooks-link").click()
        self.page.locator(
            "#fetched_assignments_list .nested_list_item a", has_text=lesson
        ).first.click()
        path = f"{lesson}/{lesson}.ipynb"
        n_cells = len(json.loads(self.file(path).read_text())["cells"])
        _wait_open(self.page, None, path, n_cells)
        self.shot("notebook-open")
        return path

    def file(self, path: str) -> Path:
        return self.hub.room.home(self.user) / path

    def type_into(self, index: int, text: str) -> None:
        """Click into cell ``index``'s editor, select all, type ``text`` (as one input)."""
        page = self.page
        cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").nth(index)
        cell.scroll_into_view_if_needed()
        cell.locator(".cm-content").click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(text)
        page.keyboard.press("Escape")

    def sources(self) -> list[str]:
        """What the page's notebook holds now, cell by cell."""
        return self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.widgets"
            ".map(c => c.model.sharedModel.getSource())"
        )

    def run_all(self, path: str) -> None:
        _run_all_from_menu(self.page, path)
        self.shot("ran")

    def save(self) -> None:
        _command(self.page, "docmanager:save")
        self.shot("saved")

    def kernel(self, code: str) -> str:
        """Run ``code`` in the open notebook's kernel (nothing added to the notebook)."""
        return run_in_kernel(self.page, code)

    def reload(self) -> None:
        """Load JupyterLab again (after the hub's restart): no new login may be asked."""
        self.page.goto(self.lab_url)
        self._wait_lab()
        self.shot("reloaded")

    def view(self, path: str) -> str:
        """Open a file of the home in a tab of its own (the feedback page); its text."""
        other = self.context.new_page()
        try:
            other.goto(f"{self.hub.base}/user/{self.user}/files/{path}")
            self.steps += 1
            target = ARTIFACTS / f"{self.user}-{self.steps:02d}-feedback.png"
            other.screenshot(path=str(target), full_page=True)
            self.screenshots.append(target)
            return other.inner_text("body")
        finally:
            other.close()
