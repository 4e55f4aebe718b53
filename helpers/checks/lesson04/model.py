"""Lesson 04's ``CharRNN``: one-hot -> ``nn.LSTM`` -> ``nn.Linear`` run on the model's own
weights, its ``init_hidden``, its dropout, and that every parameter learns."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import (
    F32_ATOL,
    F32_RTOL,
    Cause,
    assert_close,
    call,
    fail,
    gradient_report,
    report,
)
from helpers.checks.engine import Mistake, causes, records

REFERENCE = "one-hot -> torch.nn.LSTM -> torch.nn.Linear"


class ModelCase(NamedTuple):
    """The sizes of one model case (``CharRNN``, ``train_step``)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    batch: int
    seq_length: int


def _build(CharRNN, vocab_size, hidden_size, num_layers, dropout):
    name = "CharRNN"
    args = (
        f"CharRNN({vocab_size}, hidden_size={hidden_size}, num_layers={num_layers}, "
        f"dropout={dropout})"
    )
    model = call(
        name,
        CharRNN,
        vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
    )
    if not remote.is_module(model):
        fail(name, f"{args} should build an nn.Module, got {type(model).__name__}")
    lstm, fc = getattr(model, "lstm", None), getattr(model, "fc", None)
    if not isinstance(lstm, nn.LSTM) or not isinstance(fc, nn.Linear):
        fail(
            name,
            f"{args} needs the layers self.lstm (an nn.LSTM) and self.fc (an nn.Linear) "
            "under exactly those names, so the checkpoint shipped with the lesson loads",
        )
    expected = {
        "input_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "batch_first": True,
    }
    for attr, value in expected.items():
        if getattr(lstm, attr) != value:
            fail(
                name,
                f"{args}: self.lstm.{attr} is {getattr(lstm, attr)}, expected {value}",
                cause=(
                    "the input is one-hot, so the LSTM's input_size is vocab_size."
                    if attr == "input_size"
                    else None
                ),
            )
    if (fc.in_features, fc.out_features) != (hidden_size, vocab_size):
        fail(
            name,
            f"{args}: self.fc maps {fc.in_features} -> {fc.out_features} features, "
            f"expected hidden_size -> vocab_size = {hidden_size} -> {vocab_size}",
        )
    keys = set(model.state_dict())
    allowed = {f"lstm.{k}" for k in lstm.state_dict()} | {f"fc.{k}" for k in fc.state_dict()}
    if keys != allowed:
        fail(
            name,
            f"{args} has parameters beyond self.lstm and self.fc: "
            f"{sorted(keys - allowed)}; the lesson's model is one-hot -> LSTM -> dropout -> "
            "Linear, which is what the shipped checkpoint holds",
        )
    return model


def _check_hidden(name, hidden, num_layers, batch, hidden_size, what):
    if not isinstance(hidden, tuple) or len(hidden) != 2:
        fail(name, f"{what} should be a tuple (h, c), got {type(hidden).__name__}")
    for label, tensor in zip("hc", hidden, strict=True):
        if not isinstance(tensor, torch.Tensor):
            fail(name, f"{what}: {label} should be a tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != (num_layers, batch, hidden_size):
            fail(
                name,
                f"{what}: {label} has shape {tuple(tensor.shape)}, expected "
                f"(num_layers, batch, hidden_size) = {(num_layers, batch, hidden_size)}",
                cause="PyTorch's LSTM state puts the layers first, even with batch_first=True."
                if tuple(tensor.shape) == (batch, num_layers, hidden_size)
                else None,
            )


def _frozen_cause(model, frozen) -> str:
    """Why some parameters get no gradient, from which ones they are."""
    names = [n for n, _ in model.named_parameters()]
    lstm = [n for n in names if n.startswith("lstm.")]
    fc = [n for n in names if n.startswith("fc.")]
    if set(lstm) <= set(frozen) and not set(fc) & set(frozen):
        return (
            "the LSTM's output is detached (or computed under torch.no_grad(), or through "
            "NumPy) before self.fc: the values are right, but no gradient reaches the LSTM, so "
            "it would never learn. Pass the LSTM's output to dropout and self.fc as it is."
        )
    if set(fc) <= set(frozen):
        return (
            "self.fc's weights take no part in the graph (detached, or the logits come from a "
            "copy of them): compute the logits with self.fc(...)."
        )
    layers = sorted({n.rsplit("_l", 1)[-1] for n in frozen if n.startswith("lstm.")})
    if layers:
        return (
            f"LSTM layer(s) {layers} are skipped or detached: run all num_layers layers inside "
            "the one self.lstm, on the graph."
        )
    return "a layer is unused, detached or computed outside autograd (e.g. through NumPy)."


class _Run(NamedTuple):
    """One forward pass of a case: the model, its input, the state it got, and the reference's
    logits from that state and from zeros."""

    model: nn.Module
    x: torch.Tensor
    hidden: tuple
    expected: torch.Tensor
    from_zero: torch.Tensor


#: The common mistakes of the logits.
LOGITS_MISTAKES = (
    Mistake(
        "softmax",
        lambda run: run.expected.softmax(-1),
        "a softmax was applied: return raw logits (CrossEntropyLoss and sampling "
        "apply the softmax themselves).",
    ),
    Mistake(
        "log-softmax",
        lambda run: run.expected.log_softmax(-1),
        "a log-softmax was applied: return raw logits.",
    ),
    Mistake(
        "state ignored",
        lambda run: run.from_zero,
        "the hidden state passed to forward is ignored: call self.lstm(..., hidden).",
    ),
)


def _check_init_hidden(model, case: ModelCase) -> None:
    name = "CharRNN"
    batch = case.batch
    hidden0 = call(name, model.init_hidden, batch)
    _check_hidden(name, hidden0, case.num_layers, batch, case.hidden_size, f"init_hidden({batch})")
    for label, tensor in zip("hc", hidden0, strict=True):
        if tensor.dtype != torch.float32 or bool(tensor.abs().max() != 0):
            fail(name, f"init_hidden({batch}): {label} should be float32 zeros")


def _check_forward(model, case: ModelCase, x, hidden, inputs) -> float:
    """The logits and the returned state against the reference: the largest difference."""
    name = "CharRNN"
    out = call(name, model, x, hidden, inputs=inputs)
    if not isinstance(out, tuple) or len(out) != 2:
        fail(
            name,
            f"forward should return a tuple (logits, hidden), got {type(out).__name__}",
            inputs,
        )
    logits, new_hidden = out
    with torch.no_grad():
        one_hot = nn.functional.one_hot(x, case.vocab_size).float()
        ref_out, ref_hidden = model.lstm(one_hot, hidden)
        expected = nn.functional.linear(ref_out, model.fc.weight, model.fc.bias)
        zero_out, _ = model.lstm(one_hot, tuple(torch.zeros_like(h) for h in hidden))
        from_zero = nn.functional.linear(zero_out, model.fc.weight, model.fc.bias)
    worst = assert_close(
        name,
        logits.detach() if isinstance(logits, torch.Tensor) else logits,
        expected,
        inputs=inputs,
        name="logits (batch, seq, vocab_size)",
        reference=REFERENCE,
        atol=F32_ATOL,
        rtol=F32_RTOL,
        causes=causes(LOGITS_MISTAKES, _Run(model, x, hidden, expected, from_zero)),
    )
    _check_hidden(
        name, new_hidden, case.num_layers, case.batch, case.hidden_size, "the returned hidden"
    )
    for label, got, ref in zip("hc", new_hidden, ref_hidden, strict=True):
        worst = max(
            worst,
            assert_close(
                name,
                got.detach(),
                ref,
                inputs=inputs,
                name=f"returned {label}",
                reference="torch.nn.LSTM's final state",
                atol=F32_ATOL,
                rtol=F32_RTOL,
                causes=[
                    Cause(
                        "the input hidden state is returned unchanged: return the "
                        "LSTM's new (h, c).",
                        hidden[0 if label == "h" else 1],
                    )
                ],
            ),
        )
    return worst


def _check_learning(model, x, hidden, inputs) -> None:
    """Dropout is active in training mode, and every parameter gets its gradient."""
    name = "CharRNN"
    model.train()
    a = call(name, model, x, hidden, inputs=inputs)[0]
    b = call(name, model, x, hidden, inputs=inputs)[0]
    if torch.equal(a, b):
        fail(
            name,
            "in training mode with dropout=0.3, two forward passes gave identical "
            "logits: dropout is not applied",
            inputs,
            "apply nn.Dropout(dropout) to the LSTM's output before self.fc.",
        )
    found = gradient_report(model, x, hidden, train=False)
    if found["error"] is not None:
        fail(name, f"backward() through the logits raised RuntimeError: {found['error']}")
    if found["bent"]:
        fail(
            name,
            f"the gradients autograd gives for {found['bent']} do not match how the logits "
            "change when they move (checked against the logits' own values)",
            inputs,
            "something bends the gradient: an in-place change of a tensor autograd still "
            "needs, .data, or a custom autograd function.",
        )
    frozen = found["frozen"] + found["missing"]
    if frozen:
        fail(name, f"no gradient reaches {frozen}", inputs, _frozen_cause(model, frozen))


def _check_char_rnn(CharRNN, *, cases, seed: int) -> None:
    """``CharRNN`` equals one-hot -> ``nn.LSTM`` -> ``nn.Linear`` on its own weights.

    ``cases`` holds ``ModelCase(vocab_size, hidden_size, num_layers, batch, seq_length)``. Also
    checks ``init_hidden``, that the hidden state is used and returned, that dropout is applied
    in training mode only, and that every parameter receives a gradient.
    """
    name = "CharRNN"
    worst = 0.0
    for i, case in enumerate(records(ModelCase, cases)):
        remote.manual_seed(seed + i)
        model = _build(CharRNN, case.vocab_size, case.hidden_size, case.num_layers, 0.3)
        model.eval()
        _check_init_hidden(model, case)
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randint(0, case.vocab_size, (case.batch, case.seq_length), generator=g)
        hidden = tuple(
            torch.randn(case.num_layers, case.batch, case.hidden_size, generator=g) * 0.5
            for _ in range(2)
        )
        inputs = {"x": x, "h": hidden[0], "c": hidden[1]}
        worst = max(worst, _check_forward(model, case, x, hidden, inputs))
        _check_learning(model, x, hidden, inputs)
    report(name, len(cases), worst, "one-hot -> nn.LSTM -> nn.Linear")
