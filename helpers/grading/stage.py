"""Step 2 of ``autograde``: a clean copy of each submission, with notes on what was put back."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from helpers.grading.common import (
    MB,
    Target,
    course_folder,
    open_regular,
    printable,
    read_regular,
    remove_tree,
    walk,
)
from helpers.grading.settings import Settings

#: Nesting of lists and objects a submitted notebook may have (Jupyter writes fewer than 20).
MAX_JSON_DEPTH = 200
MAX_FILES = 200  # other files copied with a submission


@dataclass
class Staged:
    """What staging made of one submission."""

    student: str
    lesson: str
    notes: list[str] = field(default_factory=list)
    rejected: str | None = None  # why nothing could be graded, or None
    job: int = 0  # which parallel grading process runs it


def _release_cells(release: dict) -> dict[str, dict]:
    return {
        c["metadata"]["nbgrader"]["grade_id"]: c
        for c in release["cells"]
        if "grade_id" in c.get("metadata", {}).get("nbgrader", {})
    }


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _text(source) -> str | None:
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    return None


def _read_notebook(path: Path, settings: Settings) -> tuple[dict | None, str | None, list[str]]:
    """(notebook as a v4 dict, rejection reason, notes) for a submitted file."""
    import nbformat

    try:
        size = os.stat(path, follow_symlinks=False).st_size
    except OSError as exc:
        return None, f"{path.name} cannot be read ({exc.strerror})", []
    if size > settings.max_notebook_mb * MB:
        return (
            None,
            (
                f"{path.name} is {size / MB:.0f} MB, over the {settings.max_notebook_mb} MB limit "
                "(clear the outputs and submit again)"
            ),
            [],
        )
    if size == 0:
        return None, f"{path.name} is an empty file", []
    try:
        raw = read_regular(path, settings.max_notebook_mb * MB)
    except OSError as exc:
        return None, f"{path.name} cannot be read ({exc.strerror or exc})", []
    if len(raw) > settings.max_notebook_mb * MB:
        return None, f"{path.name} is over the {settings.max_notebook_mb} MB limit", []
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        return None, _too_deep(path), []
    except (UnicodeDecodeError, ValueError) as exc:
        return (
            None,
            f"{path.name} is not a notebook: not valid JSON ({str(exc)[:80]}); "
            "the file may be truncated or corrupted",
            [],
        )
    if not isinstance(data, dict):
        return None, f"{path.name} is not a notebook: JSON of type {type(data).__name__}", []
    if json_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return None, _too_deep(path), []
    version = data.get("nbformat")
    notes = []
    if version == 3:
        try:
            data = json.loads(nbformat.writes(nbformat.reads(raw.decode(), as_version=4)))
            notes.append("converted from notebook format 3")
        except Exception as exc:
            return None, f"{path.name}: notebook format 3 that cannot be converted ({exc})", []
    elif version != 4:
        return None, f"{path.name} has notebook format {version!r}; expected 4", []
    if not isinstance(data.get("cells"), list):
        return None, f"{path.name} is not a notebook: it has no list of cells", []
    return data, None, notes


def _too_deep(path: Path) -> str:
    return (
        f"{path.name} is not a notebook Jupyter wrote: its JSON is nested over "
        f"{MAX_JSON_DEPTH} levels deep"
    )


def json_depth(data, limit: int) -> int:
    """How deep lists and objects nest in ``data`` (parsed JSON), counted up to ``limit`` + 1
    (iteratively: a deep document cannot exhaust Python's stack)."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return deepest


def sanitize(data: dict, release: dict) -> tuple[dict, list[str]]:
    """A clean notebook built from a submitted one; notes on everything put back.

    Locked cells (tests, read-only set-up) come back as released; exercise cells keep the
    student's code but get their released metadata and type; cells whose grading metadata does
    not match the release lose it (they still run, as ordinary cells); outputs are dropped.
    """
    import nbformat

    known = _release_cells(release)
    notes: list[str] = []
    seen: set[str] = set()
    cells = []
    for index, raw in enumerate(data["cells"]):
        if not isinstance(raw, dict):
            notes.append(f"cell {index} is not a cell: dropped")
            continue
        kind = raw.get("cell_type")
        source = _text(raw.get("source", ""))
        if kind not in ("code", "markdown", "raw") or source is None:
            notes.append(f"cell {index} is malformed (type {kind!r}): dropped")
            continue
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        new_meta: dict = {}
        tags = meta.get("tags")
        if isinstance(tags, list) and all(isinstance(t, str) for t in tags):
            new_meta["tags"] = list(tags)
        grading = meta.get("nbgrader")
        if grading is not None:
            grade_id = grading.get("grade_id") if isinstance(grading, dict) else None
            ref = known.get(grade_id) if isinstance(grade_id, str) else None
            if ref is None:
                notes.append(
                    f"cell {index}: grading metadata with unknown id {grade_id!r} removed "
                    "(changed grade_id?)"
                )
            elif grade_id in seen:
                notes.append(f"cell {index}: a second copy of {grade_id} runs as an ordinary cell")
            else:
                seen.add(grade_id)
                ref_meta = ref["metadata"]["nbgrader"]
                new_meta["nbgrader"] = copy.deepcopy(ref_meta)
                changed = sorted(
                    k
                    for k in ("grade", "solution", "locked", "points")
                    if grading.get(k) != ref_meta.get(k)
                )
                if changed:
                    notes.append(f"{grade_id}: metadata {', '.join(changed)} restored")
                if kind != ref["cell_type"]:
                    notes.append(f"{grade_id}: cell type {kind} restored to {ref['cell_type']}")
                    kind = ref["cell_type"]
                if ref_meta.get("locked") and source != _text(ref["source"]):
                    notes.append(f"{grade_id}: edited read-only cell restored")
                    source = _text(ref["source"])
        new = {
            "code": nbformat.v4.new_code_cell,
            "markdown": nbformat.v4.new_markdown_cell,
            "raw": nbformat.v4.new_raw_cell,
        }[kind](source=source, metadata=new_meta)
        new["id"] = f"cell-{len(cells)}"
        cells.append(new)
    # Put back missing graded cells as released, after the cell that precedes them in the
    # release (nbgrader's own add_missing_cells fails when that cell is missing too).
    previous = None
    for grade_id, ref in known.items():
        if grade_id not in seen:
            meta = ref["metadata"]["nbgrader"]
            kind = "test" if meta.get("grade") and not meta.get("solution") else "exercise"
            if meta.get("solution"):
                notes.append(f"{grade_id}: deleted exercise cell put back unanswered")
            else:
                notes.append(f"{grade_id}: deleted {kind} cell put back")
            new = nbformat.from_dict(copy.deepcopy(ref))
            if new.cell_type == "code":
                new.outputs = []
            at = 0
            if previous is not None:
                at = 1 + next(i for i, c in enumerate(cells) if _grade_id(c) == previous)
            new["id"] = f"restored-{grade_id}"[:64]
            cells.insert(at, new)
            seen.add(grade_id)
        previous = grade_id
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(release["metadata"]))
    return nb, notes


def _copy_limited(source, dest, limit: int) -> int:
    """Copy at most ``limit`` bytes (a file that grows while it is copied stays bounded)."""
    copied = 0
    while copied < limit:
        block = source.read(min(1 << 20, limit - copied))
        if not block:
            break
        dest.write(block)
        copied += len(block)
    return copied


def _copy_files(source: Path, dest: Path, settings: Settings, notes: list) -> None:
    """Copy a submission's other regular files (not notebooks, links, special files or
    oversized ones; at most ``MAX_FILES``, a few levels deep)."""
    total, count = 0, 0
    for kind, rel, info in walk(source):
        shown = printable(rel)
        if kind == "link":
            notes.append(f"ignored link {shown}")
        elif kind == "special":
            notes.append(f"ignored {shown}: not a regular file (a FIFO, socket or device)")
        elif kind == "unreadable":
            notes.append(f"ignored {shown or 'the folder'}: it cannot be read")
        elif kind == "too-deep":
            notes.append(f"ignored what is inside {shown[:200]}: folders nested too deeply")
        elif kind == "too-many":
            notes.append("ignored the rest of the folder: too many files")
        if kind != "file" or rel.endswith(".ipynb"):
            continue
        if not rel.isprintable():  # undecodable bytes or control characters
            notes.append(f"ignored {shown}: a file name that is not plain text")
            continue
        size = info.st_size
        if rel == "timestamp.txt":
            from nbgrader.utils import parse_utc

            try:
                parse_utc(read_regular(source / rel, 1000).decode().strip())
            except Exception:
                notes.append("ignored an unreadable timestamp.txt")
                continue
        if total + size > settings.max_files_mb * MB or count >= MAX_FILES:
            notes.append(f"ignored {shown} ({size / MB:.1f} MB): over the limit for files")
            continue
        target = dest / rel
        try:
            fd = open_regular(source / rel)
            with os.fdopen(fd, "rb") as fh:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    copied = _copy_limited(fh, out, settings.max_files_mb * MB - total)
        except OSError as exc:
            notes.append(f"ignored {shown}: it cannot be copied ({exc.strerror or exc})")
            continue
        total, count = total + copied, count + 1


def stage(
    root: Path, lesson: str, student: str, settings: Settings, job: int, target: Target
) -> Staged:
    """Write a clean copy of ``student``'s ``lesson`` into ``<target>/staged/job<job>``.

    Never raises: a submission that cannot be read or staged for any reason (nesting that
    exhausts Python's stack, memory, a file system error) is rejected with the reason."""
    result = Staged(student, lesson, job=job)
    try:
        _stage(root, lesson, student, settings, job, target, result)
    except Exception as exc:  # RecursionError, MemoryError, OSError, a bug: this one only
        what = printable(str(exc))[:200]
        result.rejected = (
            f"grader error: the submission could not be read ({type(exc).__name__}: {what})"
        )
    return result


def _stage(
    root: Path,
    lesson: str,
    student: str,
    settings: Settings,
    job: int,
    target: Target,
    result: Staged,
) -> None:
    import nbformat

    source = course_folder(root, "submitted") / student / lesson
    dest = target.staged / f"job{job}" / student / lesson
    remove_tree(dest)
    expected = f"{lesson}.ipynb"
    notebooks = sorted(
        rel
        for kind, rel, _ in walk(source, max_depth=1)
        if kind == "file" and rel.endswith(".ipynb")
    )
    if expected in notebooks:
        chosen = expected
        others = [n for n in notebooks if n != expected]
        if others:
            result.notes.append(f"ignored other notebooks: {printable(', '.join(others))}")
    elif len(notebooks) == 1:
        chosen = notebooks[0]
        result.notes.append(f"graded {printable(chosen)} in place of the missing {expected}")
    else:
        found = f" (found {printable(', '.join(notebooks))})" if notebooks else ""
        if (source / expected).is_symlink():
            found = f" ({expected} is a link)"
        elif os.path.lexists(source / expected):
            found = f" ({expected} is not a regular file)"
        result.rejected = f"no {expected} in the submission{found}"
        return
    data, rejected, notes = _read_notebook(source / chosen, settings)
    result.notes += notes
    if rejected:
        result.rejected = printable(rejected)
        return
    release = json.loads((target.release / lesson / expected).read_text())
    nb, notes = sanitize(data, release)
    result.notes += [printable(n) for n in notes]
    dest.mkdir(parents=True)
    _copy_files(source, dest, settings, result.notes)
    nbformat.write(nb, dest / expected)
