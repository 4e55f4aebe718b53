"""What every step of the grader shares: settings, the course's nbgrader configuration (read
with nbgrader's own :class:`~nbgrader.coursedir.CourseDirectory`) and running nbgrader."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from helpers import course

EXECUTOR = "helpers.grading.execute.HardenedExecute"
AUTOGRADE_PREPROCESSORS = [
    EXECUTOR,
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MB = 1024 * 1024
MAX_DEPTH = 32  # folder levels of a submission that are read (deeper ones are ignored)
MAX_ENTRIES = 5000  # files and folders of a submission that are read (the rest are ignored)


def printable(text: str) -> str:
    """``text`` safe to print and write as UTF-8: undecodable bytes of file names (surrogates)
    and control characters written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def remove_tree(path: Path) -> None:
    """Remove the folder ``path`` whatever it holds: Python's own rmtree recurses once per
    level and fails on a tree a notebook made thousands of levels deep; ``rm -rf`` does not."""
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path)
        return
    except (RecursionError, OSError):
        pass
    subprocess.run(["rm", "-rf", "--", os.fspath(path)], check=False, capture_output=True)
    if os.path.lexists(path):
        raise OSError(f"could not remove {printable(os.fspath(path))}")


def walk(
    folder: Path, max_depth: int = MAX_DEPTH, max_entries: int = MAX_ENTRIES
) -> Iterator[tuple[str, str, os.stat_result | None]]:
    """(kind, relative path, stat) of what is under ``folder``, sorted, never following links.

    kind: ``file``, ``dir``, ``link``, ``special`` (FIFO, socket, device: never opened),
    ``unreadable`` (a folder that cannot be listed), ``too-deep`` (a folder deeper than
    ``max_depth``, not entered) or ``too-many`` (the last entry: more than ``max_entries``).
    Iterative, so a tree of any depth cannot exhaust Python's stack; ``.ipynb_checkpoints`` is
    skipped.
    """
    stack: list[tuple[str, int]] = [("", 0)]
    seen = 0
    while stack:
        rel, depth = stack.pop()
        try:
            with os.scandir(os.path.join(folder, rel) if rel else folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError:
            yield "unreadable", rel, None
            continue
        below = []
        for entry in entries:
            if entry.name == ".ipynb_checkpoints":
                continue
            seen += 1
            if seen > max_entries:
                yield "too-many", rel, None
                return
            path = f"{rel}/{entry.name}" if rel else entry.name
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                yield "unreadable", path, None
                continue
            if stat.S_ISLNK(info.st_mode):
                yield "link", path, info
            elif stat.S_ISDIR(info.st_mode):
                yield "dir", path, info
                if depth + 1 >= max_depth:
                    yield "too-deep", path, info
                else:
                    below.append((path, depth + 1))
            elif stat.S_ISREG(info.st_mode):
                yield "file", path, info
            else:
                yield "special", path, info
        stack.extend(reversed(below))


def open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file ``path``: never a link, FIFO or device (a
    FIFO would block the grader), whatever the file became since it was listed."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{printable(os.fspath(path))} is not a regular file")
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` + 1 of them."""
    fd = open_regular(path)
    with contextlib.closing(os.fdopen(fd, "rb")) as fh:
        return fh.read(limit + 1)


@cache
def _course_directory(root: str):
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(course.NBGRADER_CONFIG.name, path=root).load_config()
    return CourseDirectory(config=config)


def course_directory(root: Path):
    """nbgrader's ``CourseDirectory`` as the course's ``nbgrader_config.py`` sets it up."""
    return _course_directory(str(Path(root).resolve()))


def course_folder(root: Path, step: str) -> Path:
    """The folder nbgrader uses for ``step`` (``submitted``, ``autograded``, ``feedback``...)."""
    cd = course_directory(root)
    return Path(cd.root) / getattr(cd, f"{step}_directory")


def grading_dir(root: Path) -> Path:
    """The course's ``grading/`` folder (what the grader writes besides nbgrader's folders)."""
    return Path(root) / course.GRADING_FOLDER


@dataclass(frozen=True)
class Target:
    """Where a grading run writes: the course's own folders, or one shard's.

    ``folder`` holds the grader's files (``release/``, ``staged/``, ``reasons/``, ``logs/``,
    ``reasons.csv``); ``autograded`` is nbgrader's autograded folder; ``db_url`` the gradebook.
    A shard ``K/N`` writes everything under ``grading/shards/K-of-N/`` (merged into the course's
    own by ``make merge-grades``).
    """

    folder: Path
    autograded: Path
    db_url: str
    feedback: Path | None = None  # nbgrader's feedback folder (the course's own only)
    shard: tuple[int, int] | None = None  # (K, N)

    @classmethod
    def course(cls, root: Path) -> Target:
        return cls(
            folder=grading_dir(root),
            autograded=course_folder(root, "autograded"),
            db_url=db_url(root),
            feedback=course_folder(root, "feedback"),
        )

    @classmethod
    def for_shard(cls, root: Path, k: int, n: int) -> Target:
        if not (n >= 1 and 1 <= k <= n):
            raise ValueError(f"a shard is K/N with 1 <= K <= N, got {k}/{n}")
        folder = shard_dir(root, k, n)
        return cls(
            folder=folder,
            autograded=folder / "autograded",
            db_url=f"sqlite:///{folder / 'gradebook.db'}",
            shard=(k, n),
        )

    @property
    def staged(self) -> Path:
        return self.folder / "staged"

    @property
    def release(self) -> Path:
        return self.folder / "release"

    @property
    def reasons(self) -> Path:
        return self.folder / "reasons"


def shard_dir(root: Path, k: int, n: int) -> Path:
    """``grading/shards/K-of-N/``: everything shard ``K/N`` writes."""
    return grading_dir(root) / "shards" / f"{k}-of-{n}"


def in_shard(student: str, k: int, n: int) -> bool:
    """Whether ``student`` belongs to shard ``K/N`` (1 <= K <= N): a hash of the id, the same on
    every machine and in every run, so N shards split a class without a list."""
    import hashlib

    return int(hashlib.sha256(student.encode()).hexdigest(), 16) % n == k - 1


# nbgrader commands import nbformat: the grader's processes skip jsonschema's IRI grammar
# (course.skip_iri_grammar), and so does every nbgrader command it runs (NBGRADER below).
course.skip_iri_grammar()
NBGRADER = (
    "import sys; sys.modules.setdefault('rfc3987_syntax', None); "
    "from nbgrader.apps.nbgraderapp import main; sys.exit(main())"
)


def add_root_argument(parser) -> None:
    """The ``--root`` option every grading command takes (an ``argparse`` parser)."""
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="the course root holding nbgrader_config.py (default: here)",
    )


def nbgrader_command(*args: str) -> list[str]:
    """The command line that runs ``nbgrader ARGS`` with this interpreter."""
    return [sys.executable, "-c", NBGRADER, *args]


def venv_env(env=None, **extra: str) -> dict[str, str]:
    """``env`` (default: this process's environment) with this interpreter's ``bin/`` first on
    PATH (nbgrader runs ``alembic`` by name; a kernel's ``pip`` is the course's), and ``extra``."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return {**env, **extra}


def nbgrader(
    root: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``root`` with this interpreter's ``bin/`` first on PATH."""
    env = venv_env(env)
    cmd = nbgrader_command(*args)
    result = subprocess.run(cmd, cwd=root, env=env, text=True, capture_output=True)
    if check and result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"nbgrader {' '.join(args)} failed with exit code {result.returncode}")
    return result


def register_lessons(
    root: Path, target: Target | None = None, lessons: list[str] | None = None
) -> None:
    """Create the gradebook if needed and record every lesson's cells and points in it (or only
    those of ``lessons``).

    The lessons are generated into ``grading/release`` (a shard's: its own ``release/`` and
    gradebook) so that ``lessons/`` is never touched. A lesson already recorded in this gradebook
    from the same source (its stamp in ``release/<lesson>/``) is not generated again: each
    ``nbgrader generate_assignment`` costs seconds, on every grading run.
    """
    release = target.release if target else grading_dir(root) / "release"
    url = target.db_url if target else db_url(root)
    args = [f"--CourseDirectory.release_directory={release}"]
    if target is not None:
        target.folder.mkdir(parents=True, exist_ok=True)
        args.append(f"--CourseDirectory.db_url={target.db_url}")
    source = course_folder(root, "source")
    every = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
    wanted = sorted(lessons) if lessons else every
    stamps = {lesson: _registration_stamp(root, source / lesson, url) for lesson in wanted}
    recorded = _recorded_lessons(url)
    stale = [
        lesson
        for lesson in wanted
        if lesson not in recorded
        or _read(release / lesson / REGISTERED) != stamps[lesson]
        or not (release / lesson).is_dir()
    ]
    if not stale:
        return
    for pattern in ["*"] if not lessons and stale == every else stale:
        nbgrader(root, "generate_assignment", pattern, "--force", "--log-level=WARN", *args)
    for lesson in stale:
        (release / lesson / REGISTERED).write_text(stamps[lesson])


#: The stamp register_lessons leaves in release/<lesson>/: what the lesson was recorded from.
REGISTERED = ".registered"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _registration_stamp(root: Path, source: Path, url: str) -> str:
    """A digest of what registering a lesson depends on: its source files, the course's
    ``nbgrader_config.py`` and the gradebook it goes into."""
    digest = hashlib.sha256(url.encode())
    digest.update((Path(root) / course.NBGRADER_CONFIG.name).read_bytes())
    for path in sorted(source.rglob("*")):
        if path.is_file() and ".ipynb_checkpoints" not in path.parts:
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _recorded_lessons(url: str) -> set[str]:
    """The assignments the gradebook at ``url`` holds (none when it is not a readable SQLite
    file: then every lesson is registered)."""
    prefix = "sqlite:///"
    path = Path(url[len(prefix) :]) if url.startswith(prefix) else None
    if path is None or not path.is_file():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return {name for (name,) in db.execute("SELECT name FROM assignment")}
    except sqlite3.Error:
        return set()


def db_url(root: Path) -> str:
    return course_directory(root).db_url


def submissions(root: Path) -> dict[str, list[str]]:
    """lesson id -> students who submitted it, from ``grading/submitted/<student>/<lesson>/``."""
    found: dict[str, list[str]] = {}
    submitted = course_folder(root, "submitted")
    if not submitted.is_dir():
        return found
    for student in sorted(p for p in submitted.iterdir() if p.is_dir() and not p.is_symlink()):
        if not _plain(student.name):
            print(f"skipped {printable(str(student))}: a folder name that is not plain text")
            continue
        try:
            lessons = sorted(p for p in student.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError as exc:
            print(f"skipped {printable(str(student))}: {exc.strerror}")
            continue
        for lesson in lessons:
            if _plain(lesson.name):
                found.setdefault(lesson.name, []).append(student.name)
    return found


def _plain(name: str) -> bool:
    """A name nbgrader's gradebook can hold: printable UTF-8 text."""
    return name.isprintable()


def scores(root: Path) -> list[tuple[str, str, float, float]]:
    """(student, lesson, score, max_score) for every graded submission in the gradebook."""
    from nbgrader.api import Gradebook

    rows = []
    with Gradebook(db_url(root)) as gb:
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                rows.append((sub.student.id, assignment.name, sub.score, sub.max_score))
    return sorted(rows)


def released(root: Path) -> list[str]:
    """Lessons that have a release in ``lessons/`` (``make release`` writes it)."""
    return course.released_lesson_ids(root)


def course_setting(root: Path, section: str, name: str):
    """A value set in the course's nbgrader_config.py (``Exchange``, ``root``), or None."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    return config.get(section, {}).get(name)


def exchange_root(root: Path) -> Path | None:
    """``Exchange.root`` from the course's nbgrader_config.py (None when it sets none)."""
    value = course_setting(root, "Exchange", "root")
    return Path(value) if value else None
