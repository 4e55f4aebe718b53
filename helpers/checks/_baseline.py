"""A record of the genuine torch, NumPy and builtin functions, to notice when a notebook swaps them.

The checks compute their reference answers with torch (``nn.RNNCell``, ``nn.LSTM``, ...) and
compare with NumPy. A notebook that replaces one of those functions (``torch.allclose = lambda
*a, **k: True``, ``nn.RNNCell.forward = ...``, ``torch.Tensor.__eq__ = ...``) could make a wrong
answer look right, so :func:`tampering` lists every replaced attribute and the checks refuse to
run while there is one.

The record is taken when this module is first imported: by the autograder before any of the
student's cells runs, otherwise by the notebook's first ``import helpers.checks...``. The
autograder re-imports the check modules before each test cell; this module is kept, so the record
stays the one taken first.
"""

from __future__ import annotations

import builtins
import functools
import sys
import types

import numpy as np
import torch
import torch.nn.functional
from torch import nn

_NOTEBOOK_MODULES = ("__main__", "__notebook__")


def _namespaces() -> list[tuple[str, dict]]:
    spaces = [
        ("builtins", vars(builtins)),
        ("torch", vars(torch)),
        ("torch.Tensor", vars(torch.Tensor)),
        ("torch.nn.functional", vars(torch.nn.functional)),
        ("torch.nn", vars(nn)),
        ("torch.autograd", vars(torch.autograd)),
        ("torch.testing", vars(torch.testing)),
        ("numpy", vars(np)),
        ("numpy.testing", vars(np.testing)),
    ]
    for name, value in list(vars(nn).items()):
        if isinstance(value, type) and issubclass(value, nn.Module):
            spaces.append((f"torch.nn.{name}", vars(value)))
    return spaces


_SPACES = _namespaces()  # live views (module and class dicts), listed once
# The original objects themselves (kept alive here, so that they can be compared by identity).
_BASELINE = {space: dict(ns) for space, ns in _SPACES}
_MISSING = object()
_LIBRARIES = ("torch", "numpy", "builtins")


def _library(value) -> bool:
    """Whether ``value`` comes from torch, NumPy or builtins (by its module)."""
    module = getattr(value, "__module__", None) or ""
    return module.split(".")[0] in _LIBRARIES


def _same_function(value, original) -> bool:
    """Whether ``value`` may legitimately have replaced ``original``.

    torch wraps some of its own functions later, from torch itself: torch._dynamo, imported
    lazily (by an optimizer's first step, for instance), replaces ``torch.manual_seed`` with
    ``torch._disable_dynamo(torch.manual_seed)``, which keeps the name and torch's module. A
    replacement from the same library under the same name is accepted; a lambda, a notebook's
    function or another library function (``torch.allclose = torch.isclose``) is not.
    """
    return _library(value) and getattr(value, "__name__", None) == getattr(
        original, "__name__", None
    )


def _from_notebook(value) -> bool:
    """Whether ``value`` is (or wraps) a function written in a notebook."""
    for _ in range(3):
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        elif isinstance(value, functools.partial):
            value = value.func
        else:
            break
    return isinstance(value, types.FunctionType | types.MethodType) and (
        getattr(value, "__module__", None) in _NOTEBOOK_MODULES
    )


# IPython keeps its last results in builtins._, __ and ___; ipykernel replaces builtins.input
# for every cell it runs; torch.set_default_dtype(torch.float64) rebinds torch.Storage.
_CHANGING = {
    ("builtins", "_"),
    ("builtins", "__"),
    ("builtins", "___"),
    ("builtins", "input"),
    ("torch", "Storage"),
}


def tampering() -> list[str]:
    """Attributes of torch, NumPy, builtins or helpers that no longer hold their original value."""
    found = []
    for space, ns in _SPACES:
        base = _BASELINE[space]
        for key, value in list(ns.items()):
            original = base.get(key, _MISSING)
            if original is value or (space, key) in _CHANGING:
                continue
            if original is _MISSING:
                # new: torch adds submodules as they are imported; a new method on a class
                # (torch.Tensor.__eq__ overriding the inherited one) from elsewhere is a patch
                suspicious = (
                    callable(value)
                    and not isinstance(value, types.ModuleType)
                    and not _library(value)
                )
            else:
                suspicious = callable(original) and not _same_function(value, original)
            if suspicious or _from_notebook(value):
                found.append(f"{space}.{key}")
    for name, module in list(sys.modules.items()):
        if (name == "helpers" or name.startswith("helpers.")) and module is not None:
            for key, value in list(vars(module).items()):
                if _from_notebook(value):
                    found.append(f"{name}.{key}")
    return found
