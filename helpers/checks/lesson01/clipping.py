"""Lesson 01's gradient clipping: ``clip_grad_norm`` against ``torch.nn.utils.clip_grad_norm_``
on the same tensors, and the answers read off the clipping and the vanishing-gradient plots,
against measurements made here with PyTorch."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from helpers.checks.core import (
    Cause,
    all_close_at_once,
    assert_choice,
    assert_close,
    call,
    fail,
    report,
)
from helpers.checks.engine import Mistake, records
from helpers.checks.lesson01.cells import F64
from helpers.experiments import clipping_experiment, gradient_norms_through_time


class ClipCase(NamedTuple):
    """Random normal gradients of these ``shapes`` times ``scale`` (0: all zero; no shapes: an
    empty list), clipped to ``max_norm``."""

    shapes: tuple
    scale: float
    max_norm: float


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


class Clip(NamedTuple):
    """One clipping case: the gradients, ``max_norm``, PyTorch's total norm, each tensor's norm
    and the factor ``max_norm / (total + 1e-6)``."""

    grads: list
    max_norm: float
    total: float
    norms: list
    coef: float


#: The usual wrong total norms (``recognise``: the norm the mistake returns).
NORM_MISTAKES = (
    Mistake(
        "after clipping",
        lambda c: min(c.total, c.max_norm),
        "total_norm is the norm after clipping: return the norm before clipping, as "
        "clip_grad_norm_ does, so the caller sees how large the gradient was.",
    ),
    Mistake(
        "squared",
        lambda c: c.total**2,
        "total_norm is the squared norm: take the square root of the sum of squares.",
    ),
    Mistake(
        "sum of norms",
        lambda c: sum(c.norms),
        "total_norm adds up each tensor's norm: the global norm is the square root of the "
        "sum of every element's square, over all tensors together.",
    ),
    Mistake(
        "largest norm",
        lambda c: max(c.norms, default=0.0),
        "total_norm is the largest tensor's norm: the global norm takes every tensor together.",
    ),
    Mistake(
        "the factor",
        lambda c: min(1.0, c.coef),
        "total_norm is the scale factor: return the gradients' norm before clipping.",
    ),
)

#: The usual wrong clipped gradients (``recognise``: the list the mistake returns).
CLIPPED_MISTAKES = (
    Mistake(
        "each on its own",
        lambda c: [
            g * min(1.0, c.max_norm / (n + 1e-6)) for g, n in zip(c.grads, c.norms, strict=True)
        ],
        "each tensor was clipped on its own norm: clipping uses one global norm over all "
        "tensors together, and scales every tensor by the same factor.",
    ),
    Mistake(
        "always scaled",
        lambda c: [g * c.coef for g in c.grads],
        "the gradients were scaled although their norm is at most max_norm: the factor is "
        "min(1, max_norm / total_norm), so small gradients stay as they are.",
    ),
    Mistake(
        "upside down",
        lambda c: [g * (c.total / c.max_norm) for g in c.grads],
        "the factor is upside down: multiply by max_norm / total_norm.",
    ),
    Mistake(
        "unscaled",
        lambda c: c.grads,
        "the gradients were returned unscaled: when total_norm > max_norm, multiply each "
        "by max_norm / total_norm.",
    ),
    Mistake(
        "times max_norm",
        lambda c: [g * c.max_norm for g in c.grads],
        "the gradients were multiplied by max_norm only: the factor is max_norm / total_norm.",
    ),
    Mistake(
        "divided by the norm",
        lambda c: [g / c.total for g in c.grads] if c.total else c.grads,
        "the gradients were divided by total_norm only: the factor is max_norm / total_norm.",
    ),
)


def _call_clip(clip_grad_norm, clip: Clip, inputs, where):
    """The learner's ``(clipped, total_norm)``, with ``total_norm`` a plain number."""
    try:
        got = call(
            "clip_grad_norm",
            clip_grad_norm,
            clip.grads,
            clip.max_norm,
            inputs=inputs,
            expect=(ZeroDivisionError,),
        )
    except ZeroDivisionError as exc:
        fail("clip_grad_norm", f"raised ZeroDivisionError: {exc} ({where})", inputs, _ZERO_NORM)
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
    return clipped, total_norm


def _check_total_norm(total_norm, clip: Clip, inputs, where) -> None:
    total = clip.total
    wrong = [(m.tell, m.recognise(clip)) for m in NORM_MISTAKES]
    if not abs(total_norm - total) <= 1e-10 + 1e-9 * total:
        cause = next(
            (m for m, v in wrong if abs(total_norm - v) <= 1e-10 + 1e-9 * abs(v)),
            None,
        )
        fail(
            "clip_grad_norm",
            f"total_norm differs from torch.nn.utils.clip_grad_norm_ ({where}): got "
            f"{total_norm:.6g}",
            inputs,
            cause,
        )


def _check_clipped_list(clipped, clip: Clip, inputs, where) -> None:
    if not isinstance(clipped, tuple | list) or len(clipped) != len(clip.grads):
        fail(
            "clip_grad_norm",
            f"clipped should be a list of {len(clip.grads)} tensors (one per gradient), got "
            + (
                f"{len(clipped)} items"
                if isinstance(clipped, tuple | list)
                else type(clipped).__name__
            ),
            inputs,
        )
    if clip.total == 0:  # all zero: a division by the norm gives nan
        for c in clipped:
            if type(c) is torch.Tensor and not bool(torch.isfinite(c.detach()).all()):
                fail(
                    "clip_grad_norm",
                    f"clipped contains nan or inf although every gradient is zero ({where})",
                    inputs,
                    _ZERO_NORM,
                )


def _compare_clipped(clipped, expected, clip: Clip, inputs, where) -> None:
    factor = min(1.0, clip.coef)
    variants = [(m.tell, m.recognise(clip)) for m in CLIPPED_MISTAKES]
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
        return
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


def _check_clip_grad_norm(clip_grad_norm, *, cases, seed: int) -> None:
    """``clip_grad_norm`` equals ``torch.nn.utils.clip_grad_norm_`` on the same tensors.

    ``cases`` holds ``ClipCase(shapes, scale, max_norm)``: the gradients are random normal
    tensors of those shapes times ``scale`` (0: all zero; no shapes: an empty list).
    """
    for i, (shapes, scale, max_norm) in enumerate(records(ClipCase, cases)):
        grads = _clip_case(shapes, scale, seed + i)
        expected, total = _torch_clip(grads, max_norm)
        inputs = {f"grads[{k}]": t for k, t in enumerate(grads)} or {"grads": []}
        inputs["max_norm"] = max_norm
        where = f"{len(grads)} tensors, total norm {total:.3g}, max_norm {max_norm}"
        clip = Clip(grads, max_norm, total, [], max_norm / (total + 1e-6))
        clipped, total_norm = _call_clip(clip_grad_norm, clip, inputs, where)
        clip = clip._replace(norms=[float(g.norm()) for g in grads])
        _check_total_norm(total_norm, clip, inputs, where)
        _check_clipped_list(clipped, clip, inputs, where)
        _compare_clipped(clipped, expected, clip, inputs, where)
    report("clip_grad_norm", len(cases), None, "torch.nn.utils.clip_grad_norm_")


# ------------------------------------------------------------------------ what the plots show


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
