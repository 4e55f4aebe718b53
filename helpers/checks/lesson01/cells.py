"""Lesson 01's forward exercises: ``rnn_cell`` against ``nn.RNNCell``, ``rnn_forward`` against
``nn.RNN(batch_first=True)``, and the shapes ``nn.GRU`` and ``nn.LSTM`` give their state."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import assert_close, assert_equal_values, call, fail, report
from helpers.checks.engine import Mistake, causes, diagnosis, records

F64 = torch.float64


class CellSize(NamedTuple):
    """The sizes of one random RNN step."""

    batch: int
    input_size: int
    hidden_size: int


class SequenceSize(NamedTuple):
    """The sizes of one random sequence."""

    batch: int
    seq_length: int
    input_size: int
    hidden_size: int


class StateShapeCase(NamedTuple):
    """The arguments of one ``hidden_state_shape`` case."""

    num_layers: int
    batch_size: int
    hidden_size: int
    bidirectional: bool


class GruCase(NamedTuple):
    """One GRU of the quiz, and the batch it runs on."""

    input_size: int
    hidden_size: int
    num_layers: int
    batch_first: bool
    bidirectional: bool
    batch_size: int


def _rnn_case(batch: int, input_size: int, hidden_size: int, seed: int):
    remote.manual_seed(seed)
    ref = nn.RNNCell(input_size, hidden_size, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, input_size, generator=g, dtype=F64)
    h = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    params = tuple(
        p.detach().clone() for p in (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    )
    return ref, x, h, params


# ----------------------------------------------------------------------------------- rnn_cell


class Step(NamedTuple):
    """One RNN step's inputs."""

    x: torch.Tensor
    h: torch.Tensor
    w_ih: torch.Tensor
    w_hh: torch.Tensor
    b_ih: torch.Tensor
    b_hh: torch.Tensor

    def pre(self) -> torch.Tensor:
        return self.x @ self.w_ih.T + self.b_ih + self.h @ self.w_hh.T + self.b_hh


def _square_ih(s: Step, value):
    """``value(s)`` where weight_ih is square (elsewhere the shapes show the mistake)."""
    return value(s) if s.w_ih.shape[0] == s.w_ih.shape[1] else None


#: The usual wrong RNN steps (``recognise(step)``: the wrong step's output).
RNN_CELL_MISTAKES = (
    Mistake(
        "no bias_hh",
        lambda s: s.pre().sub(s.b_hh).tanh(),
        "bias_hh is missing: PyTorch adds two biases, bias_ih and bias_hh.",
    ),
    Mistake(
        "no bias_ih",
        lambda s: s.pre().sub(s.b_ih).tanh(),
        "bias_ih is missing: PyTorch adds two biases, bias_ih and bias_hh.",
    ),
    Mistake(
        "no h",
        lambda s: (s.x @ s.w_ih.T + s.b_ih + s.b_hh).tanh(),
        "the previous hidden state h is not used: add h @ weight_hh.T.",
    ),
    Mistake("no activation", lambda s: s.pre(), "no activation: the RNN step ends with tanh."),
    Mistake("sigmoid", lambda s: torch.sigmoid(s.pre()), "sigmoid instead of tanh."),
    Mistake(
        "relu",
        lambda s: torch.relu(s.pre()),
        "relu instead of tanh (nn.RNNCell's default nonlinearity is tanh).",
    ),
    Mistake(
        "weight_hh untransposed",
        lambda s: (s.x @ s.w_ih.T + s.b_ih + s.h @ s.w_hh + s.b_hh).tanh(),
        "weight_hh is used untransposed: PyTorch stores weights (out, in), so the recurrent "
        "term is h @ weight_hh.T (a square weight_hh hides this from the shapes).",
    ),
    Mistake(
        "biases after tanh",
        lambda s: (s.x @ s.w_ih.T + s.h @ s.w_hh.T).tanh() + s.b_ih + s.b_hh,
        "the biases are added after tanh: they belong inside, "
        "tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).",
    ),
    Mistake(
        "no biases",
        lambda s: (s.x @ s.w_ih.T + s.h @ s.w_hh.T).tanh(),
        "both biases are missing: PyTorch adds bias_ih and bias_hh.",
    ),
    Mistake(
        "weight_ih untransposed",
        lambda s: _square_ih(s, lambda s: (s.x @ s.w_ih + s.b_ih + s.h @ s.w_hh.T + s.b_hh).tanh()),
        "weight_ih is used untransposed: PyTorch stores weights (out, in), so the input "
        "term is x @ weight_ih.T.",
    ),
    Mistake(
        "both untransposed",
        lambda s: _square_ih(s, lambda s: (s.x @ s.w_ih + s.b_ih + s.h @ s.w_hh + s.b_hh).tanh()),
        "both weights are used untransposed: the terms are x @ weight_ih.T and h @ weight_hh.T.",
    ),
    Mistake(
        "weights swapped",
        lambda s: _square_ih(
            s, lambda s: (s.x @ s.w_hh.T + s.b_ih + s.h @ s.w_ih.T + s.b_hh).tanh()
        ),
        "weight_ih and weight_hh are swapped: x goes with weight_ih, h with weight_hh.",
    ),
)


def _check_rnn_cell(rnn_cell, *, sizes, seed: int) -> None:
    """``rnn_cell`` equals ``nn.RNNCell`` on each ``CellSize(batch, input_size, hidden_size)``."""
    worst = 0.0
    for i, (batch, input_size, hidden_size) in enumerate(records(CellSize, sizes)):
        ref, x, h, params = _rnn_case(batch, input_size, hidden_size, seed + i)
        inputs = {"x": x, "h": h, "weight_ih": params[0], "weight_hh": params[1]}
        got = call("rnn_cell", rnn_cell, x, h, *params, inputs=inputs)
        with torch.no_grad():
            expected = ref(x, h)
        worst = max(
            worst,
            assert_close(
                "rnn_cell",
                got,
                expected,
                inputs=inputs,
                name="h_next",
                reference="torch.nn.RNNCell",
                causes=causes(RNN_CELL_MISTAKES, Step(x, h, *params)),
            ),
        )
    report("rnn_cell", len(sizes), worst, "torch.nn.RNNCell")


# -------------------------------------------------------------------------------- rnn_forward


class Run(NamedTuple):
    """One sequence through ``nn.RNN``: its input, ``h0``, parameters and outputs."""

    x: torch.Tensor
    h0: torch.Tensor
    params: tuple
    out: torch.Tensor
    out_zero: torch.Tensor


#: The usual wrong outputs of ``rnn_forward``.
OUTPUT_MISTAKES = (
    Mistake(
        "h0 ignored",
        lambda r: r.out_zero,
        "h0 is ignored: the first step must start from h0, not from zeros.",
    ),
    Mistake("reversed", lambda r: r.out.flip(1), "output holds the inputs' time order reversed."),
    Mistake(
        "state not carried",
        lambda r: torch.stack(
            [torch.rnn_tanh_cell(r.x[:, t], r.h0, *r.params) for t in range(r.x.shape[1])],
            dim=1,
        ),
        "the hidden state is not carried: every step starts from h0, but step t must "
        "start from the h_next of step t - 1.",
    ),
    Mistake(
        "shifted",
        lambda r: torch.cat([r.h0.unsqueeze(1), r.out[:, :-1]], dim=1),
        "output is shifted by one step: it holds h0 and drops the last state; append "
        "each h_next after computing it.",
    ),
)

#: The usual wrong final states of ``rnn_forward``.
H_N_MISTAKES = (
    Mistake(
        "first step",
        lambda r: r.out[:, 0],
        "h_n is the first step's hidden state; it should be the last one.",
    ),
)


def _forward_case(size: SequenceSize, seed: int):
    remote.manual_seed(seed)
    ref = nn.RNN(size.input_size, size.hidden_size, batch_first=True, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size.batch, size.seq_length, size.input_size, generator=g, dtype=F64)
    h0 = torch.randn(size.batch, size.hidden_size, generator=g, dtype=F64)
    params = tuple(
        p.detach().clone()
        for p in (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
    )
    return ref, x, h0, params


def _check_rnn_forward(rnn_forward, *, sizes, seed: int) -> None:
    """``rnn_forward`` equals a one-layer ``nn.RNN(batch_first=True)``.

    ``sizes`` holds ``SequenceSize(batch, seq_length, input_size, hidden_size)`` records.
    """
    worst = 0.0
    reference = "torch.nn.RNN(batch_first=True)"
    for i, size in enumerate(records(SequenceSize, sizes)):
        ref, x, h0, params = _forward_case(size, seed + i)
        inputs = {"x": x, "h0": h0}
        got = call("rnn_forward", rnn_forward, x, h0, *params, inputs=inputs)
        if not isinstance(got, tuple) or len(got) != 2:
            fail(
                "rnn_forward",
                f"should return a tuple (output, h_n), got {type(got).__name__}",
                inputs,
            )
        with torch.no_grad():
            out, h_n = ref(x, h0.unsqueeze(0))
            out_zero, _ = ref(x, torch.zeros_like(h0).unsqueeze(0))
            run = Run(x, h0, params, out, out_zero)
            output_causes = causes(OUTPUT_MISTAKES, run)
        for got_part, expected, name, mistakes in (
            (got[0], out, "output (batch, seq, hidden)", output_causes),
            (got[1], h_n.squeeze(0), "h_n (batch, hidden)", causes(H_N_MISTAKES, run)),
        ):
            worst = max(
                worst,
                assert_close(
                    "rnn_forward",
                    got_part,
                    expected,
                    inputs=inputs,
                    name=name,
                    reference=reference,
                    causes=mistakes,
                ),
            )
    report("rnn_forward", len(sizes), worst, "torch.nn.RNN")


# ------------------------------------------------------------------------ shapes of the state


def _true_hidden_shape(
    num_layers, batch_size, hidden_size, bidirectional, kind=nn.GRU, input_size=4
):
    rnn = kind(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():
        _, h = rnn(torch.zeros(batch_size, 2, input_size))
    if isinstance(h, tuple):  # LSTM: (h, c)
        h = h[0]
    return tuple(h.shape)


def _plain_shape(value):
    return tuple(value) if isinstance(value, torch.Size) else value


#: Wrong shapes of the state, recognised from ``(got, case)``.
STATE_SHAPE_MISTAKES = (
    Mistake(
        "batch first",
        lambda got, c: got == (c.batch_size, c.num_layers * (1 + c.bidirectional), c.hidden_size),
        "batch_first=True does not apply to the hidden state: layers come first.",
    ),
    Mistake(
        "one direction",
        lambda got, c: c.bidirectional and got == (c.num_layers, c.batch_size, c.hidden_size),
        "a bidirectional RNN keeps one state per direction: num_layers * 2.",
    ),
)


def _check_hidden_state_shape(hidden_state_shape, *, cases) -> None:
    """``hidden_state_shape`` gives the shape PyTorch's recurrent layers really use.

    ``cases`` holds ``StateShapeCase(num_layers, batch_size, hidden_size, bidirectional)``.
    """
    for case in records(StateShapeCase, cases):
        num_layers, batch, hidden, bidirectional = case
        inputs = {
            "num_layers": num_layers,
            "batch_size": batch,
            "hidden_size": hidden,
            "bidirectional": bidirectional,
        }
        text = ", ".join(f"{k}={v}" for k, v in inputs.items())
        got = _plain_shape(
            call(
                "hidden_state_shape",
                hidden_state_shape,
                num_layers,
                batch,
                hidden,
                bidirectional=bidirectional,
            )
        )
        expected = _true_hidden_shape(num_layers, batch, hidden, bidirectional)
        cause = diagnosis(STATE_SHAPE_MISTAKES, got, case)
        assert_equal_values(f"hidden_state_shape({text})", got, expected, name="shape", cause=cause)
    report("hidden_state_shape", len(cases), None, "the shapes nn.GRU and nn.LSTM return")


def _gru_text(input_size, hidden_size, num_layers, batch_first, bidirectional, batch_size):
    return (
        f"nn.GRU(input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}, "
        f"batch_first={batch_first}, bidirectional={bidirectional}) on a batch of {batch_size}"
    )


def _states(c: GruCase) -> int:
    return c.num_layers * (2 if c.bidirectional else 1)


#: Wrong shapes of h_n, recognised from ``(got, case)``; the right shape is never told.
GRU_QUIZ_MISTAKES = (
    Mistake(
        "no leading dimension",
        lambda got, c: len(got) == 2,
        "h_n keeps a leading dimension for the layers (and directions), even for one.",
    ),
    Mistake(
        "batch first",
        lambda got, c: got == (c.batch_size, _states(c), c.hidden_size),
        "batch_first=True does not apply to the hidden state: layers come first.",
    ),
    Mistake(
        "input_size features",
        lambda got, c: (
            c.hidden_size != c.input_size and got == (_states(c), c.batch_size, c.input_size)
        ),
        "the hidden state has hidden_size features, not input_size.",
    ),
    Mistake(
        "one direction",
        lambda got, c: c.bidirectional and got == (c.num_layers, c.batch_size, c.hidden_size),
        "a bidirectional GRU keeps one state per direction: num_layers * 2.",
    ),
    Mistake(
        "two directions",
        lambda got, c: (
            not c.bidirectional and got == (c.num_layers * 2, c.batch_size, c.hidden_size)
        ),
        "this GRU is not bidirectional: one direction, num_layers states.",
    ),
)


def _check_gru_quiz(gru_quiz_answer, *, cases) -> None:
    """The quiz of Udacity's RNN lesson, as a function: the shape of h_n for a given ``nn.GRU``.

    ``cases`` holds ``GruCase(input_size, hidden_size, num_layers, batch_first, bidirectional,
    batch_size)``. The visible case is the lesson's quiz (a GRU with input 100, hidden 20, one
    layer, batch_first, batches of 3); the hidden cases are other GRUs, so only reasoning scores.
    A wrong answer is never told the right one.
    """
    for case in records(GruCase, cases):
        input_size, hidden, layers, batch_first, bidirectional, batch = case
        remote.manual_seed(0)
        gru = nn.GRU(
            input_size, hidden, layers, batch_first=batch_first, bidirectional=bidirectional
        )
        layout = (batch, 2, input_size) if batch_first else (2, batch, input_size)
        with torch.no_grad():
            _, h_n = gru(torch.zeros(*layout))
        expected = tuple(h_n.shape)  # measured before the learner's code sees the module
        got = _plain_shape(call("gru_quiz_answer", gru_quiz_answer, gru, batch))
        if not (isinstance(got, tuple) and all(type(d) is int for d in got)):
            fail(
                "gru_quiz_answer",
                f"should return a tuple of ints, got {type(got).__name__}",
                {"gru": gru, "batch_size": batch},
            )
        if got == expected:
            continue
        # the right shape is never printed: the message says what is wrong, not the answer
        fail(
            "gru_quiz_answer",
            f"{got!r} is not the shape of h_n for {_gru_text(*case)}",
            None,
            diagnosis(GRU_QUIZ_MISTAKES, got, case)
            or "check each dimension against the GRU's settings: which of them shape the "
            "hidden state, in which order, and which (like input_size) do not?",
        )
    report("gru_quiz_answer", len(cases), None, "the shapes nn.GRU returns")
