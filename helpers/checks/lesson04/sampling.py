"""Lesson 04's ``sample``, by properties, with stand-in models whose predictions are known: one
certain of every next character (the state must be carried), one with fixed logits (the drawn
frequencies must follow ``softmax(logits / temperature)`` restricted to the ``top_k``)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from helpers.checks.core import call, fail, not_implemented
from helpers.checks.engine import Mistake, diagnosis
from helpers.text import Vocab


class PrimeCase(NamedTuple):
    """A prime and how many characters to draw after it."""

    prime: str
    length: int


class DrawCase(NamedTuple):
    """How the fixed logits are drawn from."""

    temperature: float
    top_k: int | None


#: The cases with the model that is certain of every next character.
PRIME_CASES = (PrimeCase("a", 12), PrimeCase("fed", 7), PrimeCase("b", 0))
#: The cases with fixed logits: their frequencies are compared with the softmax.
DRAW_CASES = (
    DrawCase(1.0, None),
    DrawCase(0.5, None),
    DrawCase(2.0, None),
    DrawCase(temperature=1.0, top_k=3),
    DrawCase(0.7, 2),
)
FIXED_LOGITS = (2.0, 1.0, 0.5, 0.0, -0.5, -1.5)
#: Total variation under which drawn frequencies match a distribution.
MATCH = 0.08


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


class _Certain(NamedTuple):
    """A text drawn from the model that is certain of every next character."""

    case: PrimeCase
    text: str
    expected: str


#: Why the text has the wrong length.
LENGTH_MISTAKES = (
    Mistake(
        "no prime",
        lambda t: t.case.length and t.text == t.expected[len(t.case.prime) :],
        "the prime is missing: return the prime followed by the new characters.",
    ),
    Mistake(
        "one too many",
        lambda t: len(t.text) == len(t.case.prime) + t.case.length + 1,
        "one character too many: draw exactly `length` characters.",
    ),
    Mistake(
        "one too few",
        lambda t: len(t.text) == len(t.case.prime) + t.case.length - 1,
        "one character too few: draw exactly `length` characters.",
    ),
)

#: Why the text is wrong though its length is right.
CERTAIN_MISTAKES = (
    Mistake(
        "state not carried",
        lambda t: len(set(t.text[len(t.case.prime) :])) <= 1 and t.case.length > 1,
        "the hidden state is not carried from one step to the next: pass the "
        "hidden state returned by each call into the next call.",
    ),
)


def _check_certain(sample, vocab: Vocab, seed: int) -> None:
    """The prime, then ``length`` characters, each from the state the one before left."""
    counting = _CountingModel(len(vocab))
    for case in PRIME_CASES:
        prime, length = case
        where = f"sample(model, vocab, prime={prime!r}, length={length})"
        text = _call_sample(
            sample, counting, vocab, prime, length, generator=torch.Generator().manual_seed(seed)
        )
        expected = prime + "".join(
            vocab.chars[(len(prime) + i) % len(vocab)] for i in range(length)
        )
        drawn = _Certain(case, text, expected)
        if not text.startswith(prime) or len(text) != len(prime) + length:
            fail(
                "sample",
                f"{where} returned {text!r} ({len(text)} characters); expected the prime "
                f"followed by {length} new characters ({len(prime) + length} in all)",
                cause=diagnosis(LENGTH_MISTAKES, drawn),
            )
        if text != expected:
            fail(
                "sample",
                f"{where} with a model that is certain of every next character gave "
                f"{text!r}, expected {expected!r}",
                cause=diagnosis(CERTAIN_MISTAKES, drawn),
            )


def _target(logits, scale, k):
    """``softmax(logits / scale)`` over the ``k`` largest logits (all: ``k`` None)."""
    z = logits / scale
    if k is not None:
        z = torch.where(z >= torch.topk(z, k).values[-1], z, torch.tensor(-float("inf")))
    return z.softmax(-1).numpy()


class _Drawn(NamedTuple):
    """Frequencies drawn from the fixed logits under ``case``."""

    case: DrawCase
    logits: torch.Tensor
    freq: np.ndarray

    def near(self, scale, k="same", logits=None) -> bool:
        """Whether the frequencies match the softmax at ``scale`` (top ``k``: the case's)."""
        k = self.case.top_k if k == "same" else k
        logits = self.logits if logits is None else logits
        return 0.5 * np.abs(self.freq - _target(logits, scale, k)).sum() < MATCH


#: Why the drawn frequencies are far from the softmax, tried in order.
FREQUENCY_MISTAKES = (
    Mistake(
        "argmax",
        lambda d: d.freq[int(torch.argmax(d.logits))] == 1.0,
        "every draw is the most likely character (an argmax): draw at random, with "
        "torch.multinomial(probabilities, 1, generator=generator).",
    ),
    Mistake(
        "training mode",
        lambda d: d.near(d.case.temperature, logits=d.logits.flip(-1)),
        "the model was left in training mode (where the lesson's model applies "
        "dropout): call model.eval() before sampling.",
    ),
    Mistake(
        "temperature ignored",
        lambda d: d.case.temperature != 1.0 and d.near(1.0),
        "the temperature is ignored: divide the logits by it before the softmax.",
    ),
    Mistake(
        "temperature multiplied",
        lambda d: d.case.temperature != 1.0 and d.near(1 / d.case.temperature),
        "the logits were multiplied by the temperature; divide them by it.",
    ),
    Mistake(
        "top_k ignored",
        lambda d: d.case.top_k is not None and d.near(d.case.temperature, None),
        "top_k is ignored.",
    ),
)


def _check_draws(sample, fixed, vocab: Vocab, logits, n_draws: int, seed: int) -> None:
    """The frequencies of ``n_draws`` characters follow the softmax of each ``DrawCase``."""
    for case in DRAW_CASES:
        temperature, top_k = case
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
        expected = _target(logits, temperature, top_k)
        gap = 0.5 * np.abs(freq - expected).sum()
        if top_k is not None and freq[expected == 0].sum() > 0:
            outside = "".join(
                c for c, f, e in zip(vocab.chars, freq, expected, strict=True) if f > 0 and e == 0
            )
            fail(
                "sample",
                f"{where} drew characters {outside!r} that are not among the {top_k} most likely",
                cause="keep only the top_k largest logits (torch.topk) and "
                "set the others to -inf before the softmax.",
            )
        if gap > MATCH:
            shown = ", ".join(
                f"{c}: {f:.2f} vs {e:.2f}"
                for c, f, e in zip(vocab.chars, freq, expected, strict=True)
            )
            fail(
                "sample",
                f"{where}: over {n_draws} draws from fixed logits {logits.tolist()}, the "
                f"characters' frequencies are far from softmax(logits / temperature) "
                f"(total variation {gap:.3f}; drawn vs expected: {shown})",
                cause=diagnosis(FREQUENCY_MISTAKES, _Drawn(case, logits, freq)),
            )


def _check_generator(sample, fixed, vocab: Vocab, seed: int) -> None:
    """The draws come from the generator given."""
    runs = [
        _call_sample(sample, fixed, vocab, "ab", 40, generator=torch.Generator().manual_seed(s))
        for s in (seed + 1, seed + 1, seed + 2)
    ]
    if runs[0] != runs[1]:
        fail(
            "sample",
            "two calls with generators seeded alike gave different texts:\n"
            f"  {runs[0]!r}\n  {runs[1]!r}",
            cause="pass generator=generator to torch.multinomial, so the draws come from it.",
        )
    if runs[0] == runs[2]:
        fail(
            "sample",
            "generators seeded differently gave the same 40 characters; draw at random "
            "with torch.multinomial(probabilities, 1, generator=generator)",
        )


def _check_unknown_prime(sample, fixed, vocab: Vocab) -> None:
    """A prime with characters outside the vocabulary raises ValueError."""
    name = "sample"
    for bad_prime in ("aXb", "z"):
        where = f"sample(model, vocab, prime={bad_prime!r}, length=5) with vocabulary 'abcdef'"
        try:
            sample(fixed, vocab, bad_prime, 5, generator=torch.Generator().manual_seed(0))
        except ValueError:
            continue
        except NotImplementedError:
            not_implemented(name)
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


def _check_sample(sample, *, n_draws: int, seed: int) -> None:
    """Properties of ``sample(model, vocab, prime, length, temperature, top_k, generator)``.

    Uses stand-in models: one whose prediction is certain and depends on the hidden state (the
    state must be carried), one with fixed logits (the sampled frequencies must follow
    ``softmax(logits / temperature)`` restricted to the ``top_k`` largest).
    """
    vocab = Vocab("abcdef")
    _check_certain(sample, vocab, seed)
    logits = torch.tensor(FIXED_LOGITS)
    fixed = _FixedModel(logits)
    _check_draws(sample, fixed, vocab, logits, n_draws, seed)
    _check_generator(sample, fixed, vocab, seed)
    _check_unknown_prime(sample, fixed, vocab)
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
