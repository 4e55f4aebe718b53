"""Checks for lesson 03_time_series_rnn: ``SimpleRNN``, ``train_rnn``, ``forecast`` and
``marker_sensitivity``, judged by behaviour.

``SimpleRNN`` is run against its own ``torch.nn.RNN`` and ``torch.nn.Linear`` layers (the
composition must be exactly "recurrent layer, then a linear head on every step") and probed for
the properties the lesson needs: output and hidden shapes, a hidden state that is really used,
``hidden=None`` meaning zeros, and a gradient that reaches every parameter. ``train_rnn`` is run
on a fresh ``SimpleRNN`` wrapped in a recorder that watches every training forward pass: the
hidden state must be passed on from one step to the next, detached (truncated back-propagation
through time), over windows that continue each other, with the weights updated and the gradients
zeroed at every step; after the fixed fast budget the model must predict held-out sine windows
well. ``forecast`` is run on a fixed random RNN of the check's own that counts the time steps it
is fed, and compared with a private reference rollout; the usual mistakes are recomputed on the
same model and named. ``marker_sensitivity`` is compared with central differences on the
check's own models: a weighted adder whose answer is known in closed form, and seeded float64
RNN, GRU and LSTM regressors.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import (
    F32_ATOL,
    F32_RTOL,
    Cause,
    CheckFailure,
    assert_close,
    call,
    fail,
    gradient_report,
    report,
)
from helpers.checks.engine import Exercise, exercise_table
from helpers.long_memory import LastStepRegressor, adding_problem
from helpers.timeseries import (
    WARMUP,
    _predict,
    next_step_mse,
    persistence_mse,
    sine_windows,
)
from helpers.training import cpu_threads

#: Training steps ``check_train_rnn`` gives ``train_rnn`` (the fast-mode budget).
TRAIN_STEPS = 60
#: Next-step MSE on held-out sine windows (the first WARMUP steps unscored) that a trained model
#: must get below after TRAIN_STEPS steps. Always predicting "no change" scores about 0.011; the
#: reference solution measured at most 0.0007 / 0.0016 / 0.0015 over 8 model seeds in each of the
#: configurations of EXERCISES, (hidden_dim, n_layers, seq_length) = (32, 1, 20) / (16, 1, 10) /
#: (16, 2, 30).
TRAIN_THRESHOLD = 0.005

_HELDOUT_LENGTH = 60  # WARMUP unscored steps, then 40 scored ones


def _simple_rnn_layers(
    exercise: str, model: nn.Module, input_size, output_size, hidden_dim, n_layers, inputs
) -> tuple[nn.RNN, nn.Linear]:
    """The model's single ``nn.RNN`` and its linear head, checked against the sizes asked for."""
    rnns = [m for m in model.modules() if type(m) is nn.RNN]
    if len(rnns) != 1:
        others = sorted({type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase)})
        fail(
            exercise,
            f"should hold exactly one torch.nn.RNN layer, found {len(rnns)}"
            + (f" (and {', '.join(others)})" if others else ""),
            inputs,
            "create it in __init__ as an attribute, e.g. self.rnn = nn.RNN(...).",
        )
    rnn = rnns[0]
    sizes = (rnn.input_size, rnn.hidden_size, rnn.num_layers)
    if sizes != (input_size, hidden_dim, n_layers):
        fail(
            exercise,
            f"its nn.RNN has (input_size, hidden_size, num_layers) = {sizes}, expected "
            f"{(input_size, hidden_dim, n_layers)}",
            inputs,
            "pass input_size, hidden_dim and n_layers from __init__'s arguments to nn.RNN.",
        )
    heads = [m for m in model.modules() if type(m) is nn.Linear]
    fitting = [m for m in heads if (m.in_features, m.out_features) == (hidden_dim, output_size)]
    if len(fitting) != 1:
        found = [(m.in_features, m.out_features) for m in heads]
        fail(
            exercise,
            f"should hold one nn.Linear(hidden_dim={hidden_dim}, output_size="
            f"{output_size}) as its head; found nn.Linear layers with (in, out) = {found}",
            inputs,
        )
    return rnn, fitting[0]


def _reference(rnn: nn.RNN, head: nn.Linear, x: torch.Tensor, hidden: torch.Tensor | None):
    """What "nn.RNN, then the linear head on every step" gives, whatever the layer's layout."""
    with torch.no_grad():
        if rnn.batch_first:
            outputs, h_n = rnn(x, hidden)
        else:
            outputs, h_n = rnn(x.transpose(0, 1), hidden)
            outputs = outputs.transpose(0, 1)
        return head(outputs), h_n


def _unpack(exercise: str, result, inputs):
    if not isinstance(result, tuple) or len(result) != 2:
        fail(
            exercise,
            f"forward should return a tuple (output, hidden), got {type(result).__name__}",
            inputs,
        )
    for name, value in zip(("output", "hidden"), result, strict=True):
        if not isinstance(value, torch.Tensor):
            fail(
                exercise,
                f"forward's {name} should be a torch.Tensor, got {type(value).__name__}",
                inputs,
            )
    return result


def _forward(exercise, model, x, hidden, inputs, rnn):
    try:
        return _unpack(exercise, call(exercise, model, x, hidden, inputs=inputs), inputs)
    except CheckFailure as failure:
        if rnn.batch_first:
            raise
        raise CheckFailure(
            f"{failure}\n  likely cause: nn.RNN was created without "
            "batch_first=True, so it reads x (batch, seq, input) as (seq, batch, "
            "input)."
        ) from None


def _check_output_shape(exercise, output, batch, seq, output_size, inputs) -> None:
    shape = tuple(output.shape)
    expected = (batch, seq, output_size)
    if shape == expected:
        return
    if shape == (batch * seq, output_size):
        cause = (
            "the output is flattened to (batch * seq, output_size), as Simple_RNN.ipynb of "
            "Udacity's RNN lesson does; nn.Linear works on the last dimension, so apply it to "
            "the RNN's output directly and keep (batch, seq, output_size)."
        )
    elif shape == (batch, output_size):
        cause = "only the last step is returned; the head must be applied to every step."
    elif shape == (seq, batch, output_size):
        cause = "batch and seq are swapped: use batch_first=True and keep x's layout."
    elif len(shape) == 3 and shape[1:] == (batch, output_size):
        cause = (
            "the head was applied to hidden (every layer's state after the last step) instead "
            "of r_out (the top layer's output at every step)."
        )
    elif len(shape) == 3 and shape[1] == batch and shape[0] != batch:
        cause = "forward returns (hidden, output): the order is (output, hidden)."
    else:
        cause = None
    fail(
        exercise,
        f"output has shape {shape}, expected (batch, seq, output_size) = {expected}",
        inputs,
        cause,
    )


_RNN_PARAMETERS = ("weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l")
_BENT = (
    "the gradients autograd gives for {names} do not match how the output changes when they "
    "move (checked against the output's own values)"
)
_BENT_CAUSE = (
    "something bends the gradient: an in-place change of a tensor autograd still needs, .data, "
    "or a custom autograd function."
)


def _check_gradients_reach(name, model: nn.Module, x, hidden, inputs) -> None:
    """A loss on the output must give every parameter of ``model`` a non-zero gradient."""
    found = gradient_report(model, x, hidden)
    if found["frozen"]:
        fail(
            name,
            f"parameters {', '.join(found['frozen'])} have requires_grad=False, so training "
            "never changes them",
            inputs,
            "leave every parameter trainable (no requires_grad_(False)).",
        )
    if found["error"] is not None:
        fail(name, f"backward() through the output raised RuntimeError: {found['error']}", inputs)
    if found["bent"]:
        fail(name, _BENT.format(names=", ".join(found["bent"])), inputs, _BENT_CAUSE)
    missing = found["missing"]
    if not missing:
        return
    names = [n for n, _ in model.named_parameters()]
    rnn_names = [n for n in names if n.split(".")[-1].startswith(_RNN_PARAMETERS)]
    in_rnn = [n for n in missing if n in rnn_names]
    if rnn_names and len(in_rnn) == len(rnn_names):
        fail(
            name,
            "no gradient reaches the recurrent layer: after backward() of a loss on the "
            f"output, {', '.join(in_rnn)} have no gradient, so training would only ever fit "
            "the linear head",
            inputs,
            "the RNN's output is detached (or computed under torch.no_grad()) before the linear "
            "head: apply the head to r_out itself.",
        )
    fail(
        name,
        "after backward() of a loss on the output, these parameters have no (or a zero) "
        f"gradient: {', '.join(missing)}; training would never change them",
        inputs,
        "every layer must be part of the computation of the output, with no .detach(), "
        "torch.no_grad() or .data on the way.",
    )


def _check_simple_rnn(SimpleRNN, *, cases, seed: int) -> None:
    """``SimpleRNN`` is an ``nn.RNN`` with a linear head that uses and returns the hidden state.

    ``cases`` holds ``(input_size, output_size, hidden_dim, n_layers, batch, seq_length)``.
    """
    exercise = "SimpleRNN"
    worst = 0.0
    for i, (input_size, output_size, hidden_dim, n_layers, batch, seq) in enumerate(cases):
        remote.manual_seed(seed + i)
        sizes = {
            "input_size": input_size,
            "output_size": output_size,
            "hidden_dim": hidden_dim,
            "n_layers": n_layers,
        }
        model = call(exercise, SimpleRNN, **sizes)
        if not remote.is_module(model):
            fail(
                exercise,
                f"SimpleRNN(...) should be a torch.nn.Module, got {type(model).__name__}",
                None,
                "class SimpleRNN(nn.Module) and call super().__init__() first.",
            )
        name = f"SimpleRNN({', '.join(f'{k}={v}' for k, v in sizes.items())})"
        g = torch.Generator().manual_seed(seed + 100 + i)
        x = torch.randn(batch, seq, input_size, generator=g)
        h_a = torch.randn(n_layers, batch, hidden_dim, generator=g) * 0.8
        h_b = torch.randn(n_layers, batch, hidden_dim, generator=g) * 0.8
        inputs = {"x": x, "hidden": h_a}
        rnn, head = _simple_rnn_layers(
            name, model, input_size, output_size, hidden_dim, n_layers, inputs
        )

        output, hidden = _forward(name, model, x, h_a, inputs, rnn)
        _check_output_shape(name, output, batch, seq, output_size, inputs)
        expected_hidden = (n_layers, batch, hidden_dim)
        if tuple(hidden.shape) != expected_hidden:
            if tuple(hidden.shape) == (batch, hidden_dim):
                cause = (
                    "r_out[:, -1] is the top layer's last output (batch, hidden_dim); return the "
                    "hidden state nn.RNN gives back, (n_layers, batch, hidden_dim)."
                )
            else:
                cause = (
                    "return the hidden state nn.RNN gives back, unchanged: layers come first, "
                    "whatever batch_first says."
                )
            fail(
                name,
                f"hidden has shape {tuple(hidden.shape)}, expected (n_layers, batch, "
                f"hidden_dim) = {expected_hidden}",
                inputs,
                cause,
            )
        if not output.requires_grad:
            fail(
                name,
                "output does not require grad, so training cannot change the weights",
                inputs,
                "no torch.no_grad() or .detach() inside forward; train_rnn detaches "
                "the hidden state, not forward.",
            )

        output_b, _ = _forward(name, model, x, h_b, {"x": x, "hidden": h_b}, rnn)
        if tuple(output_b.shape) == tuple(output.shape):
            change = float((output_b.detach() - output.detach()).abs().max())
            if change < 1e-6:
                fail(
                    name,
                    "the output is the same for two different hidden states passed in: "
                    "the hidden state is ignored",
                    inputs,
                    "pass it on to the recurrent layer: self.rnn(x, hidden).",
                )

        ref_output, ref_hidden = _reference(rnn, head, x, h_a)
        squashed = (
            (torch.tanh, "tanh"),
            (torch.sigmoid, "sigmoid"),
            (torch.relu, "ReLU"),
        )
        worst = max(
            worst,
            assert_close(
                name,
                output,
                ref_output,
                inputs=inputs,
                name="output (batch, seq, output_size)",
                reference="its nn.RNN followed by its nn.Linear on every step",
                atol=F32_ATOL,
                rtol=F32_RTOL,
                causes=[
                    Cause(
                        f"a {label} after the linear head: the output is a regression value, "
                        "so return the linear layer's output as it is.",
                        fn(ref_output),
                    )
                    for fn, label in squashed
                ],
            ),
        )
        worst = max(
            worst,
            assert_close(
                name,
                hidden,
                ref_hidden,
                inputs=inputs,
                name="hidden (n_layers, batch, hidden_dim)",
                reference="the hidden state its nn.RNN returns",
                atol=F32_ATOL,
                rtol=F32_RTOL,
                causes=[
                    Cause(
                        "forward returns the hidden state it was given, not the new one "
                        "nn.RNN returns.",
                        h_a,
                    )
                ],
            ),
        )
        _check_gradients_reach(name, model, x, h_a, inputs)

        none_inputs = {"x": x, "hidden": None}
        output_none, _ = _forward(name, model, x, None, none_inputs, rnn)
        ref_none, _ = _reference(rnn, head, x, None)
        worst = max(
            worst,
            assert_close(
                name,
                output_none,
                ref_none,
                inputs=none_inputs,
                name="output for hidden=None",
                reference="starting from a zero hidden state (what nn.RNN does with None)",
                atol=F32_ATOL,
                rtol=F32_RTOL,
            ),
        )
    report(exercise, len(cases), worst, "torch.nn.RNN + torch.nn.Linear")


class _Recorder(nn.Module):
    """Wraps the model given to ``train_rnn`` and watches every forward pass made with autograd on.

    At every training step after the first it checks that the hidden state passed in is the one
    the model returned at the step before (so it is carried), and that it has been detached from
    that step's graph (so back-propagation is truncated). It fails at once, with a message that
    says which, rather than letting ``backward`` crash later.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model
        self.steps = 0
        self.last_hidden = None
        self.boundaries: list[tuple[torch.Tensor, torch.Tensor]] = []  # (x[:, 0], x[:, -1])
        self.shapes: list[tuple[int, ...]] = []
        self.first_weights: torch.Tensor | None = None
        self.accumulated_at: int | None = None  # first step whose gradient was accumulated
        self._incoming: dict[int, torch.Tensor] = {}
        for p in model.parameters():
            if p.requires_grad:
                p.register_hook(self._remember_incoming(p))
                p.register_post_accumulate_grad_hook(self._compare_accumulated)

    def _remember_incoming(self, p):
        def hook(grad):
            self._incoming[id(p)] = grad.detach().clone()

        return hook

    def _compare_accumulated(self, p) -> None:
        # after zero_grad() the accumulated .grad equals this backward's gradient exactly
        new = self._incoming.pop(id(p), None)
        if new is None or p.grad is None or self.accumulated_at is not None:
            return
        if not torch.allclose(p.grad.detach(), new, rtol=1e-5, atol=1e-8):
            self.accumulated_at = self.steps

    def weights(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten().cpu() for p in self.inner.parameters()])

    def __getattr__(self, name):  # let train_rnn read the model's own attributes
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, x, hidden=None):
        if not torch.is_grad_enabled():  # evaluation inside train_rnn: not a training step
            return self.inner(x, hidden)
        step = self.steps + 1
        if step > 1:
            self._check_hidden(step, hidden)
        else:
            self.first_weights = self.weights()
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            self.shapes.append(tuple(x.shape))
            self.boundaries.append((x[:, 0].detach().cpu(), x[:, -1].detach().cpu()))
        result = self.inner(x, hidden)
        self.steps = step
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], torch.Tensor):
            self.last_hidden = result[1].detach().clone()
        return result

    def _check_hidden(self, step: int, hidden) -> None:
        if hidden is None:
            fail(
                "train_rnn",
                f"never passes the hidden state on: at training step {step} the "
                "model got hidden=None, so every window starts from zeros and nothing is "
                "remembered between windows.",
                None,
                "keep the hidden state the model returns (output, hidden = model(x, hidden)) and "
                "pass it, detached, to the next step.",
            )
        if not isinstance(hidden, torch.Tensor):
            fail(
                "train_rnn",
                f"at training step {step} the hidden state passed to the model is a "
                f"{type(hidden).__name__}, expected a tensor (n_layers, batch, hidden_dim)",
            )
        if hidden.requires_grad or hidden.grad_fn is not None:
            fail(
                "train_rnn",
                f"does not detach the hidden state: at training step {step} the "
                "hidden state passed to the model still carries the graph of the step before "
                "(hidden.requires_grad is True), so backward() would run back through every "
                "earlier window (or fail with 'Trying to backward through the graph a second "
                "time').",
                None,
                "hidden = hidden.detach() before the forward pass (truncated back-propagation "
                "through time).",
            )
        previous = self.last_hidden
        if (
            previous is None
            or tuple(hidden.shape) != tuple(previous.shape)
            or not torch.equal(hidden.detach().to(previous.device), previous)
        ):
            fail(
                "train_rnn",
                f"never passes the hidden state on: at training step {step} the "
                "hidden state passed to the model is not the one it returned at step "
                f"{step - 1} (fresh zeros or a new tensor each step?).",
                None,
                "carry it: output, hidden = model(x, hidden), with hidden.detach() in between.",
            )


def _check_losses(losses, n_steps: int) -> None:
    if not isinstance(losses, list | tuple):
        fail(
            "train_rnn",
            f"should return a list of losses (one per step), got {type(losses).__name__}",
        )
    if len(losses) != n_steps:
        fail(
            "train_rnn",
            f"should return one loss per training step: {n_steps} steps, {len(losses)} losses",
        )
    for i, value in enumerate(losses):
        if isinstance(value, torch.Tensor):
            fail(
                "train_rnn",
                f"losses[{i}] is a tensor; append loss.item() (a float): a tensor "
                "keeps its whole graph alive, and the memory grows with every step.",
            )
        if (
            not isinstance(value, float | int)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            fail("train_rnn", f"losses[{i}] should be a finite float, got {value!r}")


def _check_windows(recorder: _Recorder, seq_length: int) -> None:
    if recorder.steps < 2:
        fail(
            "train_rnn",
            f"made {recorder.steps} training forward pass(es); expected one per step",
            None,
            "loop n_steps times: one window, one forward pass, one update.",
        )
    for shape in recorder.shapes:
        if len(shape) != 3 or shape[1] != seq_length or shape[2] != 1:
            fail(
                "train_rnn",
                f"trained on x of shape {shape}; expected windows (batch, "
                f"seq_length={seq_length}, 1)",
                None,
                "use sine_stream(seq_length, batch_size, ...) and pass seq_length on.",
            )
    within = torch.stack([last - first for first, last in recorder.boundaries]).abs().mean()
    within = float(within) / max(seq_length - 1, 1)  # mean change over one step inside a window
    jumps = [
        float((nxt[0] - cur[1]).abs().mean())
        for cur, nxt in zip(recorder.boundaries, recorder.boundaries[1:], strict=False)
    ]
    jump = sum(jumps) / len(jumps)
    if jump > 4 * within + 0.1:
        fail(
            "train_rnn",
            "consecutive training windows do not continue each other (the first "
            f"value of a window is on average {jump:.2f} away from the last value of the one "
            "before, while one step inside a window moves about "
            f"{within:.2f}): a carried hidden state then describes a different wave.",
            None,
            "draw the windows from one sine_stream(...) with next(stream) at every step.",
        )


def _check_updates(recorder: _Recorder) -> None:
    """The weights changed during training, and gradients did not pile up across steps."""
    if recorder.first_weights is not None and torch.equal(
        recorder.first_weights, recorder.weights()
    ):
        fail(
            "train_rnn",
            f"the model's weights never changed during its {recorder.steps} training steps",
            None,
            "every step needs loss.backward() and then optimizer.step(), with no "
            "optimizer.zero_grad() between them (zero the gradients before backward()).",
        )
    if recorder.accumulated_at is not None:
        fail(
            "train_rnn",
            "the gradients pile up across steps: at training step "
            f"{recorder.accumulated_at}, the gradient after backward() was not that step's "
            "own gradient but its sum with the gradients of earlier steps",
            None,
            "call optimizer.zero_grad() at every step, before loss.backward().",
        )


def _check_train_rnn(
    train_rnn,
    SimpleRNN,
    *,
    configs,
    n_steps: int = TRAIN_STEPS,
    threshold: float = TRAIN_THRESHOLD,
) -> None:
    """``train_rnn`` carries and detaches the hidden state and trains a model that predicts well.

    For each ``(hidden_dim, n_layers, seq_length, seed)`` in ``configs``: a ``SimpleRNN`` is made
    after ``torch.manual_seed(seed)`` and trained with ``train_rnn(model, n_steps,
    seq_length=seq_length)``; every training step is watched (see ``_Recorder``); the returned
    losses must be ``n_steps`` floats; the trained model's next-step MSE on held-out sine windows
    (``WARMUP`` steps unscored) must be below ``threshold``.
    """
    try:
        check_simple_rnn_quietly(SimpleRNN)
    except CheckFailure as failure:
        fail(
            "train_rnn",
            "is checked by training your SimpleRNN, which does not pass its own "
            "check yet. Fix SimpleRNN first; its check says:\n" + str(failure),
        )
    heldout = sine_windows(64, _HELDOUT_LENGTH, test_fraction=0.5, seed=2024)
    x_test, y_test = heldout.x_test, heldout.y_test
    naive = persistence_mse(x_test, y_test, WARMUP)
    for hidden_dim, n_layers, seq_length, seed in configs:
        remote.manual_seed(seed)
        model = SimpleRNN(input_size=1, output_size=1, hidden_dim=hidden_dim, n_layers=n_layers)
        recorder = remote.construct(_Recorder, model)  # beside the model, which it watches
        # One CPU thread: the model is tiny, and on a busy machine two threads are slower.
        with cpu_threads(1):
            losses = call("train_rnn", train_rnn, recorder, n_steps, seq_length=seq_length)
        _check_losses(losses, n_steps)
        if recorder.steps != n_steps:
            fail(
                "train_rnn",
                f"made {recorder.steps} training forward passes for n_steps="
                f"{n_steps}; expected exactly one per step",
            )
        _check_windows(recorder, seq_length)
        _check_updates(recorder)
        error = _heldout_mse(model, x_test, y_test)
        if not error < threshold:
            cause = (
                "check the recipe: Adam(model.parameters(), lr=lr), optimizer.zero_grad(), "
                "loss.backward(), optimizer.step() at every step, on "
                "sine_stream(seq_length, batch_size, noise=noise, seed=seed)."
            )
            if abs(error - naive) < 0.25 * naive:
                cause = (
                    "the model learned to repeat its input ('no change' scores the same): is "
                    "the loss computed against x instead of the target y?"
                )
            fail(
                "train_rnn",
                f"after n_steps={n_steps} steps (seq_length={seq_length}, "
                f"hidden_dim={hidden_dim}, n_layers={n_layers}), the next-step MSE on held-out "
                f"sine windows is {error:.4f}, above the threshold {threshold} (always "
                f"predicting 'no change' scores {naive:.4f}).",
                None,
                cause,
            )
    report(
        "train_rnn",
        len(configs),
        None,
        f"the recipe (hidden carried and detached; held-out MSE < {threshold})",
    )


def _heldout_mse(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """:func:`helpers.timeseries.next_step_mse` of the learner's model, which may be in the
    kernel: its predictions come from there, the error is computed here."""
    if not remote.active():
        return next_step_mse(model, x, y)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = _predict(model, x)
    finally:
        model.train(was_training)
    return float((output[:, WARMUP:] - y[:, WARMUP:]).pow(2).mean())


def check_simple_rnn_quietly(SimpleRNN) -> None:
    """``check_simple_rnn`` on one small case, without printing."""
    with contextlib.redirect_stdout(io.StringIO()):
        _check_simple_rnn(SimpleRNN, cases=((1, 1, 8, 1, 2, 5),), seed=7)


# ----------------------------------------------------------------------------------------------
# forecast


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


def _check_forecast(forecast, *, cases, seed: int) -> None:
    """``forecast(model, context, horizon)`` equals the reference rollout on a fixed model.

    ``cases`` holds ``(batch, context_length, horizon, size, hidden_dim, n_layers)``; the model's
    input and output both have ``size`` features (a prediction is fed back as the next input).
    """
    exercise = "forecast"
    worst = 0.0
    quadratic = None
    for i, (batch, length, horizon, size, hidden_dim, n_layers) in enumerate(cases):
        model = _ProbeModel(size, hidden_dim, n_layers, seed + i)
        g = torch.Generator().manual_seed(seed + 50 + i)
        context = torch.randn(batch, length, size, generator=g)
        inputs = {"context": context}
        name = f"forecast(model, context, horizon={horizon})"
        result = call(name, forecast, model, context, horizon, inputs=inputs)
        full = _rollout(model, context, horizon)
        expected = full[:, :horizon]
        if isinstance(result, tuple | list) and len(result) == 2:
            fail(
                name,
                f"returned a {type(result).__name__} of two items; expected one tensor "
                "(batch, horizon, output_size)",
                inputs,
                "return only the forecasts, not (forecasts, hidden).",
            )
        if isinstance(result, torch.Tensor):
            shape, want = tuple(result.shape), (batch, horizon, size)
            cause = None
            if shape == (batch, horizon + 1, size):
                cause = (
                    "one step too many: the first prediction (the output after the last "
                    "observed value) is counted twice, or the loop runs horizon times after it."
                )
            elif shape == (batch, horizon - 1, size):
                cause = "one step short: the first prediction, made from the context, is missing."
            elif shape == (batch, length + horizon, size) or shape == (
                batch,
                length + horizon - 1,
                size,
            ):
                cause = (
                    "the outputs over the context are included: return only the horizon "
                    "forecasts that follow it."
                )
            elif shape == (batch, horizon) and size == 1:
                cause = "the feature dimension was squeezed away: keep (batch, horizon, 1)."
            elif shape == (horizon, batch, size):
                cause = "horizon and batch are swapped: stack along dim=1 (batch first)."
            if shape != want:
                fail(
                    name,
                    f"the forecasts have shape {shape}, expected (batch, horizon, output_size) "
                    f"= {want}",
                    inputs,
                    cause,
                )
        causes = [
            Cause(
                "the hidden state is not carried between steps: each prediction is fed back "
                "with hidden=None, so the model forgets the context after the first step. Pass "
                "on the hidden state the model returns: output, hidden = model(step, hidden).",
                _rollout(model, context, horizon, carry=False)[:, :horizon],
            ),
            Cause(
                "the last observed value is fed at every step instead of the model's own "
                "prediction: feed back the prediction the model has just made.",
                _rollout(model, context, horizon, feed=context[:, -1:])[:, :horizon],
            ),
            Cause(
                "off by one: the first prediction (the model's output after the last observed "
                "value) is dropped; it is the first forecast.",
                full[:, 1 : horizon + 1],
            ),
            Cause(
                "off by one: the first prediction appears twice; append each prediction once, "
                "then feed it back.",
                torch.cat([full[:, :1], full[:, : horizon - 1]], dim=1),
            ),
            Cause(
                "the last observed value is read twice (once in the context, once more as the "
                "first input): the output after the context already is the first forecast.",
                _rollout(model, context, horizon, first_input=context[:, -1:])[:, :horizon],
            ),
        ]
        if horizon == 1:  # with one step, only these differ from the right answer
            causes = [causes[2], causes[4]]
        try:
            diff = assert_close(
                name,
                result,
                expected,
                inputs=inputs,
                name="forecasts (batch, horizon, output_size)",
                reference="the reference rollout (warm up on the context, then feed each "
                "prediction back with the hidden state carried)",
                atol=F32_ATOL,
                rtol=F32_RTOL,
                causes=causes,
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
        worst = max(worst, diff)
        fed = sum(steps for steps, _ in model.calls)
        if horizon > 2 and fed > 2 * (length + horizon):
            quadratic = (length, horizon, fed)
    if quadratic is not None:
        length, horizon, fed = quadratic
        print(
            f"note: forecast is right, but it fed the model {fed} time steps for a context of "
            f"{length} and a horizon of {horizon}; carrying the hidden state needs only "
            f"{length + horizon - 1} (no points lost). Re-reading the whole series at every "
            "step makes the time grow with the square of the horizon: read the context once, "
            "then feed one step at a time with the hidden state carried."
        )
    report(exercise, len(cases), worst, "the reference rollout")


# ----------------------------------------------------------------------------------------------
# marker_sensitivity: how much a model's answer moves with each marked value


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


def _sensitivity_causes(model, x, first_steps, second_steps, expected) -> list[Cause]:
    """The usual wrong answers, measured like the reference: by central differences."""
    batch = x.shape[0]
    last = torch.full_like(first_steps, x.shape[1] - 1)

    def mean(steps, channel=0):
        return float(_central_difference(model, x, steps, channel=channel).mean())

    causes = [
        Cause(
            "the two are swapped: the first value is the derivative at the earlier marked step "
            "(in the first half of the sequence).",
            (expected[1], expected[0]),
        ),
        Cause(
            "that is the derivative with respect to the marker channel (channel 1) at the marked "
            "steps; the values are channel 0.",
            (mean(first_steps, channel=1), mean(second_steps, channel=1)),
        ),
        Cause(
            "the derivatives are taken at the last step for both values, not at each "
            "sequence's marked steps (find them from the marker channel).",
            (mean(last), mean(last)),
        ),
        Cause(
            "each value is the derivative with respect to every value of the sequence, summed; "
            "only the value at the marked step counts.",
            (mean(None), mean(None)),
        ),
    ]
    if batch > 1:
        causes.append(
            Cause(
                "the derivatives are summed over the batch: average them over the sequences.",
                (expected[0] * batch, expected[1] * batch),
            )
        )
    return causes


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


def _check_marker_sensitivity(marker_sensitivity, *, cases, seed: int) -> None:
    """``marker_sensitivity(model, x)`` equals central differences of the check's own models
    (a closed-form weighted adder, and seeded float64 RNN / GRU / LSTM regressors)."""
    exercise = "marker_sensitivity"
    worst = 0.0
    for i, (batch, seq_length, hidden, kind) in enumerate(cases):
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
        cause = next(
            (
                c.message
                for c in _sensitivity_causes(model, x, first_steps, second_steps, expected)
                if all(
                    abs(g - w) <= _SENSITIVITY_TOL * max(1.0, abs(w))
                    for g, w in zip(got, c.output, strict=True)
                )
            ),
            "the derivative of each sequence's answer with respect to its value at the marked "
            "step, averaged over the sequences; compare your steps with the marker channel, and "
            "mind that a finite difference with a large step is not the derivative.",
        )
        fail(
            exercise,
            f"on {batch} sequence(s) of {seq_length} steps ({what}), the {which} value is off "
            f"by {errors[0 if which == 'first' else 1] / scale:.2g} relative to the largest "
            "of the two.",
            inputs,
            cause,
        )
    report(exercise, len(cases), worst, "central differences")


#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    Exercise(
        "SimpleRNN",
        "check_simple_rnn",
        _check_simple_rnn,
        reads=("SimpleRNN",),
        visible={"cases": ((1, 1, 32, 1, 4, 10), (3, 2, 5, 2, 3, 7)), "seed": 0},
        hidden={
            "cases": ((1, 1, 1, 1, 1, 1), (2, 3, 6, 3, 5, 4), (4, 1, 16, 2, 2, 9)),
            "seed": 321,
        },
    ),
    Exercise(
        "train_rnn",
        "check_train_rnn",
        _check_train_rnn,
        reads=("train_rnn", "SimpleRNN"),
        visible={"configs": ((32, 1, 20, 0),)},
        hidden={"configs": ((16, 2, 30, 2),)},
    ),
    Exercise(
        "forecast",
        "check_forecast",
        _check_forecast,
        reads=("forecast",),
        visible={"cases": ((4, 10, 6, 1, 8, 1), (3, 5, 4, 2, 5, 2)), "seed": 0},
        hidden={
            "cases": ((1, 1, 1, 1, 3, 1), (2, 7, 9, 3, 6, 1), (5, 1, 12, 1, 4, 2)),
            "seed": 77,
        },
    ),
    Exercise(
        "marker_sensitivity",
        "check_marker_sensitivity",
        _check_marker_sensitivity,
        reads=("marker_sensitivity",),
        visible={"cases": ((4, 12, 0, "adder"), (3, 10, 5, "GRU")), "seed": 0},
        hidden={
            "cases": ((1, 2, 1, "RNN"), (6, 20, 4, "LSTM"), (5, 7, 0, "adder")),
            "seed": 40,
        },
    ),
)

check_simple_rnn = EXERCISES["SimpleRNN"].checker()
check_train_rnn = EXERCISES["train_rnn"].checker()
check_forecast = EXERCISES["forecast"].checker()
check_marker_sensitivity = EXERCISES["marker_sensitivity"].checker()
