"""The check machinery: call a learner's function safely and compare its answer with a reference.

Every failure raises ``CheckFailure`` (an ``AssertionError``) whose message says which exercise,
which inputs (by shape), where the first mismatch is and by how much, and, when the wrong answer
matches a common mistake, what that mistake is. Comparisons never use the learner's own ``==``:
values are copied out to NumPy float64 arrays and compared by this module's own code, after the
type, dtype, shape and finiteness have been verified.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from helpers.checks import _baseline, remote

# References taken when helpers is imported, so that a notebook which later reassigns
# torch.allclose, numpy functions or builtins cannot change how answers are judged. Tensors are
# read through torch._C.TensorBase and compared through numpy.ndarray's own methods: both are
# immutable C types, so no notebook can patch what these references do.
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_TB = torch._C.TensorBase
_ND = np.ndarray
_tb_detach = _TB.detach
_tb_clone = _TB.clone
_tb_cpu = _TB.cpu
_tb_numpy = _TB.numpy
_tb_equal = _TB.equal
_tb_dtype = _TB.dtype.__get__
_tb_shape = _TB.shape.__get__
_tb_device = _TB.device.__get__
_nd_astype = _ND.astype
_nd_sub = _ND.__sub__
_nd_abs = _ND.__abs__
_nd_mul = _ND.__mul__
_nd_add = _ND.__add__
_nd_le = _ND.__le__
_nd_eq = _ND.__eq__
_nd_all = _ND.all
_nd_max = _ND.max
_nd_sum = _ND.sum
_nd_invert = _ND.__invert__
_nd_nonzero = _ND.nonzero
_nd_getitem = _ND.__getitem__
_nd_size = _ND.size.__get__
_nd_shape = _ND.shape.__get__
_type = type
_callable = callable
_len = len
_tuple = tuple
_int = int
_float = float
_str = str
_repr = repr
_print = print
_zip = zip
_any = any
_all = all
_PLAIN = (int, str, bool, float)


#: Tolerance of the float32 checks (models in float32 against torch.nn on the same weights):
#: ``|got - expected| <= F32_ATOL + F32_RTOL * |expected|``.
F32_ATOL = 1e-5
F32_RTOL = 1e-4


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


def not_implemented(exercise: str, inputs: Mapping[str, object] | None = None):
    """Fail because the learner's function still raises ``NotImplementedError``."""
    fail(
        exercise,
        "not implemented yet: replace `raise NotImplementedError()` with your code.",
        inputs,
    )


def _snapshot(value):
    if _type(value) is _Tensor or _type(value) is _Parameter:
        return _tb_clone(_tb_detach(value))
    if _type(value) is tuple or _type(value) is list:
        return _type(value)(_snapshot(v) for v in value)
    return value


def _same(a, b) -> bool:
    tensors = (_Tensor, _Parameter)
    if _any(_type(a) is t for t in tensors) and _any(_type(b) is t for t in tensors):
        return _tb_shape(a) == _tb_shape(b) and _tb_equal(_tb_detach(a), _tb_detach(b))
    if _any(_type(a) is t for t in (tuple, list)) and _any(_type(b) is t for t in (tuple, list)):
        return _len(a) == _len(b) and _all(_same(x, y) for x, y in _zip(a, b, strict=True))
    return True


def check_integrity(exercise: str) -> None:
    """Fail if the notebook replaced torch, NumPy, builtin or helpers functions (see _baseline).

    Only where the checks share the learner's process (``make check``, the notebook's own test
    cells): the autograder's judge runs in a process no notebook touches.
    """
    if remote.active() is not None:
        return
    replaced = _baseline.tampering()
    if replaced:
        shown = ", ".join(replaced[:5]) + (" ..." if _len(replaced) > 5 else "")
        fail(
            exercise,
            f"the notebook replaced {shown}; the checks cannot trust torch or NumPy any more. "
            "Remove the code that assigns to library functions, restart the kernel and run "
            "all cells again.",
        )


def _notes(exercise: str, caught, stderr_text: str) -> None:
    """Report warnings and stderr output of the learner's function on stdout.

    A test cell that writes to stderr scores 0 under nbgrader; a harmless warning from the
    learner's code should not cost points, so it is shown as a note instead.
    """
    seen = set()
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.add(text)
            _print(f"note: {exercise} raised a warning (no points lost): {text[:300]}")
    text = stderr_text.strip()
    if text:
        first = text.splitlines()[0][:300]
        _print(f"note: {exercise} wrote to stderr (no points lost): {first}")


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


def call(
    exercise: str,
    fn,
    *args,
    inputs: Mapping[str, object] | None = None,
    expect: tuple[type[BaseException], ...] = (),
    **kwargs,
):
    """Call the learner's ``fn`` on copies of ``args`` and return what it returns.

    The learner's function gets clones, so mutating its inputs cannot change the reference; if it
    mutates them anyway, that is reported, because a real caller would see its data change.
    Exceptions of the types in ``expect`` are the caller's to judge: they are raised as they are.
    """
    if not _callable(fn):
        fail(exercise, f"expected a function or class, got {_type(fn).__name__}", inputs)
    check_integrity(exercise)
    originals = _snapshot(args)
    given = _snapshot(args)
    stderr = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
            warnings.simplefilter("always")
            result = fn(*given, **kwargs)
    except NotImplementedError:
        not_implemented(exercise, inputs)
    except CheckFailure:
        raise
    except expect:
        raise
    except Exception as exc:  # the learner's code may raise anything: report it, don't crash
        text = f"{_type(exc).__name__}: {exc}"
        cause = next((hint for key, hint in _ERROR_CAUSES if key in _str(exc)), None)
        fail(exercise, f"raised {text}", inputs, cause)
    _notes(exercise, caught, stderr.getvalue())
    check_integrity(exercise)
    if not _same(given, originals):
        fail(
            exercise,
            "changed its input tensors in place; compute new tensors instead "
            "(avoid `+=`, `.add_()`, or writing into an argument).",
            inputs,
        )
    return result


def _float64(tensor) -> np.ndarray:
    """A float64 NumPy copy of a genuine tensor, read through TensorBase's own methods."""
    return _nd_astype(_tb_numpy(_tb_cpu(_tb_detach(tensor))), "float64", copy=True)


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return _tuple(_int(axis[0]) for axis in _nd_nonzero(mask))


def _as_array(exercise, name, got, expected, inputs) -> tuple[np.ndarray, np.ndarray]:
    """Type, dtype, shape, device and finiteness of ``got``, then both as float64 arrays.

    ``got`` must be exactly a ``torch.Tensor`` (or ``nn.Parameter``): a subclass or look-alike
    could override comparisons, so it fails here, before any value is read.
    """
    if _type(got) is not _Tensor and _type(got) is not _Parameter:
        fail(
            exercise,
            f"{name} should be a torch.Tensor, got {_type(got).__module__}.{_type(got).__name__}",
            inputs,
            "NumPy arrays or Python numbers lose autograd; use torch operations throughout."
            if _any(_type(got) is t for t in (_ND, float, int))
            else None,
        )
    got_dtype, exp_dtype = _tb_dtype(got), _tb_dtype(expected)
    if got_dtype is not exp_dtype:
        fail(
            exercise,
            f"{name} has dtype {got_dtype}, expected {exp_dtype}",
            inputs,
            "a new tensor was created without dtype=...; keep the inputs' dtype.",
        )
    if _tuple(_tb_shape(got)) != _tuple(_tb_shape(expected)):
        fail(
            exercise,
            f"{name} has shape {shape_text(got)}, expected {shape_text(expected)}",
            inputs,
            _shape_cause(got, expected),
        )
    if _str(_tb_device(got)) != _str(_tb_device(expected)):
        fail(exercise, f"{name} is on {_tb_device(got)}, expected {_tb_device(expected)}", inputs)
    got_np = _float64(got)
    exp_np = _float64(expected)
    # x - x is 0 exactly when x is finite (inf - inf and nan - nan are nan)
    finite = _nd_eq(_nd_sub(got_np, got_np), 0.0)
    if not _nd_all(finite):
        index = _first_index(_nd_invert(finite))
        fail(
            exercise,
            f"{name} contains {_nd_getitem(got_np, index)} at index {index}",
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
    """Elementwise ``|got - expected| <= atol + rtol * |expected|`` (NaN counts as not close)."""
    return _nd_le(_nd_abs(_nd_sub(got_np, exp_np)), _nd_add(_nd_mul(_nd_abs(exp_np), rtol), atol))


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
    check_integrity(exercise)
    got_np, exp_np = _as_array(exercise, name, got, expected, inputs)
    ok = _close(got_np, exp_np, atol, rtol)
    diff = _nd_abs(_nd_sub(got_np, exp_np))
    if _nd_all(ok):
        return _float(_nd_max(diff)) if _nd_size(diff) else 0.0
    index = _first_index(_nd_invert(ok))
    wrong = _int(_nd_sum(_nd_invert(ok)))
    problem = (
        f"{name} differs from {reference}: first mismatch at index {index}, got "
        f"{_nd_getitem(got_np, index):.6g}, expected {_nd_getitem(exp_np, index):.6g} "
        f"(|diff| {_nd_getitem(diff, index):.3g}; {wrong} of {_nd_size(ok)} values wrong, "
        f"largest |diff| {_nd_max(diff):.3g}, tolerance {atol:g})"
    )
    cause = None
    for candidate in causes:
        out = candidate.output
        if (
            _type(out) is _Tensor
            and _tuple(_tb_shape(out)) == _nd_shape(got_np)
            and _nd_all(_close(got_np, _float64(out), atol, rtol))
        ):
            cause = candidate.message
            break
    fail(exercise, problem, inputs, cause)


def all_close_at_once(
    exercise, got, expected, *, inputs, reference, atol=1e-10, rtol=1e-7
) -> float | None:
    """One comparison of several answers at once; ``None`` when they are not all plain float64
    tensors of the right shapes or do not all match (the caller then compares them one by one,
    to say which is wrong). Each comparison checks the notebook's integrity, which costs time."""
    for g, e in zip(got, expected, strict=True):
        if (
            type(g) is not torch.Tensor
            or g.dtype != e.dtype
            or g.device != e.device
            or tuple(g.shape) != tuple(e.shape)
        ):
            return None
    if not got:
        return 0.0
    try:
        return assert_close(
            exercise,
            torch.cat([g.detach().reshape(-1) for g in got]),
            torch.cat([e.reshape(-1) for e in expected]),
            inputs=inputs,
            reference=reference,
            atol=atol,
            rtol=rtol,
        )
    except CheckFailure:
        return None


def assert_equal_values(exercise: str, got, expected, *, inputs=None, name="answer", cause=None):
    """Exact comparison of plain Python values (ints, tuples of ints, strings), type included."""

    def plain(value):
        # exact types only, compared with `is`: a subclass (or a metaclass) could override ==
        kind = _type(value)
        if kind is tuple or kind is list:
            return (kind.__name__, _tuple(plain(v) for v in value))
        if _any(kind is t for t in _PLAIN):
            return (kind.__name__, _repr(value))
        return ("other", _repr(kind))

    if plain(got) != plain(expected):
        fail(
            exercise,
            f"{name} is {_safe_repr(got)} ({_type(got).__name__}), expected "
            f"{expected!r} ({_type(expected).__name__})",
            inputs,
            cause,
        )


def assert_choice(exercise: str, answer, choices: Sequence[str], *, name: str = "answer") -> str:
    """``answer`` must be exactly a ``str`` equal to one of ``choices``; return it.

    The comparison runs on a plain ``str`` copy, so an object whose ``__eq__`` always returns
    True cannot pass.
    """
    if _type(answer) is not str:
        fail(exercise, f"{name} should be one of {_tuple(choices)}, got {_safe_repr(answer)}")
    text = _str.__str__(answer)
    if not _any(_str.__eq__(text, c) for c in choices):
        fail(exercise, f"{name} should be one of {_tuple(choices)}, got {text!r}")
    return text


def _safe_repr(value) -> str:
    """``repr`` for plain values; the type's name for anything else (a learner's __repr__ could
    raise or print)."""
    kind = _type(value)
    if kind is tuple or kind is list or _any(kind is t for t in _PLAIN) or value is None:
        try:
            return _repr(value)[:200]
        except Exception:
            pass
    return f"<{kind.__module__}.{kind.__name__} object>"


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


# ----------------------------------------------------------------------------------------------
# Which parameters a backward pass reaches, verified against the model's own values.


def _backward_probe(model, x, hidden, train: bool) -> dict:
    """Autograd's gradients of ``(output * w).sum()`` for every parameter of ``model`` (``w``
    drawn from seed 5 in the output's shape), or why there are none. Run beside the model
    (:func:`helpers.checks.remote.probe`); the caller verifies them."""
    was_training = model.training
    model.train(train)
    try:
        parameters = list(model.named_parameters())
        frozen = [n for n, p in parameters if not p.requires_grad]
        if frozen:
            return {"frozen": frozen, "grads": {}, "error": None}
        for _, p in parameters:
            p.grad = None
        output = model(x, hidden)[0]
        weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(5))
        try:
            (output * weights.to(output.device, output.dtype)).sum().backward()
        except RuntimeError as exc:
            return {"frozen": [], "grads": {}, "error": str(exc)}
        grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in parameters}
        for _, p in parameters:
            p.grad = None
        return {"frozen": [], "grads": grads, "error": None}
    finally:
        model.train(was_training)


def _loss_at(model, x, hidden) -> tuple[float, float]:
    """``(output * w).sum()`` in float64 and the sum of its terms' magnitudes (its rounding)."""
    with torch.no_grad():
        output = model(x, hidden)[0]
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(5))
    terms = output.detach().double() * weights.double()
    return float(terms.sum()), float(terms.abs().sum())


def gradient_report(model, x, hidden, *, train: bool = True) -> dict:
    """Which parameters of the learner's ``model`` a loss on its output reaches.

    The gradients come from a backward pass beside the model; each one that is not zero is then
    checked here along a random direction against the central difference of the loss, computed
    from the model's own outputs with that parameter moved. Returns ``frozen`` (parameters with
    requires_grad=False), ``missing`` (no or a zero gradient), ``bent`` (a gradient that does not
    match how the output changes) and ``error`` (what backward raised, or None).
    """
    found = remote.probe(_backward_probe, model, x, hidden, train)
    report = {"frozen": list(found["frozen"]), "missing": [], "bent": [], "error": found["error"]}
    if report["frozen"] or report["error"] is not None:
        return report
    grads = found["grads"]
    report["missing"] = [
        n for n, g in grads.items() if g is None or not bool(g.detach().abs().sum() > 0)
    ]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    model.train(train)
    directions = torch.Generator().manual_seed(11)
    try:
        for name, grad in grads.items():
            if name in report["missing"] or name not in state:
                continue
            base = state[name]
            d = torch.randn(base.shape, generator=directions, dtype=torch.float64)
            d = d / d.norm()
            eps = 1e-3 * max(1.0, float(base.abs().max()))
            losses, size = [], 0.0
            for sign in (1.0, -1.0):
                moved = (base.double() + sign * eps * d).to(base.dtype)
                model.load_state_dict({name: moved}, strict=False)
                loss, magnitude = _loss_at(model, x, hidden)
                losses.append(loss)
                size = max(size, magnitude)
            model.load_state_dict({name: base}, strict=False)
            numerical = (losses[0] - losses[1]) / (2 * eps)
            analytic = float((grad.detach().double().cpu() * d).sum())
            # the loss's rounding, over the step: what the difference cannot resolve
            noise = size * float(torch.finfo(base.dtype).eps) / eps
            if (
                abs(numerical) > 2 * noise
                and abs(analytic - numerical) > 0.1 * abs(numerical) + 2 * noise
            ):
                report["bent"].append(name)
    finally:
        model.load_state_dict(state)
        model.train(was_training)
    return report
