"""``make similarity LESSON=01``: which students' answers to an exercise are most alike.

    python -m helpers.grading.similarity 01          # a lesson id or a unique prefix
    python -m helpers.grading.similarity 01 --root DIR --top 20 --threshold 0.6

For every exercise of the lesson (a cell whose ``metadata.nbgrader`` has ``solution: true``),
every pair of students' answers (the source of the cell with that ``grade_id``) is compared
with `copydetect <https://github.com/blingenf/copydetect>`_: the code is tokenized and every
name becomes ``V``/``F``/``O``, strings ``S``, comments and white space are dropped, so renaming
variables, rewording comments or re-indenting changes nothing; then all the k-grams (``k``
characters of that filtered code) are fingerprinted. The released scaffold of the exercise (its
signature, docstring, ``# YOUR CODE HERE`` and ``raise NotImplementedError()``) is copydetect
*boilerplate*: its k-grams are removed from every answer, and so are the k-grams that overlap
scaffold code (the seam between the given signature and a student's first line), so two
students who left the scaffold untouched have nothing to compare and are never reported, and
two answers do not match merely because both begin after the same ``def`` line.

Settings, chosen for answers of 5 to 30 lines:

* ``k`` (copydetect's *noise threshold*, ``--noise-threshold``), default 12 characters of
  filtered code: about one statement (``dbias = da.sum(dim=0)`` is ``V=V.V(V=0)``, 10;
  ``h = torch.tanh(x @ w.T + b)`` is ``V=V.V(V@V.V+V)``, 14). Shorter matches are noise: any
  two answers share fragments like ``V.V(V,V)``. Longer ones miss copies whose short
  statements were reordered, since a k-gram that spans two statements breaks when they are
  swapped; copydetect's default (25) suits whole files, not a 5-line function. An answer whose
  own code (scaffold removed) is shorter than ``k``, like ``x = "vanishes"``, has no
  fingerprint and cannot match anyone: a couple of tokens never dominate.
* Every k-gram is kept (copydetect's *guarantee threshold* equals the noise threshold: a
  winnowing window of 1). Winnowing saves nothing on answers this short, and it picks k-grams
  by Python's ``hash()`` of strings, which changes from run to run: with every k-gram kept, the
  results are the same on every run.
* ``--threshold`` (default 0.5) flags a pair. On lesson 01, a planted copy (names changed,
  statements reordered, comments rewritten) scores above 0.8 on every exercise and 0.95
  overall; genuinely different correct solutions score below 0.4 (``tests/test_similarity.py``).

Scores, all between 0 and 1:

* per exercise, for students A and B: copydetect's share of A's fingerprinted code found in B
  (``similarity_a``) and of B's found in A (``similarity_b``), and their mean weighted by the
  two answers' lengths, ``(matched_a + matched_b) / (length_a + length_b)``: the ``similarity``
  the pairs are ranked by; a length is the count of filtered characters fingerprinted, the
  scaffold removed. A copy padded with as much code again scores 0.67, not 1.
* overall, for a pair: the same ratio summed over every exercise both students answered (so a
  long exercise counts more than a short one, and a short forced answer cannot dominate), and
  the highest per-exercise similarity. Pairs are ranked by the overall score, then the highest.

Writes ``grading/similarity/<lesson>/pairs.csv`` (``student_a, student_b, exercise,
similarity, similarity_a, similarity_b, length_a, length_b``: a row per pair and exercise both
answered, and a row per pair with ``exercise`` = ``(all)`` for the overall score, most similar
first) and ``report.html`` (self-contained: the most similar pairs with the matching code of
both answers highlighted). Unreadable notebooks, missing or malformed cells are skipped with a
note, printed and shown in the report. A high score is a reason to look, not a verdict: short
exercises with one natural answer are alike even when written independently.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from helpers import course
from helpers.grading.common import add_root_argument, course_folder, grading_dir
from helpers.grading.settings import Settings
from helpers.grading.stage import _read_notebook, _text

NOISE_THRESHOLD = 12
THRESHOLD = 0.5
TOP = 10
ALL = "(all)"
COLUMNS = [
    "student_a",
    "student_b",
    "exercise",
    "similarity",
    "similarity_a",
    "similarity_b",
    "length_a",
    "length_b",
]


@dataclass
class Answer:
    """One student's answer to one exercise, fingerprinted with the scaffold removed."""

    student: str
    exercise: str
    code: str
    fingerprint: object  # copydetect.CodeFingerprint

    @property
    def length(self) -> int:
        """Characters of filtered code covered by fingerprints (0: nothing beyond the scaffold)."""
        return int(self.fingerprint.token_coverage)


@dataclass
class Match:
    """Two students' answers to one exercise (``a`` < ``b``), compared."""

    exercise: str
    a: str
    b: str
    similarity_a: float  # share of a's fingerprinted code found in b's
    similarity_b: float
    length_a: int
    length_b: int
    slices_a: object = None  # copydetect's 2xN (start, end) positions in the raw code
    slices_b: object = None

    @property
    def matched(self) -> float:
        return self.similarity_a * self.length_a + self.similarity_b * self.length_b

    @property
    def similarity(self) -> float:
        return self.matched / (self.length_a + self.length_b)


@dataclass
class Pair:
    """Two students over every exercise both answered."""

    a: str
    b: str
    matches: list[Match] = field(default_factory=list)

    @property
    def similarity(self) -> float:
        total = sum(m.length_a + m.length_b for m in self.matches)
        return sum(m.matched for m in self.matches) / total if total else 0.0

    @property
    def highest(self) -> Match:
        return max(self.matches, key=lambda m: (m.similarity, m.length_a + m.length_b))


@dataclass
class Result:
    """Everything a run found: exercises, answers, comparisons, and what was skipped."""

    lesson: str
    exercises: list[str]
    students: list[str]
    answers: dict[tuple[str, str], Answer]  # (student, exercise) -> answer
    matches: list[Match]
    pairs: list[Pair]
    skipped: list[str]  # "student: why" (a whole notebook)
    notes: list[str]  # "student, exercise: why"


def _grade_id(cell) -> str | None:
    """The cell's nbgrader ``grade_id``, or None (also for malformed cells and metadata)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
    return grade_id if isinstance(grade_id, str) else None


def scaffolds(release: dict) -> dict[str, str]:
    """``grade_id -> released source`` of every exercise cell, in the notebook's order."""
    found: dict[str, str] = {}
    for cell in release.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and meta.get("grade_id"):
            found.setdefault(meta["grade_id"], _text(cell.get("source", "")) or "")
    return found


def _common_affixes(a: str, b: str) -> tuple[int, int]:
    """Lengths of the longest common prefix and suffix of ``a`` and ``b`` (not overlapping)."""
    prefix = len(os.path.commonprefix([a, b]))
    rest_a, rest_b = a[prefix:], b[prefix:]
    suffix = len(os.path.commonprefix([rest_a[::-1], rest_b[::-1]]))
    return prefix, suffix


def _fingerprint(name: str, code: str, k: int, scaffold=None):
    """copydetect's fingerprint of ``code`` (Python) without the ``scaffold``'s code.

    ``scaffold`` is the fingerprint of the released cell (every k-gram). The answer's k-grams
    that are scaffold (copydetect boilerplate) are removed, and so are those that overlap
    scaffold code: the scaffold's k-grams found in the answer and the filtered code the answer
    begins and ends with as the scaffold does (the given signature and docstring). Otherwise a
    k-gram half signature, half the student's first line would match between any two answers
    that merely begin alike. The boilerplate is removed here rather than by
    ``CodeFingerprint(boilerplate=...)``, which (copydetect 0.5.0) also drops repeated k-grams
    of the code itself.
    """
    import numpy as np
    from copydetect import CodeFingerprint
    from copydetect.utils import get_token_coverage

    fp = CodeFingerprint(name, k, 1, language="python", fp=io.StringIO(code))
    if scaffold is None:
        return fp
    size = len(fp.filtered_code)
    given = np.zeros(size + k, dtype=np.int64)  # 1: a filtered character of the scaffold
    prefix, suffix = _common_affixes(fp.filtered_code, scaffold.filtered_code)
    given[:prefix] = 1
    given[size - suffix : size] = 1
    for h, starts in fp.hash_idx.items():
        if h in scaffold.hashes:
            for i in starts:
                given[i : i + k] = 1
    before = np.concatenate([[0], np.cumsum(given)])  # scaffold characters before each index
    kept = {}
    for h, starts in fp.hash_idx.items():
        own = [i for i in starts if before[i + k] == before[i]]
        if own:
            kept[h] = own
    fp.hash_idx = kept
    fp.hashes = set(kept)
    fp.token_coverage = get_token_coverage(kept, k, size)
    return fp


def read_answers(
    root: Path, lesson: str, exercises: list[str]
) -> tuple[dict[str, dict[str, str]], list[str], list[str], list[str]]:
    """(student -> grade_id -> source, students read, skipped students, notes) for ``lesson``."""
    submitted = course_folder(root, "submitted")
    students = sorted(
        p.name
        for p in (submitted.iterdir() if submitted.is_dir() else [])
        if p.is_dir() and not p.is_symlink() and (p / lesson).is_dir()
    )
    answers: dict[str, dict[str, str]] = {}
    skipped: list[str] = []
    notes: list[str] = []
    wanted = set(exercises)
    for student in students:
        path = submitted / student / lesson / f"{lesson}.ipynb"
        if not path.is_file() or path.is_symlink():
            skipped.append(f"{student}: no {path.name} in the submission")
            continue
        data, rejected, _ = _read_notebook(path, Settings())
        if rejected:
            skipped.append(f"{student}: {rejected}")
            continue
        found: dict[str, str] = {}
        seen: set[str] = set()
        for cell in data["cells"]:
            grade_id = _grade_id(cell)
            if grade_id not in wanted:
                continue
            source = _text(cell.get("source"))
            if grade_id in seen:
                notes.append(f"{student}, {grade_id}: more than one cell; only the first compared")
            elif source is None:
                notes.append(f"{student}, {grade_id}: the cell's source is not text")
            else:
                found[grade_id] = source
            seen.add(grade_id)
        for grade_id in exercises:
            if grade_id not in seen:
                notes.append(f"{student}, {grade_id}: no cell with this grade_id")
        answers[student] = found
    return answers, sorted(answers), skipped, notes


def compare(root: Path, lesson: str, noise_threshold: int = NOISE_THRESHOLD) -> Result:
    """Compare every pair of students' answers to every exercise of ``lesson``."""
    from copydetect import compare_files

    if noise_threshold < 5:
        raise ValueError(f"noise threshold must be at least 5 characters, got {noise_threshold}")
    release_path = course.notebook_path("release", lesson, root)
    if not release_path.is_file():
        raise ValueError(f"expected the released notebook {release_path} (run make release)")
    release, rejected, _ = _read_notebook(release_path, Settings())
    if rejected:
        raise ValueError(f"expected a notebook at {release_path}: {rejected}")
    given = scaffolds(release)
    exercises = list(given)
    texts, students, skipped, notes = read_answers(root, lesson, exercises)
    answers: dict[tuple[str, str], Answer] = {}
    for exercise in exercises:
        scaffold = _fingerprint("scaffold.py", given[exercise], noise_threshold)
        for student in students:
            code = texts[student].get(exercise)
            if code is None:
                continue
            fp = _fingerprint(f"{student}/{exercise}.py", code, noise_threshold, scaffold)
            answers[student, exercise] = Answer(student, exercise, code, fp)
    matches: list[Match] = []
    pairs: dict[tuple[str, str], Pair] = {}
    for exercise in exercises:
        for a, b in itertools.combinations(students, 2):
            first, second = answers.get((a, exercise)), answers.get((b, exercise))
            if first is None or second is None or not first.length or not second.length:
                continue
            _, (sim_a, sim_b), (slices_a, slices_b) = compare_files(
                first.fingerprint, second.fingerprint
            )
            match = Match(
                exercise,
                a,
                b,
                float(sim_a),
                float(sim_b),
                first.length,
                second.length,
                slices_a,
                slices_b,
            )
            matches.append(match)
            pairs.setdefault((a, b), Pair(a, b)).matches.append(match)
    order = {x: i for i, x in enumerate(exercises)}
    matches.sort(key=lambda m: (-round(m.similarity, 6), order[m.exercise], m.a, m.b))
    ranked = sorted(
        pairs.values(),
        key=lambda p: (-round(p.similarity, 6), -round(p.highest.similarity, 6), p.a, p.b),
    )
    return Result(lesson, exercises, students, answers, matches, ranked, skipped, notes)


def write_csv(result: Result, path: Path) -> None:
    """``pairs.csv``: a row per pair and exercise, and a row per pair overall, most similar
    first."""
    rows = [
        [m.a, m.b, m.exercise, m.similarity, m.similarity_a, m.similarity_b, m.length_a, m.length_b]
        for m in result.matches
    ]
    for p in result.pairs:
        length_a = sum(m.length_a for m in p.matches)
        length_b = sum(m.length_b for m in p.matches)
        share_a = sum(m.similarity_a * m.length_a for m in p.matches) / length_a
        share_b = sum(m.similarity_b * m.length_b for m in p.matches) / length_b
        rows.append([p.a, p.b, ALL, p.similarity, share_a, share_b, length_a, length_b])
    rows.sort(key=lambda r: (-round(r[3], 6), r[2] != ALL, r[0], r[1], r[2]))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([*row[:3], *(f"{x:.4f}" for x in row[3:6]), *row[6:]])


def _highlighted(code: str, slices) -> str:
    """``code`` as HTML, the parts copydetect matched in ``<mark>``."""
    from copydetect.utils import highlight_overlap

    if slices is None or len(slices) == 0 or slices.shape[-1] == 0:
        return html.escape(code)
    text, _ = highlight_overlap(code, slices, "<mark>", "</mark>", truncate=-1, escape_html=True)
    return text


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { background: #fff0f0; }
.code { display: flex; gap: 1em; }
.code > div { flex: 1; min-width: 0; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
mark { background: #ffb3b3; }
h3 { margin-top: 2em; }
"""


def write_html(result: Result, path: Path, top: int, threshold: float) -> None:
    """``report.html``: the pairs ranked, per exercise, and the matching code highlighted."""
    e = html.escape
    shown = [p for i, p in enumerate(result.pairs) if i < top or p.similarity >= threshold]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Similarity: {e(result.lesson)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Code similarity: {e(result.lesson)}</h1>",
        f"<p>{len(result.students)} students compared on {len(result.exercises)} exercises "
        f"(scaffold ignored; copydetect). Pairs at or above {threshold:.2f} are flagged. "
        "A high score is a reason to look, not a verdict.</p>",
    ]
    if result.skipped or result.notes:
        out.append("<h2>Skipped</h2><ul>")
        out += [f"<li>{e(x)}</li>" for x in [*result.skipped, *result.notes]]
        out.append("</ul>")
    out.append("<h2>Most similar pairs</h2>")
    if not result.pairs:
        out.append("<p>No two students have answers to compare.</p>")
    else:
        out.append(
            "<table><tr><th>#</th><th>student A</th><th>student B</th><th>overall</th>"
            "<th>most alike exercise</th><th>its similarity</th><th>exercises</th></tr>"
        )
        for i, p in enumerate(shown, 1):
            flag = ' class="flagged"' if p.similarity >= threshold else ""
            out.append(
                f'<tr{flag}><td class="num">{i}</td><td>{e(p.a)}</td><td>{e(p.b)}</td>'
                f'<td class="num">{p.similarity:.3f}</td><td>{e(p.highest.exercise)}</td>'
                f'<td class="num">{p.highest.similarity:.3f}</td>'
                f'<td class="num">{len(p.matches)}</td></tr>'
            )
        out.append("</table>")
    out.append("<h2>Per exercise</h2>")
    for exercise in result.exercises:
        best = [m for m in result.matches if m.exercise == exercise][:top]
        out.append(f"<h3>{e(exercise)}</h3>")
        if not best:
            out.append("<p>No two students answered beyond the scaffold.</p>")
            continue
        out.append(
            "<table><tr><th>student A</th><th>student B</th><th>similarity</th>"
            "<th>of A in B</th><th>of B in A</th></tr>"
        )
        for m in best:
            flag = ' class="flagged"' if m.similarity >= threshold else ""
            out.append(
                f"<tr{flag}><td>{e(m.a)}</td><td>{e(m.b)}</td>"
                f'<td class="num">{m.similarity:.3f}</td>'
                f'<td class="num">{m.similarity_a:.3f}</td>'
                f'<td class="num">{m.similarity_b:.3f}</td></tr>'
            )
        out.append("</table>")
    out.append("<h2>Matching code</h2>")
    for p in shown:
        out.append(
            f'<section class="pair"><h3 id="{e(p.a)}--{e(p.b)}">{e(p.a)} and {e(p.b)}: '
            f"{p.similarity:.3f}</h3>"
        )
        for m in sorted(p.matches, key=lambda m: -m.similarity):
            if m.similarity == 0:
                continue
            code_a = result.answers[m.a, m.exercise].code
            code_b = result.answers[m.b, m.exercise].code
            out.append(
                f"<h4>{e(m.exercise)}: {m.similarity:.3f}</h4>"
                f'<div class="code"><div><b>{e(m.a)}</b>'
                f"<pre>{_highlighted(code_a, m.slices_a)}</pre></div>"
                f"<div><b>{e(m.b)}</b><pre>{_highlighted(code_b, m.slices_b)}</pre></div></div>"
            )
        out.append("</section>")
    out.append("</body></html>")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grading.similarity",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("lesson", help="lesson id or a unique prefix, e.g. 01")
    add_root_argument(parser)
    parser.add_argument(
        "--top", type=int, default=TOP, help=f"pairs to show and print (default {TOP})"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=THRESHOLD,
        help=f"flag pairs at or above this similarity, 0 to 1 (default {THRESHOLD})",
    )
    parser.add_argument(
        "--noise-threshold",
        type=int,
        default=NOISE_THRESHOLD,
        help=f"shortest match counted, in characters of filtered code (default {NOISE_THRESHOLD})",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / course.NBGRADER_CONFIG.name).is_file():
        parser.error(f"{root} has no nbgrader_config.py: run from the course root")
    if args.top < 1:
        parser.error(f"--top: expected a positive number of pairs, got {args.top}")
    if not 0 <= args.threshold <= 1:
        parser.error(f"--threshold: expected a similarity between 0 and 1, got {args.threshold}")
    try:
        lesson = course.lesson(args.lesson).id
        result = compare(root, lesson, args.noise_threshold)
    except ValueError as exc:
        parser.error(str(exc))
    out = grading_dir(root) / "similarity" / lesson
    out.mkdir(parents=True, exist_ok=True)
    write_csv(result, out / "pairs.csv")
    write_html(result, out / "report.html", args.top, args.threshold)

    print(
        f"{lesson}: {len(result.students)} students, {len(result.exercises)} exercises, "
        f"{len(result.pairs)} pairs compared"
    )
    for line in [*result.skipped, *result.notes]:
        print(f"  skipped {line}")
    flagged = sum(p.similarity >= args.threshold for p in result.pairs)
    print(f"most similar pairs ({flagged} at or above {args.threshold:.2f}):")
    for p in result.pairs[: args.top]:
        mark = "!" if p.similarity >= args.threshold else " "
        print(
            f" {mark} {p.similarity:.3f}  {p.a} / {p.b}  "
            f"(most alike: {p.highest.exercise} {p.highest.similarity:.3f})"
        )
    if not result.pairs:
        print("  none: no two students have answers to compare")
    print(f"report: {out / 'report.html'}")
    print(f"pairs:  {out / 'pairs.csv'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")  # copydetect imports matplotlib.pyplot
    sys.exit(main())
