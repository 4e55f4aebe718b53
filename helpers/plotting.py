"""Plots the lessons share."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import torch


def plot_gradient_norms(curves: Mapping[str, torch.Tensor], ax=None, title=None):
    """Gradient norm against distance in time, one curve per label, on a log scale.

    Args:
        curves: label -> ``(seq_length,)`` tensor of relative gradient norms, entry ``k`` being
            the norm ``k`` steps back from the last hidden state.
        ax: an existing matplotlib axis, or ``None`` for a new figure.

    Returns:
        The matplotlib axis.
    """
    if not curves:
        raise ValueError("curves is empty: expected at least one label -> tensor")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for label, norms in curves.items():
        norms = torch.as_tensor(norms).detach().cpu()
        if norms.dim() != 1:
            raise ValueError(
                f"curve {label!r} should be 1-D (seq_length,), got {tuple(norms.shape)}"
            )
        ax.semilogy(range(len(norms)), norms.numpy(), marker=".", label=label)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("distance in time k (steps back from the last hidden state)")
    ax.set_ylabel("||dL/dh_{T-k}|| / ||dL/dh_T||")
    ax.set_title(title or "How far back does the gradient reach?")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    return ax
