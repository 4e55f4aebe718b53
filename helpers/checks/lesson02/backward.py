"""Lesson 02's ``lstm_cell_backward``, against ``torch.autograd`` through ``torch.lstm_cell``.

Its common mistakes are made by autograd too, never by a written-out gradient: through a cell
whose path from the new LTM to the new STM is cut, whose gate blocks are read in another order,
or whose squashing functions get another derivative (an identity ``autograd.Function`` that
bends the gradient of the pre-activations), or by rearranging autograd's own answer (gate blocks
permuted, the bias gradient doubled). Its messages name the mistake and where the first mismatch
is, never the expected value.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch.nn import functional

from helpers.checks.core import (
    Cause,
    CheckFailure,
    all_close_at_once,
    assert_close,
    call,
    fail,
    report,
    shape_text,
)
from helpers.checks.engine import Mistake, causes, records
from helpers.checks.lesson02.cells import (
    F64,
    ORDER_IFOG,
    ORDER_IGFO,
    SWAPPED_FI,
    Case,
    CellSize,
    _lstm,
    make_case,
)
from helpers.lstm import LSTM_GATES, SATURATED, gate_rows

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


class Step(NamedTuple):
    """One case of the backward pass: the step's inputs, the upstream gradients, and autograd's
    answer (``right``, by ``BACKWARD_NAMES``)."""

    case: Case
    dh_next: torch.Tensor
    dc_next: torch.Tensor
    right: dict


def _replaced(step: Step, **changes) -> dict:
    """Autograd's answer with some gradients replaced."""
    return {**step.right, **changes}


def _through_use_gate(step: Step, **bends) -> dict:
    return _gradients(_bent_use_gate(step.dh_next, step.dc_next, **bends), step.case)


def _no_tanh(step: Step) -> dict:
    return _through_use_gate(step, ltm_factor=lambda ltm, _: torch.zeros_like(ltm))


def _bent(sigmoid_rows, tanh_rows):
    """The gradients of a cell whose gates' derivatives are replaced (None: unchanged)."""

    def answer(step: Step) -> dict:
        bent = _bent_step(lambda pre: _bent_factor(pre, sigmoid_rows, tanh_rows))
        return _gradients(_upstream_loss(step.dh_next, step.dc_next, bent), step.case)

    return answer


def _reordered(order: str):
    """The gradients of a cell that reads its gate blocks in ``order``."""

    def answer(step: Step) -> dict:
        cell = _reordered_step(tuple(order))
        return _gradients(_upstream_loss(step.dh_next, step.dc_next, cell), step.case)

    return answer


def _stacked(order: str):
    """Autograd's answer with the gate blocks of the parameters' gradients in ``order``."""

    def answer(step: Step) -> dict:
        return _replaced(
            step,
            **{
                name: _reordered_blocks(step.right[name], tuple(order), dim=0)
                for name in ("dweight_ih", "dweight_hh", "dbias")
            },
        )

    return answer


def _upstream(dh_next: bool, dc_next: bool):
    """The gradients when only the named upstream gradients are used."""

    def answer(step: Step) -> dict:
        dh = step.dh_next if dh_next else torch.zeros_like(step.dh_next)
        dc = step.dc_next if dc_next else torch.zeros_like(step.dc_next)
        return _gradients(_upstream_loss(dh, dc, _lstm), step.case)

    return answer


def _averaged(step: Step) -> dict | None:
    batch = step.case.x.shape[0]
    if batch <= 1:
        return None
    return _replaced(
        step, **{n: step.right[n] / batch for n in ("dweight_ih", "dweight_hh", "dbias")}
    )


def _order_mistakes(message: str, order: str) -> tuple[Mistake, Mistake]:
    return (
        Mistake(f"cell reads {order}", _reordered(order), message),
        Mistake(
            f"blocks stacked {order}",
            _stacked(order),
            BLOCKS_STACKED.format(order=", ".join(order)),
        ),
    )


def _sigmoid_as_tanh(s):
    return 1 - s**2


def _tanh_as_sigmoid(t):
    return t * (1 - t)


#: The usual wrong answers of ``lstm_cell_backward`` (``{name: value}`` on a ``Step``), each
#: made by autograd through a cell built wrong in that way (or from autograd's answer).
BACKWARD_MISTAKES = (
    Mistake("no tanh path", _no_tanh, NO_TANH_PATH),
    Mistake(
        "dc at the new ltm",
        lambda s: _replaced(s, dc=_gradient_at_new_ltm(s.case, s.dh_next, s.dc_next)),
        DC_NOT_THROUGH_F,
    ),
    Mistake("dc_next, no tanh path", lambda s: {**_no_tanh(s), "dc": s.dc_next}, DC_IS_DC_NEXT),
    Mistake("dc_next", lambda s: _replaced(s, dc=s.dc_next), DC_IS_DC_NEXT),
    Mistake(
        "tanh of the ltm",
        lambda s: _through_use_gate(
            s, ltm_factor=lambda ltm, _: (1 - ltm**2) / _derivative(torch.tanh, ltm)
        ),
        TANH_OF_THE_LTM,
    ),
    Mistake(
        "tanh at the old ltm",
        lambda s: _through_use_gate(
            s,
            ltm_factor=lambda ltm, old: _derivative(torch.tanh, old) / _derivative(torch.tanh, ltm),
        ),
        TANH_AT_OLD_LTM,
    ),
    Mistake(
        "o without tanh",
        lambda s: _through_use_gate(s, o_factor=lambda ltm: ltm / torch.tanh(ltm)),
        O_WITHOUT_TANH,
    ),
    Mistake("sigmoid as tanh", _bent(_sigmoid_as_tanh, None), SIGMOID_AS_TANH),
    Mistake("tanh as sigmoid", _bent(None, _tanh_as_sigmoid), TANH_AS_SIGMOID),
    Mistake(
        "both derivatives swapped",
        _bent(_sigmoid_as_tanh, _tanh_as_sigmoid),
        SIGMOID_AS_TANH + " " + TANH_AS_SIGMOID,
    ),
    Mistake("no sigmoid derivative", _bent(torch.ones_like, None), NO_SIGMOID_DERIVATIVE),
    Mistake("no tanh derivative", _bent(None, torch.ones_like), NO_TANH_DERIVATIVE),
    *_order_mistakes(ORDER_IFOG, "ifog"),
    *_order_mistakes(ORDER_IGFO, "igfo"),
    *_order_mistakes(SWAPPED_FI, "figo"),
    Mistake("bias doubled", lambda s: _replaced(s, dbias=2 * s.right["dbias"]), DOUBLED_BIAS),
    Mistake("no dh_next", _upstream(False, True), NO_DH_NEXT),
    Mistake("no dc_next", _upstream(True, False), NO_DC_NEXT),
    Mistake("averaged over the batch", _averaged, AVERAGED),
)


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


def _compare_backward(exercise, got, step: Step, inputs) -> float:
    expected_list = [step.right[n] for n in BACKWARD_NAMES]
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
    found = causes(BACKWARD_MISTAKES, step)
    worst = 0.0
    for name, g, e in zip(BACKWARD_NAMES, got, expected_list, strict=True):
        worst = max(
            worst,
            _assert_gradient(
                exercise,
                g,
                e,
                inputs=inputs,
                name=f"{name} {shape_text(e)}",
                reference=AUTOGRAD,
                causes=[Cause(c.message, c.output[name]) for c in found],
            ),
        )
    return worst


def _call_backward(lstm_cell_backward, case: Case, dh_next, dc_next, inputs):
    """What the learner's ``lstm_cell_backward`` returns: six values, or a failure."""
    exercise = "lstm_cell_backward"
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
    return list(got)


def _check_lstm_cell_backward(lstm_cell_backward, *, sizes, seed: int) -> None:
    """``lstm_cell_backward(dh_next, dc_next, x, h, c, params) -> (dx, dh, dc, dweight_ih,
    dweight_hh, dbias)`` equals torch.autograd through ``nn.LSTMCell`` (float64, 1e-10).

    ``sizes`` holds ``CellSize(batch, input_size, hidden_size)``. The loss is ``<dh_next,
    new_stm> + <dc_next, new_ltm>``, so autograd's gradients of it are what the exercise
    computes. The learner's function is only called and its answers compared (it may run in
    another process).
    """
    exercise = "lstm_cell_backward"
    worst = 0.0
    for k, size in enumerate(records(CellSize, sizes)):
        case, dh_next, dc_next = _backward_case(*size, seed=seed + k)
        inputs = {
            "dh_next": dh_next,
            "dc_next": dc_next,
            "x": case.x,
            "h": case.h,
            "c": case.c,
            "weight_ih": case.params[0],
        }
        got = _call_backward(lstm_cell_backward, case, dh_next, dc_next, inputs)
        step = Step(case, dh_next, dc_next, backward_reference(case, dh_next, dc_next))
        worst = max(worst, _compare_backward(exercise, got, step, inputs))
    report(exercise, len(sizes), worst, AUTOGRAD)
