"""Lesson 04's ``train_step``: one truncated-BPTT update, judged by what it does to a stand-in
model and a counting optimiser, against ``torch.nn.functional.cross_entropy`` and
``torch.autograd.grad`` on a copy of the model."""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import F32_ATOL, F32_RTOL, Cause, assert_close, call, fail
from helpers.checks.engine import Mistake, diagnosis, records
from helpers.checks.lesson04.model import ModelCase
from helpers.training import cpu_threads


class _StandInLM(nn.Module):
    """one-hot -> ``nn.LSTM`` -> ``nn.Linear``, without dropout: a small character model with
    the lesson's interface and an ``(h, c)`` state."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def init_hidden(self, batch_size):
        h = torch.zeros(self.num_layers, batch_size, self.hidden_size)
        return h, torch.zeros_like(h)

    def forward(self, x, hidden):
        output, hidden = self.lstm(nn.functional.one_hot(x, self.vocab_size).float(), hidden)
        return self.fc(output), hidden


class _CountingSGD:
    """Plain SGD (``p -= lr * p.grad``) with the interface of a ``torch.optim`` optimiser; it
    counts its ``step`` calls."""

    def __init__(self, params, lr: float):
        self.param_groups = [{"params": list(params), "lr": lr}]
        self.state: dict = {}
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        lr = self.param_groups[0]["lr"]
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                p.sub_(lr * p.grad)


_LR = 0.5


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def _reference_step(model, x, y, hidden):
    """The batch's loss, the LSTM's new state and the gradient of every parameter, computed on a
    copy of ``model`` (its parameters are not touched)."""
    twin = copy.deepcopy(model)
    logits, new_hidden = twin(x, hidden)
    flat_logits, flat_y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    loss = nn.functional.cross_entropy(flat_logits, flat_y)
    grads = torch.autograd.grad(loss, list(twin.parameters()))
    with torch.no_grad():
        losses = {
            "value": loss.item(),
            "sum": nn.functional.cross_entropy(flat_logits, flat_y, reduction="sum").item(),
            "last": nn.functional.cross_entropy(logits[:, -1], y[:, -1]).item(),
            "softmax": nn.functional.cross_entropy(flat_logits.softmax(-1), flat_y).item(),
        }
    return losses, tuple(h.detach() for h in new_hidden), list(grads)


def _loss_of(model, x, y, hidden, update: torch.Tensor | None = None) -> float:
    """The batch's loss on a copy of ``model``, its parameters first moved by ``-lr * update``."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        if update is not None:
            offset = 0
            for p in twin.parameters():
                n = p.numel()
                p.sub_((_LR * update[offset : offset + n]).view_as(p).to(p.dtype))
                offset += n
        logits, _ = twin(x, hidden)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        ).item()


def _applied(grads, clip_norm: float) -> torch.Tensor:
    """What ``clip_grad_norm_`` followed by a step applies: the gradients, scaled so their global
    norm is at most ``clip_norm``."""
    flat = _flat(grads)
    norm = float(flat.norm())
    return flat * min(1.0, clip_norm / (norm + 1e-6))


def _call_train_step(train_step, model, optimizer, x, y, hidden, clip_norm, inputs):
    name = "train_step"
    try:
        out = call(
            name,
            train_step,
            model,
            optimizer,
            x,
            y,
            hidden,
            clip_norm,
            inputs=inputs,
            expect=(AttributeError, RuntimeError, ValueError),
        )
    except AttributeError as exc:
        cause = None
        if "tuple" in str(exc) and "detach" in str(exc):
            cause = "an LSTM's state is a tuple (h, c): detach each of its tensors."
        fail(name, f"raised AttributeError: {exc}", inputs, cause)
    except (RuntimeError, ValueError) as exc:
        text = str(exc)
        cause = None
        if "backward through the graph a second time" in text:
            cause = "backward() ran twice on one graph: call loss.backward() once per step."
        elif "does not require grad" in text:
            cause = "the loss has no graph: compute it from the model's logits, with autograd on."
        elif "target size" in text or "batch_size" in text:
            cause = (
                "cross_entropy wants (N, vocab_size) logits and (N,) targets: flatten the "
                "batch and sequence dimensions of both."
            )
        fail(name, f"raised {type(exc).__name__}: {text[:300]}", inputs, cause)
    if not isinstance(out, tuple | list) or len(out) != 2:
        fail(name, f"should return a pair (loss, hidden), got {type(out).__name__}", inputs)
    return out


class _Step(NamedTuple):
    """One call of ``train_step``: the model before it, the batch, the state it got, and the
    update it should apply (flat, divided by the learning rate)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    hidden: tuple
    update: torch.Tensor


def _near_loss(got: float, value: float) -> bool:
    return abs(got - value) <= F32_ATOL + F32_RTOL * abs(value)


#: The common wrong losses (``recognise(losses, step)``: the loss the mistake returns).
STEP_LOSS_MISTAKES = (
    Mistake(
        "summed",
        lambda losses, step: losses["sum"],
        "the loss is summed over the positions: use the mean (cross_entropy's default reduction).",
    ),
    Mistake(
        "last position",
        lambda losses, step: losses["last"],
        "only the last position is scored: the loss runs over every position "
        "of the batch (flatten (batch, seq, vocab) logits to (batch * seq, vocab)).",
    ),
    Mistake(
        "softmax",
        lambda losses, step: losses["softmax"],
        "a softmax was applied before cross_entropy, which applies the "
        "log-softmax itself: give it the raw logits.",
    ),
    Mistake(
        "from zeros",
        lambda losses, step: _loss_of(
            step.model, step.x, step.y, tuple(torch.zeros_like(h) for h in step.hidden)
        ),
        "the hidden state passed in is ignored (the model started from zeros): "
        "call model(x, hidden).",
    ),
    Mistake(
        "after the step",
        lambda losses, step: _loss_of(step.model, step.x, step.y, step.hidden, step.update),
        "the loss was computed after the step (a second forward pass): return the "
        "loss of the forward pass the gradients came from.",
    ),
)


def _judge_step_loss(loss, losses, step: _Step, inputs) -> None:
    """The returned loss is the batch's; when it is not, ``step`` gives the losses of the usual
    mistakes (from a zero state, after the step)."""
    name = "train_step"
    if isinstance(loss, torch.Tensor):
        fail(
            name,
            "returned the loss as a torch.Tensor; return it as a Python float",
            inputs,
            "loss.item() gives the float (and lets the tensor's graph be freed).",
        )
    if isinstance(loss, bool) or not isinstance(loss, int | float | np.floating):
        fail(name, f"returned the loss as a {type(loss).__name__}; return a float", inputs)
    got, expected = float(loss), losses["value"]
    if _near_loss(got, expected):
        return
    wrong = [(m.recognise(losses, step), m.tell) for m in STEP_LOSS_MISTAKES]
    cause = next((m for v, m in wrong if _near_loss(got, v)), None)
    fail(
        name,
        f"returned loss {got:.6g}, but the cross-entropy of the model's logits on this batch "
        f"(torch.nn.functional.cross_entropy, mean over every position) is {expected:.6g}",
        inputs,
        cause,
    )


def _judge_step_hidden(new_hidden, expected, given, inputs) -> None:
    name = "train_step"
    if not isinstance(new_hidden, tuple | list) or len(new_hidden) != 2:
        fail(
            name,
            f"returned the hidden state as a {type(new_hidden).__name__}; return the LSTM's "
            "new state (h, c), a pair of tensors",
            inputs,
        )
    for label, got, ref, old in zip("hc", new_hidden, expected, given, strict=True):
        if isinstance(got, torch.Tensor) and (got.requires_grad or got.grad_fn is not None):
            fail(
                name,
                f"the returned {label} is still attached to the graph of this batch "
                f"(requires_grad={got.requires_grad})",
                inputs,
                "detach the new state before returning it (truncated back-propagation "
                "through time): the next batch starts from its values, and its gradients stop "
                "there.",
            )
        assert_close(
            name,
            got,
            ref,
            inputs=inputs,
            name=f"the returned {label}",
            reference="the LSTM's new state after this batch",
            atol=F32_ATOL,
            rtol=F32_RTOL,
            causes=[
                Cause("the state passed in is returned: return the one the model gives back.", old)
            ],
        )


class _Moved(NamedTuple):
    """What the parameters moved by (``got``, divided by the learning rate), what they should
    have (``expected``), from which gradients, and the clip."""

    got: torch.Tensor
    expected: torch.Tensor
    grads: list
    clip_norm: float
    model: nn.Module

    def near(self, value) -> bool:
        return bool(((self.got - value).abs() <= 1e-5 + 1e-4 * value.abs()).all())

    def flat(self) -> torch.Tensor:
        return _flat(self.grads)


def _clipped_after_step(m: _Moved) -> bool:
    """The step used the raw gradients, and the ones left on the model are the clipped ones."""
    left = [p.grad for p in m.model.parameters()]
    return all(g is not None for g in left) and bool(
        ((_flat(left) - m.expected).abs() <= 1e-5 + 1e-4 * m.expected.abs()).all()
    )


def _per_parameter(m: _Moved) -> torch.Tensor:
    return torch.cat(
        [g.double().reshape(-1) * min(1.0, m.clip_norm / (float(g.norm()) + 1e-6)) for g in m.grads]
    )


#: Why the parameters moved by the wrong amount, tried in order.
UPDATE_MISTAKES = (
    Mistake(
        "did not move",
        lambda m: bool((m.got == 0).all()),
        "the parameters did not move: zero the gradients before loss.backward(), not "
        "between backward() and step().",
    ),
    Mistake(
        "clipped after the step",
        lambda m: m.near(m.flat()) and _clipped_after_step(m),
        "the gradients were clipped after optimizer.step(): clip between loss.backward() "
        "and optimizer.step(), so the step uses the clipped gradients.",
    ),
    Mistake(
        "not clipped",
        lambda m: m.near(m.flat()),
        lambda m: (
            f"clip_norm={m.clip_norm:g} is not applied: after loss.backward() and before "
            "optimizer.step(), scale the gradients so their global norm is at most clip_norm "
            "(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm), or your lesson-01 "
            "clip_grad_norm)."
        ),
    ),
    Mistake(
        "clamped",
        lambda m: m.near(m.flat().clamp(-m.clip_norm, m.clip_norm)),
        "each gradient value was clamped to [-clip_norm, clip_norm] (clip_grad_value_): "
        "clip the global L2 norm of all the gradients together (clip_grad_norm_).",
    ),
    Mistake(
        "clipped per parameter",
        lambda m: m.near(_per_parameter(m)),
        "each parameter's gradient was clipped on its own: clip the global norm of all "
        "the gradients together, in one call on model.parameters().",
    ),
)


def _judge_update(moved: _Moved, inputs, call_text) -> None:
    """The parameters moved by the clipped gradient of the batch's loss."""
    got, expected, clip_norm = moved.got, moved.expected, moved.clip_norm
    close = (got - expected).abs() <= 1e-5 + 1e-4 * expected.abs()
    if bool(close.all()):
        return
    k = int((~close).nonzero()[0, 0])
    fail(
        "train_step",
        f"{call_text}: the parameters moved by the wrong amount. Entry {k} of the update "
        f"(all parameters flattened, divided by the learning rate) is {float(got[k]):.6g}, "
        f"expected {float(expected[k]):.6g}: the gradient of this batch's loss, its global "
        f"norm {float(moved.flat().norm()):.4g} clipped to at most clip_norm={clip_norm:g}",
        inputs,
        diagnosis(UPDATE_MISTAKES, moved),
    )


def _check_train_step(train_step, *, cases, seed: int) -> None:
    """One truncated-BPTT update, judged by what it does to a model and a counting optimiser.

    ``cases`` holds ``ModelCase(vocab_size, hidden_size, num_layers, batch, seq_length)``. For
    each, on a stand-in LSTM model and plain SGD: the returned loss equals ``cross_entropy`` of
    the batch (computed here on a copy of the model), the returned ``(h, c)`` equals the LSTM's
    new state and is detached, ``optimizer.step`` runs exactly once, the parameters move by the
    gradient clipped to a global norm of ``clip_norm`` (tried with a clip far above the
    gradient's norm and one far below it), and a second call does not add the first call's
    gradients to its own.
    """
    # Tiny tensors gain nothing from several threads, and on a busy machine they lose a lot.
    with cpu_threads(1):
        _train_step_cases(train_step, cases, seed)
    print(
        f"train_step: OK on {len(cases)} cases (loss = cross_entropy of the batch, state "
        "detached, one optimizer step, gradient clipped to clip_norm before it, no "
        "accumulation across calls)"
    )


def _one_step(train_step, base, batch, clip_norm, reference, inputs):
    """One call on a fresh copy of ``base``: returns the model, its optimiser and the state."""
    name = "train_step"
    x, y, hidden = batch
    losses, new_hidden, grads = reference
    model = copy.deepcopy(base)
    optimizer = _CountingSGD(model.parameters(), lr=_LR)
    before = _flat(model.parameters())
    call_text = f"train_step(model, optimizer, x, y, hidden, clip_norm={clip_norm:g})"
    loss, got_hidden = _call_train_step(
        train_step, model, optimizer, x, y, hidden, clip_norm, inputs
    )
    expected = _applied(grads, clip_norm)
    _judge_step_loss(loss, losses, _Step(base, x, y, hidden, expected), inputs)
    _judge_step_hidden(got_hidden, new_hidden, hidden, inputs)
    if optimizer.steps != 1:
        fail(
            name,
            f"{call_text} called optimizer.step() {optimizer.steps} times; one "
            "update per batch means exactly one call",
            inputs,
            "call optimizer.step() once, after loss.backward() and the clipping."
            if optimizer.steps == 0
            else None,
        )
    moved = (before - _flat(model.parameters())) / _LR
    _judge_update(_Moved(moved, expected, grads, clip_norm, model), inputs, call_text)
    return model, optimizer, got_hidden


def _second_step(train_step, model, optimizer, batch, clip_norm, inputs) -> None:
    """A second call, carrying the returned state: its update is its own gradient only."""
    x2, y2, state = batch
    _, _, grads2 = _reference_step(model, x2, y2, state)
    optimizer.steps = 0
    before = _flat(model.parameters())
    left = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    _call_train_step(train_step, model, optimizer, x2, y2, state, clip_norm, inputs)
    moved = (before - _flat(model.parameters())) / _LR
    expected2 = _applied(grads2, clip_norm)
    close = (moved - expected2).abs() <= 1e-5 + 1e-4 * expected2.abs()
    if not bool(close.all()):
        summed = _applied([a + b for a, b in zip(left, grads2, strict=True)], clip_norm)
        both = bool(((moved - summed).abs() <= 1e-5 + 1e-4 * summed.abs()).all())
        fail(
            "train_step",
            "on a second call (the next batch, with the state the first call returned), "
            "the parameters did not move by that batch's clipped gradient",
            inputs,
            "the gradients of the first call were added to those of the second: zero "
            "them (optimizer.zero_grad()) before loss.backward()."
            if both
            else None,
        )


def _train_step_cases(train_step, cases, seed: int) -> None:
    for i, case in enumerate(records(ModelCase, cases)):
        vocab_size, hidden_size, num_layers, batch, seq = case
        remote.manual_seed(seed + i)
        base = _StandInLM(vocab_size, hidden_size, num_layers)
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randint(0, vocab_size, (batch, seq), generator=g)
        y = torch.randint(0, vocab_size, (batch, seq), generator=g)
        hidden = tuple(
            torch.randn(num_layers, batch, hidden_size, generator=g) * 0.5 for _ in range(2)
        )
        inputs = {"x": x, "y": y, "h": hidden[0], "c": hidden[1]}
        reference = _reference_step(base, x, y, hidden)
        norm = float(_flat(reference[2]).norm())
        for clip_norm in (1e6, round(norm / 4, 6)):
            model, optimizer, got_hidden = _one_step(
                train_step, base, (x, y, hidden), clip_norm, reference, inputs
            )
        x2 = torch.randint(0, vocab_size, (batch, seq), generator=g)
        y2 = torch.randint(0, vocab_size, (batch, seq), generator=g)
        batch2 = (x2, y2, tuple(got_hidden))
        _second_step(train_step, model, optimizer, batch2, clip_norm, inputs)
