"""Run a student's notebook kernel inside a sandbox while the course autogrades it.

``python -m helpers.grading autograde`` points nbgrader at a kernelspec whose command is this file
(run as a script, so it needs nothing but the standard library). The launcher applies resource
limits, then starts ipykernel inside bubblewrap (``bwrap``) so that the student's code

* sees the course read-only, with the gradebook, the other students' work (everything under
  ``grading/``), ``solutions/``, the git history and ``$HOME`` hidden;
* can write only its own graded copy (the kernel's working folder) and a private ``/tmp``;
* has no network, its own process and IPC namespaces, and dies with the grader;
* is bounded in memory (address space), CPU time, file size and number of processes, and runs as
  an unprivileged user when the grader is root (``RLIMIT_NPROC`` does not apply to root).

Without bubblewrap or user namespaces (some containers) the grader falls back to the resource
limits alone and says so loudly (``mode = "rlimits"``). The sandbox is switched on only by the
``RNN_COURSE_SANDBOX`` variable that the grader's kernelspec sets: a student's own kernel, and
``make check``, never go through it.

Traps this file avoids (see the course's NBGRADER_NOTES): TCP between network namespaces does not
work, so the grader uses ``ipc`` transport with an absolute socket prefix; ipykernel exits at once
in a new PID namespace unless ``JPY_PARENT_PID`` is unset; jupyter_client interrupts by sending
SIGINT to the whole process group, so the launcher ignores SIGINT before ``exec`` (ipykernel
installs its own handler); folders bwrap creates as root are 0700 unless ``--perms 0755``.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ENV_VAR = "RNN_COURSE_SANDBOX"
KERNEL_NAME = "rnn-course-sandbox"
NOBODY = 65534
MB = 1024 * 1024

# Variables the student's kernel may see; everything else of the grader's environment (tokens,
# NBGRADER_EXECUTION, JPY_PARENT_PID, ...) is dropped so that grading behaves like a normal run.
# MPLBACKEND is not kept: like a student's own Jupyter, the kernel draws with the inline backend.
KEEP_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "OMP_NUM_THREADS", "PYTHONHASHSEED")
KEEP_PREFIXES = ("LC_", "COURSE_")


@dataclass
class Limits:
    """Resource limits for one kernel (the whole notebook run)."""

    memory_mb: int = 4096  # RLIMIT_AS: address space; torch's import alone maps ~0.7 GB
    cpu_s: int = 600  # RLIMIT_CPU: CPU seconds for the whole kernel (SIGXCPU after)
    file_mb: int = 256  # RLIMIT_FSIZE: largest file the kernel may write
    processes: int = 256  # RLIMIT_NPROC: processes/threads on top of those the user already has
    open_files: int = 1024  # RLIMIT_NOFILE
    tmp_mb: int = 256  # size of the private /tmp and working folder (tmpfs: memory)

    def describe(self) -> str:
        return (
            f"memory {self.memory_mb} MB, CPU {self.cpu_s} s, files {self.file_mb} MB, "
            f"{self.processes} extra processes, no network"
        )


@dataclass
class SandboxConfig:
    """What the launcher needs, passed from the grader through the kernelspec's environment."""

    mode: str  # "bwrap" | "rlimits" | "off"
    run_dir: str  # grader-private folder: ipc sockets, per-kernel homes, matplotlib cache
    ipc_dir: str
    hide: list[str] = field(default_factory=list)  # folders the student must not see
    readonly: list[str] = field(default_factory=list)  # folders the kernel needs to read
    limits: Limits = field(default_factory=Limits)
    uid: int | None = None  # run the kernel as this user (root graders drop to nobody)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> SandboxConfig:
        data = json.loads(text)
        data["limits"] = Limits(**data.get("limits", {}))
        return cls(**data)


# ----------------------------------------------------------------------------------------------
# Grader side: decide the mode, write the kernelspec.


def python_paths() -> list[str]:
    """Folders the kernel's interpreter needs: the venv and the Python installation behind it."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    return sorted({os.path.realpath(p) for p in paths})


def _bwrap_works(unprivileged: bool) -> tuple[bool, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    cmd = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent"]
    if unprivileged:
        cmd.append("--unshare-user")
    cmd.append("true")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap could not run: {exc}"
    if result.returncode != 0:
        return False, f"bwrap cannot create namespaces here: {result.stderr.strip()}"
    return True, ""


def _readable_by_others(path: str, parents: bool) -> bool:
    """Whether an unprivileged user can read ``path`` (and, with ``parents``, reach it)."""
    current = Path(path)
    try:
        if (current.stat().st_mode & 0o005) != 0o005:
            return False
        # bwrap re-creates untraversable parents (see bwrap_command); without it they matter
        return not parents or all(p.stat().st_mode & 0o001 for p in current.parents)
    except OSError:
        return False


def choose_mode(requested: str = "auto") -> tuple[str, int | None, list[str]]:
    """(mode, uid to run kernels as, warnings) for ``requested`` in auto|bwrap|rlimits|off.

    ``auto`` uses bubblewrap when it works and falls back to resource limits alone otherwise;
    ``bwrap`` refuses to fall back (SystemExit with the reason).
    """
    warnings: list[str] = []
    if requested not in ("auto", "bwrap", "rlimits", "off"):
        raise ValueError(f"sandbox mode must be auto, bwrap, rlimits or off, got {requested!r}")
    root = os.geteuid() == 0
    uid = None
    bwrap_ok, why = (False, "") if requested in ("rlimits", "off") else _bwrap_works(not root)
    if root and requested != "off":
        if shutil.which("setpriv") is None:
            warnings.append(
                "setpriv (util-linux) is missing: kernels run as root, so the process limit "
                "is not enforced"
            )
        else:
            blocked = [p for p in python_paths() if not _readable_by_others(p, not bwrap_ok)]
            if blocked:
                warnings.append(
                    f"kernels run as root (the process limit is not enforced): {blocked[0]} "
                    "cannot be read by an unprivileged user"
                )
            else:
                uid = NOBODY
    exposed = (
        "student code can read and write everything the grader can (gradebook, solutions, "
        "other submissions)"
    )
    if requested == "off":
        warnings.append(f"SANDBOX OFF and no resource limits: {exposed}")
        return requested, uid, warnings
    if requested == "rlimits":
        warnings.append(f"NO FILE ISOLATION (resource limits only, as requested): {exposed}")
        return requested, uid, warnings
    if bwrap_ok:
        return "bwrap", uid, warnings
    if requested == "bwrap":
        raise SystemExit(f"sandbox required but unavailable: {why}")
    warnings.append(f"NO FILE ISOLATION: {why}. Falling back to resource limits only: {exposed}.")
    return "rlimits", uid, warnings


def write_kernelspec(config: SandboxConfig, name: str = KERNEL_NAME) -> Path:
    """Write a sandbox kernelspec under ``config.run_dir``; return the JUPYTER_PATH entry."""
    data_dir = Path(config.run_dir) / "jupyter"
    spec_dir = data_dir / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, os.path.abspath(__file__), "-f", "{connection_file}"],
        "display_name": "Python 3 (course grading sandbox)",
        "language": "python",
        "interrupt_mode": "signal",
        "env": {ENV_VAR: config.to_env()},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return data_dir


def _busy_uids() -> set[int]:
    """User ids that own a running process."""
    busy = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                busy.add(entry.stat().st_uid)
            except OSError:
                continue
    return busy


#: Lock files of the kernel user ids this grading process has claimed (held until it exits).
_CLAIMED: list[int] = []


def _claim(uid: int) -> bool:
    """Claim ``uid`` for this process's kernels, unless another grading run holds it.

    Two grading runs started at the same moment would otherwise pick the same idle user id.
    """
    path = os.path.join(tempfile.gettempdir(), f"rnn-course-kernel-uid-{uid}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMED.append(fd)
    return True


def spare_uids(count: int) -> list[int]:
    """``count`` user ids for kernels: nobody (or an unused id just below it), then more.

    Kernels graded at the same time need distinct users: RLIMIT_NPROC counts every process of a
    user, so one student's fork bomb would otherwise starve a kernel running beside it (in this
    run, or in another grading run on the same machine).
    """
    import pwd

    busy = _busy_uids()
    uids: list[int] = []
    candidate = NOBODY
    while len(uids) < count:
        try:
            taken = candidate != NOBODY and pwd.getpwuid(candidate) is not None
        except KeyError:
            taken = False
        if not taken and candidate not in busy and _claim(candidate):
            uids.append(candidate)
        candidate -= 1
    return uids


def prepare_run_dir(config: SandboxConfig) -> None:
    """Create the socket folder (writable by the kernel's user) and a matplotlib font cache."""
    ipc = Path(config.ipc_dir)
    ipc.mkdir(parents=True, exist_ok=True)
    template = Path(config.run_dir) / "mpl-template"
    template.mkdir(exist_ok=True)
    # Build matplotlib's font cache once, so that each kernel copies it instead of rebuilding it
    # (and instead of warning on stderr that its cache folder is not writable).
    env = dict(os.environ, MPLCONFIGDIR=str(template), MPLBACKEND="Agg")
    subprocess.run(
        [sys.executable, "-c", "import matplotlib.font_manager"],
        env=env,
        capture_output=True,
        check=False,
    )
    os.chmod(config.run_dir, 0o711)
    os.chmod(ipc, 0o711)


def prepare_job(config: SandboxConfig, job: int, uid: int | None) -> SandboxConfig:
    """The config of one parallel job: its own user and its own socket folder.

    Each job's kernels see only their own socket folder, so a kernel cannot even reach the
    sockets of a notebook graded beside it.
    """
    import copy

    job_config = copy.copy(config)
    job_config.uid = uid
    job_config.ipc_dir = os.path.join(config.ipc_dir, f"job{job}")
    os.makedirs(job_config.ipc_dir, exist_ok=True)
    if uid is not None:
        os.chown(job_config.ipc_dir, uid, uid)
    os.chmod(job_config.ipc_dir, 0o700)
    return job_config


# ----------------------------------------------------------------------------------------------
# Kernel side: the launcher that nbgrader's kernel manager runs.


def _tasks_of(uid: int) -> int:
    """Processes and threads owned by ``uid`` right now (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as fh:
                status = fh.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields.get("Threads", "1"))
        except (KeyError, ValueError):
            continue
    return count


def apply_limits(limits: Limits, uid: int) -> None:
    """Set the resource limits of this process (inherited through exec by the kernel)."""

    def cap(kind, value):
        soft, hard = resource.getrlimit(kind)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))

    cap(resource.RLIMIT_AS, limits.memory_mb * MB)
    cap(resource.RLIMIT_CPU, limits.cpu_s)
    cap(resource.RLIMIT_FSIZE, limits.file_mb * MB)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, limits.open_files)
    cap(resource.RLIMIT_NPROC, _tasks_of(uid) + limits.processes)


def _depth(path: str) -> int:
    return len(Path(path).parts)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def bwrap_command(
    config: SandboxConfig, cwd: str, private: str, inner: list[str], files: dict[str, int]
) -> list[str]:
    """The bwrap command line that runs ``inner`` in the sandbox described by ``config``.

    ``cwd`` (the graded copy's folder) becomes a private, size-limited tmpfs holding read-only
    binds of what nbgrader put there: whatever the student's code writes is lost with the
    kernel and never reaches the grader's disk. ``files`` maps sandbox paths to open file
    descriptors whose contents are copied in (the matplotlib font cache).
    """
    root = os.geteuid() == 0
    drop = root and config.uid is not None
    home = os.path.realpath(os.environ.get("HOME", "/root"))
    cwd = os.path.realpath(cwd)
    masks = {"/tmp", "/var/tmp", "/dev/shm", home, os.path.realpath(config.run_dir)}
    masks |= {os.path.realpath(p) for p in config.hide}
    readonly = {os.path.realpath(p) for p in config.readonly} | {private}
    writable = {os.path.realpath(config.ipc_dir)}
    if drop:
        # A folder the unprivileged user cannot traverse (e.g. a 0700 /root) is replaced by a
        # tmpfs in which the needed paths are re-created and bound.
        for path in readonly | writable | {cwd}:
            for parent in reversed(Path(path).parents):
                p = str(parent)
                if p != "/" and not os.stat(p).st_mode & 0o001:
                    masks.add(p)
                    break
    masks = {m for m in masks if os.path.isdir(m) and m != "/"}
    ops = [(m, "tmpfs") for m in masks] + [(cwd, "work")]
    # A needed read-only path under a mask must be bound back; elsewhere `--ro-bind / /` has it.
    ops += [(p, "ro") for p in readonly if any(_under(p, m) for m in masks | {cwd})]
    ops += [(p, "rw") for p in writable]
    ops += [(os.path.join(cwd, name), "ro") for name in sorted(os.listdir(cwd))]
    order = {"tmpfs": 0, "work": 0, "ro": 1, "rw": 2}
    ops.sort(key=lambda op: (_depth(op[0]), order[op[1]]))
    size = str(config.limits.tmp_mb * MB)

    cmd = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev"]
    cmd += ["--proc", "/proc", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    cmd += ["--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--hostname", "grader"]
    if not root:
        cmd.append("--unshare-user")
    applied: list[tuple[str, str]] = []
    created: set[str] = set()
    for path, kind in ops:
        # the deepest mount already applied above this path decides whether parents must be made
        above = [(p, k) for p, k in applied if _under(path, p) and p != path]
        if above:
            base, base_kind = max(above, key=lambda op: _depth(op[0]))
            if base_kind in ("tmpfs", "work"):
                for parent in reversed(Path(path).parents):
                    d = str(parent)
                    if _under(d, base) and d != base and d not in created:
                        cmd += ["--perms", "0755", "--dir", d]
                        created.add(d)
        if kind == "tmpfs":
            perms = "1777" if path in ("/tmp", "/var/tmp", "/dev/shm") else "0755"
            cmd += ["--perms", perms, "--size", size, "--tmpfs", path]
        elif kind == "work":
            cmd += ["--perms", "0777", "--size", size, "--tmpfs", path]
        else:
            cmd += ["--bind" if kind == "rw" else "--ro-bind", path, path]
        applied.append((path, kind))
    for folder in sorted({os.path.dirname(p) for p in files}):
        cmd += ["--perms", "0777", "--dir", folder]
    for path, fd in sorted(files.items()):
        cmd += ["--perms", "0666", "--file", str(fd), path]
    cmd += ["--chdir", cwd]
    if drop:
        cmd += ["setpriv", f"--reuid={config.uid}", f"--regid={config.uid}", "--clear-groups"]
        cmd += ["--no-new-privs", "--"]
    return cmd + inner


def _kernel_env(home: str, mpl: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV or k.startswith(KEEP_PREFIXES)}
    env.pop(ENV_VAR, None)
    env.update(
        HOME=home,
        MPLCONFIGDIR=mpl,
        IPYTHONDIR=os.path.join(home, ".ipython"),
        TMPDIR="/tmp",
        USER="student",  # the kernel's user may have no passwd entry
        LOGNAME="student",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
    )
    return env


def _chown_tree(path: str, uid: int) -> None:
    os.chown(path, uid, uid)
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                os.chown(full, uid, uid)


def launch(argv: list[str]) -> None:
    """Start ipykernel with ``argv`` (``-f CONNECTION_FILE ...``), sandboxed when configured."""
    # The venv's interpreter by its real folder: a venv reached through a symlink under /tmp
    # (a course copy) would be hidden by the sandbox's private /tmp. The file name is kept, not
    # resolved, so that Python still finds the venv's pyvenv.cfg beside it.
    python = os.path.join(
        os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable)
    )
    inner = [python, "-m", "ipykernel_launcher"]
    text = os.environ.get(ENV_VAR)
    if not text:  # not grading: an ordinary kernel
        os.execv(sys.executable, inner + argv)
    # Plain tracebacks: IPython's default rendering of a deep recursion can take minutes.
    inner.append("--InteractiveShell.xmode=Plain")
    config = SandboxConfig.from_env(text)
    args = list(argv)
    connection = args[args.index("-f") + 1]
    cwd = os.getcwd()
    # Per-kernel private folder: a copy of the connection file (the original lies in a folder
    # the sandbox hides) and, without bwrap, the kernel's home and matplotlib cache.
    private = os.path.join(config.run_dir, f"kernel-{os.getpid()}")
    os.makedirs(private)
    copy = os.path.join(private, "connection.json")
    shutil.copy(connection, copy)
    args[args.index("-f") + 1] = copy
    template = os.path.join(config.run_dir, "mpl-template")
    files: dict[str, int] = {}
    if config.mode == "bwrap":
        home, mpl = "/tmp/home", "/tmp/matplotlib"
        for name in os.listdir(template):
            fd = os.open(os.path.join(template, name), os.O_RDONLY)
            os.set_inheritable(fd, True)
            files[f"{mpl}/{name}"] = fd
        files[f"{home}/.keep"] = os.open(os.devnull, os.O_RDONLY)
        os.set_inheritable(files[f"{home}/.keep"], True)
    else:
        home, mpl = os.path.join(private, "home"), os.path.join(private, "mpl")
        os.makedirs(home)
        shutil.copytree(template, mpl)
    env = _kernel_env(home, mpl)
    uid = config.uid if config.uid is not None else os.getuid()
    if config.uid is not None:
        _chown_tree(private, config.uid)
        if config.mode != "bwrap":
            _chown_tree(cwd, config.uid)
    os.chmod(private, 0o700 if config.mode != "bwrap" else 0o755)
    os.chmod(copy, 0o644 if config.mode == "bwrap" else 0o600)
    if config.mode != "off":
        apply_limits(config.limits, uid)
    # jupyter_client interrupts with SIGINT to the whole process group: bwrap and setpriv must
    # survive it (the kernel itself installs its own handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if config.mode == "bwrap":
        cmd = bwrap_command(config, cwd, private, inner + args, files)
    elif config.uid is not None:
        cmd = ["setpriv", f"--reuid={config.uid}", f"--regid={config.uid}", "--clear-groups"]
        cmd += ["--no-new-privs", "--", *inner, *args]
    else:
        cmd = inner + args
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    launch(sys.argv[1:])
