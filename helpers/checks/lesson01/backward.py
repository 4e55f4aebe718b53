"""Lesson 01's backward exercises: ``rnn_cell_backward`` and ``rnn_backward`` (back-propagation
through time), against ``torch.autograd`` through ``nn.RNNCell`` and ``nn.RNN``.

The named mistakes are not written as formulas: every wrong gradient is autograd's own result
transformed (a transpose, a division, a doubling), or autograd through a deliberately wrong
forward pass (a step without tanh, a weight used untransposed, the wrong state).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks import remote
from helpers.checks.core import Cause, all_close_at_once, assert_close, call, fail, report
from helpers.checks.engine import Mistake, records
from helpers.checks.lesson01.cells import F64, CellSize, SequenceSize, _rnn_case

_BACKWARD_NAMES = ("dx", "dh", "dweight_ih", "dweight_hh", "dbias")
_BPTT_NAMES = ("dx", "dh0", "dweight_ih", "dweight_hh", "dbias")

_TRANSPOSES = (
    "the shapes of a product do not fit: write down each factor's shape and keep the only "
    "arrangement that gives the gradient's shape (a gradient has the shape of what it is the "
    "gradient of; the linear layer's worked example above shows the rule for each product)."
)


def _call_backward(exercise, fn, args, inputs, names):
    """Call a backward exercise; a shape error gets the backward pass's own hint."""
    try:
        got = call(exercise, fn, *args, inputs=inputs, expect=(RuntimeError,))
    except RuntimeError as exc:
        text = str(exc)
        shapes = "mat1 and mat2" in text or "size of tensor" in text or "shape" in text
        fail(exercise, f"raised RuntimeError: {text}", inputs, _TRANSPOSES if shapes else None)
    if not isinstance(got, tuple | list) or len(got) != len(names):
        fail(
            exercise,
            f"should return a tuple ({', '.join(names)}), got "
            + (f"{len(got)} values" if isinstance(got, tuple | list) else type(got).__name__),
            inputs,
        )
    return got


def _backward_shapes(exercise, got, expected, names, inputs):
    """Name the shape mistakes of a gradient before its values are compared."""
    for name, g, e in zip(names, got, expected, strict=True):
        if type(g) is not torch.Tensor or tuple(g.shape) == tuple(e.shape):
            continue
        shape, want = tuple(g.shape), tuple(e.shape)
        cause = None
        if name.startswith("dweight") and len(shape) == 2 and shape == want[::-1]:
            weight = name[1:]
            cause = (
                f"{name} is transposed: a gradient has its parameter's shape, and PyTorch stores "
                f"{weight} as (out, in) = "
                + ("(hidden, input)." if name == "dweight_ih" else "(hidden, hidden).")
            )
        elif name == "dbias" and len(shape) == 2 and shape[-1] == want[0]:
            cause = (
                "dbias keeps the batch dimension: the bias is added to every row of the batch, "
                "so its gradient is summed over the batch, shape (hidden,)."
            )
        fail(
            exercise,
            f"{name} has shape {shape}, expected {want}",
            inputs,
            cause or _TRANSPOSES,
        )


# The named mistakes below are not written as formulas: every wrong gradient is autograd's own
# result transformed (a transpose, a division, a doubling), or autograd through a deliberately
# wrong forward pass (a step without tanh, a weight used untransposed, the wrong state).


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _linear_grads(da, x, h, w_ih, w_hh, *, x_term=F.linear, h_term=F.linear):
    """Autograd's gradients of the step's linear part (before tanh) for the upstream ``da``,
    as ``{output name: value}``. ``x_term`` / ``h_term`` replace how an input meets its weight
    (a wrong forward pass gives the gradients of that mistake)."""
    leaves = _leaves(x, h, w_ih, w_hh, torch.zeros_like(w_hh[0]))
    with torch.enable_grad():
        pre = x_term(leaves[0], leaves[2]) + h_term(leaves[1], leaves[3]) + leaves[4]
        grads = torch.autograd.grad((pre * da).sum(), leaves)
    return dict(zip(_BACKWARD_NAMES, grads, strict=True))


def _untransposed(inp, weight):
    """The input times the weight as it is stored (a forward pass that forgot the transpose)."""
    return F.linear(inp, weight.T)


def _tanh_slope_times(upstream, at):
    """Autograd's gradient through tanh evaluated where tanh's output is ``at`` (|at| < 1)."""
    (z,) = _leaves(torch.atanh(at))
    with torch.enable_grad():
        (grad,) = torch.autograd.grad((torch.tanh(z) * upstream).sum(), z)
    return grad


def _tanh_grad_at_input(upstream, z):
    """Autograd's gradient through tanh applied to ``z`` itself."""
    (leaf,) = _leaves(z)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad((torch.tanh(leaf) * upstream).sum(), leaf)
    return grad


class CellGradients(NamedTuple):
    """One step's backward case: the upstream ``dh_next``, the step's inputs and output,
    autograd's gradient ``da`` of the pre-activation and its five gradients (``right``)."""

    dh_next: torch.Tensor
    x: torch.Tensor
    h: torch.Tensor
    h_next: torch.Tensor
    w_ih: torch.Tensor
    w_hh: torch.Tensor
    da: torch.Tensor
    right: dict

    def linear(self, da, h=None, **terms) -> dict:
        """Autograd's gradients of the step's linear part for the upstream ``da``."""
        h = self.h if h is None else h
        return _linear_grads(da, self.x, h, self.w_ih, self.w_hh, **terms)

    def but(self, **changes) -> dict:
        return {**self.right, **changes}


def _square(weight, value):
    """``value()`` where ``weight`` is square (elsewhere the shapes show the mistake)."""
    return value() if weight.shape[0] == weight.shape[1] else None


def _averaged(s: CellGradients) -> dict:
    batch = s.x.shape[0]
    return s.but(
        dweight_ih=s.right["dweight_ih"] / batch,
        dweight_hh=s.right["dweight_hh"] / batch,
        dbias=s.right["dbias"] / batch,
    )


#: The usual wrong gradients of one step (``recognise``: ``{output name: value}``).
CELL_BACKWARD_MISTAKES = (
    Mistake(
        "no tanh derivative",
        lambda s: s.linear(s.dh_next),
        "the tanh derivative is missing: the gradient must pass back through tanh before it "
        "reaches the matrix products, and every one of the five gradients uses that.",
    ),
    Mistake(
        "slope at h",
        lambda s: s.linear(_tanh_slope_times(s.dh_next, s.h)),
        "the tanh derivative uses h, the previous state: tanh's slope belongs to this step's "
        "own pre-activation, whose tanh is h_next.",
    ),
    Mistake(
        "tanh of h_next",
        lambda s: s.linear(_tanh_grad_at_input(s.dh_next, s.h_next)),
        "h_next is already tanh(a): written with tanh's output, the derivative takes h_next "
        "as it is, not tanh(h_next).",
    ),
    Mistake(
        "one minus h_next",
        lambda s: s.linear(s.da / (1 + s.h_next)),
        "the tanh derivative is wrong: it is not 1 - h_next. Differentiate tanh(a) again "
        "and write the result with tanh(a) itself.",
    ),
    Mistake(
        "sigmoid's derivative",
        lambda s: s.linear(s.da * s.h_next / (1 + s.h_next)),
        "that is sigmoid's derivative written with its output; tanh's derivative is another "
        "one: derive it.",
    ),
    Mistake(
        "dh without weight_hh",
        lambda s: s.but(dh=s.da),
        "dh skips the recurrent weights: the previous state reaches the pre-activation only "
        "through weight_hh, so its gradient must come back through weight_hh too.",
    ),
    Mistake(
        "dweight_hh with h_next",
        lambda s: s.but(dweight_hh=s.linear(s.da, h=s.h_next)["dweight_hh"]),
        "dweight_hh uses h_next: weight_hh multiplies the previous state h, not the state "
        "this step produces.",
    ),
    Mistake(
        "averaged",
        _averaged,
        "the weight gradients are averaged over the batch: the loss adds up over the batch, "
        "so its gradients do too (no division by the batch size).",
    ),
    Mistake(
        "dbias doubled",
        lambda s: s.but(dbias=2 * s.right["dbias"]),
        "dbias adds the gradients of both biases: bias_ih and bias_hh each have their own "
        "gradient, equal to the other's, and dbias is that one gradient, not their sum.",
    ),
    # mistakes the shapes only hide when a matrix is square
    Mistake(
        "dh through weight_hh transposed",
        lambda s: _square(s.w_hh, lambda: s.but(dh=s.linear(s.da, h_term=_untransposed)["dh"])),
        "dh multiplies by weight_hh.T: the forward pass already used the transpose; "
        "in the backward pass the shapes decide (see the worked example's dx).",
    ),
    Mistake(
        "dweight_hh transposed",
        lambda s: _square(s.w_hh, lambda: s.but(dweight_hh=s.right["dweight_hh"].T)),
        "dweight_hh is transposed: PyTorch stores weights (out, in), and a gradient has "
        "its parameter's layout: row i belongs to hidden unit i.",
    ),
    Mistake(
        "dx through weight_ih transposed",
        lambda s: _square(s.w_ih, lambda: s.but(dx=s.linear(s.da, x_term=_untransposed)["dx"])),
        "dx multiplies by weight_ih.T: the forward pass already used the transpose; "
        "in the backward pass the shapes decide (see the worked example's dx).",
    ),
    Mistake(
        "dweight_ih transposed",
        lambda s: _square(s.w_ih, lambda: s.but(dweight_ih=s.right["dweight_ih"].T)),
        "dweight_ih is transposed: PyTorch stores weights (out, in), and a gradient has "
        "its parameter's layout: row i belongs to hidden unit i.",
    ),
)


def _found(mistakes, case) -> list[tuple[str, dict]]:
    """``(tell, {output name: value})`` of each mistake that can happen on ``case``."""
    found = []
    for mistake in mistakes:
        outputs = mistake.recognise(case)
        if outputs is not None:
            found.append((mistake.tell, outputs))
    return found


def _compare_gradients(exercise, got, expected, names, variants, inputs, reference):
    _backward_shapes(exercise, got, expected, names, inputs)
    worst = all_close_at_once(
        exercise, got, expected, inputs=inputs, reference=reference, atol=1e-10, rtol=1e-7
    )
    if worst is not None:
        return worst
    worst = 0.0
    found = None
    for name, g, e in zip(names, got, expected, strict=True):
        found = variants() if found is None else found
        worst = max(
            worst,
            assert_close(
                exercise,
                g,
                e,
                inputs=inputs,
                name=name,
                reference=reference,
                causes=[Cause(message, outputs[name]) for message, outputs in found],
            ),
        )
    return worst


def _cell_backward_case(size: CellSize, seed: int):
    """A step of ``nn.RNNCell`` from a genuine tanh state, an upstream gradient, and autograd's
    five gradients of ``(h_next * dh_next).sum()``."""
    batch, input_size, hidden_size = size
    ref, x, h, params = _rnn_case(batch, input_size, hidden_size, seed)
    h = torch.tanh(h)
    g = torch.Generator().manual_seed(seed + 1000)
    dh_next = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    x_leaf, h_leaf = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
    h_next = ref(x_leaf, h_leaf)
    weights = (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    # a scalar loss (no grad_outputs: that path imports sympy, seconds on first use)
    loss = (h_next * dh_next).sum()
    grads = torch.autograd.grad(loss, (x_leaf, h_leaf, *weights))
    expected = grads[:5]  # dbias_ih == dbias_hh: both biases enter the sum the same way
    return x, h, params, dh_next, h_next.detach(), expected


def _cell_variants(dh_next, x, h, h_next, params, expected):
    # autograd's gradient of the pre-activation, the start of every named mistake
    (pre,) = _leaves(F.linear(x, params[0], params[2]) + F.linear(h, params[1], params[3]))
    with torch.enable_grad():
        (da,) = torch.autograd.grad((torch.tanh(pre) * dh_next).sum(), pre)
    right = dict(zip(_BACKWARD_NAMES, expected, strict=True))
    case = CellGradients(dh_next, x, h, h_next, params[0], params[1], da, right)
    return _found(CELL_BACKWARD_MISTAKES, case)


def _check_rnn_cell_backward(rnn_cell_backward, *, sizes, seed: int) -> None:
    """``rnn_cell_backward`` equals torch.autograd through ``nn.RNNCell`` (float64, 1e-10).

    ``sizes`` holds ``CellSize(batch, input_size, hidden_size)``. The loss is ``(h_next *
    dh_next).sum()``, so autograd's gradients of it are exactly what the exercise computes. The
    previous state is a genuine tanh RNN state (every entry between -1 and 1).
    """
    worst = 0.0
    for i, size in enumerate(records(CellSize, sizes)):
        x, h, params, dh_next, h_next, expected = _cell_backward_case(size, seed + i)
        w_ih, w_hh = params[0], params[1]
        inputs = {"dh_next": dh_next, "x": x, "h": h, "weight_ih": w_ih, "weight_hh": w_hh}
        got = _call_backward(
            "rnn_cell_backward",
            rnn_cell_backward,
            (dh_next, x, h, h_next, w_ih, w_hh),
            inputs,
            _BACKWARD_NAMES,
        )
        worst = max(
            worst,
            _compare_gradients(
                "rnn_cell_backward",
                got,
                expected,
                _BACKWARD_NAMES,
                lambda a=(dh_next, x, h, h_next, params, expected): _cell_variants(*a),
                inputs,
                "torch.autograd",
            ),
        )
    report("rnn_cell_backward", len(sizes), worst, "torch.autograd")


# ------------------------------------------------------------------- back-propagation in time


def _unrolled(doutput, x, h0, params, *, carry=True, last_only=False, through_tanh=True):
    """Autograd through the RNN unrolled step by step, each step with its own copy of the
    weights, so that each step's share of a weight gradient can be read.

    ``carry=False`` cuts the graph between steps; ``last_only`` keeps only the last step's
    output in the loss; ``through_tanh=False`` lets the gradient pass tanh unchanged (same
    values). Returns ``{"dx", "dh0", "shares": [(dw_ih, dw_hh, db) per step], "da": (batch,
    seq, hidden), "dstate0": the gradient reaching the first output step}``.
    """
    seq = x.shape[1]
    x_leaf, h0_leaf = _leaves(x, h0)
    copies = [_leaves(*params[:3]) for _ in range(seq)]
    pres, states = [], []
    with torch.enable_grad():
        h, loss = h0_leaf, 0
        for t in range(seq):
            w_ih, w_hh, b = copies[t]
            prev = h if carry or t == 0 else h.detach()
            pre = F.linear(x_leaf[:, t], w_ih, b) + F.linear(prev, w_hh, params[3])
            pres.append(pre)
            h = pre.tanh() if through_tanh else pre - pre.detach() + pre.detach().tanh()
            states.append(h)
            if not last_only or t == seq - 1:
                loss = loss + (h * doutput[:, t]).sum()
        flat = [x_leaf, h0_leaf, *(w for c in copies for w in c), *pres, states[0]]
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
    shares = [tuple(grads[2 + 3 * t : 5 + 3 * t]) for t in range(seq)]
    das = grads[2 + 3 * seq : 2 + 4 * seq]
    return {
        "dx": grads[0],
        "dh0": grads[1] if grads[1] is not None else torch.zeros_like(h0),
        "shares": shares,
        "da": torch.stack(das, dim=1),
        "dstate0": grads[-1],
    }


def _summed(result):
    totals = [sum(share[k] for share in result["shares"]) for k in range(3)]
    return dict(zip(_BPTT_NAMES, (result["dx"], result["dh0"], *totals), strict=True))


def _weight_grad_from(inputs, da, weight):
    """Autograd's gradient of ``weight`` when it multiplies ``inputs`` (batch, seq, features)
    at every step and the pre-activations receive ``da``: a forward pass with the wrong state."""
    (leaf,) = _leaves(weight)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad((F.linear(inputs, leaf) * da).sum(), leaf)
    return grad


def _step_from_autograd(upstream, x_t, h_prev, h_next, w_ih, w_hh):
    """One step's five gradients, from autograd: through tanh at ``h_next``, then the products."""
    grads = _linear_grads(_tanh_slope_times(upstream, h_next), x_t, h_prev, w_ih, w_hh)
    return [grads[name] for name in _BACKWARD_NAMES]


def _forward_order(doutput, x, h0, output, w_ih, w_hh):
    """A loop that visits the steps first to last, carrying each step's dh into the next one."""
    seq = x.shape[1]
    carried, dx, totals, dh0 = torch.zeros_like(h0), [], 0, None
    for t in range(seq):
        h_prev = output[:, t - 1] if t > 0 else h0
        step = _step_from_autograd(
            doutput[:, t] + carried, x[:, t], h_prev, output[:, t], w_ih, w_hh
        )
        dx.append(step[0])
        carried = step[1]
        totals = [a + b for a, b in zip(totals or [0, 0, 0], step[2:], strict=True)]
        dh0 = carried if t == 0 else dh0
    return dict(zip(_BPTT_NAMES, (torch.stack(dx, dim=1), dh0, *totals), strict=True))


class Sequence(NamedTuple):
    """One sequence's backward case: upstream ``doutput``, input, ``h0``, the forward pass's
    ``output`` and parameters, and autograd through the unrolled steps (``full``)."""

    doutput: torch.Tensor
    x: torch.Tensor
    h0: torch.Tensor
    output: torch.Tensor
    params: tuple
    full: dict

    def right(self) -> dict:
        return _summed(self.full)

    def but(self, **changes) -> dict:
        return {**self.right(), **changes}

    def share(self, t) -> dict:
        return dict(zip(_BPTT_NAMES[2:], self.full["shares"][t], strict=True))

    def unrolled(self, **how) -> dict:
        return _summed(_unrolled(self.doutput, self.x, self.h0, self.params, **how))

    def previous(self) -> torch.Tensor:
        return torch.cat([self.h0.unsqueeze(1), self.output[:, :-1]], dim=1)


#: Back-propagation through time done wrong in the usual ways (``recognise``: ``{output name:
#: value}``), each built from autograd (see :func:`_unrolled`).
BPTT_MISTAKES = (
    Mistake(
        "last step only",
        lambda s: s.but(**s.share(-1)),
        "the weight gradients hold only the last time step's share: the same weights act at "
        "every step, so every step's share of dweight_ih, dweight_hh and dbias counts.",
    ),
    Mistake(
        "first step only",
        lambda s: s.but(**s.share(0)),
        "the weight gradients hold only one time step's share (the first, which a backward loop "
        "reaches last: overwritten instead of accumulated): the weights are shared across time, "
        "so every step's share counts.",
    ),
    Mistake(
        "no carry",
        lambda s: s.unrolled(carry=False),
        "dh is not carried to the earlier step: output[:, t] reaches the loss directly and as the "
        "previous state of step t + 1, and the gradient entering step t must include both.",
    ),
    Mistake(
        "last doutput only",
        lambda s: s.unrolled(last_only=True),
        "only the last step's doutput is used: every output step has its own upstream gradient, "
        "and each step must receive its own.",
    ),
    Mistake(
        "prev is current",
        lambda s: s.but(dweight_hh=_weight_grad_from(s.output, s.full["da"], s.params[1])),
        "step t's previous state is output[:, t - 1] (h0 for t = 0), not output[:, t], which is "
        "that step's h_next.",
    ),
    Mistake(
        "h0 everywhere",
        lambda s: s.but(
            dweight_hh=_weight_grad_from(
                s.h0.unsqueeze(1).expand_as(s.previous()), s.full["da"], s.params[1]
            )
        ),
        "every step uses h0 as its previous state: step t's previous state is output[:, t - 1] "
        "(h0 only for the first step).",
    ),
    Mistake(
        "forward order",
        lambda s: _forward_order(s.doutput, s.x, s.h0, s.output, s.params[0], s.params[1]),
        "the loop runs forwards in time: back-propagation through time starts at the last step "
        "and carries dh back to the first.",
    ),
    Mistake(
        "dx reversed",
        lambda s: s.but(dx=s.right()["dx"].flip(1)),
        "dx is in reverse time order: a loop that runs backwards meets the steps last-first; put "
        "step t's dx at dx[:, t] (or reverse the list before stacking).",
    ),
    Mistake(
        "dh0 before step 0",
        lambda s: s.but(dh0=s.full["dstate0"]),
        "dh0 is the gradient reaching output[:, 0], not h0: pass it through the first step too.",
    ),
    Mistake(
        "no derivative",
        lambda s: s.unrolled(through_tanh=False),
        "the tanh derivative is missing: at every step the gradient must pass back through that "
        "step's tanh.",
    ),
)


def _bptt_case(size: SequenceSize, seed: int):
    """A sequence through ``nn.RNN``, its upstream gradient, and autograd's five gradients of
    ``(output * doutput).sum()``."""
    batch, seq, input_size, hidden_size = size
    remote.manual_seed(seed)
    ref = nn.RNN(input_size, hidden_size, batch_first=True, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq, input_size, generator=g, dtype=F64)
    h0 = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    doutput = torch.randn(batch, seq, hidden_size, generator=g, dtype=F64)
    x_leaf, h0_leaf = x.clone().requires_grad_(True), h0.clone().requires_grad_(True)
    output, _ = ref(x_leaf, h0_leaf.unsqueeze(0))
    weights = (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
    loss = (output * doutput).sum()
    grads = torch.autograd.grad(loss, (x_leaf, h0_leaf, *weights))
    expected = grads[:5]  # dbias_ih == dbias_hh
    params = tuple(w.detach().clone() for w in weights)
    return doutput, x, h0, output.detach(), params, expected


def _bptt_variants(doutput, x, h0, output, params):
    full = _unrolled(doutput, x, h0, params)
    return _found(BPTT_MISTAKES, Sequence(doutput, x, h0, output, params, full))


def _check_rnn_backward(rnn_backward, *, sizes, seed: int) -> None:
    """``rnn_backward`` equals torch.autograd through ``nn.RNN(batch_first=True)`` (float64).

    ``sizes`` holds ``SequenceSize(batch, seq_length, input_size, hidden_size)``; the loss is
    ``(output * doutput).sum()``.
    """
    worst = 0.0
    for i, size in enumerate(records(SequenceSize, sizes)):
        doutput, x, h0, output, params, expected = _bptt_case(size, seed + i)
        w_ih, w_hh = params[0], params[1]
        inputs = {"doutput": doutput, "x": x, "h0": h0, "weight_ih": w_ih, "weight_hh": w_hh}
        got = _call_backward(
            "rnn_backward",
            rnn_backward,
            (doutput, x, h0, output, w_ih, w_hh),
            inputs,
            _BPTT_NAMES,
        )
        worst = max(
            worst,
            _compare_gradients(
                "rnn_backward",
                got,
                expected,
                _BPTT_NAMES,
                lambda a=(doutput, x, h0, output, params): _bptt_variants(*a),
                inputs,
                "torch.autograd",
            ),
        )
    report("rnn_backward", len(sizes), worst, "torch.autograd")
