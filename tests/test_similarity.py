"""``make similarity``: a planted copy ranks first, independent solutions and untouched
releases are not flagged, broken submissions are skipped (``helpers.grading.similarity``)."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, notebook_path

from helpers import course as helpers_course
from helpers.grading import similarity

LESSON = "01_intro_to_rnns"
#: Independent solutions must stay below this (the module's default flagging threshold).
THRESHOLD = similarity.THRESHOLD
MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\n?", re.M)

RNN_CELL_DOC = '''    """One step of a tanh RNN, as torch.nn.RNNCell computes it."""
'''

# bob: alice's (the reference solution's) answers, variables renamed, independent lines
# reordered, comments changed and added.
BOB = {
    "rnn_cell": '''def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """My RNN cell."""
    # weighted input plus weighted state
    z = x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh
    return torch.tanh(z)  # squash into (-1, 1)
''',
    "rnn_forward": '''def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
    """Whole sequence."""
    outs = []  # every hidden state
    state = h0
    for i in range(x.shape[1]):
        # one step at a time
        state = rnn_cell(x[:, i], state, weight_ih, weight_hh, bias_ih, bias_hh)
        outs.append(state)
    return torch.stack(outs, dim=1), state
''',
    "hidden_state_shape": '''\
def hidden_state_shape(num_layers, batch_size, hidden_size, bidirectional=False):
    """Shape."""
    dirs = 2 if bidirectional else 1  # two directions when bidirectional
    return (num_layers * dirs, batch_size, hidden_size)
''',
    "rnn_cell_backward": '''def rnn_cell_backward(dh_next, x, h, h_next, weight_ih, weight_hh):
    """Backward of one step."""
    # tanh' = 1 - tanh^2
    g = dh_next * (1 - h_next**2)
    db = g.sum(dim=0)
    dw_hh = g.T @ h
    dw_ih = g.T @ x
    d_prev = g @ weight_hh
    d_in = g @ weight_ih
    return d_in, d_prev, dw_ih, dw_hh, db
''',
    "rnn_backward": '''def rnn_backward(doutput, x, h0, output, weight_ih, weight_hh):
    """BPTT."""
    n = x.shape[1]
    grads_x = [None] * n
    g_b = torch.zeros_like(h0[0])
    g_hh = torch.zeros_like(weight_hh)
    g_ih = torch.zeros_like(weight_ih)
    carry = torch.zeros_like(h0)  # gradient flowing back from the future
    for step in reversed(range(n)):
        before = output[:, step - 1] if step > 0 else h0
        grads_x[step], carry, a, b, c = rnn_cell_backward(
            doutput[:, step] + carry, x[:, step], before, output[:, step], weight_ih, weight_hh
        )
        g_ih = g_ih + a
        g_hh = g_hh + b
        g_b = g_b + c
    return torch.stack(grads_x, dim=1), carry, g_ih, g_hh, g_b
''',
    "clip_grad_norm": '''def clip_grad_norm(grads, max_norm):
    """Clip."""
    norm = sum(float((t**2).sum()) for t in grads) ** 0.5  # global L2 norm
    factor = min(1.0, max_norm / (norm + 1e-6))
    return [t * factor for t in grads], norm
''',
}

# carol and dave: their own correct implementations, other exercises left as released.
CAROL = {
    "rnn_cell": '''def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """One step."""
    linear = torch.nn.functional.linear
    return torch.tanh(linear(x, weight_ih, bias_ih) + linear(h, weight_hh, bias_hh))
''',
    "rnn_forward": '''def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
    """Preallocated output."""
    batch, seq_len, _ = x.shape
    output = x.new_zeros(batch, seq_len, h0.shape[1])
    state = h0
    for step in range(seq_len):
        state = rnn_cell(x[:, step, :], state, weight_ih, weight_hh, bias_ih, bias_hh)
        output[:, step, :] = state
    return output, state
''',
    "rnn_cell_backward": '''def rnn_cell_backward(dh_next, x, h, h_next, weight_ih, weight_hh):
    """With torch.matmul."""
    dpre = (1.0 - h_next * h_next) * dh_next
    grads = (
        torch.matmul(dpre, weight_ih),
        torch.matmul(dpre, weight_hh),
        torch.matmul(dpre.t(), x),
        dpre.t().matmul(h),
        dpre.sum(0),
    )
    return grads
''',
    "clip_grad_norm": '''def clip_grad_norm(grads, max_norm):
    """Early return."""
    if not grads:
        return [], 0.0
    norm = torch.sqrt(sum(torch.sum(g * g) for g in grads)).item()
    factor = max_norm / (norm + 1e-6)
    if factor >= 1:
        return [g.clone() for g in grads], norm
    return [g * factor for g in grads], norm
''',
}
DAVE = {
    "rnn_cell": '''def rnn_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """addmm."""
    a = torch.addmm(bias_ih, x, weight_ih.t())
    b = torch.addmm(bias_hh, h, weight_hh.t())
    return (a + b).tanh()
''',
    "rnn_forward": '''def rnn_forward(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
    """The input projection for every step at once."""
    projected = x @ weight_ih.T + bias_ih  # (batch, seq, hidden)
    states = []
    h = h0
    for t in range(projected.size(1)):
        h = torch.tanh(projected[:, t] + h @ weight_hh.T + bias_hh)
        states.append(h)
    output = torch.stack(states, 1)
    return output, output[:, -1]
''',
    "clip_grad_norm": '''def clip_grad_norm(grads, max_norm):
    """Loops."""
    total = 0.0
    for g in grads:
        total += g.pow(2).sum().item()
    total = math.sqrt(total)
    clipped = []
    for g in grads:
        clipped.append(g * min(1.0, max_norm / (total + 1e-6)))
    return clipped, total
''',
    "hidden_state_shape": '''\
def hidden_state_shape(num_layers, batch_size, hidden_size, bidirectional=False):
    """No conditional expression."""
    if bidirectional:
        return num_layers * 2, batch_size, hidden_size
    return num_layers, batch_size, hidden_size
''',
}
GINA = {
    "clip_grad_norm": '''def clip_grad_norm(grads, max_norm):
    """Per-tensor norms first."""
    norms = torch.stack([g.norm() for g in grads]) if grads else torch.zeros(0)
    total_norm = float(norms.norm()) if grads else 0.0
    if total_norm <= max_norm:
        return [g.clone() for g in grads], total_norm
    return [g * (max_norm / total_norm) for g in grads], total_norm
''',
    "rnn_cell": "",
}


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _exercise_cells(nb: dict) -> dict[str, dict]:
    return {
        c["metadata"]["nbgrader"]["grade_id"]: c
        for c in nb["cells"]
        if c.get("metadata", {}).get("nbgrader", {}).get("solution")
    }


def _with_answers(release: dict, answers: dict[str, str]) -> dict:
    nb = copy.deepcopy(release)
    cells = _exercise_cells(nb)
    for grade_id, source in answers.items():
        cells[grade_id]["source"] = source
    return nb


def _submit(root: Path, student: str, content: dict | str) -> None:
    folder = root / "grading" / "submitted" / student / LESSON
    folder.mkdir(parents=True)
    text = content if isinstance(content, str) else json.dumps(content, indent=1)
    (folder / f"{LESSON}.ipynb").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course with lesson 01 only and eight submissions."""
    root = tmp_path_factory.mktemp("similarity")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    for kind in ("source", "release"):
        dest = notebook_path(kind, LESSON, root).parent
        dest.mkdir(parents=True)
        shutil.copy(notebook_path(kind, LESSON), dest)
    release = _read(notebook_path("release", LESSON))
    solution = _exercise_cells(_read(notebook_path("source", LESSON)))
    reference = {
        g: MARKERS.sub("", "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
        for g, c in solution.items()
    }
    assert set(BOB) < set(reference) and set(CAROL) < set(reference)
    _submit(root, "alice", _with_answers(release, reference))
    _submit(root, "bob", _with_answers(release, BOB))
    _submit(root, "carol", _with_answers(release, CAROL))
    _submit(root, "dave", _with_answers(release, DAVE))
    _submit(root, "erin", release)
    _submit(root, "frank", release)
    _submit(root, "garbage", '{"cells": [ not json')
    broken = _with_answers(release, GINA)
    broken["cells"] = [
        c
        for c in broken["cells"]
        if c["metadata"].get("nbgrader", {}).get("grade_id") != "rnn_forward"
    ]
    _exercise_cells(broken)["rnn_cell"]["source"] = 42
    broken["cells"] += [7, {"cell_type": "code", "metadata": "oops", "source": "x = 1"}]
    _submit(root, "gina", broken)
    return root


@pytest.fixture(scope="module")
def report(course):
    """Run the command once: (stdout, pairs.csv rows, report.html text)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert similarity.main(["01", "--root", str(course), "--top", "5"]) == 0
    folder = course / "grading" / "similarity" / LESSON
    with open(folder / "pairs.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return out.getvalue(), rows, (folder / "report.html").read_text(encoding="utf-8")


def _pair(row) -> frozenset:
    return frozenset((row["student_a"], row["student_b"]))


def test_planted_copy_ranks_first(report):
    stdout, rows, _ = report
    overall = [r for r in rows if r["exercise"] == similarity.ALL]
    assert _pair(overall[0]) == {"alice", "bob"}
    assert float(overall[0]["similarity"]) >= 0.9
    # Every exercise bob copied (answers long enough to fingerprint) is alice/bob's best row.
    for exercise in BOB:
        own = [r for r in rows if r["exercise"] == exercise]
        assert _pair(own[0]) == {"alice", "bob"}, (exercise, own[:3])
        assert float(own[0]["similarity"]) >= THRESHOLD, own[0]
    listed = stdout[stdout.index("most similar pairs") :].splitlines()
    assert "alice / bob" in listed[1], stdout


def test_independent_solutions_are_below_the_copy_and_the_threshold(report):
    _, rows, _ = report
    planted = float(next(r for r in rows if r["exercise"] == similarity.ALL)["similarity"])
    independent = [r for r in rows if _pair(r) & {"carol", "dave", "gina"}]
    assert independent, "carol and dave were compared with someone"
    for row in independent:
        assert float(row["similarity"]) < THRESHOLD, row
        assert float(row["similarity"]) < planted, row


def test_untouched_releases_are_not_similar(report):
    _, rows, _ = report
    assert not [r for r in rows if _pair(r) & {"erin", "frank"}]


def test_broken_submissions_are_skipped_with_a_note(report):
    stdout, rows, page = report
    assert re.search(r"skipped garbage: .*not valid JSON", stdout)
    assert "skipped gina, rnn_cell: the cell's source is not text\n" in stdout
    assert "gina, rnn_cell: no cell" not in stdout
    assert "skipped gina, rnn_forward: no cell with this grade_id" in stdout
    assert "garbage" not in {r["student_a"] for r in rows} | {r["student_b"] for r in rows}
    assert "garbage: " in page
    # gina's other answer is still compared.
    assert any("gina" in _pair(r) and r["exercise"] == "clip_grad_norm" for r in rows)


def test_csv_is_sorted_and_complete(report):
    _, rows, _ = report
    assert list(rows[0]) == similarity.COLUMNS
    values = [float(r["similarity"]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert all(r["student_a"] < r["student_b"] for r in rows)


def test_report_highlights_the_planted_match(report, course):
    stdout, _, page = report
    folder = course / "grading" / "similarity" / LESSON
    assert f"report: {folder / 'report.html'}" in stdout
    assert f"pairs:  {folder / 'pairs.csv'}" in stdout
    section = page[page.index('id="alice--bob"') :]
    section = section[: section.index("</section>")]
    marked = " ".join(re.findall(r"<mark>(.*?)</mark>", section, re.S))
    assert "g_ih = g_ih + a" in marked  # bob's renamed line of rnn_backward
    assert "dweight_ih = dweight_ih + dw_ih" in marked  # alice's
    assert not re.search(r"""(src|href)=["']?https?:""", page)  # self-contained


def test_output_is_deterministic(report, course):
    """The same files from another process, whose string hashes differ (``PYTHONHASHSEED``)."""
    folder = course / "grading" / "similarity" / LESSON
    before = [(folder / n).read_bytes() for n in ("pairs.csv", "report.html")]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    command = [sys.executable, "-m", "helpers.grading.similarity", LESSON, "--top", "5"]
    result = subprocess.run(
        [*command, "--root", str(course)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == report[0]
    assert [(folder / n).read_bytes() for n in ("pairs.csv", "report.html")] == before


def test_unknown_lesson_is_an_error(course, capsys):
    with pytest.raises(ValueError, match="expected one of 01_intro_to_rnns"):
        helpers_course.lesson("09")
    with pytest.raises(SystemExit):
        similarity.main(["09", "--root", str(course)])
    assert "unknown lesson '09'" in capsys.readouterr().err


def test_scaffold_and_its_seams_are_not_fingerprinted():
    scaffold = (
        'def f(a, b):\n    """Doc."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
    )
    given = similarity._fingerprint("scaffold.py", scaffold, 12)
    untouched = similarity._fingerprint("a.py", scaffold, 12, given)
    # "defF(V,V):S" is shorter than k: only the shared-prefix rule keeps its seam out.
    short = similarity._fingerprint(
        "b.py", 'def f(a, b):\n    """Other."""\n    return a\n', 12, given
    )
    body = "    total = a + b * 2\n    return total\n"
    own = similarity._fingerprint("c.py", 'def f(a, b):\n    """Doc."""\n' + body, 12, given)
    assert untouched.token_coverage == short.token_coverage == 0
    assert own.token_coverage == len("V=V+V*2returnV")
