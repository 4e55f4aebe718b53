"""Lesson 04_char_lstm: the text helpers, the training helper, the checks' teeth, the shipped
checkpoint and the benchmark's output format."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import LESSONS, ROOT, SOLUTIONS, loaded, notebook_path
from torch import nn

import helpers.char_training
import helpers.precision
from helpers import course
from helpers.char_training import (
    CHECKPOINT_NAME,
    MODEL_CONFIG,
    TrainConfig,
    _lr_factor,
    bits_per_char,
    evaluate,
    lesson_checkpoint_path,
    load_checkpoint,
    make_optimizer,
    plot_history,
    read_checkpoint,
    save_checkpoint,
    train,
)
from helpers.checks import CheckFailure
from helpers.checks.lesson04 import (
    _check_sample_on_device,
    check_bigram_loss,
    check_char_rnn,
    check_get_batches,
    check_one_hot_encode,
    check_sample,
    check_train_step,
    check_unigram_loss,
)
from helpers.precision import bf16_available, cpu_info, resolve_precision
from helpers.text import Vocab, load_corpus, make_corpus, split_train_val

LESSON = "04_char_lstm"


@pytest.fixture(scope="module")
def ns():
    namespace = loaded(notebook_path("source", LESSON))
    assert not namespace.errors, namespace.errors
    return namespace


@pytest.fixture(scope="module")
def shakespeare():
    return load_corpus("tinyshakespeare")


# ----------------------------------------------------------------------------------- Vocab


def test_vocab_is_sorted_and_round_trips():
    vocab = Vocab.from_text("hello world")
    assert vocab.chars == tuple(sorted(set("hello world")))
    assert vocab.decode(vocab.encode("hello")) == "hello"
    assert vocab.encode("dl").dtype == np.int64
    assert Vocab.from_dict(vocab.to_dict()) == vocab
    assert vocab.decode(torch.tensor([0, 1])) == vocab.chars[0] + vocab.chars[1]


def test_vocab_is_the_same_in_every_process():
    code = "from helpers.text import Vocab; print(''.join(Vocab.from_text('the quick fox').chars))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout
        for seed in (1, 2)
    }
    assert len(outputs) == 1


@pytest.mark.parametrize(
    ("text", "words"), [("", "empty"), ("aaaa", "at least 2"), ("a", "at least 2")]
)
def test_vocab_rejects_empty_or_one_character_corpus(text, words):
    with pytest.raises(ValueError, match=words):
        make_corpus(text)


def test_encode_names_unknown_characters():
    vocab = Vocab("abc")
    with pytest.raises(ValueError, match=r"\['x', 'z'\]"):
        vocab.encode("axbz")
    with pytest.raises(ValueError):
        vocab.decode([0, 3])


def test_corpus_holds_out_the_last_tenth(shakespeare):
    text = shakespeare.text
    assert len(text) == 1_115_394 and len(shakespeare.vocab) == 65
    assert len(shakespeare.val) == round(len(text) * 0.1)
    joined = np.concatenate([shakespeare.train, shakespeare.val])
    assert np.array_equal(joined, shakespeare.vocab.encode(text))
    assert shakespeare.vocab.decode(shakespeare.val[-20:]) == text[-20:]
    with pytest.raises(ValueError):
        split_train_val(np.arange(5), 0.1)
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("nonexistent")


# ------------------------------------------------------------------------- the checks' teeth


def _wrapping_get_batches(arr, batch_size, seq_length):
    """The version of Udacity's char-RNN notebook: the last target of a row wraps around."""
    per_batch = batch_size * seq_length
    arr = arr[: (len(arr) // per_batch) * per_batch].reshape(batch_size, -1)
    for n in range(0, arr.shape[1], seq_length):
        x = arr[:, n : n + seq_length]
        y = np.zeros_like(x)
        try:
            y[:, :-1], y[:, -1] = x[:, 1:], arr[:, n + seq_length]
        except IndexError:
            y[:, :-1], y[:, -1] = x[:, 1:], arr[:, 0]
        yield x, y


def _row_breaking_get_batches(arr, batch_size, seq_length):
    """Consecutive windows as rows: row r of a batch does not continue row r of the last one."""
    n = (len(arr) - 1) // (batch_size * seq_length)
    if n < 1:
        raise ValueError("too short")
    xs = arr[: n * batch_size * seq_length].reshape(-1, seq_length)
    ys = arr[1 : n * batch_size * seq_length + 1].reshape(-1, seq_length)
    for k in range(n):
        yield xs[k * batch_size : (k + 1) * batch_size], ys[k * batch_size : (k + 1) * batch_size]


def test_get_batches_check_names_a_wrapped_target():
    with pytest.raises(CheckFailure, match="wrapped around"):
        check_get_batches(_wrapping_get_batches)


def test_get_batches_check_names_broken_row_continuity():
    with pytest.raises(CheckFailure, match="row 0 of batch 1 does not continue row 0 of batch 0"):
        check_get_batches(_row_breaking_get_batches)


def test_get_batches_check_wants_a_value_error_for_short_text(ns):
    def silent(arr, batch_size, seq_length):
        if len(arr) - 1 >= batch_size * seq_length:
            yield from ns["get_batches"](arr, batch_size, seq_length)

    with pytest.raises(CheckFailure, match="should raise ValueError"):
        check_get_batches(silent)


def test_char_rnn_check_catches_softmax_and_missing_dropout(ns):
    CharRNN = ns["CharRNN"]

    class Softmaxed(CharRNN):
        def forward(self, x, hidden):
            logits, hidden = super().forward(x, hidden)
            return logits.softmax(-1), hidden

    class NoDropout(CharRNN):
        def forward(self, x, hidden):
            output, hidden = self.lstm(nn.functional.one_hot(x, self.vocab_size).float(), hidden)
            return self.fc(output), hidden

    with pytest.raises(CheckFailure, match="softmax"):
        check_char_rnn(Softmaxed)
    with pytest.raises(CheckFailure, match="dropout is not applied"):
        check_char_rnn(NoDropout)


def test_sample_check_catches_ignored_temperature_and_generator(ns):
    sample = ns["sample"]

    def no_temperature(model, vocab, prime, length, temperature=1.0, top_k=None, generator=None):
        return sample(model, vocab, prime, length, 1.0, top_k, generator)

    def global_rng(model, vocab, prime, length, temperature=1.0, top_k=None, generator=None):
        return sample(model, vocab, prime, length, temperature, top_k, None)

    with pytest.raises(CheckFailure, match="temperature is ignored"):
        check_sample(no_temperature)
    with pytest.raises(CheckFailure, match="generator"):
        check_sample(global_rng)


def _expect(check, fn, words):
    """``check(fn)`` fails on its visible cases and on its hidden ones, each time with a message
    that contains ``words``."""
    for hidden in (False, True):
        with pytest.raises(CheckFailure) as failure:
            check(fn, hidden=hidden)
        assert words in str(failure.value), f"hidden={hidden}: {failure.value}"


def _passes(check, fn):
    check(fn)
    check(fn, hidden=True)


# one_hot_encode, get_batches, CharRNN, sample: the usual mistakes are named


def _one_hot(arr, n_labels, dtype=np.float32):
    arr = np.asarray(arr)
    out = np.zeros((arr.size, n_labels), dtype=dtype)
    out[np.arange(arr.size), arr.ravel()] = 1
    return out.reshape(*arr.shape, n_labels)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda a, n: _one_hot(a, n, np.int64), "not integers or booleans"),
        (lambda a, n: _one_hot(a, n, np.float64), "float64 by default"),
        (lambda a, n: 1.0 - _one_hot(a, n), "inverted"),
        (lambda a, n: np.roll(_one_hot(a, n), 1, axis=-1), "one position off"),
        (lambda a, n: _one_hot(a, n).reshape(-1, n), "left flat"),
        (lambda a, n: torch.from_numpy(_one_hot(a, n)), "NumPy version"),
    ],
    ids=["int", "float64", "inverted", "off-by-one", "flat", "tensor"],
)
def test_one_hot_encode_check_names_the_mistake(fn, words):
    _expect(check_one_hot_encode, fn, words)


@pytest.mark.parametrize(
    "fn",
    [
        lambda a, n: np.eye(n, dtype=np.float32)[a],
        lambda a, n: (np.asarray(a)[..., None] == np.arange(n)).astype(np.float32),
        lambda a, n: torch.nn.functional.one_hot(torch.as_tensor(a), n).numpy().astype("f4"),
    ],
    ids=["eye", "comparison", "torch-then-numpy"],
)
def test_one_hot_encode_check_accepts_other_correct_answers(fn):
    _passes(check_one_hot_encode, fn)


def test_get_batches_check_names_unshifted_and_swapped(ns):
    solved = ns["get_batches"]

    def unshifted(arr, batch_size, seq_length):
        for x, _ in solved(arr, batch_size, seq_length):
            yield x, x.copy()

    def backwards(arr, batch_size, seq_length):
        for x, _ in solved(arr, batch_size, seq_length):
            yield x, x - 1

    def swapped(arr, batch_size, seq_length):
        for x, y in solved(arr, batch_size, seq_length):
            yield x.T, y.T

    _expect(check_get_batches, unshifted, "y is x itself")
    _expect(check_get_batches, backwards, "before each input")
    _expect(check_get_batches, swapped, "rows and columns are swapped")


def test_char_rnn_check_names_a_detached_lstm_and_unused_fc(ns):
    CharRNN = ns["CharRNN"]

    class DetachedLSTM(CharRNN):
        def forward(self, x, hidden):
            output, hidden = self.lstm(nn.functional.one_hot(x, self.vocab_size).float(), hidden)
            return self.fc(self.dropout(output.detach())), hidden

    class DetachedHead(CharRNN):
        def forward(self, x, hidden):
            output, hidden = self.lstm(nn.functional.one_hot(x, self.vocab_size).float(), hidden)
            weight, bias = self.fc.weight.detach(), self.fc.bias.detach()
            return nn.functional.linear(self.dropout(output), weight, bias), hidden

    _expect(check_char_rnn, DetachedLSTM, "the LSTM's output is detached")
    _expect(check_char_rnn, DetachedHead, "self.fc's weights take no part")


def test_sample_check_names_argmax_and_a_missing_prime(ns):
    sample = ns["sample"]

    def argmax(model, vocab, prime, length, temperature=1.0, top_k=None, generator=None):
        model.eval()
        with torch.no_grad():
            hidden = model.init_hidden(1)
            x = torch.as_tensor(vocab.encode(prime)).unsqueeze(0)
            drawn = []
            for _ in range(length):
                logits, hidden = model(x, hidden)
                index = int(logits[0, -1].argmax())
                drawn.append(index)
                x = torch.tensor([[index]])
        return prime + vocab.decode(drawn)

    def no_prime(model, vocab, prime, length, temperature=1.0, top_k=None, generator=None):
        return sample(model, vocab, prime, length, temperature, top_k, generator)[len(prime) :]

    _expect(check_sample, argmax, "argmax")
    _expect(check_sample, no_prime, "the prime is missing")


def test_sample_check_names_a_model_left_in_training_mode():
    def no_eval(model, vocab, prime, length, temperature=1.0, top_k=None, generator=None):
        with torch.no_grad():
            hidden = model.init_hidden(1)
            x = torch.as_tensor(vocab.encode(prime)).unsqueeze(0)
            drawn = []
            for _ in range(length):
                logits, hidden = model(x, hidden)
                probabilities = torch.softmax(logits[0, -1] / temperature, -1)
                if top_k is not None:
                    kth = torch.topk(probabilities, top_k).values[-1]
                    probabilities = torch.where(probabilities >= kth, probabilities, 0.0)
                index = torch.multinomial(probabilities, 1, generator=generator)
                drawn.append(int(index))
                x = index.view(1, 1)
        return prime + vocab.decode(drawn)

    _expect(check_sample, no_eval, "training mode")


def test_sample_check_says_when_the_cuda_case_cannot_run(ns, capsys):
    check_sample(ns["sample"])
    out, err = capsys.readouterr()
    assert err == ""
    if torch.cuda.is_available():
        assert "on a model on the GPU with the generator on the CPU" in out
    else:
        assert "sample: note: no CUDA device here" in out


def test_sample_device_case_runs_and_names_a_draw_on_the_gpu(ns):
    """Without CUDA the device case can only run with the model on the CPU (it proves the code
    path, not the device handling); the mistakes' messages are checked with stand-ins that raise
    what PyTorch raises on a GPU."""
    vocab = Vocab("abcdef")
    _check_sample_on_device(ns["sample"], vocab, 0, torch.device("cpu"))

    def draws_on_the_gpu(model, vocab, prime, length, temperature=1.0, top_k=None, generator=None):
        raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")

    def input_on_the_cpu(model, vocab, prime, length, temperature=1.0, top_k=None, generator=None):
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, "
            "cuda:0 and cpu!"
        )

    for fn, words in (
        (draws_on_the_gpu, "move the probabilities to the CPU"),
        (input_on_the_cpu, "on the model's device"),
    ):
        with pytest.raises(CheckFailure, match=words):
            _check_sample_on_device(fn, vocab, 0, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sample_runs_on_a_cuda_model_with_a_cpu_generator(ns):
    _check_sample_on_device(ns["sample"], Vocab("abcdef"), 0, torch.device("cuda"))


# unigram_loss and bigram_loss


def _unigram(train, val, vocab_size, smoothing=1.0, counted=None, log=np.log):
    counts = np.bincount(train if counted is None else counted, minlength=vocab_size)
    total = len(train if counted is None else counted)
    with np.errstate(divide="ignore"):
        return float(-log((counts[val] + smoothing) / (total + smoothing * vocab_size)).mean())


def _bigram(train, val, vocab_size, alpha=1.0, axis=1, log=np.log, first=None):
    counts = np.zeros((vocab_size, vocab_size))
    np.add.at(counts, (train[:-1], train[1:]), 1)
    table = (counts + alpha) / (counts.sum(axis=axis, keepdims=True) + alpha * vocab_size)
    scores = -log(table[val[:-1], val[1:]])
    if first == "boundary" and len(train):
        scores = np.r_[-log(table[train[-1], val[0]]), scores]
    return float(scores.mean())


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda t, v, n: _unigram(t, v, n, smoothing=0.0), "no add-one smoothing"),
        (lambda t, v, n: _unigram(t, v, n, log=np.log2), "log base 2"),
        (lambda t, v, n: _unigram(t, v, n, counted=np.r_[t, v]), "validation text was counted"),
        (lambda t, v, n: _bigram(t, v, n), "the bigram's loss"),
        (lambda t, v, n: _unigram(t, v, n) * len(v), "the sum over the validation text"),
        (lambda t, v, n: math.exp(_unigram(t, v, n)), "perplexity"),
        (lambda t, v, n: torch.tensor(_unigram(t, v, n)), "return a Python float"),
        (
            lambda t, v, n: float(-np.log((np.bincount(t)[v] + 1) / (len(t) + n)).mean()),
            "minlength=vocab_size",
        ),
    ],
    ids=["unsmoothed", "bits", "counts-val", "bigram", "sum", "perplexity", "tensor", "minlength"],
)
def test_unigram_check_names_the_mistake(fn, words):
    _expect(check_unigram_loss, fn, words)


@pytest.mark.parametrize(
    "fn",
    [
        lambda t, v, n: _unigram(t, v, n),
        lambda t, v, n: (
            -torch.log(
                (torch.bincount(torch.as_tensor(t), minlength=n).double() + 1) / (len(t) + n)
            )
            .index_select(0, torch.as_tensor(v))
            .mean()
            .item()
        ),
        lambda t, v, n: -sum(math.log((list(t).count(c) + 1) / (len(t) + n)) for c in v) / len(v),
    ],
    ids=["numpy", "torch", "python"],
)
def test_unigram_check_accepts_other_correct_answers(fn):
    _passes(check_unigram_loss, fn)


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda t, v, n, alpha=1.0: _bigram(t, v, n, 0.0), "smoothing"),
        (lambda t, v, n, alpha=1.0: _bigram(t, v, n, alpha, axis=0), "wrong axis"),
        (lambda t, v, n, alpha=1.0: _bigram(t, v, n, 1.0), "alpha is ignored"),
        (lambda t, v, n, alpha=1.0: _bigram(t, v, n, alpha, log=np.log2), "log base 2"),
        (lambda t, v, n, alpha=1.0: _bigram(np.r_[t, v], v, n, alpha), "counted too"),
        (lambda t, v, n, alpha=1.0: _unigram(t, v, n), "that is the unigram's loss"),
        (
            lambda t, v, n, alpha=1.0: _bigram(t, v, n, alpha, first="boundary"),
            "scored from the last training character",
        ),
        (lambda t, v, n, alpha=1.0: -_bigram(t, v, n, alpha), "the sign is wrong"),
    ],
    ids=["unsmoothed", "axis", "alpha", "bits", "counts-val", "unigram", "boundary", "sign"],
)
def test_bigram_check_names_the_mistake(fn, words):
    _expect(check_bigram_loss, fn, words)


def _bigram_loop(train_ids, val_ids, vocab_size, alpha=1.0):
    counts = [[0] * vocab_size for _ in range(vocab_size)]
    for a, b in zip(train_ids[:-1], train_ids[1:], strict=True):
        counts[a][b] += 1
    total = 0.0
    for a, b in zip(val_ids[:-1], val_ids[1:], strict=True):
        total -= math.log((counts[a][b] + alpha) / (sum(counts[a]) + alpha * vocab_size))
    return total / (len(val_ids) - 1)


def _bigram_bincount(train_ids, val_ids, vocab_size, alpha=1.0):
    pairs = train_ids[:-1] * vocab_size + train_ids[1:]
    counts = np.bincount(pairs, minlength=vocab_size**2).reshape(vocab_size, vocab_size)
    log_p = np.log(counts + alpha) - np.log(counts.sum(1) + alpha * vocab_size)[:, None]
    return -log_p[val_ids[:-1], val_ids[1:]].sum() / (len(val_ids) - 1)


@pytest.mark.parametrize("fn", [_bigram_loop, _bigram_bincount], ids=["loops", "bincount"])
def test_bigram_check_accepts_other_correct_answers(fn):
    _passes(check_bigram_loss, fn)


def test_baselines_of_tiny_shakespeare(ns, shakespeare):
    """The figures section 7's table prints: uniform 4.17, unigram 3.35, bigram 2.48 nats/char."""
    vocab_size = len(shakespeare.vocab)
    assert math.log(vocab_size) == pytest.approx(4.174, abs=1e-3)
    unigram = ns["unigram_loss"](shakespeare.train, shakespeare.val, vocab_size)
    bigram = ns["bigram_loss"](shakespeare.train, shakespeare.val, vocab_size)
    assert unigram == pytest.approx(3.347, abs=1e-3)
    assert bigram == pytest.approx(2.482, abs=1e-3)
    assert math.exp(unigram) == pytest.approx(28.4, abs=0.1)
    assert math.exp(bigram) == pytest.approx(12.0, abs=0.1)


# train_step


def _step(
    order="zbcs",
    reduction="mean",
    last=False,
    softmax=False,
    detach=True,
    item=True,
    clip="norm",
    zero_state=False,
    same_state=False,
    after=False,
):
    """A train_step with one thing changed (``order``: zero, backward, clip, step)."""

    def train_step(model, optimizer, x, y, hidden, clip_norm):
        start = tuple(torch.zeros_like(h) for h in hidden) if zero_state else hidden
        logits, new = model(x, start)
        if last:
            loss = nn.functional.cross_entropy(logits[:, -1], y[:, -1])
        else:
            flat = logits.reshape(-1, logits.shape[-1])
            loss = nn.functional.cross_entropy(
                flat.softmax(-1) if softmax else flat, y.reshape(-1), reduction=reduction
            )
        for op in order:
            if op == "z":
                optimizer.zero_grad()
            elif op == "b":
                loss.backward()
            elif op == "c" and clip == "norm":
                nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            elif op == "c" and clip == "value":
                nn.utils.clip_grad_value_(model.parameters(), clip_norm)
            elif op == "c":
                for p in model.parameters():
                    nn.utils.clip_grad_norm_([p], clip_norm)
            elif op == "s":
                optimizer.step()
        value = loss.item() if item else loss
        if after:
            with torch.no_grad():
                again, _ = model(x, start)
                value = nn.functional.cross_entropy(
                    again.reshape(-1, again.shape[-1]), y.reshape(-1)
                ).item()
        if same_state:
            return value, hidden
        return value, tuple(h.detach() for h in new) if detach else new

    return train_step


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_step(order="bcs"), "the gradients of the first call were added"),
        (_step(order="bzcs"), "zero the gradients before loss.backward()"),
        (_step(order="zbsc"), "clipped after optimizer.step()"),
        (_step(order="zbs"), "is not applied"),
        (_step(order="zcbs"), "is not applied"),
        (_step(clip="value"), "clip_grad_value_"),
        (_step(clip="per-parameter"), "clipped on its own"),
        (_step(order="zbc"), "called optimizer.step() 0 times"),
        (_step(order="zbcss"), "called optimizer.step() 2 times"),
        (_step(reduction="sum"), "summed over the positions"),
        (_step(last=True), "only the last position"),
        (_step(softmax=True), "a softmax was applied"),
        (_step(detach=False), "still attached to the graph"),
        (_step(item=False), "return it as a Python float"),
        (_step(zero_state=True), "the hidden state passed in is ignored"),
        (_step(same_state=True), "the state passed in is returned"),
        (_step(after=True), "computed after the step"),
    ],
    ids=[
        "no-zero",
        "zero-after-backward",
        "clip-after-step",
        "no-clip",
        "clip-before-backward",
        "clip-value",
        "clip-per-parameter",
        "no-step",
        "two-steps",
        "sum",
        "last-position",
        "softmax",
        "attached-state",
        "tensor-loss",
        "zero-state",
        "same-state",
        "loss-after-step",
    ],
)
def test_train_step_check_names_the_mistake(fn, words):
    _expect(check_train_step, fn, words)


def test_train_step_check_names_a_tuple_detached_whole():
    def whole(model, optimizer, x, y, hidden, clip_norm):
        logits, hidden = model(x, hidden)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item(), hidden.detach()

    _expect(check_train_step, whole, "an LSTM's state is a tuple (h, c)")


def _step_transposed(model, optimizer, x, y, hidden, clip_norm):
    logits, (h, c) = model(x, hidden)
    loss = nn.CrossEntropyLoss()(logits.transpose(1, 2), y)
    model.zero_grad(set_to_none=False)
    loss.backward()
    nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], max_norm=clip_norm)
    optimizer.step()
    return float(loss.detach()), [h.detach(), c.detach()]


def _step_own_clip_zero_last(model, optimizer, x, y, hidden, clip_norm):
    """Lesson 01's clipping written out, and the gradients zeroed after the step instead."""
    logits, hidden = model(x, hidden)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    scale = min(1.0, clip_norm / float(total))
    for g in grads:
        g.mul_(scale)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item(), (hidden[0].detach(), hidden[1].detach())


@pytest.mark.parametrize(
    "fn", [_step(), _step_transposed, _step_own_clip_zero_last], ids=["plain", "other", "own"]
)
def test_train_step_check_accepts_other_correct_answers(fn):
    _passes(check_train_step, fn)


# ------------------------------------------------------------------------ training helper


class _Uniform(nn.Module):
    """Equal logits for every character: its loss is exactly ln(vocab_size)."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def init_hidden(self, batch_size):
        return (torch.zeros(1, batch_size, 1), torch.zeros(1, batch_size, 1))

    def forward(self, x, hidden):
        return self.bias.expand(*x.shape, -1), hidden


@pytest.mark.parametrize("protocol", ["stream", "win64"])
def test_evaluate_uniform_model_scores_log_vocab(protocol):
    data = np.random.default_rng(0).integers(0, 7, 5000)
    loss = evaluate(_Uniform(7), data, protocol)
    assert loss == pytest.approx(math.log(7), abs=1e-6)
    assert bits_per_char(loss) == pytest.approx(math.log2(7), abs=1e-6)


def test_evaluate_rejects_unknown_protocol_and_tiny_data():
    with pytest.raises(ValueError, match="protocol"):
        evaluate(_Uniform(3), np.arange(3).repeat(50), "random")
    with pytest.raises(ValueError, match="too few"):
        evaluate(_Uniform(3), np.array([0, 1]), "stream")


def test_train_learns_a_periodic_text(ns):
    torch.manual_seed(0)
    text = "abcde" * 400
    corpus = make_corpus(text)
    model = ns["CharRNN"](len(corpus.vocab), hidden_size=32, dropout=0.0)
    before = evaluate(model, corpus.val, "stream", n_streams=2)
    config = TrainConfig(batch_size=4, seq_length=16, lr=1e-2, warmup_steps=5, max_steps=60)
    history = train(
        model, corpus.train, corpus.val, ns["get_batches"], ns["train_step"], config, progress=False
    )
    after = evaluate(model, corpus.val, "stream", n_streams=2)
    assert history.steps == 60 and history.stopped_by == "max_steps"
    assert before > 1.5 and after < 0.1, (before, after)
    assert history.epochs >= 2  # the 1 800 training characters hold 28 batches
    plot_history(history)


def test_train_respects_a_time_budget(ns, shakespeare):
    model = ns["CharRNN"](len(shakespeare.vocab), hidden_size=16, dropout=0.0)
    config = TrainConfig(batch_size=4, seq_length=8, budget_seconds=1.0)
    history = train(
        model,
        shakespeare.train,
        shakespeare.val,
        ns["get_batches"],
        ns["train_step"],
        config,
        progress=False,
    )
    assert history.stopped_by == "budget_seconds"
    assert 1.0 <= history.train_seconds < 3.0
    assert history.chars_per_s > 0


def test_train_rejects_a_batch_larger_than_the_data(ns):
    model = ns["CharRNN"](3, hidden_size=4)
    config = TrainConfig(batch_size=8, seq_length=16, max_steps=1)
    with pytest.raises(ValueError, match="more than the 100 training characters"):
        train(
            model,
            np.arange(100) % 3,
            np.arange(50) % 3,
            ns["get_batches"],
            ns["train_step"],
            config,
        )


def test_train_config_needs_an_end_and_sane_values():
    with pytest.raises(ValueError, match="max_steps or budget_seconds"):
        TrainConfig()
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0, max_steps=1)


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(max_steps=1000, warmup_steps=100, final_lr_fraction=0.05)
    assert _lr_factor(0, 0.0, config) == pytest.approx(0.01)
    assert _lr_factor(99, 0.099, config) == pytest.approx(1.0, abs=0.03)
    assert _lr_factor(999, 1.0, config) == pytest.approx(0.05)


def test_train_refuses_a_step_that_keeps_the_graph(ns):
    """The learner's train_step must detach the state it returns; train says so at once."""
    solved = ns["train_step"]

    def attached(model, optimizer, x, y, hidden, clip_norm):
        logits, new = model(x, hidden)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward(retain_graph=True)
        optimizer.step()
        return loss.item(), new

    def tensor_loss(model, optimizer, x, y, hidden, clip_norm):
        loss, hidden = solved(model, optimizer, x, y, hidden, clip_norm)
        return torch.tensor(loss), hidden

    model = ns["CharRNN"](3, hidden_size=4, dropout=0.0)
    data = np.arange(300) % 3
    config = TrainConfig(batch_size=2, seq_length=8, max_steps=2)
    with pytest.raises(ValueError, match="still attached to the graph"):
        train(model, data, data, ns["get_batches"], attached, config, progress=False)
    with pytest.raises(ValueError, match="loss.item"):
        train(model, data, data, ns["get_batches"], tensor_loss, config, progress=False)
    with pytest.raises(ValueError, match="train_step must be a function"):
        train(model, data, data, ns["get_batches"], None, config, progress=False)


def _small_run(ns, shakespeare, steps=12, **config):
    """A 32-unit CharRNN (dropout on, so torch's random stream matters) and its TrainConfig."""
    torch.manual_seed(1)
    model = ns["CharRNN"](len(shakespeare.vocab), hidden_size=32, dropout=0.3)
    settings = {"batch_size": 4, "seq_length": 16, "max_steps": steps, "precision": "fp32"}
    return model, TrainConfig(**{**settings, **config})


def test_train_computes_what_a_plain_loop_computes(ns, shakespeare):
    """train adds nothing to the learner's step: the same losses and weights as a bare loop.

    The plain loop is written here from train's documented contract: seed, AdamW from
    make_optimizer, a zero state, the batches of the first epoch in order, the learning rate of
    the warm-up + cosine schedule set before each step. Validation and the progress bar in
    between must not change a thing.
    """
    data = shakespeare.train[:20_000]
    model, config = _small_run(ns, shakespeare, eval_every=5, eval_chars=2_000, warmup_steps=4)
    reference = copy.deepcopy(model)
    history = train(
        model, data, shakespeare.val, ns["get_batches"], ns["train_step"], config, progress=True
    )

    torch.manual_seed(config.seed)
    optimizer = make_optimizer(reference, config)
    hidden = reference.init_hidden(config.batch_size)
    losses = []
    reference.train()
    batches = ns["get_batches"](data, config.batch_size, config.seq_length)
    for step, (x, y) in zip(range(config.max_steps), batches, strict=False):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, step / config.max_steps, config)
        loss, hidden = ns["train_step"](
            reference, optimizer, torch.as_tensor(x), torch.as_tensor(y), hidden, config.clip_norm
        )
        losses.append(loss)

    assert history.steps == 12 and history.epochs == 1  # all 12 in the first pass
    np.testing.assert_allclose(history.train_loss, losses, rtol=1e-5, atol=1e-6)
    for (name, got), want in zip(
        model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(
            got, want, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert history.val_steps == [5, 10, 12]
    assert history.precision == "fp32" and history.loop_seconds > 0


def test_precision_is_checked_and_falls_back_to_float32(ns, shakespeare, monkeypatch):
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(max_steps=1, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "cpu")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert not bf16_available("meta")

    def flags_without_bf16():
        info = cpu_info()
        info["cpu_flags"] = dict.fromkeys(info["cpu_flags"], False)
        return info

    monkeypatch.setattr(helpers.precision, "cpu_info", flags_without_bf16)
    assert not bf16_available("cpu") and resolve_precision("auto", "cpu") == "fp32"
    data = shakespeare.train[:20_000]
    runs = {}
    for precision in ("auto", "fp32"):
        model, config = _small_run(ns, shakespeare, steps=4, precision=precision)
        runs[precision] = train(
            model, data, data, ns["get_batches"], ns["train_step"], config, progress=False
        )
    assert runs["auto"].precision == "fp32"
    assert runs["auto"].train_loss == runs["fp32"].train_loss


def test_bf16_runs_the_step_under_autocast_and_keeps_float32_weights(ns, shakespeare):
    if not bf16_available("cpu"):
        pytest.skip(f"this CPU has no native bf16: {cpu_info()}")
    assert resolve_precision("auto", "cpu") == "bf16"
    data = shakespeare.train[:20_000]
    seen, runs, models = {}, {}, {}

    def watched(model, optimizer, x, y, hidden, clip_norm):
        seen.setdefault(config.precision, set()).add(torch.is_autocast_enabled("cpu"))
        return ns["train_step"](model, optimizer, x, y, hidden, clip_norm)

    for precision in ("fp32", "auto"):
        model, config = _small_run(ns, shakespeare, steps=20, precision=precision)
        runs[precision] = train(
            model, data, data, ns["get_batches"], watched, config, progress=False
        )
        models[precision] = model
    assert seen == {"fp32": {False}, "auto": {True}}, seen
    assert runs["auto"].precision == "bf16"
    assert runs["auto"].train_loss != runs["fp32"].train_loss  # bf16 really computed
    assert abs(runs["auto"].train_loss[-1] - runs["fp32"].train_loss[-1]) < 0.05
    assert all(p.dtype == torch.float32 for p in models["auto"].parameters())
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of train


def test_helpers_hold_no_train_step():
    """The training step is the learner's exercise: the lesson's helper module has none."""
    names = set(vars(helpers.char_training))
    assert not names & {"train_step", "detach_hidden", "optimizer_step", "loss_fn"}, names


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_errors(ns, tmp_path):
    CharRNN = ns["CharRNN"]
    vocab = Vocab("abcdef")
    model = CharRNN(len(vocab), hidden_size=8, num_layers=2, dropout=0.1)
    hyper = {"hidden_size": 8, "num_layers": 2, "dropout": 0.1}
    path = save_checkpoint(tmp_path / "m.pt", model, vocab, hyper, extra={"note": "test"})
    again, again_vocab, info = load_checkpoint(path, CharRNN, vocab=vocab)
    assert again_vocab == vocab and info["hyperparameters"] == hyper
    assert info["extra"] == {"note": "test"}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name

    half = save_checkpoint(tmp_path / "h.pt", model, vocab, hyper, half=True)
    again, _, _ = load_checkpoint(half, CharRNN)
    assert again.fc.weight.dtype == torch.float32
    assert torch.allclose(again.fc.weight, model.fc.weight, atol=1e-3)

    with pytest.raises(ValueError, match="another vocabulary"):
        load_checkpoint(path, CharRNN, vocab=Vocab("abcdefg"))
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", CharRNN)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", CharRNN)

    class Renamed(nn.Module):
        def __init__(self, vocab_size, hidden_size=8, num_layers=1, dropout=0.0):
            super().__init__()
            self.rnn = nn.LSTM(vocab_size, hidden_size, num_layers, batch_first=True)
            self.fc = nn.Linear(hidden_size, vocab_size)

    with pytest.raises(ValueError, match="does not fit this model"):
        load_checkpoint(path, Renamed)


def test_shipped_checkpoint(ns, shakespeare):
    source = course.data_dir() / CHECKPOINT_NAME
    assert source.is_file(), "run `make checkpoint`"
    assert source.stat().st_size < 5_000_000, "the shipped checkpoint should be a few MB at most"
    assert lesson_checkpoint_path() == source
    # shipped once, in the package: never beside the notebooks
    assert not list(SOLUTIONS.glob(f"*/{CHECKPOINT_NAME}")) + list(
        LESSONS.glob(f"*/{CHECKPOINT_NAME}")
    )
    payload = read_checkpoint(source)
    assert payload["hyperparameters"] == MODEL_CONFIG
    assert payload["extra"]["val_stream"] < 1.6
    model, vocab, _ = load_checkpoint(source, ns["CharRNN"], vocab=shakespeare.vocab)
    assert evaluate(model, shakespeare.val, "stream", max_chars=20_000) < 1.7
    sample = ns["sample"]
    texts = [
        sample(model, vocab, "ROMEO:", 60, 0.8, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    ]
    assert texts[0] == texts[1] and texts[0].startswith("ROMEO:") and len(texts[0]) == 66
    with pytest.raises(ValueError, match="not in the vocabulary"):
        sample(model, vocab, "ROMEO\u00e9", 5)


def test_notebook_samples_from_model_and_vocab(ns):
    assert isinstance(ns["vocab"], Vocab) and len(ns["vocab"]) == 65
    assert isinstance(ns["model"], ns["CharRNN"])


# Benchmark commands, seeds, versions and CPU instruction sets stay out of the lesson's prose, and
# so does every measured figure: code cells print those from the files they come from.
_NOT_IN_PROSE = ["make bench", "make checkpoint", "benchmarks/", "AVX", "AMX", "seed 0", "torch 2."]
_MEASURED = [
    "1.49",
    "116 updates",
    "2,747",
    "2.95",
    "1.29",
    "1.44",
    "1.46",
    "5,000",
    "2.48",
    "3.35",
    "about 28",
    "near 28",
    "near 12",
    "between 4 and 5",
    "towards 1.5",
]


def test_lesson_prose_names_no_benchmark_and_quotes_no_measured_figure():
    notebook = json.loads(notebook_path("source", LESSON).read_text(encoding="utf-8"))
    prose = "\n".join(
        "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"
    )
    found = [word for word in _NOT_IN_PROSE + _MEASURED if word in prose]
    assert not found, f"the lesson's markdown should not contain {found}"
    assert "make check" in prose
    assert prose.count("What you should see:") == 2  # after the batching picture and training


# ----------------------------------------------------------------------------- benchmark


def _benchmark_module():
    """benchmarks/char_lstm.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "char_lstm_benchmark", ROOT / "benchmarks" / "char_lstm.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_budget_rule_scales_the_model_only_past_its_threshold():
    bench = _benchmark_module()
    config = TrainConfig(max_steps=1)  # 16 x 64 = 1,024 characters a step
    # 100 s of 50 ms steps: 2,000 steps, 2,048,000 characters, 2 passes over 1,024,000.
    assert bench.expected_passes(100, 50, config, 1_024_000) == pytest.approx(2.0)
    threshold, scaled = bench.BUDGET_MODELS[0]
    assert bench.model_for_budget(0) == MODEL_CONFIG
    assert bench.model_for_budget(threshold - 0.01) == MODEL_CONFIG
    assert bench.model_for_budget(threshold) == scaled != MODEL_CONFIG
    assert scaled["hidden_size"] > MODEL_CONFIG["hidden_size"]
    assert scaled["dropout"] > MODEL_CONFIG["dropout"]
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="passes"):
            bench.model_for_budget(bad)
    with pytest.raises(ValueError, match="positive"):
        bench.expected_passes(100, 0, config, 1_000)


def test_benchmark_compare_runs_both_presets_for_one_budget(tmp_path):
    """--compare: the lesson's model (through the budget rule) then Udacity's, the ratios as the
    last line (JSON), and each run's full result in its own file."""
    out = tmp_path / "cmp.json"
    args = ["--compare", "--budget-seconds", "1", "--val-chars", "2000", "--bare-steps", "1"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "char_lstm.py"), *args, "--no-progress"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    course, udacity = summary["course"], summary["udacity"]
    assert course["preset"] == "course" and udacity["preset"] == "udacity"
    assert course["budget_s"] == udacity["budget_s"] == 1.0
    # One second is far below the rule's threshold: the lesson's own model.
    assert course["model"] == MODEL_CONFIG and course["budget_rule"]["scaled"] is False
    for key in ("corpus", "budget_s", "steps", "chars_per_s", "val_stream", "val_win64", "cpu"):
        assert course[key], key
    assert course["corpus"] == "tinyshakespeare" and course["steps"] >= 1
    assert course["precision"] in ("bf16", "fp32") and course["step_ms_bare"] > 0
    before, after = course["step_ms_bare_before_after"]
    assert course["step_ms_bare"] == pytest.approx((before + after) / 2, abs=0.01)
    assert course["loop_vs_bare"] == pytest.approx(
        course["step_ms_bare"] / course["step_ms_loop"], 0.01
    )
    assert set(course["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert 0 <= course["budget_rule"]["passes_expected"] < 1
    assert udacity["budget_rule"] is None and udacity["config"]["batch_size"] == 128
    for key in ("val_stream", "steps", "chars_per_s"):
        assert summary["ratio"][key] == pytest.approx(course[key] / udacity[key], abs=1e-3)
    assert json.loads((tmp_path / "cmp-course.json").read_text()) == course
    assert json.loads((tmp_path / "cmp-udacity.json").read_text()) == udacity


def test_char_rnn_defaults_are_the_lessons_model_config(ns):
    """One place says what the lesson's model is: CharRNN's defaults agree with MODEL_CONFIG."""
    model = ns["CharRNN"](10)
    assert {
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "dropout": model.dropout.p,
    } == MODEL_CONFIG
