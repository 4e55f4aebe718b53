"""Run a student's notebook kernel inside a sandbox while the course autogrades it.

``python -m helpers.grading autograde`` points nbgrader at a kernelspec whose command is this file
(run as a script, so it needs nothing but the standard library). The launcher applies resource
limits, then starts ipykernel inside bubblewrap (``bwrap``) and stays beside it as a watchdog, so
that the student's code

* sees only an allowlist, read-only: the interpreter and its packages, the system files they
  need (``/usr``, a few files of ``/etc``) and the course's ``helpers/`` package (with the data,
  diagrams and checkpoint it ships); the course's root exists only as the skeleton of that
  folder (no ``solutions/``, ``lessons/``, ``grading/``, ``.git``), and nothing else of the host
  (``$HOME``, ``/work``, other courses, the host's ``/tmp``) is there at all;
* can write only its own graded copy (the kernel's working folder, a size-limited tmpfs), a
  private ``/tmp`` and its socket folder ``/ipc`` (a 1 MB tmpfs of its own, reached by the grader
  through ``/proc/<pid>/root``: nothing the kernel does there outlives it or reaches the next
  kernel);
* has no network, its own process and IPC namespaces, and dies with the grader;
* is bounded in memory (per process: address space; for the whole kernel: a memory cgroup where
  the machine allows one, else the watchdog's sum of its processes' memory), CPU time, file size
  and number of processes, and runs as an unprivileged user when the grader is root
  (``RLIMIT_NPROC`` does not apply to root).

Without bubblewrap or user namespaces (some containers) the grader falls back to the resource
limits alone and says so loudly (``mode = "rlimits"``). The sandbox is switched on only by the
``RNN_COURSE_SANDBOX`` variable that the grader's kernelspec sets: a student's own kernel, and
``make check``, never go through it.

Traps this file avoids (see the course's NBGRADER_NOTES): TCP between network namespaces does not
work, so the grader uses ``ipc`` transport with an absolute socket prefix; ipykernel exits at once
in a new PID namespace unless ``JPY_PARENT_PID`` is unset; jupyter_client interrupts by sending
SIGINT to the whole process group, so the launcher and bwrap ignore SIGINT (ipykernel installs its
own handler); folders bwrap creates as root are 0700 unless ``--perms 0755``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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


#: How a kernel is sandboxed (``make autograde --sandbox``).
MODES = ("auto", "bwrap", "rlimits", "off")


def _limit(default: int, help: str, unit: str = ""):
    """A limit with a command-line flag (``helpers.grading.settings`` makes it from this)."""
    return field(default=default, metadata={"help": help, "unit": unit})


@dataclass
class Limits:
    """Resource limits for one kernel (the whole notebook run)."""

    # RLIMIT_AS: address space; torch's import alone maps ~0.7 GB
    memory_mb: int = _limit(4096, "memory (address space) per kernel", " MB")
    # RLIMIT_CPU: CPU seconds for the whole kernel (SIGXCPU after)
    cpu_s: int = _limit(600, "CPU seconds per kernel", " s")
    # RLIMIT_FSIZE: largest file the kernel may write
    file_mb: int = _limit(256, "largest file a kernel may write", " MB")
    # RLIMIT_NPROC: processes/threads on top of those the user already has
    processes: int = _limit(256, "processes and threads a kernel may add")
    open_files: int = 1024  # RLIMIT_NOFILE
    # size of the private /tmp and working folder (tmpfs: memory)
    tmp_mb: int = _limit(256, "size of a kernel's private /tmp and working folder", " MB")

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
    cgroup: bool = True  # cap the whole kernel's memory with a cgroup where one can be made

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


#: Host paths every sandboxed kernel may read: the system's programs and libraries, and the few
#: files of ``/etc`` that the C library, Python, torch and matplotlib read (``/etc`` itself, with
#: the host's configuration, is not there). Missing ones are skipped; links (``/bin`` ->
#: ``usr/bin``) are re-created as links.
SYSTEM_PATHS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/fonts",
    "/etc/mime.types",
    "/etc/matplotlibrc",
    "/etc/alternatives",
    # torch's cpuinfo reads the processor lists (it warns on stderr without them)
    "/sys/devices/system/cpu",
)

#: Inside the sandbox: the kernel's socket folder (a private tmpfs) and its connection file.
IPC_INSIDE = "/ipc"
PRIVATE_INSIDE = "/run/kernel"
IPC_MB = 1


def system_paths() -> list[str]:
    """The entries of :data:`SYSTEM_PATHS` that exist on this machine."""
    return [p for p in SYSTEM_PATHS if os.path.lexists(p)]


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
    if requested not in MODES:
        raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}, got {requested!r}")
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
    """Create the socket folder (the grader's own) and a matplotlib font cache."""
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
    os.chmod(ipc, 0o700)


def prepare_job(config: SandboxConfig, job: int, uid: int | None) -> SandboxConfig:
    """The config of one parallel job: its own user and its own socket folder.

    The job's folder holds only the grader's links to each kernel's sockets: the kernel never
    sees it (its sockets lie in a private tmpfs of its own, see :func:`launch`), so a kernel
    cannot change, fill or squat on it for the next kernel of the job, nor reach the sockets of a
    notebook graded beside it.
    """
    import copy

    job_config = copy.copy(config)
    job_config.uid = uid
    job_config.ipc_dir = os.path.join(config.ipc_dir, f"job{job}")
    os.makedirs(job_config.ipc_dir, exist_ok=True)
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


def apply_limits(limits: Limits, uid: int, nproc: int | None = None) -> None:
    """Set the resource limits of this process (inherited through exec by the kernel).

    ``nproc``: the process limit (default: the user's tasks now plus ``limits.processes``)."""

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
    cap(resource.RLIMIT_NPROC, nproc if nproc is not None else _tasks_of(uid) + limits.processes)


def _depth(path: str) -> int:
    return len(Path(path).parts)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _allowlist(config: SandboxConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(binds, links) that make up the sandbox's read-only view of the host.

    ``binds``: (host source, sandbox path) for every allowed path, none inside another (a venv
    under ``/usr`` is already there). ``links``: (target, sandbox path) for allowed paths that
    are links to another allowed path (``/bin`` -> ``usr/bin``).
    """
    wanted = {os.path.abspath(p) for p in [*system_paths(), *config.readonly] if os.path.lexists(p)}
    binds: dict[str, str] = {}
    links: list[tuple[str, str]] = []
    for path in sorted(wanted, key=_depth):
        if any(_under(path, other) for other in binds):
            continue
        real = os.path.realpath(path)
        if os.path.islink(path) and any(_under(real, w) for w in wanted if w != path):
            links.append((os.readlink(path), path))
        elif os.path.exists(real):
            binds[path] = real
    return [(real, path) for path, real in binds.items()], links


def bwrap_command(
    config: SandboxConfig,
    cwd: str,
    private: str,
    inner: list[str],
    files: dict[str, int],
    info_fd: int | None = None,
) -> list[str]:
    """The bwrap command line that runs ``inner`` in the sandbox described by ``config``.

    The sandbox's root is empty: only the allowlist (:data:`SYSTEM_PATHS` and
    ``config.readonly``) is bound into it, read-only, with the folders above those paths created
    empty (the skeleton). ``cwd`` (the graded copy's folder) becomes a private, size-limited
    tmpfs holding read-only binds of what nbgrader put there: whatever the student's code writes
    is lost with the kernel and never reaches the grader's disk. ``private`` (the kernel's
    connection file) is seen at :data:`PRIVATE_INSIDE`, the sockets are made in a private tmpfs at
    :data:`IPC_INSIDE`. ``files`` maps sandbox paths to open file descriptors whose contents are
    copied in (the matplotlib font cache). ``config.hide`` and the grader's ``$HOME`` and run
    folder are hidden (a tmpfs) where they lie inside an allowed folder.
    """
    root = os.geteuid() == 0
    drop = root and config.uid is not None
    home = os.path.realpath(os.environ.get("HOME", "/root"))
    cwd = os.path.realpath(cwd)
    binds, links = _allowlist(config)
    allowed = [dest for _, dest in binds]
    masks = {home, os.path.realpath(config.run_dir)} | {os.path.realpath(p) for p in config.hide}
    masks = {m for m in masks if os.path.isdir(m) and any(_under(m, a) and m != a for a in allowed)}
    size = str(config.limits.tmp_mb * MB)
    # (sandbox path, kind, host source)
    ops: list[tuple[str, str, str]] = [(dest, "ro", src) for src, dest in binds]
    ops += [(path, "link", target) for target, path in links]
    ops += [(m, "tmpfs", "") for m in masks]
    ops += [(p, "scratch", "") for p in ("/tmp", "/var/tmp", "/dev/shm")]
    ops += [(cwd, "work", ""), (IPC_INSIDE, "ipc", ""), (PRIVATE_INSIDE, "ro", private)]
    ops += [(os.path.join(cwd, name), "ro", os.path.join(cwd, name)) for name in os.listdir(cwd)]
    order = {"ro": 0, "link": 0, "tmpfs": 1, "scratch": 1, "work": 1, "ipc": 1}
    ops.sort(key=lambda op: (_depth(op[0]), order[op[1]], op[0]))

    cmd = [shutil.which("bwrap") or "bwrap", "--dev", "/dev", "--proc", "/proc"]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--die-with-parent", "--hostname", "grader"]
    if not root:
        cmd.append("--unshare-user")
    if info_fd is not None:
        cmd += ["--info-fd", str(info_fd)]
    binds_done: list[str] = ["/dev", "/proc"]
    created: set[str] = {"/"}
    for path, kind, src in ops:
        # the folders above a mount point: made empty (0755), unless a bind already has them
        for parent in reversed(Path(path).parents):
            d = str(parent)
            if d in created or any(_under(d, b) for b in binds_done):
                continue
            cmd += ["--perms", "0755", "--dir", d]
            created.add(d)
        if kind == "ro":
            cmd += ["--ro-bind", src, path]
            binds_done.append(path)
        elif kind == "link":
            cmd += ["--symlink", src, path]
        elif kind == "scratch":
            cmd += ["--perms", "1777", "--size", size, "--tmpfs", path]
        elif kind == "work":
            cmd += ["--perms", "0777", "--size", size, "--tmpfs", path]
        elif kind == "ipc":
            # sockets only: the kernel (another user when the grader is root) may create
            # entries, not list them, nor change the folder
            cmd += ["--perms", "1733", "--size", str(IPC_MB * MB), "--tmpfs", path]
        else:
            cmd += ["--perms", "0755", "--tmpfs", path]
        created.add(path)
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


# ----------------------------------------------------------------------------------------------
# The memory of the whole kernel: a cgroup where the machine lets the grader make one, else the
# launcher's own sum of its processes' memory.

CGROUP_ROOT = "/sys/fs/cgroup"
WATCH_S = 0.2


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


class KernelCgroup:
    """A memory (and process count) cgroup for one kernel: v2, or v1's memory hierarchy.

    Made only where this process may create cgroups (root, or a delegated subtree); ``create``
    returns None otherwise. The launcher stays outside it; the kernel's processes enter it
    before ``exec`` (:meth:`enter`).
    """

    def __init__(self, path: str, version: int, extra: tuple[str, ...] = ()):
        self.path, self.version, self.extra = path, version, extra

    @classmethod
    def create(cls, limits: Limits, run: str, name: str) -> KernelCgroup | None:
        """The cgroup ``name`` under the grading run's own ``run`` (see :func:`cgroup_parents`),
        or None where none can be made."""
        for make in (cls._v2, cls._v1):
            try:
                group = make(limits, run, name)
            except OSError:
                group = None
            if group is not None:
                return group
        return None

    @classmethod
    def _v2(cls, limits: Limits, run: str, name: str) -> KernelCgroup | None:
        if not os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):
            return None
        # A child of the hierarchy's root: the root is the only cgroup that may hold processes
        # and give controllers to its children at the same time.
        if "memory" not in _read(f"{CGROUP_ROOT}/cgroup.subtree_control").split():
            return None
        parent = cgroup_parents(run)[0]
        os.makedirs(parent, exist_ok=True)
        _sweep(parent)
        _write(f"{parent}/cgroup.subtree_control", "+memory +pids")
        path = f"{parent}/{name}"
        os.mkdir(path)
        group = cls(path, 2)
        try:
            _write(f"{path}/memory.max", str(limits.memory_mb * MB))
            if os.path.exists(f"{path}/memory.swap.max"):
                _write(f"{path}/memory.swap.max", "0")
            _write(f"{path}/memory.oom.group", "1")
            if os.path.exists(f"{path}/pids.max"):
                _write(f"{path}/pids.max", str(limits.processes + 64))
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _v1(cls, limits: Limits, run: str, name: str) -> KernelCgroup | None:
        if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):
            return None
        parent, pids_parent = cgroup_parents(run)[1:]
        if not parent:
            return None
        os.makedirs(parent, exist_ok=True)
        _sweep(parent)
        path = f"{parent}/{name}"
        os.mkdir(path)
        extra = []
        try:
            _write(f"{path}/memory.limit_in_bytes", str(limits.memory_mb * MB))
            if os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                _write(f"{path}/memory.memsw.limit_in_bytes", str(limits.memory_mb * MB))
            # at the limit the kernel's processes wait, and the watchdog stops the whole kernel
            # (rather than the kernel's OOM killer picking one process)
            _write(f"{path}/memory.oom_control", "1")
            if pids_parent:
                with contextlib.suppress(OSError):
                    os.makedirs(pids_parent, exist_ok=True)
                    _sweep(pids_parent)
                    pids = f"{pids_parent}/{name}"
                    os.mkdir(pids)
                    extra.append(pids)
                    _write(f"{pids}/pids.max", str(limits.processes + 64))
        except OSError:
            cls(path, 1, tuple(extra)).remove()
            raise
        return cls(path, 1, tuple(extra))

    def enter(self) -> None:
        """Move the calling process into the cgroup (called in the child before ``exec``)."""
        for path in (self.path, *self.extra):
            fd = os.open(f"{path}/cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def out_of_memory(self) -> bool:
        if self.version == 2:
            events = dict(line.split() for line in _read(f"{self.path}/memory.events").splitlines())
            return int(events.get("oom_kill", 0)) + int(events.get("oom_group_kill", 0)) > 0
        return "under_oom 1" in _read(f"{self.path}/memory.oom_control")

    def used_mb(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.max_usage_in_bytes"
        text = _read(f"{self.path}/{name}").strip()
        return int(text) // MB if text.isdigit() else 0

    def kill(self) -> None:
        for path in (self.path, *self.extra):
            if self.version == 2 and os.path.exists(f"{path}/cgroup.kill"):
                with contextlib.suppress(OSError):
                    _write(f"{path}/cgroup.kill", "1")
            for pid in _read(f"{path}/cgroup.procs").split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        for path in (*self.extra, self.path):
            for _ in range(50):
                self.kill()
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def cgroup_parents(run: str) -> tuple[str, str, str]:
    """The folders that hold the cgroups of one grading run's kernels ("" where there is no
    such hierarchy): under cgroup v2's root; under this process's v1 memory and pids cgroups
    (those of the grader, which its workers and their kernel launchers inherit)."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, names, path = line.split(":", 2)
        for controller in names.split(","):
            own[controller] = path.rstrip("/")
    v1 = [
        f"{CGROUP_ROOT}/{c}{own[c]}/{run}"
        if c in own and os.path.isdir(f"{CGROUP_ROOT}/{c}")
        else ""
        for c in ("memory", "pids")
    ]
    return f"{CGROUP_ROOT}/{run}", v1[0], v1[1]


def remove_cgroups(config: SandboxConfig) -> None:
    """Stop and remove what is left of a grading run's kernel cgroups (kernels stopped with
    SIGKILL leave theirs), then the run's own cgroup folders."""
    for parent in cgroup_parents(cgroup_run(config)):
        if not parent or not os.path.isdir(parent):
            continue
        for entry in os.scandir(parent):
            if entry.is_dir():
                KernelCgroup(entry.path, 0).remove()
        with contextlib.suppress(OSError):
            os.rmdir(parent)


def cgroup_run(config: SandboxConfig) -> str:
    """The name of the cgroup folder of the grading run that ``config`` belongs to."""
    name = os.path.basename(config.run_dir.rstrip("/"))
    return name if name.startswith("rnn-course") else f"rnn-course-{name}"


def _sweep(parent: str) -> None:
    """Remove the empty cgroups that killed launchers left behind.

    Only those whose launcher (``kernel-<pid>``) is gone: a launcher beside this one may have
    just made its own, still empty until its kernel enters it.
    """
    for entry in os.scandir(parent):
        owner = entry.name.removeprefix("kernel-")
        if owner.isdigit() and os.path.exists(f"/proc/{owner}"):
            continue
        if entry.is_dir() and not _read(f"{entry.path}/cgroup.procs").strip():
            with contextlib.suppress(OSError):
                os.rmdir(entry.path)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process of the machine."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read(f"/proc/{entry.name}/stat")
        if not stat:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree_of(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += tree.get(current, [])
    return found


def _tree_mb(pid: int) -> int:
    """Memory of ``pid`` and its descendants: the sum of their proportional set sizes (a page
    shared by N processes counts 1/N in each, so forked copies are not counted twice)."""
    total = 0
    for p in _tree_of(pid):
        text = _read(f"/proc/{p}/smaps_rollup")
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
        else:
            if not text:  # no smaps_rollup (old kernel): resident memory
                for line in _read(f"/proc/{p}/status").splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
    return total // 1024


def _kill_tree(pid: int) -> None:
    """SIGKILL the descendants of ``pid`` (not ``pid`` itself)."""
    for p in reversed(_tree_of(pid)[1:]):
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


def _die_with_parent() -> None:
    """Ask the kernel (Linux) to kill this process when the grader that started it dies."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans stay in the tree
    if os.getppid() == 1:
        os._exit(1)


def _link_sockets(connection: dict, child: int) -> list[tuple[str, str]]:
    """Link the client's socket names (``<ip>-<port>``) to the kernel's private ones.

    The kernel makes its sockets in its own tmpfs; the grader reaches them through
    ``/proc/<pid>/root`` of a process in the sandbox. Returns the links made (link, target).
    """
    made = []
    for key in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        port = connection[key]
        link = f"{connection['ip']}-{port}"
        tmp = f"{link}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        target = f"/proc/{child}/root{IPC_INSIDE}/kernel-{port}"
        os.symlink(target, tmp)
        os.replace(tmp, link)
        made.append((link, target))
    return made


def _read_info(fd: int) -> dict:
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            return json.loads(data)
        except ValueError:
            continue
    return json.loads(data) if data else {}


def launch(argv: list[str]) -> None:
    """Start ipykernel with ``argv`` (``-f CONNECTION_FILE ...``), sandboxed when configured.

    The launcher stays the kernel's parent: it links the sockets, watches the memory of the
    whole kernel (:class:`KernelCgroup`, or the sum over its processes), stops the kernel when
    over (its exit status then says SIGKILL, and stderr says why) or when the launcher is asked
    to stop, and removes what the kernel leaves behind.
    """
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
    _die_with_parent()
    # Plain tracebacks: IPython's default rendering of a deep recursion can take minutes.
    inner.append("--InteractiveShell.xmode=Plain")
    config = SandboxConfig.from_env(text)
    args = list(argv)
    connection = args[args.index("-f") + 1]
    with open(connection) as fh:
        info = json.load(fh)
    cwd = os.getcwd()
    # Per-kernel private folder: a copy of the connection file (the original lies in a folder
    # the sandbox hides) and, without bwrap, the kernel's home and matplotlib cache.
    private = os.path.join(config.run_dir, f"kernel-{os.getpid()}")
    os.makedirs(private)
    copy = os.path.join(private, "connection.json")
    sockets = config.mode == "bwrap" and info.get("transport") == "ipc"
    if sockets:
        with open(copy, "w") as fh:
            json.dump(dict(info, ip=f"{IPC_INSIDE}/kernel"), fh)
        args[args.index("-f") + 1] = f"{PRIVATE_INSIDE}/connection.json"
    else:
        shutil.copy(connection, copy)
        args[args.index("-f") + 1] = copy
    template = os.path.join(config.run_dir, "mpl-template")
    files: dict[str, int] = {}
    if config.mode == "bwrap":
        home, mpl = "/tmp/home", "/tmp/matplotlib"
        for name in os.listdir(template):
            fd = os.open(os.path.join(template, name), os.O_RDONLY)
            files[f"{mpl}/{name}"] = fd
        files[f"{home}/.keep"] = os.open(os.devnull, os.O_RDONLY)
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
    # jupyter_client interrupts with SIGINT to the whole process group: the launcher, bwrap and
    # setpriv must survive it (the kernel itself installs its own handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    info_r = info_w = None
    if config.mode == "bwrap":
        info_r, info_w = os.pipe()
        cmd = bwrap_command(config, cwd, private, inner + args, files, info_w if sockets else None)
    elif config.uid is not None:
        cmd = ["setpriv", f"--reuid={config.uid}", f"--regid={config.uid}", "--clear-groups"]
        cmd += ["--no-new-privs", "--", *inner, *args]
    else:
        cmd = inner + args
    group = None
    nproc = None
    if config.mode != "off" and config.cgroup:
        group = KernelCgroup.create(config.limits, cgroup_run(config), f"kernel-{os.getpid()}")
    if config.mode != "off":
        nproc = _tasks_of(uid) + config.limits.processes

    def child_setup() -> None:
        if group is not None:
            group.enter()
        if config.mode != "off":
            apply_limits(config.limits, uid, nproc)

    process = subprocess.Popen(
        cmd,
        env=env,
        pass_fds=[*files.values(), *([info_w] if info_w is not None else [])],
        preexec_fn=child_setup,
    )
    for fd in [*files.values(), *([info_w] if info_w is not None else [])]:
        os.close(fd)
    links: list[tuple[str, str]] = []

    def stop(signum, frame):
        _kill_tree(os.getpid())
        if group is not None:
            group.kill()
        _clean(private, links, group)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    if sockets and info_r is not None:
        child = _read_info(info_r).get("child-pid")
        if child:
            links = _link_sockets(info, child)
    if info_r is not None:
        os.close(info_r)
    over = None
    while process.poll() is None:
        try:
            process.wait(timeout=WATCH_S)
            break
        except subprocess.TimeoutExpired:
            pass
        if config.mode == "off":
            continue
        if group is not None:
            if group.out_of_memory():
                over = f"the kernel's processes reached {config.limits.memory_mb} MB together"
        else:
            # the launcher's whole tree: orphans of the kernel are re-parented to it (it is
            # their subreaper); the launcher itself counts too (some 20 MB)
            used = _tree_mb(os.getpid())
            if used > config.limits.memory_mb:
                over = f"the kernel's processes held {used} MB together"
        if over:
            _kill_tree(os.getpid())
            if group is not None:
                group.kill()
            process.wait()
            break
    _clean(private, links, group)
    if over:
        print(
            f"course sandbox: memory limit: {over} (limit {config.limits.memory_mb} MB); "
            "the kernel was stopped",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(128 + signal.SIGKILL)
    code = process.returncode
    sys.exit(128 - code if code < 0 else code)


def _clean(private: str, links: list[tuple[str, str]], group: KernelCgroup | None) -> None:
    for link, target in links:
        with contextlib.suppress(OSError):
            if os.readlink(link) == target:  # not the next kernel's
                os.unlink(link)
    if group is not None:
        group.remove()
    shutil.rmtree(private, ignore_errors=True)


if __name__ == "__main__":
    launch(sys.argv[1:])
