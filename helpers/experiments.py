"""Small experiments the lessons run on the learner's own cells."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from helpers import validate

CellFn = Callable[..., torch.Tensor]


def orthogonal(size: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A random ``(size, size)`` orthogonal matrix: every singular value is exactly 1."""
    validate.integer("size", size)
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))  # fix signs so the result is uniformly distributed


#: The cells ``gradient_norms_through_time`` runs: lesson 01's tanh RNN, lesson 02's LSTM.
RNN, LSTM = "rnn", "lstm"
#: Which state's gradient it measures: the hidden state / STM ``h`` or the cell state / LTM ``c``.
HIDDEN_STATE, CELL_STATE = "h", "c"


def rnn_experiment_params(
    hidden_size: int,
    input_size: int,
    weight_scale: float,
    generator: torch.Generator,
    dtype=torch.float64,
) -> tuple:
    """The ``(weight_ih, weight_hh, bias_ih, bias_hh)`` of a tanh RNN cell for the experiments.

    PyTorch's layout (``nn.RNNCell``): ``weight_ih`` ``(H, input_size)`` random normal times 0.5;
    ``weight_hh = weight_scale * Q`` ``(H, H)`` (``Q`` orthogonal, so every singular value is
    ``weight_scale``); ``bias_ih`` and ``bias_hh`` ``(H,)`` zero.
    """
    weight_ih = torch.randn(hidden_size, input_size, generator=generator, dtype=dtype) * 0.5
    weight_hh = weight_scale * orthogonal(hidden_size, generator, dtype)
    bias = torch.zeros(hidden_size, dtype=dtype)
    return weight_ih, weight_hh, bias, bias.clone()


def lstm_experiment_params(
    hidden_size: int,
    input_size: int,
    weight_scale: float,
    forget_bias: float,
    generator: torch.Generator,
    dtype=torch.float64,
) -> tuple:
    """The ``(weight_ih, weight_hh, bias_ih, bias_hh)`` of an LSTM cell for the gradient experiment.

    PyTorch's layout (``nn.LSTMCell``, gate rows i, f, g, o): ``weight_ih`` ``(4H, input_size)``
    random normal times 0.5; ``weight_hh`` ``(4H, H)`` whose four ``(H, H)`` gate blocks are each
    ``weight_scale`` times an orthogonal matrix (as the RNN's ``weight_hh`` is); ``bias_ih`` and
    ``bias_hh`` ``(4H,)`` zero, except ``bias_ih``'s forget-gate rows ``H:2H``, which hold
    ``forget_bias`` (so the forget gate's pre-activation starts at ``forget_bias``).
    """
    weight_ih = torch.randn(4 * hidden_size, input_size, generator=generator, dtype=dtype) * 0.5
    weight_hh = torch.cat(
        [weight_scale * orthogonal(hidden_size, generator, dtype) for _ in range(4)]
    )
    bias_ih = torch.zeros(4 * hidden_size, dtype=dtype)
    bias_ih[hidden_size : 2 * hidden_size] = float(forget_bias)
    bias_hh = torch.zeros(4 * hidden_size, dtype=dtype)
    return weight_ih, weight_hh, bias_ih, bias_hh


def gradient_norms_through_time(
    cell: CellFn,
    weight_scale: float,
    seq_length: int = 40,
    hidden_size: int = 16,
    input_size: int = 4,
    input_scale: float = 1e-6,
    seed: int = 0,
    *,
    kind: str = RNN,
    wrt: str = HIDDEN_STATE,
    forget_bias: float = 0.0,
) -> torch.Tensor:
    """How strongly the last output depends on each earlier hidden state (or cell state).

    Runs ``cell`` for ``seq_length`` steps on one sequence (batch 1) of tiny random inputs
    ``x_t`` ``(1, input_size)`` (times ``input_scale``, so tanh and the gates stay in their linear
    range around the starting point), from a tiny random initial state, then back-propagates
    ``L = h_T.sum()``, the sum of the last output, to every earlier state.

    * ``kind="rnn"`` (lesson 01): ``cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh) -> h_next``
      with ``h`` ``(1, hidden_size)``, ``weight_ih`` ``(hidden_size, input_size)``, ``weight_hh =
      weight_scale * Q`` ``(hidden_size, hidden_size)`` (``Q`` orthogonal, so every singular value
      is ``weight_scale``) and zero biases ``(hidden_size,)``.
    * ``kind="lstm"`` (lesson 02): ``cell(x, (h, c), params) -> (h_next, c_next)`` with ``params =
      (weight_ih (4H, input_size), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,))`` as
      ``nn.LSTMCell`` stores them, from :func:`lstm_experiment_params`: each gate's block of
      ``weight_hh`` is ``weight_scale`` times an orthogonal matrix, the biases are zero except the
      forget gate's, which is ``forget_bias``.

    ``wrt`` picks the state: ``"h"`` (the hidden state, the STM) or, for an LSTM, ``"c"`` (the cell
    state, the LTM). The same ``seed`` gives the same inputs and weights.

    Returns:
        ``norms`` of shape ``(seq_length,)``: ``norms[k] = ||dL/ds_{T-k}|| / ||dL/ds_T||`` for the
        state ``s`` = ``wrt``, the gradient norm ``k`` steps back in time, relative to the last
        step (so ``norms[0] == 1``).

    Raises:
        ValueError: on a non-positive ``weight_scale``, sizes below 1, an unknown ``kind`` or
            ``wrt``, ``wrt="c"`` or a ``forget_bias`` for an RNN, or a cell that does not return
            what ``kind`` says.
    """
    if kind not in (RNN, LSTM):
        raise ValueError(f"kind must be {RNN!r} or {LSTM!r}, got {kind!r}")
    if wrt not in (HIDDEN_STATE, CELL_STATE):
        raise ValueError(f"wrt must be {HIDDEN_STATE!r} or {CELL_STATE!r}, got {wrt!r}")
    if kind == RNN and wrt == CELL_STATE:
        raise ValueError("wrt='c' needs kind='lstm': a plain RNN has no cell state")
    if kind == RNN and forget_bias != 0:
        raise ValueError("forget_bias needs kind='lstm': a plain RNN has no forget gate")
    if not math.isfinite(forget_bias):
        raise ValueError(f"forget_bias must be a finite number, got {forget_bias}")
    validate.positive("weight_scale", weight_scale)
    validate.integers(seq_length=seq_length, hidden_size=hidden_size, input_size=input_size)
    generator = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    if kind == RNN:
        params = rnn_experiment_params(hidden_size, input_size, weight_scale, generator)
    else:
        params = lstm_experiment_params(
            hidden_size, input_size, weight_scale, forget_bias, generator
        )
    xs = torch.randn(seq_length, 1, input_size, generator=generator, dtype=f64) * input_scale
    h = torch.randn(1, hidden_size, generator=generator, dtype=f64) * input_scale
    h.requires_grad_(True)
    c = None
    if kind == LSTM:
        c = torch.randn(1, hidden_size, generator=generator, dtype=f64) * input_scale
        c.requires_grad_(True)
    states = []
    for t in range(seq_length):
        if kind == RNN:
            h = cell(xs[t], h, *params)
        else:
            out = cell(xs[t], (h, c), params)
            if not isinstance(out, tuple | list) or len(out) != 2:
                raise ValueError(
                    f"an LSTM cell must return the pair (h_next, c_next), got {type(out).__name__}"
                )
            h, c = out
        if not isinstance(h, torch.Tensor) or tuple(h.shape) != (1, hidden_size):
            raise ValueError(
                f"the cell must return h_next of shape (1, {hidden_size}), got "
                f"{getattr(h, 'shape', type(h).__name__)}"
            )
        states.append(h if wrt == HIDDEN_STATE else c)
    grads = torch.autograd.grad(h.sum(), states, allow_unused=True)
    # distance 0 = the last state; a state the output does not depend on has gradient 0
    norms = torch.stack(
        [torch.zeros((), dtype=f64) if g is None else g.norm() for g in grads]
    ).flip(0)
    if not norms[0] > 0:
        raise ValueError(f"the last output does not depend on the last state {wrt!r}")
    return (norms / norms[0]).detach()


ClipFn = Callable[[list, float], tuple]


def clipping_experiment(
    clip: ClipFn | None,
    max_norm: float = 1.0,
    n_updates: int = 20,
    weight_scale: float = 1.3,
    lr: float = 0.1,
    seq_length: int = 30,
    batch_size: int = 8,
    hidden_size: int = 16,
    input_size: int = 4,
    input_scale: float = 1e-3,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Train a tanh RNN whose gradients explode, with or without gradient clipping.

    The exploding case of lesson 01's gradient plot: ``weight_hh = weight_scale * Q`` ``(H, H)``
    (``Q`` orthogonal, every singular value ``weight_scale``), ``weight_ih`` ``(H, input_size)``
    random normal times 0.5, zero biases ``(H,)``, a linear read-out ``(1, H)``, and tiny inputs
    ``x`` ``(batch_size, seq_length, input_size)`` (times ``input_scale``, so tanh stays in its
    linear range). The task: at the last step, output the first input's first feature (divided by
    ``input_scale``), a memory of ``seq_length`` steps; the loss is the mean squared error. Each
    of ``n_updates`` plain gradient-descent updates draws a new batch, back-propagates through
    time (``torch.nn.RNNCell``'s step, with autograd), measures the global L2 norm of all five
    gradients, passes them to ``clip(grads, max_norm) -> (clipped, total_norm)`` (a list of
    tensors in, a list of the same shapes out; ``clip=None``: no clipping), then updates
    ``p -= lr * g``. The same ``seed`` gives the same weights and batches, so two runs differ
    only in the clipping.

    Returns:
        ``{"grad_norms": (n_updates,), "losses": (n_updates,)}``, float64: the global gradient
        norm before clipping and the training loss at every update (``inf`` once the weights
        overflow).

    Raises:
        ValueError: on a ``clip`` that is neither callable nor ``None`` or returns the wrong
            thing, a non-positive ``max_norm``, ``lr``, ``weight_scale`` or ``input_scale``, or
            sizes below 1.
    """
    validate.function("clip", clip, optional=True)
    validate.positives(max_norm=max_norm, lr=lr, weight_scale=weight_scale, input_scale=input_scale)
    validate.integers(
        n_updates=n_updates,
        seq_length=seq_length,
        batch_size=batch_size,
        hidden_size=hidden_size,
        input_size=input_size,
    )
    generator = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    params = [
        *rnn_experiment_params(hidden_size, input_size, weight_scale, generator),
        torch.randn(1, hidden_size, generator=generator, dtype=f64) / math.sqrt(hidden_size),
    ]
    grad_norms, losses = [], []
    for _ in range(n_updates):
        x = torch.randn(batch_size, seq_length, input_size, generator=generator, dtype=f64)
        x = x * input_scale
        target = x[:, 0, :1] / input_scale
        leaves = [p.detach().requires_grad_(True) for p in params]
        weight_ih, weight_hh, bias_ih, bias_hh, weight_out = leaves
        h = torch.zeros(batch_size, hidden_size, dtype=f64)
        for t in range(seq_length):
            h = torch.rnn_tanh_cell(x[:, t], h, weight_ih, weight_hh, bias_ih, bias_hh)
        loss = ((h @ weight_out.T - target) ** 2).mean()
        grads = list(torch.autograd.grad(loss, leaves))
        losses.append(loss.detach())
        grad_norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        if clip is not None:
            out = clip([g.clone() for g in grads], max_norm)
            clipped = out[0] if isinstance(out, tuple | list) and len(out) == 2 else None
            if not isinstance(clipped, tuple | list) or [
                getattr(c, "shape", None) for c in clipped
            ] != [g.shape for g in grads]:
                raise ValueError(
                    "clip must return (clipped, total_norm) with clipped a list of tensors "
                    "shaped like the gradients it was given"
                )
            grads = [c.detach() for c in clipped]
        with torch.no_grad():
            params = [p - lr * g for p, g in zip(params, grads, strict=True)]
    return {"grad_norms": torch.stack(grad_norms), "losses": torch.stack(losses)}
