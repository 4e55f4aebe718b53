"""Lesson 01's capstone: a character RNN trained with the learner's own functions, no autograd.

The model reads one-hot characters, runs the learner's ``rnn_forward`` (a one-layer tanh RNN)
and puts a linear output layer ``logits = output @ weight_hy.T + bias_hy`` on top. One update:

1. the learner's ``rnn_forward`` over a batch of windows of the text, from the state the previous
   window ended in (truncated back-propagation through time);
2. the output layer, and the learner's ``softmax_cross_entropy`` of the next characters;
3. the output layer's backward pass (a linear layer: the worked example of lesson 01), then the
   learner's ``rnn_backward``;
4. the learner's ``clip_grad_norm`` on all the gradients, then the learner's ``adagrad_update``.

The learner's functions are passed in as arguments: this module holds none of their answers.
Everything runs under ``torch.no_grad()`` on tensors that do not require gradients, so no autograd
graph is ever built. The held-out loss is measured with ``torch.nn.functional.cross_entropy``
(not the learner's) against the unigram baseline: the loss of predicting every character with
its frequency in the training text, which knows nothing of what came before.

Typical use (in the notebook)::

    run = train_char_rnn(rnn_forward, rnn_backward, clip_grad_norm, softmax_cross_entropy,
                         adagrad_update, n_updates=1500)
    plot_char_rnn(run)
    print(sample_text(rnn_forward, run, prime="ROMEO:", length=200))
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from helpers import validate
from helpers.text import Vocab, make_corpus, read_text
from helpers.training import progress_bar

#: Names of the trained parameters, in the order the gradient and state lists use.
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hy", "bias_hy")


def text_slice(n_chars: int, corpus: str = "tinyshakespeare", val_fraction: float = 0.1):
    """``(vocab, train, val)``: the first ``n_chars`` characters of a shipped corpus, split
    by position (the last ``val_fraction`` held out), as int64 index arrays."""
    validate.integer("n_chars", n_chars, 100)
    c = make_corpus(read_text(corpus)[:n_chars], name=corpus, val_fraction=val_fraction)
    return c.vocab, c.train, c.val


def unigram_loss(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats per character) of ``val`` under the character frequencies of
    ``train`` (add-one smoothing, so that a character unseen in training costs a finite loss)."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[val].mean())


def init_params(vocab_size: int, hidden_size: int, seed: int = 0, dtype=torch.float32):
    """The six parameters, PyTorch's layouts and initialisation (uniform +-1/sqrt(hidden))."""
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(hidden_size)
    shapes = {
        "weight_ih": (hidden_size, vocab_size),
        "weight_hh": (hidden_size, hidden_size),
        "bias_ih": (hidden_size,),
        "bias_hh": (hidden_size,),
        "weight_hy": (vocab_size, hidden_size),
        "bias_hy": (vocab_size,),
    }
    return [(torch.rand(shapes[n], generator=g, dtype=dtype) * 2 - 1) * bound for n in PARAM_NAMES]


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread: this model's matrices are small, and on a 2-core machine two threads
    made every step many times slower (they wait for each other and for anything else running)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _one_hot(ids: torch.Tensor, vocab_size: int, dtype) -> torch.Tensor:
    return F.one_hot(ids, vocab_size).to(dtype)


def _streams(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """The text cut into ``batch_size`` contiguous streams, one row each."""
    length = len(ids) // batch_size
    if length < 2:
        raise ValueError(f"a text of {len(ids)} characters is too short for {batch_size} streams")
    return torch.from_numpy(ids[: length * batch_size].reshape(batch_size, length).copy())


def _output_layer(output, weight_hy, bias_hy):
    """logits (batch * seq, vocab) of the hidden states ``output`` (batch, seq, hidden)."""
    flat = output.reshape(-1, output.shape[-1])
    return flat @ weight_hy.T + bias_hy, flat


def _output_layer_backward(dlogits, flat, weight_hy, shape):
    """The linear layer's backward pass (lesson 01's worked example): its two parameter
    gradients and the gradient of the hidden states, shaped like ``output``."""
    return dlogits.T @ flat, dlogits.sum(dim=0), (dlogits @ weight_hy).reshape(shape)


def _as_float(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} should be a float or a 0-d tensor, got shape {value.shape}")
        value = value.item()
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}: the training diverged")
    return value


def evaluate(rnn_forward: Callable, params, ids: np.ndarray, vocab_size: int, chunk=256) -> float:
    """Mean cross-entropy (nats per character) of predicting each character of ``ids`` from the
    ones before it, the hidden state carried from a zero state through the whole text. Measured
    with ``torch.nn.functional.cross_entropy``, not with the learner's loss."""
    w_ih, w_hh, b_ih, b_hh, w_hy, b_hy = params
    dtype = w_ih.dtype
    ids_t = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    h = torch.zeros(1, w_hh.shape[0], dtype=dtype)
    total, count = 0.0, 0
    with torch.no_grad(), _one_thread():
        for start in range(0, len(ids_t) - 1, chunk):
            inp = ids_t[start : start + chunk]
            target = ids_t[start + 1 : start + chunk + 1]
            inp = inp[: len(target)]
            output, h = rnn_forward(
                _one_hot(inp, vocab_size, dtype).unsqueeze(0), h, w_ih, w_hh, b_ih, b_hh
            )
            logits, _ = _output_layer(output, w_hy, b_hy)
            total += float(F.cross_entropy(logits, target, reduction="sum"))
            count += len(target)
    return total / count


def train_char_rnn(
    rnn_forward: Callable,
    rnn_backward: Callable,
    clip_grad_norm: Callable,
    softmax_cross_entropy: Callable,
    adagrad_update: Callable,
    *,
    n_chars: int = 200_000,
    hidden_size: int = 64,
    seq_length: int = 32,
    batch_size: int = 32,
    n_updates: int = 1500,
    lr: float = 0.1,
    max_norm: float = 5.0,
    eval_every: int = 250,
    seed: int = 0,
    dtype=torch.float32,
    progress: bool = True,
) -> dict:
    """Train the character RNN with the learner's five functions only (no autograd), with a
    progress bar (``progress=False``: none).

    Returns a dict: ``losses`` (the training loss of every update, from the learner's
    ``softmax_cross_entropy``), ``val_steps`` and ``val_losses`` (the held-out loss after those
    updates, from ``F.cross_entropy``), ``unigram`` (the baseline, nats per character),
    ``params`` (the six trained tensors, in ``PARAM_NAMES`` order), ``vocab`` and ``seconds``.
    """
    for name, fn in (
        ("rnn_forward", rnn_forward),
        ("rnn_backward", rnn_backward),
        ("clip_grad_norm", clip_grad_norm),
        ("softmax_cross_entropy", softmax_cross_entropy),
        ("adagrad_update", adagrad_update),
    ):
        validate.function(name, fn)
    validate.integers(
        n_updates=n_updates,
        seq_length=seq_length,
        batch_size=batch_size,
        hidden_size=hidden_size,
        eval_every=eval_every,
    )
    start = time.perf_counter()
    vocab, train, val = text_slice(n_chars)
    size = len(vocab)
    streams = _streams(train, batch_size)
    params = init_params(size, hidden_size, seed, dtype)
    state_sums = [torch.zeros_like(p) for p in params]
    h = torch.zeros(batch_size, hidden_size, dtype=dtype)
    position = 0
    losses, val_steps, val_losses = [], [], []
    with torch.no_grad(), _one_thread():
        val_steps.append(0)
        val_losses.append(evaluate(rnn_forward, params, val, size))
        bar = progress_bar(range(1, n_updates + 1), desc="training", progress=progress)
        for update in bar:
            if position + seq_length + 1 > streams.shape[1]:
                position = 0
                h = torch.zeros_like(h)
            window = streams[:, position : position + seq_length + 1]
            position += seq_length
            x = _one_hot(window[:, :-1], size, dtype)
            targets = window[:, 1:].reshape(-1)
            w_ih, w_hh, b_ih, b_hh, w_hy, b_hy = params
            output, h_n = rnn_forward(x, h, w_ih, w_hh, b_ih, b_hh)
            logits, flat = _output_layer(output, w_hy, b_hy)
            loss, dlogits = softmax_cross_entropy(logits, targets)
            losses.append(_as_float(loss, "the loss"))
            dw_hy, db_hy, doutput = _output_layer_backward(dlogits, flat, w_hy, output.shape)
            _, _, dw_ih, dw_hh, dbias = rnn_backward(doutput, x, h, output, w_ih, w_hh)
            grads = [dw_ih, dw_hh, dbias, dbias, dw_hy, db_hy]
            grads, _ = clip_grad_norm(grads, max_norm)
            adagrad_update(params, list(grads), state_sums, lr)
            h = h_n
            if update % eval_every == 0 or update == n_updates:
                val_steps.append(update)
                val_losses.append(evaluate(rnn_forward, params, val, size))
                bar.set_postfix(held_out=f"{val_losses[-1]:.3f}")
        bar.close()
    return {
        "losses": losses,
        "val_steps": val_steps,
        "val_losses": val_losses,
        "unigram": unigram_loss(train, val, size),
        "params": params,
        "vocab": vocab,
        "seconds": time.perf_counter() - start,
    }


def sample_text(
    rnn_forward: Callable,
    run: dict,
    prime: str = "ROMEO:",
    length: int = 200,
    temperature: float = 0.8,
    seed: int = 0,
) -> str:
    """Text the trained model writes after ``prime``, one character at a time, each drawn from
    the softmax of its logits divided by ``temperature`` (lower: more cautious)."""
    validate.positive("temperature", temperature)
    vocab: Vocab = run["vocab"]
    w_ih, w_hh, b_ih, b_hh, w_hy, b_hy = run["params"]
    dtype = w_ih.dtype
    g = torch.Generator().manual_seed(seed)
    ids = torch.from_numpy(vocab.encode(prime))
    h = torch.zeros(1, w_hh.shape[0], dtype=dtype)
    out = list(prime)
    with torch.no_grad(), _one_thread():
        output, h = rnn_forward(
            _one_hot(ids, len(vocab), dtype).unsqueeze(0), h, w_ih, w_hh, b_ih, b_hh
        )
        for _ in range(length):
            logits, _ = _output_layer(output[:, -1:], w_hy, b_hy)
            probs = torch.softmax(logits[0].double() / temperature, dim=0)
            nxt = torch.multinomial(probs, 1, generator=g)
            out.append(vocab.chars[int(nxt)])
            output, h = rnn_forward(
                _one_hot(nxt, len(vocab), dtype).unsqueeze(0), h, w_ih, w_hh, b_ih, b_hh
            )
    return "".join(out)


def plot_char_rnn(run: dict, ax=None):
    """The training loss per update and the held-out loss, against the unigram baseline."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4))
    losses = np.asarray(run["losses"])
    ax.plot(np.arange(1, len(losses) + 1), losses, linewidth=0.8, alpha=0.6, label="training")
    ax.plot(run["val_steps"], run["val_losses"], marker="o", label="held-out text")
    ax.axhline(run["unigram"], color="grey", linestyle="--", label="unigram baseline")
    ax.set(
        xlabel="update",
        ylabel="cross-entropy (nats per character)",
        title="A character RNN trained on your own gradients",
    )
    ax.legend(loc="upper right")
    ax.grid(True, alpha=0.3)
    return ax
