"""Checks for lesson 04_char_lstm.

``one_hot_encode`` is compared with ``torch.nn.functional.one_hot``; ``CharRNN`` with
``torch.nn.LSTM`` and ``torch.nn.Linear`` run on the model's own weights; ``get_batches`` and
``sample`` are checked through properties (what every correct answer must satisfy), using texts
whose characters are their own positions and stand-in models whose predictions are known;
``unigram_loss`` and ``bigram_loss`` against counts made here with ``np.bincount``;
``train_step`` by what it does to a stand-in model and a counting optimiser, against
``torch.nn.functional.cross_entropy`` and ``torch.autograd.grad`` on a copy of the model.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
from torch import nn

from helpers.checks import remote
from helpers.checks.core import (
    F32_ATOL,
    F32_RTOL,
    Cause,
    assert_close,
    call,
    fail,
    gradient_report,
    report,
)
from helpers.checks.engine import Exercise, exercise_table
from helpers.text import Vocab
from helpers.training import cpu_threads

LN2 = math.log(2.0)

# ----------------------------------------------------------------------------- one_hot_encode


def _check_one_hot_encode(one_hot_encode, *, cases, seed: int) -> None:
    """``one_hot_encode(arr, n_labels)`` equals ``torch.nn.functional.one_hot`` as float32.

    ``cases`` holds ``(shape of arr, n_labels)`` pairs; ``arr`` is random ints in ``[0, n_labels)``.
    """
    name = "one_hot_encode"
    rng = np.random.default_rng(seed)
    for shape, n_labels in cases:
        arr = rng.integers(0, n_labels, size=shape).astype(np.int64)
        where = f"one_hot_encode(arr of shape {arr.shape}, n_labels={n_labels})"
        before = arr.copy()
        got = call(name, one_hot_encode, arr, n_labels, inputs={"arr": arr, "n_labels": n_labels})
        if not np.array_equal(arr, before):
            fail(name, f"{where} changed its input array in place; build a new array instead.")
        expected = torch.nn.functional.one_hot(torch.from_numpy(arr), n_labels).numpy()
        expected = expected.astype(np.float32)
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
            cause = None
            if got.shape == (arr.size, n_labels) and arr.ndim > 1:
                cause = "the result was left flat: reshape it to arr.shape + (n_labels,)."
            elif got.ndim == expected.ndim and sorted(got.shape) == sorted(expected.shape):
                cause = "the dimensions are in the wrong order: the labels go last."
            fail(
                name,
                f"{where} returned shape {got.shape}, expected arr.shape + (n_labels,) "
                f"= {expected.shape}",
                cause=cause,
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
        wrong = np.argwhere(got != expected)
        if len(wrong):
            cause = None
            if np.array_equal(got, 1.0 - expected):
                cause = "the values are inverted: 1.0 only at the label's index, 0.0 elsewhere."
            elif n_labels > 1 and any(
                np.array_equal(got, np.roll(expected, shift, axis=-1)) for shift in (1, -1)
            ):
                cause = "the 1.0 is one position off: use the label itself as the index."
            elif bool((got.sum(axis=-1) > 1).any()):
                cause = (
                    "some vectors hold more than one 1.0: set one element per label (the "
                    "row of the label's position, the column of its value), not whole rows or "
                    "columns."
                )
            index = tuple(int(i) for i in wrong[0])
            label = int(arr[index[:-1]])
            fail(
                name,
                f"{where}: the value at index {index} is {got[index]}, expected "
                f"{expected[index]} (arr{list(index[:-1])} = {label}, so only position "
                f"{label} of the last dimension should be 1.0); {len(wrong)} of {got.size} "
                "values wrong",
                cause=cause,
            )
    report(name, len(cases), None, "torch.nn.functional.one_hot")


# -------------------------------------------------------------------------------- get_batches


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


def _check_one_layout(get_batches, length, batch_size, seq_length, rng) -> int:
    """Properties on ``np.arange(length)`` (each character is its own position)."""
    name = "get_batches"
    arr = np.arange(length, dtype=np.int64)
    inputs = {"arr": arr}
    where = f"(arr of {length} characters, batch_size={batch_size}, seq_length={seq_length})"
    n_expected = (length - 1) // (batch_size * seq_length)
    batches = _collect(get_batches, arr.copy(), batch_size, seq_length, n_expected + 5, inputs)
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
            if value.shape != (batch_size, seq_length):
                if value.shape == (seq_length, batch_size):
                    cause = (
                        "rows and columns are swapped: batch_size rows (one stretch of text "
                        "each) of seq_length columns."
                    )
                elif value.shape[:1] == (batch_size,):
                    cause = "only full batches: drop the characters that do not fill a whole batch."
                else:
                    cause = "reshape the text into batch_size rows first: (batch_size, -1)."
                fail(
                    name,
                    f"{label} of batch {k} {where} has shape {value.shape}, expected "
                    f"(batch_size, seq_length) = {(batch_size, seq_length)}",
                    cause=cause,
                )
    for k, (x, y) in enumerate(batches):
        shifted = x + 1
        bad = np.argwhere(y != shifted)
        if len(bad):
            r, c = (int(i) for i in bad[0])
            got, true = int(y[r, c]), int(shifted[r, c])
            if true >= length:
                cause = (
                    f"there is no character after position {true - 1}: that batch "
                    "should not exist. Count only batches whose every target exists: "
                    "(len(arr) - 1) // (batch_size * seq_length)."
                )
            elif c == seq_length - 1 and got in (int(x[r, 0]), 0, int(batches[0][0][r, 0])):
                cause = (
                    "the last target wrapped around to the start of the row or text; "
                    "take targets from the text shifted by one, arr[1:], so the target of "
                    "the last column is the true next character."
                )
            elif np.array_equal(y, x):
                cause = (
                    "y is x itself: the target of each character is the one after it in the "
                    "text, so y is the text shifted by one."
                )
            elif np.array_equal(y, x - 1):
                cause = (
                    "y holds the character before each input, not the one after: shift the "
                    "other way."
                )
            else:
                cause = "y must hold the character that follows each character of x in the text."
            fail(
                name,
                f"y is not x shifted by one character: in batch {k}, row {r}, column {c}, "
                f"x is the character at position {int(x[r, c])}, so y should be the one at "
                f"position {true}, but it is the one at position {got} {where}",
                cause=cause,
            )
    if batches and int(batches[0][0][0, 0]) != 0:
        fail(
            name,
            f"the first batch starts at position {int(batches[0][0][0, 0])}; it should "
            f"start at the start of the text {where}",
        )
    for k in range(1, len(batches)):
        prev, x = batches[k - 1][0], batches[k][0]
        for r in range(batch_size):
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
    if len(batches) != n_expected:
        fail(
            name,
            f"yielded {len(batches)} batch{'es' * (len(batches) != 1)} {where}; the "
            f"text holds exactly {n_expected} full batch{'es' * (n_expected != 1)} (each "
            "needs batch_size * seq_length inputs, plus one more character for the last "
            "target)",
        )
    seen = np.concatenate([x.ravel() for x, _ in batches]) if batches else np.array([])
    if (
        len(np.unique(seen)) != len(seen)
        or len(seen)
        and seen.max() >= n_expected * (batch_size * seq_length)
    ):
        fail(
            name,
            f"the batches use some characters twice and skip others {where}; every "
            f"one of the first {n_expected * batch_size * seq_length} characters should be "
            "an input exactly once",
        )

    # The same layout for any text: the values are looked up, never computed from positions.
    values = rng.integers(0, 60, size=length).astype(np.int64)
    again = _collect(
        get_batches, values.copy(), batch_size, seq_length, n_expected + 5, {"arr": values}
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
    """Properties of ``get_batches`` on each ``(text length, batch_size, seq_length)`` case.

    Only full batches; ``y`` is ``x`` shifted by one with the true next character (never a
    wrapped-around one); row r of each batch continues row r of the batch before; the first
    batch starts at the start of the text; every possible full batch is yielded; and a text too
    short for one batch raises ``ValueError``.
    """
    rng = np.random.default_rng(seed)
    total = 0
    for length, batch_size, seq_length in cases:
        total += _check_one_layout(get_batches, length, batch_size, seq_length, rng)
    _check_too_short(get_batches, cases[0][1], cases[0][2])
    print(
        f"get_batches: OK, every property holds on {len(cases) + 1} cases ({total} batches "
        "examined)"
    )


# ------------------------------------------------------------------------------------ CharRNN


def _build(CharRNN, vocab_size, hidden_size, num_layers, dropout):
    name = "CharRNN"
    args = (
        f"CharRNN({vocab_size}, hidden_size={hidden_size}, num_layers={num_layers}, "
        f"dropout={dropout})"
    )
    model = call(
        name,
        CharRNN,
        vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
    )
    if not remote.is_module(model):
        fail(name, f"{args} should build an nn.Module, got {type(model).__name__}")
    lstm, fc = getattr(model, "lstm", None), getattr(model, "fc", None)
    if not isinstance(lstm, nn.LSTM) or not isinstance(fc, nn.Linear):
        fail(
            name,
            f"{args} needs the layers self.lstm (an nn.LSTM) and self.fc (an nn.Linear) "
            "under exactly those names, so the checkpoint shipped with the lesson loads",
        )
    expected = {
        "input_size": vocab_size,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "batch_first": True,
    }
    for attr, value in expected.items():
        if getattr(lstm, attr) != value:
            fail(
                name,
                f"{args}: self.lstm.{attr} is {getattr(lstm, attr)}, expected {value}",
                cause=(
                    "the input is one-hot, so the LSTM's input_size is vocab_size."
                    if attr == "input_size"
                    else None
                ),
            )
    if (fc.in_features, fc.out_features) != (hidden_size, vocab_size):
        fail(
            name,
            f"{args}: self.fc maps {fc.in_features} -> {fc.out_features} features, "
            f"expected hidden_size -> vocab_size = {hidden_size} -> {vocab_size}",
        )
    keys = set(model.state_dict())
    allowed = {f"lstm.{k}" for k in lstm.state_dict()} | {f"fc.{k}" for k in fc.state_dict()}
    if keys != allowed:
        fail(
            name,
            f"{args} has parameters beyond self.lstm and self.fc: "
            f"{sorted(keys - allowed)}; the lesson's model is one-hot -> LSTM -> dropout -> "
            "Linear, which is what the shipped checkpoint holds",
        )
    return model


def _check_hidden(name, hidden, num_layers, batch, hidden_size, what):
    if not isinstance(hidden, tuple) or len(hidden) != 2:
        fail(name, f"{what} should be a tuple (h, c), got {type(hidden).__name__}")
    for label, tensor in zip("hc", hidden, strict=True):
        if not isinstance(tensor, torch.Tensor):
            fail(name, f"{what}: {label} should be a tensor, got {type(tensor).__name__}")
        if tuple(tensor.shape) != (num_layers, batch, hidden_size):
            fail(
                name,
                f"{what}: {label} has shape {tuple(tensor.shape)}, expected "
                f"(num_layers, batch, hidden_size) = {(num_layers, batch, hidden_size)}",
                cause="PyTorch's LSTM state puts the layers first, even with batch_first=True."
                if tuple(tensor.shape) == (batch, num_layers, hidden_size)
                else None,
            )


def _frozen_cause(model, frozen) -> str:
    """Why some parameters get no gradient, from which ones they are."""
    names = [n for n, _ in model.named_parameters()]
    lstm = [n for n in names if n.startswith("lstm.")]
    fc = [n for n in names if n.startswith("fc.")]
    if set(lstm) <= set(frozen) and not set(fc) & set(frozen):
        return (
            "the LSTM's output is detached (or computed under torch.no_grad(), or through "
            "NumPy) before self.fc: the values are right, but no gradient reaches the LSTM, so "
            "it would never learn. Pass the LSTM's output to dropout and self.fc as it is."
        )
    if set(fc) <= set(frozen):
        return (
            "self.fc's weights take no part in the graph (detached, or the logits come from a "
            "copy of them): compute the logits with self.fc(...)."
        )
    layers = sorted({n.rsplit("_l", 1)[-1] for n in frozen if n.startswith("lstm.")})
    if layers:
        return (
            f"LSTM layer(s) {layers} are skipped or detached: run all num_layers layers inside "
            "the one self.lstm, on the graph."
        )
    return "a layer is unused, detached or computed outside autograd (e.g. through NumPy)."


def _check_char_rnn(CharRNN, *, cases, seed: int) -> None:
    """``CharRNN`` equals one-hot -> ``nn.LSTM`` -> ``nn.Linear`` on its own weights.

    ``cases`` holds ``(vocab_size, hidden_size, num_layers, batch, seq_length)``. Also checks
    ``init_hidden``, that the hidden state is used and returned, that dropout is applied in
    training mode only, and that every parameter receives a gradient.
    """
    name = "CharRNN"
    worst = 0.0
    for i, (vocab_size, hidden_size, num_layers, batch, seq) in enumerate(cases):
        remote.manual_seed(seed + i)
        model = _build(CharRNN, vocab_size, hidden_size, num_layers, 0.3)
        model.eval()
        hidden0 = call(name, model.init_hidden, batch)
        _check_hidden(name, hidden0, num_layers, batch, hidden_size, f"init_hidden({batch})")
        for label, tensor in zip("hc", hidden0, strict=True):
            if tensor.dtype != torch.float32 or bool(tensor.abs().max() != 0):
                fail(name, f"init_hidden({batch}): {label} should be float32 zeros")
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randint(0, vocab_size, (batch, seq), generator=g)
        hidden = tuple(
            torch.randn(num_layers, batch, hidden_size, generator=g) * 0.5 for _ in range(2)
        )
        inputs = {"x": x, "h": hidden[0], "c": hidden[1]}
        out = call(name, model, x, hidden, inputs=inputs)
        if not isinstance(out, tuple) or len(out) != 2:
            fail(
                name,
                f"forward should return a tuple (logits, hidden), got {type(out).__name__}",
                inputs,
            )
        logits, new_hidden = out
        with torch.no_grad():
            one_hot = nn.functional.one_hot(x, vocab_size).float()
            ref_out, ref_hidden = model.lstm(one_hot, hidden)
            expected = nn.functional.linear(ref_out, model.fc.weight, model.fc.bias)
            zero_out, _ = model.lstm(one_hot, tuple(torch.zeros_like(h) for h in hidden))
            from_zero = nn.functional.linear(zero_out, model.fc.weight, model.fc.bias)
        causes = [
            Cause(
                "a softmax was applied: return raw logits (CrossEntropyLoss and sampling "
                "apply the softmax themselves).",
                expected.softmax(-1),
            ),
            Cause("a log-softmax was applied: return raw logits.", expected.log_softmax(-1)),
            Cause(
                "the hidden state passed to forward is ignored: call self.lstm(..., hidden).",
                from_zero,
            ),
        ]
        worst = max(
            worst,
            assert_close(
                name,
                logits.detach() if isinstance(logits, torch.Tensor) else logits,
                expected,
                inputs=inputs,
                name="logits (batch, seq, vocab_size)",
                reference="one-hot -> torch.nn.LSTM -> torch.nn.Linear",
                atol=F32_ATOL,
                rtol=F32_RTOL,
                causes=causes,
            ),
        )
        _check_hidden(name, new_hidden, num_layers, batch, hidden_size, "the returned hidden")
        for label, got, ref in zip("hc", new_hidden, ref_hidden, strict=True):
            worst = max(
                worst,
                assert_close(
                    name,
                    got.detach(),
                    ref,
                    inputs=inputs,
                    name=f"returned {label}",
                    reference="torch.nn.LSTM's final state",
                    atol=F32_ATOL,
                    rtol=F32_RTOL,
                    causes=[
                        Cause(
                            "the input hidden state is returned unchanged: return the "
                            "LSTM's new (h, c).",
                            hidden[0 if label == "h" else 1],
                        )
                    ],
                ),
            )

        # Dropout: active in training mode, off in evaluation mode.
        model.train()
        a = call(name, model, x, hidden, inputs=inputs)[0]
        b = call(name, model, x, hidden, inputs=inputs)[0]
        if torch.equal(a, b):
            fail(
                name,
                "in training mode with dropout=0.3, two forward passes gave identical "
                "logits: dropout is not applied",
                inputs,
                "apply nn.Dropout(dropout) to the LSTM's output before self.fc.",
            )
        # Every parameter learns.
        found = gradient_report(model, x, hidden, train=False)
        if found["error"] is not None:
            fail(name, f"backward() through the logits raised RuntimeError: {found['error']}")
        if found["bent"]:
            fail(
                name,
                f"the gradients autograd gives for {found['bent']} do not match how the logits "
                "change when they move (checked against the logits' own values)",
                inputs,
                "something bends the gradient: an in-place change of a tensor autograd still "
                "needs, .data, or a custom autograd function.",
            )
        frozen = found["frozen"] + found["missing"]
        if frozen:
            fail(name, f"no gradient reaches {frozen}", inputs, _frozen_cause(model, frozen))
    report(name, len(cases), worst, "one-hot -> nn.LSTM -> nn.Linear")


# ------------------------------------------------------------------------------------- sample


class _CountingModel(nn.Module):
    """Predicts, with certainty, the character whose index is the number of characters read so
    far (mod vocab_size). It keeps that count in its hidden state, so the prediction is right
    only if the hidden state is carried from step to step."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = nn.Parameter(torch.zeros(1))

    def init_hidden(self, batch_size):
        zeros = torch.zeros(1, batch_size, 1, device=self.anchor.device)
        return (zeros, zeros.clone())

    def forward(self, x, hidden):
        h, c = hidden
        steps = torch.arange(1, x.shape[1] + 1, dtype=torch.float32, device=x.device)
        counts = h[0] + steps  # (batch, seq): characters read up to each position
        logits = torch.zeros(x.shape[0], x.shape[1], self.vocab_size, device=x.device)
        target = counts.long() % self.vocab_size
        logits.scatter_(2, target.unsqueeze(-1), 100.0)
        new_h = (h[0] + x.shape[1]).unsqueeze(0)
        return logits + 0 * self.anchor, (new_h, c)


class _FixedModel(nn.Module):
    """Gives the same logits at every position, whatever it reads; in training mode (as if its
    dropout were on) it gives them in reverse order, so sampling without ``model.eval()`` shows."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone(), requires_grad=False)

    def init_hidden(self, batch_size):
        zeros = torch.zeros(1, batch_size, 1, device=self.logits.device)
        return (zeros, zeros.clone())

    def forward(self, x, hidden):
        logits = self.logits.flip(-1) if self.training else self.logits
        return logits.expand(x.shape[0], x.shape[1], -1).clone(), hidden


def _call_sample(sample, model, vocab, prime, length, **kwargs):
    where = f"sample(model, vocab, prime={prime!r}, length={length})"
    text = call("sample", sample, model, vocab, prime, length, **kwargs)
    if not isinstance(text, str):
        fail("sample", f"{where} returned a {type(text).__name__}; return a str")
    unknown = sorted(set(text) - set(vocab.chars))
    if unknown:
        fail(
            "sample",
            f"{where} returned characters {unknown!r} that are not in the vocabulary",
            cause="turn the drawn indices back into text with vocab.decode.",
        )
    return text


def _frequencies(text: str, vocab: Vocab) -> np.ndarray:
    counts = np.zeros(len(vocab))
    for ch in text:
        counts[vocab.chars.index(ch)] += 1
    return counts / max(len(text), 1)


def _check_sample(sample, *, n_draws: int, seed: int) -> None:
    """Properties of ``sample(model, vocab, prime, length, temperature, top_k, generator)``.

    Uses stand-in models: one whose prediction is certain and depends on the hidden state (the
    state must be carried), one with fixed logits (the sampled frequencies must follow
    ``softmax(logits / temperature)`` restricted to the ``top_k`` largest).
    """
    name = "sample"
    vocab = Vocab("abcdef")
    counting = _CountingModel(len(vocab))
    for prime, length in (("a", 12), ("fed", 7), ("b", 0)):
        where = f"sample(model, vocab, prime={prime!r}, length={length})"
        text = _call_sample(
            sample, counting, vocab, prime, length, generator=torch.Generator().manual_seed(seed)
        )
        expected = prime + "".join(
            vocab.chars[(len(prime) + i) % len(vocab)] for i in range(length)
        )
        if not text.startswith(prime) or len(text) != len(prime) + length:
            cause = None
            if length and text == expected[len(prime) :]:
                cause = "the prime is missing: return the prime followed by the new characters."
            elif len(text) == len(prime) + length + 1:
                cause = "one character too many: draw exactly `length` characters."
            elif len(text) == len(prime) + length - 1:
                cause = "one character too few: draw exactly `length` characters."
            fail(
                name,
                f"{where} returned {text!r} ({len(text)} characters); expected the prime "
                f"followed by {length} new characters ({len(prime) + length} in all)",
                cause=cause,
            )
        if text != expected:
            cause = None
            if len(set(text[len(prime) :])) <= 1 and length > 1:
                cause = (
                    "the hidden state is not carried from one step to the next: pass the "
                    "hidden state returned by each call into the next call."
                )
            fail(
                name,
                f"{where} with a model that is certain of every next character gave "
                f"{text!r}, expected {expected!r}",
                cause=cause,
            )

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.5])
    fixed = _FixedModel(logits)
    for temperature, top_k in ((1.0, None), (0.5, None), (2.0, None), (1.0, 3), (0.7, 2)):
        where = f"sample(temperature={temperature}, top_k={top_k})"
        text = _call_sample(
            sample,
            fixed,
            vocab,
            "a",
            n_draws,
            temperature=temperature,
            top_k=top_k,
            generator=torch.Generator().manual_seed(seed + 7),
        )
        freq = _frequencies(text[1:], vocab)

        def target(scale, k=top_k, logits=logits):
            z = logits / scale
            if k is not None:
                z = torch.where(z >= torch.topk(z, k).values[-1], z, torch.tensor(-float("inf")))
            return z.softmax(-1).numpy()

        expected = target(temperature)
        gap = 0.5 * np.abs(freq - expected).sum()
        if top_k is not None and freq[expected == 0].sum() > 0:
            outside = "".join(
                c for c, f, e in zip(vocab.chars, freq, expected, strict=True) if f > 0 and e == 0
            )
            fail(
                name,
                f"{where} drew characters {outside!r} that are not among the {top_k} most likely",
                cause="keep only the top_k largest logits (torch.topk) and "
                "set the others to -inf before the softmax.",
            )
        if gap > 0.08:
            cause = None
            top = int(torch.argmax(logits))
            if freq[top] == 1.0:
                cause = (
                    "every draw is the most likely character (an argmax): draw at random, with "
                    "torch.multinomial(probabilities, 1, generator=generator)."
                )
            elif 0.5 * np.abs(freq - target(temperature, logits=logits.flip(-1))).sum() < 0.08:
                cause = (
                    "the model was left in training mode (where the lesson's model applies "
                    "dropout): call model.eval() before sampling."
                )
            elif temperature != 1.0 and 0.5 * np.abs(freq - target(1.0)).sum() < 0.08:
                cause = "the temperature is ignored: divide the logits by it before the softmax."
            elif temperature != 1.0 and 0.5 * np.abs(freq - target(1 / temperature)).sum() < 0.08:
                cause = "the logits were multiplied by the temperature; divide them by it."
            elif top_k is not None and 0.5 * np.abs(freq - target(temperature, None)).sum() < 0.08:
                cause = "top_k is ignored."
            shown = ", ".join(
                f"{c}: {f:.2f} vs {e:.2f}"
                for c, f, e in zip(vocab.chars, freq, expected, strict=True)
            )
            fail(
                name,
                f"{where}: over {n_draws} draws from fixed logits {logits.tolist()}, the "
                f"characters' frequencies are far from softmax(logits / temperature) "
                f"(total variation {gap:.3f}; drawn vs expected: {shown})",
                cause=cause,
            )

    runs = [
        _call_sample(sample, fixed, vocab, "ab", 40, generator=torch.Generator().manual_seed(s))
        for s in (seed + 1, seed + 1, seed + 2)
    ]
    if runs[0] != runs[1]:
        fail(
            name,
            "two calls with generators seeded alike gave different texts:\n"
            f"  {runs[0]!r}\n  {runs[1]!r}",
            cause="pass generator=generator to torch.multinomial, so the draws come from it.",
        )
    if runs[0] == runs[2]:
        fail(
            name,
            "generators seeded differently gave the same 40 characters; draw at random "
            "with torch.multinomial(probabilities, 1, generator=generator)",
        )

    for bad_prime in ("aXb", "z"):
        where = f"sample(model, vocab, prime={bad_prime!r}, length=5) with vocabulary 'abcdef'"
        try:
            sample(fixed, vocab, bad_prime, 5, generator=torch.Generator().manual_seed(0))
        except ValueError:
            continue
        except NotImplementedError:
            fail(name, "not implemented yet: replace `raise NotImplementedError()` with your code.")
        except Exception as exc:
            fail(
                name,
                f"{where} raised {type(exc).__name__}: {exc}; it should raise ValueError",
                cause="encode the prime with vocab.encode, which raises ValueError naming the "
                "unknown characters.",
            )
        fail(
            name,
            f"{where} did not raise; it should raise ValueError (the model cannot read "
            "characters outside its vocabulary)",
        )
    on_gpu = _check_sample_on_cuda(sample, vocab, seed)
    print(
        "sample: OK, every property holds on 11 cases (prime, length, carried state, "
        "evaluation mode, temperature, top_k, seeded generator, unknown characters)"
        + (", and on a model on the GPU with the generator on the CPU" if on_gpu else "")
    )
    if not on_gpu:
        print(
            "sample: note: no CUDA device here, so the case with the model on a GPU and the "
            "generator on the CPU did not run (it runs wherever CUDA is present); on a CPU "
            "alone, model and generator cannot be on different devices."
        )


# ------------------------------------------------------------------- unigram_loss, bigram_loss

_LOSS_ATOL = 1e-6
_LOSS_RTOL = 1e-5


def _markov_text(rng, n: int, used: int) -> np.ndarray:
    """``n`` indices in ``[0, used)`` from a random Markov chain (so a bigram beats a unigram)."""
    cumulative = np.cumsum(rng.dirichlet(np.full(used, 0.4), size=used), axis=1)
    draws = rng.random(n)
    out = np.empty(n, dtype=np.int64)
    state = int(rng.integers(0, used))
    for t in range(n):
        state = min(int(np.searchsorted(cumulative[state], draws[t])), used - 1)
        out[t] = state
    return out


def _baseline_texts(rng, n_train: int, n_val: int, vocab_size: int):
    """Training and validation texts of a synthetic language.

    The last index of the vocabulary never occurs in the training text; it occurs once in the
    middle of the validation text (when it has at least 2 characters), so an estimate without
    smoothing gives that character probability 0.
    """
    used = vocab_size - 1
    text = _markov_text(rng, n_train + n_val, used)
    train, val = text[:n_train].copy(), text[n_train:].copy()
    if n_val >= 2:
        val[n_val // 2] = vocab_size - 1
    return train, val


def _nll(probabilities: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(-np.log(probabilities).mean())


def _unigram_reference(train, val, vocab_size) -> float:
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    return _nll((counts[val] + 1.0) / (len(train) + vocab_size))


def _pair_counts(train, vocab_size) -> np.ndarray:
    pairs = train[:-1] * vocab_size + train[1:]
    return np.bincount(pairs, minlength=vocab_size * vocab_size).reshape(vocab_size, vocab_size)


def _bigram_reference(train, val, vocab_size, alpha) -> float:
    counts = _pair_counts(train, vocab_size).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    table = (counts + alpha) / (rows + alpha * vocab_size)
    return _nll(table[val[:-1], val[1:]])


def _unigram_causes(train, val, vocab_size) -> list[tuple[str, float]]:
    ref = _unigram_reference(train, val, vocab_size)
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    both = np.bincount(np.concatenate([train, val]), minlength=vocab_size).astype(np.float64)
    seen = len(np.unique(train))
    p = (counts + 1.0) / (len(train) + vocab_size)
    return [
        (
            "no add-one smoothing: a character's probability is (count + 1) / (len(train_ids) "
            "+ vocab_size), so that a character the training text never shows still gets a "
            "small probability.",
            _nll(counts[val] / len(train)),
        ),
        (
            "the +1 is in the numerator only: the denominator needs + vocab_size too, or the "
            "probabilities do not sum to 1.",
            _nll((counts[val] + 1.0) / len(train)),
        ),
        (
            "the denominator uses the number of distinct characters seen in training instead of "
            "vocab_size: every character of the vocabulary gets the +1.",
            _nll((counts[val] + 1.0) / (len(train) + seen)),
        ),
        ("that is in bits (log base 2): the loss is in nats, the natural log (np.log).", ref / LN2),
        (
            "the validation text was counted too: count only train_ids; the validation text is "
            "what the estimate is scored on, never what it learns from.",
            _nll((both[val] + 1.0) / (len(train) + len(val) + vocab_size)),
        ),
        (
            "that is the bigram's loss: the unigram ignores the previous character and uses one "
            "probability per character.",
            _bigram_reference(train, val, vocab_size, 1.0) if len(val) >= 2 else float("nan"),
        ),
        (
            "the sum over the validation text: return the mean (divide by len(val_ids)).",
            ref * len(val),
        ),
        ("the sign is wrong: the loss is minus the mean log-probability.", -ref),
        ("that is the perplexity, exp(loss): return the loss itself.", math.exp(ref)),
        (
            "that is the entropy of the training distribution, -sum(p * log p): the loss "
            "averages -log p over the characters of the validation text.",
            float(-(p * np.log(p)).sum()),
        ),
    ]


def _bigram_causes(train, val, vocab_size, alpha) -> list[tuple[str, float]]:
    ref = _bigram_reference(train, val, vocab_size, alpha)
    counts = _pair_counts(train, vocab_size).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    table = (counts + alpha) / (rows + alpha * vocab_size)
    columns = (counts + alpha) / (counts.sum(axis=0, keepdims=True) + alpha * vocab_size)
    singles = np.bincount(train, minlength=vocab_size).astype(np.float64)[:, None]
    every = np.concatenate([train, val])
    unigram = (np.bincount(train, minlength=vocab_size) + 1.0) / (len(train) + vocab_size)
    causes = [
        (
            "no smoothing: add alpha to every pair count and alpha * vocab_size to each row's "
            "total, so a pair the training text never shows still gets a small probability.",
            _nll((counts / np.maximum(rows, 1))[val[:-1], val[1:]]),
        ),
        (
            "normalised over the wrong axis: row a of the table is the distribution of the "
            "character that follows a, so divide each row by its own total (axis=1).",
            _nll(columns[val[:-1], val[1:]]),
        ),
        (
            "the pair order is reversed: score P(val_ids[t] | val_ids[t - 1]), with the previous "
            "character as the row and the next one as the column.",
            _nll(table[val[1:], val[:-1]]),
        ),
        (
            "alpha is in the numerator only: add alpha * vocab_size to the denominator, so each "
            "row sums to 1.",
            _nll(((counts + alpha) / np.maximum(rows, 1))[val[:-1], val[1:]]),
        ),
        (
            "the denominator counts every occurrence of the previous character, including the "
            "last training character, which starts no pair: use the row totals of the pair "
            "counts.",
            _nll(((counts + alpha) / (singles + alpha * vocab_size))[val[:-1], val[1:]]),
        ),
        ("that is in bits (log base 2): the loss is in nats, the natural log (np.log).", ref / LN2),
        (
            "the validation text was counted too: count pairs of train_ids only; the validation "
            "text is what the estimate is scored on, never what it learns from.",
            _nll(
                (
                    (_pair_counts(every, vocab_size) + alpha)
                    / (_pair_counts(every, vocab_size).sum(1, keepdims=True) + alpha * vocab_size)
                )[val[:-1], val[1:]]
            ),
        ),
        (
            "that is the unigram's loss: the bigram's probability depends on the previous "
            "character.",
            _unigram_reference(train, val, vocab_size),
        ),
        (
            "the first validation character was scored from the last training character: score "
            "only the len(val_ids) - 1 pairs inside the validation text.",
            _nll(table[np.r_[train[-1:], val[:-1]], np.r_[val[:1], val[1:]]])
            if len(train)
            else float("nan"),
        ),
        (
            "the first validation character was scored with the unigram: score only the "
            "len(val_ids) - 1 pairs inside the validation text.",
            _nll(np.r_[unigram[val[:1]], table[val[:-1], val[1:]]]),
        ),
        ("the sum over the pairs: return the mean.", ref * (len(val) - 1)),
        ("the sign is wrong: the loss is minus the mean log-probability.", -ref),
        ("that is the perplexity, exp(loss): return the loss itself.", math.exp(ref)),
    ]
    if alpha != 1.0:
        causes.insert(
            0,
            (
                f"alpha is ignored: this case has alpha={alpha}, and the answer equals the one "
                "for alpha=1. Use the alpha argument.",
                _bigram_reference(train, val, vocab_size, 1.0),
            ),
        )
    return causes


def _close_float(got: float, expected: float) -> bool:
    return abs(got - expected) <= _LOSS_ATOL + _LOSS_RTOL * abs(expected)


def _judge_loss(name, got, expected, where, inputs, causes) -> None:
    """``got`` must be a finite number equal to ``expected``; name the mistake it matches."""
    if isinstance(got, torch.Tensor):
        fail(
            name,
            f"{where} returned a torch.Tensor; return a Python float",
            inputs,
            "float(loss) (or loss.item()) turns a 0-d tensor into a float.",
        )
    if isinstance(got, bool) or not isinstance(got, int | float | np.integer | np.floating):
        fail(
            name,
            f"{where} returned a {type(got).__name__}; return a float (nats per character)",
            inputs,
        )
    got = float(got)
    smoothing = next(m for m, _ in causes if "smoothing" in m)
    if math.isnan(got):
        if name == "unigram_loss" and len(inputs["val_ids"]) < 2:
            cause = (
                "that looks like the bigram's loss, a mean over pairs of characters: with one "
                "held-out character there is no pair, and the mean over no pairs is nan. The "
                "unigram scores every validation character on its own."
            )
        else:
            cause = (
                "0 / 0 for a character that never occurs in the training text (its count and "
                "total are both 0). " + smoothing[0].upper() + smoothing[1:]
            )
        fail(name, f"{where} returned nan", inputs, cause)
    if math.isinf(got):
        fail(
            name,
            f"{where} returned {got}: some validation character got probability 0",
            inputs,
            smoothing,
        )
    if _close_float(got, expected):
        return
    cause = next((m for m, out in causes if math.isfinite(out) and _close_float(got, out)), None)
    fail(
        name,
        f"{where} returned {got:.6g} nats/char, off by {abs(got - expected) / abs(expected):.2g} "
        "relative to the loss of the counts of the training text (np.bincount)",
        inputs,
        cause,
    )


def _call_loss(name, fn, train, val, vocab_size, **kwargs):
    inputs = {"train_ids": train, "val_ids": val}
    before = (train.copy(), val.copy())
    try:
        got = call(name, fn, train, val, vocab_size, inputs=inputs, expect=(IndexError,), **kwargs)
    except IndexError as exc:
        fail(
            name,
            f"raised IndexError: {exc}",
            inputs,
            "the last character of the vocabulary never occurs in this training text, so "
            "np.bincount(train_ids) is shorter than vocab_size: pass minlength=vocab_size "
            "(and index tables of vocab_size rows).",
        )
    if not (np.array_equal(train, before[0]) and np.array_equal(val, before[1])):
        fail(name, "changed train_ids or val_ids in place; compute new arrays instead", inputs)
    return got


def _check_unigram_loss(unigram_loss, *, cases, seed: int) -> None:
    """``unigram_loss(train_ids, val_ids, vocab_size)`` equals add-one counts (``np.bincount``).

    ``cases`` holds ``(n_train, n_val, vocab_size)``; the texts come from a random Markov chain
    in which the vocabulary's last character never occurs in training (see ``_baseline_texts``).
    """
    name = "unigram_loss"
    rng = np.random.default_rng(seed)
    for n_train, n_val, vocab_size in cases:
        train, val = _baseline_texts(rng, n_train, n_val, vocab_size)
        where = (
            f"unigram_loss(train_ids of {n_train} characters, val_ids of {n_val}, "
            f"vocab_size={vocab_size})"
        )
        got = _call_loss(name, unigram_loss, train, val, vocab_size)
        expected = _unigram_reference(train, val, vocab_size)
        _judge_loss(
            name,
            got,
            expected,
            where,
            {"train_ids": train, "val_ids": val},
            _unigram_causes(train, val, vocab_size),
        )
    report(name, len(cases), None, "add-one counts from np.bincount")


def _check_bigram_loss(bigram_loss, *, cases, seed: int) -> None:
    """``bigram_loss(train_ids, val_ids, vocab_size, alpha)`` equals add-alpha pair counts.

    ``cases`` holds ``(n_train, n_val, vocab_size, alpha)``. The first validation character is
    not scored: the mean runs over the ``len(val_ids) - 1`` pairs of the validation text.
    """
    name = "bigram_loss"
    rng = np.random.default_rng(seed)
    for n_train, n_val, vocab_size, alpha in cases:
        train, val = _baseline_texts(rng, n_train, n_val, vocab_size)
        where = (
            f"bigram_loss(train_ids of {n_train} characters, val_ids of {n_val}, "
            f"vocab_size={vocab_size}, alpha={alpha})"
        )
        got = _call_loss(name, bigram_loss, train, val, vocab_size, alpha=alpha)
        expected = _bigram_reference(train, val, vocab_size, alpha)
        _judge_loss(
            name,
            got,
            expected,
            where,
            {"train_ids": train, "val_ids": val},
            _bigram_causes(train, val, vocab_size, alpha),
        )
    report(name, len(cases), None, "add-alpha pair counts from np.bincount")


# --------------------------------------------------------------------------------- train_step


class _StandInLM(nn.Module):
    """one-hot -> ``nn.LSTM`` -> ``nn.Linear``, without dropout: a small character model with
    the lesson's interface and an ``(h, c)`` state."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, vocab_size)

    def init_hidden(self, batch_size):
        h = torch.zeros(self.num_layers, batch_size, self.hidden_size)
        return h, torch.zeros_like(h)

    def forward(self, x, hidden):
        output, hidden = self.lstm(nn.functional.one_hot(x, self.vocab_size).float(), hidden)
        return self.fc(output), hidden


class _CountingSGD:
    """Plain SGD (``p -= lr * p.grad``) with the interface of a ``torch.optim`` optimiser; it
    counts its ``step`` calls."""

    def __init__(self, params, lr: float):
        self.param_groups = [{"params": list(params), "lr": lr}]
        self.state: dict = {}
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        lr = self.param_groups[0]["lr"]
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                p.sub_(lr * p.grad)


_LR = 0.5


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in tensors])


def _reference_step(model, x, y, hidden):
    """The batch's loss, the LSTM's new state and the gradient of every parameter, computed on a
    copy of ``model`` (its parameters are not touched)."""
    twin = copy.deepcopy(model)
    logits, new_hidden = twin(x, hidden)
    flat_logits, flat_y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    loss = nn.functional.cross_entropy(flat_logits, flat_y)
    grads = torch.autograd.grad(loss, list(twin.parameters()))
    with torch.no_grad():
        losses = {
            "value": loss.item(),
            "sum": nn.functional.cross_entropy(flat_logits, flat_y, reduction="sum").item(),
            "last": nn.functional.cross_entropy(logits[:, -1], y[:, -1]).item(),
            "softmax": nn.functional.cross_entropy(flat_logits.softmax(-1), flat_y).item(),
        }
    return losses, tuple(h.detach() for h in new_hidden), list(grads)


def _loss_of(model, x, y, hidden, update: torch.Tensor | None = None) -> float:
    """The batch's loss on a copy of ``model``, its parameters first moved by ``-lr * update``."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        if update is not None:
            offset = 0
            for p in twin.parameters():
                n = p.numel()
                p.sub_((_LR * update[offset : offset + n]).view_as(p).to(p.dtype))
                offset += n
        logits, _ = twin(x, hidden)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        ).item()


def _applied(grads, clip_norm: float) -> torch.Tensor:
    """What ``clip_grad_norm_`` followed by a step applies: the gradients, scaled so their global
    norm is at most ``clip_norm``."""
    flat = _flat(grads)
    norm = float(flat.norm())
    return flat * min(1.0, clip_norm / (norm + 1e-6))


def _call_train_step(train_step, model, optimizer, x, y, hidden, clip_norm, inputs):
    name = "train_step"
    try:
        out = call(
            name,
            train_step,
            model,
            optimizer,
            x,
            y,
            hidden,
            clip_norm,
            inputs=inputs,
            expect=(AttributeError, RuntimeError, ValueError),
        )
    except AttributeError as exc:
        cause = None
        if "tuple" in str(exc) and "detach" in str(exc):
            cause = "an LSTM's state is a tuple (h, c): detach each of its tensors."
        fail(name, f"raised AttributeError: {exc}", inputs, cause)
    except (RuntimeError, ValueError) as exc:
        text = str(exc)
        cause = None
        if "backward through the graph a second time" in text:
            cause = "backward() ran twice on one graph: call loss.backward() once per step."
        elif "does not require grad" in text:
            cause = "the loss has no graph: compute it from the model's logits, with autograd on."
        elif "target size" in text or "batch_size" in text:
            cause = (
                "cross_entropy wants (N, vocab_size) logits and (N,) targets: flatten the "
                "batch and sequence dimensions of both."
            )
        fail(name, f"raised {type(exc).__name__}: {text[:300]}", inputs, cause)
    if not isinstance(out, tuple | list) or len(out) != 2:
        fail(name, f"should return a pair (loss, hidden), got {type(out).__name__}", inputs)
    return out


def _judge_step_loss(loss, losses, case, inputs) -> None:
    """``case``: ``(model, x, y, hidden, update)``, to compute the loss of the usual mistakes
    (from a zero state, after the step) when the loss is wrong."""
    name = "train_step"
    if isinstance(loss, torch.Tensor):
        fail(
            name,
            "returned the loss as a torch.Tensor; return it as a Python float",
            inputs,
            "loss.item() gives the float (and lets the tensor's graph be freed).",
        )
    if isinstance(loss, bool) or not isinstance(loss, int | float | np.floating):
        fail(name, f"returned the loss as a {type(loss).__name__}; return a float", inputs)
    got, expected = float(loss), losses["value"]
    if abs(got - expected) <= F32_ATOL + F32_RTOL * abs(expected):
        return
    model, x, y, hidden, update = case
    from_zero = _loss_of(model, x, y, tuple(torch.zeros_like(h) for h in hidden))
    after_step = _loss_of(model, x, y, hidden, update)
    candidates = [
        (
            losses["sum"],
            "the loss is summed over the positions: use the mean (cross_entropy's "
            "default reduction).",
        ),
        (
            losses["last"],
            "only the last position is scored: the loss runs over every position "
            "of the batch (flatten (batch, seq, vocab) logits to (batch * seq, vocab)).",
        ),
        (
            losses["softmax"],
            "a softmax was applied before cross_entropy, which applies the "
            "log-softmax itself: give it the raw logits.",
        ),
        (
            from_zero,
            "the hidden state passed in is ignored (the model started from zeros): "
            "call model(x, hidden).",
        ),
        (
            after_step,
            "the loss was computed after the step (a second forward pass): return the "
            "loss of the forward pass the gradients came from.",
        ),
    ]
    cause = next((m for v, m in candidates if abs(got - v) <= F32_ATOL + F32_RTOL * abs(v)), None)
    fail(
        name,
        f"returned loss {got:.6g}, but the cross-entropy of the model's logits on this batch "
        f"(torch.nn.functional.cross_entropy, mean over every position) is {expected:.6g}",
        inputs,
        cause,
    )


def _judge_step_hidden(new_hidden, expected, given, inputs) -> None:
    name = "train_step"
    if not isinstance(new_hidden, tuple | list) or len(new_hidden) != 2:
        fail(
            name,
            f"returned the hidden state as a {type(new_hidden).__name__}; return the LSTM's "
            "new state (h, c), a pair of tensors",
            inputs,
        )
    for label, got, ref, old in zip("hc", new_hidden, expected, given, strict=True):
        if isinstance(got, torch.Tensor) and (got.requires_grad or got.grad_fn is not None):
            fail(
                name,
                f"the returned {label} is still attached to the graph of this batch "
                f"(requires_grad={got.requires_grad})",
                inputs,
                "detach the new state before returning it (truncated back-propagation "
                "through time): the next batch starts from its values, and its gradients stop "
                "there.",
            )
        assert_close(
            name,
            got,
            ref,
            inputs=inputs,
            name=f"the returned {label}",
            reference="the LSTM's new state after this batch",
            atol=F32_ATOL,
            rtol=F32_RTOL,
            causes=[
                Cause("the state passed in is returned: return the one the model gives back.", old)
            ],
        )


def _judge_update(got, expected, grads, clip_norm, model, inputs, call_text) -> None:
    """``got``: what the parameters moved by, divided by the learning rate (flat, float64)."""
    name = "train_step"
    close = (got - expected).abs() <= 1e-5 + 1e-4 * expected.abs()
    if bool(close.all()):
        return
    flat = _flat(grads)
    per_parameter = torch.cat(
        [g.double().reshape(-1) * min(1.0, clip_norm / (float(g.norm()) + 1e-6)) for g in grads]
    )
    left = [p.grad for p in model.parameters()]
    clipped_grads = all(g is not None for g in left) and bool(
        ((_flat(left) - expected).abs() <= 1e-5 + 1e-4 * expected.abs()).all()
    )
    cause = None

    def near(value):
        return bool(((got - value).abs() <= 1e-5 + 1e-4 * value.abs()).all())

    if bool((got == 0).all()):
        cause = (
            "the parameters did not move: zero the gradients before loss.backward(), not "
            "between backward() and step()."
        )
    elif near(flat) and clipped_grads:
        cause = (
            "the gradients were clipped after optimizer.step(): clip between loss.backward() "
            "and optimizer.step(), so the step uses the clipped gradients."
        )
    elif near(flat):
        cause = (
            f"clip_norm={clip_norm:g} is not applied: after loss.backward() and before "
            "optimizer.step(), scale the gradients so their global norm is at most clip_norm "
            "(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm), or your lesson-01 "
            "clip_grad_norm)."
        )
    elif near(flat.clamp(-clip_norm, clip_norm)):
        cause = (
            "each gradient value was clamped to [-clip_norm, clip_norm] (clip_grad_value_): "
            "clip the global L2 norm of all the gradients together (clip_grad_norm_)."
        )
    elif near(per_parameter):
        cause = (
            "each parameter's gradient was clipped on its own: clip the global norm of all "
            "the gradients together, in one call on model.parameters()."
        )
    k = int((~close).nonzero()[0, 0])
    fail(
        name,
        f"{call_text}: the parameters moved by the wrong amount. Entry {k} of the update "
        f"(all parameters flattened, divided by the learning rate) is {float(got[k]):.6g}, "
        f"expected {float(expected[k]):.6g}: the gradient of this batch's loss, its global "
        f"norm {float(flat.norm()):.4g} clipped to at most clip_norm={clip_norm:g}",
        inputs,
        cause,
    )


def _check_train_step(train_step, *, cases, seed: int) -> None:
    """One truncated-BPTT update, judged by what it does to a model and a counting optimiser.

    ``cases`` holds ``(vocab_size, hidden_size, num_layers, batch, seq_length)``. For each, on
    a stand-in LSTM model and plain SGD: the returned loss equals ``cross_entropy`` of the
    batch (computed here on a copy of the model), the returned ``(h, c)`` equals the LSTM's new
    state and is detached, ``optimizer.step`` runs exactly once, the parameters move by the
    gradient clipped to a global norm of ``clip_norm`` (tried with a clip far above the
    gradient's norm and one far below it), and a second call does not add the first call's
    gradients to its own.
    """
    # Tiny tensors gain nothing from several threads, and on a busy machine they lose a lot.
    with cpu_threads(1):
        _train_step_cases(train_step, cases, seed)
    print(
        f"train_step: OK on {len(cases)} cases (loss = cross_entropy of the batch, state "
        "detached, one optimizer step, gradient clipped to clip_norm before it, no "
        "accumulation across calls)"
    )


def _train_step_cases(train_step, cases, seed: int) -> None:
    name = "train_step"
    for i, (vocab_size, hidden_size, num_layers, batch, seq) in enumerate(cases):
        remote.manual_seed(seed + i)
        base = _StandInLM(vocab_size, hidden_size, num_layers)
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randint(0, vocab_size, (batch, seq), generator=g)
        y = torch.randint(0, vocab_size, (batch, seq), generator=g)
        hidden = tuple(
            torch.randn(num_layers, batch, hidden_size, generator=g) * 0.5 for _ in range(2)
        )
        inputs = {"x": x, "y": y, "h": hidden[0], "c": hidden[1]}
        losses, new_hidden, grads = _reference_step(base, x, y, hidden)
        norm = float(_flat(grads).norm())
        for clip_norm in (1e6, round(norm / 4, 6)):
            model = copy.deepcopy(base)
            optimizer = _CountingSGD(model.parameters(), lr=_LR)
            before = _flat(model.parameters())
            call_text = f"train_step(model, optimizer, x, y, hidden, clip_norm={clip_norm:g})"
            loss, got_hidden = _call_train_step(
                train_step, model, optimizer, x, y, hidden, clip_norm, inputs
            )
            expected = _applied(grads, clip_norm)
            _judge_step_loss(loss, losses, (base, x, y, hidden, expected), inputs)
            _judge_step_hidden(got_hidden, new_hidden, hidden, inputs)
            if optimizer.steps != 1:
                fail(
                    name,
                    f"{call_text} called optimizer.step() {optimizer.steps} times; one "
                    "update per batch means exactly one call",
                    inputs,
                    "call optimizer.step() once, after loss.backward() and the clipping."
                    if optimizer.steps == 0
                    else None,
                )
            moved = (before - _flat(model.parameters())) / _LR
            _judge_update(moved, expected, grads, clip_norm, model, inputs, call_text)

        # A second call, carrying the returned state: its update is its own gradient only.
        x2 = torch.randint(0, vocab_size, (batch, seq), generator=g)
        y2 = torch.randint(0, vocab_size, (batch, seq), generator=g)
        state = tuple(got_hidden)
        _, _, grads2 = _reference_step(model, x2, y2, state)
        optimizer.steps = 0
        before = _flat(model.parameters())
        left = [
            torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()
        ]
        _call_train_step(train_step, model, optimizer, x2, y2, state, clip_norm, inputs)
        moved = (before - _flat(model.parameters())) / _LR
        expected2 = _applied(grads2, clip_norm)
        close = (moved - expected2).abs() <= 1e-5 + 1e-4 * expected2.abs()
        if not bool(close.all()):
            summed = _applied([a + b for a, b in zip(left, grads2, strict=True)], clip_norm)
            both = bool(((moved - summed).abs() <= 1e-5 + 1e-4 * summed.abs()).all())
            fail(
                name,
                "on a second call (the next batch, with the state the first call returned), "
                "the parameters did not move by that batch's clipped gradient",
                inputs,
                "the gradients of the first call were added to those of the second: zero "
                "them (optimizer.zero_grad()) before loss.backward()."
                if both
                else None,
            )


def _check_sample_on_cuda(sample, vocab: Vocab, seed: int) -> bool:
    """``sample`` on stand-in models on the GPU, with a CPU generator; False without CUDA.

    ``torch.multinomial`` wants a generator of its input's device: the probabilities must be
    moved to the CPU, where the generator lives, before the draw.
    """
    if not torch.cuda.is_available():
        return False
    _check_sample_on_device(sample, vocab, seed, torch.device("cuda"))
    return True


def _check_sample_on_device(sample, vocab: Vocab, seed: int, device: torch.device) -> None:
    """The stand-in models on ``device``, the generator on the CPU (``device`` is a parameter so
    that the tests can run this code on a machine without CUDA, where it proves less)."""
    name = "sample"
    counting = _CountingModel(len(vocab)).to(device)
    prime, length = "ab", 9
    where = (
        f"sample(model on {device}, vocab, prime={prime!r}, length={length}, generator on the CPU)"
    )
    try:
        text = call(
            name,
            sample,
            counting,
            vocab,
            prime,
            length,
            generator=torch.Generator().manual_seed(seed),
            expect=(RuntimeError,),
        )
    except RuntimeError as exc:
        message = str(exc)
        cause = None
        if "generator" in message.lower():
            cause = (
                "torch.multinomial got the probabilities on the GPU and the generator on the "
                "CPU: move the probabilities to the CPU (probabilities.cpu()) and draw there, "
                "then put the drawn index on the model's device for the next step."
            )
        elif "device" in message:
            cause = (
                "a tensor is on the CPU while the model is on the GPU: put the prime's indices "
                "and each drawn index on the model's device (next(model.parameters()).device)."
            )
        fail(name, f"{where} raised RuntimeError: {message[:300]}", cause=cause)
    expected = prime + "".join(vocab.chars[(len(prime) + i) % len(vocab)] for i in range(length))
    if not isinstance(text, str) or text != expected:
        fail(
            name,
            f"{where} with a model that is certain of every next character gave "
            f"{text!r}, expected {expected!r} (on the CPU it gives the right text)",
        )
    fixed = _FixedModel(torch.tensor([1.5, 1.0, 0.5, 0.0, -0.5, -1.0])).to(device)
    runs = [
        _call_sample(sample, fixed, vocab, "ab", 40, generator=torch.Generator().manual_seed(seed))
        for _ in range(2)
    ]
    if runs[0] != runs[1]:
        fail(
            name,
            f"on a model on {device}, two calls with CPU generators seeded alike gave "
            f"different texts:\n  {runs[0]!r}\n  {runs[1]!r}",
            cause="draw on the CPU with the generator you are given.",
        )


#: Every exercise of the lesson, with its visible and hidden cases: the notebook's test cells,
#: the autograder and ``make check`` all run these.
EXERCISES = exercise_table(
    Exercise(
        "one_hot_encode",
        "check_one_hot_encode",
        _check_one_hot_encode,
        reads=("one_hot_encode",),
        visible={"cases": (((3,), 4), ((2, 5), 7)), "seed": 0},
        hidden={"cases": (((1,), 1), ((3, 2, 4), 65), ((6,), 10)), "seed": 99},
    ),
    Exercise(
        "get_batches",
        "check_get_batches",
        _check_get_batches,
        reads=("get_batches",),
        visible={"cases": ((13, 2, 3), (100, 4, 5), (61, 3, 4)), "seed": 0},
        hidden={"cases": ((25, 4, 6), (1000, 8, 16), (7, 1, 6), (64, 1, 1)), "seed": 7},
    ),
    Exercise(
        "CharRNN",
        "check_char_rnn",
        _check_char_rnn,
        reads=("CharRNN",),
        visible={"cases": ((7, 16, 1, 3, 5), (11, 8, 2, 2, 4)), "seed": 0},
        hidden={"cases": ((3, 4, 3, 1, 1), (65, 32, 1, 4, 7), (5, 6, 2, 1, 9)), "seed": 21},
    ),
    Exercise(
        "sample",
        "check_sample",
        _check_sample,
        reads=("sample",),
        visible={"n_draws": 1000, "seed": 0},
        hidden={"n_draws": 1500, "seed": 11},
    ),
    Exercise(
        "unigram_loss",
        "check_unigram_loss",
        _check_unigram_loss,
        reads=("unigram_loss",),
        visible={"cases": ((40, 20, 5), (200, 60, 8)), "seed": 0},
        hidden={"cases": ((1000, 1, 12), (3, 50, 2), (500, 300, 65)), "seed": 5},
    ),
    Exercise(
        "bigram_loss",
        "check_bigram_loss",
        _check_bigram_loss,
        reads=("bigram_loss",),
        visible={"cases": ((60, 30, 5, 1.0), (300, 80, 8, 0.5)), "seed": 0},
        hidden={
            "cases": ((1, 20, 4, 1.0), (800, 200, 65, 0.1), (50, 2, 3, 2.0), (400, 90, 6, 1.0)),
            "seed": 5,
        },
    ),
    Exercise(
        "train_step",
        "check_train_step",
        _check_train_step,
        reads=("train_step",),
        visible={"cases": ((5, 6, 1, 3, 4), (7, 5, 2, 2, 6)), "seed": 0},
        hidden={"cases": ((3, 4, 1, 1, 1), (11, 8, 2, 4, 3)), "seed": 13},
    ),
)

check_one_hot_encode = EXERCISES["one_hot_encode"].checker()
check_get_batches = EXERCISES["get_batches"].checker()
check_char_rnn = EXERCISES["CharRNN"].checker()
check_sample = EXERCISES["sample"].checker()
check_unigram_loss = EXERCISES["unigram_loss"].checker()
check_bigram_loss = EXERCISES["bigram_loss"].checker()
check_train_step = EXERCISES["train_step"].checker()
