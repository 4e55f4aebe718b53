"""Checks for lesson 03_time_series_rnn: ``SimpleRNN`` and ``train_rnn``, judged by behaviour.

``SimpleRNN`` is run against its own ``torch.nn.RNN`` and ``torch.nn.Linear`` layers (the
composition must be exactly "recurrent layer, then a linear head on every step") and probed for
the properties the lesson needs: output and hidden shapes, a hidden state that is really used,
``hidden=None`` meaning zeros. ``train_rnn`` is run on a fresh ``SimpleRNN`` wrapped in a
recorder that watches every training forward pass: the hidden state must be passed on from one
step to the next, detached (truncated back-propagation through time), over windows that continue
each other; after the fixed fast budget the model must predict held-out sine windows well.
"""

from __future__ import annotations

import contextlib
import io
import math

import torch
from torch import nn

from helpers.checks.core import (
    F32_ATOL,
    F32_RTOL,
    CheckFailure,
    Exercise,
    assert_close,
    call,
    exercise_table,
    fail,
    report,
)
from helpers.timeseries import (
    WARMUP,
    cpu_threads,
    next_step_mse,
    persistence_mse,
    sine_windows,
)

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
            "the output is flattened to (batch * seq, output_size), as the original notebook "
            "did; nn.Linear works on the last dimension, so apply it to the RNN's output "
            "directly and keep (batch, seq, output_size)."
        )
    elif shape == (batch, output_size):
        cause = "only the last step is returned; the head must be applied to every step."
    elif shape == (seq, batch, output_size):
        cause = "batch and seq are swapped: use batch_first=True and keep x's layout."
    else:
        cause = None
    fail(
        exercise,
        f"output has shape {shape}, expected (batch, seq, output_size) = {expected}",
        inputs,
        cause,
    )


def _check_simple_rnn(SimpleRNN, *, cases, seed: int) -> None:
    """``SimpleRNN`` is an ``nn.RNN`` with a linear head that uses and returns the hidden state.

    ``cases`` holds ``(input_size, output_size, hidden_dim, n_layers, batch, seq_length)``.
    """
    exercise = "SimpleRNN"
    worst = 0.0
    for i, (input_size, output_size, hidden_dim, n_layers, batch, seq) in enumerate(cases):
        torch.manual_seed(seed + i)
        sizes = {
            "input_size": input_size,
            "output_size": output_size,
            "hidden_dim": hidden_dim,
            "n_layers": n_layers,
        }
        model = call(exercise, SimpleRNN, **sizes)
        if not isinstance(model, nn.Module):
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
            fail(
                name,
                f"hidden has shape {tuple(hidden.shape)}, expected (n_layers, batch, "
                f"hidden_dim) = {expected_hidden}",
                inputs,
                "return the hidden state nn.RNN gives back, unchanged: layers come first, "
                "whatever batch_first says.",
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
            ),
        )

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
        torch.manual_seed(seed)
        model = SimpleRNN(input_size=1, output_size=1, hidden_dim=hidden_dim, n_layers=n_layers)
        recorder = _Recorder(model)
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
        error = next_step_mse(model, x_test, y_test)
        if not error < threshold:
            fail(
                "train_rnn",
                f"after n_steps={n_steps} steps (seq_length={seq_length}, "
                f"hidden_dim={hidden_dim}, n_layers={n_layers}), the next-step MSE on held-out "
                f"sine windows is {error:.4f}, above the threshold {threshold} (always "
                f"predicting 'no change' scores {naive:.4f}).",
                None,
                "check the recipe: Adam(model.parameters(), lr=lr), optimizer.zero_grad(), "
                "loss.backward(), optimizer.step() at every step, on "
                "sine_stream(seq_length, batch_size, noise=noise, seed=seed).",
            )
    report(
        "train_rnn",
        len(configs),
        None,
        f"the recipe (hidden carried and detached; held-out MSE < {threshold})",
    )


def check_simple_rnn_quietly(SimpleRNN) -> None:
    """``check_simple_rnn`` on one small case, without printing."""
    with contextlib.redirect_stdout(io.StringIO()):
        _check_simple_rnn(SimpleRNN, cases=((1, 1, 8, 1, 2, 5),), seed=7)


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
)

check_simple_rnn = EXERCISES["SimpleRNN"].checker()
check_train_rnn = EXERCISES["train_rnn"].checker()
