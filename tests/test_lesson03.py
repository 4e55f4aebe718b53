"""Lesson 03: helpers/timeseries.py and helpers/long_memory.py, the checks' verdicts and
messages on the usual mistakes in SimpleRNN, train_rnn, forecast and marker_sensitivity, the
long-memory sweep (benchmarks/long_memory.py) and the shipped sweep the notebook plots."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import matplotlib
import nbformat
import pytest
import torch
from conftest import ROOT, loaded, notebook_path
from torch import nn

import helpers.timeseries
from helpers import course
from helpers.checks import CheckFailure
from helpers.checks.lesson03 import (
    EXERCISES,
    _central_difference,
    _marked_steps,
    check_forecast,
    check_marker_sensitivity,
    check_simple_rnn,
    check_train_rnn,
)
from helpers.long_memory import (
    ADDING_BASELINE_MSE,
    SWEEP_RESULT,
    LastStepRegressor,
    RegressorHistory,
    adding_problem,
    count_parameters,
    long_memory_race,
    plot_race,
    plot_sweep,
    race_table,
    shipped_sweep,
    sweep_summary,
    sweep_table,
    train_adding,
    train_regressor,
)
from helpers.timeseries import (
    DT,
    WARMUP,
    _sine,
    forecast_errors,
    next_step_mse,
    persistence_mse,
    plot_forecast,
    plot_forecast_errors,
    plot_losses,
    plot_windows,
    sine_series,
    sine_stream,
    sine_windows,
)
from helpers.training import cpu_threads

matplotlib.use("Agg")
LESSON = "03_time_series_rnn"


@pytest.fixture(scope="module")
def ns():
    return loaded(notebook_path("source", LESSON))


# --------------------------------------------------------------------------------------------
# Sine-wave data
# --------------------------------------------------------------------------------------------


def test_sine_windows_shapes_shift_and_split():
    data = sine_windows(40, 12, test_fraction=0.25, noise=0.1, seed=3)
    assert data.x_train.shape == data.y_train.shape == (30, 12, 1)
    assert data.x_test.shape == data.y_test.shape == (10, 12, 1)
    assert data.clean_train.shape == (30, 12, 1) and data.clean_test.shape == (10, 12, 1)
    assert torch.equal(data.y_train[:, :-1], data.x_train[:, 1:])
    assert torch.equal(data.y_test[:, :-1], data.x_test[:, 1:])
    assert data.x_train.dtype == torch.float32
    noise = (data.y_train - data.clean_train).std().item()
    assert 0.07 < noise < 0.13
    again = sine_windows(40, 12, test_fraction=0.25, noise=0.1, seed=3)
    assert torch.equal(again.x_test, data.x_test)
    assert not torch.equal(sine_windows(40, 12, seed=4).x_train, data.x_train)


def test_clean_sine_windows_follow_the_wave():
    data = sine_windows(8, 30, test_fraction=0.5, seed=0)
    x = data.x_train[:, :, 0].double()
    # sin(a + d) + sin(a - d) = 2 cos(d) sin(a): exact three-term recurrence of a sampled sine
    recurrence = 2 * math.cos(DT) * x[:, 1:-1] - x[:, :-2]
    assert (recurrence - x[:, 2:]).abs().max() < 1e-5
    assert x.abs().max() <= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_windows": 1},
        {"seq_length": 0},
        {"test_fraction": 0.0},
        {"test_fraction": 1.0},
        {"n_windows": 3, "test_fraction": 0.01},
        {"noise": -0.1},
        {"dt": 0.0},
        {"frequency": -1.0},
    ],
)
def test_sine_windows_rejects_bad_arguments(kwargs):
    args = {"n_windows": 10, "seq_length": 5} | kwargs
    with pytest.raises(ValueError):
        sine_windows(**args)


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_sine_stream_windows_continue_each_other(noise):
    stream = sine_stream(7, 3, noise=noise, seed=5)
    previous = None
    for _ in range(6):
        x, y = next(stream)
        assert x.shape == y.shape == (3, 7, 1)
        assert torch.equal(y[:, :-1], x[:, 1:])
        if previous is not None:
            assert torch.equal(x[:, 0], previous[:, -1])
        previous = y
    # the same seed gives the same stream, another seed another one
    first = next(sine_stream(7, 3, noise=noise, seed=5))[0]
    assert torch.equal(first, next(sine_stream(7, 3, noise=noise, seed=5))[0])
    assert not torch.equal(first, next(sine_stream(7, 3, noise=noise, seed=6))[0])


def test_sine_stream_without_noise_is_the_wave_and_stays_precise():
    stream = sine_stream(10, 4, seed=1)
    windows = [next(stream)[0] for _ in range(5)]
    series = torch.cat(windows, dim=1)[:, :, 0].double()
    recurrence = 2 * math.cos(DT) * series[:, 1:-1] - series[:, :-2]
    assert (recurrence - series[:, 2:]).abs().max() < 1e-5
    # ten million steps into a stream, angles are still exact (computed in float64, mod 2 pi)
    tail = _sine(torch.tensor([0.3, 2.0], dtype=torch.float64), 10_000_000, 50, DT, 1.0).double()
    assert (2 * math.cos(DT) * tail[:, 1:-1] - tail[:, :-2] - tail[:, 2:]).abs().max() < 1e-5


def test_sine_stream_rejects_bad_arguments():
    with pytest.raises(ValueError):
        next(sine_stream(0, 2))
    with pytest.raises(ValueError):
        next(sine_stream(5, 0))
    with pytest.raises(ValueError):
        next(sine_stream(5, 2, noise=-1))


def test_sine_series():
    series = sine_series(5, 33, noise=0.0, seed=2)
    assert series.shape == (5, 33, 1) and series.dtype == torch.float32
    with pytest.raises(ValueError):
        sine_series(0, 10)


# --------------------------------------------------------------------------------------------
# Scores and forecasting, with an exact model of a sampled sine
# --------------------------------------------------------------------------------------------


class SineOracle(nn.Module):
    """Predicts a sampled sine exactly: x[t + 1] = 2 cos(DT) x[t] - x[t - 1].

    Follows the SimpleRNN interface; its hidden state (1, batch, 1) is the previous input.
    """

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x, hidden):
        prev = x[:, :1] if hidden is None else hidden[0].unsqueeze(1)
        before = torch.cat([prev, x[:, :-1]], dim=1)
        return 2 * math.cos(DT) * x - before, x[:, -1:].transpose(0, 1).reshape(1, -1, 1)


def test_next_step_mse_and_persistence():
    data = sine_windows(20, 30, test_fraction=0.5, seed=0)
    oracle = SineOracle()
    assert next_step_mse(oracle, data.x_test, data.y_test) < 1e-10
    # the oracle's first step has no past: scoring it shows a real error
    assert next_step_mse(oracle, data.x_test, data.y_test, warmup=0) > 1e-6
    naive = persistence_mse(data.x_test, data.y_test)
    expected = ((data.x_test - data.y_test)[:, WARMUP:] ** 2).mean().item()
    assert naive == pytest.approx(expected)
    assert 0.005 < naive < 0.02
    with pytest.raises(ValueError):
        next_step_mse(oracle, data.x_test, data.y_test[:, :-1])
    with pytest.raises(ValueError):
        persistence_mse(data.x_test, data.y_test, warmup=30)


def test_next_step_mse_restores_the_mode_and_rejects_wrong_outputs():
    data = sine_windows(4, 30, test_fraction=0.5, seed=0)
    oracle = SineOracle().train()
    next_step_mse(oracle, data.x_test, data.y_test)
    assert oracle.training

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x, hidden):
            return x.reshape(-1, 1) * self.w, hidden

    with pytest.raises(ValueError, match="shape"):
        next_step_mse(Flat(), data.x_test, data.y_test)


def test_the_solutions_forecast_continues_a_sine_exactly(ns):
    """The reference solution's forecast, on a model that predicts a sampled sine exactly."""
    series = sine_series(6, 70, seed=4)
    context, truth = series[:, :50], series[:, 50:]
    predicted = ns["forecast"](SineOracle(), context, 20)
    assert predicted.shape == truth.shape == (6, 20, 1)
    errors = forecast_errors(predicted, truth)
    assert errors.shape == (20,)
    assert errors.max() < 1e-4
    naive = forecast_errors(context[:, -1:].expand_as(truth), truth)
    assert naive[-1] > 0.1
    with pytest.raises(ValueError):
        forecast_errors(predicted, truth[:, :-1])


def test_helpers_hold_no_forecast():
    """forecast is an exercise: helpers/ must not hand the learner a working one."""
    assert not hasattr(helpers.timeseries, "forecast")


def _curve(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return [float(v) for v in line.get_xdata()], [float(v) for v in line.get_ydata()]


def test_plots_draw_their_data_and_reject_empty_input():
    data = sine_windows(6, 10, test_fraction=0.5, seed=0)
    ax = plot_windows(data.x_train, data.y_train, n=2, prediction=2 * data.y_train)
    # two windows of three curves; the legend names the first window's, the target one step on
    assert len(ax.get_lines()) == 6
    x_steps, x_values = _curve(ax, "input x[t]")
    y_steps, y_values = _curve(ax, "target y[t] = x[t+1]")
    assert x_values == pytest.approx(data.x_train[0, :, 0].tolist())
    assert y_values == pytest.approx(data.y_train[0, :, 0].tolist())
    assert y_steps == pytest.approx([t + DT for t in x_steps])
    assert _curve(ax, "prediction")[1] == pytest.approx((2 * data.y_train[0, :, 0]).tolist())
    ax = plot_losses([1.0, 0.5, 0.2], baseline=0.3)
    assert _curve(ax, "training loss (MSE)") == ([1.0, 2.0, 3.0], [1.0, 0.5, 0.2])
    assert _curve(ax, "baseline 0.3")[1] == [0.3, 0.3] and ax.get_yscale() == "log"
    series = sine_series(2, 30)
    ax = plot_forecast(series[:, :20], series[:, 20:], 0.5 * series[:, 20:], index=1)
    assert _curve(ax, "context (observed)")[1] == pytest.approx(series[1, :20, 0].tolist())
    assert _curve(ax, "truth")[1] == pytest.approx(series[1, 20:, 0].tolist())
    assert _curve(ax, "forecast")[1] == pytest.approx((0.5 * series[1, 20:, 0]).tolist())
    assert "10 steps" in ax.get_title()
    ax = plot_forecast_errors({"model": torch.arange(1.0, 6.0), "no change": torch.ones(5)})
    assert _curve(ax, "model") == ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert _curve(ax, "no change")[1] == [1.0] * 5
    with pytest.raises(ValueError, match="should be 1-D"):
        plot_forecast_errors({"a": torch.ones(2, 3)})
    with pytest.raises(ValueError):
        plot_losses([])
    with pytest.raises(ValueError):
        plot_forecast_errors({})
    with pytest.raises(ValueError):
        plot_race({})
    import matplotlib.pyplot as plt

    plt.close("all")


# --------------------------------------------------------------------------------------------
# Long memory
# --------------------------------------------------------------------------------------------


def test_adding_problem():
    x, y = adding_problem(500, 30, generator=torch.Generator().manual_seed(0))
    assert x.shape == (500, 30, 2) and y.shape == (500, 1)
    markers = x[:, :, 1]
    assert torch.equal(markers.sum(dim=1), torch.full((500,), 2.0))
    assert torch.equal(markers[:, :15].sum(dim=1), torch.ones(500))
    assert torch.equal((markers * x[:, :, 0]).sum(dim=1, keepdim=True), y)
    assert ((x[:, :, 0] >= 0) & (x[:, :, 0] < 1)).all()
    big = adding_problem(20_000, 10, generator=torch.Generator().manual_seed(1))[1]
    assert ((big - 1.0) ** 2).mean().item() == pytest.approx(ADDING_BASELINE_MSE, rel=0.05)
    with pytest.raises(ValueError):
        adding_problem(4, 1)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_last_step_regressor(kind):
    model = LastStepRegressor(kind, input_size=2, hidden_size=5)
    assert model(torch.zeros(3, 7, 2)).shape == (3, 1)
    layer = getattr(nn, kind)(2, 5)
    assert count_parameters(model) == count_parameters(layer) + 5 + 1


def test_last_step_regressor_rejects_bad_arguments():
    with pytest.raises(ValueError):
        LastStepRegressor("Transformer", 2, 4)
    with pytest.raises(ValueError):
        LastStepRegressor("RNN", 2, 0)


def _tiny_setup(seed=0):
    torch.manual_seed(seed)
    model = LastStepRegressor("GRU", input_size=2, hidden_size=4)
    test_set = adding_problem(32, 6, generator=torch.Generator().manual_seed(99))
    return model, (lambda g: adding_problem(8, 6, generator=g)), test_set


def test_train_regressor_is_seeded_and_records_its_history():
    runs = []
    for _ in range(2):
        model, make_batch, test_set = _tiny_setup()
        runs.append(
            train_regressor(
                model, make_batch, test_set, n_steps=7, eval_every=3, progress=False, name="gru"
            )
        )
    first, second = runs
    assert first.steps == [0, 3, 6, 7]
    assert first.test_loss == second.test_loss
    assert len(first.seconds) == len(first.train_loss) == 4
    assert first.seconds == sorted(first.seconds) and first.seconds[0] == 0.0
    assert math.isnan(first.train_loss[0])
    assert first.final_test_loss == first.test_loss[-1]
    assert first.best_test_loss == min(first.test_loss)
    assert first.n_parameters == count_parameters(_tiny_setup()[0])


def test_train_regressor_stops_at_its_time_budget_and_restores_threads():
    model, make_batch, test_set = _tiny_setup()
    threads = torch.get_num_threads()
    history = train_regressor(
        model,
        make_batch,
        test_set,
        n_steps=10_000,
        eval_every=1000,
        time_budget_s=1e-6,
        progress=False,
        threads=1,
    )
    assert history.steps == [0, 1]
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError):
        train_regressor(model, make_batch, test_set, n_steps=0)
    with pytest.raises(ValueError):
        train_regressor(model, make_batch, test_set, n_steps=5, time_budget_s=0)


def test_cpu_threads_restores_the_setting():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError), cpu_threads(0):
        pass


def test_long_memory_race_trains_every_kind_on_the_same_data():
    kwargs = {
        "seq_length": 6,
        "hidden_size": 4,
        "n_steps": 4,
        "batch_size": 8,
        "eval_every": 2,
        "n_test": 16,
        "device": "cpu",
        "progress": False,
    }
    histories = long_memory_race(**kwargs)
    assert list(histories) == ["RNN", "GRU", "LSTM"]
    for history in histories.values():
        assert history.steps == [0, 2, 4]
    params = {name: h.n_parameters for name, h in histories.items()}
    assert params["RNN"] < params["GRU"] < params["LSTM"]
    again = long_memory_race(**kwargs, kinds=("LSTM",))
    assert again["LSTM"].test_loss == histories["LSTM"].test_loss
    alone = train_adding("GRU", **kwargs)
    assert alone.test_loss == histories["GRU"].test_loss and alone.model is not None
    other_seed = train_adding("GRU", **kwargs | {"seed": 1})
    assert other_seed.test_loss != histories["GRU"].test_loss
    table = race_table(histories)
    assert all(name in table for name in histories) and "baseline" in table
    ax = plot_race(histories)
    for name, history in histories.items():
        assert _curve(ax, name) == (history.seconds, history.test_loss)
    assert (
        _curve(ax, f"trivial baseline (always 1.0): {ADDING_BASELINE_MSE:.3f}")[1]
        == [ADDING_BASELINE_MSE] * 2
    )
    with pytest.raises(ValueError):
        long_memory_race(6, kinds=("CNN",))
    with pytest.raises(ValueError, match="kind must be one of"):
        train_adding("CNN", 6)


def test_history_properties():
    history = RegressorHistory(
        "x",
        3,
        steps=[0, 1],
        seconds=[0.0, 0.1],
        test_loss=[0.2, 0.1],
        train_loss=[float("nan"), 0.3],
    )
    assert history.final_test_loss == 0.1 and history.best_test_loss == 0.1


# --------------------------------------------------------------------------------------------
# The checks on the reference solution and on the usual mistakes
# --------------------------------------------------------------------------------------------


def test_reference_solution_passes_every_check(ns, capsys):
    assert not ns.errors, ns.errors
    for check in EXERCISES.values():
        check(ns)
    out = capsys.readouterr().out
    assert "SimpleRNN: OK" in out and "train_rnn: OK" in out


class _Layers(nn.Module):
    def __init__(self, input_size=1, output_size=1, hidden_dim=32, n_layers=1, batch_first=True):
        super().__init__()
        self.hidden_dim, self.n_layers = hidden_dim, n_layers
        self.rnn = nn.RNN(input_size, hidden_dim, n_layers, batch_first=batch_first)
        self.fc = nn.Linear(hidden_dim, output_size)


class IgnoresHidden(_Layers):
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x)
        return self.fc(r_out), hidden


class Flattened(_Layers):  # Simple_RNN.ipynb of Udacity's RNN lesson: view(-1, hidden_dim)
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out.reshape(-1, self.hidden_dim)), hidden


class LastStepOnly(_Layers):
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out[:, -1]), hidden


class NotBatchFirst(_Layers):
    def __init__(self, input_size=1, output_size=1, hidden_dim=32, n_layers=1):
        super().__init__(input_size, output_size, hidden_dim, n_layers, batch_first=False)

    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out), hidden


class DetachesOutput(_Layers):
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out).detach(), hidden


class DetachesBeforeHead(_Layers):  # values right, yet no gradient reaches nn.RNN
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out.detach()), hidden


class RnnUnderNoGrad(_Layers):
    def forward(self, x, hidden):
        with torch.no_grad():
            r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out), hidden


class FrozenHead(_Layers):
    def __init__(self, input_size=1, output_size=1, hidden_dim=32, n_layers=1):
        super().__init__(input_size, output_size, hidden_dim, n_layers)
        self.fc.requires_grad_(False)

    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(r_out), hidden


class TanhOnTheHead(_Layers):
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return torch.tanh(self.fc(r_out)), hidden


class ReturnsTheGivenHidden(_Layers):
    def forward(self, x, hidden):
        r_out, _ = self.rnn(x, hidden)
        return self.fc(r_out), hidden


class LastOutputAsHidden(_Layers):
    def forward(self, x, hidden):
        r_out, _ = self.rnn(x, hidden)
        return self.fc(r_out), r_out[:, -1]


class HeadOnHidden(_Layers):
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return self.fc(hidden), hidden


class SwappedReturn(_Layers):
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        return hidden, self.fc(r_out)


class OneLayerAlways(_Layers):
    def __init__(self, input_size=1, output_size=1, hidden_dim=32, n_layers=1):
        super().__init__(input_size, output_size, hidden_dim, 1)

    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, None if hidden is None else hidden[:1])
        return self.fc(r_out), hidden


class NoneNotAccepted(_Layers):
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden * 1.0)
        return self.fc(r_out), hidden


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (IgnoresHidden, "the hidden state is ignored"),
        (Flattened, "flattened to \\(batch \\* seq, output_size\\)"),
        (LastStepOnly, "only the last step is returned"),
        (NotBatchFirst, "without batch_first=True"),
        (DetachesOutput, "does not require grad"),
        (DetachesBeforeHead, "no gradient reaches the recurrent layer"),
        (RnnUnderNoGrad, "no gradient reaches the recurrent layer"),
        (FrozenHead, "requires_grad=False"),
        (TanhOnTheHead, "a tanh after the linear head"),
        (ReturnsTheGivenHidden, "returns the hidden state it was given"),
        (LastOutputAsHidden, "r_out\\[:, -1\\] is the top layer's last output"),
        (HeadOnHidden, "the head was applied to hidden"),
        (SwappedReturn, "forward returns \\(hidden, output\\)"),
        (OneLayerAlways, "\\(input_size, hidden_size, num_layers\\)"),
        (NoneNotAccepted, "raised TypeError"),
    ],
)
def test_simple_rnn_mistakes_are_named(model, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_simple_rnn(model, cases=((1, 1, 6, 2, 3, 4),))
    assert str(info.value).startswith("SimpleRNN(input_size=1")


def test_detaching_before_the_head_names_the_parameters():
    with pytest.raises(CheckFailure) as info:
        check_simple_rnn(DetachesBeforeHead)
    assert "rnn.weight_ih_l0" in str(info.value) and "rnn.weight_hh_l0" in str(info.value)
    assert "fc.weight" not in str(info.value)


class _TimeMajor(_Layers):  # correct: nn.RNN without batch_first, transposing around it
    def __init__(self, input_size=1, output_size=1, hidden_dim=32, n_layers=1):
        super().__init__(input_size, output_size, hidden_dim, n_layers, batch_first=False)

    def forward(self, x, hidden=None):
        r_out, hidden = self.rnn(x.transpose(0, 1), hidden)
        return self.fc(r_out.transpose(0, 1)), hidden


class _Functional(_Layers):  # correct: the head's weights applied by hand
    def forward(self, x, hidden):
        r_out, hidden = self.rnn(x, hidden)
        out = torch.einsum("bsh,oh->bso", r_out, self.fc.weight) + self.fc.bias
        return out, hidden


class _Sequential(nn.Module):  # correct: other attribute names, a stored hidden size
    def __init__(self, input_size=1, output_size=1, hidden_dim=32, n_layers=1):
        super().__init__()
        self.hidden_dim, self.n_layers = hidden_dim, n_layers
        self.layers = nn.ModuleDict(
            {
                "recurrent": nn.RNN(input_size, hidden_dim, n_layers, batch_first=True),
                "readout": nn.Linear(hidden_dim, output_size),
            }
        )

    def forward(self, x, hidden=None):
        out, hidden = self.layers["recurrent"](x, hidden)
        return self.layers["readout"](out), hidden


@pytest.mark.parametrize("model", [_TimeMajor, _Functional, _Sequential])
def test_simple_rnn_written_differently_passes(model, capsys):
    check_simple_rnn(model)
    check_simple_rnn(model, hidden=True)
    assert capsys.readouterr().out.count("SimpleRNN: OK") == 2


def test_simple_rnn_not_implemented_says_so():
    class Unsolved(nn.Module):
        def __init__(self, input_size=1, output_size=1, hidden_dim=32, n_layers=1):
            super().__init__()
            raise NotImplementedError()

    with pytest.raises(CheckFailure, match="not implemented yet"):
        check_simple_rnn(Unsolved)


def _train_rnn_variant(mode):
    """A train_rnn with one deliberate mistake (``mode``), otherwise the lesson's recipe."""

    def train_rnn(model, n_steps, seq_length=20, lr=0.01, batch_size=8, noise=0.05, seed=0):
        stream = sine_stream(seq_length, batch_size, noise=noise, seed=seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        hidden, losses = None, []
        for step in range(n_steps):
            x, y = next(stream)
            if mode == "unrelated windows":
                w = sine_windows(2 * batch_size, seq_length, seed=step)
                x, y = w.x_train[:batch_size], w.y_train[:batch_size]
            if mode == "zeros first" and hidden is None:
                hidden = torch.zeros(model.n_layers, batch_size, model.hidden_dim)
            if mode == "no hidden":
                hidden = None
            elif mode == "fresh zeros":
                hidden = torch.zeros(model.n_layers, batch_size, model.hidden_dim)
            elif mode not in ("no detach", "no detach, retain graph") and hidden is not None:
                hidden = hidden.detach()
            output, hidden = model(x, hidden)
            loss = nn.functional.mse_loss(output, x if mode == "target x" else y)
            if mode == "model.zero_grad, zeros kept":
                model.zero_grad(set_to_none=False)
            elif mode not in ("no zero_grad", "zero_grad after backward"):
                optimizer.zero_grad()
            loss.backward(retain_graph=mode == "no detach, retain graph")
            if mode == "zero_grad after backward":
                optimizer.zero_grad()
            if mode == "clipped":
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if mode != "no optimizer step":
                optimizer.step()
            losses.append(loss if mode == "tensor losses" else loss.item())
        return losses[:-1] if mode == "one loss short" else losses

    return train_rnn


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("no detach", "does not detach the hidden state"),
        ("no detach, retain graph", "does not detach the hidden state"),
        (
            "no hidden",
            "never passes the hidden state on: at training step 2 the model got hidden=None",
        ),
        ("fresh zeros", "never passes the hidden state on"),
        ("unrelated windows", "do not continue each other"),
        ("tensor losses", "append loss.item\\(\\)"),
        ("one loss short", "one loss per training step"),
        ("no optimizer step", "weights never changed"),
        ("zero_grad after backward", "weights never changed"),
        ("no zero_grad", "gradients pile up across steps"),
        ("target x", "instead of the target y"),
    ],
)
def test_train_rnn_mistakes_are_named(ns, mode, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_train_rnn(_train_rnn_variant(mode), ns["SimpleRNN"])
    assert str(info.value).startswith("train_rnn:")


@pytest.mark.parametrize("mode", ["zeros first", "clipped", "model.zero_grad, zeros kept"])
def test_train_rnn_written_differently_passes(ns, capsys, mode):
    check_train_rnn(_train_rnn_variant(mode), ns["SimpleRNN"])
    assert "train_rnn: OK" in capsys.readouterr().out


def test_train_rnn_is_checked_with_a_working_simple_rnn(ns):
    with pytest.raises(CheckFailure, match="Fix SimpleRNN first") as info:
        check_train_rnn(ns["train_rnn"], IgnoresHidden)
    assert "the hidden state is ignored" in str(info.value)


def test_train_rnn_not_implemented_says_so(ns):
    def train_rnn(model, n_steps, seq_length=20, lr=0.01, batch_size=8, noise=0.05, seed=0):
        raise NotImplementedError()

    with pytest.raises(CheckFailure, match="not implemented yet"):
        check_train_rnn(train_rnn, ns["SimpleRNN"])


# --------------------------------------------------------------------------------------------
# The benchmark script and the notebook
# --------------------------------------------------------------------------------------------


def _notebook_text(kind):
    nb = nbformat.read(notebook_path(kind, LESSON), as_version=4)
    return nb, "\n".join(cell.source for cell in nb.cells)


def test_notebook_states_the_measured_race():
    nb, text = _notebook_text("source")
    assert "| ? |" not in text and " ? s" not in text, "fill in the measured race figures"
    assert "T = 100" in text and "1500 steps" in text
    for name in ("`nn.RNN`", "`nn.GRU`", "`nn.LSTM`"):
        assert name in text


def test_long_cells_are_tagged_training():
    nb, _ = _notebook_text("source")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        long_run = any(
            word in cell.source
            for word in ("long_memory_race(", "train_rnn(model, n_steps=helpers")
        )
        if long_run:
            assert "training" in cell.metadata.get("tags", []), cell.source[:60]


def test_release_has_no_answers():
    _, text = _notebook_text("release")
    assert "nn.RNN(input_size, hidden_dim, n_layers, batch_first=True)" not in text
    assert "hidden = hidden.detach()  # keep" not in text
    assert "model(step, hidden)" not in text and "output[:, -1:]" not in text
    assert "torch.autograd.grad(model(x).sum(), x)" not in text
    # __init__, forward, train_rnn, forecast, marker_sensitivity
    assert text.count("raise NotImplementedError()") >= 5


# --------------------------------------------------------------------------------------------
# forecast: correct answers written differently pass, the usual mistakes are named
# --------------------------------------------------------------------------------------------


def _forecast_list_cat(model, context, horizon):
    output, hidden = model(context, None)
    step = output[:, -1:]
    forecasts = [step]
    for _ in range(horizon - 1):
        output, hidden = model(step, hidden)
        step = output[:, -1:]
        forecasts.append(step)
    return torch.cat(forecasts, dim=1)


@torch.no_grad()
def _forecast_preallocated(model, context, horizon):
    output, hidden = model(context, None)
    result = torch.empty(context.shape[0], horizon, output.shape[2])
    step = output[:, -1:]
    for t in range(horizon):
        result[:, t] = step[:, 0]
        if t < horizon - 1:
            output, hidden = model(step, hidden)
            step = output
    return result


def _forecast_stepwise_stack(model, context, horizon):
    hidden = None
    for t in range(context.shape[1]):  # warm up one step at a time
        output, hidden = model(context[:, t : t + 1], hidden)
    predictions = []
    for _ in range(horizon):
        predictions.append(output[:, -1])
        output, hidden = model(output[:, -1:], hidden)  # one call too many: harmless
    return torch.stack(predictions, dim=1)


def _forecast_explicit_zeros(model, context, horizon):
    hidden = torch.zeros(model.n_layers, context.shape[0], model.hidden_dim)
    output, hidden = model(context, hidden)
    forecasts = output[:, -1:]
    for _ in range(horizon - 1):
        output, hidden = model(forecasts[:, -1:], hidden)
        forecasts = torch.cat([forecasts, output], dim=1)
    return forecasts.detach()


@pytest.mark.parametrize(
    "fn",
    [
        _forecast_list_cat,
        _forecast_preallocated,
        _forecast_stepwise_stack,
        _forecast_explicit_zeros,
    ],
)
def test_forecast_written_differently_passes(fn, capsys):
    check_forecast(fn)
    check_forecast(fn, hidden=True)
    out = capsys.readouterr().out
    assert out.count("forecast: OK") == 2 and "note:" not in out


def test_forecast_rereading_the_context_passes_with_a_note(capsys):
    def rereads(model, context, horizon):
        series, forecasts = context, []
        for _ in range(horizon):
            output, _ = model(series, None)
            forecasts.append(output[:, -1:])
            series = torch.cat([series, output[:, -1:]], dim=1)
        return torch.cat(forecasts, dim=1)

    check_forecast(rereads)
    out = capsys.readouterr().out
    assert "forecast: OK" in out
    assert "note: forecast is right" in out and "square of the horizon" in out


def _forecast_mistake(mode):
    def forecast(model, context, horizon):
        output, hidden = model(context, None)
        step = output[:, -1:]
        if mode == "last value twice":
            output, hidden = model(context[:, -1:], hidden)
            step = output
        forecasts = [] if mode == "first dropped" else [step]
        steps = horizon if mode in ("first dropped", "one too many") else horizon - 1
        for _ in range(steps):
            if mode == "first repeated":
                forecasts.append(step)
            given = context[:, -1:] if mode == "feeds the last value" else step
            output, new_hidden = model(given, None if mode == "no carry" else hidden)
            hidden = new_hidden
            step = output[:, -1:]
            if mode != "first repeated":
                forecasts.append(step)
        result = torch.cat(forecasts, dim=1)
        if mode != "one too many":
            result = result[:, :horizon]
        if mode == "squeezed":
            result = result[..., 0]
        if mode == "random":
            result = result + 0.3
        if mode == "with hidden":
            result = (result, hidden)
        return result

    return forecast


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("no carry", "the hidden state is not carried between steps"),
        ("feeds the last value", "the last observed value is fed at every step"),
        ("first dropped", "the first prediction .* is dropped"),
        ("first repeated", "the first prediction appears twice"),
        ("last value twice", "the last observed value is read twice"),
        ("one too many", "one step too many"),
        ("squeezed", "the feature dimension was squeezed away"),
        ("with hidden", "not \\(forecasts, hidden\\)"),
    ],
)
def test_forecast_mistakes_are_named(mode, message):
    for hidden in (False, True):
        with pytest.raises(CheckFailure, match=message) as info:
            check_forecast(_forecast_mistake(mode), hidden=hidden)
        assert str(info.value).startswith("forecast(model, context, horizon=")


def test_forecast_wrong_values_say_where_without_a_made_up_cause():
    with pytest.raises(CheckFailure, match="first mismatch at index") as info:
        check_forecast(_forecast_mistake("random"))
    assert "likely cause" not in str(info.value)


def test_forecast_not_implemented_says_so():
    def forecast(model, context, horizon):
        raise NotImplementedError()

    with pytest.raises(CheckFailure, match="not implemented yet"):
        check_forecast(forecast)


# The shipped race and marker_sensitivity
# --------------------------------------------------------------------------------------------


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "long_memory", ROOT / "benchmarks" / "long_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mean(values):
    return sum(values) / len(values)


def test_the_shipped_sweep_is_the_benchmarks_full_sweep():
    module = _benchmark()
    record = shipped_sweep()
    settings = record["settings"]
    assert settings == module.FULL
    assert (
        record["command"]
        == "python benchmarks/long_memory.py --json helpers/data/long_memory_sweep.json"
    )
    assert list(record["models"]) == ["RNN", "GRU", "LSTM", "RNN 66"]
    assert len(settings["lengths"]) >= 4 and len(settings["seeds"]) >= 3
    assert settings["lr_seed"] not in settings["seeds"]
    # every model, length and seed once, with a learning rate from the candidates
    runs = {(r["model"], r["seq_length"], r["seed"]) for r in record["runs"]}
    assert len(runs) == len(record["runs"]) == 4 * len(settings["lengths"]) * len(settings["seeds"])
    assert {r["lr"] for r in record["runs"]} <= set(settings["lr_candidates"])
    # each run's learning rate is the best of its model's short runs at that length
    trials = record["learning_rate_trials"]
    for run in record["runs"]:
        mine = [
            t for t in trials if (t["model"], t["seq_length"]) == (run["model"], run["seq_length"])
        ]
        assert len(mine) == len(settings["lr_candidates"])
        assert run["lr"] == module.choose_learning_rate(mine, settings["lr_default"])
    # the capacity run has more parameters than every gated model
    params = {m: info["n_parameters"] for m, info in record["models"].items()}
    assert params["RNN 66"] > max(params["GRU"], params["LSTM"])
    for model, info in record["models"].items():
        assert params[model] == count_parameters(
            LastStepRegressor(info["kind"], 2, info["hidden_size"])
        )
    # it was regenerated by one command in under 30 minutes
    assert record["wall_seconds"] < 30 * 60


def test_the_shipped_sweep_says_what_the_notebook_says():
    record = shipped_sweep()
    summary = sweep_summary(record)
    lengths = record["settings"]["lengths"]
    shortest, longest = lengths[0], lengths[-1]
    # the plain RNN solves the task at short range and uses the first marked value there
    assert _mean(summary["RNN"][shortest]["ratio"]) < 0.1
    assert _mean(summary["RNN"][shortest]["first"]) > 0.8
    # at long range both plain RNNs end at the baseline, every seed, and ignore the first value
    for model in ("RNN", "RNN 66"):
        assert min(summary[model][longest]["ratio"]) > 0.5
        assert max(abs(v) for v in summary[model][longest]["first"]) < 0.1
    # the gated models end far below the baseline at every length, using both values
    for model in ("GRU", "LSTM"):
        for length in lengths:
            assert _mean(summary[model][length]["ratio"]) < 0.05, (model, length)
            assert min(summary[model][length]["first"]) > 0.8, (model, length)


def test_sweep_table_and_plot_come_from_the_record(tmp_path):
    record = shipped_sweep()
    table = sweep_table(record)
    summary = sweep_summary(record)
    for model, points in summary.items():
        assert f"\n{model} " in table
        for point in points.values():
            assert f"{_mean(point['ratio']):.3f}" in table
    changed = json.loads(json.dumps(record))
    for run in changed["runs"]:
        if run["model"] == "GRU":
            run["final_test_mse"] = 0.1234 * ADDING_BASELINE_MSE
    assert "0.123 (0.123-0.123)" in sweep_table(changed)
    ax = plot_sweep(record)
    labels = [line.get_label() for line in ax.get_lines()]
    assert sum(label.startswith(tuple(summary)) for label in labels) == len(summary)
    assert list(ax.get_xticks()) == record["settings"]["lengths"]
    with pytest.raises(ValueError, match="expected the sweep's measurement as JSON"):
        shipped_sweep(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**record, "runs": [{"model": "RNN"}]}))
    with pytest.raises(ValueError, match="a run should have"):
        shipped_sweep(broken)
    assert SWEEP_RESULT.parent == course.data_dir()


class _Adder(nn.Module):
    """Answers exactly a + b (the adding problem solved), or the mean when ``solved`` is False."""

    def __init__(self, solved=True):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0 if solved else 0.0))

    def forward(self, x):
        answer = (x[:, :, 0] * x[:, :, 1]).sum(dim=1, keepdim=True)
        return self.scale * answer + (1 - self.scale)


def test_benchmark_marker_sensitivity():
    sensitivity = _benchmark().sensitivity
    x, _ = adding_problem(64, 12, generator=torch.Generator().manual_seed(3))
    assert sensitivity(_Adder(), x) == pytest.approx((1.0, 1.0))
    assert sensitivity(_Adder(solved=False), x) == pytest.approx((0.0, 0.0), abs=1e-9)
    # a float32 model is measured on a float64 copy, which is left where it was
    torch.manual_seed(0)
    model = LastStepRegressor("LSTM", 2, 5)
    got = sensitivity(model, x)
    assert next(model.parameters()).dtype == torch.float32
    first, second = _marked_steps(x.double())
    expected = [
        float(_central_difference(model.double(), x.double(), steps).mean())
        for steps in (first, second)
    ]
    assert got == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError):
        sensitivity(_Adder(), x[:, :, :1])
    with pytest.raises(ValueError):
        sensitivity(_Adder(), torch.zeros(2, 5, 2))


def test_the_solutions_marker_sensitivity(ns, capsys):
    x, _ = adding_problem(64, 12, generator=torch.Generator().manual_seed(3))
    assert ns["marker_sensitivity"](_Adder(), x) == pytest.approx((1.0, 1.0))
    assert ns["marker_sensitivity"](_Adder(solved=False), x) == pytest.approx((0.0, 0.0))
    # on models and sizes the checks do not use, it agrees with the sweep's measurement
    for kind, seed in (("GRU", 5), ("LSTM", 6), ("RNN", 8)):
        torch.manual_seed(seed)
        model = LastStepRegressor(kind, 2, 7).double()
        x, _ = adding_problem(9, 15, generator=torch.Generator().manual_seed(seed))
        x = x.double()
        got = ns["marker_sensitivity"](model, x)
        assert all(type(v) is float for v in got)
        assert got == pytest.approx(_benchmark().sensitivity(model, x), abs=1e-7)
    check_marker_sensitivity(ns["marker_sensitivity"])
    check_marker_sensitivity(ns["marker_sensitivity"], hidden=True)
    assert "marker_sensitivity: OK" in capsys.readouterr().out


def _sensitivity_mistake(ns, mode):
    right = ns["marker_sensitivity"]

    def wrong(model, x):
        first, second = right(model, x)
        if mode == "swapped":
            return second, first
        if mode == "summed":
            return first * x.shape[0], second * x.shape[0]
        if mode == "tensors":
            return torch.tensor(first), "second"
        xg = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xg).sum(), xg)
        if mode == "last step":
            value = float(grad[:, -1, 0].mean())
            return value, value
        if mode == "marker channel":
            marked = x[:, :, 1].nonzero()
            g = grad[:, :, 1]
            return (
                float(g[marked[0::2, 0], marked[0::2, 1]].mean()),
                float(g[marked[1::2, 0], marked[1::2, 1]].mean()),
            )
        if mode == "big step":
            rows, marked = torch.arange(x.shape[0]), x[:, :, 1].nonzero()
            out = []
            for steps in (marked[0::2, 1], marked[1::2, 1]):
                up = x.clone()
                up[rows, steps, 0] += 0.5
                with torch.no_grad():
                    out.append(float(((model(up) - model(x)) / 0.5).mean()))
            return tuple(out)
        raise ValueError(mode)

    return wrong


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("swapped", "the two are swapped"),
        ("summed", "summed over the batch"),
        ("last step", "at the last step"),
        ("marker channel", "marker channel"),
        ("big step", "finite difference with a large step"),
        ("tensors", "should be a finite Python float"),
    ],
)
def test_marker_sensitivity_mistakes_are_named(ns, mode, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_marker_sensitivity(_sensitivity_mistake(ns, mode))
    text = str(info.value)
    assert text.startswith("marker_sensitivity: ")
    assert "expected" not in text  # the reference's values are never printed


def test_the_learning_rate_is_the_best_short_run_unless_none_learned():
    choose = _benchmark().choose_learning_rate
    base = ADDING_BASELINE_MSE
    trials = [
        {"lr": 0.003, "final_test_mse": 0.5 * base},
        {"lr": 0.03, "final_test_mse": 0.2 * base},
    ]
    assert choose(trials, default=0.01) == 0.03
    # every short run still on the plateau: the lowest is noise, the default is kept
    flat = [
        {"lr": 0.003, "final_test_mse": 0.95 * base},
        {"lr": 0.03, "final_test_mse": 1.0 * base},
    ]
    assert choose(flat, default=0.01) == 0.01
    with pytest.raises(ValueError, match="trials is empty"):
        choose([], default=0.01)


def test_benchmark_script_writes_the_measurement(tmp_path, capsys):
    module = _benchmark()
    path = tmp_path / "sweep.json"
    plot = tmp_path / "sweep.png"
    assert module.main(["--fast", "--jobs", "1", "--json", str(path), "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0
    record = shipped_sweep(path)
    assert record["settings"] == module.FAST
    assert record["command"] == f"python benchmarks/long_memory.py --fast --jobs 1 --json {path}"
    lengths, seeds = module.FAST["lengths"], module.FAST["seeds"]
    assert len(record["runs"]) == len(record["models"]) * len(lengths) * len(seeds)
    for run in record["runs"]:
        assert run["steps"] == module.FAST["n_steps"] and len(run["marker_sensitivity"]) == 2
    assert len(record["learning_rate_trials"]) == len(record["models"]) * len(lengths) * len(
        module.FAST["lr_candidates"]
    )
    out = capsys.readouterr().out
    assert "d answer / d first marked value" in out and "final test MSE / baseline" in out
    # the verdict reads the record: the fast sweep is too short for the result to hold
    assert module.verdict(record, 0.1, 0.5)[0] is False
    with pytest.raises(SystemExit):
        module.main(["--jobs", "0"])


def test_notebook_plots_the_shipped_sweep_and_quotes_no_figure():
    _, text = _notebook_text("source")
    assert "sweep = shipped_sweep()" in text and "print(sweep_table(sweep))" in text
    record = shipped_sweep()
    for info in record["models"].values():
        assert f"{info['n_parameters']:,}" not in text
    for run in record["runs"]:
        assert f"{run['final_test_mse']:.4f}" not in text
    for phrase in ("benchmarks/", "torch 2.", "seed 0", "2.13", "torch.__version__"):
        assert phrase not in text, phrase
    # the capacity claim of the folded answer is true
    lstm = LastStepRegressor("LSTM", 2, 32)
    assert count_parameters(LastStepRegressor("RNN", 2, 66)) > count_parameters(lstm)


def test_notebook_prose_is_for_learners():
    _, text = _notebook_text("source")
    lowered = text.lower()
    for phrase in ("the seed", "original notebook", "shared with other jobs", "idle machine"):
        assert phrase not in lowered, phrase
    assert "Udacity's RNN lesson" in text


def test_every_plot_is_followed_by_what_to_see():
    nb, _ = _notebook_text("source")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            following = nb.cells[index + 1]
            assert following.cell_type == "markdown", cell.source[:60]
            assert following.source.startswith("**What you should see:**"), cell.source[:60]


def test_the_lesson_ends_with_a_self_test():
    nb, _ = _notebook_text("source")
    questions, answers = nb.cells[-2].source, nb.cells[-1].source
    assert questions.startswith("## Self-test")
    assert 3 <= len(re.findall(r"^\d\. ", questions, flags=re.M)) <= 5
    assert answers.startswith("<details><summary>Answers</summary>")
    assert answers.rstrip().endswith("</details>")
