"""Checks judged where the learner's code cannot reach them: the autograder's trusted side.

``make check`` and a notebook's own test cells run the checks in the learner's process: quick,
specific feedback, and a learner who tampers with it only fools themselves. The autograder does
not trust the learner's kernel. For every test cell it runs the same check code in its own
process (the *judge*), and the learner's objects stay in the sandboxed kernel, reached only
through a narrow channel:

* the judge sends a request (JSON; the arguments of a call pickled, which only the kernel
  unpickles) to a small :class:`Agent` living in the kernel;
* the agent calls the learner's function (or reads an attribute, or advances a generator) and
  answers with plain data only: ``None``, booleans, numbers, strings, containers of those, and
  tensors and arrays as dtype, shape and raw bytes. Anything else stays in the kernel and is
  answered as a *handle* (:class:`Remote`), which the judge may call or read in turn;
* the judge decodes the answer strictly (:func:`decode`: no pickle, no code, bounded sizes),
  computes the reference with its own torch and compares: the verdict, the points and the
  message are made here.

Objects the judge builds and hands to a learner's function (a probe model, an optimizer, a
random generator) are sent with the call and their state after the call is sent back and copied
into the judge's own objects (:func:`_apply_state`), so a check reads what the learner's
function did to them. A check that must run code beside the learner's objects (a backward pass
through the learner's model) does it with :func:`probe`, whose result is again plain data.

In ``make check`` (no channel) :func:`construct`, :func:`probe`, :func:`manual_seed` and
:func:`is_module` act directly, so one check code serves both sides.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import importlib
import io
import json
import math
import pickle
import sys
import warnings
from collections import OrderedDict
from collections.abc import Callable

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


# ----------------------------------------------------------------------------------------------
# The wire format, judge side: strict decoding.


class Remote:
    """An object that stays in the learner's kernel: call it, read its attributes, iterate it.

    Its class carries the name and module of the object's real class (for messages).
    """

    __slots__ = ("_channel", "_number", "_info")

    def __init__(self, channel: Channel, number: int, info: dict):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_number", number)
        object.__setattr__(self, "_info", info)

    def __call__(self, *args, **kwargs):
        return self._channel.call(self, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._channel.request({"op": "getattr", "target": self._number, "name": name})

    def __iter__(self):
        return self._channel.request({"op": "iter", "target": self._number})

    def __next__(self):
        reply = self._channel.request({"op": "next", "target": self._number}, stop=True)
        if reply is StopIteration:
            raise StopIteration
        return reply

    def __repr__(self) -> str:
        return f"<{self._info['module']}.{self._info['type']} object in the notebook>"

    def __reduce__(self):
        raise TypeError("a remote object travels by handle, not by pickle")


_REMOTE_TYPES: dict[tuple[str, str], type] = {}


def _remote_type(name: str, module: str) -> type:
    key = (name, module)
    if key not in _REMOTE_TYPES:
        safe = name if name.isidentifier() else "object"
        _REMOTE_TYPES[key] = type(safe, (Remote,), {"__slots__": (), "__module__": module})
    return _REMOTE_TYPES[key]


def _decode_tensor(node: dict) -> torch.Tensor:
    dtype = _DTYPES[node["dtype"]]
    shape = [int(s) for s in node["shape"]]
    if any(s < 0 for s in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise ChannelError(f"a tensor of shape {shape} is too large")
    data = base64.b64decode(node["data"], validate=True)
    count = math.prod(shape)
    size = torch.empty((), dtype=dtype).element_size()
    if len(data) != count * size:
        raise ChannelError("a tensor's data does not match its shape")
    flat = (
        torch.frombuffer(bytearray(data), dtype=torch.uint8)
        if data
        else torch.empty(0, dtype=torch.uint8)
    )
    tensor = flat.view(dtype).reshape(shape).clone()
    device = str(node.get("device", "cpu"))
    if device != "cpu":
        with contextlib.suppress(Exception):
            tensor = tensor.to(device)
    if node.get("param"):
        tensor = nn.Parameter(tensor, requires_grad=bool(node.get("requires_grad")))
    elif node.get("requires_grad") and (tensor.is_floating_point() or tensor.is_complex()):
        tensor.requires_grad_(True)
    if node.get("grad") is not None:
        tensor.grad = _decode_tensor(node["grad"]["$tensor"])
    return tensor


def _decode_layer(node: dict, channel: Channel) -> nn.Module:
    cls = _LAYER_NAMES[node["type"]]
    config = channel.decode(node["config"])
    if type(config) is not dict:
        raise ChannelError("a layer's configuration is not a mapping")
    state = {str(k): _decode_tensor(v["$tensor"]) for k, v in node["state"].items()}
    dtype = next((t.dtype for t in state.values() if t.is_floating_point()), None)
    with torch.random.fork_rng():
        layer = (
            cls(**config, dtype=dtype)
            if dtype is not None and cls is not nn.Dropout
            else cls(**config)
        )
    layer.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)
    for name, value in state.items():
        owner = layer
        *path, last = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        current = getattr(owner, last)
        if isinstance(current, nn.Parameter):
            current.requires_grad_(value.requires_grad)
            current.grad = value.grad
    layer.train(bool(node.get("training")))
    return layer


class Channel:
    """The judge's end: requests to the kernel's :class:`Agent` through ``send``.

    ``send(request_json) -> answer_json`` is the transport (the autograder's kernel client);
    it raises ChannelError when the kernel does not answer.
    """

    def __init__(self, send: Callable[[str], str]):
        self.send = send
        self.seed: int | None = None  # sent with the next request (see manual_seed)

    def answer(self, request: dict) -> dict:
        """Send ``request``; the kernel's answer, parsed (a dict), or ChannelError."""
        if self.seed is not None:
            request, self.seed = dict(request, seed=self.seed), None
        text = self.send(json.dumps(request))
        if type(text) is not str or len(text) > MAX_REPLY:
            raise ChannelError("the kernel's answer is not text of a sensible size")
        try:
            answer = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ChannelError(f"the kernel's answer is not JSON: {str(exc)[:100]}") from None
        if type(answer) is not dict:
            raise ChannelError("the kernel's answer is not an object")
        return answer

    def request(self, request: dict, stop: bool = False):
        answer = self.answer(request)
        if stop and answer.get("stop") is True:
            return StopIteration
        if "raised" in answer:
            self._emit(answer)
            raise _exception(answer["raised"])
        if "value" not in answer:
            raise ChannelError("the kernel's answer has no value")
        value = self.decode(answer["value"])
        self._emit(answer)
        return value

    def _emit(self, answer: dict) -> None:
        for item in answer.get("warnings") or []:
            if type(item) is list and len(item) == 2:
                name = str(item[0]) if str(item[0]).isidentifier() else "UserWarning"
                category = type(name, (UserWarning,), {})
                warnings.warn(str(item[1]), category, stacklevel=2)
        text = answer.get("stderr")
        if type(text) is str and text:
            sys.stderr.write(text[:2000])

    def global_names(self, names) -> dict:
        """``{name: value}`` for the notebook's globals among ``names`` (missing ones left out)."""
        found = self.request({"op": "globals", "names": list(names)})
        if type(found) is not dict or not set(found) <= set(names):
            raise ChannelError("the kernel's answer names other globals than those asked for")
        return found

    def decode(self, node, depth: int = 0):
        if depth > MAX_DEPTH:
            raise ChannelError("the kernel's answer is nested too deeply")
        kind = type(node)
        if node is None or kind in (bool, int, float):
            return node
        if kind is str:
            if len(node) > MAX_STRING:
                raise ChannelError("a string in the kernel's answer is too long")
            return node
        if kind is list:
            return [self.decode(v, depth + 1) for v in node]
        if kind is not dict or len(node) == 0:
            raise ChannelError("the kernel's answer holds an unknown value")
        try:
            return self._decode_tagged(node, depth)
        except ChannelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise ChannelError(f"the kernel's answer is malformed: {str(exc)[:100]}") from None

    def _decode_tagged(self, node: dict, depth: int):
        if "$handle" in node:
            info = {
                "type": str(node["type"])[:100],
                "module": str(node["module"])[:100],
                "nn_module": node.get("nn_module") is True,
            }
            return _remote_type(info["type"], info["module"])(self, int(node["$handle"]), info)
        (tag, value), *rest = node.items()
        if rest:
            raise ChannelError("the kernel's answer holds an unknown value")
        if tag == "$float":
            return float(str(value)) if str(value) in ("nan", "inf", "-inf") else _bad()
        if tag == "$tensor":
            return _decode_tensor(value)
        if tag == "$ndarray":
            if value["dtype"] not in _NP_DTYPES:
                raise ChannelError("an array of an unknown dtype")
            shape = tuple(int(s) for s in value["shape"])
            if any(s < 0 for s in shape) or math.prod(shape) > MAX_ELEMENTS:
                raise ChannelError("an array that is too large")
            data = base64.b64decode(value["data"], validate=True)
            return np.frombuffer(data, dtype=value["dtype"]).reshape(shape).copy()
        if tag == "$npscalar":
            if value["dtype"] not in _NP_DTYPES:
                raise ChannelError("a NumPy scalar of an unknown dtype")
            return np.dtype(value["dtype"]).type(self.decode(value["value"], depth + 1))
        if tag == "$tuple":
            return tuple(self.decode(v, depth + 1) for v in value)
        if tag == "$set":
            return {self._key(self.decode(v, depth + 1)) for v in value}
        if tag == "$frozenset":
            return frozenset(self._key(self.decode(v, depth + 1)) for v in value)
        if tag == "$dict":
            return {
                self._key(self.decode(k, depth + 1)): self.decode(v, depth + 1) for k, v in value
            }
        if tag == "$dtype":
            return _DTYPES[value]
        if tag == "$device":
            return torch.device(str(value))
        if tag == "$layer":
            layer = _decode_layer(value, self)
            layer._remote_handle = int(value["handle"])  # sent back by handle
            return layer
        raise ChannelError(f"the kernel's answer holds an unknown tag {tag[:20]!r}")

    @staticmethod
    def _key(value):
        if value is None or type(value) in (bool, int, float, str, tuple, frozenset):
            return value
        raise ChannelError("a set or dict key in the kernel's answer is not plain")

    # -- calls ---------------------------------------------------------------------------------

    def _pickle(self, args, kwargs) -> str:
        class Dumper(pickle.Pickler):
            def reducer_override(self, obj):
                # tensors with their .grad (torch's own pickling drops it); generators by state
                if type(obj) in (torch.Tensor, nn.Parameter):
                    return _decode_tensor, (_tensor_node(obj)["$tensor"],)
                if type(obj) is torch.Generator:
                    return _generator, (_tensor_node(obj.get_state())["$tensor"], str(obj.device))
                return NotImplemented

            def persistent_id(self, obj):
                if isinstance(obj, Remote):
                    return str(obj._number)
                number = (
                    getattr(obj, "_remote_handle", None) if isinstance(obj, nn.Module) else None
                )
                return None if number is None else str(number)

        buffer = io.BytesIO()
        Dumper(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((args, kwargs))
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _request_call(self, op: str, target, args, kwargs):
        request = {
            "op": op,
            "target": target,
            "args": self._pickle(args, kwargs),
            "grad": torch.is_grad_enabled(),
            "default_dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        }
        answer = self.answer(request)
        if answer.get("state") is not None:
            _apply_state((args, kwargs), answer["state"], self)
        self._emit(answer)
        if "raised" in answer:
            raise _exception(answer["raised"])
        if "value" not in answer:
            raise ChannelError("the kernel's answer has no value")
        return self.decode(answer["value"])

    def call(self, target: Remote, args, kwargs):
        return self._request_call("call", target._number, args, kwargs)


def _generator(state: dict, device: str) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.set_state(_decode_tensor(state))
    return generator


def _bad():
    raise ChannelError("a malformed number in the kernel's answer")


def _exception(node) -> BaseException:
    """The judge's stand-in for an exception raised in the kernel (same type name and message)."""
    from helpers.checks.core import CheckFailure

    if type(node) is not dict:
        return ChannelError("the kernel's answer holds a malformed exception")
    name, message = str(node.get("type", "Exception"))[:100], str(node.get("message", ""))[:4000]
    if name == "CheckFailure":
        return CheckFailure(message)
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except Exception:
            pass
    safe = name if name.isidentifier() else "RemoteError"
    return type(safe, (RemoteError,), {})(message)


def _apply_state(local, node, channel: Channel, depth: int = 0):
    """Copy the state the kernel sent back (:meth:`Agent.state`) into the judge's ``local``.

    Returns the value to keep in place of ``local`` (the same object whenever it can be updated
    in place). Only data is copied: tensors, generators' states, plain values, into attributes
    that are identifiers; functions and methods of the judge's objects are never replaced.
    """
    if node is None or depth > 12 or type(node) is not dict or len(node) != 1:
        return local
    ((tag, value),) = node.items()
    if callable(local) and not isinstance(local, torch.Tensor | nn.Module | torch.Generator):
        return local
    if tag == "$plain":
        return channel.decode(value)
    if tag == "$tensor":
        got = _decode_tensor(value)
        if isinstance(local, torch.Tensor):
            with torch.no_grad():
                if local.shape == got.shape and local.dtype == got.dtype:
                    local.copy_(got)
                else:
                    local.data = got.detach()
            local.grad = got.grad
            return local
        return got
    if tag == "$generator":
        if isinstance(local, torch.Generator):
            local.set_state(_decode_tensor(value["$tensor"]))
        return local
    if tag == "$seq" and type(value) is list and isinstance(local, list | tuple):
        if len(value) == len(local):
            updated = [
                _apply_state(a, b, channel, depth + 1) for a, b in zip(local, value, strict=True)
            ]
        else:  # items added or removed: keep those that travel as data
            updated = [_apply_state(None, b, channel, depth + 1) for b in value]
        if isinstance(local, list):
            local[:] = updated
            return local
        return type(local)(updated) if type(local) is tuple else local
    if tag == "$map" and type(value) is dict and isinstance(local, dict):
        for key, sub in value.items():
            local[key] = _apply_state(local.get(key), sub, channel, depth + 1)
        return local
    if tag == "$object" and type(value) is dict and hasattr(local, "__dict__"):
        attrs = vars(local)
        for key, sub in value.items():
            if type(key) is not str or not key.isidentifier() or key.startswith("__"):
                continue
            attrs[key] = _apply_state(attrs.get(key), sub, channel, depth + 1)
        return local
    return local


# ----------------------------------------------------------------------------------------------
# What check code calls: one code for make check and for the judge.

_CHANNEL: Channel | None = None


def active() -> Channel | None:
    """The judge's channel while the autograder judges a test cell, else ``None``."""
    return _CHANNEL


@contextlib.contextmanager
def judging(channel: Channel):
    global _CHANNEL
    previous, _CHANNEL = _CHANNEL, channel
    try:
        yield channel
    finally:
        _CHANNEL = previous


def _path(obj) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def construct(cls: type, *args, **kwargs):
    """``cls(*args, **kwargs)``, built beside the learner's objects (in the kernel when judging).

    For a check's own class that wraps a learner's object (e.g. a recorder around the learner's
    model): its methods then run where the model is.
    """
    channel = active()
    if channel is None:
        return cls(*args, **kwargs)
    return channel._request_call("new", _path(cls), args, kwargs)


def probe(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` run beside the learner's objects; its result must be plain data.

    ``fn`` is a check's own function (module ``helpers.checks.*``) that measures something only
    the learner's process can (which parameters a backward pass reaches).
    """
    channel = active()
    if channel is None:
        return fn(*args, **kwargs)
    return channel._request_call("probe", _path(fn), args, kwargs)


def manual_seed(seed: int) -> None:
    """``torch.manual_seed`` here and, when judging, in the learner's kernel too (where the
    learner's models draw their initial weights)."""
    torch.manual_seed(seed)
    channel = active()
    if channel is not None:  # set there with the next request
        channel.seed = int(seed)


def is_module(obj) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` (a learner's model in the kernel counts)."""
    if isinstance(obj, Remote):
        return obj._info.get("nn_module") is True
    return isinstance(obj, nn.Module)
