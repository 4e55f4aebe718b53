"""nbgrader's ``Execute`` preprocessor, hardened for hostile and broken submissions.

``python -m helpers.grading autograde`` puts :class:`HardenedExecute` in place of nbgrader's
``Execute`` (command-line config, so ``nbgrader`` itself is unchanged). On top of nbgrader's own
behaviour it:

* survives a kernel that dies (``os._exit``, a crash, a resource limit): the cell that was running
  and every later code cell get an error output that says why, so they score 0 and the cells that
  completed keep their points, instead of the whole notebook scoring "None";
* stops a kernel that ignores the interrupt sent at a cell's time limit (a loop that catches
  ``KeyboardInterrupt``), instead of timing out every later cell one after the other;
* caps what a cell may print or display (an endless print loop, a flood of plots), keeping a
  trace of stderr so that the cap can never turn a failing test cell into a passing one;
* never runs a test cell in the student's kernel: the grader judges it in this process
  (:mod:`helpers.grading.verdict`), calling the learner's functions through a narrow channel to
  an agent in the kernel (:mod:`helpers.checks.remote`), and writes the verdict into the cell's
  outputs (the check's report line, or an error with its message). No tag, hook, import trick,
  patched library or printed text in the kernel can change it; nor can a value a test cell
  would have displayed (nbgrader reads one as partial credit);
* gives the judge of one test cell the cell's time limit: past it the kernel is interrupted, and
  stopped when it does not answer.
"""

from __future__ import annotations

import ast
import contextlib
import signal
import time

from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade, is_solution
from traitlets import Enum, Integer, Unicode

from helpers.grading.settings import NOTEBOOK_TIMEOUT, Settings

_DEFAULTS = Settings()  # the grader's settings declare the caps (helpers.grading.settings)

TRUNCATED = "[the grader truncated this cell's output: over {limit}]"
KEPT_ERROR = 2000  # characters of an error's value (and of its traceback) kept past the caps


class NotebookTimeout(Exception):
    """The notebook ran past its wall-clock limit (raised inside nbclient's cell loop)."""


def content_size(value, limit: int) -> int:
    """The bytes ``value`` (a message's content, parsed JSON) takes in a notebook file, counted
    up to just past ``limit``: every string, key and number, at any depth (iteratively: a
    deeply nested value cannot exhaust Python's stack)."""
    from json.encoder import encode_basestring

    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(encode_basestring(item).encode("utf-8", "surrogatepass"))
        elif isinstance(item, dict):
            for key, inner in item.items():
                total += len(str(key)) + 4
                stack.append(inner)
        elif isinstance(item, (list, tuple)):
            total += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, (bytes, bytearray)):
            total += 2 * len(item)
        else:
            total += 8
    return total


def _clip(value, limit: int) -> str:
    text = value if isinstance(value, str) else str(type(value).__name__)
    return text if len(text) <= limit else text[:limit] + " [...]"


def bounded_error(content: dict) -> dict:
    """An error's ename, evalue and traceback, cut to a few kB (the end of the traceback kept:
    it names the exception)."""
    lines = content.get("traceback")
    lines = [x for x in lines[-200:] if isinstance(x, str)] if isinstance(lines, list) else []
    tail = "\n".join(lines)
    if len(tail) > KEPT_ERROR:
        tail = "[...] " + tail[-KEPT_ERROR:]
    ename = _clip(content.get("ename"), 200) or "Error"
    evalue = _clip(content.get("evalue"), KEPT_ERROR)
    return {**content, "ename": ename, "evalue": evalue, "traceback": [tail] if tail else []}


def error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(
        output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]
    )


def death_reason(returncode: int | None, limits: str = "") -> str:
    """Words for how a kernel process ended, from its exit status.

    bwrap reports a child killed by signal N as 128 + N; a plain kernel process as -N.
    """
    if returncode is None:
        return "the kernel stopped responding"
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else None
    if number is None:
        return (
            f"the kernel exited with status {returncode} (os._exit, exit() or a crash in "
            "native code)"
        )
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    meaning = {
        "SIGKILL": "killed: out of memory, or stopped by the grader",
        "SIGXCPU": "the CPU time limit was reached",
        "SIGXFSZ": "the file size limit was reached",
        "SIGSEGV": "crashed with a segmentation fault (for example unbounded recursion)",
        "SIGABRT": "aborted (a failed allocation or assertion in native code)",
        "SIGBUS": "crashed with a bus error",
    }.get(name, "killed by a signal")
    suffix = f"; limits: {limits}" if limits else ""
    return f"the kernel died ({name}: {meaning}){suffix}"


class HardenedExecute(Execute):
    """nbgrader's Execute that scores what ran, whatever the kernel does (see module doc)."""

    max_output_bytes = Integer(
        _DEFAULTS.max_output_kb * 1000,
        help="Bytes a cell may add to the notebook (text, data, metadata, tracebacks, display "
        "updates, widget messages) before the rest is dropped.",
    ).tag(config=True)
    max_notebook_output_bytes = Integer(
        _DEFAULTS.max_notebook_output_kb * 1000,
        help="Bytes all the cells of a notebook may add together before the rest is dropped.",
    ).tag(config=True)
    notebook_timeout = Integer(
        NOTEBOOK_TIMEOUT,
        help="Wall-clock seconds for the whole notebook (0: none); past it the running cell's "
        "kernel is stopped and every later cell gets an error that says why.",
    ).tag(config=True)
    max_outputs = Integer(
        _DEFAULTS.max_outputs, help="Outputs a cell may produce before the rest is dropped."
    ).tag(config=True)
    probe_timeout = Integer(
        5, help="Seconds a kernel has to answer after a cell's time limit before it is stopped."
    ).tag(config=True)
    limits = Unicode("", help="The sandbox's limits, in words, for messages.").tag(config=True)
    # After a cell's reply, nbclient waits this long for the rest of its output and the kernel's
    # idle status, and nbgrader stops the kernel when they do not come. nbclient's 4 s is too
    # short on a loaded machine (several kernels a core): honest notebooks were stopped mid-way.
    iopub_timeout = Integer(
        30, help="Seconds to wait for a cell's last output after its reply."
    ).tag(config=True)
    # Once the last cell has run nothing in the kernel matters: killing it saves the second of
    # CPU a graceful shutdown spends (history, atexit handlers, torch's teardown) per notebook.
    shutdown_kernel = Enum(
        ["graceful", "immediate"],
        default_value="immediate",
        help="How the kernel is stopped after the last cell.",
    ).tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._stopped = None
        self._notebook_bytes = 0
        self._deadline = time.monotonic() + self.notebook_timeout if self.notebook_timeout else None
        self._lesson = (resources or {}).get("nbgrader", {}).get("assignment")
        self._agent_ready = False
        return super().preprocess(nb, resources, km)

    # -- output caps -------------------------------------------------------------------------

    # Everything a cell adds to the notebook passes through output(), _update_display_id(),
    # handle_comm_msg() (widgets) or on_cell_executed() (the reply's error): each counts it
    # against the cell's and the notebook's caps before it is kept.

    def _fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit this cell's and the notebook's caps (then counted)."""
        if (
            self._truncated
            or self._cell_bytes + size > self.max_output_bytes
            or self._notebook_bytes + size > self.max_notebook_output_bytes
        ):
            return False
        self._cell_bytes += size
        self._notebook_bytes += size
        return True

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content") or {}
        size = content_size(content, self.max_output_bytes)
        self._cell_outputs += 1
        if self._cell_outputs <= self.max_outputs and self._fits(size):
            return super().output(outs, msg, display_id, cell_index)
        if not self._truncated:
            self._truncated = True
            limit = (
                f"{self.max_output_bytes // 1000} kB or {self.max_outputs} outputs a cell, "
                f"{self.max_notebook_output_bytes // 1000} kB a notebook"
            )
            outs.append(
                NotebookNode(
                    output_type="stream", name="stdout", text="\n" + TRUNCATED.format(limit=limit)
                )
            )
        # what makes a cell fail is kept, cut short: an error (or stderr) stays one
        if msg["msg_type"] == "error" and not self._kept_error:
            self._kept_error = True
            kept = bounded_error(content)
            kept["traceback"] = [*kept["traceback"], TRUNCATED.format(limit="the output caps")]
            outs.append(error_output(kept["ename"], kept["evalue"]))
            outs[-1].traceback = kept["traceback"]
        is_stderr = msg["msg_type"] == "stream" and content.get("name") == "stderr"
        if is_stderr and not self._kept_stderr:
            self._kept_stderr = True
            text = content.get("text")
            text = text[:KEPT_ERROR] if isinstance(text, str) else "(output to stderr)"
            outs.append(NotebookNode(output_type="stream", name="stderr", text=text))
        return None

    def clear_output(self, outs, msg, cell_index):
        """Past the caps a cell cannot clear its outputs: the note and a kept error stay."""
        if self._truncated:
            return None
        return super().clear_output(outs, msg, cell_index)

    def _update_display_id(self, display_id, msg):
        """An update replaces the outputs shown under ``display_id`` (in this cell and earlier
        ones): it costs its size once for every output it replaces."""
        shown = sum(len(v) for v in self._display_id_map.get(display_id, {}).values())
        size = content_size(msg.get("content") or {}, self.max_output_bytes)
        if shown and not self._fits(size * shown):
            self.log.warning("dropped a display update over the output caps")
            return None
        return super()._update_display_id(display_id, msg)

    def handle_comm_msg(self, outs, msg, cell_index):
        """Widget messages (their state is kept with the notebook) count against the caps."""
        if not self._fits(content_size(msg.get("content") or {}, self.max_output_bytes)):
            return None
        return super().handle_comm_msg(outs, msg, cell_index)

    def on_cell_executed(self, **kwargs):
        """nbgrader adds the reply's error when no error output has its name: cut it short."""
        reply = kwargs.get("execute_reply") or {}
        content = reply.get("content") or {}
        if content.get("status") == "error":
            kwargs["execute_reply"] = {**reply, "content": bounded_error(content)}
        return super().on_cell_executed(**kwargs)

    # -- the cell loop -------------------------------------------------------------------------

    async def _async_handle_timeout(self, timeout, cell=None):
        if self._deadline_bound:  # the notebook's time is up, not the cell's
            raise NotebookTimeout()
        self._cell_timed_out = True  # the cell ran past its time limit (nbclient interrupts it)
        return await super()._async_handle_timeout(timeout, cell)

    # -- the notebook's wall-clock limit ------------------------------------------------------

    _deadline: float | None = None
    _deadline_bound = False
    _stop_reason: str | None = None
    # the output caps' state (reset for each cell run in the kernel, _notebook_bytes for each
    # notebook)
    _cell_bytes = _notebook_bytes = _cell_outputs = 0
    _truncated = _kept_stderr = _kept_error = False

    @property
    def _stopped(self) -> str | None:
        """Why the remaining cells are not run (None: they are): set when the kernel died or was
        stopped, and once the notebook is past its wall-clock limit."""
        if self._stop_reason is None and self._deadline and time.monotonic() > self._deadline:
            self._stop_reason = f"not run: {self._notebook_reason()}"
        return self._stop_reason

    @_stopped.setter
    def _stopped(self, reason: str | None) -> None:
        self._stop_reason = reason

    def _notebook_reason(self) -> str:
        return (
            f"the notebook ran past its {self.notebook_timeout} s wall-clock limit (all its "
            "cells together), so the grader stopped it"
        )

    def _get_timeout(self, cell):
        """A cell's time limit, cut to what is left of the notebook's."""
        timeout = super()._get_timeout(cell)
        self._deadline_bound = False
        if cell is None or not self._deadline:
            return timeout
        left = max(1, int(self._deadline - time.monotonic() + 0.999))
        if timeout is None or left < timeout:
            self._deadline_bound = True
            return left
        return timeout

    def execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        """nbclient's execute_cell, stopped at the notebook's wall-clock limit, and never failing
        the whole notebook on a message the grader cannot read."""
        try:
            return run_sync(self.async_execute_cell)(
                cell, cell_index, execution_count=execution_count, store_history=store_history
            )
        except NotebookTimeout:
            reason = self._notebook_reason()
            ename = "NotebookTimeoutError"
        except (DeadKernelError, CellTimeoutError):
            raise
        except Exception as exc:  # a garbled or deeply nested message from the kernel
            reason = (
                f"the grader could not read this cell's output ({type(exc).__name__}), so it "
                "stopped the kernel"
            )
            ename = "GraderError"
        self._stop_kernel()
        cell.outputs.append(error_output(ename, reason))
        self._stopped = f"not run: {reason} in an earlier cell"
        return cell

    def _silent(self, code: str) -> dict | None:
        """Run ``code`` in the kernel without recording anything; the reply, or None.

        The grader's own code (imports) gets at least two minutes, whatever the cells' limit.
        """
        msg_id = self.kc.execute(
            code, silent=True, store_history=False, allow_stdin=False, stop_on_error=False
        )

        async def wait():
            while True:
                msg = await self.kc.shell_channel.get_msg(timeout=max(self.timeout or 0, 120))
                if msg["parent_header"].get("msg_id") == msg_id:
                    return msg

        try:
            return run_sync(wait)()
        except Exception:
            return None

    def _responsive(self) -> bool:
        msg_id = self.kc.kernel_info()

        async def wait():
            while True:
                msg = await self.kc.shell_channel.get_msg(timeout=self.probe_timeout)
                if msg["parent_header"].get("msg_id") == msg_id:
                    return True

        try:
            return run_sync(wait)()
        except Exception:
            return False

    def _returncode(self) -> int | None:
        provisioner = getattr(self.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        if process is None:
            return None
        try:
            return process.wait(timeout=5)
        except Exception:
            return process.poll()

    def _stop_kernel(self) -> None:
        try:
            run_sync(self.km.shutdown_kernel)(now=True)
        except Exception as exc:  # already gone
            self.log.warning("stopping the kernel: %s", exc)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return cell, resources
        if self._stopped:
            cell.outputs = [error_output("NotRun", self._stopped)]
            return cell, resources
        grade = is_grade(cell)
        if grade and not is_solution(cell):
            # A test cell: judged in this process, never run in the student's kernel.
            return self._judge(cell, index), resources
        self._cell_bytes = 0
        self._cell_timed_out = False
        self._cell_outputs = 0
        self._truncated = False
        self._kept_stderr = False
        self._kept_error = False
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            reason = death_reason(self._returncode(), self.limits)
            cell.outputs.append(error_output("DeadKernelError", reason))
            self._stopped = f"not run: {reason} in an earlier cell"
            return cell, resources
        except CellTimeoutError:
            # no idle status after the reply, or after the interrupt: the kernel is stuck
            self._timed_out(cell, iopub=not self._cell_timed_out)
            return cell, resources
        timed_out = any(o.get("ename") == "CellTimeoutError" for o in cell.outputs)
        if timed_out and not self._responsive():
            self._timed_out(cell)
        return cell, resources

    def _timed_out(self, cell, iopub: bool = False) -> None:
        self._stop_kernel()
        reason = (
            f"the cell ran past the {self.timeout} s time limit and did not stop when "
            "interrupted, so the grader stopped the kernel"
        )
        if iopub:
            reason = "the kernel stopped answering after this cell, so the grader stopped it"
        if not any(o.get("ename") == "CellTimeoutError" for o in cell.outputs):
            cell.outputs.append(error_output("CellTimeoutError", reason))
        else:
            cell.outputs.append(error_output("KernelStopped", reason))
        self._stopped = f"not run: {reason} in an earlier cell"

    # -- test cells: the verdict is the grader's ------------------------------------------------

    AGENT = "_rnn_course_agent"

    def _judge(self, cell, index: int):
        """Give test cell ``cell`` the outputs of the grader's own verdict (see verdict.py)."""
        from helpers.grading import verdict

        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        deadline = time.monotonic() + (self.timeout or 600)
        self._judge_limit = f"{self.timeout or 600} s time limit"
        if self._deadline and self._deadline < deadline:  # the notebook's own limit comes first
            deadline = self._deadline
            self._judge_limit = f"notebook's {self.notebook_timeout} s wall-clock limit"

        def send(request: str) -> str:
            return self._send(request, deadline)

        try:
            outcome = verdict.judge(self._lesson, grade_id, send)
        except verdict.KernelLost as lost:
            cell.outputs = [error_output(lost.ename, lost.reason)]
            self._stopped = f"not run: {lost.reason} in an earlier cell"
            return cell
        outputs = []
        if outcome.stdout:
            outputs.append(NotebookNode(output_type="stream", name="stdout", text=outcome.stdout))
        if outcome.ename:
            outputs.append(error_output(outcome.ename, outcome.evalue))
        cell.outputs = outputs
        cell.execution_count = None
        return cell

    def _send(self, request: str, deadline: float) -> str:
        """One request to the kernel's agent (created on first use); its answer (JSON text)."""
        from helpers.checks.remote import ChannelError

        if not self._agent_ready:
            code = (
                "import helpers.checks.remote as _rnn_course_remote\n"
                f"{self.AGENT} = _rnn_course_remote.Agent(globals())\n"
                "del _rnn_course_remote\n"
            )
            content = self._ask(code, {}, deadline)
            if content.get("status") != "ok":
                raise ChannelError(
                    f"the grader's agent could not start: {content.get('ename')}: "
                    f"{str(content.get('evalue'))[:200]}"
                )
            self._agent_ready = True
        content = self._ask(
            f"{self.AGENT}.serve({request!r})", {"answer": f"{self.AGENT}.reply"}, deadline
        )
        if content.get("status") != "ok":
            raise ChannelError(
                f"the request raised {content.get('ename')}: {str(content.get('evalue'))[:200]}"
            )
        answer = (content.get("user_expressions") or {}).get("answer") or {}
        text = (answer.get("data") or {}).get("text/plain")
        if answer.get("status") != "ok" or type(text) is not str:
            raise ChannelError("no answer from the grader's agent")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise ChannelError("the answer is not a string") from None
        if type(value) is not str:
            raise ChannelError("the answer is not a string")
        return value

    def _ask(self, code: str, expressions: dict, deadline: float) -> dict:
        """Run ``code`` silently in the kernel; the content of its reply.

        Raises KernelLost when the kernel dies, or when it runs past ``deadline`` and does not
        stop when interrupted; ChannelError when it runs past the deadline and is interrupted.
        """
        from helpers.grading.verdict import CheckTimeout, KernelLost

        msg_id = self.kc.execute(
            code,
            silent=True,
            store_history=False,
            allow_stdin=False,
            user_expressions=expressions,
            # An error here must not make the kernel abort the grader's next request.
            stop_on_error=False,
        )

        async def wait(until: float):
            while True:
                left = until - time.monotonic()
                if left <= 0:
                    return None
                try:
                    msg = await self.kc.shell_channel.get_msg(timeout=min(1.0, left))
                except Exception:  # queue.Empty: nothing yet
                    if not await ensure_async(self.km.is_alive()):
                        return "dead"
                    continue
                if msg["parent_header"].get("msg_id") == msg_id:
                    return msg

        msg = run_sync(wait)(deadline)
        if msg is None:  # past the time limit: interrupt, then give it a few seconds
            with contextlib.suppress(Exception):
                run_sync(self.km.interrupt_kernel)()
            msg = run_sync(wait)(time.monotonic() + self.probe_timeout)
            if isinstance(msg, dict):
                raise CheckTimeout(
                    f"the check ran past the {self._judge_limit} (your code was interrupted)"
                )
            if msg is None:
                self._stop_kernel()
                raise KernelLost(
                    f"the check ran past the {self._judge_limit} and the kernel did not stop "
                    "when interrupted, so the grader stopped it",
                    "CellTimeoutError",
                )
        if msg == "dead":
            raise KernelLost(death_reason(self._returncode(), self.limits), "DeadKernelError")
        return msg["content"]
