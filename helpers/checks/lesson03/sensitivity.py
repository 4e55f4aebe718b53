"""Lesson 03's ``marker_sensitivity``: compared with central differences on the check's own
models, a weighted adder whose answer is known in closed form, and seeded float64 RNN, GRU and
LSTM regressors."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from helpers.checks.core import call, fail, report
from helpers.checks.engine import Mistake, records
from helpers.long_memory import LastStepRegressor, adding_problem


class SensitivityCase(NamedTuple):
    """``batch`` sequences of the adding problem, ``seq_length`` steps, run through a model of
    ``kind`` (``"adder"``, ``"RNN"``, ``"GRU"`` or ``"LSTM"``) with ``hidden`` units."""

    batch: int
    seq_length: int
    hidden: int
    kind: str


class _PositionWeightedAdder(nn.Module):
    """An adding-problem "model" whose answer is known in closed form: the marked values
    weighted by a factor that depends on their step, ``sum_t w_t * value_t * marker_t``; its
    sensitivity to a marked value is the weight of that value's step."""

    def __init__(self, seq_length: int):
        super().__init__()
        self.register_buffer("weights", torch.linspace(0.5, 1.5, seq_length, dtype=torch.float64))

    def forward(self, x):
        return (x[:, :, 0] * x[:, :, 1] * self.weights).sum(dim=1, keepdim=True)


def _sensitivity_model(kind: str, seq_length: int, hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "adder":
        return _PositionWeightedAdder(seq_length)
    model = LastStepRegressor(kind, 2, hidden).double()
    with torch.no_grad():  # larger weights than the default, so the answers depend on the input
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()


def _marked_steps(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sequence's first and second marked step, ``(batch,)`` each."""
    positions = x[:, :, 1].nonzero()  # (2 * batch, 2) rows (sequence, step), in order
    return positions[0::2, 1], positions[1::2, 1]


def _central_difference(model, x, steps, eps=1e-6, channel=0) -> torch.Tensor:
    """d answer_b / d x[b, steps[b], channel] for every sequence b, by central differences (each
    answer depends only on its own sequence, so one nudge per sequence, all at once); with
    ``steps`` None, every step of the channel is nudged together (the sum of the derivatives)."""
    rows = torch.arange(x.shape[0])
    up, down = x.clone(), x.clone()
    if steps is None:
        up[:, :, channel] += eps
        down[:, :, channel] -= eps
    else:
        up[rows, steps, channel] += eps
        down[rows, steps, channel] -= eps
    with torch.no_grad():
        return (model(up) - model(down)).reshape(-1) / (2 * eps)


class Probe(NamedTuple):
    """A model, its input, each sequence's marked steps and the right pair of answers."""

    model: nn.Module
    x: torch.Tensor
    first_steps: torch.Tensor
    second_steps: torch.Tensor
    expected: tuple

    def mean(self, steps, channel=0) -> float:
        return float(_central_difference(self.model, self.x, steps, channel=channel).mean())

    def last(self) -> torch.Tensor:
        return torch.full_like(self.first_steps, self.x.shape[1] - 1)


#: The usual wrong answers (pairs), measured like the reference: by central differences.
SENSITIVITY_MISTAKES = (
    Mistake(
        "swapped",
        lambda p: (p.expected[1], p.expected[0]),
        "the two are swapped: the first value is the derivative at the earlier marked step "
        "(in the first half of the sequence).",
    ),
    Mistake(
        "marker channel",
        lambda p: (p.mean(p.first_steps, channel=1), p.mean(p.second_steps, channel=1)),
        "that is the derivative with respect to the marker channel (channel 1) at the marked "
        "steps; the values are channel 0.",
    ),
    Mistake(
        "last step",
        lambda p: (p.mean(p.last()), p.mean(p.last())),
        "the derivatives are taken at the last step for both values, not at each "
        "sequence's marked steps (find them from the marker channel).",
    ),
    Mistake(
        "every step",
        lambda p: (p.mean(None), p.mean(None)),
        "each value is the derivative with respect to every value of the sequence, summed; "
        "only the value at the marked step counts.",
    ),
    Mistake(
        "summed over the batch",
        lambda p: (
            (p.expected[0] * p.x.shape[0], p.expected[1] * p.x.shape[0])
            if p.x.shape[0] > 1
            else None
        ),
        "the derivatives are summed over the batch: average them over the sequences.",
    ),
)

OTHERWISE = (
    "the derivative of each sequence's answer with respect to its value at the marked "
    "step, averaged over the sequences; compare your steps with the marker channel, and "
    "mind that a finite difference with a large step is not the derivative."
)


def _matching(got, probe: Probe) -> str:
    """What the first of the usual mistakes that gives ``got`` is, or the general advice."""
    for mistake in SENSITIVITY_MISTAKES:
        wrong = mistake.recognise(probe)
        if wrong is not None and all(
            abs(g - w) <= _SENSITIVITY_TOL * max(1.0, abs(w))
            for g, w in zip(got, wrong, strict=True)
        ):
            return mistake.tell
    return OTHERWISE


def _plain_pair(exercise: str, got, inputs) -> tuple[float, float]:
    if type(got) not in (tuple, list) or len(got) != 2:
        fail(
            exercise,
            f"should return a pair (first, second) of floats; got {type(got).__name__}"
            + (f" of length {len(got)}" if type(got) in (tuple, list) else ""),
            inputs,
        )
    pair = []
    for name, value in zip(("first", "second"), got, strict=True):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if type(value) not in (int, float) or not math.isfinite(value):
            fail(
                exercise,
                f"the {name} value should be a finite Python float; got "
                f"{type(value).__name__}" + (f" {value!r}" if type(value) is float else ""),
                inputs,
                "return float(...) of each average (a tensor that needs .item(), or a "
                "gradient that never reached the input, shows up here).",
            )
        pair.append(float(value))
    return pair[0], pair[1]


_SENSITIVITY_TOL = 1e-6


_SENSITIVITY_TOL = 1e-6


def _check_marker_sensitivity(marker_sensitivity, *, cases, seed: int) -> None:
    """``marker_sensitivity(model, x)`` equals central differences of the check's own models
    (a closed-form weighted adder, and seeded float64 RNN / GRU / LSTM regressors).

    ``cases`` holds ``SensitivityCase(batch, seq_length, hidden, kind)``."""
    exercise = "marker_sensitivity"
    worst = 0.0
    for i, (batch, seq_length, hidden, kind) in enumerate(records(SensitivityCase, cases)):
        model = _sensitivity_model(kind, seq_length, hidden, seed + i)
        generator = torch.Generator().manual_seed(seed + i)
        x, _ = adding_problem(batch, seq_length, generator=generator)
        x = x.double()
        first_steps, second_steps = _marked_steps(x)
        expected = tuple(
            float(_central_difference(model, x, steps).mean())
            for steps in (first_steps, second_steps)
        )
        what = "a model of the check" if kind == "adder" else f"a {kind} with hidden size {hidden}"
        inputs = {"x": x}
        got = _plain_pair(
            exercise, call(exercise, marker_sensitivity, model, x, inputs=inputs), inputs
        )
        errors = [abs(g - e) for g, e in zip(got, expected, strict=True)]
        if max(errors) <= _SENSITIVITY_TOL:
            worst = max(worst, *errors)
            continue
        which = "first" if errors[0] > _SENSITIVITY_TOL else "second"
        scale = max(abs(expected[0]), abs(expected[1]), 1e-12)
        cause = _matching(got, Probe(model, x, first_steps, second_steps, expected))
        fail(
            exercise,
            f"on {batch} sequence(s) of {seq_length} steps ({what}), the {which} value is off "
            f"by {errors[0 if which == 'first' else 1] / scale:.2g} relative to the largest "
            "of the two.",
            inputs,
            cause,
        )
    report(exercise, len(cases), worst, "central differences")
