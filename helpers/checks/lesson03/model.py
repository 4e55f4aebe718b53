"""Lesson 03's ``SimpleRNN``: run against its own ``torch.nn.RNN`` and ``torch.nn.Linear``
layers (the composition must be exactly "recurrent layer, then a linear head on every step") and
probed for the properties the lesson needs: output and hidden shapes, a hidden state that is
really used, ``hidden=None`` meaning zeros, and a gradient that reaches every parameter."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import (
    F32_ATOL,
    F32_RTOL,
    Cause,
    CheckFailure,
    assert_close,
    call,
    fail,
    gradient_report,
    report,
)
from helpers.checks.engine import Mistake, causes, diagnosis, records


class SimpleRNNCase(NamedTuple):
    """The sizes of one ``SimpleRNN`` and of the batch it runs on."""

    input_size: int
    output_size: int
    hidden_dim: int
    n_layers: int
    batch: int
    seq_length: int


def _simple_rnn_layers(
    exercise: str, model: nn.Module, input_size, output_size, hidden_dim, n_layers, inputs
) -> tuple[nn.RNN, nn.Linear]:
    """The model's single ``nn.RNN`` and its linear head, checked against the sizes asked for."""
    rnns = [m for m in model.modules() if type(m) is nn.RNN]
    if len(rnns) != 1:
        others = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)})
        fail(
            exercise,
            f"should hold exactly one torch.nn.RNN layer, found {len(rnns)}"
            + (f" (and {', '.join(others)})" if others else ""),
            inputs,
            "create it in __init__ as an attribute, e.g. self.rnn = nn.RNN(...).",
        )
    rnn = rnns[0]
    sizes = (rnn.input_size, rnn.hidden_size, rnn.num_layers)
    if sizes != (input_size, hidden_dim, n_layers):
        fail(
            exercise,
            f"its nn.RNN has (input_size, hidden_size, num_layers) = {sizes}, expected "
            f"{(input_size, hidden_dim, n_layers)}",
            inputs,
            "pass input_size, hidden_dim and n_layers from __init__'s arguments to nn.RNN.",
        )
    heads = [m for m in model.modules() if type(m) is nn.Linear]
    fitting = [m for m in heads if (m.in_features, m.out_features) == (hidden_dim, output_size)]
    if len(fitting) != 1:
        found = [(m.in_features, m.out_features) for m in heads]
        fail(
            exercise,
            f"should hold one nn.Linear(hidden_dim={hidden_dim}, output_size="
            f"{output_size}) as its head; found nn.Linear layers with (in, out) = {found}",
            inputs,
        )
    return rnn, fitting[0]


def _reference(rnn: nn.RNN, head: nn.Linear, x: torch.Tensor, hidden: torch.Tensor | None):
    """What "nn.RNN, then the linear head on every step" gives, whatever the layer's layout."""
    with torch.no_grad():
        if rnn.batch_first:
            outputs, h_n = rnn(x, hidden)
        else:
            outputs, h_n = rnn(x.transpose(0, 1), hidden)
            outputs = outputs.transpose(0, 1)
        return head(outputs), h_n


def _unpack(exercise: str, result, inputs):
    if not isinstance(result, tuple) or len(result) != 2:
        fail(
            exercise,
            f"forward should return a tuple (output, hidden), got {type(result).__name__}",
            inputs,
        )
    for name, value in zip(("output", "hidden"), result, strict=True):
        if not isinstance(value, torch.Tensor):
            fail(
                exercise,
                f"forward's {name} should be a torch.Tensor, got {type(value).__name__}",
                inputs,
            )
    return result


def _forward(exercise, model, x, hidden, inputs, rnn):
    try:
        return _unpack(exercise, call(exercise, model, x, hidden, inputs=inputs), inputs)
    except CheckFailure as failure:
        if rnn.batch_first:
            raise
        raise CheckFailure(
            f"{failure}\n  likely cause: nn.RNN was created without "
            "batch_first=True, so it reads x (batch, seq, input) as (seq, batch, "
            "input)."
        ) from None


#: Wrong output shapes, recognised from ``(shape, batch, seq, output_size)``.
OUTPUT_SHAPE_MISTAKES = (
    Mistake(
        "flattened",
        lambda shape, batch, seq, out: shape == (batch * seq, out),
        "the output is flattened to (batch * seq, output_size), as Simple_RNN.ipynb of "
        "Udacity's RNN lesson does; nn.Linear works on the last dimension, so apply it to "
        "the RNN's output directly and keep (batch, seq, output_size).",
    ),
    Mistake(
        "last step only",
        lambda shape, batch, seq, out: shape == (batch, out),
        "only the last step is returned; the head must be applied to every step.",
    ),
    Mistake(
        "batch and seq swapped",
        lambda shape, batch, seq, out: shape == (seq, batch, out),
        "batch and seq are swapped: use batch_first=True and keep x's layout.",
    ),
    Mistake(
        "head on hidden",
        lambda shape, batch, seq, out: len(shape) == 3 and shape[1:] == (batch, out),
        "the head was applied to hidden (every layer's state after the last step) instead "
        "of r_out (the top layer's output at every step).",
    ),
    Mistake(
        "pair swapped",
        lambda shape, batch, seq, out: len(shape) == 3 and shape[1] == batch and shape[0] != batch,
        "forward returns (hidden, output): the order is (output, hidden).",
    ),
)


def _check_output_shape(exercise, output, batch, seq, output_size, inputs) -> None:
    shape = tuple(output.shape)
    expected = (batch, seq, output_size)
    if shape == expected:
        return
    fail(
        exercise,
        f"output has shape {shape}, expected (batch, seq, output_size) = {expected}",
        inputs,
        diagnosis(OUTPUT_SHAPE_MISTAKES, shape, batch, seq, output_size),
    )


_RNN_PARAMETERS = ("weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l")
_BENT = (
    "the gradients autograd gives for {names} do not match how the output changes when they "
    "move (checked against the output's own values)"
)
_BENT_CAUSE = (
    "something bends the gradient: an in-place change of a tensor autograd still needs, .data, "
    "or a custom autograd function."
)


def _check_gradients_reach(name, model: nn.Module, x, hidden, inputs) -> None:
    """A loss on the output must give every parameter of ``model`` a non-zero gradient."""
    found = gradient_report(model, x, hidden)
    if found["frozen"]:
        fail(
            name,
            f"parameters {', '.join(found['frozen'])} have requires_grad=False, so training "
            "never changes them",
            inputs,
            "leave every parameter trainable (no requires_grad_(False)).",
        )
    if found["error"] is not None:
        fail(name, f"backward() through the output raised RuntimeError: {found['error']}", inputs)
    if found["bent"]:
        fail(name, _BENT.format(names=", ".join(found["bent"])), inputs, _BENT_CAUSE)
    missing = found["missing"]
    if not missing:
        return
    names = [n for n, _ in model.named_parameters()]
    rnn_names = [n for n in names if n.split(".")[-1].startswith(_RNN_PARAMETERS)]
    in_rnn = [n for n in missing if n in rnn_names]
    if rnn_names and len(in_rnn) == len(rnn_names):
        fail(
            name,
            "no gradient reaches the recurrent layer: after backward() of a loss on the "
            f"output, {', '.join(in_rnn)} have no gradient, so training would only ever fit "
            "the linear head",
            inputs,
            "the RNN's output is detached (or computed under torch.no_grad()) before the linear "
            "head: apply the head to r_out itself.",
        )
    fail(
        name,
        "after backward() of a loss on the output, these parameters have no (or a zero) "
        f"gradient: {', '.join(missing)}; training would never change them",
        inputs,
        "every layer must be part of the computation of the output, with no .detach(), "
        "torch.no_grad() or .data on the way.",
    )


#: Wrong outputs, recognised from the reference output.
OUTPUT_MISTAKES = tuple(
    Mistake(
        f"{label} after the head",
        lambda ref_output, fn=fn: fn(ref_output),
        f"a {label} after the linear head: the output is a regression value, "
        "so return the linear layer's output as it is.",
    )
    for fn, label in ((torch.tanh, "tanh"), (torch.sigmoid, "sigmoid"), (torch.relu, "ReLU"))
)


def _build(SimpleRNN, sizes: dict):
    exercise = "SimpleRNN"
    model = call(exercise, SimpleRNN, **sizes)
    if not remote.is_module(model):
        fail(
            exercise,
            f"SimpleRNN(...) should be a torch.nn.Module, got {type(model).__name__}",
            None,
            "class SimpleRNN(nn.Module) and call super().__init__() first.",
        )
    return model


def _check_hidden_shape(name, hidden, case: SimpleRNNCase, inputs) -> None:
    expected_hidden = (case.n_layers, case.batch, case.hidden_dim)
    if tuple(hidden.shape) == expected_hidden:
        return
    if tuple(hidden.shape) == (case.batch, case.hidden_dim):
        cause = (
            "r_out[:, -1] is the top layer's last output (batch, hidden_dim); return the "
            "hidden state nn.RNN gives back, (n_layers, batch, hidden_dim)."
        )
    else:
        cause = (
            "return the hidden state nn.RNN gives back, unchanged: layers come first, "
            "whatever batch_first says."
        )
    fail(
        name,
        f"hidden has shape {tuple(hidden.shape)}, expected (n_layers, batch, "
        f"hidden_dim) = {expected_hidden}",
        inputs,
        cause,
    )


def _check_state_is_used(name, model, rnn, x, h_a, h_b, output, inputs) -> None:
    """The output keeps its graph, and depends on the hidden state passed in."""
    if not output.requires_grad:
        fail(
            name,
            "output does not require grad, so training cannot change the weights",
            inputs,
            "no torch.no_grad() or .detach() inside forward; train_rnn detaches "
            "the hidden state, not forward.",
        )
    output_b, _ = _forward(name, model, x, h_b, {"x": x, "hidden": h_b}, rnn)
    if tuple(output_b.shape) == tuple(output.shape):
        change = float((output_b.detach() - output.detach()).abs().max())
        if change < 1e-6:
            fail(
                name,
                "the output is the same for two different hidden states passed in: "
                "the hidden state is ignored",
                inputs,
                "pass it on to the recurrent layer: self.rnn(x, hidden).",
            )


def _compare(name, output, hidden, rnn, head, x, h_a, inputs) -> float:
    """Output and hidden state against the model's own layers: the largest difference."""
    ref_output, ref_hidden = _reference(rnn, head, x, h_a)
    worst = assert_close(
        name,
        output,
        ref_output,
        inputs=inputs,
        name="output (batch, seq, output_size)",
        reference="its nn.RNN followed by its nn.Linear on every step",
        atol=F32_ATOL,
        rtol=F32_RTOL,
        causes=causes(OUTPUT_MISTAKES, ref_output),
    )
    return max(
        worst,
        assert_close(
            name,
            hidden,
            ref_hidden,
            inputs=inputs,
            name="hidden (n_layers, batch, hidden_dim)",
            reference="the hidden state its nn.RNN returns",
            atol=F32_ATOL,
            rtol=F32_RTOL,
            causes=[
                Cause(
                    "forward returns the hidden state it was given, not the new one "
                    "nn.RNN returns.",
                    h_a,
                )
            ],
        ),
    )


def _compare_from_none(name, model, rnn, head, x) -> float:
    """``hidden=None`` starts from zeros, as ``nn.RNN`` does."""
    none_inputs = {"x": x, "hidden": None}
    output_none, _ = _forward(name, model, x, None, none_inputs, rnn)
    ref_none, _ = _reference(rnn, head, x, None)
    return assert_close(
        name,
        output_none,
        ref_none,
        inputs=none_inputs,
        name="output for hidden=None",
        reference="starting from a zero hidden state (what nn.RNN does with None)",
        atol=F32_ATOL,
        rtol=F32_RTOL,
    )


def _check_one(SimpleRNN, case: SimpleRNNCase, seed: int, i: int) -> float:
    remote.manual_seed(seed + i)
    sizes = {
        "input_size": case.input_size,
        "output_size": case.output_size,
        "hidden_dim": case.hidden_dim,
        "n_layers": case.n_layers,
    }
    model = _build(SimpleRNN, sizes)
    name = f"SimpleRNN({', '.join(f'{k}={v}' for k, v in sizes.items())})"
    g = torch.Generator().manual_seed(seed + 100 + i)
    x = torch.randn(case.batch, case.seq_length, case.input_size, generator=g)
    h_a = torch.randn(case.n_layers, case.batch, case.hidden_dim, generator=g) * 0.8
    h_b = torch.randn(case.n_layers, case.batch, case.hidden_dim, generator=g) * 0.8
    inputs = {"x": x, "hidden": h_a}
    rnn, head = _simple_rnn_layers(
        name, model, case.input_size, case.output_size, case.hidden_dim, case.n_layers, inputs
    )
    output, hidden = _forward(name, model, x, h_a, inputs, rnn)
    _check_output_shape(name, output, case.batch, case.seq_length, case.output_size, inputs)
    _check_hidden_shape(name, hidden, case, inputs)
    _check_state_is_used(name, model, rnn, x, h_a, h_b, output, inputs)
    worst = _compare(name, output, hidden, rnn, head, x, h_a, inputs)
    _check_gradients_reach(name, model, x, h_a, inputs)
    return max(worst, _compare_from_none(name, model, rnn, head, x))


def _check_simple_rnn(SimpleRNN, *, cases, seed: int) -> None:
    """``SimpleRNN`` is an ``nn.RNN`` with a linear head that uses and returns the hidden state.

    ``cases`` holds ``SimpleRNNCase(input_size, output_size, hidden_dim, n_layers, batch,
    seq_length)``.
    """
    worst = 0.0
    for i, case in enumerate(records(SimpleRNNCase, cases)):
        worst = max(worst, _check_one(SimpleRNN, case, seed, i))
    report("SimpleRNN", len(cases), worst, "torch.nn.RNN + torch.nn.Linear")
