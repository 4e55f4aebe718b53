"""The training core shared by lessons 02, 03 and 04: one optimiser step, threads, device, bar.

Each lesson keeps what is its own (its batches, its loss, its evaluation, its schedule) and calls
this module for what every training loop repeats:

* ``model_device(model)``: the device a model's parameters are on (CPU for a model without any);
* ``cpu_threads(n, device)``: a scope with ``torch.set_num_threads(n)``, restored afterwards;
* ``optimizer_step(optimizer, loss, parameters, clip)``: zero the gradients, back-propagate,
  clip the global gradient norm, step; returns the loss as a float (lessons 02 and 03: in lesson
  04 the learner writes this update as the exercise ``train_step``);
* ``PlainAdam``: Adam without ``torch.optim`` (whose first use imports ``torch._dynamo``, seconds
  on a small CPU), for lesson 02's tiny model;
* ``StepHistory``: per-step training losses, learning rates and training seconds;
* ``progress_bar``: the tqdm bar every loop shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from helpers import validate


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter; the CPU when it has none."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device | str | None = None):
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous setting.

    Small recurrent nets gain nothing from several CPU threads, and on a busy machine threads
    that wait for each other make training several times slower. ``n=None`` leaves the setting
    alone, and so does a ``device`` that is not the CPU (its work is not on the CPU threads).
    """
    if n is None or (device is not None and torch.device(device).type != "cpu"):
        yield
        return
    validate.integer("n", n, optional=True)  # None (no change) is handled above
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def optimizer_step(
    optimizer,
    loss: torch.Tensor,
    parameters: Iterable[torch.Tensor] | None = None,
    clip: float | None = None,
) -> float:
    """One update: zero the gradients, ``loss.backward()``, clip, ``optimizer.step()``.

    Args:
        optimizer: a ``torch.optim`` optimiser or a ``PlainAdam``.
        loss: a scalar (0-d) tensor with a graph.
        parameters: the parameters whose global gradient norm is clipped (default: the
            optimiser's).
        clip: the largest global gradient norm (``None``: no clipping); clipped before the step.

    Returns:
        ``loss.item()`` (which also waits for an accelerator, so timings around it are honest).
    """
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError(
            f"loss must be a scalar (0-d) tensor, got {getattr(loss, 'shape', type(loss).__name__)}"
        )
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be a positive gradient norm or None, got {clip!r}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        if parameters is None:
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(parameters, clip)
    optimizer.step()
    return loss.item()


class PlainAdam:
    """Adam (the update of ``torch.optim.Adam``, no weight decay) written out in a few lines.

    Has the ``param_groups`` / ``zero_grad`` / ``step`` of a ``torch.optim`` optimiser, so it
    works with ``optimizer_step``. Parameters without a gradient are skipped.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        params = list(params)
        if not params:
            raise ValueError("params is empty: expected the tensors to optimise")
        validate.positive("lr", lr)
        self.param_groups = [{"params": params, "lr": lr}]
        self.betas, self.eps, self.steps = betas, eps, 0
        self._first = [torch.zeros_like(p) for p in params]
        self._second = [torch.zeros_like(p) for p in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        lr = self.param_groups[0]["lr"]
        for p, m, v in zip(self.param_groups[0]["params"], self._first, self._second, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(beta1).add_(g, alpha=1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            m_hat = m / (1 - beta1**self.steps)
            v_hat = v / (1 - beta2**self.steps)
            p.sub_(lr * m_hat / (v_hat.sqrt() + self.eps))


@dataclass
class StepHistory:
    """One entry per optimiser step: the training loss and learning rate; and the training time.

    ``steps`` counts the steps recorded; ``train_seconds`` the time spent in them.
    """

    train_loss: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0

    def record(self, loss: float, lr: float | None = None, seconds: float = 0.0) -> None:
        """Add one step: its ``loss``, its learning rate ``lr`` (``None``: not kept), its time."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self.steps += 1
        self.train_loss.append(float(loss))
        if lr is not None:
            self.learning_rates.append(float(lr))
        self.train_seconds += seconds


def progress_bar(iterable=None, *, total=None, desc: str = "training", progress: bool = True, **kw):
    """The tqdm bar of a training loop (``progress=False``: a silent one)."""
    return tqdm(iterable, total=total, desc=desc, disable=not progress, **kw)
