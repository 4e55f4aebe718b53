"""Benchmark of grading a class: plain ``nbgrader autograde`` against the course's grader.

A synthetic class (``--students`` per lesson, default 40) is graded three ways, one after the
other in one run, each in its own fresh copy of the course with the same submissions:

* ``plain``: ``nbgrader autograde LESSON --force``, nbgrader's own executor, no sandbox;
* ``jobs1`` / ``jobs2`` (``--jobs 1 2``): ``make autograde`` (``python -m helpers.grading
  autograde --force``), bubblewrap sandbox and hardened executor, that many notebooks at a time.

The class is a realistic mix: most students solved everything, some left one or two exercises
unanswered, a few submit something hostile from the corpus of ``tests/support/hostile/`` (a crash, a
dying kernel, tampered tests, a file that is not a notebook). Each lesson is timed on its own;
the figures are wall-clock seconds per notebook, their ratio to plain nbgrader, the CPU time the
whole machine spent per notebook, and the peak memory of the grading process tree.

The run also times where one notebook's time goes (``breakdown``): a kernel's start, the
notebook's import cell, its other cells, and the kernel's shutdown (graceful, as nbgrader does,
and immediate, as the course's grader does), in a plain kernel outside any sandbox.

    python benchmarks/grading.py                      # make bench-grading
    python benchmarks/grading.py --students 12 --lesson 01 --jobs 1 2 3

The last line printed is one JSON object; it is also written to ``benchmarks/results/``.
Figures depend on the machine: compare the systems of one run, not runs of two machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the hostile corpus and the course copy

import nbformat  # noqa: E402
import psutil  # noqa: E402
from support import course_copy, nbgrader_env  # noqa: E402
from support.hostile import generate  # noqa: E402

from helpers import course  # noqa: E402
from helpers.grading.common import nbgrader_command  # noqa: E402

#: Hostile cases a class really sends, each cheap to grade (no time limit reached).
HOSTILE = ("syntax_error", "os_exit", "tests_tampered", "invalid_json", "swapped_weights")


def class_of(lesson: str, students: int, seed: int = 0) -> dict[str, object]:
    """student id -> a notebook (or a hostile case) for ``lesson``: about 80 % solved, 12 %
    with one or two exercises unanswered, the rest hostile."""
    rng = random.Random(f"{seed}-{lesson}")
    solved = generate.perfect(lesson)
    exercises = [
        c.metadata["nbgrader"]["grade_id"]
        for c in solved.cells
        if c.metadata.get("nbgrader", {}).get("solution")
        and c.metadata["nbgrader"].get("grade") is False
        and c.cell_type == "code"
    ]
    corpus = {c.student: c for c in generate.build() if c.lesson == lesson}
    hostile = [corpus[s] for s in HOSTILE if s in corpus] or [
        c for c in corpus.values() if c.category != "control"
    ]
    n_hostile = max(1, round(students * 0.08))
    n_wrong = max(1, round(students * 0.12))
    out: dict[str, object] = {}
    for i in range(students):
        sid = f"student{i:03d}"
        if i < n_hostile:
            out[sid] = hostile[i % len(hostile)]
        elif i < n_hostile + n_wrong:
            nb = solved
            for gid in rng.sample(exercises, k=min(len(exercises), rng.choice([1, 2]))):
                nb = generate.blank_exercise(nb, lesson, gid)
            out[sid] = nb
        else:
            out[sid] = solved
    return out


def write_class(dest: Path, lesson: str, members: dict[str, object]) -> None:
    for sid, item in members.items():
        folder = dest / course.FOLDERS["submitted"] / sid / lesson
        if isinstance(item, generate.Case):
            generate.write(item, folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            nbformat.write(item, folder / f"{lesson}.ipynb")


class Sampler:
    """Peak resident memory of a process and all its descendants, sampled every 0.2 s."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                top = psutil.Process(self.pid)
                procs = [top, *top.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self.thread.join()
        return self.peak


def _busy_cpu() -> float:
    """CPU-seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def timed(cmd: list[str], cwd: Path, must_succeed: bool = True) -> dict:
    env = nbgrader_env()
    start, cpu = time.monotonic(), _busy_cpu()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(process.pid)
        code = process.wait()
        peak = sampler.stop()
        log.seek(0)
        output = log.read()
    if code != 0 and must_succeed:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{output[-3000:]}")
    return {
        "exit_code": code,
        "seconds": time.monotonic() - start,
        "cpu_seconds": _busy_cpu() - cpu,
        "peak_mb": peak / 2**20,
        "output": output,
    }


def scores(root: Path, lesson: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    url = f"sqlite:///{root / 'grading' / 'gradebook.db'}"
    with Gradebook(url) as gb:
        return {s.student.id: s.score for s in gb.find_assignment(lesson).submissions}


def grade_plain(root: Path, lesson: str) -> dict:
    # nbgrader exits 1 when a notebook could not be graded (a dying kernel): part of the test
    cmd = nbgrader_command("autograde", lesson, "--force", "--log-level=ERROR")
    return timed(cmd, root, must_succeed=False)


def grade_course(root: Path, lesson: str, jobs: int) -> dict:
    cmd = [sys.executable, "-m", "helpers.grading", "autograde", "--root", str(root)]
    return timed([*cmd, "--lesson", lesson, "--jobs", str(jobs), "--force"], root)


def breakdown(lesson: str) -> dict:
    """Where one solved notebook's time goes, in a plain kernel (seconds, wall clock)."""
    from nbclient import NotebookClient

    nb = generate.perfect(lesson)
    path = course.notebook_path("source", lesson).parent
    result = {}
    for mode in ("graceful", "immediate"):
        nb_copy = nbformat.from_dict(json.loads(json.dumps(nb)))
        client = NotebookClient(
            nb_copy,
            timeout=300,
            kernel_name="python3",
            shutdown_kernel=mode,
            resources={"metadata": {"path": str(path)}},
        )
        t0 = time.monotonic()
        with client.setup_kernel():
            t1 = time.monotonic()
            first = True
            imports = 0.0
            for index, cell in enumerate(nb_copy.cells):
                if cell.cell_type != "code":
                    continue
                s = time.monotonic()
                client.execute_cell(cell, index)
                if first:
                    imports, first = time.monotonic() - s, False
            t2 = time.monotonic()
        t3 = time.monotonic()
        result[f"shutdown_{mode}_s"] = round(t3 - t2, 3)
        if mode == "graceful":
            result.update(
                kernel_start_s=round(t1 - t0, 3),
                import_cell_s=round(imports, 3),
                other_cells_s=round(t2 - t1 - imports, 3),
            )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=40, help="students per lesson")
    parser.add_argument("--lesson", action="append", help="only this lesson (01 works)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the course copies")
    args = parser.parse_args(argv)
    if args.students < 1:
        parser.error("--students must be at least 1")
    lessons = course.lesson_ids()
    if args.lesson:
        chosen = []
        for want in args.lesson:
            match = [x for x in lessons if x == want or x.startswith(f"{want}_")]
            if not match:
                parser.error(f"unknown lesson {want!r}; the lessons are {', '.join(lessons)}")
            chosen += match
        lessons = chosen
    os.environ["COURSE_FAST"] = "1"
    systems = ["plain", *[f"jobs{j}" for j in args.jobs]]
    work = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    report: dict = {
        "students_per_lesson": args.students,
        "cpus": os.cpu_count(),
        "machine": cpu_model(),
        "by_lesson": {},
    }
    try:
        for lesson in lessons:
            members = class_of(lesson, args.students, args.seed)
            row: dict = {"breakdown": breakdown(lesson)}
            graded: dict[str, dict[str, float]] = {}
            for system in systems:
                root = course_copy(work / f"{lesson}-{system}")
                write_class(root, lesson, members)
                subprocess.run(
                    nbgrader_command(
                        "generate_assignment",
                        lesson,
                        "--force",
                        "--log-level=ERROR",
                        "--CourseDirectory.release_directory=grading/release",
                    ),
                    cwd=root,
                    env=nbgrader_env(),
                    check=True,
                    capture_output=True,
                )
                if system == "plain":
                    run = grade_plain(root, lesson)
                else:
                    run = grade_course(root, lesson, int(system.removeprefix("jobs")))
                n = args.students
                graded[system] = scores(root, lesson)
                row[system] = {
                    "s_per_notebook": round(run["seconds"] / n, 3),
                    "cpu_s_per_notebook": round(run["cpu_seconds"] / n, 3),
                    "peak_mb": round(run["peak_mb"]),
                    "exit_code": run["exit_code"],
                }
                print(
                    f"{lesson} {system:>6}: {run['seconds'] / n:5.2f} s per notebook, "
                    f"{run['cpu_seconds'] / n:5.2f} CPU-s, peak {run['peak_mb']:.0f} MB",
                    flush=True,
                )
                if not args.keep:
                    shutil.rmtree(root)
            plain = row["plain"]["s_per_notebook"]
            for system in systems[1:]:
                row[system]["ratio_to_plain"] = round(row[system]["s_per_notebook"] / plain, 3)
            # On ordinary submissions (not the hostile ones) the graders must agree.
            ours = graded[systems[-1]]
            ordinary = [s for s, item in members.items() if not isinstance(item, generate.Case)]
            row["scores_differ"] = sorted(
                s for s in ordinary if graded["plain"].get(s) != ours.get(s)
            )
            row["breakdown"]["nbgrader_and_rest_s"] = round(
                plain
                - sum(row["breakdown"][k] for k in ("kernel_start_s", "import_cell_s"))
                - row["breakdown"]["other_cells_s"]
                - row["breakdown"]["shutdown_graceful_s"],
                3,
            )
            report["by_lesson"][lesson] = row
            ratios = ", ".join(f"{s} {row[s]['ratio_to_plain']:.2f}x" for s in systems[1:])
            print(f"{lesson}: time per notebook relative to plain nbgrader: {ratios}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"course copies kept in {work}")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"grading-{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
