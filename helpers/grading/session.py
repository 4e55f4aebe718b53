"""Step 3 of ``autograde``: the sandbox every kernel runs in, and the nbgrader settings of each
grading process (:mod:`helpers.grading.worker`)."""

from __future__ import annotations

import compileall
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpers import course
from helpers.grading import sandbox
from helpers.grading.common import (
    AUTOGRADE_PREPROCESSORS,
    Target,
    exchange_root,
    grading_dir,
    venv_env,
)
from helpers.grading.settings import Settings


def kernel_folders(repo: Path) -> list[Path]:
    """The course's folders a sandboxed kernel may read (besides the interpreter and the
    system): the helpers package it imports, which carries the data, diagrams and checkpoint the
    lessons load. The rest of the repository (solutions, lessons, grading, the git history) is
    not in the sandbox at all."""
    return [repo / "helpers"]


@dataclass
class Run:
    """One grading run's sandbox: its private folder, kernelspecs and nbgrader arguments.

    With ``jobs`` > 1 that many worker processes grade at the same time, each with its own
    kernelspec (kernels as distinct users, sockets apart) and staging folder.
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
        repo = course.ROOT
        hide = [
            grading_dir(root),
            root / course.SOLUTIONS.name,
            root / ".git",
            course.GRADING,
            course.SOLUTIONS,
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
            readonly=[*sandbox.python_paths(), *map(str, kernel_folders(repo))],
            limits=settings.limits,
            uid=uid,
        )
        sandbox.prepare_run_dir(config)
        # Kernels may not write bytecode into the read-only course: compile it here once (a
        # fresh clone would otherwise compile the helpers again in every notebook's kernel).
        with contextlib.suppress(OSError):
            compileall.compile_dir(str(repo / "helpers"), quiet=2)
        jobs = settings.workers()
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

    def nbgrader_config(self, settings: Settings, job: int, lesson: str, target: Target) -> dict:
        """The nbgrader settings (a traitlets config as a dict) job ``job`` grades ``lesson``
        with, on top of the course's nbgrader_config.py."""
        staged = target.staged
        # The parent process writes the gradebook too: wait for each other's locks.
        config: dict = {
            "CourseDirectory": {
                "submitted_directory": str(staged / f"job{job}"),
                "autograded_directory": str(staged / f"job{job}-autograded"),
                "db_url": f"{target.db_url}?timeout=120",
            },
            "Autograde": {"autograde_preprocessors": AUTOGRADE_PREPROCESSORS},
            "HardenedExecute": {
                "kernel_name": f"{sandbox.KERNEL_NAME}-{job}",
                "limits": self.config.limits.describe(),
                "max_outputs": settings.max_outputs,
            },
        }
        timeout = settings.lesson_timeouts.get(lesson, settings.timeout)
        if timeout:
            config["HardenedExecute"]["timeout"] = timeout
        if self.mode == "bwrap":
            # TCP does not cross network namespaces: unix sockets at an absolute path do.
            config["KernelManager"] = {
                "transport": "ipc",
                "ip": os.path.join(self.config.ipc_dir, f"job{job}", "kernel"),
            }
        return config

    def env(self) -> dict[str, str]:
        """The environment of the grading processes: the sandbox's kernelspecs first."""
        env = dict(os.environ)
        env["JUPYTER_PATH"] = os.pathsep.join(
            [str(self.jupyter_path), *filter(None, [os.environ.get("JUPYTER_PATH")])]
        )
        env.setdefault("COURSE_FAST", "1")
        # Kernels side by side share the cores: each gets its share of torch's threads (idle
        # OpenMP threads of one kernel spinning on the other's core cost CPU, not speed).
        cpus = len(os.sched_getaffinity(0))
        env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // self.jobs)))
        runtime = Path(self.config.run_dir) / "runtime"
        runtime.mkdir(exist_ok=True)
        return venv_env(env, JUPYTER_RUNTIME_DIR=str(runtime))

    def close(self) -> None:
        sandbox.remove_cgroups(self.config)
        shutil.rmtree(self.config.run_dir, ignore_errors=True)
