"""Small experiments the lessons run on the learner's own cells."""

from __future__ import annotations

from collections.abc import Callable

import torch

CellFn = Callable[..., torch.Tensor]


def orthogonal(size: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A random ``(size, size)`` orthogonal matrix: every singular value is exactly 1."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))  # fix signs so the result is uniformly distributed


def gradient_norms_through_time(
    cell: CellFn,
    weight_scale: float,
    seq_length: int = 40,
    hidden_size: int = 16,
    input_size: int = 4,
    input_scale: float = 1e-6,
    seed: int = 0,
) -> torch.Tensor:
    """How strongly the last hidden state depends on each earlier one.

    Runs ``cell(x, h, weight_ih, weight_hh, bias_ih, bias_hh)`` for ``seq_length`` steps with a
    recurrent matrix ``weight_hh = weight_scale * Q`` (``Q`` orthogonal, so every singular value is
    ``weight_scale``), zero biases and tiny inputs (so tanh stays in its linear range), then
    back-propagates ``L = h_T.sum()``.

    Returns:
        ``norms`` of shape ``(seq_length,)``: ``norms[k] = ||dL/dh_{T-k}|| / ||dL/dh_T||``, the
        gradient norm ``k`` steps back in time, relative to the last step.
    """
    if not weight_scale > 0:
        raise ValueError(f"weight_scale must be positive, got {weight_scale}")
    if seq_length < 1 or hidden_size < 1 or input_size < 1:
        raise ValueError(
            "seq_length, hidden_size and input_size must be at least 1, got "
            f"{seq_length}, {hidden_size}, {input_size}"
        )
    generator = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    weight_ih = torch.randn(hidden_size, input_size, generator=generator, dtype=f64) * 0.5
    weight_hh = weight_scale * orthogonal(hidden_size, generator)
    bias_ih = torch.zeros(hidden_size, dtype=f64)
    bias_hh = torch.zeros(hidden_size, dtype=f64)
    xs = torch.randn(seq_length, 1, input_size, generator=generator, dtype=f64) * input_scale
    h = torch.randn(1, hidden_size, generator=generator, dtype=f64) * input_scale
    h.requires_grad_(True)
    states = []
    for t in range(seq_length):
        states.append(h)
        h = cell(xs[t], h, weight_ih, weight_hh, bias_ih, bias_hh)
    states.append(h)
    grads = torch.autograd.grad(h.sum(), states[1:])
    norms = torch.stack([g.norm() for g in grads]).flip(0)  # distance 0 = the last state
    return (norms / norms[0]).detach()
