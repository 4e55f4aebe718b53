"""The autograder's verdict on a test cell, decided outside the student's kernel.

:class:`helpers.grading.execute.HardenedExecute` does not run a test cell in the student's
kernel. It hands the cell to :func:`judge`, which runs the exercise's check in the grading
process (``helpers.checks.remote``: the check code and its references here, the learner's objects
reached through a narrow channel to the kernel) and turns the outcome into the cell's outputs:
the check's report line when it passes, an error output with the check's message when it fails.
nbgrader then scores the cell from those outputs, as it would have scored the kernel's.

Nothing here is imported by ``import helpers.grading``: the judge needs torch, which the grader's
command line never loads.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass


class KernelLost(BaseException):
    """The kernel died or was stopped while the judge waited for it (``reason`` says how).

    Like :class:`CheckTimeout`, a ``BaseException``: the checks catch ``Exception`` around the
    learner's code, and neither must read as the learner's own exception."""

    def __init__(self, reason: str, ename: str):
        super().__init__(reason)
        self.reason = reason
        self.ename = ename


class CheckTimeout(BaseException):
    """The check ran past the cell's time limit; the kernel was interrupted and answered."""


@dataclass
class Outcome:
    """What a judged test cell shows: ``stdout`` always, and an error when it lost its points."""

    stdout: str
    ename: str | None = None
    evalue: str = ""


def exercise_for(lesson: str, grade_id: str):
    """The exercise of ``lesson`` whose test cell is ``grade_id`` (None: no check for it)."""
    from helpers.checks import exercises

    return next((e for e in exercises(lesson).values() if e.grade_id == grade_id), None)


def _names(exercise, table) -> list[str]:
    """The notebook names a check reads, with those of the exercises it builds on."""
    names, current = [], exercise
    while current is not None:
        names += [n for n in current.reads if n not in names]
        current = table.get(current.prerequisite) if current.prerequisite else None
    return names


_THREADS_SET = False


def judge(lesson: str, grade_id: str, send: Callable[[str], str]) -> Outcome:
    """Run the check of test cell ``grade_id`` against the kernel behind ``send``.

    ``send(request) -> answer`` carries one request to the kernel's agent and returns its answer
    (see :mod:`helpers.checks.remote`); it raises :class:`KernelLost` when the kernel dies or
    must be stopped, which this function lets through.
    """
    global _THREADS_SET
    import os

    import torch

    from helpers.checks import CheckFailure, exercises, remote

    if not _THREADS_SET:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))
        _THREADS_SET = True
    exercise = exercise_for(lesson, grade_id)
    if exercise is None:
        return Outcome("", "GraderError", f"the course has no check for test cell {grade_id}")
    table = exercises(lesson)
    channel = remote.Channel(send)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), remote.judging(channel):
            namespace = channel.global_names(_names(exercise, table))
            exercise.run(namespace)
    except KernelLost:
        raise
    except CheckTimeout as exc:
        return Outcome(out.getvalue(), "CellTimeoutError", str(exc))
    except CheckFailure as failure:
        return Outcome(out.getvalue(), "CheckFailure", str(failure))
    except remote.ChannelError as exc:
        return Outcome(
            out.getvalue(),
            "ProtocolError",
            f"the notebook's kernel did not answer the grader's check as expected ({exc}); "
            "code that changes how the kernel runs (IPython hooks, input transformers, patched "
            "modules) can cause this",
        )
    except Exception as exc:  # a check meeting a value it does not expect: the cell fails
        return Outcome(out.getvalue(), type(exc).__name__, str(exc)[:2000])
    finally:
        with contextlib.suppress(Exception):
            torch.set_grad_enabled(True)
    return Outcome(out.getvalue())
