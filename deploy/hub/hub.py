"""A real JupyterHub for a class on this machine: `make hub` (run as root).

What it does, each step safe to repeat:

1. installs configurable-http-proxy (JupyterHub's proxy, from the npm registry, pinned by
   deploy/hub/package-lock.json) into .hub/proxy with ``npm ci``: nothing global;
2. creates the Linux accounts (one instructor, the students) with ``useradd``, gives each a
   password (random, kept in STATE/passwords, readable by root only) and makes every home
   folder private (0700: Debian's useradd leaves it readable by everyone);
3. creates nbgrader's exchange, STATE/exchange, writable by everyone (nbgrader's instructions:
   ``chmod ugo+rw``), with the sticky bit so nobody can rename or delete what another user put
   there, and the students' nbgrader_config.py (course id and exchange) in STATE/jupyter;
4. gives the instructor a copy of the course in ~/rnn-course (Makefile, nbgrader_config.py
   pointed at the exchange, solutions/, lessons/, and the course's .venv linked), owned by the
   instructor, where they run ``make release-assignments``, ``make collect``, ``make autograde``
   and the rest;
5. starts JupyterHub (deploy/hub/jupyterhub_config.py) on 127.0.0.1 and a free port, and prints
   the address and the accounts.

Every user's server runs from this checkout's .venv, so the checkout must be readable by
everyone (it is after a plain ``git clone``); a parent folder that others cannot enter (a
``mktemp -d`` folder, a 0700 home) is opened for entering only (``chmod o+x``), and said so.
tests/test_hub.py uses these same functions for its class.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from helpers import course as manifest

HERE = Path(__file__).resolve().parent
COURSE = HERE.parents[1]
CONFIG = HERE / "jupyterhub_config.py"
VENV = COURSE / ".venv"
PROXY_DIR = COURSE / ".hub" / "proxy"
PROXY = PROXY_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
COURSE_ID = manifest.COURSE_ID
#: The instructor's copy of the course, in their home.
INSTRUCTOR_COURSE = "rnn-course"
#: What the instructor's copy needs (the grader itself is the .venv's installed helpers).
COURSE_FILES = ("Makefile", "nbgrader_config.py", "pyproject.toml")
COURSE_FOLDERS = (manifest.FOLDERS["source"], manifest.FOLDERS["release"], "requirements")

NEED_NODE = (
    "make hub needs Node.js: JupyterHub's proxy, configurable-http-proxy, is an npm package. "
    "Install node (20 or later) and npm (Debian/Ubuntu: `sudo apt-get install -y nodejs npm`, "
    "or NodeSource's packages where that node is older; .ci/run installs them), then run "
    "make hub again."
)
NEED_ROOT = (
    "make hub creates Linux accounts and runs a server as each of them: run it as root "
    "(`sudo make hub`)."
)


@dataclass
class Classroom:
    """One hub's class: its state folder, its accounts and their passwords."""

    state: Path
    instructor: str
    students: list[str]
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def users(self) -> list[str]:
        return [self.instructor, *self.students]

    @property
    def exchange(self) -> Path:
        return self.state / "exchange"

    @property
    def hub_dir(self) -> Path:
        return self.state / "hub"

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    @property
    def course(self) -> Path:
        """The instructor's course folder."""
        return self.home(self.instructor) / INSTRUCTOR_COURSE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(*cmd: str, stdin: str | None = None) -> None:
    result = subprocess.run(cmd, input=stdin, text=True, capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")


# --- 1. the proxy ----------------------------------------------------------------------------


def install_proxy() -> Path:
    """configurable-http-proxy in .hub/proxy, exactly as package-lock.json pins it."""
    lock = PROXY_DIR / "package-lock.json"
    current = PROXY.is_file() and lock.is_file() and filecmp.cmp(lock, HERE / lock.name, False)
    if current:
        return PROXY
    if not (shutil.which("node") and shutil.which("npm")):
        raise SystemExit(NEED_NODE)
    PROXY_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(HERE / name, PROXY_DIR / name)
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROXY_DIR,
        text=True,
        capture_output=True,
    )
    if result.returncode != 0 or not PROXY.is_file():
        raise SystemExit(
            f"npm could not install configurable-http-proxy into {PROXY_DIR}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return PROXY


# --- 2. accounts -----------------------------------------------------------------------------


def ensure_user(name: str, password: str) -> None:
    """The Linux account ``name`` with ``password``, its home private (0700)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run("useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name)
    _run("chpasswd", stdin=f"{name}:{password}\n")
    entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    home.mkdir(exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)
    # JupyterLab's "fetch news?" notification: off, as for a class it only gets in the way.
    settings = home / ".jupyter/lab/user-settings/@jupyterlab/apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}\n')
    _chown_tree(home / ".jupyter", entry)


def _chown_tree(top: Path, entry: pwd.struct_passwd) -> None:
    for folder, dirs, files in os.walk(top):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


def remove_user(name: str) -> None:
    """Delete the account and its home (tests/test_hub.py's clean-up)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    subprocess.run(["userdel", "--remove", name], capture_output=True)


def open_course_to_users() -> list[str]:
    """Make sure every user can run this checkout's .venv; returns what was changed.

    The folders above the checkout, and above the Python the .venv was made from (pyenv's
    lives under /root on some machines), that others cannot enter get ``o+x``: enter, not
    list. Nothing inside the checkout is changed: a .venv or helpers/ that others cannot read
    is an error that says what to do.
    """
    python = Path(os.path.realpath(VENV / "bin" / "python"))
    changed = []
    for top in (COURSE, python.parent):
        for folder in reversed(top.parents):
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(mode | stat.S_IXOTH)
                changed.append(
                    f"{folder}: others may now enter it (chmod o+x, not list it), to reach {top}"
                )
    for path in (COURSE, VENV, VENV / "bin", COURSE / "helpers", python):
        mode = path.stat().st_mode
        wanted = stat.S_IROTH | stat.S_IXOTH
        if mode & wanted != wanted:
            raise SystemExit(
                f"{path} is not readable by other users ({stat.filemode(mode)}), so their "
                f"servers cannot run the course's .venv: clone the course with umask 022, or "
                f"`chmod -R o+rX {COURSE}`"
            )
    return changed


# --- 3-4. the exchange and the instructor's course --------------------------------------------


def student_config(exchange: Path) -> str:
    """Every user's nbgrader_config.py (on a real server: /etc/jupyter/nbgrader_config.py)."""
    return (
        "# nbgrader for every user of the hub: the course and its exchange.\n"
        "c = get_config()  # noqa: F821\n"
        f'c.CourseDirectory.course_id = "{COURSE_ID}"\n'
        f'c.Exchange.root = "{exchange}"\n'
    )


def instructor_settings(exchange: Path) -> str:
    """What the instructor's nbgrader_config.py gets on the hub (appended to the course's)."""
    return (
        "\n# --- on the hub (deploy/hub/hub.py): the shared exchange, and late work ---\n"
        f'c.Exchange.root = "{exchange}"\n'
        "# A submission after the lesson's due date is flagged late; 'zero' scores it 0\n"
        "# ('none', nbgrader's default, only flags it). Set a due date with\n"
        "#   nbgrader db assignment add <lesson id> --duedate='2026-12-01 17:00:00 UTC'\n"
        'c.LateSubmissionPlugin.penalty_method = "zero"\n'
    )


#: nbgrader's instructor tools (its installation guide names them): a student's server runs
#: without them, and keeps the Assignments tab and Validate.
CSP = "Content-Security-Policy"
INSTRUCTOR_LAB_PLUGINS = (
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
)
INSTRUCTOR_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.course_list",
)


def student_jupyter_config(folder: Path) -> None:
    """What a student's server reads first (STATE/jupyter-student, put before STATE/jupyter on
    a student's JUPYTER_CONFIG_PATH by jupyterhub_config.py): nbgrader's instructor tools off,
    in JupyterLab (its page config) and on the server (its extensions)."""
    (folder / "labconfig").mkdir(parents=True, exist_ok=True)
    for path in (folder, folder / "labconfig"):
        path.chmod(0o755)
    files = {
        folder / "labconfig" / "page_config.json": {
            "disabledExtensions": dict.fromkeys(INSTRUCTOR_LAB_PLUGINS, True)
        },
        folder / "jupyter_server_config.json": {
            "ServerApp": {"jpserver_extensions": dict.fromkeys(INSTRUCTOR_SERVER_EXTENSIONS, False)}
        },
    }
    for path, content in files.items():
        path.write_text(json.dumps(content, indent=1) + "\n")
        path.chmod(0o644)


def instructor_jupyter_config(room: Classroom) -> None:
    """The instructor's own Jupyter configuration (~/.jupyter), so that their server, which runs
    in their home folder, serves the course: the Formgrader reads the course's
    nbgrader_config.py (its lessons, gradebook and exchange) wherever the server starts, and may
    be shown in a JupyterLab tab (a frame of the same origin: frame-ancestors 'self' instead of
    the single-user server's 'none'), and its Autograde button answers that grading is
    `make autograde` (helpers.grading.unsandboxed). REAL SERVER: the same files in their home; with
    every user's server on one origin, any page of that origin may frame it (see
    docs/instructors.md)."""
    entry = pwd.getpwnam(room.instructor)
    folder = room.home(room.instructor) / ".jupyter"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nbgrader_config.py").write_text(
        "# The course's settings, wherever this server starts (written by deploy/hub/hub.py).\n"
        "c = get_config()  # noqa: F821\n"
        f'load_subconfig("{room.course / "nbgrader_config.py"}")  # noqa: F821\n'
    )
    server = {
        "ServerApp": {
            "tornado_settings": {"headers": {CSP: "frame-ancestors 'self'"}},
            # the Formgrader's Autograde button would grade unsandboxed: it says to use make
            "jpserver_extensions": {"helpers.grading.unsandboxed": True},
        }
    }
    (folder / "jupyter_server_config.json").write_text(json.dumps(server, indent=1) + "\n")
    _chown_tree(folder, entry)


def prepare_exchange(room: Classroom) -> None:
    room.state.mkdir(parents=True, exist_ok=True)
    room.state.chmod(0o755)
    room.hub_dir.mkdir(exist_ok=True)
    room.hub_dir.chmod(0o700)  # the hub's database and cookie secret: root only
    room.exchange.mkdir(exist_ok=True)
    room.exchange.chmod(0o1777)  # nbgrader: everyone reads and writes; sticky: nobody else's
    config = room.state / "jupyter"
    config.mkdir(exist_ok=True)
    config.chmod(0o755)
    (config / "nbgrader_config.py").write_text(student_config(room.exchange))
    (config / "nbgrader_config.py").chmod(0o644)
    student_jupyter_config(room.state / "jupyter-student")


def prepare_instructor_course(room: Classroom) -> Path:
    """The instructor's copy of the course (kept when it exists: it holds their gradebook)."""
    course = room.course
    entry = pwd.getpwnam(room.instructor)
    if not (course / "nbgrader_config.py").is_file():
        course.mkdir(parents=True, exist_ok=True)
        for name in COURSE_FILES:
            shutil.copy(COURSE / name, course / name)
        for name in COURSE_FOLDERS:
            shutil.copytree(
                COURSE / name,
                course / name,
                ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
            )
        with open(course / "nbgrader_config.py", "a") as config:
            config.write(instructor_settings(room.exchange))
        (course / ".venv").symlink_to(VENV)
        # make's install step runs when the lock files are newer than the .venv's stamps: the
        # copies are as old as can be, so it sees the shared .venv up to date.
        for path in [course / "pyproject.toml", *(course / "requirements").glob("*.txt")]:
            os.utime(path, (0, 0))
    _chown_tree(course, entry)
    return course


def setup(room: Classroom) -> list[str]:
    """Steps 2-4 for ``room``; fills in ``room.passwords``. Returns what was opened up."""
    if os.geteuid() != 0:
        raise SystemExit(NEED_ROOT)
    changed = open_course_to_users()
    prepare_exchange(room)
    saved = room.state / "passwords"
    known = {}
    if saved.is_file():
        known = dict(line.split(" ", 1) for line in saved.read_text().splitlines() if line)
    for user in room.users:
        room.passwords.setdefault(user, known.get(user) or secrets.token_urlsafe(12))
        ensure_user(user, room.passwords[user])
    saved.write_text("".join(f"{u} {p}\n" for u, p in room.passwords.items()))
    saved.chmod(0o600)
    prepare_instructor_course(room)
    instructor_jupyter_config(room)
    return changed


# --- 5. the hub ------------------------------------------------------------------------------


def hub_environment(room: Classroom, port: int, **extra: str) -> dict[str, str]:
    """The environment jupyterhub_config.py reads its settings from."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        COURSE_HUB_COURSE=str(COURSE),
        COURSE_HUB_VENV=str(VENV),
        COURSE_HUB_STATE=str(room.state),
        COURSE_HUB_PORT=str(port),
        COURSE_HUB_API_PORT=str(free_port()),
        COURSE_HUB_PROXY_API_PORT=str(free_port()),
        COURSE_HUB_PROXY=str(PROXY),
        COURSE_HUB_USERS=",".join(room.users),
        COURSE_HUB_INSTRUCTORS=room.instructor,
        **extra,
    )
    return env


def hub_command() -> list[str]:
    return [str(VENV / "bin" / "jupyterhub"), "-f", str(CONFIG)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make hub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, default=COURSE / ".hub" / "class")
    parser.add_argument("--instructor", default="rnn-instructor")
    parser.add_argument("--students", default="rnn-student1,rnn-student2")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--install-proxy", action="store_true", help="only install configurable-http-proxy"
    )
    args = parser.parse_args(argv)
    if args.install_proxy:
        print(f"configurable-http-proxy: {install_proxy()}")
        return 0
    if os.geteuid() != 0:
        raise SystemExit(NEED_ROOT)
    install_proxy()
    room = Classroom(args.state.resolve(), args.instructor, args.students.split(","))
    for line in setup(room):
        print(line)
    port = args.port or free_port()
    print(f"\nJupyterHub for {COURSE_ID}: http://127.0.0.1:{port}/  (Ctrl+C stops it)")
    for user in room.users:
        role = "instructor" if user == room.instructor else "student"
        print(f"  {role:10} {user:16} password {room.passwords[user]}")
    print(f"  the instructor's course: {room.course} (make release-assignments there)")
    print(f"  the exchange: {room.exchange}\n", flush=True)
    env = hub_environment(room, port)
    os.chdir(room.hub_dir)
    os.execve(hub_command()[0], hub_command(), env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
