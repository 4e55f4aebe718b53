"""Time-series data, forecasting and the long-memory race of lesson 03_time_series_rnn.

Three parts, in the order the lesson uses them:

* **Sine waves.** ``sine_windows`` cuts independent windows (random phases) into a train/test
  split, ``sine_stream`` yields an endless stream of windows in which each window continues the
  one before (so a hidden state can be carried from one training step to the next), and
  ``next_step_mse`` / ``persistence_mse`` score next-step predictions on held-out windows. In every
  window the target is the input shifted by one step: ``y[:, t] = x[:, t + 1]``.
* **Multi-step forecasting.** ``forecast_errors`` measures how the error of a forecast grows
  with the horizon and ``plot_forecast`` draws one (the forecast itself, feeding a model's own
  predictions back as its inputs, is the lesson's exercise ``forecast``, not a helper).
* **Long memory.** ``adding_problem`` makes the adding problem, ``LastStepRegressor`` puts a
  linear head on ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``, ``train_regressor`` is a seeded
  training/evaluation loop with a progress bar and a wall-clock budget, ``long_memory_race``
  trains the three kinds on the same data for the same budget, ``plot_race`` draws test loss
  against training time with the trivial baseline, and ``shipped_race_table`` prints the
  course's measurement of the full race (``data/long_memory_race.json``).

Models used with the sine-wave functions follow the lesson's ``SimpleRNN`` interface:
``model(x, hidden) -> (output, hidden)`` with ``x`` and ``output`` of shape ``(batch, seq, 1)``
and ``hidden=None`` meaning "start from zeros".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import torch
from torch import nn

from helpers.course import DATA
from helpers.runtime import get_device
from helpers.training import cpu_threads, model_device, optimizer_step, progress_bar

#: Time between two samples of the sine waves (a period of 2*pi/frequency is ~42 samples).
DT = 0.15
#: Steps at the start of a held-out window that are not scored. Read from a zero hidden state, a
#: network trained with a carried state needs a few samples to find where on the wave it is (and
#: its state a few more to settle), so held-out windows are made longer (60 steps) and only their
#: last 40 steps are scored.
WARMUP = 20
#: Test MSE of the adding problem's trivial answer (always predict 1.0, the mean of the target):
#: the target is the sum of two independent U(0, 1) values, whose variance is 2 / 12.
ADDING_BASELINE_MSE = 1.0 / 6.0
RECURRENT_KINDS = ("RNN", "GRU", "LSTM")

Batch = tuple[torch.Tensor, torch.Tensor]


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_wave(dt: float, frequency: float, noise: float) -> None:
    if not dt > 0:
        raise ValueError(f"dt must be positive, got {dt!r}")
    if not frequency > 0:
        raise ValueError(f"frequency must be positive, got {frequency!r}")
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
    _check_positive_int("n_windows", n_windows, 2)
    _check_positive_int("seq_length", seq_length)
    _check_wave(dt, frequency, noise)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
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
    _check_positive_int("n_series", n_series)
    _check_positive_int("length", length)
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
    _check_positive_int("seq_length", seq_length)
    _check_positive_int("batch_size", batch_size)
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


# --------------------------------------------------------------------------------------------
# Long memory: the adding problem and the RNN / GRU / LSTM race
# --------------------------------------------------------------------------------------------


def adding_problem(
    n_sequences: int,
    seq_length: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Batch:
    """The adding problem, a task that needs long memory (this version: Le, Jaitly & Hinton,
    2015; the original is Hochreiter & Schmidhuber's, 1997).

    Each sequence has two channels: random values drawn from U(0, 1), and a marker that is 1 at
    exactly two steps (one in the first half of the sequence, one in the second) and 0 elsewhere.
    The target, given only at the end, is the sum of the two marked values. The first marked value
    can be up to ``seq_length - 1`` steps back, and everything after it is a distraction. Always
    answering 1.0 (the mean) scores ``ADDING_BASELINE_MSE`` = 1/6.

    Returns:
        ``x`` of shape ``(n_sequences, seq_length, 2)`` (channel 0: values, channel 1: markers)
        and ``y`` of shape ``(n_sequences, 1)``, float32 on ``device`` (default: CPU).
    """
    _check_positive_int("n_sequences", n_sequences)
    _check_positive_int("seq_length", seq_length, 2)
    half = seq_length // 2
    values = torch.rand(n_sequences, seq_length, generator=generator)
    first = torch.randint(0, half, (n_sequences,), generator=generator)
    second = torch.randint(half, seq_length, (n_sequences,), generator=generator)
    markers = torch.zeros(n_sequences, seq_length)
    rows = torch.arange(n_sequences)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)
    y = (values * markers).sum(dim=1, keepdim=True)
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


class LastStepRegressor(nn.Module):
    """A recurrent layer of the given kind read out by a linear layer after the last step.

    Args:
        kind: ``"RNN"`` (tanh), ``"GRU"`` or ``"LSTM"``: the ``torch.nn`` layer to use.
        input_size, hidden_size, output_size: sizes; the layer is ``batch_first``.

    ``forward(x)``: ``x`` ``(batch, seq, input_size)`` -> ``(batch, output_size)``.
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int, output_size: int = 1):
        super().__init__()
        if kind not in RECURRENT_KINDS:
            raise ValueError(f"kind must be one of {RECURRENT_KINDS}, got {kind!r}")
        for name, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("output_size", output_size),
        ):
            _check_positive_int(name, value)
        self.kind = kind
        self.recurrent = getattr(nn, kind)(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(x)
        return self.head(outputs[:, -1])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass
class RegressorHistory:
    """What ``train_regressor`` measured: one entry per evaluation (the first at step 0).

    ``seconds`` counts training time only (evaluations are not on the clock), so curves of
    different models can be compared against time.
    """

    name: str
    n_parameters: int
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    #: The trained model (set by ``long_memory_race``), for measurements after the race.
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def final_test_loss(self) -> float:
        return self.test_loss[-1]

    @property
    def best_test_loss(self) -> float:
        return min(self.test_loss)


def train_regressor(
    model: nn.Module,
    make_batch: Callable[[torch.Generator], Batch],
    test_set: Batch,
    *,
    n_steps: int,
    lr: float = 0.01,
    eval_every: int = 50,
    time_budget_s: float | None = None,
    clip: float | None = 1.0,
    seed: int = 0,
    name: str = "model",
    progress: bool = True,
    threads: int | None = 1,
) -> RegressorHistory:
    """Train ``model`` with Adam on mean squared error and evaluate it on a fixed test set.

    Args:
        model: maps ``x`` to predictions shaped like ``y`` (e.g. a ``LastStepRegressor``); it is
            trained on the device it is on.
        make_batch: ``make_batch(generator) -> (x, y)`` draws one fresh training batch; it is
            called with a ``torch.Generator`` seeded with ``seed``, so two runs with the same seed
            see the same batches.
        test_set: ``(x, y)`` held-out data, evaluated at step 0, every ``eval_every`` steps and
            at the end.
        n_steps: the most training steps; ``time_budget_s``: stop earlier once this many seconds
            of training have passed (``None``: no time limit).
        clip: gradient norm clipping (``None`` turns it off).
        threads: CPU threads while training on the CPU (see ``cpu_threads``; ``None``: as set).

    Returns:
        A ``RegressorHistory``.
    """
    _check_positive_int("n_steps", n_steps)
    _check_positive_int("eval_every", eval_every)
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be positive or None, got {time_budget_s!r}")
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x_test, y_test = (t.to(device) for t in test_set)
    history = RegressorHistory(name, count_parameters(model))
    model.train()

    def evaluate(step: int, elapsed: float, train_loss: float) -> float:
        model.eval()
        with torch.no_grad():
            loss = float(nn.functional.mse_loss(model(x_test), y_test))
        model.train()
        history.steps.append(step)
        history.seconds.append(elapsed)
        history.test_loss.append(loss)
        history.train_loss.append(train_loss)
        return loss

    with cpu_threads(threads, device):
        evaluate(0, 0.0, float("nan"))
        elapsed, running, count = 0.0, 0.0, 0
        bar = progress_bar(range(1, n_steps + 1), desc=name, progress=progress, leave=True)
        for step in bar:
            x, y = (t.to(device) for t in make_batch(generator))
            started = time.perf_counter()
            loss = nn.functional.mse_loss(model(x), y)
            # loss.item() inside also waits for the GPU, so the clock below is honest
            running += optimizer_step(optimizer, loss, model.parameters(), clip)
            elapsed += time.perf_counter() - started
            count += 1
            out_of_time = time_budget_s is not None and elapsed >= time_budget_s
            if step % eval_every == 0 or step == n_steps or out_of_time:
                test_loss = evaluate(step, elapsed, running / count)
                running, count = 0.0, 0
                bar.set_postfix(test_mse=f"{test_loss:.4f}", seconds=f"{elapsed:.0f}")
            if out_of_time:
                break
        bar.close()
    return history


def long_memory_race(
    seq_length: int,
    *,
    kinds: Sequence[str] = RECURRENT_KINDS,
    hidden_size: int = 32,
    n_steps: int = 1500,
    batch_size: int = 64,
    lr: float = 0.01,
    eval_every: int = 50,
    n_test: int = 1000,
    time_budget_s: float | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    threads: int | None = 1,
) -> dict[str, RegressorHistory]:
    """Train ``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` of the same hidden size on the adding problem.

    Every model starts from ``torch.manual_seed(seed)``, trains on the same sequence of batches
    (``batch_size`` fresh sequences of length ``seq_length`` per step) for the same budget
    (``n_steps`` steps, and at most ``time_budget_s`` seconds each when given), and is scored on
    the same ``n_test`` held-out sequences.

    Returns:
        ``{kind: RegressorHistory}`` in the order of ``kinds``.
    """
    for kind in kinds:
        if kind not in RECURRENT_KINDS:
            raise ValueError(f"kinds must be taken from {RECURRENT_KINDS}, got {kind!r}")
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("n_test", n_test)
    device = torch.device(device) if device is not None else get_device()
    test_set = adding_problem(
        n_test, seq_length, generator=torch.Generator().manual_seed(10_000 + seed)
    )

    def make_batch(generator: torch.Generator) -> Batch:
        return adding_problem(batch_size, seq_length, generator=generator)

    results = {}
    for kind in kinds:
        torch.manual_seed(seed)
        model = LastStepRegressor(kind, input_size=2, hidden_size=hidden_size).to(device)
        results[kind] = train_regressor(
            model,
            make_batch,
            test_set,
            n_steps=n_steps,
            lr=lr,
            eval_every=eval_every,
            time_budget_s=time_budget_s,
            seed=seed,
            name=f"{kind} (T={seq_length})",
            progress=progress,
            threads=threads,
        )
        results[kind].model = model
    return results


def plot_race(
    histories: Mapping[str, RegressorHistory],
    baseline: float = ADDING_BASELINE_MSE,
    ax=None,
    title: str | None = None,
):
    """Test loss against training time for each model, with the trivial baseline dashed."""
    if not histories:
        raise ValueError("histories is empty: expected at least one name -> RegressorHistory")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    for name, history in histories.items():
        ax.semilogy(history.seconds, history.test_loss, marker=".", label=name)
    ax.axhline(
        baseline,
        color="grey",
        linestyle="--",
        label=f"trivial baseline (always 1.0): {baseline:.3f}",
    )
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("test MSE")
    ax.set_title(title or "Adding problem: test loss against training time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax


def race_table(
    histories: Mapping[str, RegressorHistory], baseline: float = ADDING_BASELINE_MSE
) -> str:
    """A plain-text table: parameters, steps, seconds, final and best test MSE, vs the baseline."""
    lines = [
        f"{'model':<6} {'params':>7} {'steps':>6} {'seconds':>8} {'final MSE':>10} "
        f"{'best MSE':>9} {'final/baseline':>15}"
    ]
    for name, h in histories.items():
        lines.append(
            f"{name:<6} {h.n_parameters:>7} {h.steps[-1]:>6} {h.seconds[-1]:>8.1f} "
            f"{h.final_test_loss:>10.4f} {h.best_test_loss:>9.4f} "
            f"{h.final_test_loss / baseline:>15.3f}"
        )
    lines.append(f"baseline (always predict 1.0): {baseline:.4f}")
    return "\n".join(lines)


#: The course's measurement of the full race (T = 100, hidden size 32, 1500 steps, seed 0), made
#: by ``benchmarks/long_memory.py --json``: each model's parameters, steps, final test MSE and
#: sensitivity to the two marked values, and one more plain RNN with more parameters than the LSTM.
RACE_RESULT = DATA / "long_memory_race.json"


def shipped_race(path=None) -> dict:
    """The shipped measurement of the full race (``RACE_RESULT``), as a dict."""
    path = RACE_RESULT if path is None else path
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"expected the race's measurement as JSON at {path}: {exc}") from None


def shipped_race_table(record: dict | None = None) -> str:
    """The shipped measurement as a plain-text table: one row per model (and the larger plain
    RNN), with parameters, steps, final test MSE, its ratio to the baseline and how much the
    trained model's answer moves with the first and the second marked value."""
    record = shipped_race() if record is None else record
    baseline = record["baseline_mse"]
    rows = [(f"{k} ({m['hidden_size']})", m) for k, m in record["models"].items()]
    rows += [(f"{k} ({m['hidden_size']})", m) for k, m in record.get("capacity", {}).items()]
    lines = [
        f"{'model (hidden)':<15} {'params':>7} {'steps':>6} {'final MSE':>10} "
        f"{'final/baseline':>15} {'sensitivity 1st / 2nd':>22}"
    ]
    for name, m in rows:
        first, second = (round(v, 2) + 0.0 for v in m["marker_sensitivity"])  # no "-0.00"
        lines.append(
            f"{name:<15} {m['n_parameters']:>7,} {m['steps']:>6} {m['final_test_mse']:>10.4f} "
            f"{m['final_over_baseline']:>15.3f} {first:>14.2f} / {second:.2f}"
        )
    settings = record["settings"]
    lines.append(
        f"baseline (always answer 1.0): {baseline:.4f}; T = {settings['seq_length']}, "
        f"{settings['n_steps']} steps of {settings['batch_size']} sequences"
    )
    return "\n".join(lines)
