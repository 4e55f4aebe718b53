"""Checks for lesson 02, against torch.nn.LSTMCell, nn.LSTM and nn.GRUCell.

Every expected value comes from PyTorch's own cells: ``torch.lstm_cell`` and ``torch.gru_cell``,
the kernels behind ``nn.LSTMCell`` / ``nn.GRUCell`` (and ``nn.LSTM`` itself for whole sequences).
One gate is read out of those cells by fixing the other gates (``helpers.lstm.fix_gate``), and the
answers of common mistakes (rows swapped, one bias, a transposed weight, tanh and sigmoid swapped)
are made the same way, from modified parameters, so that a failure can say which mistake it sees.
This package never writes the gate equations.

The backward pass of one step (``lstm_cell_backward``) is checked against ``torch.autograd``
through ``torch.lstm_cell``; its common mistakes are made by autograd too (see ``backward``).

Each exercise is declared: its cases as named records (``CellSize``, ``SequenceSize``,
``ParamCountCase``, ``GradientExperiment``), its reference, and its known mistakes as a list of
:class:`helpers.checks.engine.Mistake`. The modules: ``cells`` (cases, PyTorch's cells, the
gates and the cell), ``forward`` (sequences), ``backward``, ``gru``, ``peephole`` and
``questions`` (the parameter count and the LTM-gradient answers).
"""

from __future__ import annotations

from helpers.checks.engine import Exercise, exercise_table
from helpers.checks.lesson02.backward import (
    _backward_case,
    _check_lstm_cell_backward,
    backward_reference,
)
from helpers.checks.lesson02.cells import (
    CellSize,
    _check_forget_gate,
    _check_learn_gate,
    _check_lstm_cell,
    _check_use_gate,
    make_case,
)
from helpers.checks.lesson02.forward import SequenceSize, _check_lstm_forward
from helpers.checks.lesson02.gru import _check_gru_cell
from helpers.checks.lesson02.peephole import _check_peephole_lstm_cell, peephole_reference
from helpers.checks.lesson02.questions import (
    GRADIENT_WEIGHT_SCALE,
    GradientExperiment,
    ParamCountCase,
    _check_lstm_param_count,
    _check_ltm_gradient_answers,
    measured_far_gradients,
)

#: The sizes of the visible and of the hidden cases of the cell checks.
SIZES = (CellSize(batch=3, input_size=4, hidden_size=5), CellSize(2, 3, 3))
HIDDEN_SIZES = (CellSize(1, 1, 1), CellSize(5, 2, 1), CellSize(1, 6, 6), CellSize(4, 7, 2))


def _cell_exercise(name: str, check, seed: int, **hidden) -> Exercise:
    """A cell or gate exercise: ``SIZES`` visible, ``HIDDEN_SIZES`` hidden (seed ``1000 + 10 *
    seed``); ``hidden`` adds keyword arguments to the hidden set."""
    return Exercise(
        name,
        f"check_{name}",
        check,
        reads=(name,),
        visible={"sizes": SIZES, "seed": seed},
        hidden={"sizes": HIDDEN_SIZES, "seed": 1000 + 10 * seed, **hidden},
    )


#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    _cell_exercise("forget_gate", _check_forget_gate, seed=0),
    _cell_exercise("learn_gate", _check_learn_gate, seed=10),
    _cell_exercise("use_gate", _check_use_gate, seed=30),
    _cell_exercise("lstm_cell", _check_lstm_cell, seed=40),
    Exercise(
        "lstm_forward",
        "check_lstm_forward",
        _check_lstm_forward,
        reads=("lstm_forward",),
        visible={
            "sizes": (
                SequenceSize(batch=2, seq=5, input_size=3, hidden_size=4),
                SequenceSize(3, 2, 4, 4),
            ),
            "stacked_sizes": (SequenceSize(2, 4, 3, 5),),
            "seed": 50,
        },
        hidden={
            "sizes": (SequenceSize(1, 1, 1, 1), SequenceSize(4, 6, 2, 1), SequenceSize(1, 3, 5, 5)),
            "stacked_sizes": (SequenceSize(1, 3, 2, 1), SequenceSize(3, 2, 4, 3)),
            "seed": 1500,
        },
    ),
    _cell_exercise("lstm_cell_backward", _check_lstm_cell_backward, seed=80),
    Exercise(
        "ltm_gradient_answers",
        "check_ltm_gradient_answers",
        _check_ltm_gradient_answers,
        reads=("forget_bias_0_gradient", "forget_bias_0_vs_rnn", "forget_bias_1_vs_rnn"),
        # the notebook's experiment
        visible={"cases": (GradientExperiment(hidden_size=16, seq_length=40, seed=0),)},
        hidden={"cases": (GradientExperiment(8, 60, 1), GradientExperiment(32, 30, 2))},
    ),
    _cell_exercise("gru_cell", _check_gru_cell, seed=60),
    # gradcheck (numerical gradients) runs on the visible cases only: it is the slow part
    _cell_exercise("peephole_lstm_cell", _check_peephole_lstm_cell, seed=70, gradcheck=False),
    Exercise(
        "lstm_param_count",
        "check_lstm_param_count",
        _check_lstm_param_count,
        reads=("lstm_param_count",),
        visible={
            "cases": (
                ParamCountCase(input_size=10, hidden_size=20, num_layers=1, bias=True),
                ParamCountCase(3, 5, 2, True),
                ParamCountCase(7, 4, 3, False),
            )
        },
        hidden={
            "cases": (
                ParamCountCase(1, 1, 1, True),
                ParamCountCase(16, 32, 2, False),
                ParamCountCase(5, 3, 4, True),
            )
        },
    ),
)

check_forget_gate = EXERCISES["forget_gate"].checker()
check_learn_gate = EXERCISES["learn_gate"].checker()
check_use_gate = EXERCISES["use_gate"].checker()
check_lstm_cell = EXERCISES["lstm_cell"].checker()
check_lstm_forward = EXERCISES["lstm_forward"].checker()
check_ltm_gradient_answers = EXERCISES["ltm_gradient_answers"].checker()
check_lstm_cell_backward = EXERCISES["lstm_cell_backward"].checker()
check_gru_cell = EXERCISES["gru_cell"].checker()
check_peephole_lstm_cell = EXERCISES["peephole_lstm_cell"].checker()
check_lstm_param_count = EXERCISES["lstm_param_count"].checker()

__all__ = [
    "EXERCISES",
    "GRADIENT_WEIGHT_SCALE",
    "_backward_case",
    "backward_reference",
    "check_forget_gate",
    "check_gru_cell",
    "check_learn_gate",
    "check_lstm_cell",
    "check_lstm_cell_backward",
    "check_lstm_forward",
    "check_lstm_param_count",
    "check_ltm_gradient_answers",
    "check_peephole_lstm_cell",
    "check_use_gate",
    "make_case",
    "measured_far_gradients",
    "peephole_reference",
]
