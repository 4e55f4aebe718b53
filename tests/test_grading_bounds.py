"""Submission folders the hostile corpus cannot write (support/hostile/bounds_rows.py has the rest):
a folder 1,100 levels deep, FIFOs (one named like the notebook), a file name that is not UTF-8,
a huge sparse file, an unreadable file and a student folder whose name is not text. Graded in one
``autograde`` run beside an honest control: each gets its marks or 0 with a reason, and the run
goes on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import course_copy, run_grader
from support.hostile.generate import L1, ipynb, perfect, points

from helpers.grading.common import remove_tree, walk
from helpers.grading.stage import json_depth

pytestmark = [pytest.mark.slow, pytest.mark.corpus, pytest.mark.timeout(900)]

SETTINGS = ["--timeout=15", f"--lesson={L1}", "--jobs=2"]


def _deep(folder: Path, levels: int) -> None:
    """A chain of ``levels`` folders under ``folder`` with a file at the bottom (made level by
    level through descriptors: Python's makedirs recurses once per level)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"at the bottom")
        os.close(out)
    finally:
        os.close(fd)


def _submissions(submitted: Path) -> dict[str, str]:
    """student -> what the submission holds besides a solved notebook."""
    solved = ipynb(perfect(L1))
    made = {}

    def folder(student: str, notebook: bool = True) -> Path:
        path = submitted / student / L1
        path.mkdir(parents=True)
        if notebook:
            (path / f"{L1}.ipynb").write_bytes(solved)
        return path

    folder("perfect")
    _deep(folder("deep_folder"), 1100)
    made["deep_folder"] = "a folder 1,100 levels deep"
    path = folder("fifo")
    os.mkfifo(path / "data.csv")
    os.mkfifo(path / "scratch.ipynb")
    made["fifo"] = "FIFOs beside the notebook"
    os.mkfifo(folder("fifo_notebook", notebook=False) / f"{L1}.ipynb")
    made["fifo_notebook"] = "the notebook is a FIFO"
    path = folder("odd_names")
    (path / os.fsdecode(b"notes-\xff\xfe.txt")).write_bytes(b"odd name")
    (path / "tab\tname.txt").write_bytes(b"control character")
    made["odd_names"] = "file names that are not UTF-8 text"
    path = folder("huge_file")
    with open(path / "weights.bin", "wb") as fh:
        fh.truncate(200 * 2**20)  # sparse: 200 MB that take no disk
    made["huge_file"] = "a 200 MB file"
    path = folder("unreadable")
    (path / "secret.txt").write_bytes(b"no")
    os.chmod(path / "secret.txt", 0)
    made["unreadable"] = "a file without read permission"
    path = folder("link_loop")
    os.symlink("loop", path / "loop")
    os.symlink("/dev/zero", path / "zero.csv")
    made["link_loop"] = "a link to itself and one to /dev/zero"
    odd = submitted / os.fsdecode(b"student-\xff")
    (odd / L1).mkdir(parents=True)
    (odd / L1 / f"{L1}.ipynb").write_bytes(solved)
    return made


def test_hostile_folders_never_stop_the_run(tmp_path):
    course = course_copy(tmp_path / "course")
    submitted = course / "grading" / "submitted"
    made = _submissions(submitted)
    try:
        result = run_grader(course, "autograde", *SETTINGS, timeout=900)
        found = {}
        for row in json.loads((course / "grading" / "reasons" / f"{L1}.json").read_text()):
            found[row["student"]] = row
        full = sum(points(L1).values())
        for student in ("perfect", "deep_folder", "fifo", "odd_names", "huge_file"):
            got = found[student]
            assert got["status"] == "graded", (made.get(student), got)
            assert got["score"] == full, (made.get(student), got)
        notes = {s: " ".join(r["notes"]) for s, r in found.items()}
        assert "nested too deeply" in notes["deep_folder"]
        assert "not plain text" in notes["odd_names"]
        assert "not a regular file" in notes["fifo"]
        assert "over the limit for files" in notes["huge_file"]
        assert found["link_loop"]["score"] == full and "ignored link" in notes["link_loop"]
        assert found["unreadable"]["score"] == full, found["unreadable"]
        assert found["fifo_notebook"]["status"] == "rejected"
        assert "not a regular file" in notes["fifo_notebook"]
        assert "not plain text" in result.stdout  # the student folder that is not text
        # grading the unchanged class again skips everyone (fingerprints are stable)
        again = run_grader(course, "autograde", *SETTINGS, timeout=300)
        assert "0 to grade" in again.stdout, again.stdout[-2000:]
    finally:
        remove_tree(submitted)


def test_walk_and_json_depth_are_iterative(tmp_path):
    _deep(tmp_path, 1100)
    entries = list(walk(tmp_path, max_depth=5000, max_entries=5000))
    assert sum(kind == "dir" for kind, _, _ in entries) == 1100
    assert entries[-1][0] == "file" and entries[-1][1].endswith("/deep.txt")
    assert [k for k, _, _ in walk(tmp_path, max_depth=3)] == ["dir", "dir", "dir", "too-deep"]
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth({"a": deep}, 200) == 201
    remove_tree(tmp_path / "d")
    assert not (tmp_path / "d").exists()
