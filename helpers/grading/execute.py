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
* before each test cell, silently re-imports the course's check functions from disk and rebinds
  the names the notebook's own set-up cells import (a notebook that redefines ``check_rnn_cell``
  or patches ``helpers.checks`` cannot replace the checks the test cell calls);
* drops a value displayed by a test cell (nbgrader reads it as partial credit): the course's
  checks never return one.
"""

from __future__ import annotations

import ast
import signal
from pathlib import Path

from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade, is_solution
from traitlets import Enum, Integer, Unicode

TRUNCATED = "[the grader truncated this cell's output: over {limit}]"


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


def setup_imports(notebook: Path) -> str:
    """The ``import``/``from`` statements of ``helpers.checks`` in a notebook's set-up cells.

    Set-up cells are the code cells that are neither exercises nor tests (the notebook's own
    code, which the grader trusts in the release version).
    """
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    lines = []
    for cell in nb.cells:
        if cell.cell_type != "code" or is_solution(cell) or is_grade(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n.startswith("helpers.checks") for n in names):
                lines.append(ast.unparse(node))
    return "\n".join(lines)


def restore_snippet(imports: str) -> str:
    """Code run silently before each test cell: fresh check modules, names rebound."""
    return (
        "import sys as _rnn_sys\n"
        "for _rnn_name in [m for m in list(_rnn_sys.modules) if m.startswith('helpers.checks')"
        " and m != 'helpers.checks._baseline']:\n"
        "    del _rnn_sys.modules[_rnn_name]\n"
        "import helpers.checks\n"
        f"{imports}\n"
        "del _rnn_sys, _rnn_name\n"
    )


class HardenedExecute(Execute):
    """nbgrader's Execute that scores what ran, whatever the kernel does (see module doc)."""

    max_output_bytes = Integer(
        2_000_000, help="Text and data a cell may output before the rest is dropped."
    ).tag(config=True)
    max_outputs = Integer(200, help="Outputs a cell may produce before the rest is dropped.").tag(
        config=True
    )
    probe_timeout = Integer(
        5, help="Seconds a kernel has to answer after a cell's time limit before it is stopped."
    ).tag(config=True)
    source_root = Unicode(
        "", help="Folder holding <assignment>/<notebook>.ipynb, the trusted set-up cells."
    ).tag(config=True)
    limits = Unicode("", help="The sandbox's limits, in words, for messages.").tag(config=True)
    # Once the last cell has run nothing in the kernel matters: killing it saves the second of
    # CPU a graceful shutdown spends (history, atexit handlers, torch's teardown) per notebook.
    shutdown_kernel = Enum(
        ["graceful", "immediate"],
        default_value="immediate",
        help="How the kernel is stopped after the last cell.",
    ).tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._stopped = None
        self._restore = ""
        info = (resources or {}).get("nbgrader", {})
        if self.source_root and info:
            source = Path(self.source_root) / info["assignment"] / f"{info['notebook']}.ipynb"
            if source.is_file():
                imports = setup_imports(source)
                self._restore = restore_snippet(imports) if imports else ""
        self._baseline_taken = False
        return super().preprocess(nb, resources, km)

    # -- output caps -------------------------------------------------------------------------

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(content.get("text", "") or "")
        for value in (content.get("data") or {}).values():
            size += len(value) if isinstance(value, str) else len(str(value))
        self._cell_bytes += size
        self._cell_outputs += 1
        over = self._cell_bytes > self.max_output_bytes or self._cell_outputs > self.max_outputs
        if not over:
            return super().output(outs, msg, display_id, cell_index)
        limit = f"{self.max_output_bytes // 1000} kB or {self.max_outputs} outputs"
        if not self._truncated:
            self._truncated = True
            outs.append(
                NotebookNode(
                    output_type="stream", name="stdout", text="\n" + TRUNCATED.format(limit=limit)
                )
            )
        is_stderr = msg["msg_type"] == "stream" and content.get("name") == "stderr"
        if is_stderr and not self._kept_stderr:
            self._kept_stderr = True
            outs.append(
                NotebookNode(
                    output_type="stream", name="stderr", text=content.get("text", "")[:2000]
                )
            )
        return None

    # -- the cell loop -------------------------------------------------------------------------

    async def _async_handle_timeout(self, timeout, cell=None):
        self._cell_timed_out = True  # the cell ran past its time limit (nbclient interrupts it)
        return await super()._async_handle_timeout(timeout, cell)

    def _silent(self, code: str) -> dict | None:
        """Run ``code`` in the kernel without recording anything; the reply, or None.

        The grader's own code (imports) gets at least two minutes, whatever the cells' limit.
        """
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False)

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
        if not self._baseline_taken:
            # Before any student code: the checks' record of genuine torch/numpy functions.
            self._baseline_taken = True
            self._silent("import helpers.checks._baseline")
        if grade and self._restore:
            reply = self._silent(self._restore)
            if reply is None or reply["content"].get("status") != "ok":
                what = (reply or {}).get("content", {}).get("evalue", "no reply")
                cell.outputs = [
                    error_output(
                        "GraderError",
                        "the course's checks could not be re-imported before this test "
                        f"(the notebook interfered with imports: {what})",
                    )
                ]
                return cell, resources
        self._cell_bytes = 0
        self._cell_timed_out = False
        self._cell_outputs = 0
        self._truncated = False
        self._kept_stderr = False
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
        if grade:
            values = [o for o in cell.outputs if o.output_type == "execute_result"]
            if values:
                cell.outputs = [o for o in cell.outputs if o.output_type != "execute_result"]
                self.log.warning("dropped a value displayed by test cell %s", index)
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
