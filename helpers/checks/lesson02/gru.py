"""Lesson 02's ``gru_cell``, against ``torch.gru_cell`` (the kernel of ``nn.GRUCell``).

The update gate and the candidate are read out of PyTorch's cell by fixing gates; the common
mistakes are PyTorch's cell with modified parameters, or mixes of what was read out."""

from __future__ import annotations

import torch

from helpers.checks.core import call, report
from helpers.checks.engine import Mistake, causes, checked, records
from helpers.checks.lesson02.cells import (
    NO_STM,
    ONE_BIAS,
    TRANSPOSED,
    Case,
    CellSize,
    _copy_block,
    _swap_blocks,
    _transposed,
    _zero,
    make_case,
)
from helpers.lstm import GRU_GATES, SATURATED, fix_gate, gate_rows

GRU_CELL = "torch.nn.GRUCell"


def _gru(x, h, params):
    return torch.gru_cell(x, h, *params)


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


def _reset_early(case: Case):
    """Reset gate applied to h before the product (the 2014 paper's form): the candidate of a
    cell whose reset gate is open, at the state reset * h."""
    x, h, params = case.x, case.h, case.params
    z, _ = _gru_update_and_candidate(params, x, h)
    reset, _ = _gru_update_and_candidate(_copy_block(params, "r", "z", GRU_GATES), x, h)
    early = fix_gate(fix_gate(params, "r", SATURATED, GRU_GATES), "z", -SATURATED, GRU_GATES)
    n_early = _gru(x, reset * h, early)
    return (1 - z) * n_early + z * h


def _z_swapped(case: Case):
    z, n = _gru_update_and_candidate(case.params, case.x, case.h)
    return z * n + (1 - z) * case.h


def _with(change):
    """PyTorch's GRU cell with parameters changed by ``change`` (None: the change is
    impossible)."""

    def answer(case: Case):
        params = change(case.params)
        return None if params is None else _gru(case.x, case.h, params)

    return answer


#: The common mistakes of ``gru_cell``.
GRU_MISTAKES = (
    Mistake(
        "reset before the product",
        _reset_early,
        "the reset gate is applied before the product, (r * h) @ w_hn.T + b_hn; PyTorch "
        "applies it after: r * (h @ w_hn.T + b_hn).",
    ),
    Mistake(
        "z swapped",
        _z_swapped,
        "z and 1 - z are swapped: PyTorch's new state is (1 - z) * n + z * h.",
    ),
    Mistake(
        "b_hn not reset",
        _with(_bias_hn_outside),
        "the reset gate multiplies h @ w_hn.T but not b_hn: PyTorch resets the bias too, "
        "r * (h @ w_hn.T + b_hn).",
    ),
    Mistake(
        "no reset gate",
        _with(lambda p: fix_gate(p, "r", SATURATED, GRU_GATES)),
        "the reset gate is not used: the candidate is tanh(x @ w_in.T + b_in + r * (h @ "
        "w_hn.T + b_hn)).",
    ),
    Mistake(
        "reset from z's rows",
        _with(lambda p: _copy_block(p, "z", "r", GRU_GATES)),
        "the reset gate was computed from the update gate's rows: PyTorch stacks r, z, n, "
        "and each gate has its own block of rows.",
    ),
    Mistake(
        "r and z swapped",
        _with(lambda p: _swap_blocks(p, "r", "z", GRU_GATES)),
        "the reset and update gates' rows are swapped: PyTorch stacks r, z, n.",
    ),
    Mistake("no bias_hh", _with(lambda p: _zero(p, 3)), ONE_BIAS.format(missing="bias_hh")),
    Mistake("no bias_ih", _with(lambda p: _zero(p, 2)), ONE_BIAS.format(missing="bias_ih")),
    Mistake(
        "the candidate",
        lambda case: _gru_update_and_candidate(case.params, case.x, case.h)[1],
        "the candidate n was returned; the new state mixes it with h: (1 - z) * n + z * h.",
    ),
    Mistake("no stm", _with(lambda p: _zero(p, 1)), NO_STM),
    Mistake(
        "w_hh transposed",
        _with(lambda p: _transposed(p, 1, GRU_GATES)),
        TRANSPOSED.format(which="w_hh"),
    ),
    Mistake(
        "w_ih transposed",
        _with(lambda p: _transposed(p, 0, GRU_GATES)),
        TRANSPOSED.format(which="w_ih"),
    ),
)


def _check_gru_cell(gru_cell, *, sizes, seed: int) -> None:
    """``gru_cell(x, h, params) -> h_next`` equals ``nn.GRUCell`` (params: its 4 tensors)."""
    worst = 0.0
    for k, size in enumerate(records(CellSize, sizes)):
        case = make_case(*size, seed=seed + k, n_gates=3)
        inputs = {"x": case.x, "h": case.h, "weight_ih": case.params[0]}
        got = call("gru_cell", gru_cell, case.x, case.h, case.params, inputs=inputs)
        expected = _gru(case.x, case.h, case.params)
        worst = max(
            worst,
            checked(
                "gru_cell",
                got,
                expected,
                lambda case=case: causes(GRU_MISTAKES, case),
                inputs=inputs,
                name="h_next (batch, hidden)",
                reference=GRU_CELL,
            ),
        )
    report("gru_cell", len(sizes), worst, GRU_CELL)
