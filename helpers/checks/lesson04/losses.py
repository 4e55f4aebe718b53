"""Lesson 04's baselines: ``unigram_loss`` and ``bigram_loss`` against counts made here with
``np.bincount``, on texts of a synthetic language (a random Markov chain)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from helpers.checks.core import call, fail, report
from helpers.checks.engine import Mistake, causes, records

LN2 = math.log(2.0)


class UnigramCase(NamedTuple):
    """Texts of ``n_train`` and ``n_val`` characters over ``vocab_size`` characters."""

    n_train: int
    n_val: int
    vocab_size: int


class BigramCase(NamedTuple):
    """Texts of ``n_train`` and ``n_val`` characters; pair counts smoothed by ``alpha``."""

    n_train: int
    n_val: int
    vocab_size: int
    alpha: float


class Texts(NamedTuple):
    """One case's training and validation texts (character indices)."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    alpha: float = 1.0


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


def _counts(t: Texts) -> np.ndarray:
    return np.bincount(t.train, minlength=t.vocab_size).astype(np.float64)


def _unigram(t: Texts) -> float:
    return _unigram_reference(t.train, t.val, t.vocab_size)


def _bigram(t: Texts) -> float:
    return _bigram_reference(t.train, t.val, t.vocab_size, t.alpha)


def _entropy(t: Texts) -> float:
    p = (_counts(t) + 1.0) / (len(t.train) + t.vocab_size)
    return float(-(p * np.log(p)).sum())


def _val_counted_unigram(t: Texts) -> float:
    both = np.bincount(np.concatenate([t.train, t.val]), minlength=t.vocab_size)
    both = both.astype(np.float64)
    return _nll((both[t.val] + 1.0) / (len(t.train) + len(t.val) + t.vocab_size))


BITS = "that is in bits (log base 2): the loss is in nats, the natural log (np.log)."
SIGN = "the sign is wrong: the loss is minus the mean log-probability."
PERPLEXITY = "that is the perplexity, exp(loss): return the loss itself."

#: The common wrong unigram losses (``recognise(texts)``: the loss the mistake gives).
UNIGRAM_MISTAKES = (
    Mistake(
        "no smoothing",
        lambda t: _nll(_counts(t)[t.val] / len(t.train)),
        "no add-one smoothing: a character's probability is (count + 1) / (len(train_ids) "
        "+ vocab_size), so that a character the training text never shows still gets a "
        "small probability.",
    ),
    Mistake(
        "+1 in the numerator only",
        lambda t: _nll((_counts(t)[t.val] + 1.0) / len(t.train)),
        "the +1 is in the numerator only: the denominator needs + vocab_size too, or the "
        "probabilities do not sum to 1.",
    ),
    Mistake(
        "distinct characters seen",
        lambda t: _nll((_counts(t)[t.val] + 1.0) / (len(t.train) + len(np.unique(t.train)))),
        "the denominator uses the number of distinct characters seen in training instead of "
        "vocab_size: every character of the vocabulary gets the +1.",
    ),
    Mistake("bits", lambda t: _unigram(t) / LN2, BITS),
    Mistake(
        "validation counted",
        _val_counted_unigram,
        "the validation text was counted too: count only train_ids; the validation text is "
        "what the estimate is scored on, never what it learns from.",
    ),
    Mistake(
        "the bigram",
        lambda t: (
            _bigram_reference(t.train, t.val, t.vocab_size, 1.0) if len(t.val) >= 2 else math.nan
        ),
        "that is the bigram's loss: the unigram ignores the previous character and uses one "
        "probability per character.",
    ),
    Mistake(
        "sum",
        lambda t: _unigram(t) * len(t.val),
        "the sum over the validation text: return the mean (divide by len(val_ids)).",
    ),
    Mistake("sign", lambda t: -_unigram(t), SIGN),
    Mistake("perplexity", lambda t: math.exp(_unigram(t)), PERPLEXITY),
    Mistake(
        "entropy",
        _entropy,
        "that is the entropy of the training distribution, -sum(p * log p): the loss "
        "averages -log p over the characters of the validation text.",
    ),
)


def _pairs(t: Texts) -> np.ndarray:
    return _pair_counts(t.train, t.vocab_size).astype(np.float64)


def _rows(t: Texts) -> np.ndarray:
    return _pairs(t).sum(axis=1, keepdims=True)


def _table(t: Texts) -> np.ndarray:
    return (_pairs(t) + t.alpha) / (_rows(t) + t.alpha * t.vocab_size)


def _scored(t: Texts, table) -> float:
    """The loss of a table on the validation text's pairs."""
    return _nll(table[t.val[:-1], t.val[1:]])


def _by_columns(t: Texts) -> float:
    counts = _pairs(t)
    columns = (counts + t.alpha) / (counts.sum(axis=0, keepdims=True) + t.alpha * t.vocab_size)
    return _scored(t, columns)


def _by_singles(t: Texts) -> float:
    singles = _counts(t)[:, None]
    return _scored(t, (_pairs(t) + t.alpha) / (singles + t.alpha * t.vocab_size))


def _val_counted_bigram(t: Texts) -> float:
    every = _pair_counts(np.concatenate([t.train, t.val]), t.vocab_size)
    return _scored(t, (every + t.alpha) / (every.sum(1, keepdims=True) + t.alpha * t.vocab_size))


def _from_last_training(t: Texts) -> float:
    if not len(t.train):
        return math.nan
    return _nll(_table(t)[np.r_[t.train[-1:], t.val[:-1]], np.r_[t.val[:1], t.val[1:]]])


def _first_by_unigram(t: Texts) -> float:
    unigram = (np.bincount(t.train, minlength=t.vocab_size) + 1.0) / (len(t.train) + t.vocab_size)
    return _nll(np.r_[unigram[t.val[:1]], _table(t)[t.val[:-1], t.val[1:]]])


#: The common wrong bigram losses (``recognise(texts)``: the loss the mistake gives).
BIGRAM_MISTAKES = (
    Mistake(
        "alpha ignored",
        lambda t: None if t.alpha == 1.0 else _bigram_reference(t.train, t.val, t.vocab_size, 1.0),
        lambda t: (
            f"alpha is ignored: this case has alpha={t.alpha}, and the answer equals the one "
            "for alpha=1. Use the alpha argument."
        ),
    ),
    Mistake(
        "no smoothing",
        lambda t: _scored(t, _pairs(t) / np.maximum(_rows(t), 1)),
        "no smoothing: add alpha to every pair count and alpha * vocab_size to each row's "
        "total, so a pair the training text never shows still gets a small probability.",
    ),
    Mistake(
        "wrong axis",
        _by_columns,
        "normalised over the wrong axis: row a of the table is the distribution of the "
        "character that follows a, so divide each row by its own total (axis=1).",
    ),
    Mistake(
        "pair reversed",
        lambda t: _nll(_table(t)[t.val[1:], t.val[:-1]]),
        "the pair order is reversed: score P(val_ids[t] | val_ids[t - 1]), with the previous "
        "character as the row and the next one as the column.",
    ),
    Mistake(
        "alpha in the numerator only",
        lambda t: _scored(t, (_pairs(t) + t.alpha) / np.maximum(_rows(t), 1)),
        "alpha is in the numerator only: add alpha * vocab_size to the denominator, so each "
        "row sums to 1.",
    ),
    Mistake(
        "character counts as row totals",
        _by_singles,
        "the denominator counts every occurrence of the previous character, including the "
        "last training character, which starts no pair: use the row totals of the pair "
        "counts.",
    ),
    Mistake("bits", lambda t: _bigram(t) / LN2, BITS),
    Mistake(
        "validation counted",
        _val_counted_bigram,
        "the validation text was counted too: count pairs of train_ids only; the validation "
        "text is what the estimate is scored on, never what it learns from.",
    ),
    Mistake(
        "the unigram",
        _unigram,
        "that is the unigram's loss: the bigram's probability depends on the previous character.",
    ),
    Mistake(
        "first from the last training character",
        _from_last_training,
        "the first validation character was scored from the last training character: score "
        "only the len(val_ids) - 1 pairs inside the validation text.",
    ),
    Mistake(
        "first by the unigram",
        _first_by_unigram,
        "the first validation character was scored with the unigram: score only the "
        "len(val_ids) - 1 pairs inside the validation text.",
    ),
    Mistake(
        "sum", lambda t: _bigram(t) * (len(t.val) - 1), "the sum over the pairs: return the mean."
    ),
    Mistake("sign", lambda t: -_bigram(t), SIGN),
    Mistake("perplexity", lambda t: math.exp(_bigram(t)), PERPLEXITY),
)


def _close_float(got: float, expected: float) -> bool:
    return abs(got - expected) <= _LOSS_ATOL + _LOSS_RTOL * abs(expected)


def _judge_loss(name, got, expected, where, inputs, found) -> None:
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
    smoothing = next(c.message for c in found if "smoothing" in c.message)
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
    cause = next(
        (c.message for c in found if math.isfinite(c.output) and _close_float(got, c.output)),
        None,
    )
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


def _check_loss(name, fn, texts: Texts, where, mistakes, reference, **kwargs) -> None:
    got = _call_loss(name, fn, texts.train, texts.val, texts.vocab_size, **kwargs)
    expected = reference(texts)
    _judge_loss(
        name,
        got,
        expected,
        where,
        {"train_ids": texts.train, "val_ids": texts.val},
        causes(mistakes, texts),
    )


def _check_unigram_loss(unigram_loss, *, cases, seed: int) -> None:
    """``unigram_loss(train_ids, val_ids, vocab_size)`` equals add-one counts (``np.bincount``).

    ``cases`` holds ``UnigramCase(n_train, n_val, vocab_size)``; the texts come from a random
    Markov chain in which the vocabulary's last character never occurs in training (see
    ``_baseline_texts``).
    """
    name = "unigram_loss"
    rng = np.random.default_rng(seed)
    for n_train, n_val, vocab_size in records(UnigramCase, cases):
        texts = Texts(*_baseline_texts(rng, n_train, n_val, vocab_size), vocab_size)
        where = (
            f"unigram_loss(train_ids of {n_train} characters, val_ids of {n_val}, "
            f"vocab_size={vocab_size})"
        )
        _check_loss(name, unigram_loss, texts, where, UNIGRAM_MISTAKES, _unigram)
    report(name, len(cases), None, "add-one counts from np.bincount")


def _check_bigram_loss(bigram_loss, *, cases, seed: int) -> None:
    """``bigram_loss(train_ids, val_ids, vocab_size, alpha)`` equals add-alpha pair counts.

    ``cases`` holds ``BigramCase(n_train, n_val, vocab_size, alpha)``. The first validation
    character is not scored: the mean runs over the ``len(val_ids) - 1`` pairs of the
    validation text.
    """
    name = "bigram_loss"
    rng = np.random.default_rng(seed)
    for n_train, n_val, vocab_size, alpha in records(BigramCase, cases):
        texts = Texts(*_baseline_texts(rng, n_train, n_val, vocab_size), vocab_size, alpha)
        where = (
            f"bigram_loss(train_ids of {n_train} characters, val_ids of {n_val}, "
            f"vocab_size={vocab_size}, alpha={alpha})"
        )
        _check_loss(name, bigram_loss, texts, where, BIGRAM_MISTAKES, _bigram, alpha=alpha)
    report(name, len(cases), None, "add-alpha pair counts from np.bincount")
