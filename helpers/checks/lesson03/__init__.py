"""Checks for lesson 03: ``SimpleRNN``, ``train_rnn``, ``forecast`` and
``marker_sensitivity``, judged by behaviour.

``SimpleRNN`` is run against its own ``torch.nn.RNN`` and ``torch.nn.Linear`` layers and probed
for the properties the lesson needs (``model``); ``train_rnn`` is run on a fresh ``SimpleRNN``
wrapped in a recorder that watches every training step (``training``); ``forecast`` is run on a
fixed random RNN of the check's own and compared with a private reference rollout
(``forecast``); ``marker_sensitivity`` is compared with central differences on the check's own
models (``sensitivity``). Each exercise is declared: its cases as named records, its reference,
and its known mistakes as lists of :class:`helpers.checks.engine.Mistake`.
"""

from __future__ import annotations

from helpers.checks.engine import Exercise, exercise_table
from helpers.checks.lesson03.forecast import ForecastCase, _check_forecast
from helpers.checks.lesson03.model import SimpleRNNCase, _check_simple_rnn
from helpers.checks.lesson03.sensitivity import (
    SensitivityCase,
    _central_difference,
    _check_marker_sensitivity,
    _marked_steps,
)
from helpers.checks.lesson03.training import (
    TRAIN_STEPS,
    TRAIN_THRESHOLD,
    TrainConfig,
    _check_train_rnn,
    check_simple_rnn_quietly,
)

#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    Exercise(
        "SimpleRNN",
        "check_simple_rnn",
        _check_simple_rnn,
        reads=("SimpleRNN",),
        visible={
            "cases": (
                SimpleRNNCase(
                    input_size=1, output_size=1, hidden_dim=32, n_layers=1, batch=4, seq_length=10
                ),
                SimpleRNNCase(3, 2, 5, 2, 3, 7),
            ),
            "seed": 0,
        },
        hidden={
            "cases": (
                SimpleRNNCase(1, 1, 1, 1, 1, 1),
                SimpleRNNCase(2, 3, 6, 3, 5, 4),
                SimpleRNNCase(4, 1, 16, 2, 2, 9),
            ),
            "seed": 321,
        },
    ),
    Exercise(
        "train_rnn",
        "check_train_rnn",
        _check_train_rnn,
        reads=("train_rnn", "SimpleRNN"),
        visible={"configs": (TrainConfig(hidden_dim=32, n_layers=1, seq_length=20, seed=0),)},
        hidden={"configs": (TrainConfig(16, 2, 30, 2),)},
    ),
    Exercise(
        "forecast",
        "check_forecast",
        _check_forecast,
        reads=("forecast",),
        visible={
            "cases": (
                ForecastCase(
                    batch=4, context_length=10, horizon=6, size=1, hidden_dim=8, n_layers=1
                ),
                ForecastCase(3, 5, 4, 2, 5, 2),
            ),
            "seed": 0,
        },
        hidden={
            "cases": (
                ForecastCase(1, 1, 1, 1, 3, 1),
                ForecastCase(2, 7, 9, 3, 6, 1),
                ForecastCase(5, 1, 12, 1, 4, 2),
            ),
            "seed": 77,
        },
    ),
    Exercise(
        "marker_sensitivity",
        "check_marker_sensitivity",
        _check_marker_sensitivity,
        reads=("marker_sensitivity",),
        visible={
            "cases": (
                SensitivityCase(batch=4, seq_length=12, hidden=0, kind="adder"),
                SensitivityCase(3, 10, 5, "GRU"),
            ),
            "seed": 0,
        },
        hidden={
            "cases": (
                SensitivityCase(1, 2, 1, "RNN"),
                SensitivityCase(6, 20, 4, "LSTM"),
                SensitivityCase(5, 7, 0, "adder"),
            ),
            "seed": 40,
        },
    ),
)

check_simple_rnn = EXERCISES["SimpleRNN"].checker()
check_train_rnn = EXERCISES["train_rnn"].checker()
check_forecast = EXERCISES["forecast"].checker()
check_marker_sensitivity = EXERCISES["marker_sensitivity"].checker()

__all__ = [
    "EXERCISES",
    "TRAIN_STEPS",
    "TRAIN_THRESHOLD",
    "_central_difference",
    "_marked_steps",
    "check_forecast",
    "check_marker_sensitivity",
    "check_simple_rnn",
    "check_simple_rnn_quietly",
    "check_train_rnn",
]
