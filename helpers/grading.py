"""The instructor's grading commands, run by ``make autograde | feedback | export`` and friends.

Real nbgrader does the work; this module makes it trustworthy for a whole class. Run from the
course root::

    python -m helpers.grading autograde          # every submission in grading/submitted/
    python -m helpers.grading feedback           # grading/feedback/..., hidden tests removed
    python -m helpers.grading export             # grading/grades.csv
    python -m helpers.grading release-assignments  # lessons/ -> the nbgrader exchange
    python -m helpers.grading collect            # the exchange -> grading/submitted/
    python -m helpers.grading release-feedback   # grading/feedback/ -> the exchange

``autograde`` works in four steps:

1. **register**: every lesson of ``solutions/`` is recorded in the gradebook (generated into
   ``grading/release``, so ``lessons/`` is never touched);
2. **stage**: each submission is read (never modified) and a clean copy is written to
   ``grading/staged/job<N>/<student>/<lesson>/``: a file that is not a notebook, a truncated or
   oversized file, an unknown notebook format, a missing or renamed notebook are caught here with
   a reason; test cells are put back as released, cell metadata (grade ids, points, types) is
   restored, duplicated cells lose their grading role, and every change is noted;
3. **grade**: ``nbgrader autograde`` runs the staged copies, each notebook in its own sandboxed
   kernel (:mod:`helpers.sandbox`: the gradebook, solutions and other students hidden, the course
   read-only, no network, limits on memory, CPU, processes and file size) with a hardened
   executor (:mod:`helpers.grading_execute`: a kernel that dies or hangs costs the cells that did
   not run, not the whole notebook);
4. **record**: every submission ends with a score, never "None"; each lost point gets a reason,
   written to ``grading/reasons.csv``, ``grading/reasons/<lesson>.json``, the gradebook's
   comments (shown in feedback) and the summary printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from helpers import sandbox

STAGED = "grading/staged"
EXECUTOR = "helpers.grading_execute.HardenedExecute"
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


# ----------------------------------------------------------------------------------------------
# nbgrader and the course layout


def lessons(root: Path) -> list[str]:
    """Lesson ids: the folders of ``solutions/`` that hold a notebook of the same name."""
    source = root / "solutions"
    return sorted(p.name for p in source.iterdir() if (p / f"{p.name}.ipynb").is_file())


# jsonschema (imported by nbformat, so by every nbgrader command) builds a grammar for its
# optional IRI format check when it is imported, which costs seconds of CPU per process; nbgrader
# never validates IRIs, so the grader's processes skip that module (jsonschema then simply has
# no "iri" format check).
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
NBGRADER = (
    "import sys; sys.modules.setdefault('rfc3987_syntax', None); "
    "from nbgrader.apps.nbgraderapp import main; sys.exit(main())"
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


def register_lessons(root: Path) -> None:
    """Create the gradebook if needed and record every lesson's cells and points in it.

    The lessons are generated into ``grading/release`` so that ``lessons/`` is never touched.
    """
    nbgrader(
        root,
        "generate_assignment",
        "*",
        "--force",
        "--CourseDirectory.release_directory=grading/release",
        "--log-level=WARN",
    )


def db_url(root: Path) -> str:
    return f"sqlite:///{root / 'grading' / 'gradebook.db'}"


def submissions(root: Path) -> dict[str, list[str]]:
    """lesson id -> students who submitted it, from ``grading/submitted/<student>/<lesson>/``."""
    found: dict[str, list[str]] = {}
    submitted = root / "grading" / "submitted"
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


# ----------------------------------------------------------------------------------------------
# Step 2: staging


@dataclass
class Staged:
    """What staging made of one submission."""

    student: str
    lesson: str
    notes: list[str] = field(default_factory=list)
    rejected: str | None = None  # why nothing could be graded, or None
    job: int = 0  # which parallel grading process runs it


def _release_cells(release: dict) -> dict[str, dict]:
    return {
        c["metadata"]["nbgrader"]["grade_id"]: c
        for c in release["cells"]
        if "grade_id" in c.get("metadata", {}).get("nbgrader", {})
    }


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _text(source) -> str | None:
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    return None


def _read_notebook(path: Path, settings: Settings) -> tuple[dict | None, str | None, list[str]]:
    """(notebook as a v4 dict, rejection reason, notes) for a submitted file."""
    import nbformat

    size = path.stat().st_size
    if size > settings.max_notebook_mb * MB:
        return (
            None,
            (
                f"{path.name} is {size / MB:.0f} MB, over the {settings.max_notebook_mb} MB limit "
                "(clear the outputs and submit again)"
            ),
            [],
        )
    if size == 0:
        return None, f"{path.name} is an empty file", []
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return (
            None,
            f"{path.name} is not a notebook: not valid JSON ({str(exc)[:80]}); "
            "the file may be truncated or corrupted",
            [],
        )
    if not isinstance(data, dict):
        return None, f"{path.name} is not a notebook: JSON of type {type(data).__name__}", []
    version = data.get("nbformat")
    notes = []
    if version == 3:
        try:
            data = json.loads(nbformat.writes(nbformat.reads(raw.decode(), as_version=4)))
            notes.append("converted from notebook format 3")
        except Exception as exc:
            return None, f"{path.name}: notebook format 3 that cannot be converted ({exc})", []
    elif version != 4:
        return None, f"{path.name} has notebook format {version!r}; expected 4", []
    if not isinstance(data.get("cells"), list):
        return None, f"{path.name} is not a notebook: it has no list of cells", []
    return data, None, notes


def sanitize(data: dict, release: dict) -> tuple[dict, list[str]]:
    """A clean notebook built from a submitted one; notes on everything put back.

    Locked cells (tests, read-only set-up) come back as released; exercise cells keep the
    student's code but get their released metadata and type; cells whose grading metadata does
    not match the release lose it (they still run, as ordinary cells); outputs are dropped.
    """
    import nbformat

    known = _release_cells(release)
    notes: list[str] = []
    seen: set[str] = set()
    cells = []
    for index, raw in enumerate(data["cells"]):
        if not isinstance(raw, dict):
            notes.append(f"cell {index} is not a cell: dropped")
            continue
        kind = raw.get("cell_type")
        source = _text(raw.get("source", ""))
        if kind not in ("code", "markdown", "raw") or source is None:
            notes.append(f"cell {index} is malformed (type {kind!r}): dropped")
            continue
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        new_meta: dict = {}
        tags = meta.get("tags")
        if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
            new_meta["tags"] = list(tags)
        grading = meta.get("nbgrader")
        if grading is not None:
            grade_id = grading.get("grade_id") if isinstance(grading, dict) else None
            ref = known.get(grade_id) if isinstance(grade_id, str) else None
            if ref is None:
                notes.append(
                    f"cell {index}: grading metadata with unknown id {grade_id!r} removed "
                    "(changed grade_id?)"
                )
            elif grade_id in seen:
                notes.append(f"cell {index}: a second copy of {grade_id} runs as an ordinary cell")
            else:
                seen.add(grade_id)
                ref_meta = ref["metadata"]["nbgrader"]
                new_meta["nbgrader"] = copy.deepcopy(ref_meta)
                changed = sorted(
                    k
                    for k in ("grade", "solution", "locked", "points")
                    if grading.get(k) != ref_meta.get(k)
                )
                if changed:
                    notes.append(f"{grade_id}: metadata {', '.join(changed)} restored")
                if kind != ref["cell_type"]:
                    notes.append(f"{grade_id}: cell type {kind} restored to {ref['cell_type']}")
                    kind = ref["cell_type"]
                if ref_meta.get("locked") and source != _text(ref["source"]):
                    notes.append(f"{grade_id}: edited read-only cell restored")
                    source = _text(ref["source"])
        new = {
            "code": nbformat.v4.new_code_cell,
            "markdown": nbformat.v4.new_markdown_cell,
            "raw": nbformat.v4.new_raw_cell,
        }[kind](source=source, metadata=new_meta)
        new["id"] = f"cell-{len(cells)}"
        cells.append(new)
    # Put back missing graded cells as released, after the cell that precedes them in the
    # release (nbgrader's own add_missing_cells fails when that cell is missing too).
    previous = None
    for grade_id, ref in known.items():
        if grade_id not in seen:
            meta = ref["metadata"]["nbgrader"]
            kind = "test" if meta.get("grade") and not meta.get("solution") else "exercise"
            if meta.get("solution"):
                notes.append(f"{grade_id}: deleted exercise cell put back unanswered")
            else:
                notes.append(f"{grade_id}: deleted {kind} cell put back")
            new = nbformat.from_dict(copy.deepcopy(ref))
            if new.cell_type == "code":
                new.outputs = []
            at = 0
            if previous is not None:
                at = 1 + next(i for i, c in enumerate(cells) if _grade_id(c) == previous)
            new["id"] = f"restored-{grade_id}"[:64]
            cells.insert(at, new)
            seen.add(grade_id)
        previous = grade_id
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(release["metadata"]))
    return nb, notes


def _copy_files(source: Path, dest: Path, settings: Settings, notes: list) -> None:
    """Copy a submission's other regular files (not notebooks, links or oversized ones)."""
    total, count = 0, 0
    for folder, dirs, files in os.walk(source):  # links to folders are not followed
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(source)
            if path.is_symlink():
                notes.append(f"ignored link {rel}")
                continue
            if not path.is_file() or path.suffix == ".ipynb":
                continue
            size = path.stat().st_size
            if rel.name == "timestamp.txt":
                from nbgrader.utils import parse_utc

                try:
                    parse_utc(path.read_text().strip())
                except Exception:
                    notes.append("ignored an unreadable timestamp.txt")
                    continue
            if total + size > settings.max_files_mb * MB or count >= 200:
                notes.append(f"ignored {rel} ({size / MB:.1f} MB): over the limit for files")
                continue
            total, count = total + size, count + 1
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def stage(root: Path, lesson: str, student: str, settings: Settings, job: int = 0) -> Staged:
    """Write a clean copy of ``student``'s ``lesson`` into ``grading/staged/job<job>``."""
    import nbformat

    result = Staged(student, lesson, job=job)
    source = root / "grading" / "submitted" / student / lesson
    dest = root / STAGED / f"job{job}" / student / lesson
    if dest.exists():
        shutil.rmtree(dest)
    expected = f"{lesson}.ipynb"
    notebooks = sorted(
        p.name
        for p in source.iterdir()
        if p.suffix == ".ipynb" and not p.is_symlink() and p.is_file()
    )
    if expected in notebooks:
        chosen = expected
        others = [n for n in notebooks if n != expected]
        if others:
            result.notes.append(f"ignored other notebooks: {', '.join(others)}")
    elif len(notebooks) == 1:
        chosen = notebooks[0]
        result.notes.append(f"graded {chosen} in place of the missing {expected}")
    else:
        found = f" (found {', '.join(notebooks)})" if notebooks else ""
        if (source / expected).is_symlink():
            found = f" ({expected} is a link)"
        result.rejected = f"no {expected} in the submission{found}"
        return result
    data, rejected, notes = _read_notebook(source / chosen, settings)
    result.notes += notes
    if rejected:
        result.rejected = rejected
        return result
    release = json.loads((root / "grading" / "release" / lesson / expected).read_text())
    nb, notes = sanitize(data, release)
    result.notes += notes
    dest.mkdir(parents=True)
    _copy_files(source, dest, settings, result.notes)
    nbformat.write(nb, dest / expected)
    return result


# ----------------------------------------------------------------------------------------------
# Step 3: nbgrader with the sandbox


@dataclass
class Run:
    """One grading run's sandbox: its private folder, kernelspecs and nbgrader arguments.

    With ``jobs`` > 1 the students of a lesson are split into that many groups, each graded by
    its own ``nbgrader autograde`` process (kernels as distinct users, sockets apart).
    """

    mode: str
    config: sandbox.SandboxConfig
    warnings: list[str]
    jupyter_path: Path
    jobs: int

    @classmethod
    def start(cls, root: Path, settings: Settings) -> Run:
        mode, uid, warnings = sandbox.choose_mode(settings.mode)
        run_dir = tempfile.mkdtemp(prefix="rnn-course-grading-")
        repo = Path(__file__).resolve().parent.parent
        hide = [
            root / "grading",
            root / "solutions",
            root / ".git",
            repo / "grading",
            repo / "solutions",
            repo / ".git",
        ]
        exchange = exchange_root(root)
        if exchange is not None:  # other students' submissions, on a JupyterHub
            hide.append(exchange)
        extra = os.environ.get("COURSE_SANDBOX_HIDE", "")
        hide += [Path(p) for p in extra.split(os.pathsep) if p]
        config = sandbox.SandboxConfig(
            mode=mode,
            run_dir=run_dir,
            ipc_dir=os.path.join(run_dir, "ipc"),
            hide=[str(p) for p in hide if p.exists()],
            readonly=[*sandbox.python_paths(), str(repo)],
            limits=settings.limits,
            uid=uid,
        )
        sandbox.prepare_run_dir(config)
        jobs = max(1, settings.jobs)
        uids = sandbox.spare_uids(jobs) if uid is not None else [None] * jobs
        path = None
        for job, job_uid in enumerate(uids):
            job_config = sandbox.prepare_job(config, job, job_uid)
            path = sandbox.write_kernelspec(job_config, f"{sandbox.KERNEL_NAME}-{job}")
        return cls(mode, config, warnings, path, jobs)

    def describe(self) -> str:
        if self.mode == "bwrap":
            who = "an unprivileged user" if self.config.uid is not None else "the grader's user"
            return f"sandbox: bubblewrap, kernels run as {who}; {self.config.limits.describe()}"
        return f"sandbox: {self.mode.upper()} ONLY; {self.config.limits.describe()}"

    def args(self, root: Path, settings: Settings, job: int, lesson: str) -> list[str]:
        args = [f"--CourseDirectory.submitted_directory={STAGED}/job{job}"]
        if self.jobs > 1:  # several processes write the gradebook: wait for each other's locks
            args.append(f"--CourseDirectory.db_url={db_url(root)}?timeout=120")
        args += [f"--Autograde.autograde_preprocessors={p}" for p in AUTOGRADE_PREPROCESSORS]
        args += [
            f"--HardenedExecute.kernel_name={sandbox.KERNEL_NAME}-{job}",
            f"--HardenedExecute.source_root={root / 'grading' / 'release'}",
            f"--HardenedExecute.limits={self.config.limits.describe()}",
            f"--HardenedExecute.max_outputs={settings.max_outputs}",
        ]
        timeout = settings.lesson_timeouts.get(lesson, settings.timeout)
        if timeout:
            args.append(f"--HardenedExecute.timeout={timeout}")
        if self.mode == "bwrap":
            # TCP does not cross network namespaces: unix sockets at an absolute path do.
            args += [
                "--KernelManager.transport=ipc",
                f"--KernelManager.ip={os.path.join(self.config.ipc_dir, f'job{job}', 'kernel')}",
            ]
        return args

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["JUPYTER_PATH"] = os.pathsep.join(
            [str(self.jupyter_path), *filter(None, [os.environ.get("JUPYTER_PATH")])]
        )
        env.setdefault("COURSE_FAST", "1")
        runtime = Path(self.config.run_dir) / "runtime"
        runtime.mkdir(exist_ok=True)
        env["JUPYTER_RUNTIME_DIR"] = str(runtime)
        return env

    def grade(self, root: Path, lesson: str, settings: Settings, jobs: list[int]) -> str:
        """Run ``nbgrader autograde`` for ``lesson``, one process per job; their logs."""
        bin_dir = str(Path(sys.executable).parent)
        env = self.env()
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        # Each process logs to its own file, not a pipe: a pipe that is read only after the
        # jobs before it have finished fills up (a fork bomb's kernels log a lot) and stalls
        # its job until then.
        running = []
        with contextlib.ExitStack() as stack:
            for job in jobs:
                cmd = nbgrader_command("autograde", lesson, "--force")
                cmd += ["--log-level=WARN", *self.args(root, settings, job, lesson)]
                log = stack.enter_context(tempfile.TemporaryFile("w+", dir=self.config.run_dir))
                process = subprocess.Popen(
                    cmd, cwd=root, env=env, text=True, stdout=log, stderr=subprocess.STDOUT
                )
                running.append((process, log))
            logs = []
            for process, log in running:
                process.wait()
                log.seek(0)
                logs.append(log.read())
        return "".join(logs)

    def close(self) -> None:
        shutil.rmtree(self.config.run_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Step 4: scores and reasons


GRADER_ERRORS = ("NotRun", "DeadKernelError", "KernelStopped", "CellTimeoutError", "GraderError")


def _cell_reason(cell) -> str | None:
    """Why a cell failed, from its outputs (the grader's own verdicts first)."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    errors.sort(key=lambda o: o.get("ename") not in GRADER_ERRORS)
    for out in errors:
        if out.get("output_type") == "error":
            value = ANSI.sub("", str(out.get("evalue", ""))).strip()
            lines = value.splitlines()
            first = lines[0] if lines else ""
            text = f"{out.get('ename')}: {first}" if first else str(out.get("ename"))
            hint = next((x.strip() for x in lines if x.strip().startswith("likely cause:")), "")
            return _explain(f"{text} ({hint})" if hint else text)
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            first = ANSI.sub("", out.get("text", "")).strip().splitlines()
            return "wrote to stderr during the test: " + (first[0][:200] if first else "")
    return None


def _explain(text: str) -> str:
    """Name the limit behind common resource errors."""
    hints = (
        ("MemoryError", "memory limit"),
        ("can't allocate memory", "memory limit"),
        ("File too large", "file size limit"),
        ("Resource temporarily unavailable", "process limit"),
        ("can't start new thread", "process limit"),
        ("Network is unreachable", "no network while grading"),
        ("Temporary failure in name resolution", "no network while grading"),
        ("Read-only file system", "the course is read-only while grading"),
    )
    for key, hint in hints:
        if key in text and hint not in text:
            return f"{text[:400]} ({hint})"
    return text[:400]


def _pairs(release: dict) -> dict[str, str | None]:
    """Test cell grade_id -> the exercise cell it checks (the closest solution cell above)."""
    pairs: dict[str, str | None] = {}
    last = None
    for cell in release["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            last = meta.get("grade_id")
        elif meta.get("grade"):
            pairs[meta["grade_id"]] = last
    return pairs


def record(root: Path, lesson: str, staged: dict[str, Staged], log: str, run: Run) -> list[dict]:
    """Give every submission of ``lesson`` a score and a reason for each lost point."""
    import nbformat
    from nbgrader.api import Gradebook, MissingEntry

    release = json.loads((root / "grading" / "release" / lesson / f"{lesson}.ipynb").read_text())
    pairs = _pairs(release)
    failed = set(
        re.findall(
            rf"error processing assignment '{re.escape(lesson)}' for student "
            r"'([^']+)'",
            log,
        )
    )
    results = []
    with Gradebook(db_url(root)) as gb:
        for student, info in sorted(staged.items()):
            autograded = root / "grading" / "autograded" / student / lesson / f"{lesson}.ipynb"
            notes = list(info.notes)
            status = "graded"
            blanket = None
            if info.rejected:
                status, blanket = "rejected", info.rejected
                for stale in (autograded.parent, root / "grading" / "feedback" / student / lesson):
                    if stale.exists():  # from an earlier run: must not be handed back
                        shutil.rmtree(stale)
            elif student in failed or not autograded.is_file():
                status = "grader-error"
                blanket = "nbgrader could not grade this notebook (see grading/logs)"
            gb.update_or_create_student(student)
            try:
                sub = gb.find_submission(lesson, student)
            except MissingEntry:
                sub = gb.add_submission(lesson, student)
            executed = {}
            if status == "graded":
                nb = nbformat.read(str(autograded), as_version=4)
                executed = {
                    c.metadata["nbgrader"]["grade_id"]: c
                    for c in nb.cells
                    if "grade_id" in c.metadata.get("nbgrader", {})
                }
            cells = []
            comments: dict[str, list[str]] = {}
            for nb_sub in sub.notebooks:
                for grade in sorted(nb_sub.grades, key=lambda g: g.name):
                    if blanket is not None:
                        grade.auto_score = 0.0
                        grade.manual_score = None
                        grade.needs_manual_grade = status == "grader-error"
                    elif grade.auto_score is None and grade.manual_score is None:
                        grade.auto_score = 0.0
                        grade.needs_manual_grade = True
                    score = grade.score or 0.0
                    reason = None
                    if score < grade.max_score:
                        reason = blanket or _cell_reason(executed.get(grade.name, {}))
                        reason = reason or "no points: the test cell did not pass"
                        exercise = pairs.get(grade.name)
                        cause = _cell_reason(executed.get(exercise, {})) if exercise else None
                        if cause and not blanket and not reason.startswith("NotRun"):
                            reason = f"{reason} [the exercise cell {exercise} raised {cause}]"
                    cells.append(
                        {
                            "cell": grade.name,
                            "score": score,
                            "max_score": grade.max_score,
                            "reason": reason,
                        }
                    )
                    if reason:
                        target = pairs.get(grade.name)
                        comments.setdefault(target or "", []).append(
                            f"{grade.name}: {score:g}/{grade.max_score:g}, {reason}"
                        )
                if notes and nb_sub.comments:
                    first = pairs.get(next(iter(pairs), ""), None) or ""
                    comments.setdefault(first, []).insert(0, "grader notes: " + "; ".join(notes))
                for comment in nb_sub.comments:
                    lines = comments.get(comment.name)
                    previous = comment.auto_comment or ""
                    if previous.startswith("Autograder:"):  # ours, from an earlier run
                        previous = ""
                    if lines:
                        text = "Autograder: " + "\n".join(lines)
                        comment.auto_comment = f"{previous}\n{text}" if previous else text
                    else:
                        comment.auto_comment = previous or None
            gb.db.commit()
            total = sum(c["score"] for c in cells)
            results.append(
                {
                    "student": student,
                    "lesson": lesson,
                    "status": status,
                    "score": total,
                    "max_score": sum(c["max_score"] for c in cells),
                    "notes": notes + ([blanket] if blanket else []),
                    "cells": cells,
                    "sandbox": run.describe(),
                }
            )
    return results


def write_reasons(root: Path, lesson: str, results: list[dict]) -> None:
    """Update ``grading/reasons/<lesson>.json`` with ``results``; rewrite ``reasons.csv``."""
    folder = root / "grading" / "reasons"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{lesson}.json"
    merged = {r["student"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    merged.update({r["student"]: r for r in results})
    rows = [merged[s] for s in sorted(merged)]
    path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    rows = []
    for path in sorted(folder.glob("*.json")):
        for r in json.loads(path.read_text()):
            for note in r["notes"]:
                rows.append([r["student"], r["lesson"], "submission", "", "", note])
            for c in r["cells"]:
                rows.append(
                    [r["student"], r["lesson"], c["cell"], c["score"], c["max_score"], c["reason"]]
                )
    with open(root / "grading" / "reasons.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", "lesson", "item", "score", "max_score", "reason"])
        writer.writerows(sorted(rows, key=lambda r: (r[0], r[1])))


def print_summary(results: list[dict]) -> None:
    print(f"\n{'student':24} {'lesson':20} {'score':>9}  reasons for lost points")
    for r in sorted(results, key=lambda r: (r["lesson"], r["student"])):
        lost = [c for c in r["cells"] if c["reason"]]
        score = f"{r['score']:g}/{r['max_score']:g}"
        first = ""
        if r["status"] != "graded":
            first = f"[{r['status']}] {r['notes'][-1]}"
        elif lost:
            first = f"{lost[0]['cell']}: {lost[0]['reason']}"
        print(f"{r['student'][:24]:24} {r['lesson'][:20]:20} {score:>9}  {first[:110]}")
        rest = lost[1:] if r["status"] == "graded" else []
        for c in rest:
            print(f"{'':56}{c['cell']}: {str(c['reason'])[:100]}")
        if r["status"] == "graded" and r["notes"]:
            print(f"{'':56}notes: {'; '.join(r['notes'])[:100]}")


# ----------------------------------------------------------------------------------------------
# Commands


def autograde(
    root: Path,
    settings: Settings | None = None,
    only: list[str] | None = None,
    students: list[str] | None = None,
) -> int:
    """Grade every submission (or only those of ``only`` lessons / ``students``)."""
    settings = settings or Settings()
    found = submissions(root)
    if only:
        found = {k: v for k, v in found.items() if k in only}
    if students:
        found = {k: [s for s in v if s in students] for k, v in found.items()}
        found = {k: v for k, v in found.items() if v}
    if not found:
        print(
            f"nothing to grade: put submissions in {root / 'grading/submitted'}/<student>/<lesson>/"
        )
        return 0
    register_lessons(root)
    known = set(lessons(root))
    run = Run.start(root, settings)
    for warning in run.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(run.describe())
    logs = root / "grading" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    everything = []
    try:
        for lesson, students in sorted(found.items()):
            if lesson not in known:
                print(f"skipped {lesson}: not a lesson of this course ({', '.join(students)})")
                continue
            for old in (root / STAGED).glob(f"job*/*/{lesson}"):
                shutil.rmtree(old)  # earlier runs, and students who no longer submit
            staged = {
                s: stage(root, lesson, s, settings, i % run.jobs) for i, s in enumerate(students)
            }
            ready = [s for s, info in staged.items() if not info.rejected]
            print(f"autograding {lesson}: {len(ready)} of {len(students)} submission(s) runnable")
            jobs = sorted({staged[s].job for s in ready})
            log = run.grade(root, lesson, settings, jobs) if ready else ""
            (logs / f"autograde-{lesson}.log").write_text(log)
            results = record(root, lesson, staged, log, run)
            write_reasons(root, lesson, results)
            everything += results
    finally:
        run.close()
    print_summary(everything)
    for warning in run.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"\nreasons: {root / 'grading' / 'reasons.csv'}")
    return 0


def feedback(root: Path) -> int:
    nbgrader(root, "generate_feedback", "*", "--force", "--log-level=WARN")
    print(f"feedback written to {root / 'grading' / 'feedback'} (hidden tests removed)")
    return 0


def export(root: Path) -> int:
    target = root / "grading" / "grades.csv"
    nbgrader(root, "export", f"--to={target}", "--log-level=WARN")
    print(f"grades written to {target}")
    return 0


def released(root: Path) -> list[str]:
    """Lessons that have a release in ``lessons/`` (``make release`` writes it)."""
    return [x for x in lessons(root) if (root / "lessons" / x / f"{x}.ipynb").is_file()]


def course_setting(root: Path, section: str, name: str):
    """A value set in the course's nbgrader_config.py (``Exchange``, ``root``), or None."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    return config.get(section, {}).get(name)


def exchange_root(root: Path) -> Path | None:
    """``Exchange.root`` from the course's nbgrader_config.py (None when it sets none)."""
    value = course_setting(root, "Exchange", "root")
    return Path(value) if value else None


def release_assignments(root: Path, only: list[str] | None = None) -> int:
    """Put every released lesson of ``lessons/`` into the exchange, where students fetch it."""
    register_lessons(root)
    for lesson in released(root):
        if not only or lesson in only:
            nbgrader(root, "release_assignment", lesson, "--force", "--log-level=WARN")
            print(f"released {lesson} to the exchange")
    return 0


def collect(root: Path, only: list[str] | None = None) -> int:
    """Copy the latest submission of every student from the exchange to grading/submitted/."""
    exchange = exchange_root(root)
    course = course_setting(root, "CourseDirectory", "course_id")
    inbound = exchange / course / "inbound" if exchange and course else None
    for lesson in released(root):
        if only and lesson not in only:
            continue
        if inbound is not None and inbound.is_dir() and not any(inbound.glob(f"*+{lesson}+*")):
            continue  # nobody submitted it
        nbgrader(root, "collect", lesson, "--update", "--log-level=WARN")
    found = submissions(root)
    for lesson, students in sorted(found.items()):
        print(f"{lesson}: {len(students)} submission(s) in grading/submitted")
    return 0


def release_feedback(root: Path, only: list[str] | None = None) -> int:
    """Put the feedback of every graded submission into the exchange for students to fetch."""
    for lesson in lessons(root):
        if only and lesson not in only:
            continue
        if any((root / "grading" / "feedback").glob(f"*/{lesson}")):
            nbgrader(root, "release_feedback", lesson, "--log-level=WARN")
            print(f"released feedback for {lesson}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grading",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = {
        "autograde": None,
        "feedback": feedback,
        "export": export,
        "release-assignments": release_assignments,
        "collect": collect,
        "release-feedback": release_feedback,
    }
    parser.add_argument("command", choices=list(commands))
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="the course root holding nbgrader_config.py (default: here)",
    )
    limits = sandbox.Limits()
    env = os.environ.get
    group = parser.add_argument_group("autograde")
    parser.add_argument(
        "--lesson", action="append", help="only this lesson (repeatable; not for feedback/export)"
    )
    group.add_argument("--student", action="append", help="grade only this student (repeatable)")
    group.add_argument(
        "--timeout",
        action="append",
        default=[t for t in env("COURSE_GRADING_TIMEOUT", "").split(",") if t],
        metavar="SECONDS or LESSON=SECONDS",
        help="seconds per cell, for every lesson or one (repeatable; default: Execute.timeout "
        "of nbgrader_config.py)",
    )
    group.add_argument(
        "--sandbox",
        choices=["auto", "bwrap", "rlimits", "off"],
        default=env("COURSE_SANDBOX", "auto"),
        help="auto: bubblewrap when it works, else resource limits only (loudly)",
    )
    for name, unit in (
        ("memory_mb", "MB"),
        ("cpu_s", "s"),
        ("file_mb", "MB"),
        ("processes", ""),
        ("tmp_mb", "MB"),
    ):
        default = int(env(f"COURSE_GRADING_{name.upper()}", getattr(limits, name)))
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=default,
            help=f"limit per kernel (default {default}{unit})",
        )
    group.add_argument(
        "--max-notebook-mb",
        type=int,
        default=int(env("COURSE_GRADING_MAX_NOTEBOOK_MB", "50")),
        help="larger submitted notebooks are rejected (default 50)",
    )
    group.add_argument(
        "--max-outputs",
        type=int,
        default=int(env("COURSE_GRADING_MAX_OUTPUTS", "200")),
        help="outputs (prints, plots) a cell may produce before the rest is dropped",
    )
    group.add_argument(
        "--jobs",
        type=int,
        default=int(env("COURSE_GRADING_JOBS", "1")),
        help="grade this many notebooks at a time (default 1; one per spare CPU core)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "nbgrader_config.py").is_file():
        parser.error(f"{root} has no nbgrader_config.py: run from the course root")
    if args.command in ("release-assignments", "collect", "release-feedback"):
        return commands[args.command](root, args.lesson)
    if args.command != "autograde":
        return commands[args.command](root)
    timeout, lesson_timeouts = None, {}
    for value in args.timeout:
        lesson, _, seconds = value.rpartition("=")
        if not seconds.isdigit():
            parser.error(f"--timeout takes SECONDS or LESSON=SECONDS, got {value!r}")
        if lesson:
            lesson_timeouts[lesson] = int(seconds)
        else:
            timeout = int(seconds)
    settings = Settings(
        timeout=timeout,
        lesson_timeouts=lesson_timeouts,
        mode=args.sandbox,
        limits=sandbox.Limits(
            memory_mb=args.memory_mb,
            cpu_s=args.cpu_s,
            file_mb=args.file_mb,
            processes=args.processes,
            tmp_mb=args.tmp_mb,
        ),
        max_notebook_mb=args.max_notebook_mb,
        jobs=args.jobs,
        max_outputs=args.max_outputs,
    )
    return autograde(root, settings, args.lesson, args.student)


if __name__ == "__main__":
    raise SystemExit(main())
