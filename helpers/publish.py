"""What ``make release`` writes from the course's manifest before nbgrader releases the lessons.

* **The set-up cell.** Every lesson starts with one short code cell. Where ``helpers`` already
  imports (this checkout, the grader's sandbox) it does nothing; anywhere else (Colab, Kaggle, a
  learner's own Jupyter) it installs the course package with pip, which keeps an installed
  PyTorch that satisfies the package's range. What it installs is one setting: the
  ``COURSE_PACKAGE`` environment variable when set (a wheel, a folder, any pip requirement; the
  tests install a freshly built wheel this way), else the course's repository address from
  ``pyproject.toml`` (``[project.urls] Repository``).
* **"Open in Colab" links**, where that address is a GitHub repository: under each lesson's
  title, and in the README's lessons table, which also gets each lesson's exercise count and
  points from the manifest.

``python -m helpers.publish`` writes them into ``solutions/`` and ``README.md`` (nbgrader then
copies the cells into ``lessons/``); ``--check`` only reports what is out of date (exit status 1),
which the tests run.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

from helpers import course

#: The environment variable that overrides where the set-up cell installs the course from.
PACKAGE_VARIABLE = "COURSE_PACKAGE"
SETUP_TAG = "course-setup"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_GITHUB = re.compile(r"^https://github\.com/(?P<repo>[\w.-]+/[\w.-]+?)(?:\.git)?/?$")
_BADGE = re.compile(r"\n\n\[!\[Open in Colab\]\([^\n]*\)")
_TITLE = re.compile(r"^(# .*)$", re.M)

SETUP_CELL = """\
# Set-up. In the course's own folder this cell does nothing. Anywhere else (Colab, Kaggle, your
# own Jupyter) it installs the course's `helpers` package once, keeping the PyTorch you have.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("helpers") is None:
    source = os.environ.get("{variable}", "{source}")
    if not source:
        raise RuntimeError("set {variable} to the course package: a wheel, or git+ its address")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()"""


def repository(pyproject: Path | None = None) -> str | None:
    """The course's repository address (``[project.urls] Repository``), or None when unset."""
    path = pyproject or course.ROOT / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"expected a pyproject.toml with a [project] table at {path}") from exc
    urls = project.get("urls", {})
    address = urls.get("Repository") or None
    if address is not None and not re.match(r"^https://\S+$", address):
        raise ValueError(
            f"[project.urls] Repository should be an https:// address, got {address!r}"
        )
    return address


def package_source(address: str | None) -> str:
    """What pip installs the course from by default: ``git+<address>`` (or nothing known)."""
    return f"git+{address}" if address else ""


def setup_cell_source(address: str | None) -> str:
    """The set-up cell's code for a course published at ``address`` (None: not published)."""
    return SETUP_CELL.format(variable=PACKAGE_VARIABLE, source=package_source(address))


def colab_url(address: str | None, lesson: str, branch: str = "main") -> str | None:
    """The Colab address of ``lesson``'s released notebook, or None unless the course is on
    GitHub."""
    match = _GITHUB.match(address or "")
    if match is None:
        return None
    path = f"lessons/{lesson}/{lesson}.ipynb"
    return f"https://colab.research.google.com/github/{match['repo']}/blob/{branch}/{path}"


def colab_badge(url: str) -> str:
    return f"[![Open in Colab]({COLAB_BADGE})]({url})"


# --------------------------------------------------------------------------- the notebooks


def _setup_cell(source: str):
    import nbformat

    return nbformat.v4.new_code_cell(source, id=SETUP_TAG, metadata={"tags": [SETUP_TAG]})


def _with_badge(markdown: str, url: str | None) -> str:
    """The title cell's text with the Colab badge in a paragraph after the title (or without)."""
    text = _BADGE.sub("", markdown)
    if url is None:
        return text
    if not _TITLE.search(text):
        raise ValueError("expected the lesson's title cell to hold a '# ' heading")
    return _TITLE.sub(lambda m: f"{m[1]}\n\n{colab_badge(url)}", text, count=1)


def publish_notebook(path: Path, lesson: str, address: str | None) -> bool:
    """Write the set-up cell and the title's badge into the notebook at ``path``; True if it
    changed (it is rewritten only then)."""
    import nbformat

    raw = path.read_text(encoding="utf-8")
    nb = nbformat.reads(raw, as_version=4)
    cells = nb.cells
    if not (cells and SETUP_TAG in cells[0].get("metadata", {}).get("tags", [])):
        cells.insert(0, _setup_cell(""))
    cells[0].source = setup_cell_source(address)
    titles = [c for c in cells if c.cell_type == "markdown"]
    if not titles:
        raise ValueError(f"{path}: expected a markdown title cell")
    titles[0].source = _with_badge(titles[0].source, colab_url(address, lesson))
    text = nbformat.writes(nb) + "\n"
    if text == raw:
        return False
    path.write_text(text, encoding="utf-8")
    return True


# --------------------------------------------------------------------------- the README


def lesson_cell(lesson: course.Lesson, address: str | None) -> str:
    """The README lessons table's first cell for ``lesson``."""
    n = len(lesson.points)
    text = f"`{lesson.id}` ({n} exercises, {lesson.total:g} points)"
    url = colab_url(address, lesson.id)
    return f"{text}<br>{colab_badge(url)}" if url else text


def publish_readme(path: Path, address: str | None) -> bool:
    """Rewrite the first cell of each lesson's row in the README's table; True if it changed."""
    raw = path.read_text(encoding="utf-8")
    text = raw
    for lesson in course.LESSONS_TABLE:
        row = re.compile(rf"^\| `{re.escape(lesson.id)}`[^|]*\|", re.M)
        if len(row.findall(text)) != 1:
            raise ValueError(f"{path}: expected one row of the lessons table for {lesson.id}")
        text = row.sub(lambda _, lesson=lesson: f"| {lesson_cell(lesson, address)} |", text)
    if text == raw:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def publish(root: Path = course.ROOT, check: bool = False) -> list[str]:
    """Bring the set-up cells, badges and README table of the course at ``root`` up to date;
    the files that were (``check``: would be) changed."""
    address = repository(root / "pyproject.toml")
    targets = [
        (course.notebook_path("source", x, root), lambda p, x=x: publish_notebook(p, x, address))
        for x in course.lesson_ids()
    ]
    targets.append((root / "README.md", lambda p: publish_readme(p, address)))
    changed = []
    for path, write in targets:
        if check:
            original = path.read_bytes()
            if write(path):
                path.write_bytes(original)
                changed.append(str(path.relative_to(root)))
        elif write(path):
            changed.append(str(path.relative_to(root)))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.publish",
        description="Write each lesson's set-up cell and Colab links, and the README's lessons "
        "table, from the course manifest and pyproject.toml.",
    )
    parser.add_argument("--check", action="store_true", help="report what is out of date only")
    args = parser.parse_args(argv)
    changed = publish(check=args.check)
    for name in changed:
        print(f"{'out of date' if args.check else 'wrote'}: {name}")
    if args.check and changed:
        print("run `make release` to bring them up to date")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
