"""Lesson 02's cases, PyTorch's cells, the LSTM's common mistakes, and the gate and cell checks.

Every expected value comes from PyTorch's own cells (``torch.lstm_cell``, ``torch.gru_cell``).
One gate is read out of those cells by fixing the other gates (``helpers.lstm.fix_gate``), and
the answers of common mistakes (rows swapped, one bias, a transposed weight, tanh and sigmoid
swapped) are made the same way, from modified parameters. This module never writes the gate
equations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from helpers.checks.core import call, fail, report
from helpers.checks.engine import Mistake, causes, checked, records
from helpers.lstm import LSTM_GATES, SATURATED, fix_gate, gate_rows, read_gates

F64 = torch.float64
LSTM_CELL = "torch.nn.LSTMCell"


class CellSize(NamedTuple):
    """The sizes of one random cell case."""

    batch: int
    input_size: int
    hidden_size: int


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


def _read(params, x, h) -> dict:
    """Gate values of PyTorch's LSTM cell with these parameters at (event x, stm h)."""
    return read_gates(_torch_cell, x, h, params)


def _gates(case: Case) -> dict:
    return _read(case.params, case.x, case.h)


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
class WrongCell:
    """A wrong LSTM cell: modified parameters, gates read from the wrong rows or squashed with
    the wrong function, and the use gate's squashing of the LTM."""

    name: str
    message: str
    transform: Callable | None = None
    roles: dict = field(default_factory=dict)
    final: str = TANH

    def applies(self, params) -> bool:
        """Whether this mistake can be made with these parameters (some need square weights)."""
        return self.transform is None or self.transform(params) is not None


_G = LSTM_GATES
_SWAPPED_ACTIVATIONS = {"i": ("i", TANH), "f": ("f", TANH), "g": ("g", SIGMOID), "o": ("o", TANH)}

#: The common mistakes of an LSTM step's gates.
LSTM_WRONG_CELLS = (
    WrongCell("f and i swapped", SWAPPED_FI, roles={"i": ("f", SIGMOID), "f": ("i", SIGMOID)}),
    WrongCell("order ifog", ORDER_IFOG, roles={"g": ("o", TANH), "o": ("g", SIGMOID)}),
    WrongCell("order igfo", ORDER_IGFO, roles={"f": ("g", SIGMOID), "g": ("f", TANH)}),
    WrongCell("no bias_hh", ONE_BIAS.format(missing="bias_hh"), lambda p: _zero(p, 3)),
    WrongCell("no bias_ih", ONE_BIAS.format(missing="bias_ih"), lambda p: _zero(p, 2)),
    WrongCell("w_hh transposed", TRANSPOSED.format(which="w_hh"), lambda p: _transposed(p, 1, _G)),
    WrongCell("w_ih transposed", TRANSPOSED.format(which="w_ih"), lambda p: _transposed(p, 0, _G)),
    WrongCell(
        "both transposed",
        TRANSPOSED.format(which="w_ih and w_hh"),
        lambda p: _both_transposed(p, _G),
    ),
    WrongCell("activations swapped", ACTIVATIONS_SWAPPED, roles=_SWAPPED_ACTIVATIONS),
    WrongCell(
        "activations swapped, sigmoid of the ltm",
        ACTIVATIONS_SWAPPED + " The use gate squashes the LTM with tanh.",
        roles=_SWAPPED_ACTIVATIONS,
        final=SIGMOID,
    ),
    WrongCell("no stm", NO_STM, lambda p: _zero(p, 1)),
    WrongCell("no event", NO_EVENT, lambda p: _zero(p, 0)),
)

#: ``LSTM_WRONG_CELLS`` and the whole cell's own: the use gate's squashing of the new LTM.
CELL_WRONG_CELLS = (
    *LSTM_WRONG_CELLS,
    WrongCell("no tanh", NO_TANH, final=IDENTITY),
    WrongCell("sigmoid of the ltm", SIGMOID_LTM, final=SIGMOID),
)


def _squashed(params, x, h, rows: str, squash: str):
    """``squash(pre-activation of block rows)``, read out of PyTorch's cell."""
    natural = TANH if rows == "g" else SIGMOID
    if squash == natural:
        return _read(params, x, h)[rows]
    if natural == SIGMOID:  # tanh(p) = 2 sigmoid(2p) - 1
        return 2 * _read(_scale_rows(params, rows, 2.0), x, h)[rows] - 1
    return (_read(_scale_rows(params, rows, 0.5), x, h)[rows] + 1) / 2  # sigmoid(p)


def mistaken_gates(mistake: WrongCell, x, h, params) -> dict:
    """The values i, f, g, o a cell with ``mistake`` computes at (event x, stm h)."""
    if mistake.transform is not None:
        params = mistake.transform(params)
    roles = {**STANDARD_ROLES, **mistake.roles}
    return {role: _squashed(params, x, h, rows, squash) for role, (rows, squash) in roles.items()}


def mistaken_cell(mistake: WrongCell, x, h, c, params):
    """(new_stm, new_ltm) of an LSTM cell with ``mistake``."""
    gates = mistaken_gates(mistake, x, h, params)
    new_ltm = gates["f"] * c + gates["i"] * gates["g"]
    return gates["o"] * _SQUASH[mistake.final](new_ltm), new_ltm


def as_mistakes(wrong_cells, answer) -> tuple[Mistake, ...]:
    """Each wrong cell as a :class:`Mistake` on a ``Case``: ``answer(wrong, case)`` is what the
    exercise returns when made with that wrong cell (only where its parameters allow it)."""
    return tuple(
        Mistake(
            w.name,
            lambda case, w=w: answer(w, case) if w.applies(case.params) else None,
            w.message,
        )
        for w in wrong_cells
    )


def _wrong_gates(wrong: WrongCell, case: Case) -> dict:
    return mistaken_gates(wrong, case.x, case.h, case.params)


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

FORGET_GATE_MISTAKES = (
    *as_mistakes(LSTM_WRONG_CELLS, lambda w, case: case.c * _wrong_gates(w, case)["f"]),
    Mistake(
        "the factor only",
        lambda case: _gates(case)["f"],
        "the forget gate's factor f was returned without multiplying the LTM by it.",
    ),
)

LEARN_GATE_MISTAKES = (
    *as_mistakes(
        LSTM_WRONG_CELLS,
        lambda w, case: (lambda gates: gates["i"] * gates["g"])(_wrong_gates(w, case)),
    ),
    Mistake(
        "g only",
        lambda case: _gates(case)["g"],
        "only the candidate g was returned: the learn gate is i * g.",
    ),
    Mistake(
        "i only",
        lambda case: _gates(case)["i"],
        "only the input gate i was returned: the learn gate is i * g.",
    ),
    Mistake(
        "i plus g",
        lambda case: (lambda gates: gates["i"] + gates["g"])(_gates(case)),
        "i and g were added: the learn gate multiplies them, i * g.",
    ),
)

#: The use gate's case: ``case.c`` is the new LTM it squashes.
USE_GATE_MISTAKES = (
    *as_mistakes(
        LSTM_WRONG_CELLS,
        lambda w, case: _wrong_gates(w, case)["o"] * _SQUASH[w.final](case.c),
    ),
    Mistake(
        "sigmoid of the ltm", lambda case: _gates(case)["o"] * torch.sigmoid(case.c), SIGMOID_LTM
    ),
    Mistake("no tanh", lambda case: _gates(case)["o"] * case.c, NO_TANH),
    Mistake(
        "o only",
        lambda case: _gates(case)["o"],
        "only the output gate o was returned: the use gate is o * tanh(new_ltm).",
    ),
)


class _Gate(NamedTuple):
    """How one gate exercise is called and judged."""

    exercise: str
    arguments: Callable  # case -> the learner's function's arguments
    inputs: Callable  # case -> the inputs a message shows
    reference: Callable  # case -> PyTorch's answer
    mistakes: tuple
    name: str


def _without_ltm(case):
    inputs = _lstm_inputs(case)
    del inputs["ltm"]
    return inputs


GATES = {
    "forget_gate": _Gate(
        "forget_gate",
        lambda case: (case.c, case.h, case.x, case.params),
        _lstm_inputs,
        # Candidate fixed to 0: PyTorch's new LTM is f * ltm + i * 0.
        lambda case: _lstm(case.x, case.h, case.c, fix_gate(case.params, "g", 0.0))[1],
        FORGET_GATE_MISTAKES,
        "kept LTM (batch, hidden)",
    ),
    "learn_gate": _Gate(
        "learn_gate",
        lambda case: (case.h, case.x, case.params),
        _without_ltm,
        # An LTM of zeros: PyTorch's new LTM is f * 0 + i * g.
        lambda case: _lstm(case.x, case.h, torch.zeros_like(case.h), case.params)[1],
        LEARN_GATE_MISTAKES,
        "learned (batch, hidden)",
    ),
    "use_gate": _Gate(
        "use_gate",
        lambda case: (case.c, case.h, case.x, case.params),
        lambda case: {
            "new_ltm": case.c,
            "stm": case.h,
            "event": case.x,
            "weight_ih": case.params[0],
        },
        # Forget gate open, candidate 0: PyTorch's new LTM is the given one, its new STM the
        # use gate's output.
        lambda case: _lstm(
            case.x, case.h, case.c, fix_gate(fix_gate(case.params, "f", SATURATED), "g", 0.0)
        )[0],
        USE_GATE_MISTAKES,
        "new STM (batch, hidden)",
    ),
}


def _check_gate(gate: _Gate, fn, sizes, seed: int) -> None:
    worst = 0.0
    for k, size in enumerate(records(CellSize, sizes)):
        case = make_case(*size, seed=seed + k)
        inputs = gate.inputs(case)
        got = call(gate.exercise, fn, *gate.arguments(case), inputs=inputs)
        worst = max(
            worst,
            checked(
                gate.exercise,
                got,
                gate.reference(case),
                lambda case=case: causes(gate.mistakes, case),
                inputs=inputs,
                name=gate.name,
                reference=LSTM_CELL,
            ),
        )
    report(gate.exercise, len(sizes), worst, LSTM_CELL)


def _check_forget_gate(forget_gate, *, sizes, seed: int) -> None:
    """``forget_gate(ltm, stm, event, params) -> ltm * f`` equals nn.LSTMCell's forget gate.

    ``sizes`` holds ``CellSize(batch, input_size, hidden_size)`` records.
    """
    _check_gate(GATES["forget_gate"], forget_gate, sizes, seed)


def _check_learn_gate(learn_gate, *, sizes, seed: int) -> None:
    """``learn_gate(stm, event, params) -> i * g`` equals what nn.LSTMCell learns at a step."""
    _check_gate(GATES["learn_gate"], learn_gate, sizes, seed)


def _check_use_gate(use_gate, *, sizes, seed: int) -> None:
    """``use_gate(new_ltm, stm, event, params) -> o * tanh(new_ltm)`` equals nn.LSTMCell's STM."""
    _check_gate(GATES["use_gate"], use_gate, sizes, seed)


# --------------------------------------------------------------------------- whole cells


def _cell_mistakes(part: int, *own: Mistake) -> tuple[Mistake, ...]:
    """The mistakes of a whole cell's output ``part`` (0: new_stm, 1: new_ltm)."""
    return (
        *as_mistakes(
            CELL_WRONG_CELLS,
            lambda w, case: mistaken_cell(w, case.x, case.h, case.c, case.params)[part],
        ),
        *own,
        Mistake(
            "pair swapped",
            lambda case: _lstm(case.x, case.h, case.c, case.params)[1 - part],
            "the pair is in the wrong order: return (new_stm, new_ltm).",
        ),
    )


NEW_STM_MISTAKES = _cell_mistakes(
    0,
    Mistake(
        "old ltm squashed",
        lambda case: _gates(case)["o"] * torch.tanh(case.c),
        "the use gate read the old LTM; it must squash the new LTM, after the remember gate.",
    ),
    Mistake(
        "no output gate",
        lambda case: torch.tanh(_lstm(case.x, case.h, case.c, case.params)[1]),
        "the new STM is the squashed new LTM without the output gate: the use gate "
        "scales it, o * tanh(new_ltm).",
    ),
    Mistake(
        "kept ltm squashed",
        lambda case: (lambda g: g["o"] * torch.tanh(g["f"] * case.c))(_gates(case)),
        "the new STM is the kept LTM (forget gate only) squashed: the use gate squashes "
        "the new LTM, kept plus learned.",
    ),
)

NEW_LTM_MISTAKES = _cell_mistakes(
    1,
    Mistake(
        "kept only",
        lambda case: _gates(case)["f"] * case.c,
        "the new LTM is the kept LTM only: the remember gate adds what the learn gate "
        "learned, f * ltm + i * g.",
    ),
    Mistake(
        "learned only",
        lambda case: (lambda g: g["i"] * g["g"])(_gates(case)),
        "the new LTM is the learned part only: the remember gate adds the kept LTM, "
        "f * ltm + i * g.",
    ),
    Mistake(
        "kept times learned",
        lambda case: (lambda g: g["f"] * case.c * g["i"] * g["g"])(_gates(case)),
        "the kept LTM and the learned part were multiplied: the remember gate adds them.",
    ),
)


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
    worst = 0.0
    for part, expected, mistakes, name in (
        (1, new_ltm, NEW_LTM_MISTAKES, "new_ltm (batch, hidden)"),
        (0, new_stm, NEW_STM_MISTAKES, "new_stm (batch, hidden)"),
    ):
        worst = max(
            worst,
            checked(
                exercise,
                got[part],
                expected,
                lambda mistakes=mistakes: causes(mistakes, case),
                inputs=inputs,
                name=name,
                reference=reference,
            ),
        )
    return worst


def _check_lstm_cell(lstm_cell, *, sizes, seed: int) -> None:
    """``lstm_cell(event, (stm, ltm), params) -> (new_stm, new_ltm)`` equals nn.LSTMCell."""
    worst = 0.0
    for k, size in enumerate(records(CellSize, sizes)):
        worst = max(worst, _check_lstm_step("lstm_cell", lstm_cell, make_case(*size, seed + k)))
    report("lstm_cell", len(sizes), worst, LSTM_CELL)
