"""Lesson 04's data exercises: ``one_hot_encode`` against ``torch.nn.functional.one_hot``, and
``get_batches`` by properties, on texts whose characters are their own positions."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import torch

from helpers.checks.core import call, fail, report
from helpers.checks.engine import Mistake, diagnosis, records

# ----------------------------------------------------------------------------- one_hot_encode


class OneHotCase(NamedTuple):
    """One ``one_hot_encode`` case: ``arr`` of this shape, random labels in ``[0, n_labels)``."""

    shape: tuple
    n_labels: int


#: Wrong shapes, recognised from ``(got, expected, arr, n_labels)``.
ONE_HOT_SHAPE_MISTAKES = (
    Mistake(
        "left flat",
        lambda got, expected, arr, n: got.shape == (arr.size, n) and arr.ndim > 1,
        "the result was left flat: reshape it to arr.shape + (n_labels,).",
    ),
    Mistake(
        "labels not last",
        lambda got, expected, arr, n: (
            got.ndim == expected.ndim and sorted(got.shape) == sorted(expected.shape)
        ),
        "the dimensions are in the wrong order: the labels go last.",
    ),
)

#: Wrong values, recognised from ``(got, expected, n_labels)``.
ONE_HOT_VALUE_MISTAKES = (
    Mistake(
        "inverted",
        lambda got, expected, n: np.array_equal(got, 1.0 - expected),
        "the values are inverted: 1.0 only at the label's index, 0.0 elsewhere.",
    ),
    Mistake(
        "one position off",
        lambda got, expected, n: (
            n > 1
            and any(np.array_equal(got, np.roll(expected, shift, axis=-1)) for shift in (1, -1))
        ),
        "the 1.0 is one position off: use the label itself as the index.",
    ),
    Mistake(
        "several ones",
        lambda got, expected, n: bool((got.sum(axis=-1) > 1).any()),
        "some vectors hold more than one 1.0: set one element per label (the "
        "row of the label's position, the column of its value), not whole rows or "
        "columns.",
    ),
)


def _one_hot_type(got, expected, arr, n_labels, where) -> None:
    """``got`` must be a float32 NumPy array of ``expected``'s shape."""
    name = "one_hot_encode"
    if isinstance(got, torch.Tensor):
        fail(
            name,
            f"{where} should return a NumPy array, got a torch.Tensor",
            cause="build it with np.zeros(..., dtype=np.float32) (inside the model, "
            "forward may use torch's one-hot; this function is the NumPy version).",
        )
    if not isinstance(got, np.ndarray):
        fail(name, f"{where} should return a NumPy array, got {type(got).__name__}")
    if got.shape != expected.shape:
        fail(
            name,
            f"{where} returned shape {got.shape}, expected arr.shape + (n_labels,) "
            f"= {expected.shape}",
            cause=diagnosis(ONE_HOT_SHAPE_MISTAKES, got, expected, arr, n_labels),
        )
    if got.dtype != np.float32:
        fail(
            name,
            f"{where} returned dtype {got.dtype}, expected float32",
            cause="np.zeros makes float64 by default: pass dtype=np.float32."
            if got.dtype == np.float64
            else "one-hot vectors are fed to a network's float weights: make the array "
            "float32 (dtype=np.float32), not integers or booleans.",
        )


def _one_hot_values(got, expected, arr, n_labels, where) -> None:
    wrong = np.argwhere(got != expected)
    if not len(wrong):
        return
    index = tuple(int(i) for i in wrong[0])
    label = int(arr[index[:-1]])
    fail(
        "one_hot_encode",
        f"{where}: the value at index {index} is {got[index]}, expected "
        f"{expected[index]} (arr{list(index[:-1])} = {label}, so only position "
        f"{label} of the last dimension should be 1.0); {len(wrong)} of {got.size} "
        "values wrong",
        cause=diagnosis(ONE_HOT_VALUE_MISTAKES, got, expected, n_labels),
    )


def _check_one_hot_encode(one_hot_encode, *, cases, seed: int) -> None:
    """``one_hot_encode(arr, n_labels)`` equals ``torch.nn.functional.one_hot`` as float32.

    ``cases`` holds ``OneHotCase(shape of arr, n_labels)``; ``arr`` is random ints in
    ``[0, n_labels)``.
    """
    name = "one_hot_encode"
    rng = np.random.default_rng(seed)
    for shape, n_labels in records(OneHotCase, cases):
        arr = rng.integers(0, n_labels, size=shape).astype(np.int64)
        where = f"one_hot_encode(arr of shape {arr.shape}, n_labels={n_labels})"
        before = arr.copy()
        got = call(name, one_hot_encode, arr, n_labels, inputs={"arr": arr, "n_labels": n_labels})
        if not np.array_equal(arr, before):
            fail(name, f"{where} changed its input array in place; build a new array instead.")
        expected = torch.nn.functional.one_hot(torch.from_numpy(arr), n_labels).numpy()
        expected = expected.astype(np.float32)
        _one_hot_type(got, expected, arr, n_labels, where)
        _one_hot_values(got, expected, arr, n_labels, where)
    report(name, len(cases), None, "torch.nn.functional.one_hot")


# -------------------------------------------------------------------------------- get_batches


class BatchCase(NamedTuple):
    """One ``get_batches`` case: a text of ``length`` characters cut into batches."""

    length: int
    batch_size: int
    seq_length: int


def _collect(get_batches, arr, batch_size, seq_length, limit, inputs):
    return call(
        "get_batches",
        _first_batches,
        get_batches,
        arr,
        batch_size,
        seq_length,
        limit + 1,
        inputs=inputs,
    )


def _first_batches(get_batches, arr, batch_size, seq_length, count) -> list:
    """The first ``count`` batches ``get_batches`` yields (the generator runs inside ``call``)."""
    return list(itertools.islice(iter(get_batches(arr, batch_size, seq_length)), count))


def _positions_text(row) -> str:
    values = [int(v) for v in row]
    if len(values) > 8:
        return (
            "["
            + ", ".join(map(str, values[:4]))
            + ", ..., "
            + ", ".join(map(str, values[-2:]))
            + "]"
        )
    return str(values)


class _Target(NamedTuple):
    """The first wrong target: in batch ``k`` at (row ``r``, column ``c``), ``got`` where the
    character at position ``true`` belongs."""

    batches: list
    case: BatchCase
    k: int
    r: int
    c: int
    got: int
    true: int


def _wrapped(t: _Target) -> bool:
    x = t.batches[t.k][0]
    return t.c == t.case.seq_length - 1 and t.got in (
        int(x[t.r, 0]),
        0,
        int(t.batches[0][0][t.r, 0]),
    )


#: Why ``y`` is not ``x`` shifted by one, recognised from the first wrong target.
TARGET_MISTAKES = (
    Mistake(
        "a batch past the end",
        lambda t: t.true >= t.case.length,
        lambda t: (
            f"there is no character after position {t.true - 1}: that batch "
            "should not exist. Count only batches whose every target exists: "
            "(len(arr) - 1) // (batch_size * seq_length)."
        ),
    ),
    Mistake(
        "wrapped around",
        _wrapped,
        "the last target wrapped around to the start of the row or text; "
        "take targets from the text shifted by one, arr[1:], so the target of "
        "the last column is the true next character.",
    ),
    Mistake(
        "y is x",
        lambda t: np.array_equal(t.batches[t.k][1], t.batches[t.k][0]),
        "y is x itself: the target of each character is the one after it in the "
        "text, so y is the text shifted by one.",
    ),
    Mistake(
        "shifted the other way",
        lambda t: np.array_equal(t.batches[t.k][1], t.batches[t.k][0] - 1),
        "y holds the character before each input, not the one after: shift the other way.",
    ),
    Mistake(
        "anything else",
        lambda t: True,
        "y must hold the character that follows each character of x in the text.",
    ),
)


def _shape_cause(shape, batch_size, seq_length) -> str:
    if shape == (seq_length, batch_size):
        return (
            "rows and columns are swapped: batch_size rows (one stretch of text "
            "each) of seq_length columns."
        )
    if shape[:1] == (batch_size,):
        return "only full batches: drop the characters that do not fill a whole batch."
    return "reshape the text into batch_size rows first: (batch_size, -1)."


def _check_items(batches, case: BatchCase, where) -> None:
    """Every batch is a pair of integer arrays of shape (batch_size, seq_length)."""
    name = "get_batches"
    want = (case.batch_size, case.seq_length)
    for k, item in enumerate(batches):
        if not isinstance(item, tuple | list) or len(item) != 2:
            fail(name, f"batch {k} {where} is a {type(item).__name__}; yield a pair (x, y)")
        for label, value in zip("xy", item, strict=True):
            if not isinstance(value, np.ndarray):
                fail(
                    name,
                    f"{label} of batch {k} {where} is a {type(value).__name__}; yield NumPy arrays",
                )
            if value.dtype.kind not in "iu":
                fail(
                    name,
                    f"{label} of batch {k} {where} has dtype {value.dtype}; keep the "
                    "integer character indices",
                )
            if value.shape != want:
                fail(
                    name,
                    f"{label} of batch {k} {where} has shape {value.shape}, expected "
                    f"(batch_size, seq_length) = {want}",
                    cause=_shape_cause(value.shape, *want),
                )


def _check_targets(batches, case: BatchCase, where) -> None:
    """``y`` is ``x`` shifted by one character of the text."""
    for k, (x, y) in enumerate(batches):
        shifted = x + 1
        bad = np.argwhere(y != shifted)
        if len(bad):
            r, c = (int(i) for i in bad[0])
            got, true = int(y[r, c]), int(shifted[r, c])
            fail(
                "get_batches",
                f"y is not x shifted by one character: in batch {k}, row {r}, column {c}, "
                f"x is the character at position {int(x[r, c])}, so y should be the one at "
                f"position {true}, but it is the one at position {got} {where}",
                cause=diagnosis(TARGET_MISTAKES, _Target(batches, case, k, r, c, got, true)),
            )


def _check_rows(batches, case: BatchCase, where) -> None:
    """The first batch starts the text; row r of each batch continues row r before it."""
    name = "get_batches"
    if batches and int(batches[0][0][0, 0]) != 0:
        fail(
            name,
            f"the first batch starts at position {int(batches[0][0][0, 0])}; it should "
            f"start at the start of the text {where}",
        )
    for k in range(1, len(batches)):
        prev, x = batches[k - 1][0], batches[k][0]
        for r in range(case.batch_size):
            if int(x[r, 0]) != int(prev[r, -1]) + 1:
                fail(
                    name,
                    f"row {r} of batch {k} does not continue row {r} of batch {k - 1}: "
                    f"the previous batch's row {r} ended at position {int(prev[r, -1])}, so "
                    f"this one should start at {int(prev[r, -1]) + 1}, but it is "
                    f"{_positions_text(x[r])} {where}",
                    cause="the hidden state of row r is carried to row r of the next batch, so "
                    "each row must be one contiguous stretch of text: reshape to "
                    "(batch_size, -1) and slice columns [n : n + seq_length].",
                )


def _check_count(batches, n_expected: int, case: BatchCase, where) -> None:
    """Every full batch, and every input character once."""
    name = "get_batches"
    if len(batches) != n_expected:
        fail(
            name,
            f"yielded {len(batches)} batch{'es' * (len(batches) != 1)} {where}; the "
            f"text holds exactly {n_expected} full batch{'es' * (n_expected != 1)} (each "
            "needs batch_size * seq_length inputs, plus one more character for the last "
            "target)",
        )
    per_batch = case.batch_size * case.seq_length
    seen = np.concatenate([x.ravel() for x, _ in batches]) if batches else np.array([])
    if len(np.unique(seen)) != len(seen) or len(seen) and seen.max() >= n_expected * per_batch:
        fail(
            name,
            f"the batches use some characters twice and skip others {where}; every "
            f"one of the first {n_expected * per_batch} characters should be "
            "an input exactly once",
        )


def _check_lookup(get_batches, batches, case: BatchCase, n_expected, rng, where) -> None:
    """The same layout for any text: the values are looked up, never computed from positions."""
    name = "get_batches"
    values = rng.integers(0, 60, size=case.length).astype(np.int64)
    again = _collect(
        get_batches,
        values.copy(),
        case.batch_size,
        case.seq_length,
        n_expected + 5,
        {"arr": values},
    )
    for k, ((px, py), (vx, vy)) in enumerate(zip(batches, again, strict=False)):
        if not (np.array_equal(vx, values[px]) and np.array_equal(vy, values[py])):
            fail(
                name,
                f"on a text of random character indices, batch {k} differs from the "
                f"layout it has on a text whose characters are their positions {where}",
                cause="x and y must be slices of arr itself (do not sort or modify it).",
            )
    if len(again) != len(batches):
        fail(
            name,
            f"yields {len(again)} batches for one text and {len(batches)} for another of "
            f"the same length {where}",
        )


def _check_one_layout(get_batches, case: BatchCase, rng) -> int:
    """Properties on ``np.arange(length)`` (each character is its own position)."""
    length, batch_size, seq_length = case
    arr = np.arange(length, dtype=np.int64)
    where = f"(arr of {length} characters, batch_size={batch_size}, seq_length={seq_length})"
    n_expected = (length - 1) // (batch_size * seq_length)
    batches = _collect(
        get_batches, arr.copy(), batch_size, seq_length, n_expected + 5, {"arr": arr}
    )
    _check_items(batches, case, where)
    _check_targets(batches, case, where)
    _check_rows(batches, case, where)
    _check_count(batches, n_expected, case, where)
    _check_lookup(get_batches, batches, case, n_expected, rng, where)
    return len(batches)


def _check_too_short(get_batches, batch_size, seq_length) -> None:
    name = "get_batches"
    length = batch_size * seq_length  # one character short of a single batch
    arr = np.arange(length, dtype=np.int64)
    text = (
        f"get_batches(arr of {length} characters, batch_size={batch_size}, seq_length={seq_length})"
    )
    inputs = {"arr": arr, "batch_size": batch_size, "seq_length": seq_length}
    try:
        produced = call(
            name,
            _first_batches,
            get_batches,
            arr,
            batch_size,
            seq_length,
            3,
            inputs=inputs,
            expect=(ValueError,),
        )
    except ValueError as exc:
        if not str(exc).strip():
            fail(name, f"{text} raised ValueError without a message; say what was expected")
        return
    fail(
        name,
        f"{text} yielded {len(produced)} batches without complaint; it should raise "
        f"ValueError: {length} characters give only {length - 1} (input, target) pairs, fewer "
        f"than one batch needs ({length})",
        cause="check the length before the loop: if (len(arr) - 1) // (batch_size * "
        "seq_length) < 1, raise ValueError(...) saying what was expected.",
    )


def _check_get_batches(get_batches, *, cases, seed: int) -> None:
    """Properties of ``get_batches`` on each ``BatchCase(length, batch_size, seq_length)``.

    Only full batches; ``y`` is ``x`` shifted by one with the true next character (never a
    wrapped-around one); row r of each batch continues row r of the batch before; the first
    batch starts at the start of the text; every possible full batch is yielded; and a text too
    short for one batch raises ``ValueError``.
    """
    rng = np.random.default_rng(seed)
    cases = records(BatchCase, cases)
    total = 0
    for case in cases:
        total += _check_one_layout(get_batches, case, rng)
    _check_too_short(get_batches, cases[0].batch_size, cases[0].seq_length)
    print(
        f"get_batches: OK, every property holds on {len(cases) + 1} cases ({total} batches "
        "examined)"
    )
