"""Lesson 02's ``peephole_lstm_cell``: the LSTM cell when the peepholes are zero, a peephole LSTM
built from ``nn.LSTMCell`` when they are not, and a gradient check (``gradcheck``'s fast mode)."""

from __future__ import annotations

import torch

from helpers.checks import remote
from helpers.checks.core import call, fail, report
from helpers.checks.engine import Mistake, causes, checked, records
from helpers.checks.lesson02.cells import (
    Case,
    CellSize,
    _check_lstm_step,
    _lstm,
    _lstm_inputs,
    _pair,
    _read,
    make_case,
)
from helpers.lstm import LSTM_GATES, gate_rows

REFERENCE = "a peephole LSTM built from nn.LSTMCell"


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


def _peephole(case: Case, *peepholes, **kwargs):
    return peephole_reference(case.x, case.h, case.c, case.params, *peepholes, **kwargs)


def _zero_peepholes(case: Case, *which: int):
    """The case's peepholes, those at the positions ``which`` set to zero."""
    return tuple(torch.zeros_like(w) if k in which else w for k, w in enumerate(case.peepholes))


def _peephole_mistakes(part: int) -> tuple[Mistake, ...]:
    """The common mistakes of a peephole cell's ``part`` (0: new_stm, 1: new_ltm)."""
    return (
        Mistake(
            "o peeks at the old ltm",
            lambda case: _peephole(case, case.peepholes, "old")[part],
            "the output gate peeked at the old LTM; it peeks at the new one (after the "
            "remember gate), while i and f peek at the old one.",
        ),
        Mistake(
            "peepholes ignored",
            lambda case: _lstm(case.x, case.h, case.c, case.params)[part],
            "the peepholes are ignored: each gate adds its peephole vector times the LTM to "
            "its pre-activation.",
        ),
        Mistake(
            "w_ci and w_cf swapped",
            lambda case: _peephole(case, case.peepholes, swap_if=True)[part],
            "w_ci and w_cf are swapped: peepholes are (w_ci, w_cf, w_co) for the input, "
            "forget and output gates.",
        ),
        Mistake(
            "w_co ignored",
            lambda case: _peephole(case, _zero_peepholes(case, 2))[part],
            "the output gate's peephole w_co is ignored.",
        ),
        Mistake(
            "w_ci and w_cf ignored",
            lambda case: _peephole(case, _zero_peepholes(case, 0, 1))[part],
            "the input and forget gates' peepholes are ignored.",
        ),
        Mistake(
            "after the sigmoid",
            lambda case: _peepholes_after_sigmoid(case)[part],
            "the peephole terms were added after the sigmoid; they belong inside it, added to "
            "the gate's pre-activation: sigmoid(... + w_ci * ltm).",
        ),
    )


#: The mistakes of new_stm and new_ltm, by part.
PEEPHOLE_MISTAKES = (_peephole_mistakes(0), _peephole_mistakes(1))


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
    for k, size in enumerate(records(CellSize, sizes)):
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
                checked(
                    exercise,
                    got[part],
                    expected[part],
                    lambda case=case, part=part: causes(PEEPHOLE_MISTAKES[part], case),
                    inputs=inputs,
                    name=name,
                    reference=REFERENCE,
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


_GRADCHECK_SIZE = CellSize(batch=2, input_size=3, hidden_size=2)


def _gradcheck_peephole(peephole_lstm_cell, size=_GRADCHECK_SIZE, seed: int = 99) -> None:
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
