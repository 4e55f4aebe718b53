"""Steps 2 to 4 for a whole class: what to grade, the worker processes, progress, crash safety.

**What to grade.** Every result in ``reasons/<lesson>.json`` carries the *fingerprint* of what it
was graded from: the submission's files, the released lesson and the grader's settings
(:func:`fingerprint`). A submission whose fingerprint is unchanged since its last result is
skipped (``--force`` regrades everything); a new or changed submission is graded, and so is one
whose grading was cut off.

**Crash safety.** Before a submission goes to a worker, a marker ``inflight/<lesson>/<student>``
is written; it is removed only after the submission's gradebook rows, autograded folder and
reasons entry are all in place, so a run killed at any point leaves markers on exactly what must
be graded again. nbgrader writes each autograded notebook into the worker's own folder
(``staged/job<N>-autograded/``); it is moved into place in one rename after grading, so no
half-written autograded folder is ever under the real name. The reasons files are replaced in one
step (:func:`helpers.grading.record.write_reasons`); the gradebook is SQLite, whose transactions
a kill cannot tear.

**Workers.** ``jobs`` processes (:mod:`helpers.grading.worker`) each grade one submission at a
time; the next submission goes to whichever is free. A worker that dies costs only the
submission it was grading (a grader error, with the reason) and is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers.grading.common import (
    MB,
    Target,
    course_folder,
    open_regular,
    printable,
    remove_tree,
    walk,
)
from helpers.grading.record import reasons_of
from helpers.grading.session import Run
from helpers.grading.settings import Settings
from helpers.grading.stage import Staged, stage


@dataclass
class Item:
    """One submission to grade."""

    lesson: str
    student: str
    fingerprint: str


#: Files larger than this are fingerprinted by size and modification time, not read (a
#: notebook this large is rejected, other files are not copied).
HASH_LIMIT = 64 * MB


def _hash_tree(digest, folder: Path) -> None:
    """Add what ``folder`` holds to ``digest``: every entry's kind and name, and the bytes of
    regular files (never following links, never opening FIFOs or devices, at most a few levels
    deep: :func:`helpers.grading.common.walk`)."""
    for kind, rel, info in walk(folder):
        name = os.fsencode(rel)
        if kind == "file":
            digest.update(b"file %s %d\n" % (name, info.st_size))
            if info.st_size > HASH_LIMIT:
                digest.update(b"large %d\n" % info.st_mtime_ns)
                continue
            try:
                with os.fdopen(open_regular(folder / rel), "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        digest.update(block)
            except OSError as exc:
                digest.update(b"unreadable %s %s\n" % (name, str(exc.errno).encode()))
        elif kind == "link":
            try:
                digest.update(b"link %s -> %s\n" % (name, os.fsencode(os.readlink(folder / rel))))
            except OSError:
                digest.update(b"link %s\n" % name)
        elif kind != "dir":
            digest.update(b"%s %s\n" % (kind.encode(), name))


def lesson_digest(target: Target, lesson: str, settings: Settings):
    """The hash of what every submission of ``lesson`` is graded against (the released lesson
    and the grader's settings), to be extended by :func:`fingerprint` for each submission."""
    digest = hashlib.sha256()
    release = target.release / lesson / f"{lesson}.ipynb"
    digest.update(release.read_bytes() if release.is_file() else b"no release")
    limits = settings.limits
    digest.update(
        json.dumps(
            [
                settings.lesson_timeouts.get(lesson, settings.timeout),
                settings.mode,
                [limits.memory_mb, limits.cpu_s, limits.file_mb, limits.processes, limits.tmp_mb],
                settings.max_notebook_mb,
                settings.max_files_mb,
                settings.max_outputs,
                settings.executor(lesson),
            ]
        ).encode()
    )
    return digest


def fingerprint(root: Path, lesson_hash, lesson: str, student: str) -> str:
    """A hash of everything a grade depends on: ``lesson_hash`` (:func:`lesson_digest`) and the
    submission's files."""
    digest = lesson_hash.copy()
    try:
        _hash_tree(digest, course_folder(root, "submitted") / student / lesson)
    except Exception as exc:  # cannot be fingerprinted: graded every time (staging says why)
        return f"unreadable:{type(exc).__name__}:{time.time()}"
    return digest.hexdigest()


def marker(target: Target, lesson: str, student: str) -> Path:
    """The file that says ``student``'s ``lesson`` is being graded (or was, when a run died)."""
    return target.folder / "inflight" / lesson / student


def _graded_in_gradebook(target: Target, lesson: str) -> set[str]:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"{target.db_url}?timeout=120") as gb:
        try:
            return {s.student.id for s in gb.find_assignment(lesson).submissions}
        except MissingEntry:
            return set()


def plan(
    root: Path, target: Target, found: dict[str, list[str]], settings: Settings, force: bool
) -> tuple[list[Item], list[tuple[str, str]], list[tuple[str, str]]]:
    """(submissions to grade, those skipped as unchanged, those whose grading was cut off)."""
    todo, skipped, cut_off = [], [], []
    for lesson, students in sorted(found.items()):
        previous = reasons_of(target.folder, lesson)
        in_gradebook = _graded_in_gradebook(target, lesson) if previous and not force else set()
        lesson_hash = lesson_digest(target, lesson, settings)
        for student in students:
            fp = fingerprint(root, lesson_hash, lesson, student)
            interrupted = marker(target, lesson, student).exists()
            if interrupted:
                cut_off.append((lesson, student))
            old = previous.get(student, {})
            done = (
                not force
                and not interrupted
                and old.get("fingerprint") == fp
                and old.get("status") in ("graded", "rejected")
                and student in in_gradebook
                and (
                    old["status"] == "rejected"
                    or (target.autograded / student / lesson / f"{lesson}.ipynb").is_file()
                )
            )
            if done:
                skipped.append((lesson, student))
            else:
                todo.append(Item(lesson, student, fp))
    return todo, skipped, cut_off


class Progress:
    """A progress line over a class: graded / total, failures so far, elapsed and time left.

    In a terminal it is one line redrawn in place; in a log (CI) a new line at most every
    ``every`` seconds, and for every submission when the class is small.
    """

    def __init__(self, total: int, stream=None, every: float = 10.0):
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = every
        self.start = time.monotonic()
        self._last = 0.0

    @staticmethod
    def clock(seconds: float) -> str:
        seconds = int(round(seconds))
        hours, rest = divmod(seconds, 3600)
        return (f"{hours}:" if hours else "") + f"{rest // 60:02d}:{rest % 60:02d}"

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        width = 24
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        left = ""
        if 0 < self.done < self.total:
            left = f", about {self.clock(elapsed / self.done * (self.total - self.done))} left"
        failed = f", {self.failed} not graded" if self.failed else ""
        return (
            f"grading [{bar}] {self.done}/{self.total}{failed}, {self.clock(elapsed)} elapsed{left}"
        )

    def update(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += bool(failed)
        now = time.monotonic()
        final = self.done == self.total
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        elif final or self.total <= 20 or now - self._last >= self.every:
            self.stream.write(self.line() + "\n")
            self._last = now
        self.stream.flush()

    def seconds(self) -> float:
        return time.monotonic() - self.start


class _Worker:
    def __init__(self, root: Path, job: int, env: dict, log: Path):
        self.job = job
        self.process = subprocess.Popen(
            [sys.executable, "-m", "helpers.grading.worker", str(root), str(log)],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.ready = False
        self.item: Item | None = None
        self.staged: Staged | None = None
        self.buffer = b""

    def send(self, request: dict) -> None:
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=30)
            except Exception:
                self.process.kill()
                self.process.wait()


def _move_into_place(source: Path, dest: Path) -> None:
    """Replace folder ``dest`` with ``source`` (renames on one file system; ``dest`` is never
    half-written: it is the old folder, missing, or the new one)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for left in dest.parent.glob(f".{dest.name}.old-*"):  # a run killed right here
        remove_tree(left)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(source, dest)
    if old.exists():
        remove_tree(old)  # a notebook may have left a folder thousands of levels deep


def grade(
    root: Path,
    target: Target,
    run: Run,
    settings: Settings,
    items: list[Item],
    done: Callable[[Item, Staged, bool, str], None],
) -> None:
    """Grade ``items`` on ``run.jobs`` workers; call ``done(item, staged, graded, log)`` for each
    as soon as it is finished (``graded``: nbgrader's autograded notebook is in place)."""
    if not items:
        return
    logs = target.folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = run.env()
    queue = list(reversed(items))
    selector = selectors.DefaultSelector()
    workers: list[_Worker] = []

    def start(job: int) -> _Worker:
        worker = _Worker(root, job, env, logs / f"worker-{job}.log")
        selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
        return worker

    def report(item: Item, info: Staged, graded: bool, log: str) -> None:
        """``done``, which must never stop the run: a failure costs this submission only."""
        try:
            done(item, info, graded, log)
        except Exception as exc:
            failed = Staged(item.student, item.lesson, job=info.job)
            failed.notes = list(info.notes)
            failed.rejected = f"grader error: {type(exc).__name__}: {printable(str(exc))[:200]}"
            try:
                done(item, failed, False, log)
            except Exception as again:
                print(
                    f"grader error for {printable(item.student)}/{item.lesson}: {again!r}",
                    file=sys.stderr,
                )

    def dispatch(worker: _Worker) -> None:
        """Give ``worker`` the next runnable submission (rejected ones are recorded here)."""
        while queue:
            item = queue.pop()
            info = stage(root, item.lesson, item.student, settings, worker.job, target)
            try:
                flag = marker(target, item.lesson, item.student)
                flag.parent.mkdir(parents=True, exist_ok=True)
                flag.touch()
                if not info.rejected:
                    out = target.staged / f"job{worker.job}-autograded" / item.student / item.lesson
                    remove_tree(out)
                    config = run.nbgrader_config(settings, worker.job, item.lesson, target)
                    config.setdefault("HardenedExecute", {}).update(settings.executor(item.lesson))
            except Exception as exc:
                info.rejected = f"grader error: {type(exc).__name__}: {printable(str(exc))[:200]}"
            if info.rejected:
                report(item, info, False, "")
                continue
            worker.item, worker.staged = item, info
            worker.send({"lesson": item.lesson, "student": item.student, "config": config})
            return
        worker.item = worker.staged = None

    def finish(worker: _Worker, answer: dict | None) -> None:
        item, info = worker.item, worker.staged
        worker.item = worker.staged = None
        if item is None:
            return
        graded = False
        if answer is None:
            code = worker.process.poll()
            log = f"the grading process died (exit code {code}) while grading this notebook"
        else:
            log = str(answer.get("log", ""))
            out = target.staged / f"job{worker.job}-autograded" / item.student / item.lesson
            try:
                if answer.get("success") and (out / f"{item.lesson}.ipynb").is_file():
                    _move_into_place(out, target.autograded / item.student / item.lesson)
                    graded = True
            except Exception as exc:
                log += f"\ngrader error: the autograded folder could not be put in place: {exc!r}"
        try:
            (logs / item.lesson).mkdir(exist_ok=True)
            (logs / item.lesson / f"{item.student}.log").write_text(log, errors="backslashreplace")
        except OSError:
            pass
        report(item, info, graded, log)

    try:
        for job in range(min(run.jobs, len(items))):
            workers.append(start(job))
        while any(w.process.poll() is None or w.item for w in workers):
            busy = [w for w in workers if w.item]
            if not queue and not busy:
                break
            for key, _ in selector.select(timeout=1.0):
                worker = key.data
                chunk = os.read(worker.process.stdout.fileno(), 1 << 16)
                if chunk:
                    worker.buffer += chunk
                    while b"\n" in worker.buffer:
                        line, worker.buffer = worker.buffer.split(b"\n", 1)
                        try:
                            answer = json.loads(line)
                        except ValueError:
                            answer = {"success": False, "log": "a garbled answer from the worker"}
                        if not answer.get("ready"):
                            finish(worker, answer)
                        worker.ready = True
                        dispatch(worker)
                        if worker.item is None:
                            worker.close()
                else:
                    # the worker is gone: its submission is a grader error; replace it
                    selector.unregister(worker.process.stdout)
                    worker.process.wait()
                    finish(worker, None)
                    workers.remove(worker)
                    if queue:
                        workers.append(start(worker.job))
    finally:
        for worker in workers:
            worker.close()
        selector.close()
