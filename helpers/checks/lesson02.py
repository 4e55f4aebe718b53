"""Checks for lesson 02_lstm_gate_math, against torch.nn.LSTMCell, nn.LSTM and nn.GRUCell.

Every expected value comes from PyTorch's own cells: ``torch.lstm_cell`` and ``torch.gru_cell``,
the kernels behind ``nn.LSTMCell`` / ``nn.GRUCell`` (and ``nn.LSTM`` itself for whole sequences).
One gate is read out of those cells by fixing the other gates (``helpers.lstm.fix_gate``), and the
answers of common mistakes (rows swapped, one bias, a transposed weight, tanh and sigmoid swapped)
are made the same way, from modified parameters, so that a failure can say which mistake it sees.
This module never writes the gate equations.

The backward pass of one step (``lstm_cell_backward``) is checked against ``torch.autograd``
through ``torch.lstm_cell``. Its common mistakes are made by autograd too, never by a written-out
gradient: through a cell whose path from the new LTM to the new STM is cut, whose gate blocks are
read in another order, or whose squashing functions get another derivative (an identity
``autograd.Function`` that bends the gradient of the pre-activations), or by rearranging
autograd's own answer (gate blocks permuted, the bias gradient doubled). Its messages name the
mistake and where the first mismatch is, never the expected value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional

from helpers.checks import remote
from helpers.checks.core import (
    Cause,
    CheckFailure,
    Exercise,
    all_close_at_once,
    assert_choice,
    assert_close,
    assert_equal_values,
    call,
    exercise_table,
    fail,
    report,
    shape_text,
)
from helpers.experiments import LSTM, gradient_norms_through_time
from helpers.lstm import GRU_GATES, LSTM_GATES, SATURATED, fix_gate, gate_rows, read_gates

F64 = torch.float64
LSTM_CELL = "torch.nn.LSTMCell"
GRU_CELL = "torch.nn.GRUCell"


# --------------------------------------------------------------------------- random cases


@dataclass
class Case:
    """One random set of inputs: event x (batch, input), stm h and ltm c (batch, hidden)."""

    x: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor
    params: tuple
    peepholes: tuple = field(default=())

    @property
    def hidden_size(self) -> int:
        return self.h.shape[1]

    @property
    def input_size(self) -> int:
        return self.x.shape[1]


def _random_params(g: torch.Generator, n_gates: int, input_size: int, hidden_size: int) -> tuple:
    """Random weights and random non-zero biases, in PyTorch's layout."""
    rows = n_gates * hidden_size
    return (
        torch.randn(rows, input_size, generator=g, dtype=F64) * 0.7,
        torch.randn(rows, hidden_size, generator=g, dtype=F64) * 0.7,
        torch.randn(rows, generator=g, dtype=F64) * 0.5 + 0.1,
        torch.randn(rows, generator=g, dtype=F64) * 0.5 - 0.1,
    )


def make_case(batch: int, input_size: int, hidden_size: int, seed: int, n_gates: int = 4) -> Case:
    """Random float64 inputs and parameters for one LSTM (``n_gates=4``) or GRU (3) step."""
    g = torch.Generator().manual_seed(seed)
    params = _random_params(g, n_gates, input_size, hidden_size)
    x = torch.randn(batch, input_size, generator=g, dtype=F64)
    h = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    c = torch.randn(batch, hidden_size, generator=g, dtype=F64) * 1.5
    peepholes = tuple(torch.randn(hidden_size, generator=g, dtype=F64) * 0.8 for _ in range(3))
    return Case(x, h, c, params, peepholes)


# --------------------------------------------------------------------------- PyTorch's cells


def _lstm(x, h, c, params):
    """nn.LSTMCell's kernel: returns (new_stm, new_ltm)."""
    return tuple(torch.lstm_cell(x, (h, c), *params))


def _torch_cell(event, state, params):
    return _lstm(event, state[0], state[1], params)


def _gru(x, h, params):
    return torch.gru_cell(x, h, *params)


def _read(params, x, h) -> dict:
    """Gate values of PyTorch's LSTM cell with these parameters at (event x, stm h)."""
    return read_gates(_torch_cell, x, h, params)


# --------------------------------------------------------------------------- modified parameters


def _blocks(params, gates, fn) -> tuple:
    """Apply ``fn(tensor, rows, gate, index)`` to every gate block of every tensor."""
    hidden_size = params[1].shape[1]
    out = [p.detach().clone() for p in params]
    for gate in gates:
        rows = gate_rows(hidden_size, gate, gates)
        for k, (tensor, original) in enumerate(zip(out, params, strict=True)):
            tensor[rows] = fn(original[rows].detach(), gate, k)
    return tuple(out)


def _scale_rows(params, gate, factor, gates=LSTM_GATES):
    return _blocks(params, gates, lambda t, name, _: t * factor if name == gate else t)


def _swap_blocks(params, a, b, gates):
    hidden_size = params[1].shape[1]
    ra, rb = gate_rows(hidden_size, a, gates), gate_rows(hidden_size, b, gates)
    out = [p.detach().clone() for p in params]
    for tensor, original in zip(out, params, strict=True):
        tensor[ra], tensor[rb] = original[rb].detach(), original[ra].detach()
    return tuple(out)


def _copy_block(params, source, target, gates):
    hidden_size = params[1].shape[1]
    rs, rt = gate_rows(hidden_size, source, gates), gate_rows(hidden_size, target, gates)
    out = [p.detach().clone() for p in params]
    for tensor in out:
        tensor[rt] = tensor[rs].clone()
    return tuple(out)


def _zero(params, index):
    out = [p.detach().clone() for p in params]
    out[index] = torch.zeros_like(out[index])
    return tuple(out)


def _transposed(params, index, gates):
    """Each gate block of weight ``index`` (0: weight_ih, 1: weight_hh) transposed, if square."""
    weight = params[index]
    hidden_size = params[1].shape[1]
    if weight.shape[1] != hidden_size:
        return None
    return _blocks(params, gates, lambda t, _, k: t.T if k == index else t)


def _both_transposed(params, gates):
    once = _transposed(params, 0, gates)
    return None if once is None else _transposed(once, 1, gates)


# --------------------------------------------------------------------------- common mistakes

SIGMOID, TANH, IDENTITY = "sigmoid", "tanh", "identity"
_SQUASH = {SIGMOID: torch.sigmoid, TANH: torch.tanh, IDENTITY: lambda t: t}
STANDARD_ROLES = {"i": ("i", SIGMOID), "f": ("f", SIGMOID), "g": ("g", TANH), "o": ("o", SIGMOID)}

SWAPPED_FI = (
    "the forget gate's and the input gate's rows are swapped: PyTorch stacks the gates "
    "as i, f, g, o, so rows 0:H are the input gate i and rows H:2H the forget gate f."
)
ORDER_IFOG = (
    "the gates were taken in the order i, f, o, g, but PyTorch's order is i, f, g, o: "
    "the candidate g is the third block of rows and the output gate o the fourth."
)
ONE_BIAS = (
    "only one bias is used ({missing} is missing): PyTorch's cells add two biases, "
    "bias_ih and bias_hh, to every gate."
)
TRANSPOSED = (
    "a weight is used transposed ({which}): weights are stored (out, in), so each term "
    "is a row batch times the weight's transpose, event @ w_ih.T and stm @ w_hh.T."
)
ACTIVATIONS_SWAPPED = (
    "tanh and sigmoid are swapped: the gates i, f and o are sigmoids (0 to 1: "
    "how much to let through) and the candidate g is a tanh (-1 to 1: what to "
    "write)."
)
ORDER_IGFO = (
    "the gates were taken in the order i, g, f, o (TensorFlow's order), but PyTorch's is i, f, g, "
    "o: the forget gate f is the second block of rows and the candidate g the third."
)
NO_TANH = "tanh is missing: the use gate is o * tanh(new_ltm), not o * new_ltm."
SIGMOID_LTM = "the LTM is squashed with sigmoid: the use gate is o * tanh(new_ltm)."
NO_STM = "the STM is not used: every gate sees the previous STM too, through weight_hh and bias_hh."
NO_EVENT = "the event is not used: every gate sees the event too, through weight_ih and bias_ih."


@dataclass(frozen=True)
class Mistake:
    """A wrong LSTM cell: modified parameters, gates read from the wrong rows or squashed with
    the wrong function, and the use gate's squashing of the LTM."""

    message: str
    transform: Callable | None = None
    roles: dict = field(default_factory=dict)
    final: str = TANH


def lstm_mistakes(params) -> list[Mistake]:
    """The common mistakes that make sense for these parameters (some need square weights)."""
    g = LSTM_GATES
    mistakes = [
        Mistake(SWAPPED_FI, roles={"i": ("f", SIGMOID), "f": ("i", SIGMOID)}),
        Mistake(ORDER_IFOG, roles={"g": ("o", TANH), "o": ("g", SIGMOID)}),
        Mistake(ORDER_IGFO, roles={"f": ("g", SIGMOID), "g": ("f", TANH)}),
        Mistake(ONE_BIAS.format(missing="bias_hh"), lambda p: _zero(p, 3)),
        Mistake(ONE_BIAS.format(missing="bias_ih"), lambda p: _zero(p, 2)),
        Mistake(TRANSPOSED.format(which="w_hh"), lambda p: _transposed(p, 1, g)),
        Mistake(TRANSPOSED.format(which="w_ih"), lambda p: _transposed(p, 0, g)),
        Mistake(TRANSPOSED.format(which="w_ih and w_hh"), lambda p: _both_transposed(p, g)),
        Mistake(
            ACTIVATIONS_SWAPPED,
            roles={"i": ("i", TANH), "f": ("f", TANH), "g": ("g", SIGMOID), "o": ("o", TANH)},
        ),
        Mistake(
            ACTIVATIONS_SWAPPED + " The use gate squashes the LTM with tanh.",
            roles={"i": ("i", TANH), "f": ("f", TANH), "g": ("g", SIGMOID), "o": ("o", TANH)},
            final=SIGMOID,
        ),
        Mistake(NO_STM, lambda p: _zero(p, 1)),
        Mistake(NO_EVENT, lambda p: _zero(p, 0)),
    ]
    return [m for m in mistakes if m.transform is None or m.transform(params) is not None]


def cell_mistakes(params) -> list[Mistake]:
    """``lstm_mistakes`` and the whole cell's own: the use gate's squashing of the new LTM."""
    return [
        *lstm_mistakes(params),
        Mistake(NO_TANH, final=IDENTITY),
        Mistake(SIGMOID_LTM, final=SIGMOID),
    ]


def _squashed(params, x, h, rows: str, squash: str):
    """``squash(pre-activation of block rows)``, read out of PyTorch's cell."""
    natural = TANH if rows == "g" else SIGMOID
    if squash == natural:
        return _read(params, x, h)[rows]
    if natural == SIGMOID:  # tanh(p) = 2 sigmoid(2p) - 1
        return 2 * _read(_scale_rows(params, rows, 2.0), x, h)[rows] - 1
    return (_read(_scale_rows(params, rows, 0.5), x, h)[rows] + 1) / 2  # sigmoid(p)


def mistaken_gates(mistake: Mistake, x, h, params) -> dict:
    """The values i, f, g, o a cell with ``mistake`` computes at (event x, stm h)."""
    if mistake.transform is not None:
        params = mistake.transform(params)
    roles = {**STANDARD_ROLES, **mistake.roles}
    return {role: _squashed(params, x, h, rows, squash) for role, (rows, squash) in roles.items()}


def mistaken_cell(mistake: Mistake, x, h, c, params):
    """(new_stm, new_ltm) of an LSTM cell with ``mistake``."""
    gates = mistaken_gates(mistake, x, h, params)
    new_ltm = gates["f"] * c + gates["i"] * gates["g"]
    return gates["o"] * _SQUASH[mistake.final](new_ltm), new_ltm


def _checked(exercise, got, expected, causes: Callable[[], list], **kwargs) -> float:
    """``assert_close``, building the (slow) list of common mistakes only when it fails."""
    try:
        return assert_close(exercise, got, expected, **kwargs)
    except CheckFailure:
        assert_close(exercise, got, expected, causes=causes(), **kwargs)
        raise


def _pair(exercise, got, names, inputs):
    if not isinstance(got, tuple | list) or len(got) != 2:
        fail(
            exercise,
            f"should return a tuple {names}, got {type(got).__name__}"
            + (f" of length {len(got)}" if isinstance(got, tuple | list) else ""),
            inputs,
        )
    return got


def _lstm_inputs(case: Case, **extra) -> dict:
    return {"event": case.x, "stm": case.h, "ltm": case.c, "weight_ih": case.params[0], **extra}


# --------------------------------------------------------------------------- the gates


def _check_forget_gate(forget_gate, *, sizes, seed: int) -> None:
    """``forget_gate(ltm, stm, event, params) -> ltm * f`` equals nn.LSTMCell's forget gate.

    ``sizes`` holds ``(batch, input_size, hidden_size)`` tuples.
    """
    worst = 0.0
    for k, size in enumerate(sizes):
        case = make_case(*size, seed=seed + k)
        x, h, c, params = case.x, case.h, case.c, case.params
        inputs = _lstm_inputs(case)
        got = call("forget_gate", forget_gate, c, h, x, params, inputs=inputs)
        # Candidate fixed to 0: PyTorch's new LTM is f * ltm + i * 0.
        expected = _lstm(x, h, c, fix_gate(params, "g", 0.0))[1]

        def causes(x=x, h=h, c=c, params=params):
            found = [
                Cause(m.message, c * mistaken_gates(m, x, h, params)["f"])
                for m in lstm_mistakes(params)
            ]
            return [
                *found,
                Cause(
                    "the forget gate's factor f was returned without multiplying the LTM by it.",
                    _read(params, x, h)["f"],
                ),
            ]

        worst = max(
            worst,
            _checked(
                "forget_gate",
                got,
                expected,
                causes,
                inputs=inputs,
                name="kept LTM (batch, hidden)",
                reference=LSTM_CELL,
            ),
        )
    report("forget_gate", len(sizes), worst, LSTM_CELL)


def _check_learn_gate(learn_gate, *, sizes, seed: int) -> None:
    """``learn_gate(stm, event, params) -> i * g`` equals what nn.LSTMCell learns at a step."""
    worst = 0.0
    for k, size in enumerate(sizes):
        case = make_case(*size, seed=seed + k)
        x, h, params = case.x, case.h, case.params
        inputs = _lstm_inputs(case)
        del inputs["ltm"]
        got = call("learn_gate", learn_gate, h, x, params, inputs=inputs)
        # An LTM of zeros: PyTorch's new LTM is f * 0 + i * g.
        expected = _lstm(x, h, torch.zeros_like(h), params)[1]

        def causes(x=x, h=h, params=params):
            found = []
            for m in lstm_mistakes(params):
                gates = mistaken_gates(m, x, h, params)
                found.append(Cause(m.message, gates["i"] * gates["g"]))
            gates = _read(params, x, h)
            return [
                *found,
                Cause("only the candidate g was returned: the learn gate is i * g.", gates["g"]),
                Cause("only the input gate i was returned: the learn gate is i * g.", gates["i"]),
                Cause(
                    "i and g were added: the learn gate multiplies them, i * g.",
                    gates["i"] + gates["g"],
                ),
            ]

        worst = max(
            worst,
            _checked(
                "learn_gate",
                got,
                expected,
                causes,
                inputs=inputs,
                name="learned (batch, hidden)",
                reference=LSTM_CELL,
            ),
        )
    report("learn_gate", len(sizes), worst, LSTM_CELL)


def _use_gate_causes(new_ltm, x, h, params):
    found = []
    for m in lstm_mistakes(params):
        gates = mistaken_gates(m, x, h, params)
        found.append(Cause(m.message, gates["o"] * _SQUASH[m.final](new_ltm)))
    o = _read(params, x, h)["o"]
    return [
        *found,
        Cause(SIGMOID_LTM, o * torch.sigmoid(new_ltm)),
        Cause(NO_TANH, o * new_ltm),
        Cause("only the output gate o was returned: the use gate is o * tanh(new_ltm).", o),
    ]


def _check_use_gate(use_gate, *, sizes, seed: int) -> None:
    """``use_gate(new_ltm, stm, event, params) -> o * tanh(new_ltm)`` equals nn.LSTMCell's STM."""
    worst = 0.0
    for k, size in enumerate(sizes):
        case = make_case(*size, seed=seed + k)
        x, h, new_ltm, params = case.x, case.h, case.c, case.params
        inputs = {"new_ltm": new_ltm, "stm": h, "event": x, "weight_ih": params[0]}
        got = call("use_gate", use_gate, new_ltm, h, x, params, inputs=inputs)
        # Forget gate open, candidate 0: PyTorch's new LTM is the given one, its new STM the
        # use gate's output.
        expected = _lstm(x, h, new_ltm, fix_gate(fix_gate(params, "f", SATURATED), "g", 0.0))[0]
        worst = max(
            worst,
            _checked(
                "use_gate",
                got,
                expected,
                lambda x=x, h=h, c=new_ltm, p=params: _use_gate_causes(c, x, h, p),
                inputs=inputs,
                name="new STM (batch, hidden)",
                reference=LSTM_CELL,
            ),
        )
    report("use_gate", len(sizes), worst, LSTM_CELL)


# --------------------------------------------------------------------------- whole cells


def _cell_causes(case: Case, part: int):
    x, h, c, params = case.x, case.h, case.c, case.params
    found = [
        Cause(m.message, mistaken_cell(m, x, h, c, params)[part]) for m in cell_mistakes(params)
    ]
    new_stm, new_ltm = _lstm(x, h, c, params)
    if part == 0:
        gates = _read(params, x, h)
        found += [
            Cause(
                "the use gate read the old LTM; it must squash the new LTM, after "
                "the remember gate.",
                gates["o"] * torch.tanh(c),
            ),
            Cause(
                "the new STM is the squashed new LTM without the output gate: the use gate "
                "scales it, o * tanh(new_ltm).",
                torch.tanh(new_ltm),
            ),
            Cause(
                "the new STM is the kept LTM (forget gate only) squashed: the use gate squashes "
                "the new LTM, kept plus learned.",
                gates["o"] * torch.tanh(gates["f"] * c),
            ),
        ]
    else:
        gates = _read(params, x, h)
        found += [
            Cause(
                "the new LTM is the kept LTM only: the remember gate adds what the learn gate "
                "learned, f * ltm + i * g.",
                gates["f"] * c,
            ),
            Cause(
                "the new LTM is the learned part only: the remember gate adds the kept LTM, "
                "f * ltm + i * g.",
                gates["i"] * gates["g"],
            ),
            Cause(
                "the kept LTM and the learned part were multiplied: the remember gate adds them.",
                gates["f"] * c * gates["i"] * gates["g"],
            ),
        ]
    found.append(
        Cause(
            "the pair is in the wrong order: return (new_stm, new_ltm).", (new_ltm, new_stm)[part]
        )
    )
    return found


def _check_lstm_step(exercise, fn, case, extra_args=(), reference=LSTM_CELL):
    """Check one ``fn(event, (stm, ltm), params, *extra_args)`` against PyTorch's LSTM cell."""
    inputs = _lstm_inputs(case)
    got = _pair(
        exercise,
        call(exercise, fn, case.x, (case.h, case.c), case.params, *extra_args, inputs=inputs),
        "(new_stm, new_ltm)",
        inputs,
    )
    new_stm, new_ltm = _lstm(case.x, case.h, case.c, case.params)
    worst = _checked(
        exercise,
        got[1],
        new_ltm,
        lambda: _cell_causes(case, 1),
        inputs=inputs,
        name="new_ltm (batch, hidden)",
        reference=reference,
    )
    return max(
        worst,
        _checked(
            exercise,
            got[0],
            new_stm,
            lambda: _cell_causes(case, 0),
            inputs=inputs,
            name="new_stm (batch, hidden)",
            reference=reference,
        ),
    )


def _check_lstm_cell(lstm_cell, *, sizes, seed: int) -> None:
    """``lstm_cell(event, (stm, ltm), params) -> (new_stm, new_ltm)`` equals nn.LSTMCell."""
    worst = 0.0
    for k, size in enumerate(sizes):
        worst = max(worst, _check_lstm_step("lstm_cell", lstm_cell, make_case(*size, seed + k)))
    report("lstm_cell", len(sizes), worst, LSTM_CELL)


# --------------------------------------------------------------------------- sequences


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


def _forward_causes(events, h0, c0, params, part):
    """Wrong answers for outputs (part 0), stm_n (1) or ltm_n (2)."""
    found = []
    for m in cell_mistakes(params):
        out, ltms = _unroll(
            lambda x, h, c, p, m=m: mistaken_cell(m, x, h, c, p), events, h0, c0, params
        )
        found.append(Cause(m.message, (out, out[:, -1], ltms[:, -1])[part]))
    out, ltms = _unroll(_lstm, events, h0, c0, params)
    zero_out, zero_ltms = _unroll(_lstm, events, torch.zeros_like(h0), torch.zeros_like(c0), params)
    for carried, message in (
        ((), "the state is not carried: every step starts again from the initial (stm, ltm)"),
        (("stm",), "the LTM is not carried: every step gets the initial ltm again"),
        (("ltm",), "the STM is not carried: every step gets the initial stm again"),
    ):
        stuck_out, stuck_ltms = _unroll(
            lambda x, h, c, p, carried=carried: _lstm(
                x, h if "stm" in carried else h0, c if "ltm" in carried else c0, p
            ),
            events,
            h0,
            c0,
            params,
        )
        found.append(
            Cause(
                f"{message}; each step must start from the (new_stm, new_ltm) of the step before.",
                (stuck_out, stuck_out[:, -1], stuck_ltms[:, -1])[part],
            )
        )
    found.append(
        Cause(
            "the initial state (stm, ltm) is ignored: the first step must start from "
            "it, not from zeros.",
            (zero_out, zero_out[:, -1], zero_ltms[:, -1])[part],
        )
    )
    if part == 0:
        found += [
            Cause(
                "outputs holds the LTM of every step; nn.LSTM's output is the STM "
                "(hidden state h) of every step.",
                ltms,
            ),
            Cause("outputs is in reversed time order.", out.flip(1)),
        ]
    else:
        found += [
            Cause(
                "the final state is the first step's; it should be the last step's.",
                (out[:, 0], ltms[:, 0])[part - 1],
            ),
            Cause(
                "the final pair is in the wrong order: return (stm_n, ltm_n).",
                (ltms[:, -1], out[:, -1])[part - 1],
            ),
        ]
    return found


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


def _check_lstm_forward(lstm_forward, *, sizes, stacked_sizes, seed: int) -> None:
    """``lstm_forward(events, (stm, ltm), params) -> (outputs, (stm_n, ltm_n))`` equals a
    one-layer ``nn.LSTM(batch_first=True)``; two of them stacked equal a two-layer ``nn.LSTM``.

    ``sizes`` and ``stacked_sizes`` hold ``(batch, seq, input_size, hidden_size)`` tuples.
    """
    worst = 0.0
    reference = "torch.nn.LSTM(batch_first=True)"
    names = ("outputs (batch, seq, hidden)", "stm_n (batch, hidden)", "ltm_n (batch, hidden)")
    for k, (batch, seq, input_size, hidden_size) in enumerate(sizes):
        events, stm, ltm, params = _sequence_case(batch, seq, input_size, hidden_size, seed + k)
        h0, c0, params = stm[0], ltm[0], params[0]
        inputs = {"events": events, "stm": h0, "ltm": c0, "weight_ih": params[0]}
        got = _unpack_forward(
            "lstm_forward",
            call("lstm_forward", lstm_forward, events, (h0, c0), params, inputs=inputs),
            inputs,
        )
        with torch.no_grad():
            out, (h_n, c_n) = _torch_lstm([params], input_size, hidden_size)(
                events, (h0[None], c0[None])
            )
        for part, expected in enumerate((out, h_n[0], c_n[0])):
            worst = max(
                worst,
                _checked(
                    "lstm_forward",
                    got[part],
                    expected,
                    lambda part=part, e=events, h=h0, c=c0, p=params: _forward_causes(
                        e, h, c, p, part
                    ),
                    inputs=inputs,
                    name=names[part],
                    reference=reference,
                ),
            )
    for k, (batch, seq, input_size, hidden_size) in enumerate(stacked_sizes):
        events, stm, ltm, params = _sequence_case(
            batch, seq, input_size, hidden_size, seed + 100 + k, layers=2
        )
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
            out, (h_n, c_n) = _torch_lstm(params, input_size, hidden_size)(events, (stm, ltm))
        stacked_reference = "torch.nn.LSTM(num_layers=2, batch_first=True)"
        for part, got, expected in (
            (0, layer_input, out),
            (1, torch.stack([f[0] for f in finals]), h_n),
            (2, torch.stack([f[1] for f in finals]), c_n),
        ):
            name = ("outputs of layer 2", "stm_n of both layers", "ltm_n of both layers")[part]
            worst = max(
                worst,
                assert_close(
                    "lstm_forward (two layers stacked: layer 2 reads layer 1's outputs)",
                    got,
                    expected,
                    inputs=inputs,
                    name=name,
                    reference=stacked_reference,
                ),
            )
    report("lstm_forward", len(sizes) + len(stacked_sizes), worst, "torch.nn.LSTM (1 and 2 layers)")


# --------------------------------------------------------------------------- the backward pass

#: The six gradients ``lstm_cell_backward`` returns, in order.
BACKWARD_NAMES = ("dx", "dh", "dc", "dweight_ih", "dweight_hh", "dbias")
AUTOGRAD = "torch.autograd through torch.nn.LSTMCell"

NO_TANH_PATH = (
    "the gradient of the new LTM is only dc_next: the new STM is made from the new LTM too "
    "(the use gate squashes it with tanh), so dh_next also reaches the new LTM through that "
    "tanh, and the two contributions add up before going further back."
)
DC_NOT_THROUGH_F = (
    "the returned dc is the gradient of the new LTM, not of the old one: on the way back from "
    "the new LTM to the old one it passes the forget gate's product, which scales it unit by unit "
    "by the forget gate."
)
DC_IS_DC_NEXT = (
    "the returned dc is dc_next passed through: the gradient of the old LTM collects what "
    "reaches the new LTM from both dc_next and dh_next (through the use gate's tanh), then "
    "passes the forget gate's product."
)
TANH_OF_THE_LTM = (
    "the use gate's tanh was differentiated with the new LTM where its output belongs: tanh's "
    "derivative, written with tanh's output, needs tanh(new_ltm), not new_ltm itself."
)
TANH_AT_OLD_LTM = (
    "the use gate's tanh was differentiated at the old LTM: the new STM squashes the new LTM, so "
    "that is where its derivative is taken."
)
O_WITHOUT_TANH = (
    "the output gate's gradient uses the new LTM itself: in the new STM the output gate "
    "multiplies the squashed new LTM, tanh(new_ltm)."
)
SIGMOID_AS_TANH = (
    "the sigmoid gates (i, f, o) were differentiated with tanh's derivative: a sigmoid's "
    "derivative, written with its output, is a different expression (derive it from "
    "sigmoid(a) = 1 / (1 + exp(-a)), as lesson 01 did for tanh)."
)
TANH_AS_SIGMOID = (
    "the candidate g was differentiated with sigmoid's derivative: g is a tanh, and its "
    "derivative is tanh's (lesson 01's RNN step has the same one)."
)
NO_SIGMOID_DERIVATIVE = (
    "the sigmoid's derivative is missing for the gates i, f and o: between a gate's value and "
    "its pre-activation the chain rule multiplies by the derivative of the sigmoid."
)
NO_TANH_DERIVATIVE = (
    "the tanh's derivative is missing for the candidate g: between g and its pre-activation "
    "the chain rule multiplies by the derivative of tanh."
)
BLOCKS_STACKED = (
    "the gate blocks of dweight_ih, dweight_hh and dbias are stacked in the order {order}: the "
    "fused layout is PyTorch's, i, f, g, o, so each gradient's rows line up with the rows of "
    "its parameter."
)
DOUBLED_BIAS = (
    "dbias adds up the gradients of both biases: bias_ih and bias_hh enter every gate the same "
    "way, so their gradients are equal, and dbias is that one gradient, not the sum of the two."
)
AVERAGED = (
    "the weight gradients are divided by the batch size: the loss adds up over the batch (one "
    "term per sequence), so its gradients with respect to shared parameters add up too."
)
NO_DH_NEXT = (
    "dh_next is not used: the new STM is an output of the step too, and what its upstream "
    "gradient dh_next sends back must be part of every gradient."
)
NO_DC_NEXT = (
    "dc_next is not used: the new LTM is an output of the step too (the next step reads it), "
    "and its upstream gradient dc_next adds to what arrives at the new LTM through the new STM."
)
WEIGHT_TRANSPOSED = (
    "{name} is transposed: a gradient has the shape and layout of its parameter, and PyTorch "
    "stores {weight} as (out, in), one row per gate unit."
)


def _backward_case(batch: int, input_size: int, hidden_size: int, seed: int):
    """A random LSTM step (``make_case``) and upstream gradients dh_next, dc_next."""
    case = make_case(batch, input_size, hidden_size, seed)
    g = torch.Generator().manual_seed(seed + 5000)
    dh_next = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    dc_next = torch.randn(batch, hidden_size, generator=g, dtype=F64) * 0.8
    return case, dh_next, dc_next


def _leaves(case: Case) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in (case.x, case.h, case.c, *case.params)]


def _gradients(loss_of, case: Case) -> dict:
    """Autograd's gradients of the scalar ``loss_of(x, h, c, params)`` with respect to x, h, c,
    weight_ih, weight_hh and bias_ih (= bias_hh's), by ``BACKWARD_NAMES``; zeros where no
    gradient arrives."""
    leaves = _leaves(case)
    x, h, c, *params = leaves
    grads = torch.autograd.grad(loss_of(x, h, c, tuple(params)), leaves, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads, strict=True)]
    return dict(zip(BACKWARD_NAMES, grads[:6], strict=False))


def _pre_activation(x, h, params):
    """What PyTorch's LSTM cell feeds its gates, ``(batch, 4 * hidden)``: its two linear maps."""
    w_ih, w_hh, b_ih, b_hh = params
    return functional.linear(x, w_ih, b_ih) + functional.linear(h, w_hh, b_hh)


def _from_pre_activation(pre, c):
    """``(new_stm, new_ltm)`` of PyTorch's LSTM cell from given pre-activations ``pre`` and LTM
    ``c``: ``torch.lstm_cell`` fed ``pre`` through an identity weight (no bias, no STM)."""
    rows, hidden = pre.shape[1], c.shape[1]
    eye = torch.eye(rows, dtype=pre.dtype)
    none = torch.zeros(rows, hidden, dtype=pre.dtype)
    return tuple(torch.lstm_cell(pre, (torch.zeros_like(c), c), eye, none))


def _constant_blocks(pre, **values):
    """``pre`` with the blocks of the named gates replaced by constants (no gradient)."""
    hidden = pre.shape[1] // 4
    blocks = []
    for gate in LSTM_GATES:
        block = pre[:, gate_rows(hidden, gate)]
        blocks.append(torch.full_like(block.detach(), values[gate]) if gate in values else block)
    return torch.cat(blocks, dim=1)


def _reordered_blocks(tensor, order, dim):
    """The gate blocks of ``tensor`` along ``dim`` taken in ``order`` (names of LSTM_GATES)."""
    hidden = tensor.shape[dim] // 4
    return torch.cat(
        [tensor.narrow(dim, gate_rows(hidden, gate).start, hidden) for gate in order], dim=dim
    )


class _BentGradient(torch.autograd.Function):
    """The identity on the pre-activations, whose backward pass multiplies the gradient by
    ``factor``: the gradient a cell gets when a squashing function's derivative is replaced."""

    @staticmethod
    def forward(ctx, pre, factor):
        ctx.save_for_backward(factor)
        return pre.clone()

    @staticmethod
    def backward(ctx, grad):
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def _derivative(squash, pre):
    """The derivative of ``squash`` at ``pre``, elementwise, as autograd computes it."""
    a = pre.detach().clone().requires_grad_(True)
    return torch.autograd.grad(squash(a).sum(), a)[0]


def _bent_factor(pre, sigmoid_rows=None, tanh_rows=None):
    """Per pre-activation: the mistaken derivative over the true one. ``sigmoid_rows`` and
    ``tanh_rows`` map a squashed value to the derivative the mistake uses (None: unchanged)."""
    pre = pre.detach()
    hidden = pre.shape[1] // 4
    factor = torch.ones_like(pre)
    for gate in LSTM_GATES:
        rows = gate_rows(hidden, gate)
        squash, mistaken = (torch.tanh, tanh_rows) if gate == "g" else (torch.sigmoid, sigmoid_rows)
        if mistaken is not None:
            a = pre[:, rows]
            factor[:, rows] = mistaken(squash(a)) / _derivative(squash, a)
    return factor


def _upstream_loss(dh_next, dc_next, step):
    """``<dh_next, new_stm> + <dc_next, new_ltm>`` of ``step(x, h, c, params)``."""

    def loss(x, h, c, params):
        new_stm, new_ltm = step(x, h, c, params)
        return (new_stm * dh_next).sum() + (new_ltm * dc_next).sum()

    return loss


def backward_reference(case: Case, dh_next, dc_next) -> dict:
    """The gradients of one LSTM step by autograd through PyTorch's cell (``torch.lstm_cell``)."""
    return _gradients(_upstream_loss(dh_next, dc_next, _lstm), case)


def _bent_step(factor_of):
    def step(x, h, c, params):
        pre = _pre_activation(x, h, params)
        return _from_pre_activation(_BentGradient.apply(pre, factor_of(pre)), c)

    return step


def _reordered_step(order):
    """A cell that reads its gates i, f, g, o from the blocks of rows named by ``order``."""
    hidden_order = [LSTM_GATES[order.index(gate)] for gate in LSTM_GATES]

    def step(x, h, c, params):
        pre = _reordered_blocks(_pre_activation(x, h, params), hidden_order, dim=1)
        return _from_pre_activation(pre, c)

    return step


def _bent_use_gate(dh_next, dc_next, ltm_factor=None, o_factor=None):
    """The upstream loss of a cell whose use gate sends back a bent gradient: the one from the
    new STM to the new LTM multiplied by ``ltm_factor(new_ltm, ltm)`` (0: that path is cut), the
    one to the output gate's pre-activation by ``o_factor(new_ltm)``."""

    def loss(x, h, c, params):
        pre = _pre_activation(x, h, params)
        new_ltm = _from_pre_activation(pre, c)[1]
        # forget gate open and candidate zero: this cell's new LTM is the one it is given, so
        # it only applies the use gate to the new LTM computed above
        open_only = _constant_blocks(pre, f=SATURATED, g=0.0)
        if o_factor is not None:
            factor = torch.ones_like(pre.detach())
            factor[:, gate_rows(c.shape[1], "o")] = o_factor(new_ltm.detach())
            open_only = _BentGradient.apply(open_only, factor)
        seen = new_ltm
        if ltm_factor is not None:
            seen = _BentGradient.apply(new_ltm, ltm_factor(new_ltm.detach(), c.detach()))
        new_stm = _from_pre_activation(open_only, seen)[0]
        return (new_stm * dh_next).sum() + (new_ltm * dc_next).sum()

    return loss


def _gradient_at_new_ltm(case: Case, dh_next, dc_next):
    """The gradient of the upstream loss with respect to the new LTM itself."""
    with torch.no_grad():
        pre = _pre_activation(case.x, case.h, case.params)
        new_ltm = _lstm(case.x, case.h, case.c, case.params)[1]
    at = new_ltm.clone().requires_grad_(True)
    new_stm = _from_pre_activation(_constant_blocks(pre, f=SATURATED, g=0.0), at)[0]
    loss = (new_stm * dh_next).sum() + (at * dc_next).sum()
    return torch.autograd.grad(loss, at)[0]


def _backward_variants(case: Case, dh_next, dc_next) -> list[tuple[str, dict]]:
    """The usual wrong answers of ``lstm_cell_backward``, as ``(message, {name: value})``,
    each made by autograd through a cell built wrong in that way (or from autograd's answer)."""
    right = backward_reference(case, dh_next, dc_next)
    batch = case.x.shape[0]

    def replaced(**changes):
        return {**right, **changes}

    no_tanh = _gradients(
        _bent_use_gate(dh_next, dc_next, ltm_factor=lambda ltm, _: torch.zeros_like(ltm)), case
    )
    variants = [
        (NO_TANH_PATH, no_tanh),
        (DC_NOT_THROUGH_F, replaced(dc=_gradient_at_new_ltm(case, dh_next, dc_next))),
        (DC_IS_DC_NEXT, {**no_tanh, "dc": dc_next}),
        (DC_IS_DC_NEXT, replaced(dc=dc_next)),
    ]
    for message, bends in (
        (
            TANH_OF_THE_LTM,
            {"ltm_factor": lambda ltm, _: (1 - ltm**2) / _derivative(torch.tanh, ltm)},
        ),
        (
            TANH_AT_OLD_LTM,
            {
                "ltm_factor": lambda ltm, old: (
                    _derivative(torch.tanh, old) / _derivative(torch.tanh, ltm)
                )
            },
        ),
        (O_WITHOUT_TANH, {"o_factor": lambda ltm: ltm / torch.tanh(ltm)}),
    ):
        variants.append((message, _gradients(_bent_use_gate(dh_next, dc_next, **bends), case)))
    for message, sigmoid_rows, tanh_rows in (
        (SIGMOID_AS_TANH, lambda s: 1 - s**2, None),
        (TANH_AS_SIGMOID, None, lambda t: t * (1 - t)),
        (SIGMOID_AS_TANH + " " + TANH_AS_SIGMOID, lambda s: 1 - s**2, lambda t: t * (1 - t)),
        (NO_SIGMOID_DERIVATIVE, lambda s: torch.ones_like(s), None),
        (NO_TANH_DERIVATIVE, None, lambda t: torch.ones_like(t)),
    ):
        step = _bent_step(lambda pre, s=sigmoid_rows, t=tanh_rows: _bent_factor(pre, s, t))
        variants.append((message, _gradients(_upstream_loss(dh_next, dc_next, step), case)))
    for message, order in ((ORDER_IFOG, "ifog"), (ORDER_IGFO, "igfo"), (SWAPPED_FI, "figo")):
        step = _reordered_step(tuple(order))
        variants.append((message, _gradients(_upstream_loss(dh_next, dc_next, step), case)))
        stacked = {
            name: _reordered_blocks(right[name], tuple(order), dim=0)
            for name in ("dweight_ih", "dweight_hh", "dbias")
        }
        variants.append((BLOCKS_STACKED.format(order=", ".join(order)), replaced(**stacked)))
    variants += [
        (DOUBLED_BIAS, replaced(dbias=2 * right["dbias"])),
        (NO_DH_NEXT, _gradients(_upstream_loss(torch.zeros_like(dh_next), dc_next, _lstm), case)),
        (NO_DC_NEXT, _gradients(_upstream_loss(dh_next, torch.zeros_like(dc_next), _lstm), case)),
    ]
    if batch > 1:
        variants.append(
            (
                AVERAGED,
                replaced(**{n: right[n] / batch for n in ("dweight_ih", "dweight_hh", "dbias")}),
            )
        )
    return variants


def _backward_shape_cause(name, shape, want) -> str:
    """What a wrong shape of gradient ``name`` most likely means."""
    weight = name[1:]
    if name.startswith("dweight") and len(shape) == 2 and shape == want[::-1]:
        return WEIGHT_TRANSPOSED.format(name=name, weight=weight)
    if name.startswith("dweight") and len(shape) == 2 and shape[0] * 4 == want[0]:
        return (
            f"{name} has one gate's rows: the fused layout stacks the four gate blocks i, f, g, o "
            f"into one (4 * hidden, ...) gradient, like {weight}."
        )
    if name == "dbias" and len(shape) == 2 and shape[-1] == want[0]:
        return (
            "dbias keeps the batch dimension: a bias is added to every row of the batch, so its "
            "gradient collects all rows, shape (4 * hidden,)."
        )
    if name == "dbias" and shape == (want[0] // 4,):
        return "dbias has one gate's block: it holds the four gate blocks i, f, g, o stacked."
    if name == "dbias" and shape == (2 * want[0],):
        return DOUBLED_BIAS
    return (
        "a gradient has the shape of what it is the gradient of: dx like x, dh like h, dc like c, "
        "dweight_ih like weight_ih (4 * hidden, input), dweight_hh like weight_hh (4 * hidden, "
        "hidden), dbias like bias_ih (4 * hidden,)."
    )


def _quiet(failure: CheckFailure) -> CheckFailure:
    """The failure without the expected value (nor the learner's, from which it follows)."""
    return CheckFailure(re.sub(r", got \S+, expected \S+ \(", " (", str(failure)))


def _assert_gradient(exercise, got, expected, **kwargs) -> float:
    try:
        return assert_close(exercise, got, expected, **kwargs)
    except CheckFailure as failure:
        raise _quiet(failure) from None


def _compare_backward(exercise, got, expected: dict, variants, inputs) -> float:
    expected_list = [expected[n] for n in BACKWARD_NAMES]
    for name, g, e in zip(BACKWARD_NAMES, got, expected_list, strict=True):
        if type(g) is torch.Tensor and tuple(g.shape) != tuple(e.shape):
            fail(
                exercise,
                f"{name} has shape {shape_text(g)}, expected {shape_text(e)}",
                inputs,
                _backward_shape_cause(name, tuple(g.shape), tuple(e.shape)),
            )
    worst = all_close_at_once(exercise, got, expected_list, inputs=inputs, reference=AUTOGRAD)
    if worst is not None:
        return worst
    found = variants()
    worst = 0.0
    for name, g, e in zip(BACKWARD_NAMES, got, expected_list, strict=True):
        causes = [Cause(message, outputs[name]) for message, outputs in found]
        worst = max(
            worst,
            _assert_gradient(
                exercise,
                g,
                e,
                inputs=inputs,
                name=f"{name} {shape_text(e)}",
                reference=AUTOGRAD,
                causes=causes,
            ),
        )
    return worst


def _check_lstm_cell_backward(lstm_cell_backward, *, sizes, seed: int) -> None:
    """``lstm_cell_backward(dh_next, dc_next, x, h, c, params) -> (dx, dh, dc, dweight_ih,
    dweight_hh, dbias)`` equals torch.autograd through ``nn.LSTMCell`` (float64, 1e-10).

    ``sizes`` holds ``(batch, input_size, hidden_size)``. The loss is ``<dh_next, new_stm> +
    <dc_next, new_ltm>``, so autograd's gradients of it are what the exercise computes. The
    learner's function is only called and its answers compared (it may run in another process).
    """
    exercise = "lstm_cell_backward"
    worst = 0.0
    for k, size in enumerate(sizes):
        case, dh_next, dc_next = _backward_case(*size, seed=seed + k)
        inputs = {
            "dh_next": dh_next,
            "dc_next": dc_next,
            "x": case.x,
            "h": case.h,
            "c": case.c,
            "weight_ih": case.params[0],
        }
        try:
            got = call(
                exercise,
                lstm_cell_backward,
                dh_next,
                dc_next,
                case.x,
                case.h,
                case.c,
                case.params,
                inputs=inputs,
                expect=(RuntimeError,),
            )
        except RuntimeError as exc:
            fail(
                exercise,
                f"raised RuntimeError: {exc}",
                inputs,
                "two shapes do not fit: write down the shape of every intermediate gradient "
                "(each has the shape of its value) and of the fused weights (4 * hidden, ...).",
            )
        if not isinstance(got, tuple | list) or len(got) != len(BACKWARD_NAMES):
            fail(
                exercise,
                f"should return a tuple ({', '.join(BACKWARD_NAMES)}), got "
                + (f"{len(got)} values" if isinstance(got, tuple | list) else type(got).__name__),
                inputs,
            )
        expected = backward_reference(case, dh_next, dc_next)
        worst = max(
            worst,
            _compare_backward(
                exercise,
                list(got),
                expected,
                lambda case=case, dh=dh_next, dc=dc_next: _backward_variants(case, dh, dc),
                inputs,
            ),
        )
    report(exercise, len(sizes), worst, AUTOGRAD)


# --------------------------------------------------------------------------- GRU


def _gru_update_and_candidate(params, x, h):
    """The update gate z and the candidate n of PyTorch's GRU cell, read out of the cell.

    With the candidate fixed to 0 the new state is ``z * h``, with it fixed to 1 it is
    ``(1 - z) + z * h``; with the update gate shut the new state is the candidate.
    """
    gates = GRU_GATES
    with_zero = _gru(x, h, fix_gate(params, "n", 0.0, gates))
    with_one = _gru(x, h, fix_gate(params, "n", SATURATED, gates))
    z = 1 - (with_one - with_zero)
    n = _gru(x, h, fix_gate(params, "z", -SATURATED, gates))
    return z, n


def _bias_hn_outside(params):
    """GRU parameters whose candidate adds ``b_hn`` outside the reset gate: moved to ``b_in``."""
    hidden_size = params[1].shape[1]
    rows = gate_rows(hidden_size, "n", GRU_GATES)
    out = [p.detach().clone() for p in params]
    out[2][rows] = out[2][rows] + out[3][rows]
    out[3][rows] = 0.0
    return tuple(out)


def _gru_causes(case: Case):
    x, h, params = case.x, case.h, case.params
    gates = GRU_GATES
    z, n = _gru_update_and_candidate(params, x, h)
    reset, _ = _gru_update_and_candidate(_copy_block(params, "r", "z", gates), x, h)
    # Reset gate applied to h before the product (the 2014 paper's form): the candidate of a
    # cell whose reset gate is open, at the state reset * h.
    early = fix_gate(fix_gate(params, "r", SATURATED, gates), "z", -SATURATED, gates)
    n_early = _gru(x, reset * h, early)
    found = [
        Cause(
            "the reset gate is applied before the product, (r * h) @ w_hn.T + b_hn; PyTorch "
            "applies it after: r * (h @ w_hn.T + b_hn).",
            (1 - z) * n_early + z * h,
        ),
        Cause(
            "z and 1 - z are swapped: PyTorch's new state is (1 - z) * n + z * h.",
            z * n + (1 - z) * h,
        ),
        Cause(
            "the reset gate multiplies h @ w_hn.T but not b_hn: PyTorch resets the bias too, "
            "r * (h @ w_hn.T + b_hn).",
            _gru(x, h, _bias_hn_outside(params)),
        ),
        Cause(
            "the reset gate is not used: the candidate is tanh(x @ w_in.T + b_in + r * (h @ "
            "w_hn.T + b_hn)).",
            _gru(x, h, fix_gate(params, "r", SATURATED, gates)),
        ),
        Cause(
            "the reset gate was computed from the update gate's rows: PyTorch stacks r, z, n, "
            "and each gate has its own block of rows.",
            _gru(x, h, _copy_block(params, "z", "r", gates)),
        ),
        Cause(
            "the reset and update gates' rows are swapped: PyTorch stacks r, z, n.",
            _gru(x, h, _swap_blocks(params, "r", "z", gates)),
        ),
        Cause(ONE_BIAS.format(missing="bias_hh"), _gru(x, h, _zero(params, 3))),
        Cause(ONE_BIAS.format(missing="bias_ih"), _gru(x, h, _zero(params, 2))),
        Cause(
            "the candidate n was returned; the new state mixes it with h: (1 - z) * n + z * h.", n
        ),
        Cause(NO_STM, _gru(x, h, _zero(params, 1))),
    ]
    for index, which in ((1, "w_hh"), (0, "w_ih")):
        changed = _transposed(params, index, gates)
        if changed is not None:
            found.append(Cause(TRANSPOSED.format(which=which), _gru(x, h, changed)))
    return found


def _check_gru_cell(gru_cell, *, sizes, seed: int) -> None:
    """``gru_cell(x, h, params) -> h_next`` equals ``nn.GRUCell`` (params: its 4 tensors)."""
    worst = 0.0
    for k, size in enumerate(sizes):
        case = make_case(*size, seed=seed + k, n_gates=3)
        inputs = {"x": case.x, "h": case.h, "weight_ih": case.params[0]}
        got = call("gru_cell", gru_cell, case.x, case.h, case.params, inputs=inputs)
        expected = _gru(case.x, case.h, case.params)
        worst = max(
            worst,
            _checked(
                "gru_cell",
                got,
                expected,
                lambda case=case: _gru_causes(case),
                inputs=inputs,
                name="h_next (batch, hidden)",
                reference=GRU_CELL,
            ),
        )
    report("gru_cell", len(sizes), worst, GRU_CELL)


# --------------------------------------------------------------------------- peephole LSTM


def peephole_reference(x, h, c, params, peepholes, output_peeks_at="new", swap_if=False):
    """A peephole LSTM step made of PyTorch's LSTM cell, one sequence of the batch at a time.

    For one sequence a peephole term ``w * ltm`` is a per-unit constant, so it can be added to
    the gate's bias: i and f peek at the old LTM, then o peeks at the new LTM (``"new"``, the
    standard) or, for the common mistake, at the old one (``"old"``).
    """
    w_ci, w_cf, w_co = peepholes
    if swap_if:
        w_ci, w_cf = w_cf, w_ci
    hidden_size = h.shape[1]
    rows = {gate: gate_rows(hidden_size, gate) for gate in LSTM_GATES}
    stms, ltms = [], []
    for b in range(x.shape[0]):
        xb, hb, cb = x[b : b + 1], h[b : b + 1], c[b : b + 1]
        bias_ih = params[2].clone()
        bias_ih[rows["i"]] += w_ci * cb[0]
        bias_ih[rows["f"]] += w_cf * cb[0]
        _, new_ltm = _lstm(xb, hb, cb, (params[0], params[1], bias_ih, params[3]))
        peek = new_ltm[0] if output_peeks_at == "new" else cb[0]
        bias_ih[rows["o"]] += w_co * peek
        new_stm, _ = _lstm(xb, hb, cb, (params[0], params[1], bias_ih, params[3]))
        stms.append(new_stm)
        ltms.append(new_ltm)
    return torch.cat(stms), torch.cat(ltms)


def _peephole_causes(case: Case, part: int):
    x, h, c, params, (w_ci, w_cf, w_co) = case.x, case.h, case.c, case.params, case.peepholes
    zero = torch.zeros_like(w_ci)
    return [
        Cause(
            "the output gate peeked at the old LTM; it peeks at the new one (after the "
            "remember gate), while i and f peek at the old one.",
            peephole_reference(x, h, c, params, case.peepholes, "old")[part],
        ),
        Cause(
            "the peepholes are ignored: each gate adds its peephole vector times the LTM to "
            "its pre-activation.",
            _lstm(x, h, c, params)[part],
        ),
        Cause(
            "w_ci and w_cf are swapped: peepholes are (w_ci, w_cf, w_co) for the input, "
            "forget and output gates.",
            peephole_reference(x, h, c, params, case.peepholes, swap_if=True)[part],
        ),
        Cause(
            "the output gate's peephole w_co is ignored.",
            peephole_reference(x, h, c, params, (w_ci, w_cf, zero))[part],
        ),
        Cause(
            "the input and forget gates' peepholes are ignored.",
            peephole_reference(x, h, c, params, (zero, zero, w_co))[part],
        ),
        Cause(
            "the peephole terms were added after the sigmoid; they belong inside it, added to "
            "the gate's pre-activation: sigmoid(... + w_ci * ltm).",
            _peepholes_after_sigmoid(case)[part],
        ),
    ]


def _peepholes_after_sigmoid(case: Case):
    """(new_stm, new_ltm) of a peephole cell that adds ``w * ltm`` to each gate's value instead of
    its pre-activation (the gates read out of PyTorch's cell)."""
    x, h, c, params, (w_ci, w_cf, w_co) = case.x, case.h, case.c, case.params, case.peepholes
    gates = _read(params, x, h)
    new_ltm = (gates["f"] + w_cf * c) * c + (gates["i"] + w_ci * c) * gates["g"]
    return (gates["o"] + w_co * new_ltm) * torch.tanh(new_ltm), new_ltm


def _check_peephole_lstm_cell(
    peephole_lstm_cell, *, sizes, seed: int, gradcheck: bool = True
) -> None:
    """``peephole_lstm_cell(event, (stm, ltm), params, peepholes)``: equals the LSTM cell when the
    peepholes are zero, equals the peephole LSTM (built from nn.LSTMCell) when they are not, and
    passes ``torch.autograd.gradcheck``."""
    exercise = "peephole_lstm_cell"
    worst = 0.0
    for k, size in enumerate(sizes):
        case = make_case(*size, seed=seed + k)
        zeros = tuple(torch.zeros_like(w) for w in case.peepholes)
        worst = max(
            worst,
            _check_lstm_step(
                f"{exercise} (zero peepholes)", peephole_lstm_cell, case, extra_args=(zeros,)
            ),
        )
        inputs = _lstm_inputs(case, w_ci=case.peepholes[0])
        got = _pair(
            exercise,
            call(
                exercise,
                peephole_lstm_cell,
                case.x,
                (case.h, case.c),
                case.params,
                case.peepholes,
                inputs=inputs,
            ),
            "(new_stm, new_ltm)",
            inputs,
        )
        expected = peephole_reference(case.x, case.h, case.c, case.params, case.peepholes)
        for part in (1, 0):
            name = ("new_stm (batch, hidden)", "new_ltm (batch, hidden)")[part]
            worst = max(
                worst,
                _checked(
                    exercise,
                    got[part],
                    expected[part],
                    lambda case=case, part=part: _peephole_causes(case, part),
                    inputs=inputs,
                    name=name,
                    reference="a peephole LSTM built from nn.LSTMCell",
                ),
            )
    if gradcheck:
        _gradcheck_peephole(peephole_lstm_cell)
    report(exercise, len(sizes), worst, "nn.LSTMCell (+ peepholes), gradcheck")


def _peephole_outputs(peephole_lstm_cell, tensors) -> tuple:
    x, h, c, w_ih, w_hh, b_ih, b_hh, w_ci, w_cf, w_co = tensors
    return tuple(peephole_lstm_cell(x, (h, c), (w_ih, w_hh, b_ih, b_hh), (w_ci, w_cf, w_co)))


def _peephole_vjp(peephole_lstm_cell, tensors, cotangents) -> list[torch.Tensor]:
    """The gradients autograd gives through the learner's cell, ``cotangents`` (one per output)
    pulled back to every input (zeros where none arrives). Run beside the learner's cell."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    outputs = _peephole_outputs(peephole_lstm_cell, leaves)
    grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads, strict=True)]


def _gradcheck_peephole(peephole_lstm_cell, size=(2, 3, 2), seed: int = 99) -> None:
    """What ``torch.autograd.gradcheck(..., fast_mode=True)`` checks: along a random direction
    ``u`` of the inputs, the autograd gradient of ``<v, outputs>`` equals the numerical
    derivative (central differences of the cell's values, computed here)."""
    case = make_case(*size, seed=seed)
    tensors = [t.detach().clone() for t in (case.x, case.h, case.c, *case.params, *case.peepholes)]
    inputs = {"event": case.x, "stm": case.h, "ltm": case.c}
    g = torch.Generator().manual_seed(seed)
    eps = 1e-6
    try:
        with torch.no_grad():
            outputs = _peephole_outputs(peephole_lstm_cell, tensors)
        directions = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in tensors]
        cotangents = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outputs]
        with torch.no_grad():
            plus = _peephole_outputs(
                peephole_lstm_cell, [t + eps * d for t, d in zip(tensors, directions, strict=True)]
            )
            minus = _peephole_outputs(
                peephole_lstm_cell, [t - eps * d for t, d in zip(tensors, directions, strict=True)]
            )
        numerical = sum(
            float((v * (p - m)).sum()) for v, p, m in zip(cotangents, plus, minus, strict=True)
        ) / (2 * eps)
        grads = remote.probe(_peephole_vjp, peephole_lstm_cell, tensors, cotangents)
        analytic = sum(
            float((gr.to(d.dtype) * d).sum()) for gr, d in zip(grads, directions, strict=True)
        )
    except Exception as exc:  # the learner's code may break autograd in many ways
        fail(
            "peephole_lstm_cell",
            f"torch.autograd.gradcheck could not run: {type(exc).__name__}: {exc}",
            inputs,
            "use differentiable torch operations only: no .detach(), .item(), .numpy(), "
            ".data or in-place changes of the inputs.",
        )
    if not abs(analytic - numerical) <= 1e-5 + 1e-3 * abs(numerical):
        fail(
            "peephole_lstm_cell",
            "torch.autograd.gradcheck failed: the gradients of your cell "
            "differ from numerical derivatives.",
            inputs,
            "something cuts or bends the gradient: .detach(), .data, .item(), NumPy, or an "
            "in-place change of a tensor autograd still needs.",
        )


# --------------------------------------------------------------------------- parameter count


def _count(input_size, hidden_size, num_layers, bias) -> int:
    lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, bias=bias, device="meta")
    return sum(p.numel() for p in lstm.parameters())


def _check_lstm_param_count(lstm_param_count, *, cases) -> None:
    """``lstm_param_count(input_size, hidden_size, num_layers=1, bias=True)`` equals the number of
    parameters of ``nn.LSTM`` with those arguments. ``cases`` holds such 4-tuples."""
    checks = [(size, {"num_layers": size[2], "bias": size[3]}) for size in cases]
    first = cases[0]
    checks.append(((first[0], first[1], 1, True), {}))  # the defaults: one layer with biases
    for (input_size, hidden_size, layers, bias), kwargs in checks:
        text = (
            f"lstm_param_count({input_size}, {hidden_size}"
            + "".join(f", {k}={v}" for k, v in kwargs.items())
            + ")"
        )
        got = call(text, lstm_param_count, input_size, hidden_size, **kwargs)
        expected = _count(input_size, hidden_size, layers, bias)
        cause = None
        with_bias = _count(input_size, hidden_size, layers, True)
        without = _count(input_size, hidden_size, layers, False)
        one_layer = _count(input_size, hidden_size, 1, bias)
        known = [
            (
                with_bias - (with_bias - without) // 2,
                "one bias per gate counted; PyTorch has two "
                "(bias_ih and bias_hh), each 4 * hidden_size long.",
            ),
            (with_bias, "biases counted although bias=False."),
            (
                layers * one_layer,
                "every layer counted with input_size inputs; layers after the "
                "first read the previous layer's hidden state (hidden_size inputs).",
            ),
            (one_layer, "only the first layer counted: multiply out every one of num_layers."),
            (
                expected // 4,
                "one gate counted: an LSTM has four (i, f, g, o), each with its own "
                "weights and biases.",
            ),
            (expected * 3 // 4, "three gate blocks counted: that is a GRU; an LSTM has four."),
            (
                expected - layers * 4 * hidden_size * hidden_size,
                "the recurrent weights are missing: every layer has a weight_hh of shape "
                "(4 * hidden_size, hidden_size) too.",
            ),
            (
                expected
                - 4 * hidden_size * input_size
                - (layers - 1) * 4 * hidden_size * hidden_size,
                "the input weights are missing: every layer has a weight_ih of shape "
                "(4 * hidden_size, its input size) too.",
            ),
        ]
        if type(got) is not int and not isinstance(got, bool):
            cause = "return a Python int (for example int(total)), not a tensor or NumPy number."
        elif got != expected:
            hints = [hint for value, hint in known if value == got]
            cause = " Or: ".join(hints) if hints else None  # equal counts can have two causes
        assert_equal_values(text, got, expected, name="count", cause=cause)
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
    for hidden_size, seq_length, seed in cases:
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


#: (batch, input_size, hidden_size) of the visible and of the hidden cases of the cell checks.
SIZES = ((3, 4, 5), (2, 3, 3))
HIDDEN_SIZES = ((1, 1, 1), (5, 2, 1), (1, 6, 6), (4, 7, 2))


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
            "sizes": ((2, 5, 3, 4), (3, 2, 4, 4)),
            "stacked_sizes": ((2, 4, 3, 5),),
            "seed": 50,
        },
        hidden={
            "sizes": ((1, 1, 1, 1), (4, 6, 2, 1), (1, 3, 5, 5)),
            "stacked_sizes": ((1, 3, 2, 1), (3, 2, 4, 3)),
            "seed": 1500,
        },
    ),
    _cell_exercise("lstm_cell_backward", _check_lstm_cell_backward, seed=80),
    Exercise(
        "ltm_gradient_answers",
        "check_ltm_gradient_answers",
        _check_ltm_gradient_answers,
        reads=("forget_bias_0_gradient", "forget_bias_0_vs_rnn", "forget_bias_1_vs_rnn"),
        visible={"cases": ((16, 40, 0),)},  # the notebook's experiment
        hidden={"cases": ((8, 60, 1), (32, 30, 2))},
    ),
    _cell_exercise("gru_cell", _check_gru_cell, seed=60),
    # gradcheck (numerical gradients) runs on the visible cases only: it is the slow part
    _cell_exercise("peephole_lstm_cell", _check_peephole_lstm_cell, seed=70, gradcheck=False),
    Exercise(
        "lstm_param_count",
        "check_lstm_param_count",
        _check_lstm_param_count,
        reads=("lstm_param_count",),
        visible={"cases": ((10, 20, 1, True), (3, 5, 2, True), (7, 4, 3, False))},
        hidden={"cases": ((1, 1, 1, True), (16, 32, 2, False), (5, 3, 4, True))},
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
