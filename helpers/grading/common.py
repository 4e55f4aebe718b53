"""What every step of the grader shares: settings, the course's nbgrader configuration (read
with nbgrader's own :class:`~nbgrader.coursedir.CourseDirectory`) and running nbgrader."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from helpers import course
from helpers.grading import sandbox

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


@dataclass
class Settings:
    """How ``autograde`` runs; every field has a command-line flag."""

    timeout: int | None = None  # seconds per cell; None: nbgrader_config.py's Execute.timeout
    lesson_timeouts: dict[str, int] = field(default_factory=dict)  # lesson id -> seconds
    mode: str = "auto"  # the sandbox: auto | bwrap | rlimits | off
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    max_notebook_mb: int = 50
    max_files_mb: int = 20  # other files copied with a submission, in total
    jobs: int = 1  # nbgrader processes grading at the same time
    max_outputs: int = 200  # outputs a cell may produce before the rest is dropped


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
    return Path(root) / course.GRADING.relative_to(course.ROOT)


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


# jsonschema (imported by nbformat, so by every nbgrader command) builds a grammar for its
# optional IRI format check when it is imported, which costs seconds of CPU per process; nbgrader
# never validates IRIs, so the grader's processes skip that module (jsonschema then simply has
# no "iri" format check).
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
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


def nbgrader(
    root: Path, *args: str, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``root`` with this interpreter's ``bin/`` first on PATH."""
    env = dict(os.environ if env is None else env)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
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
    gradebook) so that ``lessons/`` is never touched.
    """
    release = target.release if target else Path(root) / "grading" / "release"
    args = [f"--CourseDirectory.release_directory={release}"]
    if target is not None:
        target.folder.mkdir(parents=True, exist_ok=True)
        args.append(f"--CourseDirectory.db_url={target.db_url}")
    for pattern in sorted(lessons) if lessons else ["*"]:
        nbgrader(root, "generate_assignment", pattern, "--force", "--log-level=WARN", *args)


def db_url(root: Path) -> str:
    return course_directory(root).db_url


def submissions(root: Path) -> dict[str, list[str]]:
    """lesson id -> students who submitted it, from ``grading/submitted/<student>/<lesson>/``."""
    found: dict[str, list[str]] = {}
    submitted = course_folder(root, "submitted")
    if not submitted.is_dir():
        return found
    for student in sorted(p for p in submitted.iterdir() if p.is_dir() and not p.is_symlink()):
        for lesson in sorted(p for p in student.iterdir() if p.is_dir() and not p.is_symlink()):
            found.setdefault(lesson.name, []).append(student.name)
    return found


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
    return [
        x for x in course.lesson_ids(root) if course.notebook_path("lessons", x, root).is_file()
    ]


def course_setting(root: Path, section: str, name: str):
    """A value set in the course's nbgrader_config.py (``Exchange``, ``root``), or None."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    return config.get(section, {}).get(name)


def exchange_root(root: Path) -> Path | None:
    """``Exchange.root`` from the course's nbgrader_config.py (None when it sets none)."""
    value = course_setting(root, "Exchange", "root")
    return Path(value) if value else None
