"""Lesson 01: the reference answers against torch.nn on many sizes, and the checks' teaching
messages on the usual mistakes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import loaded, notebook_path
from torch import nn

from helpers.checks import CheckFailure
from helpers.checks.lesson01 import (
    EXERCISES,
    check_adagrad_update,
    check_clip_grad_norm,
    check_clipping_answer,
    check_gradient_answers,
    check_gru_quiz,
    check_hidden_state_shape,
    check_rnn_backward,
    check_rnn_cell,
    check_rnn_cell_backward,
    check_rnn_forward,
    check_softmax_cross_entropy,
    measured_lower_final_loss,
)
from helpers.experiments import clipping_experiment

LESSON = "01_intro_to_rnns"


@pytest.fixture(scope="module")
def ns():
    return loaded(notebook_path("source", LESSON))


def _random_sizes(count, seed=2024):
    g = torch.Generator().manual_seed(seed)
    return [tuple(int(v) for v in torch.randint(1, 9, (4,), generator=g)) for _ in range(count)]


@pytest.mark.parametrize("sizes", _random_sizes(8))
def test_solution_matches_torch_on_random_sizes(ns, sizes):
    batch, seq, input_size, hidden = sizes
    rnn = nn.RNN(input_size, hidden, batch_first=True, dtype=torch.float64)
    params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    x = torch.randn(batch, seq, input_size, dtype=torch.float64)
    h0 = torch.randn(batch, hidden, dtype=torch.float64)
    with torch.no_grad():
        out, h_n = ns["rnn_forward"](x, h0, *params)
        ref_out, ref_h = rnn(x, h0.unsqueeze(0))
        cell = nn.RNNCell(input_size, hidden, dtype=torch.float64)
        cell.load_state_dict({k.removesuffix("_l0"): v for k, v in rnn.state_dict().items()})
        step = ns["rnn_cell"](x[:, 0], h0, *params)
        ref_step = cell(x[:, 0], h0)
    assert (out - ref_out).abs().max() < 1e-10
    assert (h_n - ref_h[0]).abs().max() < 1e-10
    assert (step - ref_step).abs().max() < 1e-10


def _cell_variant(kind):
    def cell(x, h, w_ih, w_hh, b_ih, b_hh):
        if kind == "one bias":
            return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T)
        if kind == "relu":
            return torch.relu(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        if kind == "no recurrence":
            return torch.tanh(x @ w_ih.T + b_ih + b_hh)
        if kind == "transposed":
            return torch.tanh(x @ w_ih + b_ih + h @ w_hh.T + b_hh)
        if kind == "square weight_hh untransposed":
            return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh + b_hh)
        if kind == "bias after tanh":
            return torch.tanh(x @ w_ih.T + h @ w_hh.T) + b_ih + b_hh
        if kind == "no bias":
            return torch.tanh(x @ w_ih.T + h @ w_hh.T)
        raise AssertionError(kind)

    return cell


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("one bias", "bias_hh is missing"),
        ("relu", "relu instead of tanh"),
        ("no recurrence", "previous hidden state h is not used"),
        ("transposed", "wrong way round"),
        ("square weight_hh untransposed", "weight_hh is used untransposed"),
        ("bias after tanh", "biases are added after tanh"),
        ("no bias", "both biases are missing"),
    ],
)
def test_rnn_cell_mistakes_are_named(kind, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_rnn_cell(_cell_variant(kind))
    assert "rnn_cell" in str(info.value) and "inputs: x (3, 4)" in str(info.value)


def test_rnn_forward_ignoring_h0_is_named(ns):
    def forward(x, h0, *params):
        return ns["rnn_forward"](x, torch.zeros_like(h0), *params)

    with pytest.raises(CheckFailure, match="h0 is ignored"):
        check_rnn_forward(forward)


def test_rnn_forward_layer_dimension_is_named(ns):
    def forward(x, h0, *params):
        out, h_n = ns["rnn_forward"](x, h0, *params)
        return out, h_n.unsqueeze(0)

    with pytest.raises(CheckFailure, match="extra dimension of size 1"):
        check_rnn_forward(forward)


def test_hidden_state_shape_mistakes():
    with pytest.raises(CheckFailure, match="batch_first=True does not apply"):
        check_hidden_state_shape(
            lambda layers, batch, hidden, bidirectional=False: (batch, layers, hidden)
        )
    with pytest.raises(CheckFailure, match="one state per direction"):
        check_hidden_state_shape(
            lambda layers, batch, hidden, bidirectional=False: (layers, batch, hidden)
        )


def test_gradient_answers_follow_the_measurement():
    check_gradient_answers("vanishes", "explodes")
    with pytest.raises(CheckFailure, match="not what the plot shows"):
        check_gradient_answers("explodes", "vanishes")
    with pytest.raises(CheckFailure, match="should be one of"):
        check_gradient_answers("small", "explodes")


def test_rnn_cell_square_weight_ih_untransposed_is_named():
    """Only a square weight_ih hides this mistake from the shapes: the third visible case is."""

    def cell(x, h, w_ih, w_hh, b_ih, b_hh):
        if w_ih.shape[0] != w_ih.shape[1]:
            return torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        return torch.tanh(x @ w_ih + b_ih + h @ w_hh.T + b_hh)

    with pytest.raises(CheckFailure, match="weight_ih is used untransposed"):
        check_rnn_cell(cell)


def test_rnn_forward_state_not_carried_and_shift_are_named(ns):
    cell = ns["rnn_cell"]

    def from_h0(x, h0, *params):
        steps = [cell(x[:, t], h0, *params) for t in range(x.shape[1])]
        return torch.stack(steps, dim=1), steps[-1]

    def shifted(x, h0, *params):
        h, steps = h0, []
        for t in range(x.shape[1]):
            steps.append(h)
            h = cell(x[:, t], h, *params)
        return torch.stack(steps, dim=1), h

    with pytest.raises(CheckFailure, match="hidden state is not carried"):
        check_rnn_forward(from_h0)
    with pytest.raises(CheckFailure, match="shifted by one step"):
        check_rnn_forward(shifted)


# ----------------------------------------------------------------------------------------------
# back-propagation through time


def _autograd_cell(batch, input_size, hidden, seed):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    x, h = (torch.randn(batch, n, generator=g, dtype=f64) for n in (input_size, hidden))
    w_ih = torch.randn(hidden, input_size, generator=g, dtype=f64)
    w_hh = torch.randn(hidden, hidden, generator=g, dtype=f64) * 0.5
    b_ih, b_hh = (
        torch.randn(hidden, generator=g, dtype=f64),
        torch.randn(hidden, generator=g, dtype=f64),
    )
    dh_next = torch.randn(batch, hidden, generator=g, dtype=f64)
    leaves = [t.clone().requires_grad_(True) for t in (x, h, w_ih, w_hh, b_ih, b_hh)]
    h_next = torch.tanh(
        F.linear(leaves[0], leaves[2], leaves[4]) + F.linear(leaves[1], leaves[3], leaves[5])
    )
    grads = torch.autograd.grad((h_next * dh_next).sum(), leaves)
    return (dh_next, x, h, h_next.detach(), w_ih, w_hh), grads


@pytest.mark.parametrize("sizes", _random_sizes(6, seed=77))
def test_rnn_cell_backward_matches_autograd_on_random_sizes(ns, sizes):
    batch, _, input_size, hidden = sizes
    args, grads = _autograd_cell(batch, input_size, hidden, seed=sum(sizes))
    got = ns["rnn_cell_backward"](*args)
    for mine, ref in zip(got, (*grads[:4], grads[4]), strict=True):
        assert (mine - ref).abs().max() < 1e-10
    assert (grads[4] - grads[5]).abs().max() == 0  # the two biases' gradients are equal


@pytest.mark.parametrize("sizes", _random_sizes(6, seed=99))
def test_rnn_backward_matches_autograd_on_random_sizes(ns, sizes):
    batch, seq, input_size, hidden = sizes
    rnn = nn.RNN(input_size, hidden, batch_first=True, dtype=torch.float64)
    x = torch.randn(batch, seq, input_size, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(batch, hidden, dtype=torch.float64, requires_grad=True)
    doutput = torch.randn(batch, seq, hidden, dtype=torch.float64)
    output, _ = rnn(x, h0.unsqueeze(0))
    weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    grads = torch.autograd.grad((output * doutput).sum(), (x, h0, *weights))
    got = ns["rnn_backward"](
        doutput, x.detach(), h0.detach(), output.detach(), *(w.detach() for w in weights[:2])
    )
    for mine, ref in zip(got, grads[:5], strict=True):
        assert (mine - ref).abs().max() < 1e-10


def _cell_backward(kind):
    """rnn_cell_backward, right (written in several ways) or wrong in one usual way."""

    def backward(dh_next, x, h, h_next, w_ih, w_hh):
        da = dh_next * (1 - h_next**2)
        if kind == "no derivative":
            da = dh_next
        elif kind == "derivative of h":
            da = dh_next * (1 - h**2)
        elif kind == "tanh of h_next":
            da = dh_next * (1 - torch.tanh(h_next) ** 2)
        elif kind == "not squared":
            da = dh_next * (1 - h_next)
        elif kind == "sigmoid derivative":
            da = dh_next * h_next * (1 - h_next)
        out = [da @ w_ih, da @ w_hh, da.T @ x, da.T @ h, da.sum(0)]
        if kind == "einsum":
            out = [
                torch.einsum("bj,ji->bi", da, w_ih),
                torch.einsum("bj,ji->bi", da, w_hh),
                torch.einsum("bj,bi->ji", da, x),
                torch.einsum("bj,bi->ji", da, h),
                torch.einsum("bj->j", da),
            ]
        elif kind == "linear and addmm":
            out = [
                F.linear(da, w_ih.T),
                torch.mm(da, w_hh),
                torch.addmm(torch.zeros_like(w_ih), da.T, x),
                torch.matmul(h.T, da).T.contiguous(),
                torch.ones(1, da.shape[0], dtype=da.dtype) @ da,
            ]
            out[4] = out[4].squeeze(0)
        elif kind == "list":
            return list(out)
        elif kind == "dx transposed":
            out[0] = da @ w_ih.T
        elif kind == "dh transposed":
            out[1] = da @ w_hh.T
        elif kind == "dh without weight":
            out[1] = da
        elif kind == "dweight_ih transposed":
            out[2] = x.T @ da
        elif kind == "dweight_hh transposed":
            out[3] = h.T @ da
        elif kind == "dweight_hh with h_next":
            out[3] = da.T @ h_next
        elif kind == "averaged":
            n = x.shape[0]
            out[2:] = [out[2] / n, out[3] / n, out[4] / n]
        elif kind == "dbias not summed":
            out[4] = da
        elif kind == "dbias doubled":
            out[4] = 2 * da.sum(0)
        return tuple(out)

    return backward


@pytest.mark.parametrize("kind", ["einsum", "linear and addmm", "list"])
def test_rnn_cell_backward_written_differently_passes(kind):
    fn = _cell_backward(kind)
    check_rnn_cell_backward(fn)
    check_rnn_cell_backward(fn, hidden=True)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no derivative", "tanh derivative is missing"),
        ("derivative of h", "uses h, the previous state"),
        ("tanh of h_next", "h_next is already tanh"),
        ("not squared", "not 1 - h_next"),
        ("sigmoid derivative", "sigmoid's derivative"),
        ("dx transposed", "shapes of a product do not fit"),
        ("dh transposed", "dh multiplies by weight_hh.T"),
        ("dh without weight", "dh skips the recurrent weights"),
        ("dweight_ih transposed", "dweight_ih is transposed"),
        ("dweight_hh transposed", "dweight_hh is transposed"),
        ("dweight_hh with h_next", "dweight_hh uses h_next"),
        ("averaged", "averaged over the batch"),
        ("dbias not summed", "summed over the batch"),
        ("dbias doubled", "adds the gradients of both biases"),
    ],
)
def test_rnn_cell_backward_mistakes_are_named(kind, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_rnn_cell_backward(_cell_backward(kind))
    assert "rnn_cell_backward" in str(info.value)


def _bptt(kind, cell=None):
    """rnn_backward, right (written in several ways) or wrong in one usual way."""
    cell = cell or _cell_backward("right")

    def backward(doutput, x, h0, output, w_ih, w_hh):
        seq = x.shape[1]
        dx = torch.empty_like(x)  # preallocated, filled step by step
        dw_ih, dw_hh, db = torch.zeros_like(w_ih), torch.zeros_like(w_hh), torch.zeros_like(h0[0])
        dh = torch.zeros_like(h0)
        steps = range(seq) if kind == "forward order" else reversed(range(seq))
        reversed_dx = []
        for t in steps:
            h_prev = output[:, t - 1] if t > 0 else h0
            if kind == "prev is current":
                h_prev = output[:, t]
            elif kind == "h0 everywhere":
                h_prev = h0
            upstream = doutput[:, t] + dh
            if kind == "no carry":
                upstream = doutput[:, t]
            elif kind == "last doutput only":
                upstream = dh + (doutput[:, t] if t == seq - 1 else 0)
            dx_t, dh_t, a, b, c = cell(upstream, x[:, t], h_prev, output[:, t], w_ih, w_hh)
            if kind == "dh0 before step 0" and t == 0:
                dh_t = upstream
            dh = dh_t
            dx[:, t] = dx_t
            reversed_dx.append(dx_t)
            if kind in ("last step only", "overwritten"):
                if kind == "overwritten" or t == seq - 1:
                    dw_ih, dw_hh, db = a, b, c
            else:
                dw_ih, dw_hh, db = dw_ih + a, dw_hh + b, db + c
        if kind == "dx reversed":
            dx = torch.stack(reversed_dx, dim=1)
        elif kind == "stack and flip":
            dx = torch.stack(reversed_dx, dim=1).flip(1)
        return dx, dh, dw_ih, dw_hh, db

    return backward


def _einsum_bptt(doutput, x, h0, output, w_ih, w_hh):
    """Back-propagation through time in one function, without rnn_cell_backward."""
    previous = torch.cat([h0.unsqueeze(1), output[:, :-1]], dim=1)
    dx_steps, das = [], []
    dh = torch.zeros_like(h0)
    for t in range(x.shape[1] - 1, -1, -1):
        da = (doutput[:, t] + dh) * (1 - output[:, t] ** 2)
        das.insert(0, da)
        dx_steps.insert(0, torch.einsum("bj,ji->bi", da, w_ih))
        dh = da @ w_hh
    da = torch.stack(das, dim=1)
    return (
        torch.stack(dx_steps, dim=1),
        dh,
        torch.einsum("btj,bti->ji", da, x),
        torch.einsum("btj,bti->ji", da, previous),
        da.sum(dim=(0, 1)),
    )


@pytest.mark.parametrize("kind", ["right", "stack and flip", "einsum"])
def test_rnn_backward_written_differently_passes(kind):
    fn = _einsum_bptt if kind == "einsum" else _bptt(kind)
    check_rnn_backward(fn)
    check_rnn_backward(fn, hidden=True)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("last step only", "only the last time step's share"),
        ("overwritten", "overwritten instead of accumulated"),
        ("no carry", "dh is not carried to the earlier step"),
        ("last doutput only", "only the last step's doutput is used"),
        ("prev is current", "not output\\[:, t\\]"),
        ("h0 everywhere", "every step uses h0"),
        ("forward order", "the loop runs forwards in time"),
        ("dx reversed", "dx is in reverse time order"),
        ("dh0 before step 0", "pass it through the first step"),
    ],
)
def test_rnn_backward_mistakes_are_named(kind, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_rnn_backward(_bptt(kind))
    assert "rnn_backward" in str(info.value)


def test_rnn_backward_without_derivative_is_named():
    with pytest.raises(CheckFailure, match="tanh derivative is missing"):
        check_rnn_backward(_bptt("right", cell=_cell_backward("no derivative")))


def test_rnn_backward_points_to_a_wrong_cell_backward():
    namespace = {
        "rnn_cell_backward": _cell_backward("dbias doubled"),
        "rnn_backward": _bptt("right", cell=_cell_backward("dbias doubled")),
    }
    with pytest.raises(CheckFailure, match="fix rnn_cell_backward first"):
        EXERCISES["rnn_backward"](namespace)


def test_backward_results_must_be_five_tensors():
    with pytest.raises(CheckFailure, match="should return a tuple"):
        check_rnn_cell_backward(lambda *args: _cell_backward("right")(*args)[:4])


# ----------------------------------------------------------------------------------------------
# gradient clipping


def _clip(kind):
    """clip_grad_norm, right (written in several ways) or wrong in one usual way."""

    def clip(grads, max_norm):
        total = sum(float((g**2).sum()) for g in grads) ** 0.5
        if kind == "vector_norm":
            flat = torch.cat([g.reshape(-1) for g in grads]) if grads else torch.zeros(0)
            total = torch.linalg.vector_norm(flat).item()
        elif kind == "norm of norms":
            total = torch.stack([g.norm() for g in grads]).norm().item() if grads else 0.0
        factor = min(1.0, max_norm / (total + 1e-6))
        if kind == "exact division":
            factor = max_norm / total if total > max_norm else 1.0
            return tuple(g * factor if factor != 1.0 else g.clone() for g in grads), total
        if kind == "torch.where":
            f = torch.tensor(max_norm / (total + 1e-6), dtype=torch.float64)
            return [torch.where(f < 1, g * f, g) for g in grads], total
        if kind == "per tensor":
            return [g * min(1.0, max_norm / (g.norm().item() + 1e-6)) for g in grads], total
        if kind == "always scale":
            return [g * (max_norm / (total + 1e-6)) for g in grads], total
        if kind == "in place":
            for g in grads:
                g.mul_(factor)
            return grads, total
        if kind == "clipped norm":
            return [g * factor for g in grads], min(total, max_norm)
        if kind == "squared norm":
            return [g * factor for g in grads], total**2
        if kind == "sum of norms":
            return [g * factor for g in grads], sum(g.norm().item() for g in grads)
        if kind == "tensor norm":
            return [g * factor for g in grads], torch.tensor(total)
        if kind == "no guard":
            factor = max_norm / total
            return [g * min(1.0, factor) for g in grads], total
        if kind == "normalise then scale":  # 0 / 0 for all-zero gradients
            norm = torch.tensor(total, dtype=torch.float64)
            return [g / norm * min(total, max_norm) for g in grads], total
        if kind == "upside down":
            return [g * (total / max_norm if total > max_norm else 1.0) for g in grads], total
        return [g * factor for g in grads], total

    return clip


@pytest.mark.parametrize(
    "kind", ["right", "vector_norm", "norm of norms", "exact division", "torch.where"]
)
def test_clip_grad_norm_written_differently_passes(kind):
    check_clip_grad_norm(_clip(kind))
    check_clip_grad_norm(_clip(kind), hidden=True)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("per tensor", "each tensor was clipped on its own norm"),
        ("always scale", "scaled although their norm is at most max_norm"),
        ("in place", "changed its input tensors in place"),
        ("clipped norm", "total_norm is the norm after clipping"),
        ("squared norm", "total_norm is the squared norm"),
        ("sum of norms", "adds up each tensor's norm"),
        ("tensor norm", "should be a Python float"),
        ("no guard", "division by total_norm = 0"),
        ("normalise then scale", "nan or inf although every gradient is zero"),
        ("upside down", "the factor is upside down"),
    ],
)
def test_clip_grad_norm_mistakes_are_named(kind, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_clip_grad_norm(_clip(kind))
    assert "clip_grad_norm" in str(info.value)


def test_clipping_experiment_shapes_seed_and_bad_inputs():
    a = clipping_experiment(None, n_updates=3, seq_length=5)
    b = clipping_experiment(_clip("right"), n_updates=3, seq_length=5, max_norm=0.5)
    assert set(a) == {"grad_norms", "losses"}
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in (*a.values(), *b.values()))
    # the same weights and first batch: the first update is the same, clipped or not
    assert a["grad_norms"][0] == b["grad_norms"][0] and a["losses"][0] == b["losses"][0]
    again = clipping_experiment(None, n_updates=3, seq_length=5)
    assert torch.equal(again["losses"], a["losses"])
    for bad in (
        {"max_norm": 0},
        {"lr": -1.0},
        {"n_updates": 0},
        {"seq_length": 2.5},
        {"weight_scale": float("nan")},
    ):
        with pytest.raises(ValueError):
            clipping_experiment(None, **bad)
    with pytest.raises(ValueError, match="clip must be a function"):
        clipping_experiment("clip", n_updates=1)
    with pytest.raises(ValueError, match="clip must return"):
        clipping_experiment(lambda grads, max_norm: grads, n_updates=1, seq_length=2)


def test_clipping_answer_follows_the_measurement():
    assert measured_lower_final_loss() == "with clipping"
    assert measured_lower_final_loss(n_updates=40) == "with clipping"  # the full-mode plot
    check_clipping_answer("with clipping")
    with pytest.raises(CheckFailure, match="not what the experiment measures"):
        check_clipping_answer("without clipping")
    with pytest.raises(CheckFailure, match="should be one of"):
        check_clipping_answer("clipping")


# ----------------------------------------------------------------------------------------------
# the GRU quiz: hidden variants, and no answer given away


def test_gru_quiz_hidden_variants_catch_a_copied_shape(capsys):
    copied = lambda gru, batch_size: (1, 3, 20)  # noqa: E731
    check_gru_quiz(copied)  # the visible question: a copied shape passes it...
    with pytest.raises(CheckFailure) as info:
        check_gru_quiz(copied, hidden=True)  # ...the other GRUs do not
    assert "(1, 3, 20)" in str(info.value)  # it says what was given, never what is expected
    assert "expected" not in str(info.value)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda gru, b: (b, gru.num_layers, gru.hidden_size), "batch_first=True does not apply"),
        (
            lambda gru, b: (gru.num_layers, b, gru.input_size),
            "hidden_size features, not input_size",
        ),
        (lambda gru, b: (b, gru.hidden_size), "leading dimension"),
    ],
)
def test_gru_quiz_mistakes_are_named_without_the_answer(answer, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_gru_quiz(answer)
    assert "(1, 3, 20)" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# what a learner may read: the method, never the answer's formulas


_ANSWER_TEXT = (
    "da @",
    "da.T",
    "da.sum",
    "1 - h_next**2",
    "1 - h_next ** 2",
    "(1 - h",
    "1 - h_t",
    "num_layers * num_directions",
    "num_directions",
    "@ weight_hh)",
    "dh = ",
    "diag(1",
)


def _learner_text():
    """Everything of the released lesson a learner reads (markdown, code, docstrings), and the
    checks' source, whose messages a learner sees."""
    import json
    from pathlib import Path

    import helpers.checks.lesson01 as module

    nb = json.loads(notebook_path("release", LESSON).read_text())
    cells = "\n".join("".join(c["source"]) for c in nb["cells"])
    package = Path(module.__file__).parent  # the lesson's checks: every module of the package
    return {"lesson": cells, "checks": "\n".join(p.read_text() for p in package.glob("*.py"))}


def test_no_answer_formula_in_what_a_learner_reads():
    for where, text in _learner_text().items():
        for piece in _ANSWER_TEXT:
            assert piece not in text, (where, piece)


@pytest.mark.parametrize(
    "kind", ["no derivative", "dh without weight", "dweight_hh with h_next", "dbias doubled"]
)
def test_backward_messages_print_no_formula(kind):
    with pytest.raises(CheckFailure) as info:
        check_rnn_cell_backward(_cell_backward(kind))
    text = str(info.value).split("likely cause:")[-1]
    for piece in ("@", ".T", "sum(", "**"):
        assert piece not in text, (kind, piece, text)


def test_worked_example_and_hints_are_in_the_lesson():
    text = _learner_text()["lesson"]
    assert "Worked example: the backward pass of a linear layer" in text
    hints = [text.index(f"<summary>Hint {k}</summary>") for k in (1, 2, 3)]
    assert hints == sorted(hints)
    assert "just below 1" not in text
    assert "hidden_state_shape` with the right settings" not in text


# ----------------------------------------------------------------------------------------------
# the capstone: softmax_cross_entropy, adagrad_update, and a character RNN with no autograd


@pytest.mark.parametrize(("n", "v", "scale"), [(9, 11, 1.0), (2, 2, 500.0), (13, 3, 20.0)])
def test_softmax_cross_entropy_matches_torch_on_other_sizes(ns, n, v, scale):
    g = torch.Generator().manual_seed(n * v)
    logits = torch.randn(n, v, generator=g, dtype=torch.float64) * scale
    targets = torch.randint(0, v, (n,), generator=g)
    leaf = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(leaf, targets)
    (grad,) = torch.autograd.grad(ref, leaf)
    loss, dlogits = ns["softmax_cross_entropy"](logits, targets)
    assert abs(float(loss) - float(ref.detach())) < 1e-10
    assert (dlogits - grad).abs().max() < 1e-10


def test_adagrad_update_matches_torch_on_other_sizes(ns):
    g = torch.Generator().manual_seed(5)
    shapes = [(7, 2), (3,), (1, 1, 4)]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    leaves = [nn.Parameter(p.clone()) for p in params]
    opt = torch.optim.Adagrad(leaves, lr=0.07)
    sums = [torch.zeros_like(p) for p in params]
    for _ in range(6):
        grads = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
        for leaf, gr in zip(leaves, grads, strict=True):
            leaf.grad = gr.clone()
        opt.step()
        assert ns["adagrad_update"](params, grads, sums, 0.07) is None
    for p, leaf, s in zip(params, leaves, sums, strict=True):
        assert (p - leaf.detach()).abs().max() < 1e-12
        assert (s - opt.state[leaf]["sum"]).abs().max() < 1e-12


def _ce(kind):
    """softmax_cross_entropy, right (written in several ways) or wrong in one usual way."""

    def ce(logits, targets):
        n = logits.shape[0]
        rows = torch.arange(n)
        z = logits if kind == "no max" else logits - logits.max(dim=1, keepdim=True).values
        if kind == "wrong axis":
            z = logits - logits.max(dim=0, keepdim=True).values
            p = z.exp() / z.exp().sum(dim=0, keepdim=True)
        else:
            p = z.exp() / z.exp().sum(dim=1, keepdim=True)
        if kind in ("no max", "log of probability", "wrong axis"):
            loss = -p[rows, targets].log().mean()
        else:
            loss = -(z - z.exp().sum(dim=1, keepdim=True).log())[rows, targets].mean()
        d = p.clone()
        if kind != "no minus one":
            d[rows, targets] -= 1
        if kind == "sum":
            return loss * n, d
        if kind == "one_hot and float":
            d = p - F.one_hot(targets, logits.shape[1]).to(p.dtype)
            return float(-torch.log_softmax(logits, dim=1)[rows, targets].mean()), d / n
        if kind == "log_softmax":
            lp = torch.log_softmax(logits, dim=1)
            return -lp.gather(1, targets[:, None]).mean(), (
                lp.exp() - F.one_hot(targets, logits.shape[1])
            ) / n
        return loss, d / n

    return ce


@pytest.mark.parametrize("kind", ["right", "one_hot and float", "log_softmax"])
def test_softmax_cross_entropy_written_differently_passes(kind):
    check_softmax_cross_entropy(_ce(kind))
    check_softmax_cross_entropy(_ce(kind), hidden=True)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("no max", "exp overflows for large logits"),
        ("log of probability", "the log of a probability that rounded to 0"),
        ("sum", "the loss is the sum over the N rows"),
        ("no minus one", "misses the target's own term"),
        ("wrong axis", "softmax runs over the wrong axis"),
    ],
)
def test_softmax_cross_entropy_mistakes_are_named_without_expected_values(kind, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_softmax_cross_entropy(_ce(kind))
    text = str(info.value)
    assert "softmax_cross_entropy" in text and "expected" not in text
    assert "exp(z" not in text and "- 1" not in text


def _adagrad(kind):
    """adagrad_update, right (written in several ways) or wrong in one usual way."""

    def update(params, grads, state_sums, lr, eps=1e-10):
        new = []
        for i, (p, g, s) in enumerate(zip(params, grads, state_sums, strict=True)):
            if kind == "addcmul":
                s.addcmul_(g, g)
                p.addcdiv_(g, s.sqrt().add(eps), value=-lr)
                continue
            if kind == "list rebinding":
                state_sums[i] = s + g * g
                params[i] = p - lr * g / (state_sums[i].sqrt() + eps)
                continue
            if kind == "not accumulated":
                s.copy_(g * g)
            elif kind == "abs":
                s += g.abs()
            else:
                s += g * g
            denominator = (s + eps).sqrt() if kind == "eps inside" else s.sqrt() + eps
            if kind == "rebinding":
                p = p - lr * g / denominator  # noqa: PLW2901
            elif kind == "returned":
                new.append(p - lr * g / denominator)
            else:
                p -= lr * g / denominator
        return new if kind == "returned" else None

    return update


@pytest.mark.parametrize("kind", ["right", "addcmul", "list rebinding"])
def test_adagrad_update_written_differently_passes(kind):
    check_adagrad_update(_adagrad(kind))
    check_adagrad_update(_adagrad(kind), hidden=True)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("rebinding", "the update was not done in place"),
        ("returned", "the new parameters were returned, but the update must happen in place"),
        ("not accumulated", "holds only this step's squared gradient"),
        ("eps inside", "eps is inside the square root"),
        ("abs", "adds up \\|g\\|"),
    ],
)
def test_adagrad_update_mistakes_are_named_without_expected_values(kind, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_adagrad_update(_adagrad(kind))
    assert "adagrad_update" in str(info.value) and "expected" not in str(info.value)


def _judge(namespace, grade_id):
    from helpers.checks import remote
    from helpers.grading import verdict

    agent = remote.Agent(namespace)

    def send(request: str) -> str:
        agent.serve(request)
        return agent.reply

    return verdict.judge(LESSON, grade_id, send)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("right", None),
        ("list rebinding", None),
        ("rebinding", "the update was not done in place"),
        ("not accumulated", "holds only this step's squared gradient"),
    ],
)
def test_adagrad_update_in_place_is_judged_through_the_channel(kind, message):
    """The autograder's judge reaches the learner's function through the channel; the in-place
    update reaches the judge's tensors by the state the channel sends back."""
    outcome = _judge({"adagrad_update": _adagrad(kind)}, "adagrad_update_check")
    if message is None:
        assert outcome.ename is None, outcome.evalue
        assert ": OK" in outcome.stdout
    else:
        assert outcome.ename == "CheckFailure" and message in outcome.evalue


def test_softmax_cross_entropy_is_judged_through_the_channel():
    outcome = _judge({"softmax_cross_entropy": _ce("right")}, "softmax_cross_entropy_check")
    assert outcome.ename is None, outcome.evalue
    outcome = _judge({"softmax_cross_entropy": _ce("sum")}, "softmax_cross_entropy_check")
    assert outcome.ename == "CheckFailure" and "sum over the N rows" in outcome.evalue


_TINY = {
    "n_chars": 20_000,
    "hidden_size": 32,
    "seq_length": 16,
    "batch_size": 16,
    "n_updates": 60,
    "eval_every": 30,
}


def test_capstone_trains_without_autograd_and_the_loss_falls(ns, monkeypatch):
    from helpers.char_rnn_by_hand import sample_text, train_char_rnn

    def refuse(*args, **kwargs):
        raise AssertionError("autograd was used")

    monkeypatch.setattr(torch.autograd, "grad", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    seen = []

    def guarded(name):
        fn = ns[name]

        def wrapper(*args):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            tensors += [t for a in args if isinstance(a, list) for t in a]
            assert not torch.is_grad_enabled(), name
            assert not any(t.requires_grad for t in tensors), name
            seen.append(name)
            out = fn(*args)
            flat = out if isinstance(out, tuple | list) else (out,)
            assert not any(isinstance(t, torch.Tensor) and t.requires_grad for t in flat), name
            return out

        return wrapper

    names = (
        "rnn_forward",
        "rnn_backward",
        "clip_grad_norm",
        "softmax_cross_entropy",
        "adagrad_update",
    )
    run = train_char_rnn(*(guarded(n) for n in names), **_TINY)
    assert set(seen) == set(names)
    assert seen.count("adagrad_update") == _TINY["n_updates"]
    assert all(not p.requires_grad for p in run["params"])
    losses = run["losses"]
    assert sum(losses[-10:]) / 10 < losses[0] - 0.5  # the training loss falls
    assert run["val_losses"][-1] < run["val_losses"][0] - 0.5
    assert run["val_losses"][-1] < run["unigram"]  # even the tiny run beats the baseline
    text = sample_text(ns["rnn_forward"], run, prime="ROMEO:", length=50)
    assert text.startswith("ROMEO:") and len(text) == 56


def test_capstone_helper_refuses_bad_settings(ns):
    from helpers.char_rnn_by_hand import text_slice, train_char_rnn, unigram_loss

    fns = [ns[n] for n in ("rnn_forward", "rnn_backward", "clip_grad_norm")]
    with pytest.raises(ValueError, match="must be a function"):
        train_char_rnn(*fns, "ce", ns["adagrad_update"], **_TINY)
    with pytest.raises(ValueError, match=">= 1"):
        train_char_rnn(*fns, ns["softmax_cross_entropy"], ns["adagrad_update"], n_updates=0)
    vocab, train, val = text_slice(5_000)
    assert 2.5 < unigram_loss(train, val, len(vocab)) < len(vocab) ** 0.5
