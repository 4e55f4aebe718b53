"""Load a notebook's definitions into a namespace without running its long cells.

The same checks run on a student's notebook (``make check``), on the reference solutions (which
must pass) and on the unsolved release (which must fail). They need the notebook's functions and
classes, not its training runs, so the loader executes the code cells in order but skips:

* cells tagged ``training`` (long training runs and experiments),
* nbgrader test cells (graded, read-only cells: the checks run separately),
* IPython magics and shell escapes (``%matplotlib inline``, ``!pip ...``).

An exception in one cell is recorded and loading goes on, so that one broken demo cell does not
hide the exercises defined after it.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

from helpers.course import is_test_cell, skip_iri_grammar

TRAINING_TAG = "training"


@dataclass
class CellError:
    """An exception raised while a cell was loaded."""

    cell_index: int
    error: BaseException
    text: str

    def __str__(self) -> str:
        return f"cell {self.cell_index}: {type(self.error).__name__}: {self.error}"


class NotebookNamespace(dict):
    """The globals left by a notebook's cells, plus ``errors`` (a list of ``CellError``)."""

    def __init__(self, path: Path):
        super().__init__(__name__="__notebook__", __file__=str(path))
        self.path = path
        self.errors: list[CellError] = []


def _strip_magics(source: str) -> str:
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")):
            indent = line[: len(line) - len(stripped)]
            lines.append(f"{indent}pass  # skipped by the loader: {stripped[:40]}")
        else:
            lines.append(line)
    return "\n".join(lines)


def load_notebook(
    path: str | os.PathLike,
    skip_tags: tuple[str, ...] = (TRAINING_TAG,),
    skip_tests: bool = True,
) -> NotebookNamespace:
    """Execute a notebook's code cells into a fresh namespace and return it.

    Args:
        path: the ``.ipynb`` file.
        skip_tags: cells carrying any of these tags are not executed.
        skip_tests: when True, nbgrader test cells (graded and not a solution) are not executed.

    Returns:
        A ``NotebookNamespace`` (a dict of the notebook's globals) whose ``errors`` lists the
        cells that raised, in order.

    Raises:
        ValueError: when ``path`` is not a readable notebook.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"expected a notebook file, but {path} does not exist")
    # imported here, not at the top: nbformat pulls in jsonschema, whose import costs seconds
    # of CPU, and every notebook (and every autograded kernel) imports helpers
    skip_iri_grammar()
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for broken files
        raise ValueError(f"{path} is not a readable notebook: {exc}") from exc

    import matplotlib

    matplotlib.use("Agg", force=True)  # plots are drawn off screen while loading

    import torch

    namespace = NotebookNamespace(path)
    # A notebook may change process-wide torch settings; put them back afterwards so that loading
    # one notebook cannot change how the next one (or a check) behaves.
    default_dtype, grad_enabled = torch.get_default_dtype(), torch.is_grad_enabled()
    with contextlib.chdir(path.parent):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            tags = set(cell.get("metadata", {}).get("tags", []))
            if tags.intersection(skip_tags) or (skip_tests and is_test_cell(cell)):
                continue
            source = _strip_magics(cell.source)
            try:
                exec(compile(source, f"<{path.name} cell {index}>", "exec"), namespace)
            except (Exception, SystemExit) as exc:  # a student's cell may raise anything
                namespace.errors.append(CellError(index, exc, traceback.format_exc()))
    torch.set_default_dtype(default_dtype)
    torch.set_grad_enabled(grad_enabled)
    import matplotlib.pyplot as plt

    plt.close("all")
    return namespace
