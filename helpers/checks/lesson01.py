"""Checks for lesson 01_intro_to_rnns, against torch.nn.RNNCell, torch.nn.RNN and torch.nn.GRU."""

from __future__ import annotations

import torch
from torch import nn

from helpers.checks.core import (
    Cause,
    Exercise,
    assert_choice,
    assert_close,
    assert_equal_values,
    call,
    exercise_table,
    fail,
    report,
)
from helpers.experiments import gradient_norms_through_time

F64 = torch.float64


def _rnn_case(batch: int, input_size: int, hidden_size: int, seed: int):
    torch.manual_seed(seed)
    ref = nn.RNNCell(input_size, hidden_size, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, input_size, generator=g, dtype=F64)
    h = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    params = tuple(
        p.detach().clone() for p in (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    )
    return ref, x, h, params


def _cell_causes(x, h, w_ih, w_hh, b_ih, b_hh):
    """Outputs of the usual wrong RNN steps, to recognise them."""
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    return [
        Cause(
            "bias_hh is missing: PyTorch adds two biases, bias_ih and bias_hh.",
            pre.sub(b_hh).tanh(),
        ),
        Cause(
            "bias_ih is missing: PyTorch adds two biases, bias_ih and bias_hh.",
            pre.sub(b_ih).tanh(),
        ),
        Cause(
            "the previous hidden state h is not used: add h @ weight_hh.T.",
            (x @ w_ih.T + b_ih + b_hh).tanh(),
        ),
        Cause("no activation: the RNN step ends with tanh.", pre),
        Cause("sigmoid instead of tanh.", torch.sigmoid(pre)),
        Cause("relu instead of tanh (nn.RNNCell's default nonlinearity is tanh).", torch.relu(pre)),
    ]


def _check_rnn_cell(rnn_cell, *, sizes, seed: int) -> None:
    """``rnn_cell`` equals ``nn.RNNCell`` on each ``(batch, input_size, hidden_size)`` in sizes."""
    worst = 0.0
    for i, (batch, input_size, hidden_size) in enumerate(sizes):
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
                causes=_cell_causes(x, h, *params),
            ),
        )
    report("rnn_cell", len(sizes), worst, "torch.nn.RNNCell")


def _check_rnn_forward(rnn_forward, *, sizes, seed: int) -> None:
    """``rnn_forward`` equals a one-layer ``nn.RNN(batch_first=True)``.

    ``sizes`` holds ``(batch, seq_length, input_size, hidden_size)`` tuples.
    """
    worst = 0.0
    for i, (batch, seq, input_size, hidden_size) in enumerate(sizes):
        torch.manual_seed(seed + i)
        ref = nn.RNN(input_size, hidden_size, batch_first=True, dtype=F64)
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randn(batch, seq, input_size, generator=g, dtype=F64)
        h0 = torch.randn(batch, hidden_size, generator=g, dtype=F64)
        params = tuple(
            p.detach().clone()
            for p in (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
        )
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
        causes = [
            Cause("h0 is ignored: the first step must start from h0, not from zeros.", out_zero),
            Cause("output holds the inputs' time order reversed.", out.flip(1)),
        ]
        worst = max(
            worst,
            assert_close(
                "rnn_forward",
                got[0],
                out,
                inputs=inputs,
                name="output (batch, seq, hidden)",
                reference="torch.nn.RNN(batch_first=True)",
                causes=causes,
            ),
        )
        h_causes = [
            Cause("h_n is the first step's hidden state; it should be the last one.", out[:, 0])
        ]
        worst = max(
            worst,
            assert_close(
                "rnn_forward",
                got[1],
                h_n.squeeze(0),
                inputs=inputs,
                name="h_n (batch, hidden)",
                reference="torch.nn.RNN(batch_first=True)",
                causes=h_causes,
            ),
        )
    report("rnn_forward", len(sizes), worst, "torch.nn.RNN")


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


def _check_hidden_state_shape(hidden_state_shape, *, cases) -> None:
    """``hidden_state_shape`` gives the shape PyTorch's recurrent layers really use.

    ``cases`` holds ``(num_layers, batch_size, hidden_size, bidirectional)``.
    """
    for num_layers, batch, hidden, bidirectional in cases:
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
        cause = None
        if got == (batch, num_layers * (1 + bidirectional), hidden):
            cause = "batch_first=True does not apply to the hidden state: layers come first."
        elif bidirectional and got == (num_layers, batch, hidden):
            cause = "a bidirectional RNN keeps one state per direction: num_layers * 2."
        assert_equal_values(f"hidden_state_shape({text})", got, expected, name="shape", cause=cause)
    report("hidden_state_shape", len(cases), None, "the shapes nn.GRU and nn.LSTM return")


def _check_gru_quiz(answer) -> None:
    """The quiz of Udacity's RNN lesson: h_n's shape for nn.GRU(100, 20, 1, batch_first=True) on
    batches of 3."""
    expected = _true_hidden_shape(1, 3, 20, False, kind=nn.GRU, input_size=100)
    got = _plain_shape(answer)
    if not (isinstance(got, tuple) and len(got) == 3 and all(type(d) is int for d in got)):
        fail("gru_quiz_answer", f"should be a tuple of three ints, got {answer!r}")
    assert_equal_values(
        "gru_quiz_answer",
        got,
        expected,
        name="shape",
        cause="the hidden state is (num_layers * directions, batch, hidden_size),"
        " whatever batch_first says.",
    )
    report("gru_quiz_answer", 1)


GRADIENT_CHOICES = ("vanishes", "explodes", "stays constant")


def measured_gradient_behaviour(weight_scale: float, seq_length: int = 40) -> str:
    """What the experiment shows for ``weight_scale``, measured with torch.nn.RNNCell."""

    def torch_cell(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    norms = gradient_norms_through_time(torch_cell, weight_scale, seq_length=seq_length)
    ratio = float(norms[-1])
    if ratio < 1e-2:
        return "vanishes"
    if ratio > 1e2:
        return "explodes"
    return "stays constant"


def _check_gradient_answers(small_weights_gradient, large_weights_gradient) -> None:
    """The learner's reading of the vanishing/exploding plot matches the measurement."""
    for name, answer, scale in (
        ("small_weights_gradient", small_weights_gradient, 0.7),
        ("large_weights_gradient", large_weights_gradient, 1.3),
    ):
        answer = assert_choice(name, answer, GRADIENT_CHOICES)
        truth = measured_gradient_behaviour(scale)
        if answer != truth:
            fail(
                name,
                f"your answer {answer!r} is not what the plot shows for weight_scale "
                f"{scale}: look at how the curve moves as the distance in time grows.",
            )
    report("gradient questions", 2)


#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    Exercise(
        "rnn_cell",
        "check_rnn_cell",
        _check_rnn_cell,
        reads=("rnn_cell",),
        visible={"sizes": ((3, 4, 5), (2, 6, 3)), "seed": 0},
        hidden={"sizes": ((1, 1, 1), (5, 2, 7), (4, 9, 6)), "seed": 1234},
    ),
    Exercise(
        "rnn_forward",
        "check_rnn_forward",
        _check_rnn_forward,
        reads=("rnn_forward",),
        visible={"sizes": ((2, 5, 3, 4), (3, 2, 4, 2)), "seed": 10},
        hidden={"sizes": ((1, 1, 1, 1), (4, 7, 2, 3), (2, 12, 5, 1)), "seed": 4321},
        prerequisite="rnn_cell",
    ),
    Exercise(
        "hidden_state_shape",
        "check_hidden_state_shape",
        _check_hidden_state_shape,
        reads=("hidden_state_shape",),
        visible={"cases": ((1, 3, 20, False), (2, 4, 8, False), (2, 5, 6, True))},
        hidden={"cases": ((3, 1, 1, True), (4, 7, 2, False), (1, 2, 9, True))},
    ),
    Exercise(
        "gru_quiz_answer",
        "check_gru_quiz",
        _check_gru_quiz,
        reads=("gru_quiz_answer",),
        visible={},
        grade_id="gru_quiz_check",
    ),
    Exercise(
        "gradient_answers",
        "check_gradient_answers",
        _check_gradient_answers,
        reads=("small_weights_gradient", "large_weights_gradient"),
        visible={},
    ),
)
check_rnn_cell = EXERCISES["rnn_cell"].checker()
check_rnn_forward = EXERCISES["rnn_forward"].checker()
check_hidden_state_shape = EXERCISES["hidden_state_shape"].checker()
check_gru_quiz = EXERCISES["gru_quiz_answer"].checker()
check_gradient_answers = EXERCISES["gradient_answers"].checker()
