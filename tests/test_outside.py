"""A lesson as a learner elsewhere meets it (Colab, Kaggle, their own Jupyter): the notebook alone
in an empty folder, a Python with only PyTorch, NumPy, matplotlib and a kernel, and nothing of
this checkout. The lesson's first cell installs the course package (a wheel built from this
checkout, named by ``COURSE_PACKAGE``), the notebook runs top to bottom, and the learner's
``python -m helpers.checks`` gives it full marks. A lesson that read a file through the
repository's root would fail here: there is no repository.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, notebook_path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import course

# About 80 s of CPU: make test's 12 minutes on 2 cores have no room for it (its hub and browser
# modules wait on servers while it runs), so it runs in make test-grading.
pytestmark = [pytest.mark.slow, pytest.mark.corpus]

#: What stands in for Colab's image: these and their dependencies, at this checkout's versions.
IMAGE = ("torch", "numpy", "matplotlib", "ipykernel")
#: Every lesson.
LESSONS = course.lesson_ids()
KERNEL = "outside"


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point Python at this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))
    )
    return {**env, "COURSE_FAST": "1", "MPLBACKEND": "Agg", **extra}


def _run(command: list, cwd: Path, env: dict, timeout: int = 600) -> str:
    result = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The course package built as a wheel, from a copy holding only what the build reads."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "LICENSE", "LICENSE-CONTENT.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "helpers", source / "helpers", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "--quiet", "-w", out, source], source, _clean_env())
    (built,) = out.glob("rnn_course_helpers-*.whl")
    return built


def image_distributions() -> list[importlib.metadata.Distribution]:
    """The image's packages and everything they need (extras left out), as installed here."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(IMAGE)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen[name] = dist = importlib.metadata.distribution(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(seen.values())


def install_by_links(dist: importlib.metadata.Distribution, site: Path) -> None:
    """Install ``dist`` into ``site`` as this checkout's venv holds it, its files hard-linked
    (seconds for PyTorch, where pip takes minutes; removing one there leaves ours alone)."""
    tops = {Path(f).parts[0] for f in dist.files or [] if Path(f).parts[0] != ".."}
    for top in sorted(tops):
        source, target = Path(dist.locate_file(top)), site / top
        if target.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, target, copy_function=os.link, symlinks=True)
        elif source.is_file():
            os.link(source, target)


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A fresh virtual environment with only the image's packages, and a kernelspec for it."""
    where = tmp_path_factory.mktemp("elsewhere")
    venv = where / "venv"
    env = _clean_env()
    _run([sys.executable, "-m", "venv", venv], where, env)
    python = venv / "bin" / "python"
    site = Path(
        _run([python, "-c", "import site; print(site.getsitepackages()[0])"], where, env).strip()
    )
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}  # pip, ...
    for dist in image_distributions():
        if canonicalize_name(dist.metadata["Name"]).replace("-", "_") not in installed:
            install_by_links(dist, site)
    spec = where / "share" / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "elsewhere", "language": "python"})
    )
    return where


def test_the_image_has_no_course(elsewhere):
    python = elsewhere / "venv" / "bin" / "python"
    code = "import importlib.util as u; print(u.find_spec('helpers'), u.find_spec('nbgrader'))"
    assert _run([python, "-c", code], elsewhere, _clean_env()).split() == ["None", "None"]


@pytest.mark.parametrize("lesson", LESSONS)
def test_a_lesson_runs_and_passes_outside_the_checkout(lesson, wheel, elsewhere):
    python = elsewhere / "venv" / "bin" / "python"
    work = elsewhere / lesson
    work.mkdir()
    notebook = work / f"{lesson}.ipynb"
    shutil.copy(notebook_path("source", lesson), notebook)
    env = _clean_env(COURSE_PACKAGE=str(wheel), JUPYTER_PATH=str(elsewhere / "share" / "jupyter"))
    execute = [Path(sys.executable).parent / "jupyter-execute", "--inplace"]
    execute += [f"--kernel_name={KERNEL}", "--timeout=600", notebook.name]
    _run(execute, work, env, timeout=900)
    # the set-up cell installed the wheel, into the image's Python, not this checkout's
    where = _run([python, "-c", "import helpers; print(helpers.__file__)"], work, env)
    assert where.startswith(str(elsewhere / "venv")), where
    assert sorted(p.name for p in work.iterdir()) == [notebook.name]  # nothing fetched beside it
    report = _run([python, "-m", "helpers.checks", notebook.name], work, env)
    total = course.lesson(lesson).total
    assert re.search(rf"^total: {total:g}/{total:g} points$", report, re.M), report
