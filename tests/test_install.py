"""Installs by role: one lock per role in requirements/, generated from pyproject.toml, and the
make targets installing the smallest one they need."""

from __future__ import annotations

import re
import tomllib

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROLES = ("learner", "instructor", "dev")
#: Extras each role's lock is compiled with (pyproject.toml's optional dependencies).
EXTRAS = {"learner": "lab", "instructor": "instructor", "dev": "dev"}
#: What a learner's install must not carry.
NOT_FOR_LEARNERS = ("jupyterhub", "nbgrader", "playwright", "pytest", "ruff", "copydetect")


def lock(role: str) -> dict[str, str]:
    """``name -> version`` of every package pinned in ``requirements/<role>.txt``."""
    pins = {}
    for line in (ROOT / "requirements" / f"{role}.txt").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        assert match, f"requirements/{role}.txt: not an exact pin: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_roles_nest_with_the_same_versions():
    learner, instructor, dev = (lock(role) for role in ROLES)
    assert learner.items() <= instructor.items() <= dev.items()
    assert len(learner) < len(instructor) < len(dev)
    for name in NOT_FOR_LEARNERS:
        assert name not in learner, name
    for name in ("playwright", "pytest", "ruff"):
        assert name not in instructor, name


@pytest.mark.parametrize("role", ROLES)
def test_each_lock_holds_its_roles_dependencies(role):
    pins = lock(role)
    wanted = [*project()["dependencies"], *project()["optional-dependencies"][EXTRAS[role]]]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project()["name"]):
            continue  # an extra that includes another role's
        assert name in pins, f"requirements/{role}.txt lacks {name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (role, text)
    assert pins["torch"] == "2.13.0"  # no local build label: PyPI and PyTorch's CPU index alike


def test_make_targets_install_the_smallest_role_they_need():
    makefile = (ROOT / "Makefile").read_text()
    needs = dict(re.findall(r"^([a-z-]+): \$\((LEARNER|INSTRUCTOR|DEV)\)", makefile, re.M))
    assert needs["lab"] == needs["check"] == "LEARNER"
    for target in ("release", "autograde", "feedback", "export", "hub", "similarity"):
        assert needs[target] == "INSTRUCTOR", target
    for target in ("test", "test-quick", "test-grading", "lint", "lock"):
        assert needs[target] == "DEV", target
    assert "requirements.txt" not in makefile
    conda = (ROOT / "environment.yml").read_text()
    assert "requirements/learner.txt" in conda  # one install path for a learner
