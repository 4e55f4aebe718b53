"""Lesson 02: the reference answers against torch.nn on sizes the notebook does not use, the
checks' teaching messages on the usual mistakes, and the helpers in helpers/lstm.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
from conftest import ROOT, loaded, notebook_path
from torch import nn
from torch.nn import functional

import helpers
from helpers.checks import CheckFailure
from helpers.checks.lesson02 import (
    check_forget_gate,
    check_gru_cell,
    check_learn_gate,
    check_lstm_cell,
    check_lstm_cell_backward,
    check_lstm_forward,
    check_lstm_param_count,
    check_ltm_gradient_answers,
    check_peephole_lstm_cell,
    check_use_gate,
)
from helpers.lstm import (
    GRU_GATES,
    LSTM_GATES,
    SATURATED,
    fix_gate,
    gate_activations,
    gate_params,
    gate_rows,
    gru_gate_params,
    latch_task,
    plot_gate_heatmaps,
    read_gates,
)

LESSON = "02_lstm_gate_math"
F64 = torch.float64
#: (batch, input_size, hidden_size) that neither the notebook nor EXERCISES use; batch 1 and
#: hidden size 1 included.
UNUSED_SIZES = [(1, 7, 1), (6, 1, 9), (1, 8, 8), (2, 5, 1), (7, 3, 4), (1, 1, 2)]
FUNCTIONS = (
    "forget_gate",
    "learn_gate",
    "remember_gate",
    "use_gate",
    "lstm_cell",
    "lstm_forward",
    "gru_cell",
    "peephole_lstm_cell",
    "lstm_param_count",
)


@pytest.fixture(scope="module")
def ns():
    namespace = loaded(notebook_path("source", LESSON))
    assert not namespace.errors, f"solution notebook raised while loading: {namespace.errors}"
    return namespace


def _torch_cell(kind, input_size, hidden_size, seed):
    """A float64 nn.LSTMCell / nn.GRUCell with random weights and random non-zero biases."""
    torch.manual_seed(seed)
    cell = kind(input_size, hidden_size, dtype=F64)
    with torch.no_grad():
        for name, p in cell.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "bias" in name else 0.7) + 0.05)
    assert all(p.abs().min() > 0 for name, p in cell.named_parameters() if "bias" in name)
    return cell


def _params(cell):
    return tuple(p.detach() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))


def _max_diff(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == F64
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- against torch.nn


@pytest.mark.parametrize("size", UNUSED_SIZES)
def test_lstm_gates_and_cell_match_torch(ns, size):
    batch, input_size, hidden_size = size
    cell = _torch_cell(nn.LSTMCell, input_size, hidden_size, seed=sum(size))
    params = _params(cell)
    g = torch.Generator().manual_seed(7)
    x, h, c = (
        torch.randn(batch, n, generator=g, dtype=F64)
        for n in (input_size, hidden_size, hidden_size)
    )
    with torch.no_grad():
        ref_h, ref_c = cell(x, (h, c))
        pre = functional.linear(x, params[0], params[2]) + functional.linear(
            h, params[1], params[3]
        )
    i, f, g_, o = pre.chunk(4, dim=1)
    i, f, g_, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g_), torch.sigmoid(o)
    kept = ns["forget_gate"](c, h, x, params)
    learned = ns["learn_gate"](h, x, params)
    new_ltm = ns["remember_gate"](kept, learned)
    new_stm = ns["use_gate"](new_ltm, h, x, params)
    diffs = [
        _max_diff(kept, c * f),
        _max_diff(learned, i * g_),
        _max_diff(new_ltm, ref_c),
        _max_diff(new_stm, ref_h),
        *(
            _max_diff(a, b)
            for a, b in zip(ns["lstm_cell"](x, (h, c), params), (ref_h, ref_c), strict=True)
        ),
    ]
    zeros = tuple(torch.zeros(hidden_size, dtype=F64) for _ in range(3))
    diffs += [
        _max_diff(a, b)
        for a, b in zip(
            ns["peephole_lstm_cell"](x, (h, c), params, zeros), (ref_h, ref_c), strict=True
        )
    ]
    assert max(diffs) < 1e-10, diffs


@pytest.mark.parametrize("size", UNUSED_SIZES)
def test_gru_cell_matches_torch(ns, size):
    batch, input_size, hidden_size = size
    cell = _torch_cell(nn.GRUCell, input_size, hidden_size, seed=100 + sum(size))
    g = torch.Generator().manual_seed(8)
    x = torch.randn(batch, input_size, generator=g, dtype=F64)
    h = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    with torch.no_grad():
        expected = cell(x, h)
    assert _max_diff(ns["gru_cell"](x, h, _params(cell)), expected) < 1e-10


@pytest.mark.parametrize(
    ("batch", "seq", "input_size", "hidden_size"),
    [(1, 4, 2, 1), (5, 3, 1, 6), (1, 1, 3, 3), (3, 9, 2, 2)],
)
def test_lstm_forward_matches_torch_and_stacks(ns, batch, seq, input_size, hidden_size):
    torch.manual_seed(batch * 100 + seq)
    lstm = nn.LSTM(input_size, hidden_size, num_layers=2, batch_first=True, dropout=0.0, dtype=F64)
    with torch.no_grad():
        for p in lstm.parameters():
            p.copy_(torch.randn_like(p) * 0.6 + 0.05)
    events = torch.randn(batch, seq, input_size, dtype=F64)
    stm0, ltm0 = (
        torch.randn(2, batch, hidden_size, dtype=F64),
        torch.randn(2, batch, hidden_size, dtype=F64),
    )
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = lstm(events, (stm0, ltm0))
        one = nn.LSTM(input_size, hidden_size, batch_first=True, dtype=F64)
        one.load_state_dict({k: v for k, v in lstm.state_dict().items() if k.endswith("_l0")})
        one_out, (one_h, one_c) = one(events, (stm0[:1], ltm0[:1]))
    layer = [
        tuple(
            getattr(lstm, f"{n}_l{k}").detach()
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for k in range(2)
    ]
    out1, (h1, c1) = ns["lstm_forward"](events, (stm0[0], ltm0[0]), layer[0])
    assert max(_max_diff(out1, one_out), _max_diff(h1, one_h[0]), _max_diff(c1, one_c[0])) < 1e-10
    out2, (h2, c2) = ns["lstm_forward"](out1, (stm0[1], ltm0[1]), layer[1])
    assert _max_diff(out2, ref_out) < 1e-10
    assert _max_diff(torch.stack([h1, h2]), ref_h) < 1e-10
    assert _max_diff(torch.stack([c1, c2]), ref_c) < 1e-10


@pytest.mark.parametrize("layers", [1, 2, 3, 5])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("input_size", "hidden_size"), [(1, 1), (13, 2), (2, 17), (64, 128)])
def test_lstm_param_count_matches_torch(ns, input_size, hidden_size, layers, bias):
    lstm = nn.LSTM(input_size, hidden_size, num_layers=layers, bias=bias, device="meta")
    got = ns["lstm_param_count"](input_size, hidden_size, num_layers=layers, bias=bias)
    assert type(got) is int and got == sum(p.numel() for p in lstm.parameters())


def test_checks_pass_on_unused_sizes(ns, capsys):
    sizes = tuple(UNUSED_SIZES)
    check_forget_gate(ns["forget_gate"], sizes=sizes, seed=9000)
    check_learn_gate(ns["learn_gate"], sizes=sizes, seed=9100)
    check_use_gate(ns["use_gate"], sizes=sizes, seed=9300)
    check_lstm_cell(ns["lstm_cell"], sizes=sizes, seed=9400)
    check_lstm_cell_backward(ns["lstm_cell_backward"], sizes=sizes, seed=9450)
    check_gru_cell(ns["gru_cell"], sizes=sizes, seed=9600)
    check_peephole_lstm_cell(ns["peephole_lstm_cell"], sizes=sizes, seed=9700)
    check_lstm_forward(
        ns["lstm_forward"],
        sizes=((1, 2, 7, 1), (6, 3, 1, 9)),
        stacked_sizes=((1, 2, 1, 1), (2, 3, 4, 2)),
        seed=9500,
    )
    check_lstm_param_count(ns["lstm_param_count"], cases=((2, 17, 4, True), (1, 1, 2, False)))
    out = capsys.readouterr()
    assert out.err == ""
    lines = out.out.strip().splitlines()
    assert len(lines) == 9 and all(": OK" in line for line in lines), lines
    worst = [
        float(line.split("largest |diff| ")[1].rstrip(")")) for line in lines if "|diff|" in line
    ]
    assert max(worst) < 1e-10


# --------------------------------------------------------------------------- mistakes are named


def _swap(params, a, b, gates=LSTM_GATES):
    hidden_size = params[1].shape[1]
    ra, rb = gate_rows(hidden_size, a, gates), gate_rows(hidden_size, b, gates)
    out = [p.clone() for p in params]
    for new, old in zip(out, params, strict=True):
        new[ra], new[rb] = old[rb], old[ra]
    return tuple(out)


def _no_bias_hh(params):
    return (*params[:3], torch.zeros_like(params[3]))


def _transpose(params, index, gates=LSTM_GATES):
    hidden_size = params[1].shape[1]
    out = [p.clone() for p in params]
    for gate in gates:
        rows = gate_rows(hidden_size, gate, gates)
        out[index][rows] = params[index][rows].T
    return tuple(out)


def _with_params(ns, transform):
    """The solution's functions with their params transformed: a student's wrong slicing."""
    return {
        "forget_gate": lambda ltm, stm, event, p: ns["forget_gate"](ltm, stm, event, transform(p)),
        "learn_gate": lambda stm, event, p: ns["learn_gate"](stm, event, transform(p)),
        "use_gate": lambda new_ltm, stm, event, p: ns["use_gate"](
            new_ltm, stm, event, transform(p)
        ),
        "lstm_cell": lambda event, state, p: ns["lstm_cell"](event, state, transform(p)),
        "lstm_forward": lambda events, state, p: ns["lstm_forward"](events, state, transform(p)),
        "gru_cell": lambda x, h, p: ns["gru_cell"](x, h, transform(p)),
    }


class _SwappedActivations:
    """A stand-in for the torch module in which sigmoid and tanh are exchanged."""

    sigmoid = staticmethod(torch.tanh)
    tanh = staticmethod(torch.sigmoid)

    def __getattr__(self, name):
        return getattr(torch, name)


def _with_swapped_activations(ns):
    """The solution's functions, rebuilt so that every torch.sigmoid is a tanh and vice versa."""
    scope = dict(ns)
    scope["torch"] = _SwappedActivations()
    for name in FUNCTIONS:
        fn = ns[name]
        scope[name] = types.FunctionType(fn.__code__, scope, name, fn.__defaults__, fn.__closure__)
    return scope


CHECKS = {
    "forget_gate": check_forget_gate,
    "learn_gate": check_learn_gate,
    "use_gate": check_use_gate,
    "lstm_cell": check_lstm_cell,
    "lstm_forward": check_lstm_forward,
}
MISTAKES = {
    "swapped f/i rows": (
        lambda ns: _with_params(ns, lambda p: _swap(p, "i", "f")),
        "rows are swapped",
        {"use_gate"},
    ),
    "order i, f, o, g": (
        lambda ns: _with_params(ns, lambda p: _swap(p, "g", "o")),
        r"order i, f, o, g",
        {"forget_gate"},
    ),
    "order i, g, f, o": (
        lambda ns: _with_params(ns, lambda p: _swap(p, "f", "g")),
        r"order i, g, f, o \(TensorFlow's order\)",
        {"use_gate"},
    ),
    "one bias": (lambda ns: _with_params(ns, _no_bias_hh), "only one bias is used", set()),
    "transposed w_hh": (
        lambda ns: _with_params(ns, lambda p: _transpose(p, 1)),
        r"used transposed \(w_hh\)",
        set(),
    ),
    "tanh and sigmoid swapped": (_with_swapped_activations, "tanh and sigmoid are swapped", set()),
}


@pytest.mark.parametrize("exercise", list(CHECKS))
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_lstm_mistakes_are_named(ns, mistake, exercise):
    make, message, unaffected = MISTAKES[mistake]
    wrong = make(ns)[exercise]
    if exercise in unaffected:  # the mistake does not change this function's answer
        CHECKS[exercise](wrong)
        return
    with pytest.raises(CheckFailure, match=message) as info:
        CHECKS[exercise](wrong)
    assert str(info.value).startswith(exercise) and "likely cause:" in str(info.value)


def test_transposed_input_weight_is_named(ns):
    wrong = _with_params(ns, lambda p: _transpose(p, 0))["lstm_cell"]
    with pytest.raises(CheckFailure, match=r"used transposed \(w_ih\)"):
        check_lstm_cell(wrong, sizes=((2, 3, 3),))  # square: a silent wrong answer

    def raises(event, state, params):  # not square: (H, I) weights used untransposed
        return event @ params[0]

    with pytest.raises(CheckFailure, match="wrong way round"):
        check_lstm_cell(raises, sizes=((3, 4, 5),))


def test_returned_pair_order_is_named(ns):
    def swapped(event, state, params):
        stm, ltm = ns["lstm_cell"](event, state, params)
        return ltm, stm

    with pytest.raises(CheckFailure, match="wrong order"):
        check_lstm_cell(swapped)


def test_use_gate_reading_old_ltm_is_named(ns):
    def old_ltm(event, state, params):
        stm, ltm = state
        new_stm, new_ltm = ns["lstm_cell"](event, state, params)
        return ns["use_gate"](ltm, stm, event, params), new_ltm

    with pytest.raises(CheckFailure, match="read the old LTM"):
        check_lstm_cell(old_ltm)


def test_lstm_forward_ignoring_initial_state_is_named(ns):
    def from_zeros(events, state, params):
        return ns["lstm_forward"](events, tuple(torch.zeros_like(s) for s in state), params)

    with pytest.raises(CheckFailure, match="initial state"):
        check_lstm_forward(from_zeros)


def _gru_reset_before_product(x, h, params):
    r = torch.sigmoid(
        functional.linear(x, *gru_gate_params(params, "r")[::2])
        + functional.linear(h, *gru_gate_params(params, "r")[1::2])
    )
    z = torch.sigmoid(
        functional.linear(x, *gru_gate_params(params, "z")[::2])
        + functional.linear(h, *gru_gate_params(params, "z")[1::2])
    )
    w_in, w_hn, b_in, b_hn = gru_gate_params(params, "n")
    n = torch.tanh(functional.linear(x, w_in, b_in) + functional.linear(r * h, w_hn, b_hn))
    return (1 - z) * n + z * h


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("reset before product", "reset gate is applied before the product"),
        ("r/z rows swapped", "rows are swapped: PyTorch stacks r, z, n"),
        ("one bias", "only one bias is used"),
        ("transposed", r"used transposed \(w_hh\)"),
        ("z and 1 - z", "z and 1 - z are swapped"),
    ],
)
def test_gru_mistakes_are_named(ns, mistake, message):
    sol = ns["gru_cell"]
    wrong = {
        "reset before product": _gru_reset_before_product,
        "r/z rows swapped": lambda x, h, p: sol(x, h, _swap(p, "r", "z", GRU_GATES)),
        "one bias": lambda x, h, p: sol(x, h, _no_bias_hh(p)),
        "transposed": lambda x, h, p: sol(x, h, _transpose(p, 1, GRU_GATES)),
        # z -> 1 - z: the update gate's pre-activation negated.
        "z and 1 - z": lambda x, h, p: sol(x, h, _negate_block(p, "z")),
    }[mistake]
    with pytest.raises(CheckFailure, match=message):
        check_gru_cell(wrong)


def _negate_block(params, gate):
    hidden_size = params[1].shape[1]
    rows = gate_rows(hidden_size, gate, GRU_GATES)
    out = [p.clone() for p in params]
    for tensor in out:
        tensor[rows] = -tensor[rows]
    return tuple(out)


def test_peephole_mistakes_are_named(ns):
    sol = ns["peephole_lstm_cell"]
    with pytest.raises(CheckFailure, match="peepholes are ignored"):
        check_peephole_lstm_cell(lambda e, s, p, peep: ns["lstm_cell"](e, s, p), gradcheck=False)
    with pytest.raises(CheckFailure, match="w_ci and w_cf are swapped"):
        check_peephole_lstm_cell(
            lambda e, s, p, peep: sol(e, s, p, (peep[1], peep[0], peep[2])), gradcheck=False
        )

    def detached(event, state, params, peepholes):
        new_stm, new_ltm = sol(event, state, params, peepholes)
        return new_stm.detach(), new_ltm

    with pytest.raises(CheckFailure, match="gradcheck"):
        check_peephole_lstm_cell(detached)


def test_param_count_mistakes_are_named(ns):
    sol = ns["lstm_param_count"]

    def one_bias(input_size, hidden_size, num_layers=1, bias=True):
        return sol(input_size, hidden_size, num_layers, bias) - bias * 4 * hidden_size * num_layers

    def same_input(input_size, hidden_size, num_layers=1, bias=True):
        return num_layers * sol(input_size, hidden_size, 1, bias)

    with pytest.raises(CheckFailure, match="one bias per gate"):
        check_lstm_param_count(one_bias)
    with pytest.raises(CheckFailure, match="every layer counted with input_size"):
        check_lstm_param_count(same_input)
    with pytest.raises(CheckFailure, match="Python int"):
        check_lstm_param_count(lambda *args, **kwargs: torch.tensor(sol(*args, **kwargs)))


# --------------------------------------------------------------------------- issue 12: the LTM's
# gradient, measured; more mistakes named; correct answers written differently still pass


def test_ltm_gradient_answers_pass_and_fail_by_the_measurement(capsys):
    right = ("vanishes", "less", "more")
    check_ltm_gradient_answers(*right)
    check_ltm_gradient_answers(*right, hidden=True)
    names = ("forget_bias_0_gradient", "forget_bias_0_vs_rnn", "forget_bias_1_vs_rnn")
    wrong = (("explodes", "stays constant"), ("more",), ("less",))
    for k, alternatives in enumerate(wrong):
        for answer in alternatives:
            answers = list(right)
            answers[k] = answer
            with pytest.raises(CheckFailure) as info:
                check_ltm_gradient_answers(*answers)
            message = str(info.value)
            assert message.startswith(names[k]) and repr(answer) in message
            assert repr(right[k]) not in message, "the check must not print the answer"
    for bad in ("Vanishes", ["vanishes"], None):
        with pytest.raises(CheckFailure, match="should be one of"):
            check_ltm_gradient_answers(bad, "less", "more")
    out = capsys.readouterr()
    assert out.err == "" and "vanishes" not in out.out


def test_the_notebook_experiment_is_what_the_check_measures(ns):
    """The learner's lstm_cell in the notebook's experiment gives the check's reference numbers."""
    from helpers.checks.lesson02 import GRADIENT_WEIGHT_SCALE, measured_far_gradients
    from helpers.experiments import gradient_norms_through_time

    far = measured_far_gradients(16, 40, 0)
    for bias in (0.0, 1.0):
        mine = gradient_norms_through_time(
            ns["lstm_cell"], GRADIENT_WEIGHT_SCALE, 40, kind="lstm", wrt="c", forget_bias=bias
        )
        assert mine[-1].item() == pytest.approx(far[bias], rel=1e-9)
    assert far[0.0] < far["rnn"] < far[1.0]


def _pre(x, h, params):
    """The four gates' pre-activations in PyTorch's order, written with F.linear."""
    w_ih, w_hh, b_ih, b_hh = params
    return (functional.linear(x, w_ih, b_ih) + functional.linear(h, w_hh, b_hh)).chunk(4, dim=1)


def _wrong_lstm_cell(mistake):
    """An LSTM cell written from scratch with one classic mistake."""

    def cell(event, state, params):
        stm, ltm = state
        a_i, a_f, a_g, a_o = _pre(event, stm, params)
        if mistake == "order i, g, f, o":
            a_f, a_g = a_g, a_f
        i, f, g, o = a_i.sigmoid(), a_f.sigmoid(), a_g.tanh(), a_o.sigmoid()
        new_ltm = f * ltm + i * g
        if mistake == "kept only":
            new_ltm = f * ltm
        squash = {"no tanh": lambda t: t, "sigmoid": torch.sigmoid}.get(mistake, torch.tanh)
        new_stm = o * squash(new_ltm)
        if mistake == "no output gate":
            new_stm = torch.tanh(new_ltm)
        return new_stm, new_ltm

    return cell


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("no tanh", "tanh is missing"),
        ("sigmoid", "squashed with sigmoid"),
        ("order i, g, f, o", r"order i, g, f, o \(TensorFlow's order\)"),
        ("no output gate", "without the output gate"),
        ("kept only", "the kept LTM only"),
    ],
)
def test_lstm_cell_names_more_mistakes(mistake, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_lstm_cell(_wrong_lstm_cell(mistake))
    assert str(info.value).startswith("lstm_cell") and "likely cause:" in str(info.value)


def _forward_with(cell, carry=("stm", "ltm"), stack_dim=1):
    def lstm_forward(events, state, params):
        stm0, ltm0 = state
        stm, ltm = state
        outputs = []
        for t in range(events.shape[1]):
            stm, ltm = cell(
                events[:, t],
                (stm if "stm" in carry else stm0, ltm if "ltm" in carry else ltm0),
                params,
            )
            outputs.append(stm)
        return torch.stack(outputs, dim=stack_dim), (stm, ltm)

    return lstm_forward


def _good_cell(event, state, params):
    return _wrong_lstm_cell(None)(event, state, params)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (_forward_with(_good_cell, carry=()), "the state is not carried"),
        (_forward_with(_good_cell, carry=("stm",)), "the LTM is not carried"),
        (_forward_with(_good_cell, carry=("ltm",)), "the STM is not carried"),
        (_forward_with(_wrong_lstm_cell("no tanh")), "tanh is missing"),
        (_forward_with(_wrong_lstm_cell("order i, g, f, o")), "order i, g, f, o"),
        (_forward_with(_good_cell, stack_dim=0), "wrong order"),
    ],
)
def test_lstm_forward_names_more_mistakes(wrong, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_lstm_forward(wrong)
    assert "likely cause:" in str(info.value)


def _gru_from_scratch(mistake=None):
    def gru_cell(x, h, params):
        w_ih, w_hh, b_ih, b_hh = params
        a_r, a_z, a_n = functional.linear(x, w_ih, b_ih).chunk(3, dim=1)
        w_hr, w_hz, w_hn = w_hh.chunk(3)
        b_hr, b_hz, b_hn = b_hh.chunk(3)
        r = torch.sigmoid(a_r + h @ w_hr.T + b_hr)
        z = torch.sigmoid(a_z + h @ w_hz.T + b_hz)
        if mistake == "r from z's rows":
            r = z
        recurrent = h @ w_hn.T + b_hn
        if mistake == "b_hn outside":
            n = torch.tanh(a_n + r * (h @ w_hn.T) + b_hn)
        elif mistake == "no reset":
            n = torch.tanh(a_n + recurrent)
        else:
            n = torch.tanh(a_n + r * recurrent)
        if mistake == "(1 - z) on h":
            return z * n + (1 - z) * h
        return (1 - z) * n + z * h

    return gru_cell


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("b_hn outside", "but not b_hn"),
        ("no reset", "the reset gate is not used"),
        ("r from z's rows", "computed from the update gate's rows"),
        ("(1 - z) on h", "z and 1 - z are swapped"),
    ],
)
def test_gru_cell_names_more_mistakes(mistake, message):
    check_gru_cell(_gru_from_scratch())  # the same code without the mistake passes
    with pytest.raises(CheckFailure, match=message) as info:
        check_gru_cell(_gru_from_scratch(mistake))
    assert str(info.value).startswith("gru_cell") and "likely cause:" in str(info.value)


def test_peephole_added_after_the_sigmoid_is_named(ns):
    def after_sigmoid(event, state, params, peepholes):
        stm, ltm = state
        w_ci, w_cf, w_co = peepholes
        a_i, a_f, a_g, a_o = _pre(event, stm, params)
        new_ltm = (a_f.sigmoid() + w_cf * ltm) * ltm + (a_i.sigmoid() + w_ci * ltm) * a_g.tanh()
        return (a_o.sigmoid() + w_co * new_ltm) * new_ltm.tanh(), new_ltm

    with pytest.raises(CheckFailure, match="added after the sigmoid") as info:
        check_peephole_lstm_cell(after_sigmoid, gradcheck=False)
    assert str(info.value).startswith("peephole_lstm_cell")


def test_param_count_names_missing_weights():
    def count(input_size, hidden_size, num_layers=1, bias=True, skip=""):
        total = 0
        for layer in range(num_layers):
            inputs = input_size if layer == 0 else hidden_size
            total += 0 if skip == "ih" else 4 * hidden_size * inputs
            total += 0 if skip == "hh" else 4 * hidden_size * hidden_size
            total += 8 * hidden_size if bias else 0
        return total

    check_lstm_param_count(count)
    with pytest.raises(CheckFailure, match="recurrent weights are missing"):
        check_lstm_param_count(lambda *a, **k: count(*a, **k, skip="hh"))
    with pytest.raises(CheckFailure, match="input weights are missing"):
        check_lstm_param_count(lambda *a, **k: count(*a, **k, skip="ih"))
    with pytest.raises(CheckFailure, match="that is a GRU"):
        check_lstm_param_count(lambda *a, **k: count(*a, **k) * 3 // 4)


# correct answers written differently: none may be rejected


def _lstm_addmm(event, state, params):
    stm, ltm = state
    w_ih, w_hh, b_ih, b_hh = params
    pre = torch.addmm(b_ih + b_hh, event, w_ih.t()) + torch.addmm(
        torch.zeros_like(b_hh), stm, w_hh.t()
    )
    i, f, g, o = pre.chunk(4, dim=1)
    new_ltm = torch.sigmoid(f) * ltm + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(new_ltm), new_ltm


def _lstm_einsum(event, state, params):
    stm, ltm = state
    w_ih, w_hh, b_ih, b_hh = params
    hidden = stm.shape[1]
    pre = torch.einsum("bi,gi->bg", event, w_ih) + torch.einsum("bh,gh->bg", stm, w_hh)
    pre = pre + b_ih + b_hh
    gate = {name: pre[:, k * hidden : (k + 1) * hidden] for k, name in enumerate("ifgo")}
    new_ltm = gate["f"].sigmoid() * ltm + gate["i"].sigmoid() * gate["g"].tanh()
    return gate["o"].sigmoid() * new_ltm.tanh(), new_ltm


def _lstm_per_gate(event, state, params):
    stm, ltm = state
    values = {}
    squashes = (torch.sigmoid, torch.sigmoid, torch.tanh, torch.sigmoid)
    for gate, squash in zip(LSTM_GATES, squashes, strict=True):
        w_ih, w_hh, b_ih, b_hh = gate_params(params, gate)
        values[gate] = squash(
            functional.linear(event, w_ih, b_ih) + functional.linear(stm, w_hh, b_hh)
        )
    new_ltm = values["f"] * ltm + values["i"] * values["g"]
    return values["o"] * torch.tanh(new_ltm), new_ltm


def _lstm_forward_preallocated(events, state, params):
    stm, ltm = state
    batch, seq, _ = events.shape
    outputs = torch.empty(batch, seq, stm.shape[1], dtype=events.dtype)
    for t in range(seq):
        stm, ltm = _lstm_einsum(events[:, t, :], (stm, ltm), params)
        outputs[:, t] = stm
    return outputs, (stm, ltm)


def _lstm_forward_time_major(events, state, params):
    stm, ltm = state
    outputs = []
    for event in events.transpose(0, 1):  # (seq, batch, input): one step at a time
        stm, ltm = _lstm_addmm(event, (stm, ltm), params)
        outputs.append(stm)
    return torch.stack(outputs).transpose(0, 1), [stm, ltm]


def _gru_per_gate(x, h, params):
    r_ih, r_hh, r_bi, r_bh = gru_gate_params(params, "r")
    z_ih, z_hh, z_bi, z_bh = gru_gate_params(params, "z")
    n_ih, n_hh, n_bi, n_bh = gru_gate_params(params, "n")
    r = torch.sigmoid(torch.addmm(r_bi, x, r_ih.T) + torch.addmm(r_bh, h, r_hh.T))
    z = torch.sigmoid(torch.einsum("bi,hi->bh", x, z_ih) + z_bi + h @ z_hh.T + z_bh)
    n = torch.tanh(functional.linear(x, n_ih, n_bi) + r * functional.linear(h, n_hh, n_bh))
    return torch.lerp(n, h, z)  # n + z * (h - n) = (1 - z) * n + z * h


@pytest.mark.parametrize("cell", [_lstm_addmm, _lstm_einsum, _lstm_per_gate])
def test_lstm_cells_written_differently_pass(cell, capsys):
    check_lstm_cell(cell)
    check_lstm_cell(cell, hidden=True)


@pytest.mark.parametrize("forward", [_lstm_forward_preallocated, _lstm_forward_time_major])
def test_lstm_forwards_written_differently_pass(forward):
    check_lstm_forward(forward)
    check_lstm_forward(forward, hidden=True)


def test_gru_written_differently_passes():
    check_gru_cell(_gru_per_gate)
    check_gru_cell(_gru_per_gate, hidden=True)
    check_gru_cell(_gru_from_scratch(), hidden=True)


def test_param_count_written_differently_passes():
    def closed_form(input_size, hidden_size, num_layers=1, bias=True):
        four_h = 4 * hidden_size
        first = four_h * (input_size + hidden_size)
        rest = (num_layers - 1) * four_h * 2 * hidden_size
        return first + rest + num_layers * 2 * four_h * int(bias)

    check_lstm_param_count(closed_form)
    check_lstm_param_count(closed_form, hidden=True)


# --------------------------------------------------------------------------- lstm_cell_backward

BACKWARD_NAMES = ("dx", "dh", "dc", "dweight_ih", "dweight_hh", "dbias")


def _autograd_backward(cell, x, h, c, dh_next, dc_next):
    """The six gradients of <dh_next, new_h> + <dc_next, new_c> through an nn.LSTMCell."""
    leaves = [t.clone().requires_grad_(True) for t in (x, h, c)]
    cell.zero_grad()
    new_h, new_c = cell(leaves[0], (leaves[1], leaves[2]))
    ((new_h * dh_next).sum() + (new_c * dc_next).sum()).backward()
    assert torch.equal(cell.bias_ih.grad, cell.bias_hh.grad)
    return [t.grad for t in leaves] + [cell.weight_ih.grad, cell.weight_hh.grad, cell.bias_ih.grad]


@pytest.mark.parametrize("size", UNUSED_SIZES)
def test_lstm_cell_backward_matches_autograd(ns, size):
    batch, input_size, hidden_size = size
    cell = _torch_cell(nn.LSTMCell, input_size, hidden_size, seed=300 + sum(size))
    g = torch.Generator().manual_seed(11)
    x = torch.randn(batch, input_size, generator=g, dtype=F64)
    h, c, dh_next, dc_next = (
        torch.randn(batch, hidden_size, generator=g, dtype=F64) for _ in range(4)
    )
    expected = _autograd_backward(cell, x, h, c, dh_next, dc_next)
    got = ns["lstm_cell_backward"](dh_next, dc_next, x, h, c, _params(cell))
    assert isinstance(got, tuple) and len(got) == 6
    diffs = [_max_diff(a, b) for a, b in zip(got, expected, strict=True)]
    assert max(diffs) < 1e-10, dict(zip(BACKWARD_NAMES, diffs, strict=True))


def _backward_by_hand(mistake=None):
    """An lstm_cell_backward written from scratch (chunked pre-activations), with one mistake."""
    order = {"order i, f, o, g": "ifog", "order i, g, f, o": "igfo", "f/i swapped": "figo"}

    def lstm_cell_backward(dh_next, dc_next, x, h, c, params):
        w_ih, w_hh, b_ih, b_hh = params
        if mistake == "no dh_next":
            dh_next = torch.zeros_like(dh_next)
        if mistake == "no dc_next":
            dc_next = torch.zeros_like(dc_next)
        blocks = dict(zip(order.get(mistake, "ifgo"), _pre(x, h, params), strict=True))
        i, f, o = (blocks[k].sigmoid() for k in "ifo")
        g = blocks["g"].tanh()
        c_next = f * c + i * g
        t = c_next.tanh()
        d_tanh_c = {"tanh' of c_next": 1 - c_next**2, "tanh' at old c": 1 - c.tanh() ** 2}
        d_c_next = dc_next + dh_next * o * d_tanh_c.get(mistake, 1 - t**2)
        if mistake == "no tanh path":
            d_c_next = dc_next
        d_o, d_f, d_i, d_g = dh_next * t, d_c_next * c, d_c_next * g, d_c_next * i
        if mistake == "d_o without tanh":
            d_o = dh_next * c_next
        dc = d_c_next * f
        if mistake == "dc not times f":
            dc = d_c_next
        if mistake == "dc is dc_next":
            dc = dc_next

        def d_sigmoid(s):
            if mistake == "sigmoid as tanh":
                return 1 - s**2
            return torch.ones_like(s) if mistake == "no sigmoid derivative" else s * (1 - s)

        d_tanh = {
            "tanh as sigmoid": g * (1 - g),
            "no tanh derivative": torch.ones_like(g),
        }.get(mistake, 1 - g**2)
        d_pre = {"i": d_i * d_sigmoid(i), "f": d_f * d_sigmoid(f), "g": d_g * d_tanh}
        d_pre["o"] = d_o * d_sigmoid(o)
        da = torch.cat([d_pre[k] for k in order.get(mistake, "ifgo")], dim=1)
        dx, dh = da @ w_ih, da @ w_hh
        stacked = da
        if mistake == "stacked i, f, o, g":
            stacked = torch.cat([d_pre[k] for k in "ifog"], dim=1)
        dweight_ih, dweight_hh, dbias = stacked.T @ x, stacked.T @ h, stacked.sum(0)
        if mistake == "dbias doubled":
            dbias = 2 * dbias
        if mistake == "averaged":
            n = x.shape[0]
            dweight_ih, dweight_hh, dbias = dweight_ih / n, dweight_hh / n, dbias / n
        if mistake == "dbias per row":
            dbias = stacked
        if mistake == "dweight_hh transposed":
            dweight_hh = h.T @ stacked
        if mistake == "five values":
            return dx, dh, dweight_ih, dweight_hh, dbias
        return dx, dh, dc, dweight_ih, dweight_hh, dbias

    return lstm_cell_backward


BACKWARD_MISTAKES = {
    "no tanh path": "the gradient of the new LTM is only dc_next",
    "dc not times f": "the returned dc is the gradient of the new LTM, not of the old one",
    "tanh' of c_next": "the use gate's tanh was differentiated with the new LTM where its output",
    "tanh' at old c": "the use gate's tanh was differentiated at the old LTM",
    "d_o without tanh": "the output gate's gradient uses the new LTM itself",
    "dc is dc_next": "the returned dc is dc_next passed through",
    "sigmoid as tanh": r"sigmoid gates \(i, f, o\) were differentiated with tanh's derivative",
    "tanh as sigmoid": "the candidate g was differentiated with sigmoid's derivative",
    "no sigmoid derivative": "the sigmoid's derivative is missing",
    "no tanh derivative": "the tanh's derivative is missing",
    "order i, f, o, g": r"taken in the order i, f, o, g",
    "order i, g, f, o": r"order i, g, f, o \(TensorFlow's order\)",
    "f/i swapped": "the forget gate's and the input gate's rows are swapped",
    "stacked i, f, o, g": "gate blocks of dweight_ih, dweight_hh and dbias are stacked in the "
    "order i, f, o, g",
    "dbias doubled": "dbias adds up the gradients of both biases",
    "averaged": "divided by the batch size",
    "no dh_next": "dh_next is not used",
    "no dc_next": "dc_next is not used",
    "dbias per row": "dbias keeps the batch dimension",
    "dweight_hh transposed": "dweight_hh is transposed",
    "five values": r"should return a tuple \(dx, dh, dc, dweight_ih, dweight_hh, dbias\)",
}


def _expected_digits() -> set[str]:
    """Every value of every visible case's six gradients, as the checks would print it."""
    from helpers.checks.lesson02 import EXERCISES, _backward_case, backward_reference

    cases = EXERCISES["lstm_cell_backward"].visible
    shown = set()
    for k, size in enumerate(cases["sizes"]):
        case, dh_next, dc_next = _backward_case(*size, seed=cases["seed"] + k)
        for value in backward_reference(case, dh_next, dc_next).values():
            shown.update(f"{v:.6g}" for v in value.reshape(-1).tolist() if abs(v) > 1e-3)
    return shown


@pytest.mark.parametrize("mistake", list(BACKWARD_MISTAKES))
def test_lstm_cell_backward_mistakes_are_named(mistake):
    check_lstm_cell_backward(_backward_by_hand())  # the same code without the mistake passes
    with pytest.raises(CheckFailure, match=BACKWARD_MISTAKES[mistake]) as info:
        check_lstm_cell_backward(_backward_by_hand(mistake))
    message = str(info.value)
    assert message.startswith("lstm_cell_backward: ")
    assert "likely cause:" in message or mistake == "five values"
    assert "inputs: dh_next (" in message
    assert "expected" not in message.split("likely cause:")[0] or "has shape" in message
    leaked = [digits for digits in _expected_digits() if digits in message]
    assert not leaked, f"the message shows expected values {leaked}:\n{message}"


def test_lstm_cell_backward_names_where_the_mismatch_is():
    with pytest.raises(CheckFailure) as info:
        check_lstm_cell_backward(_backward_by_hand("dc not times f"))
    first = str(info.value).splitlines()[0]
    assert first.startswith("lstm_cell_backward: dc (3, 5) differs from torch.autograd")
    assert re.search(r"first mismatch at index \(\d+, \d+\) \(\|diff\| [\d.e+-]+;", first), first


def test_lstm_cell_backward_not_implemented_and_errors_are_reported():
    def unsolved(*args):
        raise NotImplementedError()

    with pytest.raises(CheckFailure, match="not implemented yet"):
        check_lstm_cell_backward(unsolved)

    def wrong_shapes(dh_next, dc_next, x, h, c, params):
        return x @ params[1]  # (batch, input) @ (4H, H): does not fit

    with pytest.raises(CheckFailure, match="two shapes do not fit"):
        check_lstm_cell_backward(wrong_shapes)


# correct answers written differently: none may be rejected


def _backward_per_gate(dh_next, dc_next, x, h, c, params):
    """One gate at a time with gate_params and F.linear; the blocks filled into preallocated
    fused gradients."""
    values, squashes = {}, {"i": torch.sigmoid, "f": torch.sigmoid, "g": torch.tanh}
    squashes["o"] = torch.sigmoid
    for gate in LSTM_GATES:
        w_ih, w_hh, b_ih, b_hh = gate_params(params, gate)
        values[gate] = squashes[gate](
            functional.linear(x, w_ih, b_ih) + functional.linear(h, w_hh, b_hh)
        )
    i, f, g, o = (values[k] for k in LSTM_GATES)
    t = torch.tanh(f * c + i * g)
    d_c_next = dc_next + dh_next * o * (1 - t * t)
    grads = {"i": d_c_next * g, "f": d_c_next * c, "g": d_c_next * i, "o": dh_next * t}
    hidden = h.shape[1]
    dx, dh = torch.zeros_like(x), torch.zeros_like(h)
    dweight_ih, dweight_hh = torch.zeros_like(params[0]), torch.zeros_like(params[1])
    dbias = torch.zeros_like(params[2])
    for gate in LSTM_GATES:
        v = values[gate]
        da = grads[gate] * (1 - v * v if gate == "g" else v - v * v)
        rows = gate_rows(hidden, gate)
        w_ih, w_hh, _, _ = gate_params(params, gate)
        dx = dx + da @ w_ih
        dh = dh + da @ w_hh
        dweight_ih[rows] = torch.einsum("bh,bi->hi", da, x)
        dweight_hh[rows] = torch.einsum("bh,bk->hk", da, h)
        dbias[rows] = da.sum(dim=0)
    return dx, dh, d_c_next * f, dweight_ih, dweight_hh, dbias


def _backward_through_sigmoid_of_twice(dh_next, dc_next, x, h, c, params):
    """Plain ops: the tanh derivatives via sigmoid (tanh(a) = 2 sigmoid(2a) - 1), a list back."""
    w_ih, w_hh, b_ih, b_hh = params
    pre = torch.addmm(b_ih + b_hh, x, w_ih.t()) + h.mm(w_hh.t())
    a_i, a_f, a_g, a_o = pre.chunk(4, dim=1)
    i, f, o = (1 / (1 + torch.exp(-a)) for a in (a_i, a_f, a_o))
    g = 2 * torch.sigmoid(2 * a_g) - 1
    c_next = torch.addcmul(i * g, f, c)
    s2 = torch.sigmoid(2 * c_next)
    t = 2 * s2 - 1
    d_c_next = dc_next + dh_next * o * 4 * s2 * (1 - s2)
    s2g = (g + 1) / 2
    da = torch.cat(
        [
            d_c_next * g * i * (1 - i),
            d_c_next * c * f * (1 - f),
            d_c_next * i * 4 * s2g * (1 - s2g),
            dh_next * t * o * (1 - o),
        ],
        dim=1,
    )
    return [da.mm(w_ih), da.mm(w_hh), f * d_c_next, da.t().mm(x), da.t().mm(h), da.sum(0)]


@pytest.mark.parametrize(
    "backward", [_backward_per_gate, _backward_through_sigmoid_of_twice, _backward_by_hand()]
)
def test_lstm_cell_backward_written_differently_passes(backward, capsys):
    check_lstm_cell_backward(backward)
    check_lstm_cell_backward(backward, hidden=True)
    out = capsys.readouterr().out
    assert out.count("lstm_cell_backward: OK") == 2, out


def test_lstm_cell_backward_check_is_independent_of_the_answer():
    """The checks module holds no hand-written gradient: its reference is autograd through
    PyTorch's cell, and its mistakes are autograd through cells built wrong."""

    from helpers.checks import lesson02

    package = Path(lesson02.__file__).parent  # every module of the lesson's checks
    source = "\n".join(path.read_text() for path in sorted(package.glob("*.py")))
    assert "def _check_lstm_cell_backward" in source
    for formula in ("1 - t**2", "1 - g**2", "s * (1 - s)", "@ weight_ih", ".T @ x", "* f\n"):
        assert formula not in source, formula


def test_remember_gate_is_a_worked_example_not_a_graded_point():
    from helpers.checks.lesson02 import EXERCISES

    assert "remember_gate" not in EXERCISES
    nb = nbformat.read(notebook_path("source", LESSON), as_version=4)
    cells = [c for c in nb.cells if "def remember_gate(" in c.source]
    assert len(cells) == 1 and "nbgrader" not in cells[0].metadata
    assert not any("check_remember_gate" in c.source for c in nb.cells)
    release = nbformat.read(notebook_path("release", LESSON), as_version=4)
    assert any("return kept_ltm + learned" in c.source for c in release.cells)
    points = {
        c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }
    assert points["lstm_cell_backward_check"] == max(points.values()) == 5
    assert sum(points.values()) == 25
    # the gates that follow the first one are the same pattern: one point each
    assert points["learn_gate_check"] == points["use_gate_check"] == 1


# --------------------------------------------------------------------------- make check, end to end


def _mutated_solution(tmp_path, replacements):
    nb = nbformat.read(notebook_path("source", LESSON), as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        for target, old, new in replacements:
            if grade_id == target:
                assert old in cell.source, (target, old)
                cell.source = cell.source.replace(old, new)
    path = tmp_path / f"{LESSON}.ipynb"
    nbformat.write(nb, path)
    return path


def _check_lesson(path):
    return subprocess.run(
        [sys.executable, "-m", "helpers.checks", LESSON, "--notebook", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "COURSE_FAST": "1"},
    )


@pytest.mark.slow
def test_make_check_passes_on_a_correct_notebook(tmp_path):
    """What a student sees: ``make check`` on a notebook filled in correctly."""
    result = _check_lesson(_mutated_solution(tmp_path, []))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed\n") == 10, result.stdout
    assert "total: 25/25 points\n" in result.stdout, result.stdout


@pytest.mark.slow
def test_make_check_names_the_mistakes(tmp_path):
    """``make check`` on a notebook with the f and i rows swapped in forget_gate / learn_gate and
    one bias in use_gate: each failing exercise names its mistake."""
    path = _mutated_solution(
        tmp_path,
        [
            ("forget_gate", 'gate_params(params, "f")', 'gate_params(params, "i")'),
            ("learn_gate", 'gate_params(params, "i")', 'gate_params(params, "f")'),
            ("use_gate", " + stm @ w_hh.T + b_hh", " + stm @ w_hh.T"),
        ],
    )
    result = _check_lesson(path)
    assert result.returncode != 0
    out = result.stdout
    assert out.count(" FAILED\n") == 5 and out.count(" passed\n") == 5, out
    assert "(5 to fix)" in out, out
    for exercise, message in (
        ("forget_gate", "rows are swapped"),
        ("learn_gate", "rows are swapped"),
        ("use_gate", "only one bias is used (bias_hh is missing)"),
    ):
        section = re.split(rf"^{exercise} +0/\d+ +FAILED$", out, maxsplit=1, flags=re.M)[1]
        section = section.split("\n", 1)[1].split("\n\n", 1)[0]
        message_lines = section.split("\n")
        first = [line for line in message_lines if not line.startswith("    ")]
        section = "\n".join(
            message_lines[: message_lines.index(first[0])] if first else message_lines
        )
        assert f"{exercise}: " in section and message in section, (exercise, out)


# --------------------------------------------------------------------------- helpers/lstm.py


def _lstm_params(input_size=3, hidden_size=2, seed=0):
    return _params(_torch_cell(nn.LSTMCell, input_size, hidden_size, seed))


def test_gate_params_slices_pytorch_rows():
    params = _lstm_params(3, 2)
    for k, gate in enumerate(LSTM_GATES):
        w_ih, w_hh, b_ih, b_hh = gate_params(params, gate)
        assert w_ih.shape == (2, 3) and w_hh.shape == (2, 2) and b_ih.shape == b_hh.shape == (2,)
        assert torch.equal(w_ih, params[0][2 * k : 2 * k + 2])
        assert torch.equal(b_hh, params[3][2 * k : 2 * k + 2])
    gru = _params(_torch_cell(nn.GRUCell, 3, 2, 0))
    assert torch.equal(gru_gate_params(gru, "n")[0], gru[0][4:6])
    no_bias = (*params[:2], None, None)
    assert gate_params(no_bias, "o")[2:] == (None, None)


@pytest.mark.parametrize(
    ("params", "gate", "message"),
    [
        (lambda p: p, "x", "gate must be one of"),
        (lambda p: p[:3], "f", "4-tuple"),
        (lambda p: (p[0][:7], *p[1:]), "f", "4 \\* hidden_size rows"),
        (lambda p: (p[0], p[1][:, :1], *p[2:]), "f", "weight_hh must be"),
        (lambda p: (*p[:3], p[3][:5]), "f", "bias_hh must be"),
        (lambda p: (*p[:3], None), "f", "both be tensors or both be None"),
        (lambda p: ("w", *p[1:]), "f", "2-D torch.Tensor"),
    ],
)
def test_gate_params_rejects_bad_input(params, gate, message):
    with pytest.raises(ValueError, match=message):
        gate_params(params(_lstm_params()), gate)


def test_fix_gate_and_read_gates():
    params = _lstm_params(3, 4, seed=1)
    fixed = fix_gate(params, "f", SATURATED)
    assert torch.equal(params[0], _lstm_params(3, 4, seed=1)[0]), "fix_gate changed its input"
    x, h = torch.randn(5, 3, dtype=F64), torch.randn(5, 4, dtype=F64)
    assert torch.equal(read_gates(_cell, x, h, fixed)["f"], torch.ones(5, 4, dtype=F64))
    pre = functional.linear(x, params[0], params[2]) + functional.linear(h, params[1], params[3])
    i, f, g, o = pre.chunk(4, dim=1)
    gates = read_gates(_cell, x, h, params)
    expected = {"i": i.sigmoid(), "f": f.sigmoid(), "g": g.tanh(), "o": o.sigmoid()}
    for name in LSTM_GATES:
        assert _max_diff(gates[name], expected[name]) < 1e-15
    with pytest.raises(ValueError, match="stm must be"):
        read_gates(_cell, x, h[:, :3], params)
    with pytest.raises(ValueError, match="pair"):
        read_gates(lambda e, s, p: e, x, h, params)


def _cell(event, state, params):
    return tuple(torch.lstm_cell(event, state, *params))


def test_gate_activations_and_heatmap():
    import matplotlib.pyplot as plt

    params = _lstm_params(1, 3, seed=2)
    events, targets = latch_task(2, 12, torch.Generator().manual_seed(3))
    zeros = torch.zeros(2, 3, dtype=F64)
    acts = gate_activations(_cell, events.to(F64), (zeros, zeros), params)
    assert set(acts) == {"i", "f", "g", "o", "stm", "ltm"}
    assert all(v.shape == (2, 12, 3) for v in acts.values())
    stm, ltm = zeros, zeros
    for t in range(12):
        stm, ltm = _cell(events[:, t].to(F64), (stm, ltm), params)
    assert torch.equal(acts["stm"][:, -1], stm) and torch.equal(acts["ltm"][:, -1], ltm)
    fig = plot_gate_heatmaps(acts, events=events, targets=targets)
    assert len(fig.axes) == 5  # events, three gates, colour bar
    plt.close(fig)
    with pytest.raises(ValueError, match="no 'z'"):
        plot_gate_heatmaps(acts, gates=("z",))
    with pytest.raises(ValueError, match="events must be"):
        gate_activations(_cell, events[0], (zeros, zeros), params)


def test_latch_task_targets_hold_the_latest_pulse():
    events, targets = latch_task(64, 30, torch.Generator().manual_seed(0), pulse_probability=0.2)
    assert events.shape == targets.shape == (64, 30, 1)
    assert set(events.unique().tolist()) <= {-1.0, 0.0, 1.0}
    for b in range(64):
        latest = 0.0
        for t in range(30):
            latest = events[b, t, 0].item() or latest
            assert targets[b, t, 0].item() == latest
    again, _ = latch_task(64, 30, torch.Generator().manual_seed(0), pulse_probability=0.2)
    assert torch.equal(events, again)
    with pytest.raises(ValueError, match="pulse_probability"):
        latch_task(1, 1, torch.Generator(), pulse_probability=1.5)


def test_lstm_cell_diagram_is_drawn_by_its_script(tmp_path):
    import shutil

    scripts, drawn = tmp_path / "images", tmp_path / "helpers" / "images"  # the course's layout
    scripts.mkdir()
    drawn.mkdir(parents=True)
    shutil.copy(ROOT / "images" / "diagram.py", scripts)
    shutil.copy(ROOT / "images" / "draw_lstm_cell.py", scripts)
    subprocess.run(
        [sys.executable, "draw_lstm_cell.py"], cwd=scripts, check=True, capture_output=True
    )
    shipped = helpers.image_path("lstm_cell")
    assert (drawn / "lstm_cell.png").read_bytes() == shipped.read_bytes()


def test_train_latch_model_is_adam():
    """The written-out loop takes the same steps as torch.optim.Adam."""
    from helpers.lstm import train_latch_model

    lstm, readout, losses = train_latch_model(hidden_size=3, n_steps=4, seed=5, batch_size=8)
    torch.manual_seed(5)
    generator = torch.Generator().manual_seed(5)
    ref_lstm, ref_readout = nn.LSTM(1, 3, batch_first=True), nn.Linear(3, 1)
    params = [*ref_lstm.parameters(), *ref_readout.parameters()]
    optimizer = torch.optim.Adam(params, lr=0.03)
    ref_losses = []
    for _ in range(4):
        events, targets = latch_task(8, 50, generator)
        loss = functional.mse_loss(ref_readout(ref_lstm(events)[0]), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ref_losses.append(loss.item())
    assert losses == pytest.approx(ref_losses, rel=1e-5)
    mine = [*lstm.parameters(), *readout.parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(mine, params, strict=True)) < 1e-5
    with pytest.raises(ValueError, match="n_steps"):
        train_latch_model(n_steps=0)
