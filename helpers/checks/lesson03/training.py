"""Lesson 03's ``train_rnn``: run on a fresh ``SimpleRNN`` wrapped in a recorder that watches
every training forward pass. The hidden state must be passed on from one step to the next,
detached (truncated back-propagation through time), over windows that continue each other, with
the weights updated and the gradients zeroed at every step; after the fixed fast budget the
model must predict held-out sine windows well."""

from __future__ import annotations

import contextlib
import io
import math
from typing import NamedTuple

import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import CheckFailure, call, fail, report
from helpers.checks.engine import records
from helpers.checks.lesson03.model import SimpleRNNCase, _check_simple_rnn
from helpers.timeseries import WARMUP, _predict, next_step_mse, persistence_mse, sine_windows
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
#: The one small case ``train_rnn``'s check runs ``SimpleRNN``'s check on first.
QUIET_CASE = SimpleRNNCase(
    input_size=1, output_size=1, hidden_dim=8, n_layers=1, batch=2, seq_length=5
)


class TrainConfig(NamedTuple):
    """One ``SimpleRNN`` to train (made after ``torch.manual_seed(seed)``) on windows of
    ``seq_length`` steps."""

    hidden_dim: int
    n_layers: int
    seq_length: int
    seed: int


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


def _judge_training(model, config: TrainConfig, n_steps, threshold, heldout) -> None:
    """The trained model predicts held-out windows better than ``threshold``."""
    x_test, y_test, naive = heldout
    error = _heldout_mse(model, x_test, y_test)
    if error < threshold:
        return
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
        f"after n_steps={n_steps} steps (seq_length={config.seq_length}, "
        f"hidden_dim={config.hidden_dim}, n_layers={config.n_layers}), the next-step MSE on "
        f"held-out sine windows is {error:.4f}, above the threshold {threshold} (always "
        f"predicting 'no change' scores {naive:.4f}).",
        None,
        cause,
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

    For each ``TrainConfig(hidden_dim, n_layers, seq_length, seed)`` in ``configs``: a
    ``SimpleRNN`` is made after ``torch.manual_seed(seed)`` and trained with ``train_rnn(model,
    n_steps, seq_length=seq_length)``; every training step is watched (see ``_Recorder``); the
    returned losses must be ``n_steps`` floats; the trained model's next-step MSE on held-out
    sine windows (``WARMUP`` steps unscored) must be below ``threshold``.
    """
    try:
        check_simple_rnn_quietly(SimpleRNN)
    except CheckFailure as failure:
        fail(
            "train_rnn",
            "is checked by training your SimpleRNN, which does not pass its own "
            "check yet. Fix SimpleRNN first; its check says:\n" + str(failure),
        )
    data = sine_windows(64, _HELDOUT_LENGTH, test_fraction=0.5, seed=2024)
    heldout = (data.x_test, data.y_test, persistence_mse(data.x_test, data.y_test, WARMUP))
    for config in records(TrainConfig, configs):
        remote.manual_seed(config.seed)
        model = SimpleRNN(
            input_size=1, output_size=1, hidden_dim=config.hidden_dim, n_layers=config.n_layers
        )
        recorder = remote.construct(_Recorder, model)  # beside the model, which it watches
        # One CPU thread: the model is tiny, and on a busy machine two threads are slower.
        with cpu_threads(1):
            losses = call("train_rnn", train_rnn, recorder, n_steps, seq_length=config.seq_length)
        _check_losses(losses, n_steps)
        if recorder.steps != n_steps:
            fail(
                "train_rnn",
                f"made {recorder.steps} training forward passes for n_steps="
                f"{n_steps}; expected exactly one per step",
            )
        _check_windows(recorder, config.seq_length)
        _check_updates(recorder)
        _judge_training(model, config, n_steps, threshold, heldout)
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
        _check_simple_rnn(SimpleRNN, cases=(QUIET_CASE,), seed=7)
