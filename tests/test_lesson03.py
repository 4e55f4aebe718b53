"""Lesson 03: helpers/timeseries.py, the checks' verdicts and messages on the usual mistakes in
SimpleRNN and train_rnn, the long-memory benchmark script, and the notebook's stated figures."""

from __future__ import annotations

import importlib.util
import math

import matplotlib
import nbformat
import pytest
import torch
from conftest import ROOT, loaded, notebook_path
from torch import nn

from helpers.checks import CheckFailure
from helpers.checks.lesson03 import EXERCISES, check_simple_rnn, check_train_rnn
from helpers.timeseries import (
    ADDING_BASELINE_MSE,
    DT,
    WARMUP,
    LastStepRegressor,
    RegressorHistory,
    _sine,
    adding_problem,
    count_parameters,
    cpu_threads,
    forecast,
    forecast_errors,
    long_memory_race,
    next_step_mse,
    persistence_mse,
    plot_forecast,
    plot_forecast_errors,
    plot_losses,
    plot_race,
    plot_windows,
    race_table,
    sine_series,
    sine_stream,
    sine_windows,
    train_regressor,
)

matplotlib.use("Agg")
LESSON = "03_time_series_rnn"


@pytest.fixture(scope="module")
def ns():
    return loaded(notebook_path("solutions", LESSON))


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


def test_forecast_feeds_predictions_back_and_carries_the_state():
    series = sine_series(6, 70, seed=4)
    context, truth = series[:, :50], series[:, 50:]
    oracle = SineOracle().train()
    predicted = forecast(oracle, context, 20)
    assert predicted.shape == truth.shape == (6, 20, 1)
    assert oracle.training
    errors = forecast_errors(predicted, truth)
    assert errors.shape == (20,)
    assert errors.max() < 1e-4
    naive = forecast_errors(context[:, -1:].expand_as(truth), truth)
    assert naive[-1] > 0.1
    with pytest.raises(ValueError):
        forecast(oracle, context, 0)
    with pytest.raises(ValueError):
        forecast_errors(predicted, truth[:, :-1])


def test_plots_return_axes_and_reject_empty_input():
    data = sine_windows(6, 10, test_fraction=0.5, seed=0)
    assert plot_windows(data.x_train, data.y_train, n=2, prediction=data.y_train) is not None
    assert plot_losses([1.0, 0.5, 0.2], baseline=0.3) is not None
    series = sine_series(2, 30)
    assert plot_forecast(series[:, :20], series[:, 20:], series[:, 20:]) is not None
    assert plot_forecast_errors({"a": torch.ones(5)}) is not None
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
    table = race_table(histories)
    assert all(name in table for name in histories) and "baseline" in table
    assert plot_race(histories) is not None
    with pytest.raises(ValueError):
        long_memory_race(6, kinds=("CNN",))


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


class Flattened(_Layers):  # the original notebook's view(-1, hidden_dim)
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
        (OneLayerAlways, "\\(input_size, hidden_size, num_layers\\)"),
        (NoneNotAccepted, "raised TypeError"),
    ],
)
def test_simple_rnn_mistakes_are_named(model, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_simple_rnn(model, cases=((1, 1, 6, 2, 3, 4),))
    assert str(info.value).startswith("SimpleRNN(input_size=1")


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
            loss = nn.functional.mse_loss(output, y)
            optimizer.zero_grad()
            loss.backward(retain_graph=mode == "no detach, retain graph")
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
        ("no optimizer step", "above the threshold 0.005"),
    ],
)
def test_train_rnn_mistakes_are_named(ns, mode, message):
    with pytest.raises(CheckFailure, match=message) as info:
        check_train_rnn(_train_rnn_variant(mode), ns["SimpleRNN"])
    assert str(info.value).startswith("train_rnn:")


def test_train_rnn_starting_from_explicit_zeros_is_fine(ns, capsys):
    check_train_rnn(_train_rnn_variant("zeros first"), ns["SimpleRNN"])
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


def test_benchmark_script_runs_and_prints_the_table(capsys):
    spec = importlib.util.spec_from_file_location(
        "long_memory", ROOT / "benchmarks" / "long_memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--fast", "--steps", "3", "--seq-length", "6", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "T=6" in out and "baseline (always predict 1.0)" in out
    for name in ("RNN", "GRU", "LSTM"):
        assert f"\n{name} " in out


def _notebook_text(kind):
    nb = nbformat.read(notebook_path(kind, LESSON), as_version=4)
    return nb, "\n".join(cell.source for cell in nb.cells)


def test_notebook_states_the_measured_race():
    nb, text = _notebook_text("solutions")
    assert "| ? |" not in text and " ? s" not in text, "fill in the measured race figures"
    assert "T = 100" in text and "1500 steps" in text
    for name in ("`nn.RNN`", "`nn.GRU`", "`nn.LSTM`"):
        assert name in text


def test_long_cells_are_tagged_training():
    nb, _ = _notebook_text("solutions")
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
    _, text = _notebook_text("lessons")
    assert "nn.RNN(input_size, hidden_dim, n_layers, batch_first=True)" not in text
    assert "hidden = hidden.detach()  # keep" not in text
    assert text.count("raise NotImplementedError()") >= 3  # __init__, forward, train_rnn
