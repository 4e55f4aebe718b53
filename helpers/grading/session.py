"""Step 3 of ``autograde``: ``nbgrader autograde`` with every kernel in the sandbox."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from helpers import course
from helpers.grading import sandbox
from helpers.grading.common import (
    AUTOGRADE_PREPROCESSORS,
    STAGED,
    Settings,
    db_url,
    exchange_root,
    grading_dir,
    nbgrader_command,
)


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
            f"--HardenedExecute.source_root={grading_dir(root) / 'release'}",
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
