"""Lesson 02's ``lstm_forward``: one layer against ``nn.LSTM(batch_first=True)``, two stacked
against a two-layer ``nn.LSTM``, with the mistakes of carrying the state from step to step."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from helpers.checks.core import assert_close, call, fail, report
from helpers.checks.engine import Mistake, causes, checked, records
from helpers.checks.lesson02.cells import (
    CELL_WRONG_CELLS,
    F64,
    _lstm,
    _pair,
    _random_params,
    as_mistakes,
    mistaken_cell,
)

REFERENCE = "torch.nn.LSTM(batch_first=True)"
STACKED_REFERENCE = "torch.nn.LSTM(num_layers=2, batch_first=True)"
STACKED = "lstm_forward (two layers stacked: layer 2 reads layer 1's outputs)"


class SequenceSize(NamedTuple):
    """The sizes of one random sequence case."""

    batch: int
    seq: int
    input_size: int
    hidden_size: int


class Run(NamedTuple):
    """One layer's sequence: events (batch, seq, input), initial stm h0 and ltm c0, parameters."""

    events: torch.Tensor
    h0: torch.Tensor
    c0: torch.Tensor
    params: tuple


def _torch_lstm(params_per_layer, input_size, hidden_size):
    """An ``nn.LSTM(batch_first=True)`` in float64 holding the given parameters, layer by layer."""
    layers = len(params_per_layer)
    lstm = nn.LSTM(input_size, hidden_size, num_layers=layers, batch_first=True, dtype=F64)
    with torch.no_grad():
        for layer, params in enumerate(params_per_layer):
            for name, value in zip(
                ("weight_ih", "weight_hh", "bias_ih", "bias_hh"), params, strict=True
            ):
                getattr(lstm, f"{name}_l{layer}").copy_(value)
    return lstm


def _unroll(cell, events, h, c, params):
    outputs, ltms = [], []
    for t in range(events.shape[1]):
        h, c = cell(events[:, t], h, c, params)
        outputs.append(h)
        ltms.append(c)
    return torch.stack(outputs, dim=1), torch.stack(ltms, dim=1)


def _sequence_case(batch, seq, input_size, hidden_size, seed, layers=1):
    g = torch.Generator().manual_seed(seed)
    params = [
        _random_params(g, 4, input_size if k == 0 else hidden_size, hidden_size)
        for k in range(layers)
    ]
    events = torch.randn(batch, seq, input_size, generator=g, dtype=F64)
    stm = torch.randn(layers, batch, hidden_size, generator=g, dtype=F64)
    ltm = torch.randn(layers, batch, hidden_size, generator=g, dtype=F64) * 1.5
    return events, stm, ltm, params


# --------------------------------------------------------------------------- common mistakes


def _parts(out, ltms):
    """(outputs, stm_n, ltm_n) of an unrolled sequence."""
    return out, out[:, -1], ltms[:, -1]


def _unrolled(run: Run, cell=_lstm, h0=None, c0=None):
    h0 = run.h0 if h0 is None else h0
    c0 = run.c0 if c0 is None else c0
    return _unroll(cell, run.events, h0, c0, run.params)


def _stuck(carried):
    """A sequence whose steps carry only the parts of the state named in ``carried``."""

    def answer(run: Run):
        h0, c0 = run.h0, run.c0
        return _parts(
            *_unrolled(
                run,
                lambda x, h, c, p: _lstm(
                    x, h if "stm" in carried else h0, c if "ltm" in carried else c0, p
                ),
            )
        )

    return answer


_EACH_STEP = "; each step must start from the (new_stm, new_ltm) of the step before."

#: Mistakes of the whole sequence, as (outputs, stm_n, ltm_n).
_SEQUENCE_MISTAKES = (
    Mistake(
        "state not carried",
        _stuck(()),
        "the state is not carried: every step starts again from the initial (stm, ltm)"
        + _EACH_STEP,
    ),
    Mistake(
        "ltm not carried",
        _stuck(("stm",)),
        "the LTM is not carried: every step gets the initial ltm again" + _EACH_STEP,
    ),
    Mistake(
        "stm not carried",
        _stuck(("ltm",)),
        "the STM is not carried: every step gets the initial stm again" + _EACH_STEP,
    ),
    Mistake(
        "initial state ignored",
        lambda run: _parts(
            *_unrolled(run, h0=torch.zeros_like(run.h0), c0=torch.zeros_like(run.c0))
        ),
        "the initial state (stm, ltm) is ignored: the first step must start from "
        "it, not from zeros.",
    ),
)


def _forward_mistakes(part: int, *own: Mistake) -> tuple[Mistake, ...]:
    """The mistakes of ``lstm_forward``'s outputs (part 0), stm_n (1) or ltm_n (2)."""
    wrong_cells = as_mistakes(
        CELL_WRONG_CELLS,
        lambda w, run: _parts(
            *_unrolled(run, lambda x, h, c, p, w=w: mistaken_cell(w, x, h, c, p))
        )[part],
    )
    sequence = tuple(
        Mistake(m.name, lambda run, m=m: m.recognise(run)[part], m.tell) for m in _SEQUENCE_MISTAKES
    )
    return (*wrong_cells, *sequence, *own)


def _final(part: int) -> tuple[Mistake, ...]:
    """The mistakes of the final pair: stm_n (part 1) or ltm_n (part 2)."""
    return _forward_mistakes(
        part,
        Mistake(
            "first step's state",
            lambda run: _unrolled(run)[part - 1][:, 0],
            "the final state is the first step's; it should be the last step's.",
        ),
        Mistake(
            "final pair swapped",
            lambda run: _unrolled(run)[2 - part][:, -1],
            "the final pair is in the wrong order: return (stm_n, ltm_n).",
        ),
    )


#: The mistakes of outputs, stm_n and ltm_n, by part.
FORWARD_MISTAKES = (
    _forward_mistakes(
        0,
        Mistake(
            "ltm as outputs",
            lambda run: _unrolled(run)[1],
            "outputs holds the LTM of every step; nn.LSTM's output is the STM "
            "(hidden state h) of every step.",
        ),
        Mistake(
            "reversed", lambda run: _unrolled(run)[0].flip(1), "outputs is in reversed time order."
        ),
    ),
    _final(1),
    _final(2),
)

NAMES = ("outputs (batch, seq, hidden)", "stm_n (batch, hidden)", "ltm_n (batch, hidden)")
STACKED_NAMES = ("outputs of layer 2", "stm_n of both layers", "ltm_n of both layers")


def _unpack_forward(exercise, got, inputs):
    got = _pair(exercise, got, "(outputs, (stm_n, ltm_n))", inputs)
    final = got[1]
    if not isinstance(final, tuple | list) or len(final) != 2:
        fail(
            exercise,
            f"the second element should be the pair (stm_n, ltm_n), got {type(final).__name__}",
            inputs,
        )
    return got[0], final[0], final[1]


def _one_layer(lstm_forward, size: SequenceSize, seed: int) -> float:
    """One layer against ``nn.LSTM``: the largest difference."""
    events, stm, ltm, params = _sequence_case(*size, seed)
    run = Run(events, stm[0], ltm[0], params[0])
    inputs = {"events": events, "stm": run.h0, "ltm": run.c0, "weight_ih": run.params[0]}
    got = _unpack_forward(
        "lstm_forward",
        call("lstm_forward", lstm_forward, events, (run.h0, run.c0), run.params, inputs=inputs),
        inputs,
    )
    with torch.no_grad():
        out, (h_n, c_n) = _torch_lstm([run.params], size.input_size, size.hidden_size)(
            events, (run.h0[None], run.c0[None])
        )
    worst = 0.0
    for part, expected in enumerate((out, h_n[0], c_n[0])):
        worst = max(
            worst,
            checked(
                "lstm_forward",
                got[part],
                expected,
                lambda part=part: causes(FORWARD_MISTAKES[part], run),
                inputs=inputs,
                name=NAMES[part],
                reference=REFERENCE,
            ),
        )
    return worst


def _two_layers(lstm_forward, size: SequenceSize, seed: int) -> float:
    """Two calls stacked against a two-layer ``nn.LSTM``: the largest difference."""
    events, stm, ltm, params = _sequence_case(*size, seed, layers=2)
    inputs = {"events": events, "stm (per layer)": stm, "ltm (per layer)": ltm}
    layer_input, finals = events, []
    for layer in range(2):
        result = _unpack_forward(
            "lstm_forward (stacked)",
            call(
                "lstm_forward (stacked)",
                lstm_forward,
                layer_input,
                (stm[layer], ltm[layer]),
                params[layer],
                inputs=inputs,
            ),
            inputs,
        )
        layer_input = result[0]
        finals.append(result[1:])
    with torch.no_grad():
        out, (h_n, c_n) = _torch_lstm(params, size.input_size, size.hidden_size)(events, (stm, ltm))
    worst = 0.0
    for part, got, expected in (
        (0, layer_input, out),
        (1, torch.stack([f[0] for f in finals]), h_n),
        (2, torch.stack([f[1] for f in finals]), c_n),
    ):
        worst = max(
            worst,
            assert_close(
                STACKED,
                got,
                expected,
                inputs=inputs,
                name=STACKED_NAMES[part],
                reference=STACKED_REFERENCE,
            ),
        )
    return worst


def _check_lstm_forward(lstm_forward, *, sizes, stacked_sizes, seed: int) -> None:
    """``lstm_forward(events, (stm, ltm), params) -> (outputs, (stm_n, ltm_n))`` equals a
    one-layer ``nn.LSTM(batch_first=True)``; two of them stacked equal a two-layer ``nn.LSTM``.

    ``sizes`` and ``stacked_sizes`` hold ``SequenceSize(batch, seq, input_size, hidden_size)``.
    """
    worst = 0.0
    for k, size in enumerate(records(SequenceSize, sizes)):
        worst = max(worst, _one_layer(lstm_forward, size, seed + k))
    for k, size in enumerate(records(SequenceSize, stacked_sizes)):
        worst = max(worst, _two_layers(lstm_forward, size, seed + 100 + k))
    report("lstm_forward", len(sizes) + len(stacked_sizes), worst, "torch.nn.LSTM (1 and 2 layers)")
