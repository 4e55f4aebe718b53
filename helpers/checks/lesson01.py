"""Checks for lesson 01_intro_to_rnns, against torch.nn.RNNCell, torch.nn.RNN, torch.nn.GRU,
torch.autograd (back-propagation through time), torch.nn.utils.clip_grad_norm_,
torch.nn.functional.cross_entropy and torch.optim.Adagrad."""

from __future__ import annotations

import contextlib
import io

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks import remote
from helpers.checks.core import (
    Cause,
    CheckFailure,
    _as_array,
    _close,
    _first_index,
    _float64,
    _nd_all,
    all_close_at_once,
    assert_choice,
    assert_close,
    assert_equal_values,
    call,
    check_integrity,
    fail,
    report,
)
from helpers.checks.engine import Exercise, exercise_table
from helpers.experiments import clipping_experiment, gradient_norms_through_time

F64 = torch.float64


def _rnn_case(batch: int, input_size: int, hidden_size: int, seed: int):
    remote.manual_seed(seed)
    ref = nn.RNNCell(input_size, hidden_size, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, input_size, generator=g, dtype=F64)
    h = torch.randn(batch, hidden_size, generator=g, dtype=F64)
    params = tuple(
        p.detach().clone() for p in (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
    )
    return ref, x, h, params


def _cell_causes(x, h, w_ih, w_hh, b_ih, b_hh):
    """Outputs of the usual wrong RNN steps, to recognise them."""
    pre = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    causes = [
        Cause(
            "bias_hh is missing: PyTorch adds two biases, bias_ih and bias_hh.",
            pre.sub(b_hh).tanh(),
        ),
        Cause(
            "bias_ih is missing: PyTorch adds two biases, bias_ih and bias_hh.",
            pre.sub(b_ih).tanh(),
        ),
        Cause(
            "the previous hidden state h is not used: add h @ weight_hh.T.",
            (x @ w_ih.T + b_ih + b_hh).tanh(),
        ),
        Cause("no activation: the RNN step ends with tanh.", pre),
        Cause("sigmoid instead of tanh.", torch.sigmoid(pre)),
        Cause("relu instead of tanh (nn.RNNCell's default nonlinearity is tanh).", torch.relu(pre)),
        Cause(
            "weight_hh is used untransposed: PyTorch stores weights (out, in), so the recurrent "
            "term is h @ weight_hh.T (a square weight_hh hides this from the shapes).",
            (x @ w_ih.T + b_ih + h @ w_hh + b_hh).tanh(),
        ),
        Cause(
            "the biases are added after tanh: they belong inside, "
            "tanh(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh).",
            (x @ w_ih.T + h @ w_hh.T).tanh() + b_ih + b_hh,
        ),
        Cause(
            "both biases are missing: PyTorch adds bias_ih and bias_hh.",
            (x @ w_ih.T + h @ w_hh.T).tanh(),
        ),
    ]
    if w_ih.shape[0] == w_ih.shape[1]:  # square weight_ih: these mistakes keep the shapes
        causes += [
            Cause(
                "weight_ih is used untransposed: PyTorch stores weights (out, in), so the input "
                "term is x @ weight_ih.T.",
                (x @ w_ih + b_ih + h @ w_hh.T + b_hh).tanh(),
            ),
            Cause(
                "both weights are used untransposed: the terms are x @ weight_ih.T and "
                "h @ weight_hh.T.",
                (x @ w_ih + b_ih + h @ w_hh + b_hh).tanh(),
            ),
            Cause(
                "weight_ih and weight_hh are swapped: x goes with weight_ih, h with weight_hh.",
                (x @ w_hh.T + b_ih + h @ w_ih.T + b_hh).tanh(),
            ),
        ]
    return causes


def _check_rnn_cell(rnn_cell, *, sizes, seed: int) -> None:
    """``rnn_cell`` equals ``nn.RNNCell`` on each ``(batch, input_size, hidden_size)`` in sizes."""
    worst = 0.0
    for i, (batch, input_size, hidden_size) in enumerate(sizes):
        ref, x, h, params = _rnn_case(batch, input_size, hidden_size, seed + i)
        inputs = {"x": x, "h": h, "weight_ih": params[0], "weight_hh": params[1]}
        got = call("rnn_cell", rnn_cell, x, h, *params, inputs=inputs)
        with torch.no_grad():
            expected = ref(x, h)
        worst = max(
            worst,
            assert_close(
                "rnn_cell",
                got,
                expected,
                inputs=inputs,
                name="h_next",
                reference="torch.nn.RNNCell",
                causes=_cell_causes(x, h, *params),
            ),
        )
    report("rnn_cell", len(sizes), worst, "torch.nn.RNNCell")


def _check_rnn_forward(rnn_forward, *, sizes, seed: int) -> None:
    """``rnn_forward`` equals a one-layer ``nn.RNN(batch_first=True)``.

    ``sizes`` holds ``(batch, seq_length, input_size, hidden_size)`` tuples.
    """
    worst = 0.0
    for i, (batch, seq, input_size, hidden_size) in enumerate(sizes):
        remote.manual_seed(seed + i)
        ref = nn.RNN(input_size, hidden_size, batch_first=True, dtype=F64)
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randn(batch, seq, input_size, generator=g, dtype=F64)
        h0 = torch.randn(batch, hidden_size, generator=g, dtype=F64)
        params = tuple(
            p.detach().clone()
            for p in (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
        )
        inputs = {"x": x, "h0": h0}
        got = call("rnn_forward", rnn_forward, x, h0, *params, inputs=inputs)
        if not isinstance(got, tuple) or len(got) != 2:
            fail(
                "rnn_forward",
                f"should return a tuple (output, h_n), got {type(got).__name__}",
                inputs,
            )
        with torch.no_grad():
            out, h_n = ref(x, h0.unsqueeze(0))
            out_zero, _ = ref(x, torch.zeros_like(h0).unsqueeze(0))
            from_h0 = torch.stack(
                [torch.rnn_tanh_cell(x[:, t], h0, *params) for t in range(seq)], dim=1
            )
        causes = [
            Cause("h0 is ignored: the first step must start from h0, not from zeros.", out_zero),
            Cause("output holds the inputs' time order reversed.", out.flip(1)),
            Cause(
                "the hidden state is not carried: every step starts from h0, but step t must "
                "start from the h_next of step t - 1.",
                from_h0,
            ),
            Cause(
                "output is shifted by one step: it holds h0 and drops the last state; append "
                "each h_next after computing it.",
                torch.cat([h0.unsqueeze(1), out[:, :-1]], dim=1),
            ),
        ]
        worst = max(
            worst,
            assert_close(
                "rnn_forward",
                got[0],
                out,
                inputs=inputs,
                name="output (batch, seq, hidden)",
                reference="torch.nn.RNN(batch_first=True)",
                causes=causes,
            ),
        )
        h_causes = [
            Cause("h_n is the first step's hidden state; it should be the last one.", out[:, 0])
        ]
        worst = max(
            worst,
            assert_close(
                "rnn_forward",
                got[1],
                h_n.squeeze(0),
                inputs=inputs,
                name="h_n (batch, hidden)",
                reference="torch.nn.RNN(batch_first=True)",
                causes=h_causes,
            ),
        )
    report("rnn_forward", len(sizes), worst, "torch.nn.RNN")


def _true_hidden_shape(
    num_layers, batch_size, hidden_size, bidirectional, kind=nn.GRU, input_size=4
):
    rnn = kind(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():
        _, h = rnn(torch.zeros(batch_size, 2, input_size))
    if isinstance(h, tuple):  # LSTM: (h, c)
        h = h[0]
    return tuple(h.shape)


def _plain_shape(value):
    return tuple(value) if isinstance(value, torch.Size) else value


def _check_hidden_state_shape(hidden_state_shape, *, cases) -> None:
    """``hidden_state_shape`` gives the shape PyTorch's recurrent layers really use.

    ``cases`` holds ``(num_layers, batch_size, hidden_size, bidirectional)``.
    """
    for num_layers, batch, hidden, bidirectional in cases:
        inputs = {
            "num_layers": num_layers,
            "batch_size": batch,
            "hidden_size": hidden,
            "bidirectional": bidirectional,
        }
        text = ", ".join(f"{k}={v}" for k, v in inputs.items())
        got = _plain_shape(
            call(
                "hidden_state_shape",
                hidden_state_shape,
                num_layers,
                batch,
                hidden,
                bidirectional=bidirectional,
            )
        )
        expected = _true_hidden_shape(num_layers, batch, hidden, bidirectional)
        cause = None
        if got == (batch, num_layers * (1 + bidirectional), hidden):
            cause = "batch_first=True does not apply to the hidden state: layers come first."
        elif bidirectional and got == (num_layers, batch, hidden):
            cause = "a bidirectional RNN keeps one state per direction: num_layers * 2."
        assert_equal_values(f"hidden_state_shape({text})", got, expected, name="shape", cause=cause)
    report("hidden_state_shape", len(cases), None, "the shapes nn.GRU and nn.LSTM return")


def _gru_text(input_size, hidden_size, num_layers, batch_first, bidirectional, batch_size):
    return (
        f"nn.GRU(input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}, "
        f"batch_first={batch_first}, bidirectional={bidirectional}) on a batch of {batch_size}"
    )


def _check_gru_quiz(gru_quiz_answer, *, cases) -> None:
    """The quiz of Udacity's RNN lesson, as a function: the shape of h_n for a given ``nn.GRU``.

    ``cases`` holds ``(input_size, hidden_size, num_layers, batch_first, bidirectional,
    batch_size)``. The visible case is the lesson's quiz (a GRU with input 100, hidden 20, one
    layer, batch_first, batches of 3); the hidden cases are other GRUs, so only reasoning scores.
    A wrong answer is never told the right one.
    """
    for input_size, hidden, layers, batch_first, bidirectional, batch in cases:
        config = (input_size, hidden, layers, batch_first, bidirectional, batch)
        remote.manual_seed(0)
        gru = nn.GRU(
            input_size, hidden, layers, batch_first=batch_first, bidirectional=bidirectional
        )
        layout = (batch, 2, input_size) if batch_first else (2, batch, input_size)
        with torch.no_grad():
            _, h_n = gru(torch.zeros(*layout))
        expected = tuple(h_n.shape)  # measured before the learner's code sees the module
        got = _plain_shape(call("gru_quiz_answer", gru_quiz_answer, gru, batch))
        if not (isinstance(got, tuple) and all(type(d) is int for d in got)):
            fail(
                "gru_quiz_answer",
                f"should return a tuple of ints, got {type(got).__name__}",
                {"gru": gru, "batch_size": batch},
            )
        if got == expected:
            continue
        directions = 2 if bidirectional else 1
        cause = None
        if len(got) == 2:
            cause = "h_n keeps a leading dimension for the layers (and directions), even for one."
        elif got == (batch, layers * directions, hidden):
            cause = "batch_first=True does not apply to the hidden state: layers come first."
        elif hidden != input_size and got == (layers * directions, batch, input_size):
            cause = "the hidden state has hidden_size features, not input_size."
        elif bidirectional and got == (layers, batch, hidden):
            cause = "a bidirectional GRU keeps one state per direction: num_layers * 2."
        elif not bidirectional and got == (layers * 2, batch, hidden):
            cause = "this GRU is not bidirectional: one direction, num_layers states."
        # the right shape is never printed: the message says what is wrong, not the answer
        fail(
            "gru_quiz_answer",
            f"{got!r} is not the shape of h_n for {_gru_text(*config)}",
            None,
            cause
            or "check each dimension against the GRU's settings: which of them shape the "
            "hidden state, in which order, and which (like input_size) do not?",
        )
    report("gru_quiz_answer", len(cases), None, "the shapes nn.GRU returns")


# ----------------------------------------------------------------------------------------------
# Back-propagation through time, by hand

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


def _cell_backward_variants(dh_next, x, h, h_next, w_ih, w_hh, da, expected):
    """The usual wrong gradients of one step, as ``(message, {output name: value})``.

    ``da`` is autograd's gradient of the pre-activation and ``expected`` autograd's five
    gradients; ``h`` is a genuine hidden state (|h| < 1)."""
    right = dict(zip(_BACKWARD_NAMES, expected, strict=True))

    def but(**changes):
        return {**right, **changes}

    batch = x.shape[0]
    variants = [
        (
            "the tanh derivative is missing: the gradient must pass back through tanh before it "
            "reaches the matrix products, and every one of the five gradients uses that.",
            _linear_grads(dh_next, x, h, w_ih, w_hh),
        ),
        (
            "the tanh derivative uses h, the previous state: tanh's slope belongs to this step's "
            "own pre-activation, whose tanh is h_next.",
            _linear_grads(_tanh_slope_times(dh_next, h), x, h, w_ih, w_hh),
        ),
        (
            "h_next is already tanh(a): written with tanh's output, the derivative takes h_next "
            "as it is, not tanh(h_next).",
            _linear_grads(_tanh_grad_at_input(dh_next, h_next), x, h, w_ih, w_hh),
        ),
        (
            "the tanh derivative is wrong: it is not 1 - h_next. Differentiate tanh(a) again "
            "and write the result with tanh(a) itself.",
            _linear_grads(da / (1 + h_next), x, h, w_ih, w_hh),
        ),
        (
            "that is sigmoid's derivative written with its output; tanh's derivative is another "
            "one: derive it.",
            _linear_grads(da * h_next / (1 + h_next), x, h, w_ih, w_hh),
        ),
        (
            "dh skips the recurrent weights: the previous state reaches the pre-activation only "
            "through weight_hh, so its gradient must come back through weight_hh too.",
            but(dh=da),
        ),
        (
            "dweight_hh uses h_next: weight_hh multiplies the previous state h, not the state "
            "this step produces.",
            but(dweight_hh=_linear_grads(da, x, h_next, w_ih, w_hh)["dweight_hh"]),
        ),
        (
            "the weight gradients are averaged over the batch: the loss adds up over the batch, "
            "so its gradients do too (no division by the batch size).",
            but(
                dweight_ih=right["dweight_ih"] / batch,
                dweight_hh=right["dweight_hh"] / batch,
                dbias=right["dbias"] / batch,
            ),
        ),
        (
            "dbias adds the gradients of both biases: bias_ih and bias_hh each have their own "
            "gradient, equal to the other's, and dbias is that one gradient, not their sum.",
            but(dbias=2 * right["dbias"]),
        ),
    ]
    # mistakes the shapes only hide when a matrix is square
    if w_hh.shape[0] == w_hh.shape[1]:
        variants += [
            (
                "dh multiplies by weight_hh.T: the forward pass already used the transpose; "
                "in the backward pass the shapes decide (see the worked example's dx).",
                but(dh=_linear_grads(da, x, h, w_ih, w_hh, h_term=_untransposed)["dh"]),
            ),
            (
                "dweight_hh is transposed: PyTorch stores weights (out, in), and a gradient has "
                "its parameter's layout: row i belongs to hidden unit i.",
                but(dweight_hh=right["dweight_hh"].T),
            ),
        ]
    if w_ih.shape[0] == w_ih.shape[1]:
        variants += [
            (
                "dx multiplies by weight_ih.T: the forward pass already used the transpose; "
                "in the backward pass the shapes decide (see the worked example's dx).",
                but(dx=_linear_grads(da, x, h, w_ih, w_hh, x_term=_untransposed)["dx"]),
            ),
            (
                "dweight_ih is transposed: PyTorch stores weights (out, in), and a gradient has "
                "its parameter's layout: row i belongs to hidden unit i.",
                but(dweight_ih=right["dweight_ih"].T),
            ),
        ]
    return variants


def _causes_for(variants, name):
    return [Cause(message, outputs[name]) for message, outputs in variants]


def _compare_gradients(exercise, got, expected, names, variants, inputs, reference):
    _backward_shapes(exercise, got, expected, names, inputs)
    worst = all_close_at_once(
        exercise, got, expected, inputs=inputs, reference=reference, atol=1e-10, rtol=1e-7
    )
    if worst is not None:
        return worst
    worst = 0.0
    for name, g, e in zip(names, got, expected, strict=True):
        worst = max(
            worst,
            assert_close(
                exercise,
                g,
                e,
                inputs=inputs,
                name=name,
                reference=reference,
                causes=_causes_for(variants(), name),
            ),
        )
    return worst


def _check_rnn_cell_backward(rnn_cell_backward, *, sizes, seed: int) -> None:
    """``rnn_cell_backward`` equals torch.autograd through ``nn.RNNCell`` (float64, 1e-10).

    ``sizes`` holds ``(batch, input_size, hidden_size)``. The loss is ``(h_next * dh_next).sum()``,
    so autograd's gradients of it are exactly what the exercise computes. The previous state is
    a genuine tanh RNN state (every entry between -1 and 1).
    """
    worst = 0.0
    for i, (batch, input_size, hidden_size) in enumerate(sizes):
        ref, x, h, params = _rnn_case(batch, input_size, hidden_size, seed + i)
        h = torch.tanh(h)
        g = torch.Generator().manual_seed(seed + 1000 + i)
        dh_next = torch.randn(batch, hidden_size, generator=g, dtype=F64)
        x_leaf, h_leaf = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
        h_next = ref(x_leaf, h_leaf)
        weights = (ref.weight_ih, ref.weight_hh, ref.bias_ih, ref.bias_hh)
        # a scalar loss (no grad_outputs: that path imports sympy, seconds on first use)
        loss = (h_next * dh_next).sum()
        grads = torch.autograd.grad(loss, (x_leaf, h_leaf, *weights))
        expected = grads[:5]  # dbias_ih == dbias_hh: both biases enter the sum the same way
        h_next = h_next.detach()
        w_ih, w_hh = params[0], params[1]
        inputs = {"dh_next": dh_next, "x": x, "h": h, "weight_ih": w_ih, "weight_hh": w_hh}
        got = _call_backward(
            "rnn_cell_backward",
            rnn_cell_backward,
            (dh_next, x, h, h_next, w_ih, w_hh),
            inputs,
            _BACKWARD_NAMES,
        )

        def variants(dh_next=dh_next, x=x, h=h, h_next=h_next, params=params, expected=expected):
            # autograd's gradient of the pre-activation, the start of every named mistake
            (pre,) = _leaves(F.linear(x, params[0], params[2]) + F.linear(h, params[1], params[3]))
            with torch.enable_grad():
                (da,) = torch.autograd.grad((torch.tanh(pre) * dh_next).sum(), pre)
            return _cell_backward_variants(
                dh_next, x, h, h_next, params[0], params[1], da, expected
            )

        worst = max(
            worst,
            _compare_gradients(
                "rnn_cell_backward",
                got,
                expected,
                _BACKWARD_NAMES,
                variants,
                inputs,
                "torch.autograd",
            ),
        )
    report("rnn_cell_backward", len(sizes), worst, "torch.autograd")


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


def _bptt_variants(doutput, x, h0, output, params):
    """Back-propagation through time done wrong in the usual ways, as ``(message, {output name:
    value})``, each built from autograd (see :func:`_unrolled`)."""
    w_ih, w_hh = params[0], params[1]
    full = _unrolled(doutput, x, h0, params)
    right = _summed(full)
    previous = torch.cat([h0.unsqueeze(1), output[:, :-1]], dim=1)

    def but(**changes):
        return {**right, **changes}

    def share(t):
        return dict(zip(_BPTT_NAMES[2:], full["shares"][t], strict=True))

    built = {
        "last step only": lambda: but(**share(-1)),
        "first step only": lambda: but(**share(0)),
        "no carry": lambda: _summed(_unrolled(doutput, x, h0, params, carry=False)),
        "last doutput only": lambda: _summed(_unrolled(doutput, x, h0, params, last_only=True)),
        "prev is current": lambda: but(dweight_hh=_weight_grad_from(output, full["da"], w_hh)),
        "h0 everywhere": lambda: but(
            dweight_hh=_weight_grad_from(h0.unsqueeze(1).expand_as(previous), full["da"], w_hh)
        ),
        "forward order": lambda: _forward_order(doutput, x, h0, output, w_ih, w_hh),
        "dx reversed": lambda: but(dx=right["dx"].flip(1)),
        "dh0 before step 0": lambda: but(dh0=full["dstate0"]),
        "no derivative": lambda: _summed(_unrolled(doutput, x, h0, params, through_tanh=False)),
    }
    return [(message, built[mistake]()) for mistake, message in _BPTT_MISTAKES]


_BPTT_MISTAKES = (
    (
        "last step only",
        "the weight gradients hold only the last time step's share: the same weights act at "
        "every step, so every step's share of dweight_ih, dweight_hh and dbias counts.",
    ),
    (
        "first step only",
        "the weight gradients hold only one time step's share (the first, which a backward loop "
        "reaches last: overwritten instead of accumulated): the weights are shared across time, "
        "so every step's share counts.",
    ),
    (
        "no carry",
        "dh is not carried to the earlier step: output[:, t] reaches the loss directly and as the "
        "previous state of step t + 1, and the gradient entering step t must include both.",
    ),
    (
        "last doutput only",
        "only the last step's doutput is used: every output step has its own upstream gradient, "
        "and each step must receive its own.",
    ),
    (
        "prev is current",
        "step t's previous state is output[:, t - 1] (h0 for t = 0), not output[:, t], which is "
        "that step's h_next.",
    ),
    (
        "h0 everywhere",
        "every step uses h0 as its previous state: step t's previous state is output[:, t - 1] "
        "(h0 only for the first step).",
    ),
    (
        "forward order",
        "the loop runs forwards in time: back-propagation through time starts at the last step "
        "and carries dh back to the first.",
    ),
    (
        "dx reversed",
        "dx is in reverse time order: a loop that runs backwards meets the steps last-first; put "
        "step t's dx at dx[:, t] (or reverse the list before stacking).",
    ),
    (
        "dh0 before step 0",
        "dh0 is the gradient reaching output[:, 0], not h0: pass it through the first step too.",
    ),
    (
        "no derivative",
        "the tanh derivative is missing: at every step the gradient must pass back through that "
        "step's tanh.",
    ),
)


def _check_rnn_backward(rnn_backward, *, sizes, seed: int) -> None:
    """``rnn_backward`` equals torch.autograd through ``nn.RNN(batch_first=True)`` (float64).

    ``sizes`` holds ``(batch, seq_length, input_size, hidden_size)``; the loss is
    ``(output * doutput).sum()``.
    """
    worst = 0.0
    for i, (batch, seq, input_size, hidden_size) in enumerate(sizes):
        remote.manual_seed(seed + i)
        ref = nn.RNN(input_size, hidden_size, batch_first=True, dtype=F64)
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randn(batch, seq, input_size, generator=g, dtype=F64)
        h0 = torch.randn(batch, hidden_size, generator=g, dtype=F64)
        doutput = torch.randn(batch, seq, hidden_size, generator=g, dtype=F64)
        x_leaf, h0_leaf = x.clone().requires_grad_(True), h0.clone().requires_grad_(True)
        output, _ = ref(x_leaf, h0_leaf.unsqueeze(0))
        weights = (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0)
        loss = (output * doutput).sum()
        grads = torch.autograd.grad(loss, (x_leaf, h0_leaf, *weights))
        expected = grads[:5]  # dbias_ih == dbias_hh
        output = output.detach()
        params = tuple(w.detach().clone() for w in weights)
        w_ih, w_hh = params[0], params[1]
        inputs = {"doutput": doutput, "x": x, "h0": h0, "weight_ih": w_ih, "weight_hh": w_hh}
        got = _call_backward(
            "rnn_backward",
            rnn_backward,
            (doutput, x, h0, output, w_ih, w_hh),
            inputs,
            _BPTT_NAMES,
        )

        def variants(doutput=doutput, x=x, h0=h0, output=output, params=params):
            return _bptt_variants(doutput, x, h0, output, params)

        worst = max(
            worst,
            _compare_gradients(
                "rnn_backward", got, expected, _BPTT_NAMES, variants, inputs, "torch.autograd"
            ),
        )
    report("rnn_backward", len(sizes), worst, "torch.autograd")


# ----------------------------------------------------------------------------------------------
# Gradient clipping

_ZERO_NORM = (
    "a division by total_norm = 0 (an empty list, or gradients that are all zero): scale only "
    "when total_norm > max_norm, or divide by total_norm + 1e-6 as PyTorch does."
)
_CLIP_RTOL = 1e-5  # PyTorch divides by total_norm + 1e-6; dividing by total_norm is right too


def _torch_clip(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ on copies of ``grads``: (clipped list, total norm float)."""
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    total = nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad.detach() for p in params], float(total)


def _clip_case(shapes, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(tuple(shape), generator=g, dtype=F64) * scale for shape in shapes]


def _check_clip_grad_norm(clip_grad_norm, *, cases, seed: int) -> None:
    """``clip_grad_norm`` equals ``torch.nn.utils.clip_grad_norm_`` on the same tensors.

    ``cases`` holds ``(shapes, scale, max_norm)``: the gradients are random normal tensors of
    those shapes times ``scale`` (0: all zero; no shapes: an empty list).
    """
    for i, (shapes, scale, max_norm) in enumerate(cases):
        grads = _clip_case(shapes, scale, seed + i)
        expected, total = _torch_clip(grads, max_norm)
        inputs = {f"grads[{k}]": t for k, t in enumerate(grads)} or {"grads": []}
        inputs["max_norm"] = max_norm
        where = f"{len(grads)} tensors, total norm {total:.3g}, max_norm {max_norm}"
        try:
            got = call(
                "clip_grad_norm",
                clip_grad_norm,
                grads,
                max_norm,
                inputs=inputs,
                expect=(ZeroDivisionError,),
            )
        except ZeroDivisionError as exc:
            fail(
                "clip_grad_norm",
                f"raised ZeroDivisionError: {exc} ({where})",
                inputs,
                _ZERO_NORM,
            )
        if not isinstance(got, tuple | list) or len(got) != 2:
            fail(
                "clip_grad_norm",
                "should return a tuple (clipped, total_norm), got "
                + (f"{len(got)} values" if isinstance(got, tuple | list) else type(got).__name__),
                inputs,
            )
        clipped, total_norm = got
        if type(total_norm) is torch.Tensor:
            fail(
                "clip_grad_norm",
                "total_norm should be a Python float, got a tensor",
                inputs,
                "the docstring asks for a float: use .item() on a 0-dim tensor.",
            )
        if type(total_norm) not in (float, int) or total_norm != total_norm:
            fail(
                "clip_grad_norm",
                f"total_norm should be a Python float, got {type(total_norm).__name__}"
                + (" nan" if type(total_norm) is float else ""),
                inputs,
                "a division by a zero norm" if type(total_norm) is float else None,
            )
        norms = [float(g.norm()) for g in grads]
        coef = max_norm / (total + 1e-6)
        norm_causes = (
            (
                "total_norm is the norm after clipping: return the norm before clipping, as "
                "clip_grad_norm_ does, so the caller sees how large the gradient was.",
                min(total, max_norm),
            ),
            (
                "total_norm is the squared norm: take the square root of the sum of squares.",
                total**2,
            ),
            (
                "total_norm adds up each tensor's norm: the global norm is the square root of the "
                "sum of every element's square, over all tensors together.",
                sum(norms),
            ),
            (
                "total_norm is the largest tensor's norm: the global norm takes every tensor "
                "together.",
                max(norms, default=0.0),
            ),
            (
                "total_norm is the scale factor: return the gradients' norm before clipping.",
                min(1.0, coef),
            ),
        )
        if not abs(total_norm - total) <= 1e-10 + 1e-9 * total:
            cause = next(
                (m for m, v in norm_causes if abs(total_norm - v) <= 1e-10 + 1e-9 * abs(v)),
                None,
            )
            fail(
                "clip_grad_norm",
                f"total_norm differs from torch.nn.utils.clip_grad_norm_ ({where}): got "
                f"{total_norm:.6g}",
                inputs,
                cause,
            )
        if not isinstance(clipped, tuple | list) or len(clipped) != len(grads):
            fail(
                "clip_grad_norm",
                f"clipped should be a list of {len(grads)} tensors (one per gradient), got "
                + (
                    f"{len(clipped)} items"
                    if isinstance(clipped, tuple | list)
                    else type(clipped).__name__
                ),
                inputs,
            )
        if total == 0:  # all zero: a division by the norm gives nan
            for c in clipped:
                if type(c) is torch.Tensor and not bool(torch.isfinite(c.detach()).all()):
                    fail(
                        "clip_grad_norm",
                        f"clipped contains nan or inf although every gradient is zero ({where})",
                        inputs,
                        _ZERO_NORM,
                    )
        factor = min(1.0, coef)
        variants = (
            (
                "each tensor was clipped on its own norm: clipping uses one global norm over all "
                "tensors together, and scales every tensor by the same factor.",
                [g * min(1.0, max_norm / (n + 1e-6)) for g, n in zip(grads, norms, strict=True)],
            ),
            (
                "the gradients were scaled although their norm is at most max_norm: the factor is "
                "min(1, max_norm / total_norm), so small gradients stay as they are.",
                [g * coef for g in grads],
            ),
            (
                "the factor is upside down: multiply by max_norm / total_norm.",
                [g * (total / max_norm) for g in grads],
            ),
            (
                "the gradients were returned unscaled: when total_norm > max_norm, multiply each "
                "by max_norm / total_norm.",
                grads,
            ),
            (
                "the gradients were multiplied by max_norm only: the factor is "
                "max_norm / total_norm.",
                [g * max_norm for g in grads],
            ),
            (
                "the gradients were divided by total_norm only: the factor is "
                "max_norm / total_norm.",
                [g / total for g in grads] if total else grads,
            ),
        )
        reference = f"torch.nn.utils.clip_grad_norm_ ({where}, factor {factor:.3g})"
        quick = all_close_at_once(
            "clip_grad_norm",
            list(clipped),
            expected,
            inputs=inputs,
            reference=reference,
            atol=1e-10,
            rtol=_CLIP_RTOL,
        )
        if quick is not None:
            continue
        for k, (c, e) in enumerate(zip(clipped, expected, strict=True)):
            assert_close(
                "clip_grad_norm",
                c,
                e,
                inputs=inputs,
                name=f"clipped[{k}]",
                reference=reference,
                atol=1e-10,
                rtol=_CLIP_RTOL,
                causes=[Cause(m, v[k]) for m, v in variants],
            )
    report("clip_grad_norm", len(cases), None, "torch.nn.utils.clip_grad_norm_")


# ----------------------------------------------------------------------------------------------
# The capstone's two new pieces: the loss and the optimizer


def _compare_quietly(exercise, got, expected, *, inputs, name, reference, causes=(), atol=1e-10):
    """Like ``assert_close``, but a failure prints where and what was got, never the expected
    value (these answers are a loss and its gradient: an expected value would give them away)."""
    check_integrity(exercise)
    got_np, exp_np = _as_array(exercise, name, got, expected, inputs)
    ok = _close(got_np, exp_np, atol, 1e-7)
    if _nd_all(ok):
        return
    index = _first_index(~ok)
    wrong = int((~ok).sum())
    where = f" at index {index}" if ok.size > 1 else ""
    problem = (
        f"{name} differs from {reference}{where}: got {float(got_np[index]):.6g} "
        f"({wrong} of {ok.size} values wrong, tolerance {atol:g})"
    )
    cause = next(
        (
            c.message
            for c in causes
            if type(c.output) is torch.Tensor
            and tuple(c.output.shape) == got_np.shape
            and bool(_close(got_np, _float64(c.output), atol, 1e-7).all())
        ),
        None,
    )
    fail(exercise, problem, inputs, cause)


def _ce_reference(logits, targets, *, dim=1, loss_fn=None):
    """autograd's loss and gradient of ``loss_fn`` (default ``F.cross_entropy``)."""
    (leaf,) = _leaves(logits)
    with torch.enable_grad():
        if loss_fn is None:
            loss = F.cross_entropy(leaf, targets) if dim == 1 else _ce_dim0(leaf, targets)
        else:
            loss = loss_fn(leaf)
        (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def _ce_dim0(logits, targets):
    """Cross-entropy with the softmax taken down the columns (over the batch): a wrong axis."""
    log_probs = torch.log_softmax(logits, dim=0)
    return -log_probs.gather(1, targets.unsqueeze(1)).mean()


_NO_MAX = (
    "exp overflows for large logits (exp(1000) is inf in float64): the softmax of a row does not "
    "change when the same number is subtracted from all of its logits; choose that number so "
    "that no exp can overflow."
)


_LOG_OF_ZERO = (
    "the log of a probability that rounded to 0 is -inf: for large logits a small probability "
    "is below what float64 can hold, so compute log p_t from the (shifted) logits directly, "
    "without forming the probability first."
)


def _check_softmax_cross_entropy(softmax_cross_entropy, *, cases, seed: int) -> None:
    """``softmax_cross_entropy`` equals ``F.cross_entropy`` and autograd's gradient of it.

    ``cases`` holds ``(N, V, scale)``: logits are random normal times ``scale`` (float64), the
    targets random class indices.
    """
    name = "softmax_cross_entropy"
    for i, (n, v, scale) in enumerate(cases):
        g = torch.Generator().manual_seed(seed + i)
        logits = torch.randn(n, v, generator=g, dtype=F64) * scale
        targets = torch.randint(0, v, (n,), generator=g)
        inputs = {"logits": logits, "targets": targets}
        where = f"N={n}, V={v}, logits of size up to {float(logits.abs().max()):.3g}"
        got = call(name, softmax_cross_entropy, logits, targets, inputs=inputs)
        if not isinstance(got, tuple | list) or len(got) != 2:
            fail(
                name,
                "should return a pair (loss, dlogits), got "
                + (f"{len(got)} values" if isinstance(got, tuple | list) else type(got).__name__),
                inputs,
            )
        loss, dlogits = got
        if type(loss) in (float, int):
            loss = torch.tensor([float(loss)], dtype=F64)
        elif type(loss) is torch.Tensor and loss.numel() == 1 and loss.dim() <= 1:
            loss = loss.detach().reshape(1)
        else:
            fail(
                name,
                f"loss should be a float or a 0-d tensor, got {type(loss).__name__}"
                + (f" of shape {tuple(loss.shape)}" if type(loss) is torch.Tensor else ""),
                inputs,
                "the loss is one number, the mean over the N rows.",
            )
        for label, value in (("dlogits", dlogits), ("loss", loss)):
            if (
                type(value) is torch.Tensor
                and value.is_floating_point()
                and not bool(torch.isfinite(value.detach()).all())
            ):
                fail(
                    name,
                    f"{label} contains inf or nan ({where})",
                    inputs,
                    (_NO_MAX if label == "dlogits" else _LOG_OF_ZERO) if scale >= 100 else None,
                )
        ref_loss, ref_grad = _ce_reference(logits, targets)
        ref_loss = ref_loss.reshape(1)  # compared as one-element tensors
        wrong_axis = _ce_reference(logits, targets, dim=0)
        no_target = _ce_reference(
            logits, targets, loss_fn=lambda z: torch.logsumexp(z, dim=1).mean()
        )
        summed = (
            "the loss is the sum over the N rows, not the mean: the loss (and so its gradient) "
            "is divided by N."
        )
        axis = (
            "the softmax runs over the wrong axis: each row (one example) is a distribution over "
            "the V classes."
        )
        loss_causes = [Cause(axis, wrong_axis[0].reshape(1))]
        grad_causes = [Cause(axis, wrong_axis[1])]
        if n > 1:
            loss_causes.insert(0, Cause(summed, ref_loss * n))
            grad_causes.insert(0, Cause(summed, ref_grad * n))
        grad_causes.append(
            Cause(
                "dlogits misses the target's own term: the loss also picks out the target's "
                "logit directly, and that adds a term at the target's position of every row.",
                no_target[1],
            )
        )
        reference = f"F.cross_entropy ({where})"
        _compare_quietly(
            name,
            loss,
            ref_loss,
            inputs=inputs,
            name="loss",
            reference=reference,
            causes=loss_causes,
        )
        _compare_quietly(
            name,
            dlogits,
            ref_grad,
            inputs=inputs,
            name="dlogits",
            reference=f"autograd's gradient of F.cross_entropy ({where})",
            causes=grad_causes,
        )
    report(name, len(cases), None, "F.cross_entropy and its autograd gradient")


def _call_in_place(exercise, fn, args, inputs):
    """Call the learner's ``fn`` on ``args`` themselves (it must change them in place); when
    grading, the channel sends the arguments' state back after the call."""
    if not callable(fn):
        fail(exercise, f"expected a function, got {type(fn).__name__}", inputs)
    check_integrity(exercise)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            result = fn(*args)
    except NotImplementedError:
        fail(
            exercise,
            "not implemented yet: replace `raise NotImplementedError()` with your code.",
            inputs,
        )
    except CheckFailure:
        raise
    except Exception as exc:  # the learner's code may raise anything: report it
        fail(exercise, f"raised {type(exc).__name__}: {exc}", inputs)
    check_integrity(exercise)
    return result


def _torch_adagrad(params, steps, lr, eps, *, fresh_each_step=False, initial=0.0):
    """``torch.optim.Adagrad`` (lr_decay 0, weight_decay 0) on copies of ``params`` through the
    gradients of ``steps``: the parameters and the state sums after every step."""
    leaves = [torch.nn.Parameter(p.clone()) for p in params]

    def new():
        return torch.optim.Adagrad(leaves, lr=lr, eps=eps, initial_accumulator_value=initial)

    opt = new()
    history = []
    for grads in steps:
        if fresh_each_step:
            opt = new()
        for p, gr in zip(leaves, grads, strict=True):
            p.grad = gr.clone()
        opt.step()
        history.append(
            (
                [p.detach().clone() for p in leaves],
                [opt.state[p]["sum"].clone() for p in leaves],
            )
        )
    return history


def _check_adagrad_update(adagrad_update, *, cases, seed: int) -> None:
    """``adagrad_update`` equals ``torch.optim.Adagrad``'s step, in place, over several steps.

    ``cases`` holds ``(shapes, n_steps, lr, eps)``; ``eps`` ``None`` calls the learner's function
    without it (its default, 1e-10, is Adagrad's). Gradients are random normal, float64.
    """
    name = "adagrad_update"
    for i, (shapes, n_steps, lr, eps) in enumerate(cases):
        g = torch.Generator().manual_seed(seed + i)
        start = [torch.randn(tuple(s), generator=g, dtype=F64) for s in shapes]
        steps = [
            [torch.randn(tuple(s), generator=g, dtype=F64) * (0.1 + k) for s in shapes]
            for k in range(n_steps)
        ]
        eps_value = 1e-10 if eps is None else eps
        expected = _torch_adagrad(start, steps, lr, eps_value)
        not_summed = _torch_adagrad(start, steps, lr, eps_value, fresh_each_step=True)
        eps_inside = _torch_adagrad(start, steps, lr, 0.0, initial=eps_value)
        abs_sums = _torch_adagrad(start, [[gr.abs().sqrt() for gr in s] for s in steps], lr, 1.0)
        params = [p.clone() for p in start]
        state_sums = [torch.zeros_like(p) for p in start]
        for k, grads in enumerate(steps):
            given = [gr.clone() for gr in grads]
            inputs = {f"params[{j}]": p for j, p in enumerate(params)}
            inputs["lr"] = lr
            where = f"step {k + 1} of {n_steps}, lr {lr:g}, eps {eps_value:g}"
            before = [p.clone() for p in params]
            args = (params, given, state_sums, lr) + (() if eps is None else (eps,))
            result = _call_in_place(name, adagrad_update, args, inputs)
            if len(params) != len(start) or len(state_sums) != len(start):
                fail(name, f"changed the length of params or state_sums ({where})", inputs)
            for j, gr in enumerate(given):
                if type(gr) is not torch.Tensor or not torch.equal(gr, grads[j]):
                    fail(
                        name,
                        f"changed grads[{j}] ({where})",
                        inputs,
                        "the gradients are read only: leave grads as they are.",
                    )
            unchanged = all(
                type(p) is torch.Tensor and torch.equal(p, b)
                for p, b in zip(params, before, strict=True)
            )
            if unchanged:
                returned = isinstance(result, tuple | list) and any(
                    type(r) is torch.Tensor for r in result
                )
                fail(
                    name,
                    f"the tensors in params are unchanged after the call ({where})",
                    inputs,
                    (
                        "the new parameters were returned, but the update must happen in place: "
                        if returned
                        else "the update was not done in place: "
                    )
                    + "a line like p = p - ... makes a new tensor and only rebinds the name p; "
                    "change the tensors in the lists themselves (the caller keeps the lists).",
                )
            ref_params, ref_sums = expected[k]
            for j in range(len(start)):
                _compare_quietly(
                    name,
                    state_sums[j],
                    ref_sums[j],
                    inputs=inputs,
                    name=f"state_sums[{j}]",
                    reference=f"torch.optim.Adagrad's state 'sum' ({where})",
                    causes=[
                        Cause(
                            "state_sums holds only this step's squared gradient: it is a "
                            "running sum over every step so far.",
                            not_summed[k][1][j],
                        ),
                        Cause(
                            "state_sums adds up |g|: Adagrad accumulates squared gradients.",
                            abs_sums[k][1][j],
                        ),
                        Cause(
                            "state_sums is not updated in place: the caller's tensors must hold "
                            "the running sum after the call.",
                            torch.zeros_like(ref_sums[j]),
                        ),
                    ],
                )
            for j in range(len(start)):
                _compare_quietly(
                    name,
                    params[j],
                    ref_params[j],
                    inputs=inputs,
                    name=f"params[{j}]",
                    reference=f"torch.optim.Adagrad ({where})",
                    causes=[
                        Cause(
                            "eps is inside the square root: torch.optim.Adagrad adds eps after "
                            "taking the square root of the sum.",
                            eps_inside[k][0][j],
                        ),
                        Cause(
                            "the step uses only this step's squared gradient: divide by the "
                            "running sum of every step's squared gradients.",
                            not_summed[k][0][j],
                        ),
                    ],
                )
    report(name, len(cases), None, "torch.optim.Adagrad")


CLIPPING_CHOICES = ("with clipping", "without clipping")


def measured_lower_final_loss(**settings) -> str:
    """Which run of :func:`clipping_experiment` ends with the lower loss, measured with
    ``torch.nn.utils.clip_grad_norm_`` as the clipping (never the learner's)."""
    clipped = clipping_experiment(_torch_clip, **settings)["losses"][-1]
    unclipped = clipping_experiment(None, **settings)["losses"][-1]
    return CLIPPING_CHOICES[0] if float(clipped) < float(unclipped) else CLIPPING_CHOICES[1]


def _check_clipping_answer(lower_final_loss) -> None:
    """The learner's reading of the clipping plot matches the measurement."""
    answer = assert_choice("lower_final_loss", lower_final_loss, CLIPPING_CHOICES)
    if answer != measured_lower_final_loss():
        fail(
            "lower_final_loss",
            f"your answer {answer!r} is not what the experiment measures: compare the two loss "
            "curves at the last update.",
        )
    report("clipping question", 1)


GRADIENT_CHOICES = ("vanishes", "explodes", "stays constant")


def measured_gradient_behaviour(weight_scale: float, seq_length: int = 40) -> str:
    """What the experiment shows for ``weight_scale``, measured with torch.nn.RNNCell."""

    def torch_cell(x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    norms = gradient_norms_through_time(torch_cell, weight_scale, seq_length=seq_length)
    ratio = float(norms[-1])
    if ratio < 1e-2:
        return "vanishes"
    if ratio > 1e2:
        return "explodes"
    return "stays constant"


def _check_gradient_answers(small_weights_gradient, large_weights_gradient) -> None:
    """The learner's reading of the vanishing/exploding plot matches the measurement."""
    for name, answer, scale in (
        ("small_weights_gradient", small_weights_gradient, 0.7),
        ("large_weights_gradient", large_weights_gradient, 1.3),
    ):
        answer = assert_choice(name, answer, GRADIENT_CHOICES)
        truth = measured_gradient_behaviour(scale)
        if answer != truth:
            fail(
                name,
                f"your answer {answer!r} is not what the plot shows for weight_scale "
                f"{scale}: look at how the curve moves as the distance in time grows.",
            )
    report("gradient questions", 2)


#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    Exercise(
        "rnn_cell",
        "check_rnn_cell",
        _check_rnn_cell,
        reads=("rnn_cell",),
        visible={"sizes": ((3, 4, 5), (2, 6, 3), (2, 3, 3)), "seed": 0},
        hidden={"sizes": ((1, 1, 1), (5, 2, 7), (4, 9, 6), (3, 5, 5)), "seed": 1234},
    ),
    Exercise(
        "rnn_forward",
        "check_rnn_forward",
        _check_rnn_forward,
        reads=("rnn_forward",),
        visible={"sizes": ((2, 5, 3, 4), (3, 2, 4, 2)), "seed": 10},
        hidden={"sizes": ((1, 1, 1, 1), (4, 7, 2, 3), (2, 12, 5, 1)), "seed": 4321},
        prerequisite="rnn_cell",
    ),
    Exercise(
        "hidden_state_shape",
        "check_hidden_state_shape",
        _check_hidden_state_shape,
        reads=("hidden_state_shape",),
        visible={"cases": ((1, 3, 20, False), (2, 4, 8, False), (2, 5, 6, True))},
        hidden={"cases": ((3, 1, 1, True), (4, 7, 2, False), (1, 2, 9, True))},
    ),
    Exercise(
        "gru_quiz_answer",
        "check_gru_quiz",
        _check_gru_quiz,
        reads=("gru_quiz_answer",),
        # (input_size, hidden_size, num_layers, batch_first, bidirectional, batch_size)
        visible={"cases": ((100, 20, 1, True, False, 3),)},
        hidden={
            "cases": (
                (7, 5, 2, False, False, 1),
                (3, 4, 3, True, True, 2),
                (1, 1, 1, False, True, 6),
                (10, 30, 2, True, False, 4),
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
        # (batch, input_size, hidden_size)
        visible={"sizes": ((3, 4, 5), (2, 3, 3), (1, 2, 1)), "seed": 20},
        hidden={"sizes": ((1, 1, 1), (5, 6, 2), (4, 2, 7), (2, 5, 5)), "seed": 2468},
    ),
    Exercise(
        "rnn_backward",
        "check_rnn_backward",
        _check_rnn_backward,
        reads=("rnn_backward",),
        # (batch, seq_length, input_size, hidden_size)
        visible={"sizes": ((2, 5, 3, 4), (1, 1, 2, 3), (3, 4, 2, 1)), "seed": 30},
        hidden={
            "sizes": ((1, 1, 1, 1), (4, 7, 2, 3), (2, 9, 5, 5), (3, 2, 6, 1)),
            "seed": 1357,
        },
        prerequisite="rnn_cell_backward",
    ),
    Exercise(
        "clip_grad_norm",
        "check_clip_grad_norm",
        _check_clip_grad_norm,
        reads=("clip_grad_norm",),
        # (shapes of the gradients, their scale, max_norm)
        visible={
            "cases": (
                (((3, 4), (5,), (2, 2, 3)), 2.0, 1.0),
                (((4,), (2, 3)), 0.05, 5.0),
                ((), 1.0, 1.0),
                (((3,), (2, 2)), 0.0, 1.0),
            ),
            "seed": 40,
        },
        hidden={
            "cases": (
                (((6,), (), (3, 1, 2)), 5.0, 0.5),
                (((2, 5),), 0.1, 2.0),
                (((7, 3), (3,)), 30.0, 10.0),
                ((), 1.0, 0.1),
                (((1,),), 0.0, 3.0),
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
        # (N, V, scale of the logits)
        visible={"cases": ((4, 5, 1.0), (1, 3, 2.0), (6, 4, 1000.0)), "seed": 50},
        hidden={"cases": ((7, 2, 1.0), (3, 9, 30.0), (1, 6, 1000.0), (5, 1, 1.0)), "seed": 9753},
    ),
    Exercise(
        "adagrad_update",
        "check_adagrad_update",
        _check_adagrad_update,
        reads=("adagrad_update",),
        # (shapes of the parameters, steps, lr, eps; None: the function's default)
        visible={
            "cases": ((((3, 4), (5,)), 3, 0.1, None), (((2, 2),), 3, 0.5, 0.5)),
            "seed": 60,
        },
        hidden={
            "cases": (
                (((1,), (4, 3), (2, 1, 2)), 4, 0.05, None),
                (((6,),), 3, 1.0, 0.3),
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
