"""Step 2 of ``autograde``: a clean copy of each submission, with notes on what was put back."""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from helpers.grading.common import MB, Settings, Target, course_folder


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

    size = path.stat().st_size
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
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return (
            None,
            f"{path.name} is not a notebook: not valid JSON ({str(exc)[:80]}); "
            "the file may be truncated or corrupted",
            [],
        )
    if not isinstance(data, dict):
        return None, f"{path.name} is not a notebook: JSON of type {type(data).__name__}", []
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


def _copy_files(source: Path, dest: Path, settings: Settings, notes: list) -> None:
    """Copy a submission's other regular files (not notebooks, links or oversized ones)."""
    total, count = 0, 0
    for folder, dirs, files in os.walk(source):  # links to folders are not followed
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for name in sorted(files):
            path = Path(folder) / name
            rel = path.relative_to(source)
            if path.is_symlink():
                notes.append(f"ignored link {rel}")
                continue
            if not path.is_file() or path.suffix == ".ipynb":
                continue
            size = path.stat().st_size
            if rel.name == "timestamp.txt":
                from nbgrader.utils import parse_utc

                try:
                    parse_utc(path.read_text().strip())
                except Exception:
                    notes.append("ignored an unreadable timestamp.txt")
                    continue
            if total + size > settings.max_files_mb * MB or count >= 200:
                notes.append(f"ignored {rel} ({size / MB:.1f} MB): over the limit for files")
                continue
            total, count = total + size, count + 1
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def stage(
    root: Path, lesson: str, student: str, settings: Settings, job: int, target: Target
) -> Staged:
    """Write a clean copy of ``student``'s ``lesson`` into ``<target>/staged/job<job>``."""
    import nbformat

    result = Staged(student, lesson, job=job)
    source = course_folder(root, "submitted") / student / lesson
    dest = target.staged / f"job{job}" / student / lesson
    if dest.exists():
        shutil.rmtree(dest)
    expected = f"{lesson}.ipynb"
    notebooks = sorted(
        p.name
        for p in source.iterdir()
        if p.suffix == ".ipynb" and not p.is_symlink() and p.is_file()
    )
    if expected in notebooks:
        chosen = expected
        others = [n for n in notebooks if n != expected]
        if others:
            result.notes.append(f"ignored other notebooks: {', '.join(others)}")
    elif len(notebooks) == 1:
        chosen = notebooks[0]
        result.notes.append(f"graded {chosen} in place of the missing {expected}")
    else:
        found = f" (found {', '.join(notebooks)})" if notebooks else ""
        if (source / expected).is_symlink():
            found = f" ({expected} is a link)"
        result.rejected = f"no {expected} in the submission{found}"
        return result
    data, rejected, notes = _read_notebook(source / chosen, settings)
    result.notes += notes
    if rejected:
        result.rejected = rejected
        return result
    release = json.loads((target.release / lesson / expected).read_text())
    nb, notes = sanitize(data, release)
    result.notes += notes
    dest.mkdir(parents=True)
    _copy_files(source, dest, settings, result.notes)
    nbformat.write(nb, dest / expected)
    return result
