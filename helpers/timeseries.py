"""Time-series data and forecasting for lesson 03.

Two parts, in the order the lesson uses them:

* **Sine waves.** ``sine_windows`` cuts independent windows (random phases) into a train/test
  split, ``sine_stream`` yields an endless stream of windows in which each window continues the
  one before (so a hidden state can be carried from one training step to the next), and
  ``next_step_mse`` / ``persistence_mse`` score next-step predictions on held-out windows. In every
  window the target is the input shifted by one step: ``y[:, t] = x[:, t + 1]``.
* **Multi-step forecasting.** ``forecast_errors`` measures how the error of a forecast grows
  with the horizon and ``plot_forecast`` draws one (the forecast itself, feeding a model's own
  predictions back as its inputs, is the lesson's exercise ``forecast``, not a helper).

The long-memory race of the lesson's last section is ``helpers.long_memory``.

Models used with the sine-wave functions follow the lesson's ``SimpleRNN`` interface:
``model(x, hidden) -> (output, hidden)`` with ``x`` and ``output`` of shape ``(batch, seq, 1)``
and ``hidden=None`` meaning "start from zeros".
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import nn

from helpers import validate
from helpers.training import model_device

#: Time between two samples of the sine waves (a period of 2*pi/frequency is ~42 samples).
DT = 0.15
#: Steps at the start of a held-out window that are not scored. Read from a zero hidden state, a
#: network trained with a carried state needs a few samples to find where on the wave it is (and
#: its state a few more to settle), so held-out windows are made longer (60 steps) and only their
#: last 40 steps are scored.
WARMUP = 20

Batch = tuple[torch.Tensor, torch.Tensor]


def _check_wave(dt: float, frequency: float, noise: float) -> None:
    validate.positives(dt=dt, frequency=frequency)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0 (a standard deviation), got {noise!r}")


# --------------------------------------------------------------------------------------------
# Sine waves
# --------------------------------------------------------------------------------------------


def _sine(phases: torch.Tensor, start: int, n_points: int, dt: float, frequency: float):
    """``sin(frequency * dt * index + phase)`` for indices ``start .. start + n_points - 1``.

    Computed in float64 with the angle reduced modulo 2*pi, so that a stream can run for millions
    of steps without losing precision. Returns ``(len(phases), n_points)`` float32.
    """
    index = torch.arange(start, start + n_points, dtype=torch.float64)
    angle = torch.remainder(frequency * dt * index[None, :] + phases[:, None], 2 * math.pi)
    return torch.sin(angle).float()


@dataclass(frozen=True)
class SineWindows:
    """Sine-wave windows split into a training and a test set.

    ``x_*`` and ``y_*`` have shape ``(n_windows, seq_length, 1)``; ``y[:, t] = x[:, t + 1]``
    (the target is the input shifted by one step, noise included). ``clean_*`` is the noise-free
    wave under ``y_*``, for plots.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    clean_train: torch.Tensor
    clean_test: torch.Tensor


def sine_windows(
    n_windows: int,
    seq_length: int = 20,
    *,
    test_fraction: float = 0.25,
    noise: float = 0.0,
    dt: float = DT,
    frequency: float = 1.0,
    seed: int = 0,
) -> SineWindows:
    """Independent sine-wave windows (random phases), split into train and test sets.

    Each window holds ``seq_length + 1`` consecutive samples of ``sin(frequency * t + phase)``
    plus Gaussian noise of standard deviation ``noise``: the input ``x`` is the first
    ``seq_length`` samples and the target ``y`` the last ``seq_length`` (``x`` shifted by one).
    The last ``round(n_windows * test_fraction)`` windows form the test set.

    Returns:
        A ``SineWindows`` whose tensors are ``(n, seq_length, 1)`` float32 on the CPU.
    """
    validate.integer("n_windows", n_windows, 2)
    validate.integer("seq_length", seq_length)
    _check_wave(dt, frequency, noise)
    validate.fraction("test_fraction", test_fraction)
    n_test = round(n_windows * test_fraction)
    if not 1 <= n_test < n_windows:
        raise ValueError(
            f"test_fraction {test_fraction} of {n_windows} windows leaves {n_test} test windows; "
            "expected at least one window in each set"
        )
    generator = torch.Generator().manual_seed(seed)
    phases = torch.rand(n_windows, generator=generator, dtype=torch.float64) * 2 * math.pi
    clean = _sine(phases, 0, seq_length + 1, dt, frequency)
    noisy = clean + noise * torch.randn(clean.shape, generator=generator)
    x, y, clean_y = noisy[:, :-1, None], noisy[:, 1:, None], clean[:, 1:, None]
    cut = n_windows - n_test
    return SineWindows(x[:cut], y[:cut], x[cut:], y[cut:], clean_y[:cut], clean_y[cut:])


def sine_series(
    n_series: int,
    length: int,
    *,
    noise: float = 0.0,
    dt: float = DT,
    frequency: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """``n_series`` sine waves with random phases, ``length`` samples each, plus optional noise.

    Used for forecasting: split each series into a context (observed) and a continuation (truth).

    Returns:
        ``(n_series, length, 1)`` float32 on the CPU.
    """
    validate.integers(n_series=n_series, length=length)
    _check_wave(dt, frequency, noise)
    generator = torch.Generator().manual_seed(seed)
    phases = torch.rand(n_series, generator=generator, dtype=torch.float64) * 2 * math.pi
    clean = _sine(phases, 0, length, dt, frequency)
    return (clean + noise * torch.randn(clean.shape, generator=generator))[:, :, None]


def sine_stream(
    seq_length: int = 20,
    batch_size: int = 8,
    *,
    noise: float = 0.0,
    dt: float = DT,
    frequency: float = 1.0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Iterator[Batch]:
    """An endless stream of training windows in which each window continues the one before.

    Row ``r`` of the batch is one sine wave with its own random phase; window ``k`` holds its
    samples ``k * seq_length ... (k + 1) * seq_length`` (inputs) and the same shifted by one
    (targets). So ``x`` of window ``k + 1`` starts exactly where ``y`` of window ``k`` ended, and
    the hidden state left by window ``k`` is the right state to start window ``k + 1`` from.

    Yields:
        ``(x, y)``, each ``(batch_size, seq_length, 1)`` float32 on ``device`` (default: CPU),
        with ``y[:, t] = x[:, t + 1]`` and ``y[:, -1]`` equal to the next window's ``x[:, 0]``.
    """
    validate.integers(seq_length=seq_length, batch_size=batch_size)
    _check_wave(dt, frequency, noise)
    device = torch.device(device) if device is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    phases = torch.rand(batch_size, generator=generator, dtype=torch.float64) * 2 * math.pi
    last = _sine(phases, 0, 1, dt, frequency) + noise * torch.randn(
        batch_size, 1, generator=generator
    )
    start = 0
    while True:
        new = _sine(phases, start + 1, seq_length, dt, frequency)
        new = new + noise * torch.randn(new.shape, generator=generator)
        series = torch.cat([last, new], dim=1)  # (batch, seq_length + 1)
        yield series[:, :-1, None].to(device), series[:, 1:, None].to(device)
        last = series[:, -1:]
        start += seq_length


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x, None)``'s output, checked to be ``x``'s shape."""
    result = model(x, None)
    if not isinstance(result, tuple) or len(result) != 2:
        raise ValueError(f"the model should return (output, hidden), got {type(result).__name__}")
    output = result[0]
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != tuple(x.shape):
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"the model's output should have shape {tuple(x.shape)} (batch, seq, 1), got {got}"
        )
    return output


def _check_xy(x: torch.Tensor, y: torch.Tensor, warmup: int) -> None:
    if x.dim() != 3 or tuple(x.shape) != tuple(y.shape):
        raise ValueError(
            f"x and y should both be (batch, seq, features), got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    if not 0 <= warmup < x.shape[1]:
        raise ValueError(f"warmup must be between 0 and seq - 1 = {x.shape[1] - 1}, got {warmup}")


@torch.no_grad()
def next_step_mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor, warmup: int = WARMUP):
    """Mean squared error of ``model``'s next-step predictions on windows it has not seen.

    Each window is read from a zero hidden state (``hidden=None``); the first ``warmup`` steps
    are not scored (the model needs a few samples to tell where on the wave it is).

    Args:
        model: a module with the ``SimpleRNN`` interface, ``model(x, hidden) -> (output, hidden)``.
        x, y: ``(batch, seq, 1)`` inputs and targets with ``seq > warmup``, e.g.
            ``sine_windows(64, 60, ...).x_test`` and ``.y_test``.

    Returns:
        The MSE as a Python float. The model is left in the mode (train/eval) it was in.
    """
    _check_xy(x, y, warmup)
    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        output = _predict(model, x.to(device))
        error = (output[:, warmup:] - y.to(device)[:, warmup:]).pow(2).mean()
    finally:
        model.train(was_training)
    return float(error)


def persistence_mse(x: torch.Tensor, y: torch.Tensor, warmup: int = WARMUP) -> float:
    """MSE of the trivial forecast "the next value equals the current one" (``y[:, t] = x[:, t]``).

    The number a next-step model has to beat; ``x`` and ``y`` are ``(batch, seq, 1)``.
    """
    _check_xy(x, y, warmup)
    return float((x[:, warmup:] - y[:, warmup:]).pow(2).mean())


def plot_windows(
    x: torch.Tensor,
    y: torch.Tensor,
    n: int = 3,
    dt: float = DT,
    ax=None,
    prediction: torch.Tensor | None = None,
    title: str | None = None,
):
    """Inputs (circles) and targets (dots) of the first ``n`` windows, one above the other.

    Args:
        x, y: ``(batch, seq, 1)``; window ``i`` is drawn ``2.5 * i`` higher than window 0.
        prediction: optional ``(batch, seq, 1)`` model output, drawn as a line over the targets.

    Returns:
        The matplotlib axis.
    """
    _check_xy(x, y, 0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 1.6 + 1.2 * min(n, len(x))))
    seq = x.shape[1]
    steps = torch.arange(seq + 1) * dt
    for i in range(min(n, len(x))):
        shift = 2.5 * i
        names = ("input x[t]", "target y[t] = x[t+1]", "prediction") if i == 0 else (None,) * 3
        ax.plot(
            steps[:-1],
            x[i, :, 0].cpu() + shift,
            "o",
            mfc="none",
            color="tab:blue",
            label=names[0],
        )
        ax.plot(
            steps[1:],
            y[i, :, 0].cpu() + shift,
            ".",
            color="tab:orange",
            label=names[1],
        )
        if prediction is not None:
            ax.plot(
                steps[1:],
                prediction[i, :, 0].detach().cpu() + shift,
                "-",
                color="tab:green",
                label=names[2],
            )
    ax.set_xlabel("time")
    ax.set_yticks([])
    ax.set_title(title or "sine-wave windows: the target is the input shifted by one step")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def plot_losses(losses: Sequence[float], ax=None, baseline: float | None = None, title=None):
    """Training loss per step on a log scale, with an optional horizontal baseline."""
    if len(losses) == 0:
        raise ValueError("losses is empty: expected one loss per training step")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ax.semilogy(range(1, len(losses) + 1), list(losses), label="training loss (MSE)")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label=f"baseline {baseline:.2g}")
    ax.set_xlabel("training step")
    ax.set_ylabel("MSE")
    ax.set_title(title or "Training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax


# --------------------------------------------------------------------------------------------
# Multi-step forecasting
# --------------------------------------------------------------------------------------------


def forecast_errors(forecasts: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Root mean squared error at each horizon, averaged over the batch.

    Args:
        forecasts, truth: ``(batch, horizon, 1)``.

    Returns:
        ``(horizon,)``: entry ``h`` is the RMSE ``h + 1`` steps after the context.
    """
    if forecasts.shape != truth.shape or forecasts.dim() != 3:
        raise ValueError(
            f"forecasts and truth should both be (batch, horizon, 1), got "
            f"{tuple(forecasts.shape)} and {tuple(truth.shape)}"
        )
    return (forecasts.cpu() - truth.cpu()).pow(2).mean(dim=(0, 2)).sqrt()


def plot_forecast(
    context: torch.Tensor,
    truth: torch.Tensor,
    forecasts: torch.Tensor,
    index: int = 0,
    dt: float = DT,
    ax=None,
):
    """One series: its context, the true continuation and the model's forecast.

    Args:
        context: ``(batch, context_length, 1)``; truth and forecasts: ``(batch, horizon, 1)``.
        index: which series of the batch to draw.
    """
    if truth.shape != forecasts.shape:
        raise ValueError(
            f"truth and forecasts should have the same shape, got "
            f"{tuple(truth.shape)} and {tuple(forecasts.shape)}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.2))
    n_context, horizon = context.shape[1], truth.shape[1]
    t_context = torch.arange(n_context) * dt
    t_future = torch.arange(n_context, n_context + horizon) * dt
    ax.plot(t_context, context[index, :, 0].cpu(), color="tab:blue", label="context (observed)")
    ax.plot(t_future, truth[index, :, 0].cpu(), color="tab:blue", linestyle=":", label="truth")
    ax.plot(t_future, forecasts[index, :, 0].cpu(), color="tab:red", label="forecast")
    ax.axvline(t_context[-1] + dt / 2, color="grey", linewidth=0.8)
    ax.set_xlabel("time")
    ax.set_title(f"Forecasting {horizon} steps by feeding predictions back")
    ax.legend(fontsize=8)
    return ax


def plot_forecast_errors(errors: Mapping[str, torch.Tensor], ax=None, title=None):
    """RMSE against forecast horizon, one curve per label (e.g. the model and a baseline)."""
    if not errors:
        raise ValueError("errors is empty: expected at least one label -> (horizon,) tensor")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    for label, values in errors.items():
        values = torch.as_tensor(values).detach().cpu()
        if values.dim() != 1:
            raise ValueError(f"{label!r} should be 1-D (horizon,), got {tuple(values.shape)}")
        ax.semilogy(range(1, len(values) + 1), values, marker=".", label=label)
    ax.set_xlabel("horizon (steps after the last observed sample)")
    ax.set_ylabel("RMSE")
    ax.set_title(title or "Forecast error grows with the horizon")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax
