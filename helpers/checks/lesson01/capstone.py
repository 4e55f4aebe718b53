"""Lesson 01's capstone pieces: ``softmax_cross_entropy`` against ``F.cross_entropy`` and
autograd's gradient of it, and ``adagrad_update`` against ``torch.optim.Adagrad``'s steps.
A failure never prints the expected value (it would give the answer away)."""

from __future__ import annotations

import contextlib
import io
from typing import NamedTuple

import torch
import torch.nn.functional as F

from helpers.checks.core import (
    CheckFailure,
    _as_array,
    _close,
    _first_index,
    _float64,
    _nd_all,
    call,
    check_integrity,
    fail,
    not_implemented,
    report,
)
from helpers.checks.engine import Mistake, causes, records
from helpers.checks.lesson01.backward import _leaves
from helpers.checks.lesson01.cells import F64


class CrossEntropyCase(NamedTuple):
    """``n`` rows of ``v`` logits, random normal times ``scale``."""

    n: int
    v: int
    scale: float


class AdagradCase(NamedTuple):
    """Parameters of these ``shapes``, ``n_steps`` updates with ``lr`` and ``eps`` (``None``:
    the learner's function is called without it, so its default is used)."""

    shapes: tuple
    n_steps: int
    lr: float
    eps: float | None


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


class CrossEntropy(NamedTuple):
    """One case's logits and targets, and autograd's loss (one element) and gradient."""

    logits: torch.Tensor
    targets: torch.Tensor
    loss: torch.Tensor
    grad: torch.Tensor


SUMMED = (
    "the loss is the sum over the N rows, not the mean: the loss (and so its gradient) "
    "is divided by N."
)
AXIS = (
    "the softmax runs over the wrong axis: each row (one example) is a distribution over "
    "the V classes."
)


def _times_n(value):
    """``value`` times N where there are several rows (with one, the sum is the mean)."""

    def wrong(c: CrossEntropy):
        n = c.logits.shape[0]
        return value(c) * n if n > 1 else None

    return wrong


#: The usual wrong losses (as one-element tensors).
LOSS_MISTAKES = (
    Mistake("summed", _times_n(lambda c: c.loss), SUMMED),
    Mistake("axis", lambda c: _ce_reference(c.logits, c.targets, dim=0)[0].reshape(1), AXIS),
)

#: The usual wrong gradients.
GRAD_MISTAKES = (
    Mistake("summed", _times_n(lambda c: c.grad), SUMMED),
    Mistake("axis", lambda c: _ce_reference(c.logits, c.targets, dim=0)[1], AXIS),
    Mistake(
        "no target term",
        lambda c: _ce_reference(
            c.logits, c.targets, loss_fn=lambda z: torch.logsumexp(z, dim=1).mean()
        )[1],
        "dlogits misses the target's own term: the loss also picks out the target's "
        "logit directly, and that adds a term at the target's position of every row.",
    ),
)


def _ce_answer(got, scale, inputs, where):
    """The learner's ``(loss, dlogits)``, the loss as a one-element tensor, both finite."""
    name = "softmax_cross_entropy"
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
    return loss, dlogits


def _check_softmax_cross_entropy(softmax_cross_entropy, *, cases, seed: int) -> None:
    """``softmax_cross_entropy`` equals ``F.cross_entropy`` and autograd's gradient of it.

    ``cases`` holds ``CrossEntropyCase(N, V, scale)``: logits are random normal times
    ``scale`` (float64), the targets random class indices.
    """
    name = "softmax_cross_entropy"
    for i, (n, v, scale) in enumerate(records(CrossEntropyCase, cases)):
        g = torch.Generator().manual_seed(seed + i)
        logits = torch.randn(n, v, generator=g, dtype=F64) * scale
        targets = torch.randint(0, v, (n,), generator=g)
        inputs = {"logits": logits, "targets": targets}
        where = f"N={n}, V={v}, logits of size up to {float(logits.abs().max()):.3g}"
        got = call(name, softmax_cross_entropy, logits, targets, inputs=inputs)
        loss, dlogits = _ce_answer(got, scale, inputs, where)
        ref_loss, ref_grad = _ce_reference(logits, targets)
        ref_loss = ref_loss.reshape(1)  # compared as one-element tensors
        case = CrossEntropy(logits, targets, ref_loss, ref_grad)
        _compare_quietly(
            name,
            loss,
            ref_loss,
            inputs=inputs,
            name="loss",
            reference=f"F.cross_entropy ({where})",
            causes=causes(LOSS_MISTAKES, case),
        )
        _compare_quietly(
            name,
            dlogits,
            ref_grad,
            inputs=inputs,
            name="dlogits",
            reference=f"autograd's gradient of F.cross_entropy ({where})",
            causes=causes(GRAD_MISTAKES, case),
        )
    report(name, len(cases), None, "F.cross_entropy and its autograd gradient")


# ----------------------------------------------------------------------------- adagrad_update


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
        not_implemented(exercise, inputs)
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


class Histories(NamedTuple):
    """``torch.optim.Adagrad``'s parameters and sums after every step, done right and in the
    usual wrong ways; a mistake recognises ``(histories, step k, tensor j)``."""

    right: list
    not_summed: list
    eps_inside: list
    abs_sums: list


#: The usual wrong running sums.
SUM_MISTAKES = (
    Mistake(
        "not summed",
        lambda r, k, j: r.not_summed[k][1][j],
        "state_sums holds only this step's squared gradient: it is a "
        "running sum over every step so far.",
    ),
    Mistake(
        "sum of |g|",
        lambda r, k, j: r.abs_sums[k][1][j],
        "state_sums adds up |g|: Adagrad accumulates squared gradients.",
    ),
    Mistake(
        "not in place",
        lambda r, k, j: torch.zeros_like(r.right[k][1][j]),
        "state_sums is not updated in place: the caller's tensors must hold "
        "the running sum after the call.",
    ),
)

#: The usual wrong parameters.
PARAM_MISTAKES = (
    Mistake(
        "eps inside",
        lambda r, k, j: r.eps_inside[k][0][j],
        "eps is inside the square root: torch.optim.Adagrad adds eps after "
        "taking the square root of the sum.",
    ),
    Mistake(
        "not summed",
        lambda r, k, j: r.not_summed[k][0][j],
        "the step uses only this step's squared gradient: divide by the "
        "running sum of every step's squared gradients.",
    ),
)


def _histories(start, steps, lr, eps) -> Histories:
    return Histories(
        _torch_adagrad(start, steps, lr, eps),
        _torch_adagrad(start, steps, lr, eps, fresh_each_step=True),
        _torch_adagrad(start, steps, lr, 0.0, initial=eps),
        _torch_adagrad(start, [[gr.abs().sqrt() for gr in s] for s in steps], lr, 1.0),
    )


def _check_in_place(result, params, state_sums, given, grads, before, n, inputs, where):
    """The call kept the lists, left grads alone and changed the parameters in place."""
    name = "adagrad_update"
    if len(params) != n or len(state_sums) != n:
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
        type(p) is torch.Tensor and torch.equal(p, b) for p, b in zip(params, before, strict=True)
    )
    if unchanged:
        returned = isinstance(result, tuple | list) and any(type(r) is torch.Tensor for r in result)
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


def _compare_step(params, state_sums, runs: Histories, k, inputs, where) -> None:
    name = "adagrad_update"
    ref_params, ref_sums = runs.right[k]
    for j in range(len(ref_sums)):
        _compare_quietly(
            name,
            state_sums[j],
            ref_sums[j],
            inputs=inputs,
            name=f"state_sums[{j}]",
            reference=f"torch.optim.Adagrad's state 'sum' ({where})",
            causes=causes(SUM_MISTAKES, runs, k, j),
        )
    for j in range(len(ref_params)):
        _compare_quietly(
            name,
            params[j],
            ref_params[j],
            inputs=inputs,
            name=f"params[{j}]",
            reference=f"torch.optim.Adagrad ({where})",
            causes=causes(PARAM_MISTAKES, runs, k, j),
        )


def _check_adagrad_update(adagrad_update, *, cases, seed: int) -> None:
    """``adagrad_update`` equals ``torch.optim.Adagrad``'s step, in place, over several steps.

    ``cases`` holds ``AdagradCase(shapes, n_steps, lr, eps)``; ``eps`` ``None`` calls the
    learner's function without it (its default, 1e-10, is Adagrad's). Gradients are random
    normal, float64.
    """
    name = "adagrad_update"
    for i, (shapes, n_steps, lr, eps) in enumerate(records(AdagradCase, cases)):
        g = torch.Generator().manual_seed(seed + i)
        start = [torch.randn(tuple(s), generator=g, dtype=F64) for s in shapes]
        steps = [
            [torch.randn(tuple(s), generator=g, dtype=F64) * (0.1 + k) for s in shapes]
            for k in range(n_steps)
        ]
        eps_value = 1e-10 if eps is None else eps
        runs = _histories(start, steps, lr, eps_value)
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
            n = len(start)
            _check_in_place(result, params, state_sums, given, grads, before, n, inputs, where)
            _compare_step(params, state_sums, runs, k, inputs, where)
    report(name, len(cases), None, "torch.optim.Adagrad")
