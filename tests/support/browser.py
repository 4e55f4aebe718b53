"""Drive JupyterLab in Chromium the way a student does, and judge what the page shows.

Used by tests/test_browser.py. Everything here works on a temporary copy of the course: the
browser saves outputs into the notebooks it runs, and the formgrader writes a gradebook.

* ``LabServer`` starts ``jupyter lab`` from the project's .venv on 127.0.0.1 with a random port
  and token, ``COURSE_FAST=1`` in its (and so the kernels') environment, fresh settings.
* ``run_notebook`` opens a notebook in the page, runs it (``each_cell`` or the Run menu's
  "Run All Cells"), waits for the kernel, saves, and returns a ``NotebookRun``: the saved
  notebook (outputs, errors) plus what the page shows for every cell (read-only editors, images,
  widgets).
* ``student_problems`` / ``solution_problems`` turn a run into a list of messages, each naming
  the notebook and the cell; an empty list means the notebook is fine.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import queue
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers.grading.common import venv_env

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"

#: Debian's chromium package; COURSE_CHROMIUM points elsewhere.
CHROMIUM = Path(os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
MISSING_BROWSER = f"Chromium not found at {CHROMIUM}"
HOW_TO_ENABLE = (
    "install it with `sudo apt-get install -y chromium` (Debian/Ubuntu; .ci/run does this), "
    "or point COURSE_CHROMIUM at a Chromium binary"
)

#: Seconds: Lab's start, opening a notebook, one cell, a whole notebook (2 loaded cores).
LAB_START_TIMEOUT = 90
OPEN_TIMEOUT = 90
RUN_TIMEOUT = 240
#: Seconds for all the browser work together: a safety net, far above the few minutes it takes.
ALL_JOBS_TIMEOUT = 1500
#: Milliseconds between checks of a page condition (Playwright's default, every animation
#: frame, keeps Chromium rendering and costs a core on a 2-core machine).
POLL_MS = 250
#: Pixels: the tallest screenshot (a whole lesson is about 10 000).
SCREENSHOT_MAX_HEIGHT = 16000

IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: tqdm's text bar: "name:  40%|████      | 4/10 [00:01<00:02, 3.2it/s]".
TQDM_TEXT = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
#: A cell that draws: matplotlib, the course's plotting helpers, or a diagram.
PLOTTING = re.compile(r"\bplt\.|\bshow_image\(|\bplot_\w+\(|\.plot\(|\.imshow\(")
#: Unsolved work: the release's stub, or a check reporting it ("not implemented yet").
NOT_IMPLEMENTED = re.compile(r"NotImplementedError|not implemented", re.I)


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


def copy_course(dest: Path) -> Path:
    """The parts of the course Lab and the formgrader need, copied into ``dest``.

    ``helpers`` is not copied: the kernel imports the installed package (editable install of this
    checkout), exactly as a student's kernel does from any folder.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", dest)
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
    for folder in ("solutions", "lessons"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_in_kernel(page, code: str, what: str = "the kernel") -> str:
    """Run ``code`` in the open notebook's kernel (nothing added to the notebook, no execution
    count) and return what it printed, and the name and message of any error."""
    return page.evaluate(
        f"""async ([code, ms]) => {{
          const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
          let out = '';
          const future = kernel.requestExecute({{code, silent: false, store_history: false}});
          future.onIOPub = msg => {{
            if (msg.header.msg_type === 'stream') out += msg.content.text;
            if (msg.header.msg_type === 'error') out += msg.content.ename + msg.content.evalue;
          }};
          await ({WITHIN_JS})(future.done, {json.dumps(what)}, ms);
          return out;
        }}""",
        [code, OPEN_TIMEOUT * 1000],
    )


def stop_process(process: subprocess.Popen | None, timeout: float) -> None:
    """Terminate ``process`` if it runs, and kill it after ``timeout`` seconds."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of the log at ``path``, or ``(no log)``."""
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LabServer:
    """``jupyter lab`` on 127.0.0.1:<random port> with a random token, rooted in ``course``."""

    def __init__(self, course: Path, state: Path):
        self.course = course
        self.state = state
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = state / "lab.log"
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        settings = self.state / "settings"
        news = settings / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        # Otherwise a "fetch news?" notification covers part of the page.
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        env = venv_env()
        # conftest sets MPLBACKEND=Agg for headless tests; in Lab plots must use the inline backend.
        env.pop("MPLBACKEND", None)
        env.update(
            COURSE_FAST="1",
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.state / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(self.state / "runtime"),
            # Nobody's ~/.jupyter or IPython start-up files: only the .venv's own configuration.
            JUPYTER_CONFIG_DIR=str(self.state / "config"),
            IPYTHONDIR=str(self.state / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        # Two notebooks run at once on two cores (see run_jobs): one torch thread per kernel.
        # Two threads each, plus the browser, oversubscribe the cores and OpenMP's busy-waiting
        # then costs 2-3x the CPU time (measured: lesson 04's solution 40 s -> 16 s).
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self) -> LabServer:
        """Start Lab in the background; ``wait_ready`` waits for it to answer."""
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.course}",
            # window.jupyterapp: the page's command registry (run a cell, save, open a file).
            "--LabApp.expose_app_in_browser=True",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # otherwise Lab exits at once when run as root
        # cwd = the course copy, so the formgrader reads that copy's nbgrader_config.py.
        self.process = subprocess.Popen(
            command,
            cwd=self.course,
            env=self.environment(),
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        self._deadline = time.monotonic() + LAB_START_TIMEOUT
        return self

    def wait_ready(self) -> None:
        while time.monotonic() < self._deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited at once:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
        raise RuntimeError(
            f"jupyter lab did not answer in {LAB_START_TIMEOUT} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        stop_process(self.process, timeout=15)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path}{sep}token={self.token}"

    def api(self, method: str, path: str):
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def saved_notebook(self, path: str) -> dict:
        return self.api("GET", f"/api/contents/{path}?content=1&type=notebook")["content"]


# --- the page -------------------------------------------------------------------------------

#: Runs in the page: every cell in turn through Lab's own "run cell" command.
RUN_EACH_CELL_JS = """
() => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  const notebook = panel.content;
  const state = { current: -1, done: false, error: null, seconds: [] };
  window.__courseRun = state;
  (async () => {
    for (let i = 0; i < notebook.widgets.length; i++) {
      state.current = i;
      notebook.activeCellIndex = i;
      notebook.deselectAll();
      const started = performance.now();
      // Resolves when the kernel has replied and gone idle; false when the cell raised.
      await app.commands.execute('notebook:run-cell');
      state.seconds.push((performance.now() - started) / 1000);
    }
  })().catch(e => { state.error = String(e); }).finally(() => { state.done = true; });
}
"""

#: Runs in the page: what each cell shows.
CELL_STATE_JS = """
() => Array.from(window.jupyterapp.shell.currentWidget.node.querySelectorAll('.jp-Cell'))
  .map(cell => ({
    kind: cell.classList.contains('jp-CodeCell') ? 'code'
        : cell.classList.contains('jp-MarkdownCell') ? 'markdown' : 'raw',
    readonly: !!cell.querySelector('.jp-InputArea .cm-editor.jp-mod-readOnly'),
    editor: !!cell.querySelector('.jp-InputArea .cm-editor'),
    prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
    images: Array.from(cell.querySelectorAll('img')).map(img => ({
      src: (img.getAttribute('src') || '').slice(0, 120),
      complete: img.complete,
      width: img.naturalWidth,
      output: !!img.closest('.jp-OutputArea'),
    })),
    svgs: cell.querySelectorAll('.jp-OutputArea .jp-RenderedSVG svg').length,
    widgets: cell.querySelectorAll('.jp-OutputArea .jupyter-widgets').length,
    // ipywidgets' progress bar (tqdm.auto in Lab), or a plain <progress>.
    progress: cell.querySelectorAll(
      '.jp-OutputArea .widget-hprogress .progress-bar, .jp-OutputArea progress').length,
    widget_errors: Array.from(cell.querySelectorAll('.jp-OutputArea-output'))
      .map(o => o.textContent)
      .filter(t => /Error displaying widget|Loading widget\\.\\.\\./.test(t)),
  }))
"""


@dataclass
class NotebookRun:
    """A notebook after it ran in the page: the saved file and what each cell showed."""

    path: str  # relative to the course root, e.g. lessons/01_x/01_x.ipynb
    notebook: dict
    cells: list[dict]
    probe: dict
    seconds: float
    cell_seconds: list[float] = field(default_factory=list)
    screenshot: Path | None = None
    problems: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: open, run, save, judge

    def where(self, index: int) -> str:
        cell = self.notebook["cells"][index]
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        return f"{self.path} cell {index}" + (f" ({grade_id})" if grade_id else "")


#: Runs in the page: ``promise``, or an error once ``ms`` have passed (a dialog left open would
#: otherwise keep a command waiting for ever).
WITHIN_JS = """
(promise, what, ms) => {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
"""


def _command(page, command: str, args: dict | None = None, seconds: float = OPEN_TIMEOUT) -> None:
    """Run one of Lab's commands in the page and wait for it to finish.

    Its result is not sent back: ``docmanager:open`` returns the notebook's widget, a huge object
    that Playwright would try to serialize.
    """
    page.evaluate(
        f"""async ([command, args, ms]) => {{
          const within = {WITHIN_JS};
          await within(window.jupyterapp.commands.execute(command, args), command, ms);
        }}""",
        [command, args or {}, seconds * 1000],
    )


def _wait_open(page, lab: LabServer, path: str, n_cells: int) -> None:
    """Open ``path`` in the page and wait for every cell and an idle kernel."""
    _command(page, "docmanager:open", {"path": path})
    try:
        page.wait_for_function(
            """n => {
              const panel = window.jupyterapp.shell.currentWidget;
              if (!panel || !panel.content || !panel.sessionContext) return false;
              const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
              return panel.content.widgets.length === n
                && panel.node.querySelectorAll('.jp-Cell').length === n
                && !!kernel && kernel.status === 'idle'
                && !!panel.node.querySelector(
                     ".jp-Notebook-ExecutionIndicator[data-status='idle']");
            }""",
            arg=n_cells,
            timeout=OPEN_TIMEOUT * 1000,
            polling=POLL_MS,
        )
    except Exception as exc:
        dialog = page.locator(".jp-Dialog").all_inner_texts()
        raise AssertionError(
            f"{path}: JupyterLab did not show {n_cells} cells with an idle kernel within "
            f"{OPEN_TIMEOUT} s" + (f"; a dialog asks: {dialog}" if dialog else "")
        ) from exc


def _probe_kernel(page) -> dict:
    """Ask the notebook's kernel (silently, no execution count) about its environment."""
    code = (
        "import json as _j, os as _o, sys as _s, matplotlib as _m\n"
        "print(_j.dumps({'COURSE_FAST': _o.environ.get('COURSE_FAST'), "
        "'prefix': _s.prefix, 'backend': _m.get_backend()}))"
    )
    text = run_in_kernel(page, code, "the kernel probe")
    try:
        return json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": text}


def _run_each_cell(page, path: str) -> list[float]:
    page.evaluate(RUN_EACH_CELL_JS)
    try:
        page.wait_for_function(
            "() => window.__courseRun.done", timeout=RUN_TIMEOUT * 1000, polling=POLL_MS
        )
    except Exception as exc:
        current = page.evaluate("() => window.__courseRun.current")
        raise AssertionError(
            f"{path}: cell {current} still running after {RUN_TIMEOUT} s in JupyterLab"
        ) from exc
    state = page.evaluate("() => window.__courseRun")
    if state["error"]:
        raise AssertionError(f"{path}: running the cells in JupyterLab failed: {state['error']}")
    return state["seconds"]


def _run_all_from_menu(page, path: str) -> None:
    """Run menu -> Run All Cells, as a student does; wait until no cell is queued or running."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    # Every code cell shows [*] (queued or running) or a number once Run All has started.
    try:
        page.wait_for_function(
            """() => {
              const panel = window.jupyterapp.shell.currentWidget;
              const kernel = panel.sessionContext.session.kernel;
              const prompts = Array.from(
                panel.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt'));
              const busy = prompts.some(p => p.textContent.includes('*'));
              const started = prompts.some(p => /\\d/.test(p.textContent));
              const now = started && !busy && kernel.status === 'idle';
              // Idle twice in a row, half a second apart: not a gap between two cells.
              const was = window.__courseIdleSince;
              if (!now) { window.__courseIdleSince = null; return false; }
              if (!was) { window.__courseIdleSince = performance.now(); return false; }
              return performance.now() - was > 500;
            }""",
            timeout=RUN_TIMEOUT * 1000,
            polling=POLL_MS,
        )
    except Exception as exc:
        raise AssertionError(
            f"{path}: Run All Cells did not finish within {RUN_TIMEOUT} s in JupyterLab"
        ) from exc


def _wait_images(page) -> None:
    """Give images a moment to load or fail (complete is true either way)."""
    # On timeout, each image still loading is reported as "did not load".
    with contextlib.suppress(Exception):
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.jp-NotebookPanel img'))"
            ".every(img => img.complete)",
            timeout=15_000,
            polling=POLL_MS,
        )


def _screenshot(page, name: str, full: bool) -> Path:
    """The notebook's first screen, or (``full``) the whole notebook in one tall picture."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    size = page.viewport_size
    measure = """() => {
      const scroller = window.jupyterapp.shell.currentWidget.node
        .querySelector('.jp-WindowedPanel-outer');
      if (!scroller) return [0, 0];
      scroller.scrollTop = 0;
      // The last cell's bottom, not scrollHeight: Lab pads the end by a window's height.
      const cells = scroller.querySelectorAll('.jp-Cell');
      const last = cells[cells.length - 1];
      const bottom = last ? last.getBoundingClientRect().bottom
        - scroller.getBoundingClientRect().top : 0;
      return [Math.ceil(bottom), scroller.clientHeight];
    }"""
    # Off-screen cells have an estimated height until shown: resize until the notebook fits.
    for _ in range(4 if full else 0):
        content, visible = page.evaluate(measure)
        current = page.viewport_size["height"]
        wanted = max(size["height"], min(current + content - visible + 20, SCREENSHOT_MAX_HEIGHT))
        if abs(wanted - current) < 40:
            break
        page.set_viewport_size({"width": size["width"], "height": wanted})
        page.wait_for_timeout(400)
    page.evaluate(measure)
    if not full:
        # One screen: show the training progress bar if there is one, else the first plot.
        page.evaluate(
            """() => {
              const cells = Array.from(
                window.jupyterapp.shell.currentWidget.node.querySelectorAll('.jp-Cell'));
              const pick = cells.find(c => c.querySelector('.widget-hprogress'))
                || cells.find(c => c.querySelector('.jp-OutputArea img'));
              if (pick) pick.scrollIntoView({block: 'start'});
            }"""
        )
        page.wait_for_timeout(300)
    page.screenshot(path=str(target))
    page.set_viewport_size(size)
    return target


def run_notebook(page, lab: LabServer, path: str, how: str, screenshot: str, judge=None):
    """Open ``path`` (relative to the course copy) in JupyterLab, run it, and judge it.

    ``how="each_cell"`` runs every cell in turn through Lab's "run cell" command, as a student
    pressing Shift+Enter down the notebook: a cell that raises does not stop the next one (Lab's
    Run All stops at the first error, and an unsolved lesson has several by design).
    ``how="run_all"`` clicks Run menu -> Run All Cells.

    ``judge(run)`` returns the problems found (see ``student_problems``); they are stored in
    ``run.problems``. The screenshot shows the whole notebook when there are problems (or with
    COURSE_BROWSER_FULL_SCREENSHOTS=1), otherwise the window: a full-height picture costs a few
    CPU-seconds of software rendering per notebook.
    """
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = round(time.perf_counter() - started - sum(phases.values()), 1)

    try:
        n_cells = len(lab.saved_notebook(path)["cells"])
        _wait_open(page, lab, path, n_cells)
        lap("open")
        probe = _probe_kernel(page)
        cell_seconds: list[float] = []
        if how == "each_cell":
            cell_seconds = _run_each_cell(page, path)
        elif how == "run_all":
            _run_all_from_menu(page, path)
        else:
            raise ValueError(f"how must be 'each_cell' or 'run_all', got {how!r}")
        lap("run")
        _command(page, "docmanager:save")
        _wait_images(page)
        cells = page.evaluate(CELL_STATE_JS)
        lap("save and read")
    except Exception:
        with contextlib.suppress(Exception):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{screenshot}-failed.png"))
        raise
    notebook = lab.saved_notebook(path)
    run = NotebookRun(path, notebook, cells, probe, time.perf_counter() - started, cell_seconds)
    run.problems = judge(run) if judge else []
    full = bool(run.problems) or os.environ.get("COURSE_BROWSER_FULL_SCREENSHOTS") == "1"
    run.screenshot = _screenshot(page, screenshot, full)
    lap("judge and screenshot")
    run.phases = phases
    return run


#: CSS animations and transitions off: nothing here depends on them, and on a 2-core machine
#: software-rendering them costs CPU the kernels need.
NO_ANIMATIONS_JS = """
document.addEventListener('DOMContentLoaded', () => {
  const style = document.createElement('style');
  style.textContent = '*, *::before, *::after { animation: none !important;'
    + ' transition: none !important; }';
  document.head.appendChild(style);
});
"""


# --- jobs, run by a few browser pages at once ------------------------------------------------


@dataclass
class Job:
    """One thing to do in a page: run a notebook (``how``) or read the formgrader."""

    name: str
    path: str | None = None
    how: str = "each_cell"  # or "run_all", or "formgrader"
    screenshot: str = ""
    judge: Callable[[NotebookRun], list[str]] | None = None


@dataclass
class Formgrader:
    url: str
    assignments: list[str]
    screenshot: Path


def open_lab(page, lab: LabServer) -> None:
    """Load JupyterLab in ``page`` with an empty workspace and wait until it has restored."""
    page.goto(lab.url("/lab?reset"))
    page.wait_for_function(
        "() => !!window.jupyterapp", timeout=OPEN_TIMEOUT * 1000, polling=POLL_MS
    )
    page.evaluate(
        f"""async ms => {{
          await ({WITHIN_JS})(window.jupyterapp.restored, 'JupyterLab', ms);
        }}""",
        OPEN_TIMEOUT * 1000,
    )


def _close_documents(page, lab: LabServer) -> None:
    """Stop the open notebooks' kernels and close them, so the next job starts clean."""
    page.evaluate(
        """() => {
          const app = window.jupyterapp;
          for (const widget of Array.from(app.shell.widgets('main'))) {
            if (widget.sessionContext) widget.sessionContext.shutdown().catch(() => {});
            widget.close();
          }
        }"""
    )
    try:
        page.wait_for_function(
            "() => !document.querySelector('.jp-NotebookPanel') "
            "&& !document.querySelector('.jp-Dialog')",
            timeout=10_000,
            polling=POLL_MS,
        )
    except Exception:
        open_lab(page, lab)  # a dialog (unsaved changes after a failure): start afresh


def read_formgrader(page, lab: LabServer, screenshot: str) -> Formgrader:
    """The formgrader's "Manage Assignments" table: the assignment names it lists."""
    page.goto(lab.url("/formgrader"))
    # The table first shows one "Loading, please wait..." row, then the assignments.
    page.wait_for_function(
        """() => { const rows = document.querySelectorAll('tbody#main-table tr');
                   return rows.length > 0 && !Array.from(rows).some(
                     r => /Loading, please wait/.test(r.textContent)); }""",
        timeout=OPEN_TIMEOUT * 1000,
        polling=POLL_MS,
    )
    names = page.eval_on_selector_all(
        "tbody#main-table tr", "rows => rows.map(r => (r.cells[0] || {}).textContent || '')"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{screenshot}.png"
    page.screenshot(path=str(target), full_page=True)
    return Formgrader(page.url, [n.strip() for n in names], target)


def _do(job: Job, page, lab: LabServer):
    if job.how == "formgrader":
        other = page.context.new_page()
        try:
            return read_formgrader(other, lab, job.screenshot)
        finally:
            other.close()
    if not (lab.course / job.path).is_file():
        raise AssertionError(f"{job.path} does not exist (lessons/ is made by `make release`)")
    try:
        return run_notebook(page, lab, job.path, job.how, job.screenshot, job.judge)
    finally:
        _close_documents(page, lab)


def _worker(lab: LabServer, jobs: queue.Queue, results: dict, timings: dict) -> None:
    from playwright.sync_api import sync_playwright  # one Playwright per thread (not thread-safe)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.add_init_script(NO_ANIMATIONS_JS)
            page = context.new_page()
            lab.wait_ready()
            open_lab(page, lab)
            while True:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                try:
                    results[job.name] = _do(job, page, lab)
                except Exception as exc:  # reported by the test that asked for this job
                    results[job.name] = exc
                timings[job.name] = round(time.perf_counter() - started, 1)
        finally:
            browser.close()


def run_jobs(lab: LabServer, jobs: list[Job], workers: int = 2) -> tuple[dict, dict]:
    """Run ``jobs`` in ``workers`` Chromium pages at once (each its own thread and browser).

    Returns ``(results, timings)``: per job name, a ``NotebookRun`` / ``Formgrader``, or the
    exception that stopped it; and the seconds it took. The two cores of a CI machine are kept
    busy by two notebooks at once: while one kernel computes, the other page loads or renders.
    """
    pending: queue.Queue = queue.Queue()
    for job in jobs:
        pending.put(job)
    results: dict = {}
    timings: dict = {}
    errors: list[BaseException] = []

    def guarded():
        try:
            _worker(lab, pending, results, timings)
        except Exception as exc:  # browser would not start: the jobs left are reported
            errors.append(exc)

    threads = [threading.Thread(target=guarded, daemon=True) for _ in range(max(1, workers))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + ALL_JOBS_TIMEOUT
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    for job in jobs:
        if job.name not in results:
            cause = errors[0] if errors else None
            why = f"the browser failed: {cause!r}" if cause else f"over {ALL_JOBS_TIMEOUT} s in all"
            results.setdefault(
                job.name, RuntimeError(f"{job.name}: not run or not finished, {why}")
            )
    return results, timings


# --- judging a run ----------------------------------------------------------------------------


def _source(cell: dict) -> str:
    return _text(cell.get("source", ""))


def _nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def _defined_names(source: str) -> set[str]:
    """Names a cell binds at top level: def, class, import, assignment and loop targets."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: no names
        return set()
    names: set[str] = set()
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
    scopes += (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, scopes):
            names.add(getattr(node, "name", ""))
            continue  # names inside a function or class body are not the notebook's
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        todo.extend(ast.iter_child_nodes(node))
    return names - {""}


def _errors(cell: dict) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _common_problems(run: NotebookRun, ran_ok: set[int]) -> list[str]:
    """Every image loads; every image output renders; widgets render; drawing cells draw."""
    problems = []
    if len(run.cells) != len(run.notebook["cells"]):
        problems.append(
            f"{run.path}: the page shows {len(run.cells)} cells, the file has "
            f"{len(run.notebook['cells'])}"
        )
        return problems
    for index, (cell, shown) in enumerate(zip(run.notebook["cells"], run.cells, strict=True)):
        where = run.where(index)
        for image in shown["images"]:
            if not image["complete"]:
                problems.append(f"{where}: image {image['src']!r} did not load")
            elif image["width"] == 0:
                problems.append(
                    f"{where}: broken image {image['src']!r} (the browser got no picture)"
                )
        if cell["cell_type"] != "code":
            continue
        outputs = cell.get("outputs", [])
        expected = sum(1 for o in outputs for mime in o.get("data", {}) if mime in IMAGE_MIMES)
        rendered = sum(1 for i in shown["images"] if i["output"] and i["width"]) + shown["svgs"]
        if rendered < expected:
            problems.append(
                f"{where}: {expected} image output(s) in the notebook, {rendered} shown in the page"
            )
        widgets = sum(1 for o in outputs if WIDGET_MIME in o.get("data", {}))
        for text in shown["widget_errors"]:
            problems.append(f"{where}: a widget did not render: {text.strip()[:200]!r}")
        if widgets and shown["widgets"] < widgets:
            problems.append(
                f"{where}: {widgets} widget output(s), {shown['widgets']} rendered in the page"
            )
        if index in ran_ok and PLOTTING.search(_source(cell)) and expected == 0:
            problems.append(f"{where}: the cell draws a plot or image but none appeared")
    return problems


def _probe_problems(run: NotebookRun) -> list[str]:
    probe = run.probe
    problems = []
    if probe.get("COURSE_FAST") != "1":
        problems.append(f"{run.path}: the kernel does not see COURSE_FAST=1 ({probe})")
    if probe.get("prefix") != sys.prefix:  # the tests run from the course's .venv
        problems.append(f"{run.path}: the kernel is not the course's .venv ({sys.prefix}): {probe}")
    if "inline" not in str(probe.get("backend", "")):
        problems.append(f"{run.path}: matplotlib backend is {probe.get('backend')!r}, not inline")
    return problems


def student_problems(run: NotebookRun, solution: dict) -> list[str]:
    """What is wrong with an unsolved lesson as a student sees it in JupyterLab.

    ``solution`` is the matching solutions/ notebook: its exercise cells say which names the
    student is yet to define. Allowed errors (and only those): ``NotImplementedError`` (the stub,
    or code calling it), a check reporting "not implemented yet", and a ``NameError`` for a name
    that an unsolved exercise, or an earlier cell that failed for that reason, would have defined.
    """
    problems = _probe_problems(run)
    cells = run.notebook["cells"]
    missing = set()  # names an unsolved exercise (or what depends on it) leaves undefined
    for cell in solution["cells"]:
        if _nbgrader(cell).get("solution"):
            missing |= _defined_names(_source(cell))
    ran_ok: set[int] = set()
    for index, cell in enumerate(cells):
        meta = _nbgrader(cell)
        where = run.where(index)
        if cell["cell_type"] == "code" and index < len(run.cells):
            shown = run.cells[index]
            exercise = meta.get("solution") or "YOUR CODE HERE" in _source(cell)
            if exercise and shown["readonly"]:
                problems.append(f"{where}: exercise cell is read-only in JupyterLab")
            if exercise and not shown["editor"]:
                problems.append(f"{where}: exercise cell has no editor in JupyterLab")
            if meta.get("locked") and not shown["readonly"]:
                kind = "test" if meta.get("grade") else "locked"
                problems.append(f"{where}: {kind} cell is editable in JupyterLab")
        if cell["cell_type"] != "code":
            continue
        if cell.get("execution_count") is None:
            if _source(cell).strip():  # Lab does not run an empty cell
                problems.append(f"{where}: the cell did not run")
            continue
        errors = _errors(cell)
        if not errors:
            ran_ok.add(index)
        for error in errors:
            text = f"{error.get('ename')}: {_text(error.get('evalue'))}"
            name = re.match(r"name '(\w+)' is not defined", _text(error.get("evalue")))
            if NOT_IMPLEMENTED.search(text) or (
                error.get("ename") == "NameError" and name and name.group(1) in missing
            ):
                missing |= _defined_names(_source(cell))
                continue
            problems.append(f"{where}: unexpected error {text[:300]}")
    return problems + _common_problems(run, ran_ok)


def solution_problems(run: NotebookRun) -> list[str]:
    """What is wrong with a reference solution run in JupyterLab (Run All, COURSE_FAST=1)."""
    problems = _probe_problems(run)
    ran_ok: set[int] = set()
    for index, cell in enumerate(run.notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        where = run.where(index)
        if cell.get("execution_count") is None:
            if _source(cell).strip():  # Lab does not run an empty cell
                problems.append(f"{where}: did not run (Run All stops at the first error)")
            continue
        errors = _errors(cell)
        for error in errors:
            text = f"{error.get('ename')}: {_text(error.get('evalue'))}"
            problems.append(f"{where}: error {text[:300]}")
        if not errors:
            ran_ok.add(index)
    problems += _common_problems(run, ran_ok)
    if _shows_progress_expected(run.notebook) and not _progress_shown(run):
        problems.append(
            f"{run.path}: the notebook trains (tqdm) but no progress bar appeared in the page"
        )
    return problems


def _shows_progress_expected(notebook: dict) -> bool:
    """A notebook that trains: it uses tqdm itself or calls a helper that shows a bar."""
    code = "\n".join(_source(c) for c in notebook["cells"] if c["cell_type"] == "code")
    return bool(re.search(r"\btqdm\b|progress\s*=\s*True", code)) or any(
        "training" in c.get("metadata", {}).get("tags", []) for c in notebook["cells"]
    )


def _progress_shown(run: NotebookRun) -> bool:
    if any(shown["progress"] for shown in run.cells):
        return True
    for cell in run.notebook["cells"]:
        for output in cell.get("outputs", []):
            text = _text(output.get("text"))
            if output.get("output_type") == "stream" and TQDM_TEXT.search(text):
                return True
    return False


def problem_report(problems: list[str]) -> str:
    return "\n".join(f"  - {p}" for p in problems)


# --- a notebook with deliberate mistakes: the checks must catch them --------------------------

BROKEN_IMAGE = "images/unrolled_rnn.png"


def doctored_notebook(lesson_notebook: dict) -> tuple[dict, int, int]:
    """A lesson's notebook, up to its first check cell, with two deliberate mistakes.

    * a markdown cell (inserted as cell 0) shows ``images/unrolled_rnn.png``, a path that only
      resolves from the repository root, never from the lesson's folder where Lab resolves it;
    * the first exercise cell is locked (``editable: false``, what nbgrader's release does to
      test cells), so a student could not type the answer.

    Returns the notebook, the index of the image cell and the index of the locked exercise.
    """
    notebook = json.loads(json.dumps(lesson_notebook))
    cells = notebook["cells"]
    exercise = next(i for i, cell in enumerate(cells) if _nbgrader(cell).get("solution"))
    del cells[exercise + 2 :]  # keep the exercise and its check cell
    cells[exercise]["metadata"].update(editable=False, deletable=False)
    image = {
        "cell_type": "markdown",
        "id": "doctored-broken-image",
        "metadata": {},
        "source": f"![the unrolled RNN]({BROKEN_IMAGE})",
    }
    cells.insert(0, image)
    return notebook, 0, exercise + 1
