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
import io
import json
import math
import pickle
import sys
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from helpers.checks.agent import (
    _DTYPES,
    _LAYER_NAMES,
    _NP_DTYPES,
    _tensor_node,
)

# The kernel's end and what both ends share, importable from here as before.
from helpers.checks.agent import MAX_DEPTH as MAX_DEPTH
from helpers.checks.agent import MAX_ELEMENTS as MAX_ELEMENTS
from helpers.checks.agent import MAX_REPLY as MAX_REPLY
from helpers.checks.agent import MAX_STRING as MAX_STRING
from helpers.checks.agent import Agent as Agent
from helpers.checks.agent import ChannelError as ChannelError
from helpers.checks.agent import RemoteError as RemoteError

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
