"""The commands the documents give work as written: every ``make`` target they name exists, every
flag they pass through ``ARGS`` is one that target's program accepts, every ``python -m`` module
imports, every file or folder they name is in the checkout, and every local link resolves."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT

DOCUMENTS = ("README.md", "docs/instructors.md", "benchmarks/README.md", "deploy/README.md")
#: Commands a reader types in their own shell, not ours to run (a cluster, conda).
NOT_HERE = ("sbatch", "conda", "sudo", "cd", "id=$(sbatch")
MAKEFILE = (ROOT / "Makefile").read_text()


def commands(document: str) -> list[str]:
    """The commands of ``document``: lines of its bash blocks and its inline ``make ...`` spans."""
    text = (ROOT / document).read_text()
    found = []
    for body in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in body.splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    found += re.findall(r"`((?:sudo )?make [^`]+)`", text)
    return found


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.M))


@cache
def target_help(target: str) -> str:
    """``--help`` of the program a make target passes ``$(ARGS)`` to, from its recipe."""
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert recipe, f"no recipe for make {target}"
    line = next(x for x in recipe[1].splitlines() if "$(ARGS)" in x)
    line = line.replace("$(RUN)", "").replace("$(ROOT_FLAG)", "")
    line = re.sub(r"\$\(BIN\)/(\w+)", lambda m: str(Path(sys.executable).parent / m[1]), line)
    words = [w for w in shlex.split(line.split("$(ARGS)")[0]) if "=" not in w or w.startswith("-")]
    result = subprocess.run(
        [*words, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


CASES = [(doc, cmd) for doc in DOCUMENTS for cmd in commands(doc)]


@pytest.mark.parametrize(("document", "command"), CASES)
def test_command_works_as_written(document, command):
    words = shlex.split(command.replace("\\", "/"))
    if words[0] == "sudo":
        words = words[1:]
    if words[0] == "make":
        target = next(w for w in words[1:] if "=" not in w)
        assert target in make_targets(), f"{document}: make {target} is not a target"
        args = next((w.split("=", 1)[1] for w in words if w.startswith("ARGS=")), "")
        for flag in re.findall(r"(?:^|\s)(--[a-z][a-z-]*)", args):
            assert flag in target_help(target), f"{document}: make {target} has no {flag}"
        return
    if words[0] in NOT_HERE or words[0].startswith(NOT_HERE):
        return
    if "-m" in words:
        module = words[words.index("-m") + 1]
        if module not in ("venv", "pip"):
            assert importlib.util.find_spec(module), f"{document}: no module {module}"
    for word in words[1:]:
        looks_like_a_path = "/" in word or word.endswith((".txt", ".yml", ".py", ".md"))
        if looks_like_a_path and not word.startswith(("-", "/", "http")) and "<" not in word:
            assert (ROOT / word).exists(), f"{document}: {command!r} names {word}, not here"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_local_links_resolve(document):
    path = ROOT / document
    for target in re.findall(r"\]\(([^)#\s]+)\)", path.read_text()):
        if not target.startswith(("http://", "https://", "mailto:")):
            assert (path.parent / target).exists(), f"{document} links to {target}"


def test_the_documents_have_commands_to_check():
    assert len(CASES) > 20
    assert any(c.startswith("make check") for _, c in CASES)
