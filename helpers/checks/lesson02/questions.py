"""Lesson 02's counting and reading exercises: ``lstm_param_count`` against ``nn.LSTM``'s own
parameters, and the answers about the LTM's gradient against a measurement with PyTorch's cells.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from helpers.checks.core import assert_choice, assert_equal_values, call, fail, report
from helpers.checks.engine import Mistake, records
from helpers.checks.lesson02.cells import _torch_cell
from helpers.experiments import LSTM, gradient_norms_through_time


class ParamCountCase(NamedTuple):
    """The arguments of one ``lstm_param_count`` case."""

    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool


class GradientExperiment(NamedTuple):
    """One measurement of the gradient through time."""

    hidden_size: int
    seq_length: int
    seed: int


def _count(input_size, hidden_size, num_layers, bias) -> int:
    lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, bias=bias, device="meta")
    return sum(p.numel() for p in lstm.parameters())


def _expected(case: ParamCountCase) -> int:
    return _count(*case)


def _one_bias(case: ParamCountCase) -> int:
    with_bias = _count(case.input_size, case.hidden_size, case.num_layers, True)
    without = _count(case.input_size, case.hidden_size, case.num_layers, False)
    return with_bias - (with_bias - without) // 2


def _one_layer(case: ParamCountCase) -> int:
    return _count(case.input_size, case.hidden_size, 1, case.bias)


#: The common wrong counts (``recognise(case)`` is the count the mistake gives).
PARAM_COUNT_MISTAKES = (
    Mistake(
        "one bias",
        _one_bias,
        "one bias per gate counted; PyTorch has two "
        "(bias_ih and bias_hh), each 4 * hidden_size long.",
    ),
    Mistake(
        "bias although bias=False",
        lambda case: _count(case.input_size, case.hidden_size, case.num_layers, True),
        "biases counted although bias=False.",
    ),
    Mistake(
        "every layer reads the input",
        lambda case: case.num_layers * _one_layer(case),
        "every layer counted with input_size inputs; layers after the "
        "first read the previous layer's hidden state (hidden_size inputs).",
    ),
    Mistake(
        "first layer only",
        _one_layer,
        "only the first layer counted: multiply out every one of num_layers.",
    ),
    Mistake(
        "one gate",
        lambda case: _expected(case) // 4,
        "one gate counted: an LSTM has four (i, f, g, o), each with its own weights and biases.",
    ),
    Mistake(
        "three gates",
        lambda case: _expected(case) * 3 // 4,
        "three gate blocks counted: that is a GRU; an LSTM has four.",
    ),
    Mistake(
        "no weight_hh",
        lambda case: _expected(case) - case.num_layers * 4 * case.hidden_size * case.hidden_size,
        "the recurrent weights are missing: every layer has a weight_hh of shape "
        "(4 * hidden_size, hidden_size) too.",
    ),
    Mistake(
        "no weight_ih",
        lambda case: (
            _expected(case)
            - 4 * case.hidden_size * case.input_size
            - (case.num_layers - 1) * 4 * case.hidden_size * case.hidden_size
        ),
        "the input weights are missing: every layer has a weight_ih of shape "
        "(4 * hidden_size, its input size) too.",
    ),
)


def _count_cause(got, case: ParamCountCase) -> str | None:
    """What a wrong count most likely means (equal counts can have two causes)."""
    if type(got) is not int and not isinstance(got, bool):
        return "return a Python int (for example int(total)), not a tensor or NumPy number."
    if got == _expected(case):
        return None
    hints = [m.tell for m in PARAM_COUNT_MISTAKES if m.recognise(case) == got]
    return " Or: ".join(hints) if hints else None


def _check_lstm_param_count(lstm_param_count, *, cases) -> None:
    """``lstm_param_count(input_size, hidden_size, num_layers=1, bias=True)`` equals the number of
    parameters of ``nn.LSTM`` with those arguments. ``cases`` holds ``ParamCountCase`` records."""
    cases = records(ParamCountCase, cases)
    checks = [(case, {"num_layers": case.num_layers, "bias": case.bias}) for case in cases]
    first = cases[0]
    # the defaults: one layer with biases
    checks.append((ParamCountCase(first.input_size, first.hidden_size, 1, True), {}))
    for case, kwargs in checks:
        text = (
            f"lstm_param_count({case.input_size}, {case.hidden_size}"
            + "".join(f", {k}={v}" for k, v in kwargs.items())
            + ")"
        )
        got = call(text, lstm_param_count, case.input_size, case.hidden_size, **kwargs)
        assert_equal_values(text, got, _expected(case), name="count", cause=_count_cause(got, case))
    report("lstm_param_count", len(checks), None, "nn.LSTM's parameter count")


# --------------------------------------------------------------------------- the LTM's gradient

#: The recurrent weight scale of the gradient experiment: lesson 01's vanishing case.
GRADIENT_WEIGHT_SCALE = 0.7
GRADIENT_CHOICES = ("vanishes", "explodes", "stays constant")
COMPARISON_CHOICES = ("more", "less")


def _rnn_reference(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """nn.RNNCell's kernel (tanh): lesson 01's RNN step."""
    return torch.rnn_tanh_cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh)


def measured_far_gradients(hidden_size: int, seq_length: int, seed: int) -> dict:
    """The gradient of the last output ``seq_length - 1`` steps back, relative to the last step,
    measured with PyTorch's cells: ``{"rnn": w.r.t. the RNN's h, 0.0 and 1.0: w.r.t. the LSTM's
    LTM c with that forget bias}``, all with recurrent weights of scale 0.7."""
    common = {"seq_length": seq_length, "hidden_size": hidden_size, "seed": seed}
    far = {"rnn": gradient_norms_through_time(_rnn_reference, GRADIENT_WEIGHT_SCALE, **common)}
    for bias in (0.0, 1.0):
        far[bias] = gradient_norms_through_time(
            _torch_cell, GRADIENT_WEIGHT_SCALE, kind=LSTM, wrt="c", forget_bias=bias, **common
        )
    return {key: float(norms[-1]) for key, norms in far.items()}


def _behaviour(ratio: float) -> str:
    if ratio < 1e-2:
        return "vanishes"
    if ratio > 1e2:
        return "explodes"
    return "stays constant"


def _check_ltm_gradient_answers(
    forget_bias_0_gradient, forget_bias_0_vs_rnn, forget_bias_1_vs_rnn, *, cases
) -> None:
    """The learner's reading of the LTM-gradient plot matches the measurement, made here with
    ``torch.lstm_cell`` and ``torch.rnn_tanh_cell``. ``cases`` holds ``(hidden_size,
    seq_length, seed)``: the notebook's experiment, or (hidden) others where the same holds."""
    answers = {
        "forget_bias_0_gradient": assert_choice(
            "forget_bias_0_gradient", forget_bias_0_gradient, GRADIENT_CHOICES
        ),
        "forget_bias_0_vs_rnn": assert_choice(
            "forget_bias_0_vs_rnn", forget_bias_0_vs_rnn, COMPARISON_CHOICES
        ),
        "forget_bias_1_vs_rnn": assert_choice(
            "forget_bias_1_vs_rnn", forget_bias_1_vs_rnn, COMPARISON_CHOICES
        ),
    }
    for hidden_size, seq_length, seed in records(GradientExperiment, cases):
        far = measured_far_gradients(hidden_size, seq_length, seed)
        truth = {
            "forget_bias_0_gradient": _behaviour(far[0.0]),
            "forget_bias_0_vs_rnn": "more" if far[0.0] > far["rnn"] else "less",
            "forget_bias_1_vs_rnn": "more" if far[1.0] > far["rnn"] else "less",
        }
        where = (
            f"a sequence of {seq_length} steps, hidden size {hidden_size}, seed {seed}, "
            f"weight_scale {GRADIENT_WEIGHT_SCALE}"
        )
        for name, answer in answers.items():
            if answer != truth[name]:
                fail(
                    name,
                    f"your answer {answer!r} is not what the measurement shows on {where}: "
                    "compare the curves at the largest distance (the right end of the plot; "
                    "the y axis is logarithmic).",
                )
    report("LTM gradient questions", len(cases), None, "the measurement with PyTorch's cells")
