"""Checks for lesson 04.

``one_hot_encode`` is compared with ``torch.nn.functional.one_hot``; ``CharRNN`` with
``torch.nn.LSTM`` and ``torch.nn.Linear`` run on the model's own weights; ``get_batches`` and
``sample`` are checked through properties (what every correct answer must satisfy), using texts
whose characters are their own positions and stand-in models whose predictions are known;
``unigram_loss`` and ``bigram_loss`` against counts made here with ``np.bincount``;
``train_step`` by what it does to a stand-in model and a counting optimiser, against
``torch.nn.functional.cross_entropy`` and ``torch.autograd.grad`` on a copy of the model.

Each exercise is declared: its cases as named records, its reference, and its known mistakes as
lists of :class:`helpers.checks.engine.Mistake`. The modules: ``batches`` (one_hot_encode,
get_batches), ``model`` (CharRNN), ``sampling`` (sample), ``losses`` (unigram_loss,
bigram_loss) and ``train_step``.
"""

from __future__ import annotations

from helpers.checks.engine import Exercise, exercise_table
from helpers.checks.lesson04.batches import (
    BatchCase,
    OneHotCase,
    _check_get_batches,
    _check_one_hot_encode,
)
from helpers.checks.lesson04.losses import (
    BigramCase,
    UnigramCase,
    _check_bigram_loss,
    _check_unigram_loss,
)
from helpers.checks.lesson04.model import ModelCase, _check_char_rnn
from helpers.checks.lesson04.sampling import _check_sample, _check_sample_on_device
from helpers.checks.lesson04.train_step import _check_train_step

#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    Exercise(
        "one_hot_encode",
        "check_one_hot_encode",
        _check_one_hot_encode,
        reads=("one_hot_encode",),
        visible={
            "cases": (OneHotCase(shape=(3,), n_labels=4), OneHotCase((2, 5), 7)),
            "seed": 0,
        },
        hidden={
            "cases": (OneHotCase((1,), 1), OneHotCase((3, 2, 4), 65), OneHotCase((6,), 10)),
            "seed": 99,
        },
    ),
    Exercise(
        "get_batches",
        "check_get_batches",
        _check_get_batches,
        reads=("get_batches",),
        visible={
            "cases": (
                BatchCase(length=13, batch_size=2, seq_length=3),
                BatchCase(100, 4, 5),
                BatchCase(61, 3, 4),
            ),
            "seed": 0,
        },
        hidden={
            "cases": (
                BatchCase(25, 4, 6),
                BatchCase(1000, 8, 16),
                BatchCase(7, 1, 6),
                BatchCase(64, 1, 1),
            ),
            "seed": 7,
        },
    ),
    Exercise(
        "CharRNN",
        "check_char_rnn",
        _check_char_rnn,
        reads=("CharRNN",),
        visible={
            "cases": (
                ModelCase(vocab_size=7, hidden_size=16, num_layers=1, batch=3, seq_length=5),
                ModelCase(11, 8, 2, 2, 4),
            ),
            "seed": 0,
        },
        hidden={
            "cases": (
                ModelCase(3, 4, 3, 1, 1),
                ModelCase(65, 32, 1, 4, 7),
                ModelCase(5, 6, 2, 1, 9),
            ),
            "seed": 21,
        },
    ),
    Exercise(
        "sample",
        "check_sample",
        _check_sample,
        reads=("sample",),
        visible={"n_draws": 1000, "seed": 0},
        hidden={"n_draws": 1500, "seed": 11},
    ),
    Exercise(
        "unigram_loss",
        "check_unigram_loss",
        _check_unigram_loss,
        reads=("unigram_loss",),
        visible={
            "cases": (UnigramCase(n_train=40, n_val=20, vocab_size=5), UnigramCase(200, 60, 8)),
            "seed": 0,
        },
        hidden={
            "cases": (UnigramCase(1000, 1, 12), UnigramCase(3, 50, 2), UnigramCase(500, 300, 65)),
            "seed": 5,
        },
    ),
    Exercise(
        "bigram_loss",
        "check_bigram_loss",
        _check_bigram_loss,
        reads=("bigram_loss",),
        visible={
            "cases": (
                BigramCase(n_train=60, n_val=30, vocab_size=5, alpha=1.0),
                BigramCase(300, 80, 8, 0.5),
            ),
            "seed": 0,
        },
        hidden={
            "cases": (
                BigramCase(1, 20, 4, 1.0),
                BigramCase(800, 200, 65, 0.1),
                BigramCase(50, 2, 3, 2.0),
                BigramCase(400, 90, 6, 1.0),
            ),
            "seed": 5,
        },
    ),
    Exercise(
        "train_step",
        "check_train_step",
        _check_train_step,
        reads=("train_step",),
        visible={
            "cases": (
                ModelCase(vocab_size=5, hidden_size=6, num_layers=1, batch=3, seq_length=4),
                ModelCase(7, 5, 2, 2, 6),
            ),
            "seed": 0,
        },
        hidden={"cases": (ModelCase(3, 4, 1, 1, 1), ModelCase(11, 8, 2, 4, 3)), "seed": 13},
    ),
)

check_one_hot_encode = EXERCISES["one_hot_encode"].checker()
check_get_batches = EXERCISES["get_batches"].checker()
check_char_rnn = EXERCISES["CharRNN"].checker()
check_sample = EXERCISES["sample"].checker()
check_unigram_loss = EXERCISES["unigram_loss"].checker()
check_bigram_loss = EXERCISES["bigram_loss"].checker()
check_train_step = EXERCISES["train_step"].checker()

__all__ = [
    "EXERCISES",
    "_check_sample_on_device",
    "check_bigram_loss",
    "check_char_rnn",
    "check_get_batches",
    "check_one_hot_encode",
    "check_sample",
    "check_train_step",
    "check_unigram_loss",
]
