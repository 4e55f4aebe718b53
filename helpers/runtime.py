"""Run-time settings every notebook shares: seeds, the device, and the fast mode used by tests.

``COURSE_FAST=1`` in the environment shrinks every training run so that a notebook executes in
well under a minute (tests and CI set it); without it the notebooks train for real.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from helpers import course, validate

#: The folders of the shipped data and diagrams, inside the installed package (never the
#: repository: a lesson runs from a wheel too).
DATA_DIR = course.data_dir()
IMAGES_DIR = course.images_dir()

_TRUE = {"1", "true", "yes", "on"}


def is_fast() -> bool:
    """True when ``COURSE_FAST`` is set to 1/true/yes/on (tests, CI, autograding)."""
    return os.environ.get("COURSE_FAST", "").strip().lower() in _TRUE


def fast_or_full(fast, full):
    """``fast`` in fast mode, ``full`` otherwise: ``n_steps = fast_or_full(20, 500)``."""
    return fast if is_fast() else full


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's generators; return a fresh seeded ``torch.Generator``.

    Args:
        seed: a non-negative integer.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for code that takes an explicit generator
        (sampling, data shuffling).
    """
    validate.integer("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device to train on: CUDA when present, otherwise the CPU.

    Args:
        prefer: ``"cpu"`` or ``"cuda"`` to force a choice; ``None`` picks automatically. The
            environment variable ``COURSE_DEVICE`` overrides the automatic choice.
    """
    choice = prefer or os.environ.get("COURSE_DEVICE") or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice not in {"cpu", "cuda"}:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    return torch.device(choice)


def data_path(name: str) -> Path:
    """Path of a shipped data file, e.g. ``data_path("tinyshakespeare.txt")``."""
    return course.resource("data", name)


def image_path(name: str) -> Path:
    """Path of a shipped diagram (``name`` with or without ``.png``)."""
    if not isinstance(name, str):
        raise ValueError(f"a diagram's name is expected, e.g. 'lstm_cell', got {name!r}")
    if not name.endswith(".png"):
        name += ".png"
    try:
        return course.resource("images", name)
    except ValueError as exc:
        raise ValueError(f"{exc}; run `make images` to draw them") from None


def show_image(name: str, width: int = 720):
    """Display a shipped diagram in a notebook, whatever folder the notebook runs in."""
    from IPython.display import Image

    return Image(filename=str(image_path(name)), width=width)
