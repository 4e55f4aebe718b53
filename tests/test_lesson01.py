"""Lesson 01: the reference answers against torch.nn on many sizes, and the checks' teaching
messages on the usual mistakes."""

from __future__ import annotations

import pytest
import torch
from conftest import loaded, notebook_path
from torch import nn

from helpers.checks import CheckFailure
from helpers.checks.lesson01 import (
    check_gradient_answers,
    check_hidden_state_shape,
    check_rnn_cell,
    check_rnn_forward,
)

LESSON = "01_intro_to_rnns"


@pytest.fixture(scope="module")
def ns():
    return loaded(notebook_path("solutions", LESSON))


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
        raise AssertionError(kind)

    return cell


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("one bias", "bias_hh is missing"),
        ("relu", "relu instead of tanh"),
        ("no recurrence", "previous hidden state h is not used"),
        ("transposed", "wrong way round"),
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
