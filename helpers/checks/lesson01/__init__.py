"""Checks for lesson 01, against torch.nn.RNNCell, torch.nn.RNN, torch.nn.GRU,
torch.autograd (back-propagation through time), torch.nn.utils.clip_grad_norm_,
torch.nn.functional.cross_entropy and torch.optim.Adagrad.

Each exercise is declared: its cases as named records, its reference, and its known mistakes as
lists of :class:`helpers.checks.engine.Mistake`. The modules: ``cells`` (rnn_cell, rnn_forward,
the state's shapes), ``backward`` (one step and through time), ``clipping`` (clip_grad_norm and
the plots' questions) and ``capstone`` (softmax_cross_entropy, adagrad_update).
"""

from __future__ import annotations

from helpers.checks.engine import Exercise, exercise_table
from helpers.checks.lesson01.backward import _check_rnn_backward, _check_rnn_cell_backward
from helpers.checks.lesson01.capstone import (
    AdagradCase,
    CrossEntropyCase,
    _check_adagrad_update,
    _check_softmax_cross_entropy,
)
from helpers.checks.lesson01.cells import (
    CellSize,
    GruCase,
    SequenceSize,
    StateShapeCase,
    _check_gru_quiz,
    _check_hidden_state_shape,
    _check_rnn_cell,
    _check_rnn_forward,
    _rnn_case,
)
from helpers.checks.lesson01.clipping import (
    ClipCase,
    _check_clip_grad_norm,
    _check_clipping_answer,
    _check_gradient_answers,
    measured_gradient_behaviour,
    measured_lower_final_loss,
)

#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    Exercise(
        "rnn_cell",
        "check_rnn_cell",
        _check_rnn_cell,
        reads=("rnn_cell",),
        visible={
            "sizes": (
                CellSize(batch=3, input_size=4, hidden_size=5),
                CellSize(2, 6, 3),
                CellSize(2, 3, 3),
            ),
            "seed": 0,
        },
        hidden={
            "sizes": (CellSize(1, 1, 1), CellSize(5, 2, 7), CellSize(4, 9, 6), CellSize(3, 5, 5)),
            "seed": 1234,
        },
    ),
    Exercise(
        "rnn_forward",
        "check_rnn_forward",
        _check_rnn_forward,
        reads=("rnn_forward",),
        visible={
            "sizes": (
                SequenceSize(batch=2, seq_length=5, input_size=3, hidden_size=4),
                SequenceSize(3, 2, 4, 2),
            ),
            "seed": 10,
        },
        hidden={
            "sizes": (
                SequenceSize(1, 1, 1, 1),
                SequenceSize(4, 7, 2, 3),
                SequenceSize(2, 12, 5, 1),
            ),
            "seed": 4321,
        },
        prerequisite="rnn_cell",
    ),
    Exercise(
        "hidden_state_shape",
        "check_hidden_state_shape",
        _check_hidden_state_shape,
        reads=("hidden_state_shape",),
        visible={
            "cases": (
                StateShapeCase(num_layers=1, batch_size=3, hidden_size=20, bidirectional=False),
                StateShapeCase(2, 4, 8, False),
                StateShapeCase(2, 5, 6, True),
            )
        },
        hidden={
            "cases": (
                StateShapeCase(3, 1, 1, True),
                StateShapeCase(4, 7, 2, False),
                StateShapeCase(1, 2, 9, True),
            )
        },
    ),
    Exercise(
        "gru_quiz_answer",
        "check_gru_quiz",
        _check_gru_quiz,
        reads=("gru_quiz_answer",),
        visible={
            "cases": (
                GruCase(
                    input_size=100,
                    hidden_size=20,
                    num_layers=1,
                    batch_first=True,
                    bidirectional=False,
                    batch_size=3,
                ),
            )
        },
        hidden={
            "cases": (
                GruCase(7, 5, 2, False, False, 1),
                GruCase(3, 4, 3, True, True, 2),
                GruCase(1, 1, 1, False, True, 6),
                GruCase(10, 30, 2, True, False, 4),
            )
        },
        grade_id="gru_quiz_check",
    ),
    Exercise(
        "gradient_answers",
        "check_gradient_answers",
        _check_gradient_answers,
        reads=("small_weights_gradient", "large_weights_gradient"),
        visible={},
    ),
    Exercise(
        "rnn_cell_backward",
        "check_rnn_cell_backward",
        _check_rnn_cell_backward,
        reads=("rnn_cell_backward",),
        visible={
            "sizes": (CellSize(3, 4, 5), CellSize(2, 3, 3), CellSize(1, 2, 1)),
            "seed": 20,
        },
        hidden={
            "sizes": (CellSize(1, 1, 1), CellSize(5, 6, 2), CellSize(4, 2, 7), CellSize(2, 5, 5)),
            "seed": 2468,
        },
    ),
    Exercise(
        "rnn_backward",
        "check_rnn_backward",
        _check_rnn_backward,
        reads=("rnn_backward",),
        visible={
            "sizes": (SequenceSize(2, 5, 3, 4), SequenceSize(1, 1, 2, 3), SequenceSize(3, 4, 2, 1)),
            "seed": 30,
        },
        hidden={
            "sizes": (
                SequenceSize(1, 1, 1, 1),
                SequenceSize(4, 7, 2, 3),
                SequenceSize(2, 9, 5, 5),
                SequenceSize(3, 2, 6, 1),
            ),
            "seed": 1357,
        },
        prerequisite="rnn_cell_backward",
    ),
    Exercise(
        "clip_grad_norm",
        "check_clip_grad_norm",
        _check_clip_grad_norm,
        reads=("clip_grad_norm",),
        visible={
            "cases": (
                ClipCase(shapes=((3, 4), (5,), (2, 2, 3)), scale=2.0, max_norm=1.0),
                ClipCase(((4,), (2, 3)), 0.05, 5.0),
                ClipCase((), 1.0, 1.0),
                ClipCase(((3,), (2, 2)), 0.0, 1.0),
            ),
            "seed": 40,
        },
        hidden={
            "cases": (
                ClipCase(((6,), (), (3, 1, 2)), 5.0, 0.5),
                ClipCase(((2, 5),), 0.1, 2.0),
                ClipCase(((7, 3), (3,)), 30.0, 10.0),
                ClipCase((), 1.0, 0.1),
                ClipCase(((1,),), 0.0, 3.0),
            ),
            "seed": 8642,
        },
    ),
    Exercise(
        "clipping_answer",
        "check_clipping_answer",
        _check_clipping_answer,
        reads=("lower_final_loss",),
        visible={},
    ),
    Exercise(
        "softmax_cross_entropy",
        "check_softmax_cross_entropy",
        _check_softmax_cross_entropy,
        reads=("softmax_cross_entropy",),
        visible={
            "cases": (
                CrossEntropyCase(n=4, v=5, scale=1.0),
                CrossEntropyCase(1, 3, 2.0),
                CrossEntropyCase(6, 4, 1000.0),
            ),
            "seed": 50,
        },
        hidden={
            "cases": (
                CrossEntropyCase(7, 2, 1.0),
                CrossEntropyCase(3, 9, 30.0),
                CrossEntropyCase(1, 6, 1000.0),
                CrossEntropyCase(5, 1, 1.0),
            ),
            "seed": 9753,
        },
    ),
    Exercise(
        "adagrad_update",
        "check_adagrad_update",
        _check_adagrad_update,
        reads=("adagrad_update",),
        visible={
            "cases": (
                AdagradCase(shapes=((3, 4), (5,)), n_steps=3, lr=0.1, eps=None),
                AdagradCase(((2, 2),), 3, 0.5, 0.5),
            ),
            "seed": 60,
        },
        hidden={
            "cases": (
                AdagradCase(((1,), (4, 3), (2, 1, 2)), 4, 0.05, None),
                AdagradCase(((6,),), 3, 1.0, 0.3),
            ),
            "seed": 8024,
        },
    ),
)
check_rnn_cell = EXERCISES["rnn_cell"].checker()
check_rnn_forward = EXERCISES["rnn_forward"].checker()
check_hidden_state_shape = EXERCISES["hidden_state_shape"].checker()
check_gru_quiz = EXERCISES["gru_quiz_answer"].checker()
check_gradient_answers = EXERCISES["gradient_answers"].checker()
check_rnn_cell_backward = EXERCISES["rnn_cell_backward"].checker()
check_rnn_backward = EXERCISES["rnn_backward"].checker()
check_clip_grad_norm = EXERCISES["clip_grad_norm"].checker()
check_clipping_answer = EXERCISES["clipping_answer"].checker()
check_softmax_cross_entropy = EXERCISES["softmax_cross_entropy"].checker()
check_adagrad_update = EXERCISES["adagrad_update"].checker()

__all__ = [
    "EXERCISES",
    "_rnn_case",
    "check_adagrad_update",
    "check_clip_grad_norm",
    "check_clipping_answer",
    "check_gradient_answers",
    "check_gru_quiz",
    "check_hidden_state_shape",
    "check_rnn_backward",
    "check_rnn_cell",
    "check_rnn_cell_backward",
    "check_rnn_forward",
    "check_softmax_cross_entropy",
    "measured_gradient_behaviour",
    "measured_lower_final_loss",
]
