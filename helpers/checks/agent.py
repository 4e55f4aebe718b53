"""The kernel's end of the grading channel (see :mod:`helpers.checks.remote`): the
:class:`Agent` that serves the judge's requests on the notebook's globals, answering with plain
data only, and what both ends agree on (the dtypes, the limits, the errors).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
import math
import pickle
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

#: Tensor and array dtypes that may cross the channel.
_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}
_NP_DTYPES = {
    "float64",
    "float32",
    "float16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "complex64",
    "complex128",
}
#: What one answer may hold: elements of all its tensors, nesting depth, characters of a string.
MAX_ELEMENTS = 50_000_000
MAX_DEPTH = 64
MAX_STRING = 1_000_000
MAX_REPLY = 400_000_000  # characters of one answer


class ChannelError(BaseException):
    """The kernel did not answer as the protocol says (garbage, or no agent to answer).

    A ``BaseException``, like the transport's own errors: the checks catch ``Exception`` around
    the learner's code, and a broken channel must not read as the learner's exception."""


class RemoteError(Exception):
    """An exception raised in the kernel whose type is not one of Python's built-in ones."""


# ----------------------------------------------------------------------------------------------
# The wire format, kernel side: plain data or handles.

#: torch.nn layers answered by value (configuration and weights): the judge rebuilds them with its
#: own torch and uses them as references. Only these exact types; subclasses stay handles.
_LAYERS = {
    nn.RNN: ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout"),
    nn.LSTM: ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout"),
    nn.GRU: ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout"),
    nn.Linear: ("in_features", "out_features"),
    nn.Dropout: ("p",),
    nn.Embedding: ("num_embeddings", "embedding_dim"),
    nn.RNNCell: ("input_size", "hidden_size", "bias", "nonlinearity"),
    nn.LSTMCell: ("input_size", "hidden_size", "bias"),
    nn.GRUCell: ("input_size", "hidden_size", "bias"),
}
_LAYER_NAMES = {cls.__name__: cls for cls in _LAYERS}


def _tensor_node(t: torch.Tensor, with_grad: bool = True) -> dict:
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    node = {
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "data": base64.b64encode(data).decode("ascii"),
        "device": str(t.device),
        "requires_grad": bool(t.requires_grad),
        "grad_fn": t.grad_fn is not None,
        "param": isinstance(t, nn.Parameter),
    }
    if with_grad and t.is_leaf and t.grad is not None:
        node["grad"] = _tensor_node(t.grad, with_grad=False)
    return {"$tensor": node}


def _layer_config(module: nn.Module) -> dict:
    names = _LAYERS[type(module)]
    config = {name: getattr(module, name) for name in names}
    if isinstance(module, nn.Linear):
        config["bias"] = module.bias is not None
    if isinstance(module, nn.RNNBase):
        config["bidirectional"] = module.bidirectional
        if isinstance(module, nn.LSTM):
            config["proj_size"] = module.proj_size
        if type(module) is nn.RNN:
            config["nonlinearity"] = module.nonlinearity
    return config


class Agent:
    """The kernel's end of the channel: it serves the judge's requests on the notebook's globals.

    Everything it answers is built by :meth:`encode`; objects it cannot answer as plain data are
    kept in ``handles`` and answered as their number.
    """

    def __init__(self, namespace: dict):
        self.namespace = namespace
        self.handles: dict[int, object] = {}
        self._ids: dict[int, int] = {}
        self.reply = ""

    # -- encoding ------------------------------------------------------------------------------

    def handle(self, value) -> int:
        key = id(value)
        if key not in self._ids:
            number = len(self.handles) + 1
            self.handles[number] = value
            self._ids[key] = number
        return self._ids[key]

    def encode(self, value, depth: int = 0, plain: bool = False):
        """The wire form of ``value``; with ``plain``, ValueError for anything but plain data
        (numbers, strings, None, lists and tuples of those)."""
        if depth > MAX_DEPTH:
            raise ValueError("the value is nested too deeply")
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if plain:
            if kind is not tuple and kind is not list:
                raise ValueError("not plain")
            items = [self.encode(v, depth + 1, plain=True) for v in value]
            return {"$tuple": items} if kind is tuple else items
        if isinstance(value, torch.Tensor) and kind in (torch.Tensor, nn.Parameter):
            return _tensor_node(value)
        if kind is np.ndarray and str(value.dtype) in _NP_DTYPES:
            data = np.ascontiguousarray(value).tobytes()
            node = {"dtype": str(value.dtype), "shape": list(value.shape)}
            node["data"] = base64.b64encode(data).decode("ascii")
            return {"$ndarray": node}
        if isinstance(value, np.generic) and str(value.dtype) in _NP_DTYPES:
            return {"$npscalar": {"dtype": str(value.dtype), "value": self.encode(value.item())}}
        if kind is torch.Size:
            return {"$tuple": [int(v) for v in value]}
        if kind is tuple or kind is list:
            items = [self.encode(v, depth + 1) for v in value]
            return {"$tuple": items} if kind is tuple else items
        if kind in (set, frozenset):
            return {"$" + kind.__name__: [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, dict) and kind in (dict, OrderedDict):
            return {
                "$dict": [
                    [self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in value.items()
                ]
            }
        if kind is torch.dtype:
            return {"$dtype": str(value).removeprefix("torch.")}
        if kind is torch.device:
            return {"$device": str(value)}
        if kind in _LAYERS:
            state = {k: _tensor_node(v) for k, v in value.state_dict(keep_vars=True).items()}
            return {
                "$layer": {
                    "type": kind.__name__,
                    "config": self.encode(_layer_config(value), depth + 1),
                    "state": state,
                    "training": bool(value.training),
                    "handle": self.handle(value),
                }
            }
        return self._handle_node(value)

    def _handle_node(self, value) -> dict:
        kind = type(value)
        return {
            "$handle": self.handle(value),
            "type": str(getattr(kind, "__name__", "object"))[:100],
            "module": str(getattr(kind, "__module__", ""))[:100],
            "nn_module": isinstance(value, nn.Module),
            "callable": callable(value),
        }

    def state(self, value, seen: set, depth: int = 0):
        """What the judge needs to copy a call's effects into its own objects (or ``None``)."""
        if depth > 12:
            return None
        if isinstance(value, torch.Tensor):
            return _tensor_node(value) if type(value) in (torch.Tensor, nn.Parameter) else None
        if isinstance(value, torch.Generator):
            return {"$generator": _tensor_node(value.get_state())}
        try:
            return {"$plain": self.encode_plain(value)}
        except ValueError:
            pass
        if id(value) in seen:
            return None
        if isinstance(value, list | tuple):
            seen.add(id(value))
            return {"$seq": [self.state(v, seen, depth + 1) for v in value]}
        if isinstance(value, dict):
            seen.add(id(value))
            items = {k: self.state(v, seen, depth + 1) for k, v in value.items() if type(k) is str}
            return {"$map": {k: v for k, v in items.items() if v is not None}}
        module = getattr(type(value), "__module__", "") or ""
        if hasattr(value, "__dict__") and module.startswith(("helpers.", "torch.")):
            seen.add(id(value))
            items = {}
            for key, item in vars(value).items():
                node = self.state(item, seen, depth + 1)
                if node is not None:
                    items[key] = node
            return {"$object": items}
        return None

    def encode_plain(self, value):
        """``value`` if it is plain data (no tensors, no handles); ValueError otherwise."""
        return self.encode(value, plain=True)

    # -- requests ------------------------------------------------------------------------------

    def _unpickle(self, text: str):
        agent = self

        class Loader(pickle.Unpickler):
            def persistent_load(self, pid):
                return agent.handles[int(pid)]

        return Loader(io.BytesIO(base64.b64decode(text))).load()

    def serve(self, request: str) -> None:
        """Answer one request (JSON); the answer is left in ``self.reply`` (JSON text)."""
        try:
            answer = self._serve(json.loads(request))
        except BaseException as exc:  # the learner's code may raise anything, even SystemExit
            answer = {"raised": _exception_node(exc)}
        try:
            self.reply = json.dumps(answer, allow_nan=True)
        except (TypeError, ValueError, RecursionError) as exc:
            self.reply = json.dumps({"raised": _exception_node(exc)})

    def _serve(self, request: dict) -> dict:
        op = request["op"]
        if request.get("seed") is not None:  # torch.manual_seed, set on the judge's side
            torch.manual_seed(int(request["seed"]))
        if op == "globals":  # {name: value} for those of the names the notebook defines
            names = [n for n in request["names"] if type(n) is str and n in self.namespace]
            return {"value": {"$dict": [[n, self.encode(self.namespace[n])] for n in names]}}
        if op == "release":
            self.handles.clear()
            self._ids.clear()
            return {"value": None}
        if op == "getattr":
            return {"value": self.encode(getattr(self.handles[request["target"]], request["name"]))}
        if op == "next":
            try:
                return {"value": self.encode(next(self.handles[request["target"]]))}
            except StopIteration:
                return {"stop": True}
        if op == "iter":
            return {"value": self._handle_node(iter(self.handles[request["target"]]))}
        if op in ("call", "new", "probe"):
            args, kwargs = self._unpickle(request["args"])
            if op == "call":
                target = self.handles[request["target"]]
            else:
                target = _trusted(request["target"])
            return self._call(target, args, kwargs, request)
        raise ValueError(f"unknown request {op!r}")

    def _call(self, target, args, kwargs, request) -> dict:
        stderr = io.StringIO()
        previous = torch.get_default_dtype(), torch.is_grad_enabled()
        torch.set_default_dtype(_DTYPES[request.get("default_dtype", "float32")])
        torch.set_grad_enabled(bool(request.get("grad", True)))
        try:
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
                warnings.simplefilter("always")
                result = target(*args, **kwargs)
        except BaseException as exc:
            return {"raised": _exception_node(exc), "state": self.state((args, kwargs), set())}
        finally:
            torch.set_default_dtype(previous[0])
            torch.set_grad_enabled(previous[1])
        found = [[type(w.message).__name__, str(w.message)[:500]] for w in caught[:20]]
        return {
            "value": self.encode(result) if request["op"] != "new" else self._handle_node(result),
            "state": self.state((args, kwargs), set()),
            "warnings": found,
            "stderr": stderr.getvalue()[:2000],
        }


def _exception_node(exc: BaseException) -> dict:
    try:
        message = str(exc)[:4000]
    except Exception:
        message = "<an exception whose message cannot be shown>"
    return {"type": type(exc).__name__[:100], "message": message}


def _trusted(path: str):
    """A check's own class or probe function, by ``module:qualname`` (helpers.checks only)."""
    module, _, name = path.partition(":")
    if not module.startswith("helpers.checks.") or "." in name or not name:
        raise ValueError(f"not a check's object: {path!r}")
    return getattr(importlib.import_module(module), name)
