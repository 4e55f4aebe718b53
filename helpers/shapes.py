"""Validate the tensors handed to a helper, with errors that say what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def expect_tensor(
    value,
    name: str,
    dims: Sequence[str | int],
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    sizes: dict[str, int] | None = None,
    allow_empty: bool = False,
) -> dict[str, int]:
    """Check that ``value`` is a tensor of the layout ``dims`` and return the named sizes.

    Args:
        value: what the caller passed.
        name: how the error message calls it, e.g. ``"x"``.
        dims: one entry per dimension: a name (``"batch"``) that binds to whatever size is found,
            or an int that the size must equal. A name already in ``sizes`` must match it.
        dtype: a dtype or several allowed dtypes; ``None`` accepts any.
        sizes: sizes already bound by earlier tensors (updated and returned).
        allow_empty: unless True, every dimension must be at least 1 (no empty sequence).

    Returns:
        ``sizes`` with this tensor's named dimensions added, e.g. ``{"batch": 2, "seq": 5}``.

    Raises:
        ValueError: naming the tensor, the expected layout and what was found.
    """
    sizes = {} if sizes is None else sizes
    layout = "(" + ", ".join(str(d) for d in dims) + ")"
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} should be a torch.Tensor {layout}, got {type(value).__name__}")
    shape = tuple(value.shape)
    if len(shape) != len(dims):
        raise ValueError(f"{name} should have {len(dims)} dimensions {layout}, got shape {shape}")
    for dim, size in zip(dims, shape, strict=True):
        if size == 0 and not allow_empty:
            raise ValueError(f"{name} {layout} is empty along {dim!r} (shape {shape})")
        if isinstance(dim, int):
            if size != dim:
                raise ValueError(f"{name} should have shape {layout}, got {shape}")
        elif dim in sizes and sizes[dim] != size:
            raise ValueError(
                f"{name} {layout} has {dim}={size}, but {dim}={sizes[dim]} elsewhere "
                f"(shape {shape})"
            )
        else:
            sizes[dim] = size
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if value.dtype not in allowed:
            names = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name} should have dtype {names}, got {value.dtype}")
    return sizes
