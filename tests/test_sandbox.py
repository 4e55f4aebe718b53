"""The grading sandbox on its own (helpers/grading/sandbox.py): the allowlist it binds, the memory
of a whole kernel, the socket folder, interrupts. Kernels here are started the way nbgrader
starts them (jupyter_client with the sandbox's kernelspec), without nbgrader."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from helpers import course
from helpers.grading import sandbox, session

MODE, UID, _ = sandbox.choose_mode("auto")
needs_bwrap = pytest.mark.skipif(MODE != "bwrap", reason="needs the bubblewrap sandbox")


def _config(run_dir: str, **overrides) -> sandbox.SandboxConfig:
    readonly = [*sandbox.python_paths(), *map(str, session.kernel_folders(course.ROOT))]
    limits = sandbox.Limits(memory_mb=overrides.pop("memory_mb", 2048))
    return sandbox.SandboxConfig(
        mode=MODE,
        run_dir=run_dir,
        ipc_dir=os.path.join(run_dir, "ipc"),
        hide=[str(course.SOLUTIONS)],
        readonly=readonly,
        limits=limits,
        uid=UID,
        **overrides,
    )


def test_bwrap_command_binds_only_the_allowlist(tmp_path):
    work = tmp_path / "grading" / "staged" / "job0" / "s" / "l"
    work.mkdir(parents=True)
    (work / "l.ipynb").write_text("{}")
    cmd = sandbox.bwrap_command(_config(str(tmp_path)), str(work), str(tmp_path), ["true"], {})
    assert "/" not in [cmd[i + 1] for i, a in enumerate(cmd) if a in ("--bind", "--ro-bind")]
    binds = {cmd[i + 2] for i, a in enumerate(cmd) if a in ("--bind", "--ro-bind")}
    assert "--bind" not in cmd  # nothing of the host is writable
    root = str(course.ROOT)
    assert root not in binds and str(course.SOLUTIONS) not in binds
    assert not any(b.startswith(str(course.SOLUTIONS)) or "/.git" in b for b in binds)
    assert str(course.ROOT / "helpers") in binds
    assert not any(b.startswith(str(course.LESSONS)) for b in binds)  # the checkpoint is in helpers
    assert str(work / "l.ipynb") in binds
    tmpfs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--tmpfs"]
    assert sandbox.IPC_INSIDE in tmpfs and str(work) in tmpfs and "/tmp" in tmpfs
    at = cmd.index(sandbox.IPC_INSIDE) - 1
    assert cmd[at - 2 : at] == ["--size", str(sandbox.IPC_MB * sandbox.MB)]


def test_tree_memory_counts_forked_children_once():
    """The watchdog's measure: forked copies of one process's pages are not counted twice,
    the pages each child writes are."""
    before = sandbox._tree_mb(os.getpid())
    kids = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            block = b"\x01" * (150 * 2**20)
            os.write(w, b"x")
            time.sleep(30)
            os._exit(len(block) * 0)
        os.read(r, 1)
        kids.append(pid)
    try:
        grown = sandbox._tree_mb(os.getpid()) - before
        assert 280 <= grown <= 400, grown
    finally:
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


FORKS = """
import os, time
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        block = b"\\x01" * (400 * 2**20)
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
"""


class Kernel:
    """A sandboxed kernel started as nbgrader's executor starts it (``ipc`` transport)."""

    def __init__(self, **overrides):
        from jupyter_client import KernelManager

        self.run_dir = tempfile.mkdtemp(prefix="rnn-course-grading-test-")
        self.config = config = _config(self.run_dir, **overrides)
        sandbox.prepare_run_dir(config)
        uid = sandbox.spare_uids(1)[0] if UID is not None else None
        job = sandbox.prepare_job(config, 0, uid)
        self.job_dir = job.ipc_dir
        spec = sandbox.write_kernelspec(job, "sandbox-test")
        work = Path(self.run_dir) / "course" / "grading" / "staged" / "job0" / "s" / "l"
        work.mkdir(parents=True)
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = str(spec)
        try:
            self.km = KernelManager(
                kernel_name="sandbox-test", transport="ipc", ip=os.path.join(job.ipc_dir, "kernel")
            )
            self.km.start_kernel(cwd=str(work))
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH")
            else:
                os.environ["JUPYTER_PATH"] = old
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 60) -> dict:
        msg_id = self.kc.execute(code, stop_on_error=False)
        deadline = time.monotonic() + timeout
        outputs = []
        while time.monotonic() < deadline:
            if not self.km.is_alive():
                return {"status": "dead", "outputs": outputs}
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except Exception:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            outputs.append(msg["content"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                reply = self.kc.get_shell_msg(timeout=10)
                return {"status": reply["content"]["status"], "outputs": outputs, **reply}
        return {"status": "timeout", "outputs": outputs}

    def returncode(self) -> int | None:
        return self.km.provisioner.process.wait(timeout=10)

    def close(self) -> None:
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=True)
        import shutil

        sandbox.remove_cgroups(self.config)
        shutil.rmtree(self.run_dir, ignore_errors=True)


@needs_bwrap
@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup-if-possible", "watchdog"])
def test_whole_kernel_memory_is_capped(cgroup):
    """Four forked processes of 400 MB each (each far under its address-space limit) under a
    1500 MB limit: the whole kernel is stopped, with the status of a SIGKILL."""
    kernel = Kernel(memory_mb=1500, cgroup=cgroup)
    try:
        assert kernel.run("x = 1")["status"] == "ok"
        result = kernel.run(FORKS, timeout=60)
        assert result["status"] == "dead", result
        assert kernel.returncode() == 128 + signal.SIGKILL
    finally:
        kernel.close()


@needs_bwrap
def test_interrupt_and_socket_folder():
    """SIGINT to the process group interrupts the cell and the kernel lives on; its socket
    folder is its own 1 MB tmpfs, and the grader's job folder holds only links."""
    kernel = Kernel()
    try:
        # stop_on_error=False: after the KeyboardInterrupt, the kernel must not abort the probe sent
        # next (ipykernel aborts requests that arrive while it clears its queue after an error).
        kernel.kc.execute("import time\nwhile True:\n    time.sleep(0.1)", stop_on_error=False)
        time.sleep(2)
        kernel.km.interrupt_kernel()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = kernel.kc.get_shell_msg(timeout=30)
            if msg["msg_type"] == "execute_reply":
                break
        assert msg["content"]["status"] == "error"
        assert msg["content"]["ename"] == "KeyboardInterrupt"
        probe = (
            "import os, json\n"
            "from ipykernel.connect import get_connection_file\n"
            "info = json.load(open(get_connection_file()))\n"
            "d = os.path.dirname(info['ip'])\n"
            "st = os.statvfs(d)\n"
            "print('IPC', d, st.f_blocks * st.f_frsize)"
        )
        result = kernel.run(probe)
        text = "".join(o.get("text", "") for o in result["outputs"])
        assert f"IPC {sandbox.IPC_INSIDE} {sandbox.IPC_MB * sandbox.MB}" in text, result
        entries = list(os.scandir(kernel.job_dir))
        assert entries and all(e.is_symlink() for e in entries), entries
    finally:
        kernel.close()
