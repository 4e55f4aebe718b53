"""The grader's settings, each declared once: its default, its help text, and from those its
command-line flag (``--max-outputs``) and environment variable (``COURSE_GRADING_MAX_OUTPUTS``).
``make autograde``'s command line is generated from the declarations here and in
:class:`helpers.grading.sandbox.Limits` (the per-kernel limits)."""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

from helpers.grading import sandbox

#: The default wall-clock limit of a whole notebook, in seconds (at least; see notebook_seconds).
NOTEBOOK_TIMEOUT = 900
PER_LESSON = "SECONDS or LESSON=SECONDS"


def option(default, help: str, **extra):
    """A setting with a command-line flag: ``extra`` may give ``flag``, ``env``, ``unit``,
    ``choices`` and ``per_lesson`` (the field of per-lesson overrides, ``LESSON=SECONDS``)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class Settings:
    """How ``autograde`` runs; every field but the per-lesson tables has a flag."""

    timeout: int | None = option(
        None,
        "seconds per cell, for every lesson or one (default: Execute.timeout of "
        "nbgrader_config.py)",
        per_lesson="lesson_timeouts",
    )
    lesson_timeouts: dict[str, int] = field(default_factory=dict)  # lesson id -> seconds
    mode: str = option(
        "auto",
        "auto: bubblewrap when it works, else resource limits only (loudly)",
        flag="--sandbox",
        env="COURSE_SANDBOX",
        choices=sandbox.MODES,
    )
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    max_notebook_mb: int = option(50, "larger submitted notebooks are rejected", unit=" MB")
    max_files_mb: int = option(
        20, "other files copied with a submission, in total; the rest are left out", unit=" MB"
    )
    jobs: int = option(
        0,
        "grade this many notebooks at a time (0: one per CPU core, as far as memory gives each "
        "its --memory-mb)",
    )
    max_outputs: int = option(
        200, "outputs (prints, plots) a cell may produce before the rest is dropped"
    )
    max_output_kb: int = option(
        2000,
        "what a cell may add to the notebook (text, images, metadata, tracebacks) before the "
        "rest is dropped",
        unit=" kB",
    )
    max_notebook_output_kb: int = option(
        10000, "what all the cells of a notebook may add together", unit=" kB"
    )
    notebook_timeout: int | None = option(
        None,
        "wall-clock seconds for a whole notebook, for every lesson or one (default: "
        f"{NOTEBOOK_TIMEOUT // 60} minutes or 3 times the cell limit, whichever is longer)",
        per_lesson="lesson_notebook_timeouts",
    )
    lesson_notebook_timeouts: dict[str, int] = field(default_factory=dict)  # lesson -> seconds

    def cell_timeout(self, lesson: str) -> int | None:
        """Seconds per cell for ``lesson`` (None: nbgrader_config.py's Execute.timeout)."""
        return self.lesson_timeouts.get(lesson, self.timeout)

    def notebook_seconds(self, lesson: str, config_timeout: int = 120) -> int:
        """The wall-clock limit for one whole notebook of ``lesson``, in seconds."""
        chosen = self.lesson_notebook_timeouts.get(lesson, self.notebook_timeout)
        if chosen is not None:
            return chosen
        return max(NOTEBOOK_TIMEOUT, 3 * (self.cell_timeout(lesson) or config_timeout))

    def workers(self) -> int:
        """Notebooks graded at a time: ``jobs``, or with 0 as many as :func:`default_jobs`."""
        return self.jobs if self.jobs > 0 else default_jobs(self.limits.memory_mb)

    def executor(self, lesson: str) -> dict:
        """The output caps and the notebook's time limit, as HardenedExecute settings."""
        return {
            "max_outputs": self.max_outputs,
            "max_output_bytes": self.max_output_kb * 1000,
            "max_notebook_output_bytes": self.max_notebook_output_kb * 1000,
            "notebook_timeout": self.notebook_seconds(lesson),
        }


def default_jobs(memory_mb: int) -> int:
    """How many notebooks to grade at a time: one per CPU this process may use, fewer when the
    available memory cannot give each kernel ``memory_mb``.

    Grading is CPU-bound once kernels stop without waiting: on 2 cores ``make bench-grading``
    measured 2 jobs about 1.8x as fast as 1, and 3 jobs no faster than 2.
    """
    cpus = len(os.sched_getaffinity(0))
    available = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) // 1024  # MB
    by_memory = available // memory_mb if available and memory_mb > 0 else cpus
    return max(1, min(cpus, by_memory))


# --------------------------------------------------------------------------- the command line


def options() -> list[Field]:
    """Every setting with a flag, in the order of the declarations (the limits where
    ``Settings.limits`` is)."""
    found = []
    for f in fields(Settings):
        if f.name == "limits":
            found += [g for g in fields(sandbox.Limits) if "help" in g.metadata]
        elif "help" in f.metadata:
            found.append(f)
    return found


def flag(f: Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def variable(f: Field) -> str:
    return f.metadata.get("env") or "COURSE_GRADING_" + f.name.upper()


def _default(f: Field, environ) -> object:
    text = environ.get(variable(f))
    if f.metadata.get("per_lesson"):
        return [t for t in (text or "").split(",") if t]
    if text is None:
        return f.default
    if f.metadata.get("choices"):
        return text
    if not text.strip().isdigit():
        raise ValueError(f"{variable(f)}: expected a whole number, got {text!r}")
    return int(text)


def add_arguments(group, environ=None) -> None:
    """Add every setting's flag to ``group`` (an argparse parser or group); defaults come from
    the environment variables where they are set."""
    environ = os.environ if environ is None else environ
    for f in options():
        default = _default(f, environ)
        meta = f.metadata
        where = f"${variable(f)}"
        if meta.get("per_lesson"):
            group.add_argument(
                flag(f),
                dest=f.name,
                action="append",
                default=default,
                metavar=PER_LESSON,
                help=f"{meta['help']} (repeatable; {where})",
            )
        elif meta.get("choices"):
            group.add_argument(
                flag(f),
                dest=f.name,
                choices=meta["choices"],
                default=default,
                help=f"{meta['help']} (default {default}; {where})",
            )
        else:
            shown = f"{default}{meta.get('unit', '')}"
            group.add_argument(
                flag(f),
                dest=f.name,
                type=int,
                default=default,
                help=f"{meta['help']} (default {shown}; {where})",
            )


def _per_lesson(name: str, values: list[str]) -> tuple[int | None, dict[str, int]]:
    """(SECONDS for every lesson or None, {LESSON: SECONDS}) from a per-lesson flag's values."""
    every, per_lesson = None, {}
    for value in values:
        lesson, _, seconds = value.rpartition("=")
        if not seconds.isdigit():
            raise ValueError(f"{name} takes {PER_LESSON}, got {value!r}")
        if lesson:
            per_lesson[lesson] = int(seconds)
        else:
            every = int(seconds)
    return every, per_lesson


def from_arguments(args: argparse.Namespace) -> Settings:
    """The settings the parsed ``args`` give (``ValueError`` on a malformed per-lesson value)."""
    limits, chosen = {}, {}
    limit_names = {f.name for f in fields(sandbox.Limits)}
    for f in options():
        value = getattr(args, f.name)
        if f.name in limit_names:
            limits[f.name] = value
        elif f.metadata.get("per_lesson"):
            chosen[f.name], chosen[f.metadata["per_lesson"]] = _per_lesson(flag(f), value)
        else:
            chosen[f.name] = value
    return Settings(limits=sandbox.Limits(**limits), **chosen)
