"""Lesson 03's ``forecast``: run on a fixed random RNN of the check's own that counts the time
steps it is fed, and compared with a private reference rollout; the usual mistakes are
recomputed on the same model and named."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import F32_ATOL, F32_RTOL, CheckFailure, assert_close, call, fail, report
from helpers.checks.engine import Mistake, causes, diagnosis, records


class ForecastCase(NamedTuple):
    """A context of ``context_length`` steps of ``size`` features, forecast ``horizon`` steps
    ahead by a fixed RNN of ``hidden_dim`` units in ``n_layers`` layers."""

    batch: int
    context_length: int
    horizon: int
    size: int
    hidden_dim: int
    n_layers: int


class _ProbeModel(nn.Module):
    """A fixed model with the ``SimpleRNN`` interface that records how it is called.

    ``calls`` holds, for every forward pass, the number of time steps fed and whether a hidden
    state was passed in: the check reads them to tell a hidden state that is not carried, and a
    rollout that re-reads the whole context at every step.
    """

    def __init__(self, size: int, hidden_dim: int, n_layers: int, seed: int):
        super().__init__()
        remote.manual_seed(seed)
        self.hidden_dim, self.n_layers = hidden_dim, n_layers
        self.rnn = nn.RNN(size, hidden_dim, n_layers, batch_first=True)
        self.fc = nn.Linear(hidden_dim, size)
        with torch.no_grad():  # large enough weights that every mistake changes the values
            for p in self.parameters():
                p.mul_(2.0)
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x, hidden=None):
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            self.calls.append((int(x.shape[1]), hidden is not None))
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out), hidden


def _rollout(model, context, horizon, *, carry=True, feed=None, first_input=None):
    """The reference rollout and its usual mistakes, computed directly with the probe's layers.

    ``carry=False``: every feedback step starts from hidden=None. ``feed``: a fixed tensor fed
    at every step instead of the prediction. ``first_input``: fed once after the context before
    the rollout proper (the last observed value read twice). Returns ``horizon + 1`` steps so
    that off-by-one mistakes can be cut from it.
    """
    with torch.no_grad():
        r_out, hidden = model.rnn(context)
        step = model.fc(r_out[:, -1:])
        if first_input is not None:
            r_out, hidden = model.rnn(first_input, hidden)
            step = model.fc(r_out)
        steps = [step]
        for _ in range(horizon):
            given = step if feed is None else feed
            r_out, new_hidden = model.rnn(given, hidden if carry else None)
            hidden = new_hidden
            step = model.fc(r_out)
            steps.append(step)
        return torch.cat(steps, dim=1)


#: Wrong shapes of the forecasts, recognised from ``(shape, case)``.
SHAPE_MISTAKES = (
    Mistake(
        "one too many",
        lambda shape, c: shape == (c.batch, c.horizon + 1, c.size),
        "one step too many: the first prediction (the output after the last "
        "observed value) is counted twice, or the loop runs horizon times after it.",
    ),
    Mistake(
        "one short",
        lambda shape, c: shape == (c.batch, c.horizon - 1, c.size),
        "one step short: the first prediction, made from the context, is missing.",
    ),
    Mistake(
        "context included",
        lambda shape, c: (
            shape
            in (
                (c.batch, c.context_length + c.horizon, c.size),
                (c.batch, c.context_length + c.horizon - 1, c.size),
            )
        ),
        "the outputs over the context are included: return only the horizon "
        "forecasts that follow it.",
    ),
    Mistake(
        "squeezed",
        lambda shape, c: shape == (c.batch, c.horizon) and c.size == 1,
        "the feature dimension was squeezed away: keep (batch, horizon, 1).",
    ),
    Mistake(
        "horizon first",
        lambda shape, c: shape == (c.horizon, c.batch, c.size),
        "horizon and batch are swapped: stack along dim=1 (batch first).",
    ),
)


class Rollout(NamedTuple):
    """The probe model, the context, the horizon and the reference rollout (``horizon + 1``
    steps)."""

    model: nn.Module
    context: torch.Tensor
    horizon: int
    full: torch.Tensor

    def wrong(self, **how) -> torch.Tensor | None:
        """A rollout done wrong; ``None`` with one step, where it equals the right one."""
        if self.horizon == 1:
            return None
        return _rollout(self.model, self.context, self.horizon, **how)[:, : self.horizon]


#: The usual wrong forecasts (with one step, only "dropped" and "read twice" differ from the
#: right answer).
VALUE_MISTAKES = (
    Mistake(
        "not carried",
        lambda r: r.wrong(carry=False),
        "the hidden state is not carried between steps: each prediction is fed back "
        "with hidden=None, so the model forgets the context after the first step. Pass "
        "on the hidden state the model returns: output, hidden = model(step, hidden).",
    ),
    Mistake(
        "last value fed",
        lambda r: r.wrong(feed=r.context[:, -1:]),
        "the last observed value is fed at every step instead of the model's own "
        "prediction: feed back the prediction the model has just made.",
    ),
    Mistake(
        "first dropped",
        lambda r: r.full[:, 1 : r.horizon + 1],
        "off by one: the first prediction (the model's output after the last observed "
        "value) is dropped; it is the first forecast.",
    ),
    Mistake(
        "first twice",
        lambda r: (
            None
            if r.horizon == 1
            else torch.cat([r.full[:, :1], r.full[:, : r.horizon - 1]], dim=1)
        ),
        "off by one: the first prediction appears twice; append each prediction once, "
        "then feed it back.",
    ),
    Mistake(
        "last value read twice",
        lambda r: _rollout(r.model, r.context, r.horizon, first_input=r.context[:, -1:])[
            :, : r.horizon
        ],
        "the last observed value is read twice (once in the context, once more as the "
        "first input): the output after the context already is the first forecast.",
    ),
)


def _check_shape(result, case: ForecastCase, name, inputs) -> None:
    if isinstance(result, tuple | list) and len(result) == 2:
        fail(
            name,
            f"returned a {type(result).__name__} of two items; expected one tensor "
            "(batch, horizon, output_size)",
            inputs,
            "return only the forecasts, not (forecasts, hidden).",
        )
    if not isinstance(result, torch.Tensor):
        return
    shape, want = tuple(result.shape), (case.batch, case.horizon, case.size)
    if shape != want:
        fail(
            name,
            f"the forecasts have shape {shape}, expected (batch, horizon, output_size) = {want}",
            inputs,
            diagnosis(SHAPE_MISTAKES, shape, case),
        )


def _compare(result, rollout: Rollout, name, inputs) -> float:
    """The forecasts against the reference rollout; a lost hidden state is named."""
    model = rollout.model
    try:
        return assert_close(
            name,
            result,
            rollout.full[:, : rollout.horizon],
            inputs=inputs,
            name="forecasts (batch, horizon, output_size)",
            reference="the reference rollout (warm up on the context, then feed each "
            "prediction back with the hidden state carried)",
            atol=F32_ATOL,
            rtol=F32_RTOL,
            causes=causes(VALUE_MISTAKES, rollout),
        )
    except CheckFailure as failure:
        text = str(failure)
        lost = any(not carried for _, carried in model.calls[1:])
        if "likely cause" not in text and lost and len(model.calls) > 1:
            text += (
                "\n  likely cause: after the first call the model was called with "
                "hidden=None: the hidden state is not carried between steps."
            )
        raise CheckFailure(text) from None


def _note_quadratic(quadratic) -> None:
    length, horizon, fed = quadratic
    print(
        f"note: forecast is right, but it fed the model {fed} time steps for a context of "
        f"{length} and a horizon of {horizon}; carrying the hidden state needs only "
        f"{length + horizon - 1} (no points lost). Re-reading the whole series at every "
        "step makes the time grow with the square of the horizon: read the context once, "
        "then feed one step at a time with the hidden state carried."
    )


def _check_forecast(forecast, *, cases, seed: int) -> None:
    """``forecast(model, context, horizon)`` equals the reference rollout on a fixed model.

    ``cases`` holds ``ForecastCase(batch, context_length, horizon, size, hidden_dim,
    n_layers)``; the model's input and output both have ``size`` features (a prediction is fed
    back as the next input).
    """
    worst = 0.0
    quadratic = None
    for i, case in enumerate(records(ForecastCase, cases)):
        batch, length, horizon, size, hidden_dim, n_layers = case
        model = _ProbeModel(size, hidden_dim, n_layers, seed + i)
        g = torch.Generator().manual_seed(seed + 50 + i)
        context = torch.randn(batch, length, size, generator=g)
        inputs = {"context": context}
        name = f"forecast(model, context, horizon={horizon})"
        result = call(name, forecast, model, context, horizon, inputs=inputs)
        rollout = Rollout(model, context, horizon, _rollout(model, context, horizon))
        _check_shape(result, case, name, inputs)
        worst = max(worst, _compare(result, rollout, name, inputs))
        fed = sum(steps for steps, _ in model.calls)
        if horizon > 2 and fed > 2 * (length + horizon):
            quadratic = (length, horizon, fed)
    if quadratic is not None:
        _note_quadratic(quadratic)
    report("forecast", len(cases), worst, "the reference rollout")
