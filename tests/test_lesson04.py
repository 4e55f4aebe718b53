"""Lesson 04_char_lstm: the text helpers, the training helper, the checks' teeth, the shipped
checkpoint and the benchmark's output format."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import LESSONS, ROOT, SOLUTIONS, loaded, notebook_path
from torch import nn

from helpers.char_training import (
    CHECKPOINT_NAME,
    MODEL_CONFIG,
    TrainConfig,
    _lr_factor,
    bits_per_char,
    detach_hidden,
    evaluate,
    lesson_checkpoint_path,
    load_checkpoint,
    plot_history,
    read_checkpoint,
    save_checkpoint,
    train,
)
from helpers.checks import CheckFailure
from helpers.checks.lesson04 import check_char_rnn, check_get_batches, check_sample
from helpers.text import Vocab, load_corpus, make_corpus, split_train_val

LESSON = "04_char_lstm"


@pytest.fixture(scope="module")
def ns():
    namespace = loaded(notebook_path("solutions", LESSON))
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
    """The original notebook's version: the last target of a row wraps around."""
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
    history = train(model, corpus.train, corpus.val, ns["get_batches"], config, progress=False)
    after = evaluate(model, corpus.val, "stream", n_streams=2)
    assert history.steps == 60 and history.stopped_by == "max_steps"
    assert before > 1.5 and after < 0.1, (before, after)
    assert history.epochs >= 2  # the 1 800 training characters hold 28 batches
    plot_history(history)


def test_train_respects_a_time_budget(ns, shakespeare):
    model = ns["CharRNN"](len(shakespeare.vocab), hidden_size=16, dropout=0.0)
    config = TrainConfig(batch_size=4, seq_length=8, budget_seconds=1.0)
    history = train(
        model, shakespeare.train, shakespeare.val, ns["get_batches"], config, progress=False
    )
    assert history.stopped_by == "budget_seconds"
    assert 1.0 <= history.train_seconds < 3.0
    assert history.chars_per_s > 0


def test_train_rejects_a_batch_larger_than_the_data(ns):
    model = ns["CharRNN"](3, hidden_size=4)
    config = TrainConfig(batch_size=8, seq_length=16, max_steps=1)
    with pytest.raises(ValueError, match="more than the 100 training characters"):
        train(model, np.arange(100) % 3, np.arange(50) % 3, ns["get_batches"], config)


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


def test_detach_hidden_cuts_the_graph():
    h = torch.ones(1, 2, 3, requires_grad=True) * 2
    c = torch.ones(1, 2, 3, requires_grad=True) * 3
    dh, dc = detach_hidden((h, c))
    assert not dh.requires_grad and not dc.requires_grad
    assert torch.equal(dh, h.detach())


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
    source = SOLUTIONS / LESSON / CHECKPOINT_NAME
    released = LESSONS / LESSON / CHECKPOINT_NAME
    assert source.is_file(), "run `make checkpoint`"
    assert source.stat().st_size < 5_000_000, "the shipped checkpoint should be a few MB at most"
    assert released.read_bytes() == source.read_bytes(), "run `make release`"
    assert lesson_checkpoint_path() in (source, released)
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


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_prints_json_last(tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "char_lstm.py"),
            "--max-steps",
            "2",
            "--val-chars",
            "3000",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("corpus", "budget_s", "steps", "chars_per_s", "val_stream", "val_win64"):
        assert key in last, key
    assert last["corpus"] == "tinyshakespeare" and last["steps"] == 2
    assert json.loads(out.read_text()) == last
