"""The check machinery: call a learner's function safely and compare its answer with a reference.

Every failure raises ``CheckFailure`` (an ``AssertionError``) whose message says which exercise,
which inputs (by shape), where the first mismatch is and by how much, and, when the wrong answer
matches a common mistake, what that mistake is. Comparisons never use the learner's own ``==``:
values are copied out to NumPy float64 arrays and compared by this module's own code, after the
type, dtype, shape and finiteness have been verified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# References taken when helpers is imported, so that a notebook which later reassigns
# torch.allclose, numpy functions or builtins cannot change how answers are judged.
_Tensor = torch.Tensor
_np_array = np.array
_np_abs = np.abs
_np_isfinite = np.isfinite
_np_argmax = np.argmax
_np_unravel = np.unravel_index
_isinstance = isinstance
_type = type


class CheckFailure(AssertionError):
    """A check found a wrong answer. The message is written for the learner."""


@dataclass(frozen=True)
class Cause:
    """A common mistake: what the wrong answer looks like and how to say so.

    ``output`` is the value the mistaken computation produces on the same inputs.
    """

    message: str
    output: object


def shape_text(value) -> str:
    """``(3, 4)`` for a tensor or array, the type name otherwise."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return "(" + ", ".join(str(int(d)) for d in shape) + ")"
    return _type(value).__name__


def describe(inputs: Mapping[str, object] | None) -> str:
    """``x (3, 4), h (3, 5)``: the inputs of a case, by shape."""
    if not inputs:
        return "no inputs"
    return ", ".join(f"{name} {shape_text(value)}" for name, value in inputs.items())


def fail(exercise: str, problem: str, inputs: Mapping[str, object] | None = None, cause=None):
    """Raise a ``CheckFailure`` with the course's standard layout."""
    lines = [f"{exercise}: {problem}"]
    if inputs is not None:
        lines.append(f"  inputs: {describe(inputs)}")
    if cause:
        lines.append(f"  likely cause: {cause}")
    # ``from None``: the learner needs this message, not the chain of exceptions behind it.
    raise CheckFailure("\n".join(lines)) from None


def _snapshot(value):
    if _isinstance(value, _Tensor):
        return value.detach().clone()
    if _isinstance(value, tuple | list):
        return _type(value)(_snapshot(v) for v in value)
    return value


def _same(a, b) -> bool:
    if _isinstance(a, _Tensor) and _isinstance(b, _Tensor):
        return a.shape == b.shape and bool((a.detach() == b.detach()).all().item())
    if _isinstance(a, tuple | list) and _isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return True


_ERROR_CAUSES = (
    (
        "mat1 and mat2 shapes cannot be multiplied",
        "a weight used the wrong way round: weight_ih "
        "is (hidden, input), so the input term is x @ weight_ih.T (likewise weight_hh).",
    ),
    (
        "must match the size of tensor",
        "two terms with different shapes were added; check each "
        "matrix product's shape against the docstring.",
    ),
    (
        "expected scalar type",
        "tensors of different dtypes were mixed; create new tensors with "
        "dtype=x.dtype (the checks use float64).",
    ),
    (
        "Expected all tensors to be on the same device",
        "a tensor was created on another device; use device=x.device rather than .cuda().",
    ),
)


def call(exercise: str, fn, *args, inputs: Mapping[str, object] | None = None, **kwargs):
    """Call the learner's ``fn`` on copies of ``args`` and return what it returns.

    The learner's function gets clones, so mutating its inputs cannot change the reference; if it
    mutates them anyway, that is reported, because a real caller would see its data change.
    """
    if not callable(fn):
        fail(exercise, f"expected a function or class, got {_type(fn).__name__}", inputs)
    originals = _snapshot(args)
    given = _snapshot(args)
    try:
        result = fn(*given, **kwargs)
    except NotImplementedError:
        fail(
            exercise,
            "not implemented yet: replace `raise NotImplementedError()` with your code.",
            inputs,
        )
    except CheckFailure:
        raise
    except Exception as exc:  # the learner's code may raise anything: report it, don't crash
        text = f"{_type(exc).__name__}: {exc}"
        cause = next((hint for key, hint in _ERROR_CAUSES if key in str(exc)), None)
        fail(exercise, f"raised {text}", inputs, cause)
    if not _same(given, originals):
        fail(
            exercise,
            "changed its input tensors in place; compute new tensors instead "
            "(avoid `+=`, `.add_()`, or writing into an argument).",
            inputs,
        )
    return result


def _as_array(exercise, name, got, expected, inputs) -> tuple[np.ndarray, np.ndarray]:
    if _type(got) is not _Tensor and _type(got) is not torch.nn.Parameter:
        fail(
            exercise,
            f"{name} should be a torch.Tensor, got {_type(got).__module__}.{_type(got).__name__}",
            inputs,
            "NumPy arrays or Python numbers lose autograd; use torch operations throughout."
            if _isinstance(got, np.ndarray | float | int)
            else None,
        )
    if got.dtype != expected.dtype:
        fail(
            exercise,
            f"{name} has dtype {got.dtype}, expected {expected.dtype}",
            inputs,
            "a new tensor was created without dtype=...; keep the inputs' dtype.",
        )
    if tuple(got.shape) != tuple(expected.shape):
        fail(
            exercise,
            f"{name} has shape {shape_text(got)}, expected {shape_text(expected)}",
            inputs,
            _shape_cause(got, expected),
        )
    if got.device != expected.device:
        fail(exercise, f"{name} is on {got.device}, expected {expected.device}", inputs)
    got_np = _np_array(got.detach().cpu().numpy(), dtype=np.float64, copy=True)
    exp_np = _np_array(expected.detach().cpu().numpy(), dtype=np.float64, copy=True)
    finite = _np_isfinite(got_np)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        fail(
            exercise,
            f"{name} contains {got_np[index]} at index {index}",
            inputs,
            "an overflow or a division by zero; tanh and sigmoid never produce inf or nan.",
        )
    return got_np, exp_np


def _shape_cause(got, expected) -> str | None:
    g, e = tuple(got.shape), tuple(expected.shape)
    if len(g) == len(e) and sorted(g) == sorted(e):
        return "the dimensions are in the wrong order (a transposed matrix, or batch/seq swapped)."
    if len(g) == len(e) + 1 and 1 in g:
        return "an extra dimension of size 1; check where the layer dimension goes."
    if len(g) + 1 == len(e):
        return "a dimension is missing; check that every time step / layer is kept."
    return None


def _close(got_np, exp_np, atol, rtol):
    return _np_abs(got_np - exp_np) <= atol + rtol * _np_abs(exp_np)


def assert_close(
    exercise: str,
    got,
    expected: torch.Tensor,
    *,
    inputs: Mapping[str, object] | None = None,
    name: str = "output",
    reference: str = "the reference",
    atol: float = 1e-10,
    rtol: float = 1e-7,
    causes: Iterable[Cause] = (),
) -> float:
    """Check ``got`` against ``expected``; return the largest absolute difference.

    Verifies type (a ``torch.Tensor``), dtype, shape, device and finiteness first, then the values
    elementwise: ``|got - expected| <= atol + rtol * |expected|``. On a mismatch the message gives
    the first wrong index, both values and the difference; if the wrong answer equals one of
    ``causes`` it names that mistake.
    """
    got_np, exp_np = _as_array(exercise, name, got, expected, inputs)
    ok = _close(got_np, exp_np, atol, rtol)
    diff = _np_abs(got_np - exp_np)
    if ok.all():
        return float(diff.max()) if diff.size else 0.0
    index = tuple(int(i) for i in np.argwhere(~ok)[0])
    problem = (
        f"{name} differs from {reference}: first mismatch at index {index}, got "
        f"{got_np[index]:.6g}, expected {exp_np[index]:.6g} (|diff| {diff[index]:.3g}; "
        f"{int((~ok).sum())} of {ok.size} values wrong, largest |diff| {diff.max():.3g}, "
        f"tolerance {atol:g})"
    )
    cause = None
    for candidate in causes:
        out = candidate.output
        if (
            _isinstance(out, _Tensor)
            and tuple(out.shape) == got_np.shape
            and _close(
                got_np, _np_array(out.detach().cpu().numpy(), dtype=np.float64), atol, rtol
            ).all()
        ):
            cause = candidate.message
            break
    fail(exercise, problem, inputs, cause)


def assert_equal_values(exercise: str, got, expected, *, inputs=None, name="answer", cause=None):
    """Exact comparison of plain Python values (ints, tuples of ints, strings), type included."""

    def plain(value):
        if _type(value) in (tuple, list):
            return (_type(value).__name__, tuple(plain(v) for v in value))
        if _type(value) in (int, str, bool, float):
            return (_type(value).__name__, value)
        return ("other", repr(_type(value)))

    if plain(got) != plain(expected):
        fail(
            exercise,
            f"{name} is {got!r} ({_type(got).__name__}), expected "
            f"{expected!r} ({_type(expected).__name__})",
            inputs,
            cause,
        )


def get(namespace: Mapping[str, object], name: str):
    """The object a notebook defined under ``name``, or a failure that says it is missing."""
    if name not in namespace:
        fail(
            name,
            f"`{name}` is not defined. Run the cell that defines it, and keep the name "
            "and signature given in the exercise.",
        )
    return namespace[name]


def report(exercise: str, cases: int, max_diff: float | None = None, reference: str = "") -> None:
    """Print one line of success, e.g. ``rnn_cell: OK, matches torch.nn.RNNCell on 4 cases``."""
    against = f", matches {reference}" if reference else ""
    diff = f" (largest |diff| {max_diff:.1e})" if max_diff is not None else ""
    print(f"{exercise}: OK{against} on {cases} case{'s' * (cases != 1)}{diff}")


def random_tensors(generator: torch.Generator, shapes: Mapping[str, Sequence[int]], scale=1.0):
    """Random float64 normal tensors keyed by name, drawn from ``generator`` (in key order)."""
    return {
        name: torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
        for name, shape in shapes.items()
    }


def after(prerequisite: str, check: Callable[[], None], prerequisite_check: Callable[[], None]):
    """Run ``check``; if it fails and the exercise it builds on fails too, say so.

    E.g. ``rnn_forward`` calls the learner's ``rnn_cell``: a wrong cell makes the forward pass
    wrong, and the useful advice is to fix the cell first.
    """
    try:
        check()
    except CheckFailure as failure:
        import contextlib
        import io

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                prerequisite_check()
        except CheckFailure:
            raise CheckFailure(
                f"{failure}\n  note: {prerequisite} fails its own check, and this exercise builds "
                f"on it: fix {prerequisite} first."
            ) from None
        raise


Check = Callable[[Mapping[str, object]], None]
