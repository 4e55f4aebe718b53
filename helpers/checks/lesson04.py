"""Checks for lesson 04_char_lstm.

``one_hot_encode`` is compared with ``torch.nn.functional.one_hot``; ``CharRNN`` with
``torch.nn.LSTM`` and ``torch.nn.Linear`` run on the model's own weights; ``get_batches`` and
``sample`` are checked through properties (what every correct answer must satisfy), using texts
whose characters are their own positions and stand-in models whose predictions are known.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from helpers.checks.core import (
    F32_ATOL,
    F32_RTOL,
    Cause,
    Exercise,
    assert_close,
    call,
    exercise_table,
    fail,
    report,
)
from helpers.text import Vocab

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
                cause="np.zeros makes float64 by default: pass dtype=np.float32.",
            )
        wrong = np.argwhere(got != expected)
        if len(wrong):
            index = tuple(int(i) for i in wrong[0])
            label = int(arr[index[:-1]])
            fail(
                name,
                f"{where}: the value at index {index} is {got[index]}, expected "
                f"{expected[index]} (arr{list(index[:-1])} = {label}, so only position "
                f"{label} of the last dimension should be 1.0); {len(wrong)} of {got.size} "
                "values wrong",
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
                if value.shape[:1] == (batch_size,):
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
    if not isinstance(model, nn.Module):
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


def _check_char_rnn(CharRNN, *, cases, seed: int) -> None:
    """``CharRNN`` equals one-hot -> ``nn.LSTM`` -> ``nn.Linear`` on its own weights.

    ``cases`` holds ``(vocab_size, hidden_size, num_layers, batch, seq_length)``. Also checks
    ``init_hidden``, that the hidden state is used and returned, that dropout is applied in
    training mode only, and that every parameter receives a gradient.
    """
    name = "CharRNN"
    worst = 0.0
    for i, (vocab_size, hidden_size, num_layers, batch, seq) in enumerate(cases):
        torch.manual_seed(seed + i)
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
        model.zero_grad()
        a.sum().backward()
        frozen = [
            n
            for n, p in model.named_parameters()
            if p.grad is None or not bool(p.grad.abs().sum() > 0)
        ]
        if frozen:
            fail(
                name,
                f"no gradient reaches {frozen}",
                inputs,
                "something is detached or computed outside autograd (e.g. through NumPy).",
            )
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
        zeros = torch.zeros(1, batch_size, 1)
        return (zeros, zeros.clone())

    def forward(self, x, hidden):
        h, c = hidden
        steps = torch.arange(1, x.shape[1] + 1, dtype=torch.float32)
        counts = h[0] + steps  # (batch, seq): characters read up to each position
        logits = torch.zeros(x.shape[0], x.shape[1], self.vocab_size)
        target = counts.long() % self.vocab_size
        logits.scatter_(2, target.unsqueeze(-1), 100.0)
        new_h = (h[0] + x.shape[1]).unsqueeze(0)
        return logits + 0 * self.anchor, (new_h, c)


class _FixedModel(nn.Module):
    """Gives the same logits at every position, whatever it reads."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone(), requires_grad=False)

    def init_hidden(self, batch_size):
        zeros = torch.zeros(1, batch_size, 1)
        return (zeros, zeros.clone())

    def forward(self, x, hidden):
        return self.logits.expand(x.shape[0], x.shape[1], -1).clone(), hidden


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
        if not text.startswith(prime) or len(text) != len(prime) + length:
            fail(
                name,
                f"{where} returned {text!r} ({len(text)} characters); expected the prime "
                f"followed by {length} new characters ({len(prime) + length} in all)",
            )
        expected = prime + "".join(
            vocab.chars[(len(prime) + i) % len(vocab)] for i in range(length)
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

        def target(scale, k=top_k):
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
            if temperature != 1.0 and 0.5 * np.abs(freq - target(1.0)).sum() < 0.08:
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
    print(
        "sample: OK, every property holds on 11 cases (prime, length, carried state, "
        "temperature, top_k, seeded generator, unknown characters)"
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
)

check_one_hot_encode = EXERCISES["one_hot_encode"].checker()
check_get_batches = EXERCISES["get_batches"].checker()
check_char_rnn = EXERCISES["CharRNN"].checker()
check_sample = EXERCISES["sample"].checker()
